"""The data that flows between fastpex's stages: lock -> fetch -> layers -> pack.

Each type here has one owner: `lockfile.py` reads and writes `Lock`, `fetch.py` turns a `Lock`
plus a `Target` into `FetchedArtifact`s, `layers.py` turns those into layers. Stages exchange
only these frozen values, never each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from packaging.utils import canonicalize_name


@dataclass(frozen=True)
class Artifact:
    """One downloadable file of a locked distribution (a wheel or an sdist).

    `url` never carries credentials: indexes that need them are matched again at fetch time.
    """

    url: str
    filename: str
    sha256: str
    size: Optional[int] = None
    upload_time: Optional[str] = None  # ISO 8601, UTC, as the index reported it
    requires_python: Optional[str] = None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


@dataclass(frozen=True)
class LockedDistribution:
    """A project at one version, with every artifact the lock knows for it.

    `requires_dist` is the raw `Requires-Dist` list from the distribution's core metadata; the
    edges of one target are those whose markers hold in that target's environment.
    """

    name: str  # canonical (PEP 503 normalized)
    version: str
    requires_python: Optional[str]
    requires_dist: Tuple[str, ...]
    artifacts: Tuple[Artifact, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonicalize_name(self.name))

    @property
    def key(self) -> Tuple[str, str]:
        return (self.name, self.version)


@dataclass(frozen=True)
class Target:
    """A platform + interpreter that a lock resolves for (e.g. `linux_x86_64-cp311`).

    `marker_environment` is the full PEP 508 environment of that target; `supported_tags` its
    PEP 425 tags, most preferred first (as `packaging.tags.sys_tags()` orders them).
    """

    name: str
    platform: str  # e.g. linux_x86_64, linux_aarch64, macosx_arm64
    python_version: str  # major.minor, e.g. "3.11"
    marker_environment: Mapping[str, str] = field(hash=False, compare=True)
    supported_tags: Tuple[str, ...] = field(default=(), hash=False)


@dataclass(frozen=True)
class ResolvedPackage:
    """One distribution chosen for one target, with the extras pip activated on it."""

    name: str
    version: str
    extras: Tuple[str, ...] = ()
    dependencies: Tuple[str, ...] = ()  # canonical names of its edges for this target


@dataclass(frozen=True)
class TargetResolve:
    target: Target
    packages: Tuple[ResolvedPackage, ...]


@dataclass(frozen=True)
class BuildSystem:
    """The PEP 517 build requirements some sdists of the lock share, pinned.

    `requires` is the sdists' `[build-system].requires` (PEP 518's default when they declare
    none); `sdists` the (name, version) of the distributions built with it; `distributions`
    the wheels-only resolve of `requires` (every wheel of each pinned version, with sha256);
    `pins` per lock target name, the (name, version)s of that resolve for the target.
    """

    requires: Tuple[str, ...]
    sdists: Tuple[Tuple[str, str], ...]
    distributions: Tuple[LockedDistribution, ...] = ()
    pins: Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...] = ()

    def pins_for(self, target_name: str) -> Optional[Tuple[Tuple[str, str], ...]]:
        for name, pins in self.pins:
            if name == target_name:
                return pins
        return None


@dataclass(frozen=True)
class Lock:
    """A multi-target lock: the requirements, and per target exactly what pip chose."""

    resolve_name: str
    requirements: Tuple[str, ...]
    requires_python: Tuple[str, ...]
    distributions: Tuple[LockedDistribution, ...]
    resolves: Tuple[TargetResolve, ...]
    indexes: Tuple[str, ...] = ()  # credential-free index URLs the lock was made from
    upload_cutoff: Optional[str] = None  # ISO 8601 UTC; files uploaded later were not considered
    allow_sdists: bool = False  # made with `--allow-sdists`: a build may turn its sdists into wheels
    build_systems: Tuple[BuildSystem, ...] = ()  # what building each sdist-only distribution needs

    def build_system_for(self, name: str, version: str) -> Optional[BuildSystem]:
        key = (canonicalize_name(name), version)
        for system in self.build_systems:
            if key in system.sdists:
                return system
        return None

    def distribution(self, name: str, version: str) -> LockedDistribution:
        key = (canonicalize_name(name), version)
        for dist in self.distributions:
            if dist.key == key:
                return dist
        raise KeyError(f"`{name}=={version}` is not in the lock for resolve `{self.resolve_name}`")

    def target_resolve(self, target_name: str) -> TargetResolve:
        for resolve in self.resolves:
            if resolve.target.name == target_name:
                return resolve
        known = ", ".join(r.target.name for r in self.resolves) or "none"
        raise KeyError(
            f"the lock for resolve `{self.resolve_name}` has no target `{target_name}` "
            f"(it has: {known})"
        )


@dataclass(frozen=True)
class FetchedArtifact:
    """An artifact present and verified in the content-addressed store."""

    artifact: Artifact
    path: str  # absolute path inside the store; its name is the sha256
