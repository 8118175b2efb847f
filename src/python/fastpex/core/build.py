"""`build(BuildRequest) -> BuildResult`: lock -> select -> fetch -> layers -> PEX, the whole of
`pants package` for one binary.

The PEX holds exactly what the requested requirements need on the requested targets (all of the
lock's requirements when none are given); nothing is written to the output unless the build
succeeds.

A distribution with no wheel for a target comes from its sdist when the lock was made with
sdists allowed: the sdist is built into a wheel once (`pack.sdist`), with the build
requirements the lock pinned for that target (fetched and verified like any artifact) and the
target's interpreter (`pythons`, else `pythonX.Y` on PATH). The built wheel then serves every
target whose tags it has, and goes through the same layer checks as any other wheel.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from fastpex.core.errors import UserError
from fastpex.core.fetch import FetchRequest, downloader, fetch, selection
from fastpex.core.fetch.progress import Reporter
from fastpex.core.lockfile.codec import load_lock
from fastpex.core.lockfile.subset import subset_lock
from fastpex.core.model import Artifact, BuildSystem, FetchedArtifact, Lock, Target
from fastpex.core.pack.api import PackRequest, pack
from fastpex.core.pack.assemble import PexBuildResult
from fastpex.core.pack.layers import WheelInput
from fastpex.core.pack.options import PexOptions, Sources
from fastpex.core.pack.sdist import (
    BuiltWheel,
    Interpreter,
    SdistBuildError,
    SdistBuildRequest,
    build_wheel_from_sdist,
    inspect_interpreter,
    wheel_tags,
)
from fastpex.core.platforms import MAX_PATCH, UnknownPlatformError, parse_target, target_names_patch
from fastpex.core.store import ArtifactStore

__all__ = ["BuildError", "BuildRequest", "BuildResult", "PreparedWheels", "build", "prepare_wheels"]


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
    pythons: Tuple[str, ...] = ()  # interpreters that build sdists (by major.minor); default: PATH


@dataclass(frozen=True)
class BuildResult:
    """The PEX written, the targets it was built for and the wheels it holds."""

    pex: PexBuildResult
    targets: Tuple[Target, ...]
    wheels: Tuple[WheelInput, ...]
    built: Tuple[BuiltWheel, ...] = ()  # wheels made from sdists (`built` False: from the cache)

    @property
    def outputs(self) -> Tuple[str, ...]:
        return self.pex.outputs


def build(request: BuildRequest) -> BuildResult:
    """Subset the lock, pick targets, check the interpreter constraints, select and fetch the
    artifacts, check the entry point, then pack the PEX."""
    options = request.options
    prepared = prepare_wheels(request)
    wheels = list(prepared.wheels)
    if options.entry_point and options.part != "deps":
        check_entry_point(options.entry_point, options.sources, [w.path for w in wheels])
    result = pack(
        PackRequest(
            wheels=tuple(wheels),
            output=request.output,
            options=dataclasses.replace(options, requirements=tuple(sorted(prepared.lock.requirements))),
            cache_root=request.cache_root,
            layer_jobs=request.layer_jobs,
        )
    )
    return BuildResult(pex=result, targets=prepared.targets, wheels=prepared.wheels, built=prepared.built)


@dataclass(frozen=True)
class PreparedWheels:
    """What a lock gives one build: the subset lock, its targets, and every wheel they need
    (fetched and verified, sdists built), in the lock's order."""

    lock: Lock
    targets: Tuple[Target, ...]
    wheels: Tuple[WheelInput, ...]
    built: Tuple[BuiltWheel, ...] = ()


