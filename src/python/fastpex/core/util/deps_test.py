"""util/deps.py: the one dependency walk, a fixed point over markers and extras whatever order
the edges come in (selection and the lock must agree on it)."""

from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence

from hypothesis import given
from hypothesis import strategies as st
from packaging.markers import Marker
from packaging.requirements import Requirement

from fastpex.core.util.deps import EdgeLookup, marker_holds, walk

LINUX = {"sys_platform": "linux", "python_version": "3.11", "platform_machine": "x86_64"}

GRAPH: Dict[str, List[str]] = {
    "app": ["web[async]", "winonly; sys_platform == 'win32'", "old; python_version < '3.8'"],
    "web": ["core", "uvloop; extra == 'async'", "docs-theme; extra == 'docs'"],
    "core": ["app"],  # a cycle back to the root
    "uvloop": [],
    "winonly": [],
    "old": [],
    "docs-theme": [],
    "plugin": ["web[docs]"],
}


def _lookup(shuffle: Optional[random.Random] = None) -> EdgeLookup:
    def lookup(requirement: Requirement, origin: Optional[str]) -> Sequence[Requirement]:
        edges = [Requirement(r) for r in GRAPH[requirement.name]]
        if shuffle is not None:
            shuffle.shuffle(edges)
        return edges

    return lookup


def test_markers_and_extras_decide_the_edges() -> None:
    needed = walk([Requirement("app")], LINUX, _lookup())
    assert needed == {"app": frozenset(), "web": frozenset({"async"}), "core": frozenset(), "uvloop": frozenset()}


def test_extras_that_grow_walk_a_distribution_again() -> None:
    """`web` is reached first without `docs`, then with it through `plugin`: docs-theme joins."""
    needed = walk([Requirement("app"), Requirement("plugin")], LINUX, _lookup())
    assert needed["web"] == {"async", "docs"} and "docs-theme" in needed
    # root_extras (names and extras in any spelling) count like a root's own `[extras]`.
    assert "docs-theme" not in walk([Requirement("web")], LINUX, _lookup())
    assert "docs-theme" in walk([Requirement("web")], LINUX, _lookup(), root_extras={"Web": ["Docs"]})


def test_a_lookup_returning_none_leaves_the_distribution_out() -> None:
    needed = walk([Requirement("app")], LINUX, lambda r, o: None if r.name == "core" else _lookup()(r, o))
    assert "core" not in needed and "web" in needed


@given(st.randoms(use_true_random=False), st.permutations(["app", "plugin", "web", "core"]))
def test_the_result_does_not_depend_on_edge_or_root_order(rnd: random.Random, roots: List[str]) -> None:
    expected = walk([Requirement(r) for r in ["app", "plugin", "web", "core"]], LINUX, _lookup())
    assert walk([Requirement(r) for r in roots], LINUX, _lookup(rnd)) == expected


def test_marker_holds_with_any_one_extra() -> None:
    marker = Marker("extra == 'a' and sys_platform == 'linux'")
    assert marker_holds(None, LINUX, ())
    assert not marker_holds(marker, LINUX, ())
    assert marker_holds(marker, LINUX, ("b", "a"))
    assert not marker_holds(marker, {**LINUX, "sys_platform": "darwin"}, ("a",))
