"""Hand the `[fastpex].resolves` over from the python backend to fastpex in `generate-lockfiles`.

Pants 2.17 asks every backend for its resolve names, rejects a name that two backends list, and
gives `--resolve=NAME` to the first backend that lists it; `pants.core` registers the python
backend first. So the python backend would claim every `[python].resolves` name, fastpex's
included, and (with `resolves_generate_lockfiles = false`) silently generate nothing.

This wraps the one function that makes that decision, `determine_resolves_to_generate`, so that
the names fastpex manages are removed from the python backend's list before it runs. Nothing
else changes: the python backend keeps generating its other resolves with pex, and reading
every resolve's lockfile for `test`, `run` and `package`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, List, Set

from pants.core.goals import generate_lockfiles
from pants.core.goals.generate_lockfiles import KnownUserResolveNames, RequestedUserResolveNames

_WRAPPED_MARKER = "_fastpex_claims_resolves"


def hand_over(
    known: Iterable[KnownUserResolveNames], claimant: type[RequestedUserResolveNames]
) -> List[KnownUserResolveNames]:
    """The claimant's names first; every other backend's list without them."""
    known = list(known)
    claimed: Set[str] = set()
    for entry in known:
        if entry.requested_resolve_names_cls is claimant:
            claimed.update(entry.names)
    ours = [k for k in known if k.requested_resolve_names_cls is claimant]
    others = [
        dataclasses.replace(k, names=tuple(n for n in k.names if n not in claimed))
        for k in known
        if k.requested_resolve_names_cls is not claimant
    ]
    return ours + others


def install(claimant: type[RequestedUserResolveNames]) -> None:
    original: Callable[..., Any] = generate_lockfiles.determine_resolves_to_generate
    if getattr(original, _WRAPPED_MARKER, False):
        return

    def determine_resolves_to_generate(all_known_user_resolve_names, *args, **kwargs):
        return original(hand_over(all_known_user_resolve_names, claimant), *args, **kwargs)

    setattr(determine_resolves_to_generate, _WRAPPED_MARKER, True)
    generate_lockfiles.determine_resolves_to_generate = determine_resolves_to_generate
