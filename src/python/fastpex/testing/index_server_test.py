from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.message import Message
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from fastpex.testing.fixtures import index_server, run_pip, wheel_factory  # noqa: F401
from fastpex.testing.index_server import (
    PEP691_JSON,
    UNSATISFIABLE,
    Fault,
    IndexConfig,
    IndexServer,
    parse_range,
)
from fastpex.testing.wheels import WheelFactory, sha256_file, wheel_metadata_bytes

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PIP_ACCEPT = f"{PEP691_JSON}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@dataclass
class Dists:
    old: Path  # demo-pkg 1.0 wheel, Requires-Python >=3.8
    big: Path  # demo-pkg 2.0 wheel, ~200 KB
    sdist: Path  # demo-pkg 1.0 sdist
    other: Path  # other 0.1 wheel


@pytest.fixture
def dists(wheel_factory: WheelFactory) -> Dists:  # noqa: F811
    return Dists(
        old=wheel_factory("Demo.Pkg", "1.0", requires_python=">=3.8", requires_dist=["other"]),
        big=wheel_factory("demo-pkg", "2.0", file_size_padding=200_000),
        sdist=wheel_factory.sdist("demo_pkg", "1.0", requires_python=">=3.8"),
        other=wheel_factory("other", "0.1"),
    )


