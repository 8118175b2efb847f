"""`python -m fastpex build`: lock -> fetch -> layers -> PEX, the whole of `pants package`.

Example::

    python -m fastpex build --lock 3rdparty/python/examples.lock --target linux_x86_64-cp311 \\
        --requirement 'scikit-learn>=1.3' --sources src/ --entry-point app.main:main \\
        --output dist/app.pex

The PEX holds exactly what the given requirements need on the given targets (all of the
lock's requirements when none are given). User errors exit 2 with one paragraph on stderr;
nothing is written to `--output` unless the build succeeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import zipfile
from typing import List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from fastpex.core.fetch import downloader as fetch_mod
from fastpex.core.pack import layers as layers_mod
from fastpex.core.cli import pack as pack_cli
from fastpex.core.fetch import selection
from fastpex.core.lockfile.codec import LockfileError, load_lock
from fastpex.core.model import Lock, Target
from fastpex.core.platforms import UnknownPlatformError, parse_target
from fastpex.core.store import ArtifactStore


class BuildError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastpex build",
        description="Build a PEX from a fastpex lock: select, fetch, layer and assemble.",
    )
    parser.add_argument("--lock", required=True, metavar="LOCKFILE")
    parser.add_argument("--target", action="append", default=[], metavar="NAME",
                        help="A target of the lock to build for; repeatable (multi-platform PEX). "
                             "Default: the lock's first target.")
    parser.add_argument("--requirement", action="append", default=[], metavar="REQ",
                        help="A requirement of the lock the PEX needs; repeatable. "
                             "Default: all of the lock's requirements.")
    parser.add_argument("--fetch-jobs", type=int, default=fetch_mod.DEFAULT_JOBS,
                        help="Parallel downloads.")
    parser.add_argument("--offline", action="store_true",
                        help="Use only the artifact store; fail if anything is missing.")
    parser.add_argument("--index", action="append", default=[], metavar="URL",
                        help="Index URLs whose credentials apply to artifact downloads.")
    pack_cli.add_pex_options(parser)
    return parser


def subset_lock(lock: Lock, requirements: Sequence[str]) -> Lock:
    """The lock with only `requirements` as roots, so selection walks just what they need."""
    if not requirements:
        return lock
    by_name = {}
    for raw in lock.requirements:
        try:
            by_name.setdefault(canonicalize_name(Requirement(raw).name), []).append(raw)
        except InvalidRequirement:
            continue
    roots: List[str] = []
    for raw in requirements:
        try:
            name = canonicalize_name(Requirement(raw).name)
        except InvalidRequirement as e:
            raise BuildError(f"The requirement `{raw}` is malformed: {e}")
        if name not in by_name:
            raise BuildError(
                f"The requirement `{raw}` is not in the lock for resolve `{lock.resolve_name}` "
                f"(it locks: {', '.join(sorted(lock.requirements))}). Regenerate the lock after "
                f"adding the requirement to the resolve."
            )
        roots.append(raw)
    return dataclasses.replace(lock, requirements=tuple(roots))


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
    base = module.replace(".", "/")
    return (f"{base}.py", f"{base}/__init__.py", f"{base}.pyc", f"{base}/__init__.pyc")


def check_entry_point(entry_point: str, sources: Optional[str], wheels: Sequence[str]) -> None:
    """The entry point's module must be in the sources or one of the wheels: a PEX whose entry
    point cannot import is better refused at build time than discovered at deploy time."""
    module = entry_point.split(":", 1)[0].strip()
    candidates = module_paths(module)
    if sources and any(os.path.isfile(os.path.join(sources, c)) for c in candidates):
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        if not os.path.isfile(options.lock):
            raise BuildError(
                f"The lockfile {options.lock} does not exist. Generate it first "
                f"(`pants generate-lockfiles` or `python -m fastpex lock`)."
            )
        lock = subset_lock(load_lock(options.lock), options.requirement)
        target_names = [canonical_target_name(t) for t in options.target] or [
            lock.resolves[0].target.name
        ]
        targets = selection.targets_for(lock, target_names)
        check_interpreter_constraints(targets, options.python_constraint)
        chosen = selection.select_artifacts(lock, targets)
        store = ArtifactStore(options.cache_dir)
        fetched = fetch_mod.fetch(
            chosen.artifacts,
            store,
            jobs=options.fetch_jobs,
            configured_indexes=options.index,
            offline=options.offline,
            progress=fetch_mod.default_reporter(sys.stderr),
        )
        wheels = [
            layers_mod.WheelInput(path=f.path, sha256=f.artifact.sha256, filename=f.artifact.filename)
            for f in fetched
        ]
        if options.entry_point and options.part != "deps":
            check_entry_point(options.entry_point, options.sources, [w.path for w in wheels])
        result = pack_cli.pack_wheels(options, wheels, requirements=sorted(lock.requirements))
    except (BuildError, LockfileError, selection.SelectionError, fetch_mod.OfflineError) as e:
        print(f"fastpex build: error: {e}", file=sys.stderr)
        return 2
    except pack_cli.PACK_ERRORS as e:
        print(f"fastpex build: error: {e}", file=sys.stderr)
        return 2
    except fetch_mod.FetchError as e:
        print(f"fastpex build: error: {e}", file=sys.stderr)
        return 1
    for output in result.outputs:
        print(output)
    return 0
