"""The one walk over PEP 508 dependency edges, shared by the lock and by selection.

The lock records each target's edges from pip's report; selection later re-derives the set of
distributions a target needs from the lock alone. Both must agree on markers and extras, or a
PEX silently misses a dependency, so both call `walk` and `edges_hold` here.
"""

from __future__ import annotations

from typing import Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["EdgeLookup", "marker_holds", "walk"]

# (requirement, the canonical name of the distribution that asked, None for a root) -> the
# Requires-Dist of the distribution it names, or None to leave it out of the walk. Raising
# refuses the walk (selection does, for a lock that lacks a distribution).
EdgeLookup = Callable[[Requirement, Optional[str]], Optional[Sequence[Requirement]]]


def marker_holds(marker: Optional[Marker], environment: Mapping[str, str], extras: Iterable[str]) -> bool:
    """Does `marker` hold in `environment` with no extra, or with any one of `extras`, active?"""
    if marker is None:
        return True
    for extra in ("", *sorted(extras)):
        env = dict(environment)
        env["extra"] = extra
        if marker.evaluate(env):
            return True
    return False


def walk(
    roots: Sequence[Requirement],
    environment: Mapping[str, str],
    lookup: EdgeLookup,
    root_extras: Optional[Mapping[str, Iterable[str]]] = None,
) -> Dict[str, FrozenSet[str]]:
    """Every distribution reachable from `roots` in `environment`, with its active extras.

    An edge counts when its marker holds with the asking distribution's extras; a distribution's
    extras are the union of those every counted edge to it asks for (plus `root_extras`). A
    distribution is walked again whenever its extras grow, so the result is a fixed point
    whatever order the edges come in.
    """
    extra_extras = {canonicalize_name(k): {canonicalize_name(e) for e in v} for k, v in (root_extras or {}).items()}
    needed: Dict[str, Set[str]] = {}
    work: List[Tuple[Requirement, Optional[str]]] = [(r, None) for r in roots]
    while work:
        requirement, origin = work.pop()
        asking = needed.get(origin, set()) if origin is not None else set()
        if not marker_holds(requirement.marker, environment, asking):
            continue
        name = canonicalize_name(requirement.name)
        edges = lookup(requirement, origin)
        if edges is None:
            continue
        wanted = {canonicalize_name(e) for e in requirement.extras} | extra_extras.get(name, set())
        have = needed.get(name)
        if have is not None and wanted <= have:
            continue
        needed[name] = (have or set()) | wanted
        work.extend((edge, name) for edge in edges)
    return {name: frozenset(extras) for name, extras in needed.items()}
