"""The page cache on the loopback index: conditional requests where the index sends validators,
none where it doesn't (and nothing kept), a 304 answered from the kept bytes, a changed page
never stale, a damaged or tampered entry a miss."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import pytest

from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import IndexClient, ProjectPage
from fastpex.core.net.page_cache import PageCache
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

FAST = HttpConfig(max_retries=1, backoff_initial=0.01, connect_timeout=1)
BOTH = ("etag", "last-modified")


def _fetch(server: IndexServer, cache: Path) -> Tuple[ProjectPage, IndexClient]:
    """One page read as a fresh lock process does it: a new client over the same cache dir."""
    with HttpClient(FAST) as http:
        client = IndexClient(http, PageCache(cache))
        page = client.project_page(server.simple_url, "demo")
    assert page is not None
    return page, client


def _page_requests(server: IndexServer) -> list:
    return server.matching("/simple/demo/")


@pytest.mark.parametrize("validators", [BOTH, ("etag",), ("last-modified",)])
def test_an_unchanged_page_is_a_304_answered_from_the_kept_bytes(tmp_path: Path, validators: Tuple[str, ...]) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    build_wheel(dists, "demo", "1.0")
    with IndexServer(dists, IndexConfig(page_validators=validators)) as server:
        first, client = _fetch(server, tmp_path / "cache")
        assert (client.stats.fetched, client.stats.parsed) == (1, 1)
        second, client = _fetch(server, tmp_path / "cache")
        assert (client.stats.not_modified, client.stats.parsed, client.stats.fetched) == (1, 1, 0)
        assert second == first and second.body_sha256 == first.body_sha256
        (plain, conditional) = _page_requests(server)
        assert not plain.conditional and plain.status == 200
        assert conditional.conditional and conditional.status == 304 and conditional.bytes_sent == 0
        assert server.pages_rendered == 1


def test_without_validators_no_conditions_are_sent_and_no_body_is_kept(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    build_wheel(dists, "demo", "1.0")
    with IndexServer(dists, IndexConfig(page_validators=())) as server:
        first, _ = _fetch(server, tmp_path / "cache")
        second, client = _fetch(server, tmp_path / "cache")
        assert (client.stats.fetched, client.stats.not_modified, client.stats.parsed) == (1, 0, 1)
        assert second == first
        assert not list((tmp_path / "cache").rglob("bodies/*/*"))
        assert [(r.conditional, r.status) for r in _page_requests(server)] == [(False, 200), (False, 200)]


@pytest.mark.parametrize("validators", [BOTH, ("last-modified",), ()])
def test_a_changed_page_is_never_served_stale(tmp_path: Path, validators: Tuple[str, ...]) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    build_wheel(dists, "demo", "1.0")
    with IndexServer(dists, IndexConfig(page_validators=validators)) as server:
        first, _ = _fetch(server, tmp_path / "cache")
        build_wheel(dists, "demo", "2.0")  # an upload, within the same second
        second, client = _fetch(server, tmp_path / "cache")
        assert (client.stats.fetched, client.stats.parsed, client.stats.not_modified) == (1, 1, 0)
        assert {f.filename for f in second.files} == {f.filename for f in first.files} | {"demo-2.0-py3-none-any.whl"}
        assert second.body_sha256 != first.body_sha256
        assert _page_requests(server)[-1].conditional == bool(validators)
        third, client = _fetch(server, tmp_path / "cache")  # and the new page is the one kept
        assert third == second and client.stats.not_modified == (1 if validators else 0)


def test_a_damaged_cache_entry_is_a_miss_not_an_error(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    build_wheel(dists, "demo", "1.0")
    with IndexServer(dists) as server:
        first, _ = _fetch(server, tmp_path / "cache")
        (entry,) = (tmp_path / "cache").rglob("bodies/*/*")
        entry.write_text('{"format": 2, "url": "x"}\n{"files": [{"filename": "demo-6.6-py3-none-any.whl", "url": "x"}]}')
        second, client = _fetch(server, tmp_path / "cache")  # the 304's page is gone: asked again in full
        assert second == first and client.stats.parsed == 1 and client.stats.fetched == 1
        assert [(r.conditional, r.status) for r in _page_requests(server)][1:] == [(True, 304), (False, 200)]
