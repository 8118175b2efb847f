"""Requirement strings parsed once per process.

A lock parses the same Requires-Dist lines over and over: each target's report repeats them,
the merge walks them per target, the lock-time Python check walks them per admitted patch, and
speculation reads them from every metadata file it follows. packaging's parser costs tens of
microseconds a line; a few thousand distinct lines make up all of a big lock.
"""

from __future__ import annotations

import functools
from typing import Optional

from packaging.requirements import InvalidRequirement, Requirement

__all__ = ["requirement"]


@functools.lru_cache(maxsize=1 << 15)
def requirement(raw: str) -> Optional[Requirement]:
    """`Requirement(raw)`, or None when it does not parse. Shared: callers only read it."""
    try:
        return Requirement(raw)
    except InvalidRequirement:
        return None
