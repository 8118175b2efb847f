"""`build(BuildRequest) -> BuildResult`: lock -> select -> fetch -> layers -> PEX, the whole of
`pants package` for one binary.

The PEX holds exactly what the requested requirements need on the requested targets (all of the
lock's requirements when none are given); nothing is written to the output unless the build
succeeds.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from fastpex.core.errors import UserError
from fastpex.core.fetch import FetchRequest, downloader, fetch, selection
from fastpex.core.fetch.progress import Reporter
from fastpex.core.lockfile.codec import load_lock
from fastpex.core.lockfile.subset import subset_lock
from fastpex.core.model import Target
from fastpex.core.pack.api import PackRequest, pack
from fastpex.core.pack.assemble import PexBuildResult
from fastpex.core.pack.layers import WheelInput
from fastpex.core.pack.options import PexOptions, Sources
from fastpex.core.platforms import UnknownPlatformError, parse_target

__all__ = ["BuildError", "BuildRequest", "BuildResult", "build"]


class BuildError(UserError):
    """The build request cannot be satisfied as asked (lock, target, constraint, entry point)."""


@dataclass(frozen=True)
class BuildRequest:
    """A PEX to build at `output` from the lock at `lock_path`.

    `targets` are lock target names (default: the lock's first); `requirements` the lock
    requirements the PEX needs (default: all). `options.requirements` is ignored: the PEX
    activates the lock's (subset) requirements, so markers pick each target's wheels.
    `indexes` are index URLs whose credentials apply to artifact downloads.
    """

    lock_path: str
    output: str
    options: PexOptions = field(default_factory=PexOptions)
    targets: Tuple[str, ...] = ()
    requirements: Tuple[str, ...] = ()
    cache_root: Optional[str] = None
    fetch_jobs: int = downloader.DEFAULT_JOBS
    offline: bool = False
    indexes: Tuple[str, ...] = ()
    layer_jobs: Optional[int] = None
    progress: Optional[Reporter] = None


@dataclass(frozen=True)
class BuildResult:
    """The PEX written, the targets it was built for and the wheels it holds."""

    pex: PexBuildResult
    targets: Tuple[Target, ...]
    wheels: Tuple[WheelInput, ...]

    @property
    def outputs(self) -> Tuple[str, ...]:
        return self.pex.outputs


def build(request: BuildRequest) -> BuildResult:
    """Subset the lock, pick targets, check the interpreter constraints, select and fetch the
    artifacts, check the entry point, then pack the PEX."""
    if not os.path.isfile(request.lock_path):
        raise BuildError(
            f"The lockfile {request.lock_path} does not exist. Generate it first "
            f"(`pants generate-lockfiles` or `python -m fastpex lock`)."
        )
    options = request.options
    lock = subset_lock(load_lock(request.lock_path), request.requirements)
    target_names = [canonical_target_name(t) for t in request.targets] or [lock.resolves[0].target.name]
    targets = selection.targets_for(lock, target_names)
    check_interpreter_constraints(targets, options.interpreter_constraints)
    fetched = fetch(
        FetchRequest(
            lock=lock,
            targets=tuple(t.name for t in targets),
            cache_root=Path(request.cache_root) if request.cache_root else None,
            jobs=request.fetch_jobs,
            offline=request.offline,
            indexes=tuple(request.indexes),
            progress=request.progress,
        )
    ).fetched
    wheels = tuple(
        WheelInput(path=f.path, sha256=f.artifact.sha256, filename=f.artifact.filename) for f in fetched
    )
    if options.entry_point and options.part != "deps":
        check_entry_point(options.entry_point, options.sources, [w.path for w in wheels])
    result = pack(
        PackRequest(
            wheels=wheels,
            output=request.output,
            options=dataclasses.replace(options, requirements=tuple(sorted(lock.requirements))),
            cache_root=request.cache_root,
            layer_jobs=request.layer_jobs,
        )
    )
    return BuildResult(pex=result, targets=tuple(targets), wheels=wheels)


def canonical_target_name(spec: str) -> str:
    """`linux_x86_64-cp3.11` and `linux_x86_64-cp311` name the same lock target."""
    try:
        return parse_target(spec).name
    except UnknownPlatformError as e:
        raise BuildError(str(e))


def check_interpreter_constraints(targets: Sequence[Target], constraints: Sequence[str]) -> None:
    """Every target's interpreter must satisfy one of the (OR'ed) interpreter constraints."""
    if not constraints:
        return
    parsed = []
    for raw in constraints:
        spec = raw.strip()
        implementation = "CPython"
        for prefix in ("CPython", "PyPy"):
            if spec.startswith(prefix):
                implementation, spec = prefix, spec[len(prefix):].strip()
        try:
            parsed.append((implementation, SpecifierSet(spec)))
        except InvalidSpecifier as e:
            raise BuildError(f"The interpreter constraint `{raw}` is malformed: {e}")
    for target in targets:
        version = target.marker_environment.get("python_full_version", target.python_version)
        if not any(impl == "CPython" and version in spec for impl, spec in parsed):
            raise BuildError(
                f"The target `{target.name}` (CPython {version}) does not satisfy the interpreter "
                f"constraints {' OR '.join(constraints)}. Build for a target whose Python matches, "
                f"or widen the constraints."
            )


def module_paths(module: str) -> Tuple[str, ...]:
    """The files that can provide `module` in a sources root or a wheel."""
    base = module.replace(".", "/")
    return (f"{base}.py", f"{base}/__init__.py", f"{base}.pyc", f"{base}/__init__.pyc")


def check_entry_point(
    entry_point: str,
    sources: Sources,
    wheels: Sequence[str],
) -> None:
    """The entry point's module must be in the sources or one of the wheels: a PEX whose entry
    point cannot import is better refused at build time than discovered at deploy time."""
    module = entry_point.split(":", 1)[0].strip()
    candidates = module_paths(module)
    if isinstance(sources, Mapping):
        if any(c in sources for c in candidates):
            return
    elif sources and any(os.path.isfile(os.path.join(sources, c)) for c in candidates):
        return
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as zf:
                names = set(zf.namelist())
        except (OSError, zipfile.BadZipFile):
            continue
        # Platlib/purelib files of a wheel sit at its root; `.data/purelib/` is rare but legal.
        if any(c in names for c in candidates) or any(
            n.endswith(tuple("/" + c for c in candidates)) and ".data/" in n for n in names
        ):
            return
    raise BuildError(
        f"The entry point `{entry_point}` names the module `{module}`, which is neither in the "
        f"sources nor in any distribution of the PEX. Check the spelling, or add the source file "
        f"or requirement that provides it."
    )
