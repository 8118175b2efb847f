"""A lock cut down to some of its requirements, so selection walks just what they need.

Pure: a function from (lock, requirements) to a lock, no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from fastpex.core.errors import UserError
from fastpex.core.model import Lock

__all__ = ["SubsetError", "subset_lock"]


class SubsetError(UserError):
    """A requested requirement is malformed or not among the lock's requirements."""


def subset_lock(lock: Lock, requirements: Sequence[str]) -> Lock:
    """The lock with only `requirements` as roots; all of the lock's when none are given."""
    if not requirements:
        return lock
    by_name: Dict[NormalizedName, List[str]] = {}
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
            raise SubsetError(f"The requirement `{raw}` is malformed: {e}")
        if name not in by_name:
            raise SubsetError(
                f"The requirement `{raw}` is not in the lock for resolve `{lock.resolve_name}` "
                f"(it locks: {', '.join(sorted(lock.requirements))}). Regenerate the lock after "
                f"adding the requirement to the resolve."
            )
        roots.append(raw)
    return dataclasses.replace(lock, requirements=tuple(roots))
