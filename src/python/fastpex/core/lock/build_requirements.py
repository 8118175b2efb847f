"""LOCK, for sdists: what building each sdist-only distribution needs, resolved and pinned.

A lock made with `--allow-sdists` may pin a distribution that has no wheel for some target. The
build turns its sdist into a wheel with PEP 517, in an isolated environment that holds the
sdist's build requirements (PEP 518 `[build-system].requires`; `setuptools>=40.8.0` and `wheel`
when it declares none, as PEP 517 and pip do). So that a later build uses the same backend
versions, the lock resolves those requirements here, wheels only, against the same indexes
and for the same targets, with the same machinery (`resolve`), and records every wheel of
each pinned version with its sha256 (`model.BuildSystem`). Sdists with the same requirements
share one resolve.

The sdist is read from the artifact store (the metadata step may have downloaded it already)
or downloaded into it, verified against the sha256 the lock records.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

from fastpex.core.lock.errors import ResolveError
from fastpex.core.lock.metadata_store import artifact_store_path, download_to_store
from fastpex.core.lock.resolve import resolve
from fastpex.core.lock.runner import ResolveOptions
from fastpex.core.lock.sources import PackageSource
from fastpex.core.model import Artifact, BuildSystem, Lock, LockedDistribution, Target
from fastpex.core.net.http import HttpClient
from fastpex.core.util.filenames import SDIST_SUFFIXES
from fastpex.core.util.urls import redact

__all__ = ["DEFAULT_BUILD_REQUIRES", "build_requires_of", "record_build_systems", "sdists_to_build"]

logger = logging.getLogger("fastpex.lock")

DEFAULT_BUILD_REQUIRES: Tuple[str, ...] = ("setuptools>=40.8.0", "wheel")
_MAX_PYPROJECT_BYTES = 1 << 20


def _loads_toml(text: str) -> Dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, vendored by pip (a runtime dependency)
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]  # pip vendors tomli for Python 3.10, which has no tomllib
    return dict(tomllib.loads(text))


def _has_wheel_for(dist: LockedDistribution, target: Target) -> bool:
    supported = set(target.supported_tags)
    for artifact in dist.artifacts:
        if not artifact.is_wheel:
            continue
        try:
            _, _, _, tags = parse_wheel_filename(artifact.filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if any(str(t) in supported for t in tags):
            return True
    return False


def _sdist_of(dist: LockedDistribution) -> Optional[Artifact]:
    sdists = sorted(
        (a for a in dist.artifacts if not a.is_wheel and a.filename.endswith(SDIST_SUFFIXES)),
        key=lambda a: (not a.filename.endswith(".tar.gz"), a.filename),
    )
    return sdists[0] if sdists else None


def sdists_to_build(lock: Lock) -> List[Tuple[LockedDistribution, Artifact]]:
    """The distributions some target of the lock can only get from their sdist, with it."""
    found: Dict[Tuple[str, str], Tuple[LockedDistribution, Artifact]] = {}
    for target_resolve in lock.resolves:
        for package in target_resolve.packages:
            key = (canonicalize_name(package.name), package.version)
            if key in found:
                continue
            try:
                dist = lock.distribution(*key)
            except KeyError:
                continue
            sdist = _sdist_of(dist)
            if sdist is not None and not _has_wheel_for(dist, target_resolve.target):
                found[key] = (dist, sdist)
    return [found[k] for k in sorted(found)]


def build_requires_of(path: Path, filename: str) -> Tuple[str, ...]:
    """`[build-system].requires` of the sdist at `path` (PEP 518), or PEP 517's default."""
    text = _read_pyproject(path, filename)
    if text is None:
        return DEFAULT_BUILD_REQUIRES
    try:
        data = _loads_toml(text)
    except ValueError as e:
        raise ResolveError(f"The sdist `{filename}` has a malformed pyproject.toml: {e}") from e
    system = data.get("build-system")
    if not isinstance(system, dict) or "requires" not in system:
        return DEFAULT_BUILD_REQUIRES
    requires = system["requires"]
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise ResolveError(f"The sdist `{filename}` declares `[build-system].requires` that is not a list of strings")
    for raw in requires:
        try:
            Requirement(raw)
        except InvalidRequirement as e:
            raise ResolveError(f"The sdist `{filename}` has an invalid build requirement `{raw}`: {e}") from e
    return tuple(requires)


