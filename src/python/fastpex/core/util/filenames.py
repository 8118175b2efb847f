"""What a distribution's filename says (PEP 427 wheels, sdists): name, version, tags.

Pages of big projects list thousands of files that share a few versions and tag strings, so
each half is parsed once per process (memoized) and a file costs a dictionary lookup.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

from packaging.tags import parse_tag
from packaging.utils import InvalidWheelFilename, NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

__all__ = [
    "SDIST_SUFFIXES", "DistFilename", "dist_name_version", "parse_dist_filename", "version_text", "wheel_info", "wheel_parts",
]

SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


class DistFilename(NamedTuple):
    """What a wheel's or sdist's filename says: `version` None for a legacy sdist version."""

    name: NormalizedName
    version: Optional[Version]
    version_text: Optional[str]  # `str(version)`: normalized, what pip's report says
    tags: "Optional[frozenset[str]]"  # a wheel's tags; None for an sdist


@functools.lru_cache(maxsize=1 << 14)
def _wheel_head(head: str) -> Optional[Tuple[NormalizedName, Version, str]]:
    """`name-version[-build]` of a wheel filename, checked by packaging itself (with a neutral
    tag): the files of one version share it, so each version is parsed once per process."""
    try:
        name, version, _, _ = parse_wheel_filename(head + "-py3-none-any.whl")
    except (InvalidWheelFilename, InvalidVersion):
        return None
    return name, version, str(version)


@functools.lru_cache(maxsize=1 << 12)
def _tag_set(tag: str) -> "Optional[frozenset[str]]":
    """A wheel's (compressed) tag string as tag strings; None when packaging rejects it. Pages
    repeat a few hundred tag strings over thousands of files."""
    try:
        return frozenset(str(t) for t in parse_tag(tag))
    except ValueError:  # packaging's InvalidTag (>= 26.3) is a ValueError
        return None


@functools.lru_cache(maxsize=1 << 12)
def _sdist_version(text: str) -> Tuple[Optional[Version], Optional[str]]:
    try:
        version = Version(text)
    except InvalidVersion:
        return None, None
    return version, str(version)


@functools.lru_cache(maxsize=1 << 16)
def parse_dist_filename(filename: str) -> Optional[DistFilename]:
    """A wheel's or sdist's filename parsed; None if it is neither (or an invalid wheel name).

    A wheel is valid exactly when `parse_wheel_filename` says so (the split is its own: 4 or
    5 dashes, the last three parts the tags), computed from two memoized halves instead of
    once per file: pages of big projects list thousands of files sharing versions and tags.
    Legacy sdists with non-PEP 440 versions still belong to their project (version None).
    """
    if filename.endswith(".whl"):
        base = filename[:-4]
        if base.count("-") not in (4, 5):
            return None
        pieces = base.rsplit("-", 3)
        head = _wheel_head(pieces[0])
        tags = _tag_set("-".join(pieces[1:])) if head is not None else None
        if head is None or tags is None:
            return None
        return DistFilename(head[0], head[1], head[2], tags)
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            base, sep, ver = filename[: -len(suffix)].rpartition("-")
            if not sep or not base:
                return None
            version, text = _sdist_version(ver)
            return DistFilename(canonicalize_name(base), version, text, None)
    return None


def wheel_parts(filename: str) -> "Optional[Tuple[Tuple[NormalizedName, Version, str], frozenset[str]]]":
    """For a `.whl` name, ((name, version, version text), tags) as `parse_dist_filename` decides
    them, made of its memoized halves only: no per-file object, for loops over whole pages."""
    dashes = filename.count("-")
    if dashes != 4 and dashes != 5:
        return None
    head, python, abi, platform = filename[:-4].rsplit("-", 3)
    parsed = _wheel_head(head)
    tags = _tag_set(python + "-" + abi + "-" + platform) if parsed is not None else None
    return None if parsed is None or tags is None else (parsed, tags)


def wheel_info(filename: str) -> Optional[Tuple[NormalizedName, Version, "frozenset[str]"]]:
    """(canonical name, version, tags) of a wheel filename; None if it is not a valid one."""
    parsed = parse_dist_filename(filename)
    if parsed is None or parsed.tags is None or parsed.version is None:
        return None
    return parsed.name, parsed.version, parsed.tags


def version_text(filename: str) -> Optional[str]:
    """The normalized text of a wheel's or sdist's version (`str(Version)`), None when it has
    no PEP 440 version."""
    parsed = parse_dist_filename(filename)
    return None if parsed is None else parsed.version_text


def dist_name_version(filename: str) -> Optional[Tuple[NormalizedName, Optional[Version]]]:
    """(canonical name, version) from a wheel or sdist filename; None if it is neither."""
    parsed = parse_dist_filename(filename)
    return None if parsed is None else (parsed.name, parsed.version)
