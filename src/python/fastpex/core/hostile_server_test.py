"""Hostile index servers: every misbehaviour is bounded in time and memory and reported with the
offending (redacted) URL.

Fault kinds tried here: file names that try path traversal (JSON and HTML pages), links to other
hosts (credentials must not follow), `.metadata` that does not match its wheel (hash, project),
a METADATA member declaring a huge size and one lying about its size (decompression bombs), a
server that trickles the body, one that trickles the headers, one that goes silent, and a
proxy page advertising metadata it cannot serve.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
import tracemalloc
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from fastpex.core.errors import UsageError
from fastpex.core.fetch import place_into
from fastpex.core.net.errors import HttpConnectionError
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import IndexClient, IndexUnreachableError, parse_html_page, parse_json_page
from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata import (
    MetadataError,
    MetadataInconsistentError,
    MetadataMismatchError,
    MetadataTooLargeError,
)
from fastpex.core.model import Artifact, FetchedArtifact
from fastpex.testing.hostile_http import (
    Handler,
    HostileServer,
    ranged,
    silent,
    static,
    trickle_body,
    trickle_headers,
)
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_sdist, build_sdist_with_inline_backend, build_wheel, record_digest

FAST = HttpConfig(connect_timeout=2.0, read_timeout=0.5, max_retries=0, total_timeout=1.5, min_stream_rate=1024)
SHA = "a" * 64


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


# -- path traversal in file names --------------------------------------------------------------

TRAVERSAL_NAMES = [
    "../../evil-1.0-py3-none-any.whl",
    "sub/evil-1.0-py3-none-any.whl",
    "..\\..\\evil-1.0-py3-none-any.whl",
    "evil\x00-1.0-py3-none-any.whl",
    "evil-1.0-py3-none-any.whl\nfake = 1",
    ".evil-1.0-py3-none-any.whl",
    "..",
]


def test_json_page_file_names_that_are_paths_are_dropped_and_reported(caplog) -> None:
    import json

    files = [{"filename": name, "url": f"/files/x{i}.whl", "hashes": {"sha256": SHA}} for i, name in enumerate(TRAVERSAL_NAMES)]
    files.append({"filename": "good-1.0-py3-none-any.whl", "url": "/files/good.whl", "hashes": {"sha256": SHA}})
    with caplog.at_level(logging.WARNING):
        page = parse_json_page(json.dumps({"files": files}).encode(), "https://u:secret@evil.example/simple/evil/", "evil")
    assert [f.filename for f in page.files] == ["good-1.0-py3-none-any.whl"]
    assert caplog.text.count("ignoring the file") == len(TRAVERSAL_NAMES)
    assert "https://u:***@evil.example/simple/evil/" in caplog.text and "secret" not in caplog.text


def test_html_page_hrefs_that_decode_to_paths_are_dropped() -> None:
    body = b"".join(
        f'<a href="{href}#sha256={SHA}">x</a>'.encode()
        for href in (
            "../../files/..%2F..%2Fevil-1.0-py3-none-any.whl",
            "/files/sub%2Fevil-1.0-py3-none-any.whl",
            "/files/..%5Cevil-1.0-py3-none-any.whl",
            "/files/%2E%2E",
            "/files/evil%00-1.0-py3-none-any.whl",
            "/files/good-1.0-py3-none-any.whl",
        )
    )
    page = parse_html_page(body, "https://evil.example/simple/evil/", "evil")
    assert [f.filename for f in page.files] == ["good-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_fetch_dest_refuses_names_that_are_paths(tmp_path: Path, name: str) -> None:
    """A hand-edited or hostile lockfile cannot make `fetch --dest` write outside `--dest`."""
    stored = tmp_path / "store" / SHA
    stored.parent.mkdir()
    stored.write_bytes(b"wheel")
    dest = tmp_path / "a" / "b" / "dest"
    artifact = Artifact(url="https://evil.example/x.whl", filename=name, sha256=SHA)
    with pytest.raises(UsageError, match="unsafe artifact filename"):
        place_into(dest, [FetchedArtifact(artifact, str(stored))])
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != stored]
    assert written == []


# -- links to other hosts ----------------------------------------------------------------------


def test_files_on_other_hosts_are_allowed_reported_and_get_no_credentials(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with HostileServer() as files_host, HostileServer() as index_host:
        wheel = build_wheel(tmp_path, "demo", "1.0")
        files_host.routes["/demo-1.0-py3-none-any.whl"] = static(wheel.read_bytes())
        page = f'<a href="{files_host.url}/demo-1.0-py3-none-any.whl">demo-1.0-py3-none-any.whl</a>'.encode()
        index_host.routes["/simple/demo/"] = static(page, "text/html")
        index = index_host.url.replace("http://", "http://alice:s3cret@") + "/simple/"
        with HttpClient(FAST, configured_indexes=[index]) as http, caplog.at_level(logging.DEBUG):
            found = IndexClient(http).project_page(index, "demo")
            assert found is not None and found.files[0].url.startswith(files_host.url)
            assert http.get(found.files[0].url).read() == wheel.read_bytes()
        index_auth = index_host.seen[0][1].get("authorization")
        assert index_auth == "Basic " + base64.b64encode(b"alice:s3cret").decode()
        assert all("authorization" not in headers for _, headers in files_host.seen)
        host = files_host.url.split("//", 1)[1]
        assert f"links files on other hosts: {host}" in caplog.text


def test_a_redirect_to_another_host_drops_credentials(tmp_path: Path) -> None:
    with HostileServer() as other, HostileServer() as index_host:
        other.routes["/x"] = static(b"ok")

        def redirect(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
            h.send_response(302)
            h.send_header("Location", other.url + "/x")
            h.send_header("Content-Length", "0")
            h.end_headers()

        index_host.routes["/simple/x"] = redirect
        with HttpClient(FAST) as http:
            url = index_host.url.replace("http://", "http://alice:s3cret@") + "/simple/x"
            assert http.get(url).read() == b"ok"
        assert "authorization" in index_host.seen[0][1]
        assert "authorization" not in other.seen[0][1]


# -- .metadata that lies -----------------------------------------------------------------------


def test_metadata_that_does_not_have_its_advertised_hash_is_refused(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    build_wheel(dists, "demo", "1.0")
    config = IndexConfig(faults=(Fault("wrong_metadata"),))
    with IndexServer(dists, config=config) as server, HttpClient(FAST) as http:
        page = IndexClient(http).project_page(server.simple_url, "demo")
        assert page is not None
        with pytest.raises(MetadataMismatchError) as e:
            MetadataFetcher(http, tmp_path / "cache").fetch(page.files[0])
    assert page.files[0].metadata_url in str(e.value)
    assert not list((tmp_path / "cache").rglob("metadata/**/sha256/*/*"))  # nothing cached


def test_metadata_for_another_project_is_refused(tmp_path: Path, hostile: HostileServer) -> None:
    wheel = build_wheel(tmp_path, "demo", "1.0")
    other = b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\nRequires-Dist: malware\n"
    hostile.routes["/files/demo-1.0-py3-none-any.whl"] = static(wheel.read_bytes())
    hostile.routes["/files/demo-1.0-py3-none-any.whl.metadata"] = static(other)
    page = b'<a href="/files/demo-1.0-py3-none-any.whl" data-core-metadata="true">x</a>'
    hostile.routes["/simple/demo/"] = static(page, "text/html")
    with HttpClient(FAST) as http:
        found = IndexClient(http).project_page(hostile.url + "/simple/", "demo")
        assert found is not None
        with pytest.raises(MetadataInconsistentError, match="for project `evil`") as e:
            MetadataFetcher(http, tmp_path / "cache").fetch(found.files[0])
    assert hostile.url + "/files/demo-1.0-py3-none-any.whl" in str(e.value)


# -- decompression bombs -----------------------------------------------------------------------

BOMB_SIZE = 64 * 1024 * 1024  # METADATA that inflates to 64 MiB from ~64 KiB


def _bomb_wheel(dest: Path, declared: Optional[int]) -> Path:
    """A wheel whose METADATA is a valid header followed by 64 MiB of padding; with `declared`,
    the central directory and local header claim that uncompressed size instead (a liar)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "bomb-1.0-py3-none-any.whl"
    metadata = b"Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\n\n" + b"x" * (BOMB_SIZE - 48)
    members = {
        "bomb/__init__.py": b"",
        "bomb-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "bomb-1.0.dist-info/METADATA": metadata,
    }
    record = "".join(f"{n},{record_digest(d)},{len(d)}\n" for n, d in members.items()) + "bomb-1.0.dist-info/RECORD,,\n"
    members["bomb-1.0.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    if declared is not None:
        _patch_sizes(raw, "bomb-1.0.dist-info/METADATA", declared)
    path.write_bytes(bytes(raw))
    return path


def _patch_sizes(raw: bytearray, member: str, usize: int) -> None:
    """Rewrite the uncompressed size of `member` in its local header and directory entry."""
    import struct

    name = member.encode()
    pos = 0
    while True:
        pos = raw.find(name, pos + 1)
        if pos < 0:
            return
        if raw[pos - 30 : pos - 26] == b"PK\x03\x04":
            struct.pack_into("<I", raw, pos - 30 + 22, usize)
        elif raw[pos - 46 : pos - 42] == b"PK\x01\x02":
            struct.pack_into("<I", raw, pos - 46 + 24, usize)


@pytest.mark.parametrize("declared", [None, 1000], ids=["honest-huge", "lying-small"])
def test_metadata_bombs_are_refused_within_bounded_memory(
    tmp_path: Path, hostile: HostileServer, declared: Optional[int]
) -> None:
    wheel = _bomb_wheel(tmp_path / "dists", declared)
    hostile.routes["/files/" + wheel.name] = ranged(wheel.read_bytes())
    hostile.routes["/simple/bomb/"] = static(f'<a href="/files/{wheel.name}">x</a>'.encode(), "text/html")
    with HttpClient(FAST) as http:
        page = IndexClient(http).project_page(hostile.url + "/simple/", "bomb")
        assert page is not None
        fetcher = MetadataFetcher(http, tmp_path / "cache", probe=False, max_metadata_bytes=1024 * 1024)
        tracemalloc.start()
        try:
            with pytest.raises(MetadataError) as e:
                fetcher.fetch(page.files[0])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert page.files[0].url in str(e.value)
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes while refusing a {BOMB_SIZE}-byte bomb"
    if declared is None:
        # Refused from the declared size alone, before inflating anything.
        assert isinstance(e.value, MetadataTooLargeError) and "(declared)" in str(e.value)
        assert fetcher.stats.requests("full") == 0


# -- servers that never finish -----------------------------------------------------------------


def _outcome_within_bound(attempt: Callable[[HttpClient], object], doing: str) -> object:
    """Run `attempt` with a fresh client in a thread (so a missing bound fails the test instead
    of hanging it); what it returned or raised, which must come within the client's bounds."""
    bound = FAST.total_timeout + FAST.read_timeout + 1.5
    outcome: list = []

    def run() -> None:
        with HttpClient(FAST) as http:
            try:
                outcome.append(attempt(http))
            except Exception as e:  # noqa: BLE001 - the caller inspects it
                outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(bound)
    assert not worker.is_alive(), f"still {doing} after {bound} s"
    (result,) = outcome
    return result


@pytest.mark.parametrize("route", [trickle_body, trickle_headers, silent], ids=["trickle-body", "trickle-headers", "silent"])
def test_a_server_that_never_finishes_is_abandoned_in_bounded_time(hostile: HostileServer, route: Handler) -> None:
    hostile.routes["/simple/slow/"] = route

    def attempt(http: HttpClient) -> object:
        return IndexClient(http).project_page(hostile.url + "/simple/", "slow")

    error = _outcome_within_bound(attempt, "waiting for the server")
    assert isinstance(error, IndexUnreachableError), error
    assert f"{hostile.url}/simple/slow/" in str(error)


def test_a_trickling_artifact_stream_is_abandoned_below_the_minimum_rate(hostile: HostileServer) -> None:
    hostile.routes["/files/x.whl"] = trickle_body

    def attempt(http: HttpClient) -> object:
        for _ in http.get(hostile.url + "/files/x.whl", stream=True).iter_chunks():
            pass
        return None

    error = _outcome_within_bound(attempt, "downloading")
    assert isinstance(error, HttpConnectionError) and "too slow" in str(error), error
    assert hostile.url + "/files/x.whl" in str(error)


def test_a_fast_stream_may_take_longer_than_the_total_timeout(hostile: HostileServer) -> None:
    """The bound is on progress, not on size: a big download that keeps up is not cut."""

    def steady(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(40 * 64 * 1024))
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"z" * 64 * 1024)
            h.wfile.flush()
            time.sleep(0.05)

    hostile.routes["/files/big.whl"] = steady
    with HttpClient(FAST) as http:
        response = http.get(hostile.url + "/files/big.whl", stream=True)
        assert sum(len(c) for c in response.iter_chunks()) == 40 * 64 * 1024


