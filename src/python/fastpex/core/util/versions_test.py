"""util/versions.py: one total order over version strings, PEP 440 or not."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from packaging.version import InvalidVersion, Version

from fastpex.core.util.versions import version_sort_key


def test_pep_440_order_after_the_unparseable_ones() -> None:
    versions = ["1.0", "1.0rc1", "2!0.1", "1.0.post1", "1.0.dev3", "0.9", "1.0+local", "banana", "1.0-2014", "2013b"]
    ordered = sorted(versions, key=version_sort_key)
    # 1.0-2014 is 1.0.post2014 to PEP 440; 2013b is 2013b0. Only "banana" is not a version.
    assert ordered == ["banana", "0.9", "1.0.dev3", "1.0rc1", "1.0", "1.0+local", "1.0.post1", "1.0-2014", "2013b", "2!0.1"]


def test_equal_versions_compare_equal_whatever_their_spelling() -> None:
    assert version_sort_key("1.0") == version_sort_key("1.0.0") == version_sort_key("v1.0")
    assert version_sort_key("1.0RC1") == version_sort_key("1.0rc1")
    assert version_sort_key("not-a-version") != version_sort_key("Not-A-Version")  # by text


_VERSIONS = st.one_of(
    st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}((a|b|rc)[0-9])?(\.post[0-9])?(\.dev[0-9])?", fullmatch=True),
    st.text(alphabet="abcxyz-_.!+", min_size=1, max_size=8),
)


@given(st.lists(_VERSIONS, min_size=1, max_size=20), st.randoms())
def test_a_total_order_independent_of_input_order(versions: list, rnd: random.Random) -> None:
    ordered = sorted(versions, key=version_sort_key)
    shuffled = list(versions)
    rnd.shuffle(shuffled)
    assert [version_sort_key(v) for v in sorted(shuffled, key=version_sort_key)] == [version_sort_key(v) for v in ordered]
    seen_valid = False
    previous = None
    unparseable = []
    for text in ordered:
        try:
            parsed = Version(text)
        except InvalidVersion:
            assert not seen_valid, f"{text!r} sorts after a PEP 440 version"
            unparseable.append(text)
            continue
        seen_valid = True
        assert previous is None or previous <= parsed
        previous = parsed
    assert unparseable == sorted(unparseable)  # among themselves, by text
