"""The page cache on the loopback index: conditional requests where the index sends validators,
none where it doesn't (and nothing kept), a 304 answered from the kept bytes, a changed page
never stale, a damaged or tampered entry a miss; a page's bytes parsed before are loaded in
their parsed form (the view cache), by a key that no other bytes, URL or project share."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import marshal
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Tuple

import pytest

from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.lock.project_view import ProjectView
from fastpex.core.net.index import IndexClient, ProjectPage
from fastpex.core.net.json_page import PageFiles, parse_json_page
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


def _files(cache: Path, kind: str) -> list:
    """The entries of one kind (`bodies`, `views`): files in its shards, not markers or locks."""
    return sorted(p for p in cache.rglob(f"{kind}/*/*") if p.is_file() and not p.name.endswith(".lck"))


def _demo_dists(tmp_path: Path) -> Path:
    """The index's files: one wheel of `demo` 1.0 (tests upload more to change the page)."""
    dists = tmp_path / "dists"
    dists.mkdir()
    build_wheel(dists, "demo", "1.0")
    return dists


def _page_requests(server: IndexServer) -> list:
    return server.matching("/simple/demo/")


@pytest.mark.parametrize("validators", [BOTH, ("etag",), ("last-modified",)])
def test_an_unchanged_page_is_a_304_answered_from_the_kept_bytes(tmp_path: Path, validators: Tuple[str, ...]) -> None:
    dists = _demo_dists(tmp_path)
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
    dists = _demo_dists(tmp_path)
    with IndexServer(dists, IndexConfig(page_validators=())) as server:
        first, _ = _fetch(server, tmp_path / "cache")
        second, client = _fetch(server, tmp_path / "cache")
        assert (client.stats.fetched, client.stats.not_modified, client.stats.parsed) == (1, 0, 1)
        assert second == first
        assert not list((tmp_path / "cache").rglob("bodies/*/*"))
        assert [(r.conditional, r.status) for r in _page_requests(server)] == [(False, 200), (False, 200)]


@pytest.mark.parametrize("validators", [BOTH, ("last-modified",), ()])
def test_a_changed_page_is_never_served_stale(tmp_path: Path, validators: Tuple[str, ...]) -> None:
    dists = _demo_dists(tmp_path)
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
    dists = _demo_dists(tmp_path)
    with IndexServer(dists) as server:
        first, _ = _fetch(server, tmp_path / "cache")
        (entry,) = _files(tmp_path / "cache", "bodies")
        entry.write_text('{"format": 2, "url": "x"}\n{"files": [{"filename": "demo-6.6-py3-none-any.whl", "url": "x"}]}')
        second, client = _fetch(server, tmp_path / "cache")  # the 304's page is gone: asked again in full
        assert second == first and client.stats.parsed == 1 and client.stats.fetched == 1
        assert [(r.conditional, r.status) for r in _page_requests(server)][1:] == [(True, 304), (False, 200)]


# -- parsed pages (the view cache) ---------------------------------------------------------------

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
PAGE_URL = "https://idx.example/simple/demo/"


def _rich_body() -> bytes:
    """A page with every kind of entry a parse treats differently."""
    sha = "ab" * 32
    files: list = []
    for version in ("1.0", "1.10", "1.2.post1", "2.0rc1", "2.0"):
        for tag in ("py3-none-any", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", "cp312-cp312-macosx_11_0_arm64"):
            files.append({"filename": f"demo-{version}-{tag}.whl", "url": f"../../files/demo-{version}-{tag}.whl",
                          "hashes": {"sha256": sha.upper()}, "requires-python": ">=3.8", "size": 10,
                          "core-metadata": {"sha256": sha}, "upload-time": "2024-01-01T00:00:00Z"})
        files.append({"filename": f"demo-{version}.tar.gz", "url": f"https://u:pw@f.example/demo-{version}.tar.gz#sha256={sha}",
                      "yanked": None, "requires-python": None, "dist-info-metadata": True})
    files[0]["yanked"] = "broken"
    files[1]["yanked"] = True
    files += [
        {"filename": "demo-3.0-1build-py3-none-any.whl", "url": "https://f.example/b.whl", "hashes": {"md5": "c" * 32}, "size": -1},
        {"filename": "demo-notaversion.zip", "url": "https://f.example/n.zip"},
        {"filename": "demo-bad-name.whl", "url": "https://f.example/bad.whl"},
        {"filename": "../../evil.whl", "url": "https://f.example/evil.whl"},
        "not an entry",
    ]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "Demo", "files": files, "versions": ["1.0", "2.0"]}).encode()


def _page(cache: Path, body: bytes, url: str = PAGE_URL, project: str = "demo") -> Tuple[ProjectPage, PageCache]:
    """The page as a fresh lock process makes it of these bytes: a new `PageCache` over `cache`."""
    pages = PageCache(cache)
    return pages.page(body, hashlib.sha256(body).hexdigest(), JSON_TYPE, url, project), pages