# -- the proxy advertises only metadata it can serve --------------------------------------------


def test_proxy_pages_do_not_advertise_metadata_for_sdists_it_cannot_serve(tmp_path: Path) -> None:
    from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig

    dists = tmp_path / "dists"
    build_wheel(dists, "dep", "1.0")
    build_sdist(dists, "dep", "2.0")  # Metadata-Version 2.1: only a build would tell
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False)
    with IndexServer(dists, config=config) as server:
        proxy_config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache", speculate=False)
        with MetadataProxy(proxy_config) as proxy, HttpClient(FAST) as http:
            json_page = http.get(proxy.index_url("t") + "dep/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            html_page = http.get(proxy.index_url("t") + "dep/", headers={"Accept": "text/html"})
            files = {f.filename: f for f in parse_json_page(json_page.read(), json_page.url, "dep").files}
            html_files = {f.filename: f for f in parse_html_page(html_page.read(), html_page.url, "dep").files}
    for found in (files, html_files):
        assert found["dep-1.0-py3-none-any.whl"].core_metadata is True
        assert found["dep-2.0.tar.gz"].core_metadata is None


# -- hashes that are paths ---------------------------------------------------------------------


def test_index_hashes_that_are_not_hex_digests_are_dropped() -> None:
    import json

    evil = "../../../victim.txt"
    html = f'<a href="/f/demo-1.0-py3-none-any.whl#sha256={evil}" data-core-metadata="sha256={evil}">x</a>'.encode()
    page = parse_html_page(html, "https://evil.example/simple/demo/", "demo")
    assert page.files[0].sha256 is None and page.files[0].core_metadata is True
    doc = {"files": [{"filename": "demo-1.0-py3-none-any.whl", "url": "/f/demo-1.0-py3-none-any.whl",
                      "hashes": {"sha256": evil, "md5": "0" * 32}, "core-metadata": {"sha256": '"><a'}}]}
    page = parse_json_page(json.dumps(doc).encode(), "https://evil.example/simple/demo/", "demo")
    assert page.files[0].hashes == {"md5": "0" * 32} and page.files[0].core_metadata is True


def test_a_hash_that_is_a_path_cannot_read_or_delete_files_outside_the_cache(
    tmp_path: Path, hostile: HostileServer
) -> None:
    """The metadata cache is keyed by the index's sha256: `#sha256=../../../victim.txt` once
    made fastpex read that file and, as it did not parse as metadata, delete it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "c" / "metadata" / "v1" / "sha256").mkdir(parents=True)  # a warm cache
    wheel = build_wheel(tmp_path / "d", "demo", "1.0")
    hostile.routes["/f/" + wheel.name] = ranged(wheel.read_bytes())
    evil = "../../../victim.txt"  # from <cache>/metadata/v1/sha256/../ to tmp_path
    hostile.routes["/simple/demo/"] = static(f'<a href="/f/{wheel.name}#sha256={evil}">x</a>'.encode(), "text/html")
    with HttpClient(FAST) as http:
        page = IndexClient(http).project_page(hostile.url + "/simple/", "demo")
        assert page is not None
        try:
            MetadataFetcher(http, tmp_path / "c", probe=False).fetch(page.files[0])
        except Exception:  # noqa: BLE001 - what matters here is the file outside the cache
            pass
    assert victim.exists(), "a file outside the cache was deleted"
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "d", "victim.txt"]


def test_lock_with_allow_sdists_through_the_proxy(tmp_path: Path) -> None:
    """An sdist whose PKG-INFO is not authoritative (Metadata-Version 2.1): pip must build its
    metadata, which it only does when the proxy does not advertise a `.metadata` it would 404."""
    from fastpex.core.cli import lock as lock_cli

    dists = tmp_path / "dists"
    build_wheel(dists, "dep", "1.0")
    build_sdist_with_inline_backend(dists, "sdonly", "1.0", requires_dist=["dep"])
    lockfile = tmp_path / "app.lock"
    with IndexServer(dists) as server:
        code = lock_cli.main(["--resolve", "app", "--requirement", "sdonly", "--index", server.simple_url,
                              "--target", "linux_x86_64-cp311", "--allow-sdists", "--output", str(lockfile),
                              "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    text = lockfile.read_text()
    assert "sdonly-1.0.tar.gz" in text and "dep-1.0-py3-none-any.whl" in text
