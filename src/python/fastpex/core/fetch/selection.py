"""Which artifacts of a lock one target needs: a pure function of (lock, targets), no I/O.

After pex's "resolution against a lock is pure": fetching for `linux_x86_64-cp311` must never
download a macOS wheel or a darwin-only dependency, and the decision must be reproducible
from the lock alone. The lock records what pip chose per target; we re-derive the needed set
by walking the dependency edges from the lock's requirements with the target's PEP 508
environment (extras propagated), over the recorded versions. The walk wins when the two
disagree: recorded packages it never reaches are dropped (reported in `dropped`), a package it
needs but the lock never recorded is a broken lock.

For every needed distribution exactly one artifact is chosen: the wheel whose tags rank best
in the target's `supported_tags` (most preferred first), else an sdist when allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Mapping, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from fastpex.core.errors import UserError
from fastpex.core.util.deps import walk
from fastpex.core.util.filenames import SDIST_SUFFIXES
from fastpex.core.model import (
    Artifact,
    Lock,
    LockedDistribution,
    ResolvedPackage,
    Target,
    TargetResolve,
)

__all__ = [
    "LockInconsistencyError",
    "NoCompatibleArtifactError",
    "SelectedDistribution",
    "Selection",
    "SelectionError",
    "TargetSelection",
    "UnknownTargetError",
    "select_artifacts",
    "target_for",
    "targets_for",
]



class SelectionError(UserError):
    """Base of the errors raised while choosing artifacts from a lock (the lock or the targets
    asked for are wrong: exit 2)."""


class UnknownTargetError(SelectionError, KeyError):
    """A target name the lock doesn't declare; the message lists the ones it does."""

    def __init__(self, lock: Lock, name: str) -> None:
        self.target = name
        self.known = tuple(r.target.name for r in lock.resolves)
        known = ", ".join(f"`{k}`" for k in self.known) or "none"
        super().__init__(
            f"The lock for resolve `{lock.resolve_name}` has no target `{name}`. "
            f"It declares these targets: {known}. Pass one of them, or regenerate the lock "
            f"with `{name}` among the resolve's platforms"
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class LockInconsistencyError(SelectionError):
    """The lock's dependency edges need a distribution the lock didn't record for the target."""


class NoCompatibleArtifactError(SelectionError):
    """A needed distribution has no artifact usable on the target."""

    def __init__(
        self,
        dist: LockedDistribution,
        target: Target,
        *,
        allow_sdists: bool,
        reason: str = "",
    ) -> None:
        self.distribution = dist.key
        self.target = target.name
        self.available = tuple(a.filename for a in dist.artifacts)
        listed = ", ".join(f"`{f}`" for f in self.available) or "none"
        has_sdist = any(_is_sdist(a) for a in dist.artifacts)
        what = "no wheel or sdist" if allow_sdists else "no wheel"
        if has_sdist and not allow_sdists:
            hint = (
                "The lock has an sdist for it, but the lock was made with wheels only "
                "(`--only-binary`), so fastpex will not build it. Regenerate the lock with "
                "`--allow-sdists` (`[fastpex].allow_sdists = true`) to build it from source"
            )
        elif reason:
            hint = "Check that the target's interpreter and platform are what you meant"
        else:
            hint = (
                "No wheel's tags are among the target's supported tags. Check that the target's "
                "interpreter and platform are what you meant, or lock a version that publishes "
                "a wheel for it"
            )
        super().__init__(
            f"The lock has {what} of `{dist.name}=={dist.version}` that is compatible "
            f"with target `{target.name}` ({target.platform}, Python {target.python_version})"
            f"{': ' + reason if reason else ''}. The lock has these artifacts for it: {listed}. "
            f"{hint}"
        )


@dataclass(frozen=True)
class SelectedDistribution:
    """One distribution a target needs, the extras active on it, and the artifact chosen."""

    name: str
    version: str
    extras: Tuple[str, ...]
    artifact: Artifact


@dataclass(frozen=True)
class TargetSelection:
    """What one target needs. `dropped` are recorded packages the dependency walk never reached."""

    target: Target
    distributions: Tuple[SelectedDistribution, ...]
    dropped: Tuple[str, ...] = ()

    @property
    def artifacts(self) -> Tuple[Artifact, ...]:
        return tuple(d.artifact for d in self.distributions)


@dataclass(frozen=True)
class Selection:
    """The per-target selections and their union of artifacts (deduped by sha256)."""

    targets: Tuple[TargetSelection, ...]
    artifacts: Tuple[Artifact, ...]

    def for_target(self, name: str) -> TargetSelection:
        for selection in self.targets:
            if selection.target.name == name:
                return selection
        raise KeyError(name)


def target_for(lock: Lock, name: str) -> Target:
    """The `Target` the lock declares under `name` (targets live inside the lock)."""
    for resolve in lock.resolves:
        if resolve.target.name == name:
            return resolve.target
    raise UnknownTargetError(lock, name)


def targets_for(lock: Lock, names: Iterable[str]) -> Tuple[Target, ...]:
    """`target_for` for each name, in order, without duplicates."""
    seen: Dict[str, Target] = {}
    for name in names:
        if name not in seen:
            seen[name] = target_for(lock, name)
    return tuple(seen.values())


def select_artifacts(
    lock: Lock, targets: Sequence[Target], *, allow_sdists: Optional[bool] = None
) -> Selection:
    """Choose the artifacts each target needs; the union is deduped by sha256 and sorted.

    An sdist is chosen only for a distribution with no wheel for the target, and only when
    `allow_sdists` (default: whether the lock was made with sdists allowed)."""
    if allow_sdists is None:
        allow_sdists = lock.allow_sdists
    selections = tuple(_select_for_target(lock, t, allow_sdists) for t in targets)
    union: Dict[str, Artifact] = {}
    for selection in selections:
        for dist in selection.distributions:
            union.setdefault(dist.artifact.sha256, dist.artifact)
    artifacts = tuple(sorted(union.values(), key=lambda a: (a.filename, a.sha256)))
    return Selection(targets=selections, artifacts=artifacts)


# --------------------------------------------------------------------------------------------
# The dependency walk


def _parse_requirement(raw: str, where: str) -> Requirement:
    try:
        return Requirement(raw)
    except InvalidRequirement as e:
        raise LockInconsistencyError(
            f"The lock has an invalid requirement `{raw}` ({where}): {e}. Regenerate the lock"
        ) from e


def _resolve_for(lock: Lock, target: Target) -> TargetResolve:
    for resolve in lock.resolves:
        if resolve.target.name == target.name:
            return resolve
    raise UnknownTargetError(lock, target.name)


def _walk(lock: Lock, target: Target) -> Tuple[Mapping[str, FrozenSet[str]], TargetResolve]:
    """Needed distributions (canonical name -> active extras) reached from the requirements."""
    resolve = _resolve_for(lock, target)
    recorded: Dict[str, ResolvedPackage] = {
        canonicalize_name(p.name): p for p in resolve.packages
    }
    if recorded and not lock.requirements:
        # Walking from nothing would silently select nothing: refuse instead.
        raise LockInconsistencyError(
            f"The lock for resolve `{lock.resolve_name}` records {len(recorded)} packages for "
            f"target `{target.name}` but lists no requirements to reach them from. The lock "
            f"is incomplete: regenerate it"
        )
    roots = [_parse_requirement(raw, "top-level requirement") for raw in lock.requirements]

    def edges(req: Requirement, origin: Optional[str]) -> Sequence[Requirement]:
        name = canonicalize_name(req.name)
        asker = _origin_label(origin)
        package = recorded.get(name)
        if package is None:
            raise LockInconsistencyError(
                f"`{req}` (required by {asker}) applies to target "
                f"`{target.name}`, but the lock recorded no version of `{name}` for that "
                f"target. The lock is inconsistent: regenerate it"
            )
        if not _version_satisfies(package.version, req.specifier):
            raise LockInconsistencyError(
                f"`{req}` (required by {asker}) is not satisfied by the "
                f"version the lock recorded for target `{target.name}`: "
                f"`{name}=={package.version}`. The lock is inconsistent: regenerate it"
            )
        dist = _distribution(lock, name, package.version, target)
        return [_parse_requirement(raw, f"Requires-Dist of `{dist.name}=={dist.version}`") for raw in dist.requires_dist]

    needed = walk(roots, target.marker_environment, edges)
    return needed, resolve


def _origin_label(origin: Optional[str]) -> str:
    return "the lock's requirements" if origin is None else f"`{origin}`"


def _version_satisfies(version: str, specifier: SpecifierSet) -> bool:
    if not str(specifier):
        return True
    try:
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        # A legacy version string: only `===` could match it; don't second-guess pip.
        return True


def _distribution(lock: Lock, name: str, version: str, target: Target) -> LockedDistribution:
    try:
        return lock.distribution(name, version)
    except KeyError:
        raise LockInconsistencyError(
            f"The lock records `{name}=={version}` for target `{target.name}` but has no "
            f"distribution entry (artifacts, metadata) for it. Regenerate the lock"
        ) from None


# --------------------------------------------------------------------------------------------
# Choosing one artifact


def _python_ok(requires_python: Optional[str], target: Target) -> bool:
    if not requires_python:
        return True
    full = target.marker_environment.get("python_full_version") or target.python_version
    try:
        return SpecifierSet(requires_python).contains(Version(full), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # unparseable metadata: pip let it through at lock time


def _wheel_rank(artifact: Artifact, rank: Mapping[str, int]) -> Optional[Tuple[int, int]]:
    """(best tag rank, negated build number) or None when no tag is supported."""
    try:
        _, _, build, tags = parse_wheel_filename(artifact.filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    ranks = [rank[str(t)] for t in tags if str(t) in rank]
    if not ranks:
        return None
    return (min(ranks), -build[0] if build else 0)


def _is_sdist(artifact: Artifact) -> bool:
    return not artifact.is_wheel and artifact.filename.endswith(SDIST_SUFFIXES)


def _choose(dist: LockedDistribution, target: Target, allow_sdists: bool) -> Artifact:
    rank = {tag: i for i, tag in enumerate(target.supported_tags)}
    candidates = [a for a in dist.artifacts if _python_ok(a.requires_python, target)]
    best: Optional[Tuple[Tuple[int, int], str, Artifact]] = None
    for artifact in candidates:
        if not artifact.is_wheel:
            continue
        key = _wheel_rank(artifact, rank)
        if key is not None and (best is None or (key, artifact.filename) < best[:2]):
            best = (key, artifact.filename, artifact)
    if best is not None:
        return best[2]
    if allow_sdists:
        sdists = sorted(
            (a for a in candidates if _is_sdist(a)),
            key=lambda a: (not a.filename.endswith(".tar.gz"), a.filename),
        )
        if sdists:
            return sdists[0]
    reason = ""
    if not target.supported_tags:
        reason = "the target declares no supported tags"
    elif dist.artifacts and not candidates:
        reason = "every artifact's Requires-Python excludes the target's interpreter"
    raise NoCompatibleArtifactError(dist, target, allow_sdists=allow_sdists, reason=reason)


def _select_for_target(lock: Lock, target: Target, allow_sdists: bool) -> TargetSelection:
    needed, resolve = _walk(lock, target)
    recorded: Dict[str, ResolvedPackage] = {
        canonicalize_name(p.name): p for p in resolve.packages
    }
    chosen = []
    for name in sorted(needed):
        package = recorded[name]
        dist = _distribution(lock, name, package.version, target)
        chosen.append(
            SelectedDistribution(
                name=dist.name,
                version=dist.version,
                extras=tuple(sorted(needed[name])),
                artifact=_choose(dist, target, allow_sdists),
            )
        )
    dropped = tuple(sorted(n for n in recorded if n not in needed))
    return TargetSelection(target=resolve.target, distributions=tuple(chosen), dropped=dropped)