def prepare_wheels(request: BuildRequest) -> PreparedWheels:
    """Lock file -> subset -> targets -> fetch -> sdists built -> wheels: the part of a build
    every output (a PEX, an image) shares. `request.output` and the PEX options other than
    the interpreter constraints are not read."""
    if not os.path.isfile(request.lock_path):
        raise BuildError(
            f"The lockfile {request.lock_path} does not exist. Generate it first "
            f"(`pants generate-lockfiles` or `python -m fastpex lock`)."
        )
    lock = subset_lock(load_lock(request.lock_path), request.requirements)
    target_names = [canonical_target_name(t) for t in request.targets] or [lock.resolves[0].target.name]
    targets = selection.targets_for(lock, target_names)
    check_interpreter_constraints(targets, request.options.interpreter_constraints)
    fetch_result = fetch(
        FetchRequest(
            lock=lock,
            targets=tuple(t.name for t in targets),
            cache_root=Path(request.cache_root) if request.cache_root else None,
            jobs=request.fetch_jobs,
            offline=request.offline,
            indexes=tuple(request.indexes),
            progress=request.progress,
        )
    )
    fetched = fetch_result.fetched
    built = _build_sdists(lock, fetch_result.selection, fetched, request)
    wheels: List[WheelInput] = []
    for f in fetched:
        if f.artifact.is_wheel:
            wheels.append(WheelInput(path=f.path, sha256=f.artifact.sha256, filename=f.artifact.filename))
        for b in built.get(f.artifact.sha256, ()):
            if all(w.sha256 != b.wheel.sha256 for w in wheels):
                wheels.append(b.wheel)
    return PreparedWheels(
        lock=lock,
        targets=tuple(targets),
        wheels=tuple(wheels),
        built=tuple(b for bs in built.values() for b in bs),
    )


# --------------------------------------------------------------------------------------------
# sdists -> wheels


def _build_sdists(
    lock: Lock, selection: "selection.Selection", fetched: Sequence[FetchedArtifact], request: BuildRequest
) -> Dict[str, List[BuiltWheel]]:
    """Build every chosen sdist once per interpreter; sdist sha256 -> the wheels built from it.

    A pure-Python wheel serves every target; a platform-specific one only the targets whose
    tags it has: any other target that chose the sdist is an error."""
    paths = {f.artifact.sha256: f.path for f in fetched}
    interpreters = _Interpreters(request.pythons)
    store = ArtifactStore(request.cache_root)
    out: Dict[str, List[BuiltWheel]] = {}
    memo: Dict[Tuple[str, str, Tuple[str, ...]], BuiltWheel] = {}
    for target_selection in selection.targets:
        target = target_selection.target
        for dist in target_selection.distributions:
            sdist = dist.artifact
            if sdist.is_wheel:
                continue
            project = f"{dist.name}=={dist.version}"
            if not lock.allow_sdists:
                raise BuildError(
                    f"`{project}` has no wheel for target `{target.name}`, and the lock was made with "
                    f"wheels only (`--only-binary`), so fastpex does not build its sdist `{sdist.filename}`. "
                    f"Regenerate the lock with `--allow-sdists` (`[fastpex].allow_sdists = true`)"
                )
            system = lock.build_system_for(dist.name, dist.version)
            if system is None:
                raise BuildError(
                    f"The lock records no build requirements for the sdist `{sdist.filename}` of `{project}` "
                    f"(target `{target.name}`). Regenerate the lock with this fastpex (`lock --allow-sdists`)"
                )
            interpreter = interpreters.for_version(target.python_version, sdist.filename, target.name)
            backend = _fetch_build_wheels(system, target, project, store, request)
            key = (sdist.sha256, interpreter.path, tuple(sorted(w.sha256 for w in backend)))
            if key not in memo:
                memo[key] = build_wheel_from_sdist(
                    SdistBuildRequest(
                        sdist=WheelInput(path=paths[sdist.sha256], sha256=sdist.sha256, filename=sdist.filename),
                        project=project,
                        build_wheels=backend,
                        interpreter=interpreter,
                        cache_root=Path(request.cache_root) if request.cache_root else None,
                    )
                )
            wheel = memo[key]
            _check_serves(wheel, target, sdist.filename, project, interpreter)
            if wheel not in out.setdefault(sdist.sha256, []):
                out[sdist.sha256].append(wheel)
    return out


