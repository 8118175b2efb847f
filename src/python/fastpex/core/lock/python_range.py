"""A lock that is true for its header: it holds on every patch its interpreter constraints admit.

Pants accepts a lock for a resolve when the header's `valid_for_interpreter_constraints` admit the
resolve's constraints, which it checks patch by patch; so a lock whose header says
`CPython==3.11.*` may be used on 3.11.0 as well as on 3.11.14. The rule (docs/lockfile.md):

- **Resolve at the lowest admitted patch.** Each target resolves (pip's `--python-version`, the
  launcher's `python_full_version`, the proxy's Requires-Python filtering) at the lowest patch of
  its minor that the constraints admit: `CPython==3.11.*` -> 3.11.0, `CPython>=3.11.4,<3.13` ->
  3.11.4 and 3.12.0 (`platforms.at_lowest_admitted_patch`). A target string that names a patch
  (`cp3.11.9`) keeps it.
- **`python_full_version` markers** are evaluated there too, so a bug-fix guard such as
  `foo; python_full_version < "3.11.4"` puts `foo` into the lock whenever 3.11.0-3.11.3 are
  admitted; the marker stays in the lock (`requires_dists`), so pex, and the PEX at run time,
  leave `foo` out on 3.11.4+. Both sides hold. The other direction, a dependency that only
  higher admitted patches need (`bar; python_full_version >= "3.11.4"`), is not in a lock
  resolved at 3.11.0: `check_lock` refuses it, naming the edge and the patch.
- **Requires-Python.** Every locked distribution's Requires-Python must admit every admitted
  patch (0..`MAX_PATCH`, `!=` exclusions honoured) of every target that uses it.

A violation is a `PythonRangeError`, raised before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fastpex.core.lock.errors import ResolveError
from fastpex.core.lock.parsed import requirement as parsed_requirement
from fastpex.core.model import Lock, LockedDistribution, ResolvedPackage, Target, TargetResolve
from fastpex.core.platforms import admitted_patches, at_lowest_admitted_patch, target_names_patch, with_python_patch
from fastpex.core.util.deps import walk

__all__ = ["PythonRangeError", "check_lock", "lock_targets"]

_SHOWN = 8  # violations listed in one message
# Markers that can change between patches of one minor.
_PATCH_MARKERS = ("python_full_version", "implementation_version")


class PythonRangeError(ResolveError):
    """The lock would not hold on every interpreter patch its header admits."""


def lock_targets(targets: Sequence[Target], constraints: Sequence[str]) -> Tuple[Target, ...]:
    """The targets as a lock resolves them: each at its lowest admitted patch."""
    return tuple(at_lowest_admitted_patch(t, constraints) for t in targets)


@dataclass(frozen=True)
class _Violation:
    target: str
    message: str


def check_lock(lock: Lock, constraints: Sequence[str]) -> None:
    """Raise `PythonRangeError` unless `lock` holds on every patch `constraints` admit (module doc)."""
    shown = (
        " OR ".join(f"`{c}`" for c in constraints)
        if constraints
        else "none given, so the header admits every patch of each target's Python (`CPython==X.Y.*`)"
    )
    violations: List[_Violation] = []
    seen: set = set()
    dists: Dict[Tuple[str, str], LockedDistribution] = {}
    for dist in lock.distributions:
        dists.setdefault(dist.key, dist)  # the first, as `Lock.distribution` finds it
    excluded: Dict[Tuple[str, str], List[int]] = {}  # (Requires-Python, minor) -> the patches it excludes
    for resolve in lock.resolves:
        patches = admitted_patches(resolve.target.python_version, constraints)
        if not patches:
            continue  # the header does not admit this target's Python at all
        found = _requires_python_violations(lock, dists, resolve, patches, excluded) + _marker_violations(lock, dists, resolve, patches)
        for v in found:
            if (v.target, v.message) not in seen:
                seen.add((v.target, v.message))
                violations.append(v)
    if not violations:
        return
    lines = [f"- target `{v.target}`: {v.message}" for v in violations[:_SHOWN]]
    if len(violations) > _SHOWN:
        lines.append(f"- ... and {len(violations) - _SHOWN} more")
    raise PythonRangeError(
        "The lock would not hold on every Python its header admits (interpreter constraints: "
        f"{shown}). Pants accepts the lock for any patch they admit, so it must work on each "
        "admitted patch (0-30) of every target's Python. No lockfile was written.\n"
        + "\n".join(lines),
        target=violations[0].target,
    )


def _requires_python_violations(
    lock: Lock,
    dists: Mapping[Tuple[str, str], LockedDistribution],
    resolve: TargetResolve,
    patches: Sequence[int],
    excluded_by: Dict[Tuple[str, str], List[int]],
) -> List[_Violation]:
    """`excluded_by` memoizes each Requires-Python's verdict per minor (`patches` are the same
    for one minor): hundreds of distributions share a few dozen Requires-Python strings."""
    minor = resolve.target.python_version
    out = []
    for package in resolve.packages:
        dist = _distribution(lock, dists, package.name, package.version)
        if not dist.requires_python:
            continue
        excluded = excluded_by.get((dist.requires_python, minor))
        if excluded is None:
            try:
                spec = SpecifierSet(dist.requires_python)
            except InvalidSpecifier:
                spec = None  # pip lets an unparseable Requires-Python through; so does the check
            excluded = [] if spec is None else [p for p in patches if not spec.contains(Version(f"{minor}.{p}"), prereleases=True)]
            excluded_by[(dist.requires_python, minor)] = excluded
        if not excluded:
            continue
        first = f"{minor}.{excluded[0]}"
        admitting = [p for p in patches if p not in excluded]
        narrow = (
            f"narrow the interpreter constraints so they exclude CPython {first} "
            + (f"(e.g. a lower bound of `>={minor}.{admitting[0]}`) " if admitting and admitting[0] > excluded[0] else "")
            + f"or pin an older `{dist.name}` whose Requires-Python admits {first} (e.g. `{dist.name}<{dist.version}`)"
        )
        out.append(
            _Violation(
                resolve.target.name,
                f"`{dist.name}=={dist.version}` requires Python `{dist.requires_python}`, which excludes "
                f"CPython {first}; {narrow}",
            )
        )
    return out


def _marker_violations(
    lock: Lock, dists: Mapping[Tuple[str, str], LockedDistribution], resolve: TargetResolve, patches: Sequence[int]
) -> List[_Violation]:
    """Edges that hold on an admitted patch but that the lock, resolved at another, cannot serve.

    A walk depends on the patch only through the markers that name a patch marker: patches on
    which each of those evaluates alike (with every extra a walk can ask for) walk alike, so
    each such class is walked once (31 walks of a 200-distribution lock were a second of CPU)."""
    target = resolve.target
    packages: Dict[str, ResolvedPackage] = {canonicalize_name(p.name): p for p in resolve.packages}
    requires: Dict[str, List[Requirement]] = {
        name: _requirements(_distribution(lock, dists, name, p.version).requires_dist) for name, p in packages.items()
    }
    roots = _requirements(lock.requirements)
    telling = _patch_markers(roots, requires)
    if not telling:
        return []  # no marker can tell the patches apart: every walk is the resolved one
    resolved_at = target.marker_environment.get("python_full_version", "?")
    why_there = "named in the target" if target_names_patch(target) else "the lowest the interpreter constraints admit"
    out: List[_Violation] = []
    walked: Dict[Tuple[bool, ...], List[Tuple[Optional[str], Requirement, str]]] = {}
    for patch in patches:
        env = with_python_patch(target, patch).marker_environment
        verdicts = tuple(marker.evaluate({**env, "extra": extra}) for marker, extras in telling for extra in extras)
        problems = walked.get(verdicts)
        if problems is None:
            problems = walked[verdicts] = _walk_problems(roots, env, packages, requires)
        for asker, requirement, why in problems:
            who = f"`{asker}` requires" if asker else "the lock's requirements include"
            out.append(
                _Violation(
                    target.name,
                    f"{who} `{requirement}`, which applies on CPython {target.python_version}.{patch} "
                    f"but not on {resolved_at}, the patch the target was resolved at ({why_there}), and the lock {why}. Narrow the interpreter "
                    f"constraints to one side of the marker (e.g. a lower bound of "
                    f"`>={target.python_version}.{patch}`, which resolves the target there)",
                )
            )
        if out:
            break  # the first patch that differs says it; the next ones would repeat it
    return out


def _walk_problems(
    roots: Sequence[Requirement],
    env: Mapping[str, str],
    packages: Mapping[str, ResolvedPackage],
    requires: Mapping[str, Sequence[Requirement]],
) -> List[Tuple[Optional[str], Requirement, str]]:
    problems: List[Tuple[Optional[str], Requirement, str]] = []
    versions: Dict[str, str] = {}

    def lookup(requirement: Requirement, origin: Optional[str]) -> Optional[Sequence[Requirement]]:
        name = canonicalize_name(requirement.name)
        package = packages.get(name)
        asker = f"{origin}=={versions[origin]}" if origin in versions else origin
        if package is None:
            problems.append((asker, requirement, f"has no `{name}` for this target"))
            return None
        versions[name] = package.version
        if not requirement.url and str(requirement.specifier) and not _contains(requirement.specifier, package.version):
            problems.append((asker, requirement, f"pins `{name}=={package.version}` for this target"))
            return None
        return requires.get(name, ())

    walk(roots, env, lookup)
    return problems


def _patch_markers(
    roots: Sequence[Requirement], requires: Mapping[str, Sequence[Requirement]]
) -> List[Tuple[Marker, Tuple[str, ...]]]:
    """The distinct markers that name a patch marker, each with the extras `walk` can evaluate
    it with: "" and, for a marker naming `extra`, each extra some edge asks of a distribution
    whose edge carries it (a root's edges are walked with none)."""
    asked: Dict[str, Set[str]] = {}  # distribution -> the extras edges to it ask for
    for r in [*roots, *(r for reqs in requires.values() for r in reqs)]:
        asked.setdefault(canonicalize_name(r.name), set()).update(canonicalize_name(e) for e in r.extras)
    found: Dict[str, Tuple[Marker, Set[str]]] = {}
    for origin, reqs in [(None, roots), *requires.items()]:
        for r in reqs:
            if r.marker is None:
                continue
            text = str(r.marker)
            if text not in found:
                if not any(m in text for m in _PATCH_MARKERS):
                    continue
                found[text] = (r.marker, {""})
            if origin is not None and "extra" in text:
                found[text][1].update(asked.get(origin, ()))
    return [(marker, tuple(sorted(extras))) for marker, extras in found.values()]


def _distribution(
    lock: Lock, dists: Mapping[Tuple[str, str], LockedDistribution], name: str, version: str
) -> LockedDistribution:
    return dists.get((canonicalize_name(name), version)) or lock.distribution(name, version)  # its KeyError


def _contains(specifier: SpecifierSet, version: str) -> bool:
    try:
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True


def _requirements(raw: Sequence[str]) -> List[Requirement]:
    # None: pip would have refused it at lock time; nothing to check here
    return [r for r in map(parsed_requirement, raw) if r is not None]