def _read_pyproject(path: Path, filename: str) -> Optional[str]:
    """The sdist's top-level `<root>/pyproject.toml`, or None when it has none."""
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
                if not names:
                    return None
                info = zf.getinfo(sorted(names)[0])
                if info.file_size > _MAX_PYPROJECT_BYTES:
                    raise ResolveError(f"The sdist `{filename}` has a pyproject.toml over 1 MiB")
                return zf.read(info).decode("utf-8")
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = member.name.lstrip("./").split("/")
                if member.isfile() and len(parts) == 2 and parts[1] == "pyproject.toml":
                    if member.size > _MAX_PYPROJECT_BYTES:
                        raise ResolveError(f"The sdist `{filename}` has a pyproject.toml over 1 MiB")
                    fp = tar.extractfile(member)
                    return None if fp is None else io.TextIOWrapper(fp, encoding="utf-8").read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as e:
        raise ResolveError(f"Cannot read the sdist `{filename}` for its build requirements: {e}") from e
    return None


def _sdist_path(artifact: Artifact, http: HttpClient, cache_root: Optional[Path]) -> Path:
    if artifact.url.startswith("file:"):
        from urllib.parse import unquote, urlsplit

        return Path(unquote(urlsplit(artifact.url).path))
    stored = artifact_store_path(artifact.sha256, cache_root)
    if stored.is_file():
        return stored
    logger.info("downloading %s to read its build requirements", redact(artifact.url))
    return download_to_store(http, artifact.url, artifact.sha256, cache_root).path


def record_build_systems(
    lock: Lock,
    source: PackageSource,
    targets: Sequence[Target],
    *,
    index_urls: Sequence[str],
    options: ResolveOptions,
    interpreter_constraints: Sequence[str] = (),
    upload_cutoff: Optional[str] = None,
    reporter: Optional[Callable[[str], None]] = None,
) -> Lock:
    """`lock` with `allow_sdists` set and a `BuildSystem` for every sdist it may have to build."""
    lock = dataclasses.replace(lock, allow_sdists=True)
    todo = sdists_to_build(lock)
    if not todo:
        return lock
    groups: Dict[Tuple[str, ...], List[Tuple[str, str]]] = {}
    with HttpClient(configured_indexes=list(index_urls)) as http:
        for dist, sdist in todo:
            requires = build_requires_of(_sdist_path(sdist, http, options.cache_root), sdist.filename)
            groups.setdefault(requires, []).append(dist.key)
    systems = []
    for requires, sdists in sorted(groups.items()):
        label = ", ".join(f"{n}=={v}" for n, v in sdists)
        if not requires:
            systems.append(BuildSystem(requires=(), sdists=tuple(sdists)))
            continue
        if reporter is not None:
            reporter(f"resolving the build requirements of {label}: {', '.join(requires)}")
        try:
            result = resolve(
                requires,
                targets,
                source,
                resolve_name=f"{lock.resolve_name}-build-system",
                interpreter_constraints=interpreter_constraints,
                options=dataclasses.replace(options, only_binary=True),
                upload_cutoff=upload_cutoff,
                reporter=reporter,
            )
        except ResolveError as e:
            raise ResolveError(
                f"The build requirements of {label} ({', '.join(requires)}) cannot be resolved from "
                f"wheels: {e}"
            ) from e
        wheels_only = tuple(
            dataclasses.replace(d, artifacts=tuple(a for a in d.artifacts if a.is_wheel))
            for d in result.lock.distributions
        )
        pins = tuple(
            (r.target.name, tuple(sorted((canonicalize_name(p.name), p.version) for p in r.packages)))
            for r in result.lock.resolves
        )
        systems.append(
            BuildSystem(requires=requires, sdists=tuple(sdists), distributions=wheels_only, pins=tuple(sorted(pins)))
        )
    return dataclasses.replace(lock, build_systems=tuple(systems))