def _check_serves(wheel: BuiltWheel, target: Target, sdist: str, project: str, interpreter: Interpreter) -> None:
    tags = wheel_tags(wheel.wheel.wheel_filename)
    if any(t in set(target.supported_tags) for t in tags):
        return
    raise SdistBuildError(
        f"The sdist `{sdist}` of `{project}` builds a platform-specific wheel, "
        f"`{wheel.wheel.wheel_filename}` (tags {', '.join(tags)}), with Python {interpreter.version} on "
        f"{interpreter.platform}, and target `{target.name}` ({target.platform}) supports none of its "
        f"tags: a wheel built here cannot run there. Build the PEX on a {target.platform} host, drop the "
        f"target, or lock a version of `{project.split('==')[0]}` that publishes a wheel for it"
    )


def _fetch_build_wheels(
    system: BuildSystem, target: Target, project: str, store: ArtifactStore, request: BuildRequest
) -> Tuple[WheelInput, ...]:
    """The build requirements the lock pinned for `target`, one wheel each, in the store."""
    if not system.requires:
        return ()
    pins = system.pins_for(target.name)
    if pins is None:
        raise BuildError(
            f"The lock records no build requirements of `{project}` for target `{target.name}`. Regenerate the lock"
        )
    dists = {d.key: d for d in system.distributions}
    rank = {tag: i for i, tag in enumerate(target.supported_tags)}
    chosen: List[Artifact] = []
    for pin in pins:
        dist = dists.get(pin)
        candidates = []
        for a in dist.artifacts if dist is not None else ():
            ranks = [rank[t] for t in wheel_tags(a.filename) if t in rank]
            if ranks:
                candidates.append((min(ranks), a.filename, a))
        if not candidates:
            raise BuildError(
                f"The lock has no wheel of `{pin[0]}=={pin[1]}`, a build requirement of `{project}`, for "
                f"target `{target.name}`. Regenerate the lock"
            )
        chosen.append(min(candidates, key=lambda c: c[:2])[2])
    got = downloader.fetch(
        chosen,
        store,
        jobs=request.fetch_jobs,
        configured_indexes=tuple(request.indexes),
        offline=request.offline,
        progress=request.progress,
    )
    return tuple(WheelInput(path=f.path, sha256=f.artifact.sha256, filename=f.artifact.filename) for f in got)


class _Interpreters:
    """The interpreter that builds for each Python version: an explicit one, else `pythonX.Y`."""

    def __init__(self, explicit: Sequence[str]) -> None:
        self._explicit = tuple(explicit)
        self._inspected: Optional[List[Interpreter]] = None
        self._by_version: Dict[str, Interpreter] = {}

    def for_version(self, version: str, sdist: str, target: str) -> Interpreter:
        if version in self._by_version:
            return self._by_version[version]
        if self._inspected is None:
            self._inspected = [inspect_interpreter(os.path.abspath(p) if os.sep in p else p) for p in self._explicit]
        found = next((i for i in self._inspected if i.python_version == version), None)
        if found is None and not self._explicit:
            path = shutil.which(f"python{version}")
            if path is not None:
                candidate = inspect_interpreter(path)
                found = candidate if candidate.python_version == version else None
        if found is None:
            given = ", ".join(f"`{i.path}` (Python {i.version})" for i in self._inspected) or "none"
            raise BuildError(
                f"Building the sdist `{sdist}` for target `{target}` needs a Python {version} interpreter, "
                f"and there is none: the interpreters given are {given}"
                + ("" if self._explicit else f", and `python{version}` is not on PATH")
                + ". Pass one with `--python PATH` (in Pants: `[fastpex]` finds it from the interpreter "
                "constraints)"
            )
        self._by_version[version] = found
        return found


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
        # A lock resolves a target at the lowest patch its own constraints admit and holds for
        # every admitted patch; unless the target names its patch, any patch of its minor that
        # these constraints admit will do.
        versions = (
            [version]
            if target_names_patch(target)
            else [f"{target.python_version}.{patch}" for patch in range(MAX_PATCH + 1)]
        )
        if not any(impl == "CPython" and any(v in spec for v in versions) for impl, spec in parsed):
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