def _same_page(loaded: ProjectPage, parsed: ProjectPage) -> None:
    """Everything a lock reads of a page, and of the view made of it, is the same."""
    assert (loaded.project, loaded.url, loaded.api_version, loaded.versions, loaded.body_sha256) == (
        parsed.project, parsed.url, parsed.api_version, parsed.versions, parsed.body_sha256)
    a, b = loaded.files, parsed.files
    assert isinstance(a, PageFiles) and isinstance(b, PageFiles)
    assert a.filenames == b.filenames and a.urls == b.urls and a.facts() == b.facts()
    assert a.all_sized() == b.all_sized()
    for i in range(len(b)):
        assert (a.hashes(i), a.sha256(i), a.yanked(i), a.requires_python(i)) == (b.hashes(i), b.sha256(i), b.yanked(i), b.requires_python(i))
    assert list(a) == list(b)
    va, vb = ProjectView("demo", a, "digest"), ProjectView("demo", b, "digest")
    assert va.versions == vb.versions and va.version_texts() == vb.version_texts()
    every = range(len(b))
    assert va.json_page(every, "http://proxy/files") == vb.json_page(every, "http://proxy/files")
    tags = frozenset({"py3-none-any", "cp311-cp311-manylinux_2_17_x86_64"})
    admits = lambda spec, python: True  # noqa: E731
    assert va.usable(tags, "3.11", False, admits) == vb.usable(tags, "3.11", False, admits)
    priority = {"cp312-cp312-macosx_11_0_arm64": 0, "py3-none-any": 1}
    assert va.best_wheels(priority, 3) == vb.best_wheels(priority, 3)


