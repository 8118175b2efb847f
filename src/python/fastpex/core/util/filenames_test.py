"""util/filenames.py: wheel and sdist filenames parsed as packaging parses them, with the memoized
halves giving the same answer as one `parse_wheel_filename` per file."""

from __future__ import annotations

from typing import Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from fastpex.core.util.filenames import (
    SDIST_SUFFIXES,
    dist_name_version,
    parse_dist_filename,
    version_text,
    wheel_info,
)


@pytest.mark.parametrize(
    "filename, name, version, tags",
    [
        ("foo-1.0-py3-none-any.whl", "foo", "1.0", {"py3-none-any"}),
        # A build tag (digits, then an optional alphanumeric tail) does not change what the wheel is.
        ("foo-1.0-1-py3-none-any.whl", "foo", "1.0", {"py3-none-any"}),
        ("foo-1.0-2build7-py3-none-any.whl", "foo", "1.0", {"py3-none-any"}),
        # Compressed tag sets expand to every combination.
        ("Foo_Bar-2.0-py2.py3-none-any.whl", "foo-bar", "2.0", {"py2-none-any", "py3-none-any"}),
        (
            "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "numpy",
            "2.1.0",
            {"cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"},
        ),
        ("x-1.0-cp310.cp311-abi3.none-any.whl", "x", "1.0", {"cp310-abi3-any", "cp310-none-any", "cp311-abi3-any", "cp311-none-any"}),
        # Versions are normalized: the text is what pip's report says.
        ("torch-2.9.1+cu128-cp311-cp311-linux_x86_64.whl", "torch", "2.9.1+cu128", {"cp311-cp311-linux_x86_64"}),
        ("foo-01.0RC1-py3-none-any.whl", "foo", "1.0rc1", {"py3-none-any"}),
    ],
)
def test_wheels(filename: str, name: str, version: str, tags: set) -> None:
    parsed = parse_dist_filename(filename)
    assert parsed is not None
    assert (parsed.name, parsed.version, parsed.version_text, parsed.tags) == (name, Version(version), version, tags)
    assert wheel_info(filename) == (name, Version(version), frozenset(tags))
    assert version_text(filename) == version
    assert dist_name_version(filename) == (name, Version(version))


@pytest.mark.parametrize("suffix", SDIST_SUFFIXES)
def test_sdists_of_every_suffix(suffix: str) -> None:
    parsed = parse_dist_filename(f"Foo.Bar-1.0.post1{suffix}")
    assert parsed is not None
    assert (parsed.name, parsed.version, parsed.version_text, parsed.tags) == ("foo-bar", Version("1.0.post1"), "1.0.post1", None)
    # The name may hold dashes: the version is after the last one.
    assert dist_name_version(f"foo-bar-baz-3.2{suffix}") == ("foo-bar-baz", Version("3.2"))
    # A legacy (non-PEP 440) version still names its project, with no version.
    legacy = parse_dist_filename(f"foo-dev_snapshot{suffix}")
    assert legacy is not None and (legacy.name, legacy.version, legacy.version_text) == ("foo", None, None)
    assert wheel_info(f"foo-1.0{suffix}") is None  # not a wheel
    assert parse_dist_filename(f"foo{suffix}") is None  # no version part
    assert parse_dist_filename(f"-1.0{suffix}") is None  # no name


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0-py3-none.whl",  # too few parts
        "foo-1.0-1-2-py3-none-any.whl",  # too many parts
        "foo-1.0-x-py3-none-any.whl",  # a build tag must start with a digit
        "foo__bar-1.0-py3-none-any.whl",  # not a valid project name
        "foo-not.a.version!-py3-none-any.whl",
        "foo-1.0-py3-none-any.WHL",  # the suffix is case-sensitive, as for pip
        "foo-1.0.exe",
        "foo-1.0.tar",
        "",
    ],
)
def test_names_that_are_neither_give_none(filename: str) -> None:
    """Unparseable names are an outcome (None), not an exception: index pages list junk, and the
    callers skip it (see net/index.py's unsafe-file warnings)."""
    assert parse_dist_filename(filename) is None
    assert wheel_info(filename) is None and version_text(filename) is None and dist_name_version(filename) is None


def _packaging_says(filename: str) -> Optional[Tuple[str, Version, frozenset]]:
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    return name, version, frozenset(str(t) for t in tags)


_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._]{0,6}", fullmatch=True) | st.sampled_from(["a__b", "a.", "_a", "Foo_Bar"])
_VERSION = st.sampled_from(["1.0", "01.2", "1.0rc1", "2!1.0", "1.0.post1.dev2", "1.0+local.7", "x", "1..0", "v1"])
_BUILD = st.sampled_from(["", "-1", "-12abc", "-x", "-1-2"])
_TAG = st.sampled_from(["py3", "py2.py3", "cp311", "cp310.cp311", "none", "abi3", "any", "linux_x86_64",
                        "manylinux_2_17_x86_64.manylinux2014_x86_64", "", "a-b"])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_NAME, _VERSION, _BUILD, _TAG, _TAG, _TAG)
def test_wheels_parse_exactly_as_packaging_says(name: str, version: str, build: str, py: str, abi: str, plat: str) -> None:
    filename = f"{name}-{version}{build}-{py}-{abi}-{plat}.whl"
    expected = _packaging_says(filename)
    parsed = parse_dist_filename(filename)
    if expected is None:
        assert parsed is None, filename
        return
    assert parsed is not None, filename
    assert (parsed.name, parsed.version, parsed.tags) == expected
    assert parsed.version_text == str(expected[1])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abAB_.-01!+", min_size=1, max_size=12), st.sampled_from(SDIST_SUFFIXES))
def test_sdists_split_at_the_last_dash(stem: str, suffix: str) -> None:
    parsed = parse_dist_filename(stem + suffix)
    base, sep, ver = stem.rpartition("-")
    if not sep or not base:
        assert parsed is None
        return
    assert parsed is not None and parsed.name == canonicalize_name(base) and parsed.tags is None
    try:
        expected: Optional[Version] = Version(ver)
    except InvalidVersion:
        expected = None
    assert parsed.version == expected