def fetch(url: str, headers: Optional[Dict[str, str]] = None, method: str = "GET") -> Tuple[int, Message, bytes]:
    """urllib GET (redirects followed, no proxies); HTTP errors returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw(server: IndexServer, path: str, headers: Optional[Dict[str, str]] = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def page_json(server: IndexServer, project: str = "demo-pkg") -> dict:
    status, headers, body = fetch(server.project_url(project), {"Accept": PEP691_JSON})
    assert status == 200 and headers["Content-Type"] == PEP691_JSON
    return json.loads(body)


def page_html(server: IndexServer, project: str = "demo-pkg") -> str:
    status, headers, body = fetch(server.project_url(project))
    assert status == 200 and headers["Content-Type"] == "text/html"
    return body.decode("utf-8")


def anchor(html_text: str, filename: str) -> str:
    match = re.search(rf"<a [^>]*>{re.escape(filename)}</a>", html_text)
    assert match, f"no link for {filename}"
    return match.group(0)


def json_file(doc: dict, filename: str) -> dict:
    return next(f for f in doc["files"] if f["filename"] == filename)


# -- pages ------------------------------------------------------------------


def test_root_lists_projects_in_html_and_json(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    status, _, body = fetch(index_server.simple_url)
    assert status == 200
    assert re.findall(r'href="/simple/([^/]+)/"', body.decode()) == ["demo-pkg", "other"]
    status, headers, body = fetch(index_server.simple_url, {"Accept": PEP691_JSON})
    assert headers["Content-Type"] == PEP691_JSON
    assert json.loads(body)["projects"] == [{"name": "demo-pkg"}, {"name": "other"}]


def test_html_project_page_links(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    text = page_html(index_server)
    assert text.count("<a ") == 3  # two wheels + sdist; `other` is a separate project
    link = anchor(text, dists.old.name)
    assert f'href="{index_server.file_url(dists.old.name)}#sha256={sha256_file(dists.old)}"' in link
    assert 'data-requires-python="&gt;=3.8"' in link
    meta_sha = hashlib.sha256(wheel_metadata_bytes(dists.old)).hexdigest()
    assert f'data-dist-info-metadata="sha256={meta_sha}"' in link
    assert f'data-core-metadata="sha256={meta_sha}"' in link
    sdist_link = anchor(text, dists.sdist.name)
    assert "data-core-metadata" not in sdist_link and 'data-requires-python="&gt;=3.8"' in sdist_link
    assert "data-requires-python" not in anchor(text, dists.big.name)
    assert "data-yanked" not in link


def test_json_project_page_fields(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    doc = page_json(index_server)
    assert doc["meta"]["api-version"].startswith("1.")
    assert doc["name"] == "demo-pkg" and doc["versions"] == ["1.0", "2.0"]
    entry = json_file(doc, dists.old.name)
    assert entry["url"] == index_server.file_url(dists.old.name)
    assert entry["hashes"] == {"sha256": sha256_file(dists.old)}
    assert entry["size"] == dists.old.stat().st_size
    assert entry["requires-python"] == ">=3.8"
    assert entry["upload-time"] == "2020-01-01T00:00:00.000000Z"
    assert entry["yanked"] is False
    meta = {"sha256": hashlib.sha256(wheel_metadata_bytes(dists.old)).hexdigest()}
    assert entry["core-metadata"] == meta and entry["dist-info-metadata"] == meta
    assert "core-metadata" not in json_file(doc, dists.sdist.name)


def test_upload_times_and_yanked_are_configurable(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    when = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    index_server.update(
        upload_times={dists.big.name: when},
        default_upload_time=datetime(2021, 1, 1, tzinfo=timezone.utc),
        yanked={dists.old.name: "broken", dists.sdist.name: ""},
    )
    doc = page_json(index_server)
    assert json_file(doc, dists.big.name)["upload-time"] == "2023-05-06T07:08:09.123456Z"
    assert json_file(doc, dists.old.name)["upload-time"].startswith("2021-01-01T")
    assert json_file(doc, dists.old.name)["yanked"] == "broken"
    assert json_file(doc, dists.sdist.name)["yanked"] is True
    assert json_file(doc, dists.big.name)["yanked"] is False
    text = page_html(index_server)
    assert 'data-yanked="broken"' in anchor(text, dists.old.name)
    assert 'data-yanked=""' in anchor(text, dists.sdist.name)


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "text/html"),
        ("*/*", "text/html"),
        ("text/html", "text/html"),
        (PEP691_JSON, PEP691_JSON),
        ("application/vnd.pypi.simple.latest+json", PEP691_JSON),
        (PIP_ACCEPT, PEP691_JSON),
        (f"{PEP691_JSON}; q=0.2, text/html", "text/html"),
        ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
        ("application/json", None),
    ],
)
def test_content_negotiation(
    index_server: IndexServer, dists: Dists, accept: Optional[str], expected: Optional[str]  # noqa: F811
) -> None:
    status, headers, body = fetch(index_server.project_url("demo-pkg"), {"Accept": accept} if accept else {})
    if expected is None:
        assert status == 406
        return
    assert status == 200 and headers["Content-Type"] == expected
    assert headers["Vary"] == "Accept"
    if expected == PEP691_JSON:
        assert json.loads(body)["name"] == "demo-pkg"
    else:
        assert body.startswith(b"<!DOCTYPE html>")


def test_format_query_param_selects_json(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    url = index_server.project_url("demo-pkg") + "?format=" + PEP691_JSON
    status, headers, body = fetch(url, {"Accept": "text/html"})
    assert status == 200 and headers["Content-Type"] == PEP691_JSON
    assert json.loads(body)["name"] == "demo-pkg"


def test_non_normalized_names_redirect(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    resp = raw(index_server, "/simple/Demo.Pkg/")
    assert (resp.status, resp.getheader("Location")) == (301, "/simple/demo-pkg/")
    resp = raw(index_server, "/simple/demo-pkg?format=x")
    assert (resp.status, resp.getheader("Location")) == (301, "/simple/demo-pkg/?format=x")
    status, _, body = fetch(index_server.simple_url + "DEMO_pkg/")
    assert status == 200 and dists.old.name.encode() in body
    assert fetch(index_server.simple_url + "missing/")[0] == 404
    assert fetch(index_server.file_url("missing-1.0-py3-none-any.whl"))[0] == 404


def test_hashes_switch(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    assert "#sha256=" in page_html(index_server)
    index_server.update(include_hashes=False)
    text = page_html(index_server)
    assert "#sha256=" not in text
    assert 'data-core-metadata="true"' in anchor(text, dists.old.name)
    entry = json_file(page_json(index_server), dists.old.name)
    assert entry["hashes"] == {} and entry["core-metadata"] is True


def test_advertise_metadata_switch_is_independent_of_serving(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    metadata_url = index_server.file_url(dists.old.name) + ".metadata"
    index_server.update(advertise_metadata=False, serve_metadata_files=True)
    assert "data-core-metadata" not in page_html(index_server)
    assert "data-dist-info-metadata" not in page_html(index_server)
    assert "core-metadata" not in json_file(page_json(index_server), dists.old.name)
    status, _, body = fetch(metadata_url)
    assert status == 200 and body == wheel_metadata_bytes(dists.old)

    index_server.update(advertise_metadata=True, serve_metadata_files=False)
    assert "data-core-metadata" in anchor(page_html(index_server), dists.old.name)
    assert fetch(metadata_url)[0] == 404
    assert fetch(index_server.file_url(dists.sdist.name) + ".metadata")[0] == 404


def test_served_metadata_matches_advertised_hash(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    entry = json_file(page_json(index_server), dists.big.name)
    status, _, body = fetch(entry["url"] + ".metadata")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == entry["core-metadata"]["sha256"]


def test_head_reports_length_without_body(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    status, headers, body = fetch(index_server.file_url(dists.big.name), method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == dists.big.stat().st_size


def test_files_added_while_running_are_served(index_server: IndexServer, wheel_factory: WheelFactory) -> None:  # noqa: F811
    assert fetch(index_server.project_url("late"))[0] == 404
    late = wheel_factory("late", "1.0")
    assert late.name in page_html(index_server, "late")


# -- ranges -----------------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=50-5000", (50, 99)),
        ("bytes=100-", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=9-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=a-b", None),
        (None, None),
    ],
)
def test_parse_range(header: Optional[str], expected: Optional[Tuple[int, int]]) -> None:
    assert parse_range(header, 100) == expected


def test_range_requests_honoured(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    data = dists.big.read_bytes()
    size = len(data)
    url = index_server.file_url(dists.big.name)
    status, headers, body = fetch(url)
    assert status == 200 and headers["Accept-Ranges"] == "bytes" and body == data
    cases = {"bytes=0-9": (0, 9), "bytes=1000-": (1000, size - 1), "bytes=-22": (size - 22, size - 1)}
    for header, (start, end) in cases.items():
        status, headers, body = fetch(url, {"Range": header})
        assert status == 206, header
        assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert int(headers["Content-Length"]) == end - start + 1
        assert body == data[start : end + 1]
    status, headers, _ = fetch(url, {"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    metadata = wheel_metadata_bytes(dists.big)
    status, _, body = fetch(url + ".metadata", {"Range": "bytes=-5"})
    assert status == 206 and body == metadata[-5:]
    assert index_server.requests[-1].range == "bytes=-5"


def test_range_ignored_when_switched_off(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(honour_range=False)
    data = dists.big.read_bytes()
    for header in ("bytes=0-9", "bytes=-22", f"bytes={len(data)}-"):
        status, headers, body = fetch(index_server.file_url(dists.big.name), {"Range": header})
        assert status == 200 and body == data
        assert "Accept-Ranges" not in headers and "Content-Range" not in headers


# -- faults -----------------------------------------------------------------


def test_unknown_fault_kind_rejected() -> None:
    with pytest.raises(ValueError):
        Fault("explode")


def test_http_error_fires_count_times_then_recovers(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("http_500", pattern="*.whl", status=503, count=2),))
    url = index_server.file_url(dists.old.name)
    assert [fetch(url)[0] for _ in range(3)] == [503, 503, 200]
    assert fetch(index_server.file_url(dists.sdist.name))[0] == 200  # pattern does not match
    assert index_server.fired_count("http_500") == 2
    assert [r.faults for r in index_server.matching("/files/*.whl")] == [("http_500",), ("http_500",), ()]
    index_server.config = replace(index_server.config)  # re-arms counters
    assert fetch(url)[0] == 503


def test_path_pattern_faults_index_pages(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("http_500", pattern="/simple/*", count=1),))
    assert fetch(index_server.project_url("demo-pkg"))[0] == 500
    assert fetch(index_server.project_url("demo-pkg"))[0] == 200
    assert fetch(index_server.file_url(dists.old.name))[0] == 200


def test_reset_mid_body_sends_rst(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("reset_mid_body", pattern=dists.big.name),))
    resp = raw(index_server, f"/files/{dists.big.name}")
    assert resp.status == 200
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        resp.read()
    size = dists.big.stat().st_size
    assert index_server.requests[-1].bytes_sent == size // 2
    # A raw socket sees the abort as ECONNRESET, not an orderly EOF.
    with socket.create_connection(("127.0.0.1", index_server.port), timeout=10) as sock:
        sock.sendall(f"GET /files/{dists.big.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.2)
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass


def test_truncate_body_gives_incomplete_read(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("truncate_body", fraction=0.25, count=1),))
    size = dists.big.stat().st_size
    resp = raw(index_server, f"/files/{dists.big.name}")
    assert int(resp.getheader("Content-Length") or "") == size
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert len(info.value.partial) == int(size * 0.25)
    assert fetch(index_server.file_url(dists.big.name))[2] == dists.big.read_bytes()


def test_wrong_content_length_larger_and_smaller(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    data = dists.old.read_bytes()
    index_server.update(faults=(Fault("wrong_content_length", length_delta=100),))
    resp = raw(index_server, f"/files/{dists.old.name}")
    assert int(resp.getheader("Content-Length") or "") == len(data) + 100
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == data
    index_server.update(faults=(Fault("wrong_content_length", length_delta=-100),))
    status, _, body = fetch(index_server.file_url(dists.old.name))
    assert status == 200 and body == data[:-100]


def test_slow_delays_response_and_chunks(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("slow", pattern="*.tar.gz", delay=0.4),))
    start = time.monotonic()
    assert fetch(index_server.file_url(dists.sdist.name))[0] == 200
    assert time.monotonic() - start >= 0.4
    index_server.update(chunk_size=64 * 1024, faults=(Fault("slow", chunk_delay=0.15),))
    start = time.monotonic()
    status, _, body = fetch(index_server.file_url(dists.big.name))  # 4 chunks -> 3 pauses
    assert status == 200 and body == dists.big.read_bytes()
    assert time.monotonic() - start >= 0.45


def test_wrong_hash_advertised_once(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    real = sha256_file(dists.old)
    index_server.update(faults=(Fault("wrong_hash", pattern=dists.old.name, count=1),))
    bad = json_file(page_json(index_server), dists.old.name)["hashes"]["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", bad) and bad != real
    assert hashlib.sha256(fetch(index_server.file_url(dists.old.name))[2]).hexdigest() == real
    assert f"#sha256={real}" in page_html(index_server)
    index_server.update(faults=(Fault("wrong_hash"),))
    assert f"#sha256={real}" not in page_html(index_server)


def test_wrong_metadata(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("wrong_metadata", pattern="demo_pkg-1.0-*"),))
    advertised = json_file(page_json(index_server), dists.old.name)["core-metadata"]["sha256"]
    status, _, body = fetch(index_server.file_url(dists.old.name) + ".metadata")
    assert status == 200
    assert body != wheel_metadata_bytes(dists.old)
    assert hashlib.sha256(body).hexdigest() != advertised
    assert b"Requires-Dist: fastpex-injected-wrong-metadata" in body
    assert fetch(index_server.file_url(dists.big.name) + ".metadata")[2] == wheel_metadata_bytes(dists.big)


# -- auth, log, concurrency -------------------------------------------------


def test_basic_auth_required(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(require_auth=("user", "s3cret"))
    status, headers, _ = fetch(index_server.simple_url)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"user:nope").decode()
    assert fetch(index_server.file_url(dists.old.name), {"Authorization": f"Basic {wrong}"})[0] == 401
    good = base64.b64encode(b"user:s3cret").decode()
    status, _, body = fetch(index_server.file_url(dists.old.name), {"Authorization": f"Basic {good}"})
    assert status == 200 and body == dists.old.read_bytes()
    assert index_server.auth_url().startswith("http://user:s3cret@127.0.0.1:")


def test_request_log_helpers(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    fetch(index_server.project_url("demo-pkg"))
    fetch(index_server.file_url(dists.old.name))
    fetch(index_server.file_url(dists.big.name), {"Range": "bytes=0-99"})
    assert index_server.count("/simple/*") == 1
    assert index_server.count("/files/*") == 2
    assert index_server.bytes_sent_for("/files/*") == dists.old.stat().st_size + 100
    last = index_server.requests[-1]
    assert (last.method, last.path, last.range, last.status, last.bytes_sent) == (
        "GET",
        f"/files/{dists.big.name}",
        "bytes=0-99",
        206,
        100,
    )
    assert last.finished >= last.started
    index_server.reset_log()
    assert index_server.requests == [] and index_server.count("*") == 0


def test_concurrency_counter_tracks_parallel_file_requests(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    index_server.update(faults=(Fault("slow", pattern="*", delay=0.3),))
    url = index_server.file_url(dists.old.name)
    barrier = threading.Barrier(5)

    def unbounded(_: int) -> int:
        barrier.wait()
        return fetch(url)[0]

    with ThreadPoolExecutor(5) as pool:
        assert list(pool.map(unbounded, range(5))) == [200] * 5
    assert index_server.max_concurrent_file_requests == 5
    index_server.reset_log()
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda _: fetch(url)[0], range(6))) == [200] * 6
    assert index_server.max_concurrent_file_requests == 2
    assert index_server.in_flight_file_requests == 0


def test_many_keep_alive_connections(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    expected = dists.old.read_bytes()

    def client(_: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", index_server.port, timeout=10)
        try:
            for _ in range(5):  # reuses one connection (HTTP/1.1 keep-alive)
                conn.request("GET", f"/files/{dists.old.name}")
                resp = conn.getresponse()
                if resp.status != 200 or resp.read() != expected:
                    return False
            return True
        finally:
            conn.close()

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(client, range(32)))
    assert index_server.count("/files/*") == 160


def test_stop_joins_threads_despite_idle_and_slow_connections(wheel_factory: WheelFactory) -> None:  # noqa: F811
    whl = wheel_factory("t", "1.0")
    before = set(threading.enumerate())
    server = IndexServer(wheel_factory.dist_dir, IndexConfig(faults=(Fault("slow", pattern="/files/slow*", delay=30),)))
    server.start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    idle.request("GET", f"/files/{whl.name}")
    idle.getresponse().read()  # the connection stays open (keep-alive)
    errors = []

    def slow_client() -> None:
        try:
            fetch(server.url + "/files/slow")
        except Exception as e:  # the server aborts it on stop; that is the point
            errors.append(e)

    slow = threading.Thread(target=slow_client)
    slow.start()
    deadline = time.monotonic() + 5
    while server.in_flight_file_requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.in_flight_file_requests == 1
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 5
    slow.join(5)
    idle.close()
    assert set(threading.enumerate()) - before == set()


def test_pip_downloads_from_server(index_server: IndexServer, dists: Dists, tmp_path: Path) -> None:  # noqa: F811
    index_server.update(require_auth=("u", "p"))
    out = tmp_path / "dl"
    run_pip(["download", "--no-deps", "--index-url", index_server.auth_url(), "-d", str(out), "Demo.Pkg==2.0"])
    (downloaded,) = out.iterdir()
    assert downloaded.name == dists.big.name
    assert sha256_file(downloaded) == sha256_file(dists.big)
    page = index_server.matching("/simple/demo-pkg/")[-1]
    assert page.status == 200 and PEP691_JSON in (page.accept or "")
    assert index_server.count(f"/files/{dists.big.name}") == 1


def test_page_validators_and_304s(index_server: IndexServer, dists: Dists) -> None:  # noqa: F811
    path = "/simple/demo-pkg/"
    first = raw(index_server, path, {"Accept": PEP691_JSON})
    etag, modified = first.getheader("ETag"), first.getheader("Last-Modified")
    first.read()
    assert first.status == 200 and etag and modified
    for conditions in ({"If-None-Match": etag}, {"If-Modified-Since": modified}, {"If-None-Match": f"\"x\", {etag}"}):
        again = raw(index_server, path, {"Accept": PEP691_JSON, **conditions})
        assert again.status == 304 and again.read() == b"" and again.getheader("ETag") == etag
    stale = raw(index_server, path, {"Accept": PEP691_JSON, "If-None-Match": '"other"', "If-Modified-Since": modified})
    assert stale.status == 200 and stale.read()  # a non-matching ETag wins over the date (RFC 9110)
    assert index_server.pages_rendered == 2
    assert [r.conditional for r in index_server.matching(path)] == [False, True, True, True, True]
    index_server.update(page_validators=())
    off = raw(index_server, path, {"Accept": PEP691_JSON, "If-None-Match": etag})
    assert off.status == 200 and off.read() and off.getheader("ETag") is None and off.getheader("Last-Modified") is None