def test_bytes_parsed_before_are_loaded_not_parsed_and_read_as_parsing_made_them(tmp_path: Path) -> None:
    body = _rich_body()
    fresh = replace(parse_json_page(body, PAGE_URL, "demo"), body_sha256=hashlib.sha256(body).hexdigest())
    first, pages = _page(tmp_path, body)
    assert (pages.views_loaded, pages.views_stored) == (0, 1)
    second, pages = _page(tmp_path, body)
    assert (pages.views_loaded, pages.views_stored) == (1, 0)
    assert isinstance(second.files, PageFiles) and second.files.materialized() == 0  # still lazy
    _same_page(second, fresh)
    _same_page(first, fresh)
    assert [f.filename for f in second.files if f.yanked] == ["demo-1.0-py3-none-any.whl", "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]
    assert "../../evil.whl" not in {f.filename for f in second.files}


def test_the_same_bytes_under_another_url_or_project_are_parsed_again(tmp_path: Path) -> None:
    body = _rich_body()
    _page(tmp_path, body)
    elsewhere, pages = _page(tmp_path, body, url="https://mirror.example/pypi/simple/demo/")
    assert pages.views_loaded == 0
    assert elsewhere.files[0].url == "https://mirror.example/pypi/files/demo-1.0-py3-none-any.whl"
    _, pages = _page(tmp_path, body, project="other")
    assert pages.views_loaded == 0
    changed = body.replace(b"2.0rc1", b"2.0rc2")
    assert changed != body
    page, pages = _page(tmp_path, changed)
    assert pages.views_loaded == 0 and "demo-2.0rc2.tar.gz" in {f.filename for f in page.files}  # never stale


def _rewritten(payload: tuple) -> bytes:
    data = marshal.dumps(payload)
    return hashlib.sha256(data).digest() + data  # a valid checksum: only the content is wrong


@pytest.mark.parametrize(
    "damage",
    [
        "flipped byte", "truncated", "empty", "garbage", "unsafe filename", "wheel index out of range",
        "column too short", "other format", "not marshal",
    ],
)
def test_a_damaged_or_tampered_parsed_page_is_a_miss_not_an_error(tmp_path: Path, damage: str) -> None:
    body = _rich_body()
    fresh, _ = _page(tmp_path, body)
    (entry,) = tmp_path.rglob("views/*/*")
    data = entry.read_bytes()
    payload = list(marshal.loads(data[32:]))
    if damage == "flipped byte":
        entry.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "garbage":
        entry.write_bytes(b"\0" * 32 + b"x" * 100)
    elif damage == "unsafe filename":
        payload[5] = ["../../../etc/passwd"] + payload[5][1:]
        entry.write_bytes(_rewritten(tuple(payload)))
    elif damage == "wheel index out of range":
        facts = list(payload[9])
        facts[3] = [[(len(payload[5]), frozenset({"py3-none-any"}))]]
        payload[9] = tuple(facts)
        entry.write_bytes(_rewritten(tuple(payload)))
    elif damage == "column too short":
        payload[7] = [column[:-1] for column in payload[7]]
        entry.write_bytes(_rewritten(tuple(payload)))
    elif damage == "other format":
        payload[0] = 999
        entry.write_bytes(_rewritten(tuple(payload)))
    else:
        entry.write_bytes(hashlib.sha256(b"{}").digest() + b"{}")
    again, pages = _page(tmp_path, body)
    assert (pages.views_loaded, pages.views_stored) == (0, 1)  # parsed again, and kept again
    _same_page(again, fresh)
    third, pages = _page(tmp_path, body)
    assert pages.views_loaded == 1
    _same_page(third, fresh)


def test_a_page_fetched_again_without_validators_is_loaded_from_its_parsed_form(tmp_path: Path) -> None:
    dists = _demo_dists(tmp_path)
    build_wheel(dists, "demo", "2.0")
    with IndexServer(dists, IndexConfig(page_validators=())) as server:
        first, client = _fetch(server, tmp_path / "cache")
        assert client.pages is not None and (client.pages.views_loaded, client.pages.views_stored) == (0, 1)
        second, client = _fetch(server, tmp_path / "cache")
        assert client.pages is not None and (client.pages.views_loaded, client.pages.views_stored) == (1, 0)
        assert client.stats.fetched == 1  # the body still comes from the index: only its parse is skipped
        assert second == first and second.body_sha256 == first.body_sha256
        build_wheel(dists, "demo", "3.0")
        third, client = _fetch(server, tmp_path / "cache")
        assert client.pages is not None and client.pages.views_loaded == 0
        assert "demo-3.0-py3-none-any.whl" in {f.filename for f in third.files}


# -- bounds: the newest body of a page and one older one -------------------------------------------


def _body_of(version: str) -> bytes:
    """A distinct state of the demo page: `_rich_body` with one more release."""
    extra = {"filename": f"demo-{version}-py3-none-any.whl", "url": f"../../files/demo-{version}-py3-none-any.whl"}
    doc = json.loads(_rich_body())
    doc["files"].append(extra)
    return json.dumps(doc).encode()


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _store(cache: Path, body: bytes, url: str = PAGE_URL, validators: bool = True) -> PageCache:
    """What a lock does with a 200: parse (keeping the view) and, for a page with validators,
    keep the body; a fresh `PageCache`, as another process would use."""
    pages = PageCache(cache)
    pages.page(body, _sha(body), JSON_TYPE, url, "demo")
    if validators:
        pages.keep(body, _sha(body), JSON_TYPE, url)
    return pages


@pytest.mark.parametrize("validators", [BOTH, ()])
def test_a_page_that_changed_three_times_keeps_the_entries_of_its_last_two_bodies(tmp_path: Path, validators: Tuple[str, ...]) -> None:
    dists = _demo_dists(tmp_path)
    cache = tmp_path / "cache"
    seen: list = []  # per state of the page: (its sha256, the view and body files it left)
    with IndexServer(dists, IndexConfig(page_validators=validators)) as server:
        for version in ("2.0", "3.0", "4.0", None):
            page, _ = _fetch(server, cache)
            before = {p for state in seen for p in state[1]}
            seen.append((page.body_sha256, (set(_files(cache, "views")) | set(_files(cache, "bodies"))) - before))
            if version is not None:
                build_wheel(dists, "demo", version)
        assert len({sha for sha, _ in seen}) == 4
        assert len(_files(cache, "views")) == 2
        assert len(_files(cache, "bodies")) == (2 if validators else 0)
        for _, files in seen[:2]:  # the two oldest states: removed from disk
            assert files and not any(p.exists() for p in files)
        for _, files in seen[2:]:
            assert files and all(p.exists() for p in files)
        assert len(list(cache.rglob("bodies/*/*.by/*"))) == (2 if validators else 0)  # one marker per kept body
        again, client = _fetch(server, cache)  # the newest is still served from the cache
        assert again.body_sha256 == seen[-1][0]
        assert client.pages is not None and client.pages.views_loaded == 1
        assert client.stats.not_modified == (1 if validators else 0)


def test_the_body_seen_last_is_kept_even_when_it_was_a_hit(tmp_path: Path) -> None:
    a, b, c = _body_of("5.0"), _body_of("6.0"), _body_of("7.0")
    _store(tmp_path, a)
    _store(tmp_path, b)
    assert _store(tmp_path, a).views_loaded == 1  # a lock alternating between two indexes' states
    _store(tmp_path, c)  # pushes out b, the older of the two seen before it
    assert _store(tmp_path, a).views_loaded == 1
    assert PageCache(tmp_path).load(_sha(a), "demo") is not None
    assert PageCache(tmp_path).load(_sha(b), "demo") is None
    assert _store(tmp_path, b).views_loaded == 0  # parsed again: a miss, as it should be


def test_a_reader_of_a_removed_entry_gets_a_miss_not_an_error(tmp_path: Path) -> None:
    old = _body_of("5.0")
    _store(tmp_path, old)
    reader = PageCache(tmp_path)  # a process that will ask for the old page after it is gone
    before = reader.load(_sha(old), "demo")
    assert before is not None
    for version in ("6.0", "7.0"):
        _store(tmp_path, _body_of(version))
    assert reader.load(_sha(old), "demo") is None  # its body is gone: the 304 path asks again
    page = reader.page(old, _sha(old), JSON_TYPE, PAGE_URL, "demo")  # its view is gone: parsed again
    assert (reader.views_loaded, reader.views_stored) == (1, 1)
    _same_page(page, before)


def _keep_changing(cache: str, rounds: int) -> int:
    """Another process: the page changes under it, round after round (spawned)."""
    for i in range(rounds):
        _store(Path(cache), _body_of(f"{100 + i % 5}.0"))
    return rounds


def test_entries_removed_while_another_process_reads_them_are_misses(tmp_path: Path) -> None:
    bodies = [_body_of(f"{100 + i}.0") for i in range(5)]
    expected = {_sha(b): {f.filename for f in parse_json_page(b, PAGE_URL, "demo").files} for b in bodies}
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        writer = pool.submit(_keep_changing, str(tmp_path), 150)
        reads = parsed = 0
        while not writer.done() or reads < 50:
            body = bodies[reads % 5]
            pages = PageCache(tmp_path)
            page = pages.page(body, _sha(body), JSON_TYPE, PAGE_URL, "demo")
            assert {f.filename for f in page.files} == expected[_sha(body)]
            loaded = pages.load(_sha(body), "demo")
            assert loaded is None or {f.filename for f in loaded.files} == expected[_sha(body)]
            reads += 1
            parsed += pages.views_stored
        assert writer.result() == 150
        assert parsed > 0  # five bodies in turn, two kept: some reads found theirs removed
    _store(tmp_path, bodies[0])
    assert len(_files(tmp_path, "views")) <= 2 and len(_files(tmp_path, "bodies")) <= 2


def test_an_entry_another_url_names_is_kept(tmp_path: Path) -> None:
    shared = _body_of("5.0")
    mirror = "https://mirror.example/simple/demo/"
    _store(tmp_path, shared)
    _store(tmp_path, shared, url=mirror)
    (body,) = _files(tmp_path, "bodies")  # one body for both: the same sha256
    assert len(_files(tmp_path, "views")) == 2  # a view each: the key holds the URL
    for version in ("6.0", "7.0"):  # the first URL's page moves on
        _store(tmp_path, _body_of(version))
    assert body.exists()
    on_mirror = PageCache(tmp_path)
    on_mirror.page(shared, _sha(shared), JSON_TYPE, mirror, "demo")
    assert on_mirror.views_loaded == 1  # its view
    assert on_mirror.load(_sha(shared), "demo") is not None  # and its body, for its next 304
    assert PageCache(tmp_path).page(shared, _sha(shared), JSON_TYPE, PAGE_URL, "demo") is not None
    for version in ("8.0", "9.0", "10.0"):  # the first URL saw `shared` again just now
        _store(tmp_path, _body_of(version))
        _store(tmp_path, _body_of(version), url=mirror)
    assert not body.exists()  # no URL names it now
    assert len(_files(tmp_path, "bodies")) == 2 and len(_files(tmp_path, "views")) == 4


def test_the_old_formats_parsed_pages_are_removed_when_the_cache_opens(tmp_path: Path) -> None:
    old = tmp_path / "pages" / "v1" / "parsed" / "ab"
    old.mkdir(parents=True)
    (old / f"{'ab' * 32}.json").write_text("{}")
    pages = PageCache(tmp_path)
    assert not (pages.dir / "parsed").exists()
    assert not [p for p in pages.dir.iterdir() if p.name.startswith(".")]  # nor its work dir
    PageCache(tmp_path)  # nothing to do: no error


def test_a_304_for_a_mirror_resolves_links_against_the_mirror(tmp_path: Path) -> None:
    """The same bytes kept for two URLs: a 304 from the second parses against the second, so
    its relative file links point at the host that served them, not at the first URL's."""
    shared = _body_of("5.0")
    mirror = "https://mirror.example/simple/demo/"
    _store(tmp_path, shared)
    _store(tmp_path, shared, url=mirror)
    on_mirror = PageCache(tmp_path).load(_sha(shared), "demo", mirror)
    assert on_mirror is not None
    urls = {f.url for f in on_mirror.files}
    assert "https://mirror.example/files/demo-5.0-py3-none-any.whl" in urls
    assert not any(u.startswith("https://idx.example/") for u in urls)
