"""Ordering version strings that may not be PEP 440: the one sort key locking and the codec share."""

from __future__ import annotations

from typing import Tuple, Union

from packaging.version import InvalidVersion, Version

__all__ = ["version_sort_key"]


def version_sort_key(version: str) -> Tuple[int, Union[Version, str]]:
    """PEP 440 versions in their order, after every unparseable one (those by text)."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)
