"""HttpClient against real loopback servers: pooling, retries, redirects, caps, credentials."""

from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from fastpex.core.net.errors import (
    HttpConnectionError,
    HttpStatusError,
    ResponseTooLargeError,
    TooManyRedirectsError,
)
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.response import GLOBAL_COUNTER, ByteCounter, Response
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

FAST = HttpConfig(backoff_initial=0.01, backoff_max=0.02, connect_timeout=2, read_timeout=2)


class _Recorder:
    """A tiny server whose answers a test scripts: `routes[path] -> (status, headers, body)`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: Dict[str, Callable[[], Tuple[int, Dict[str, str], bytes]]] = {}
        self.seen: List[Tuple[str, Optional[str], Optional[str]]] = []  # path, Authorization, Range
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Range")))
                status, headers, body = recorder.routes.get(self.path, lambda: (404, {}, b"nope"))()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}"

    def __enter__(self) -> "_Recorder":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[IndexServer]:
    build_wheel(tmp_path, "demo", "1.0", file_size_padding=300_000)
    with IndexServer(tmp_path) as srv:
        yield srv


def _wheel_url(server: IndexServer) -> str:
    return server.file_url("demo-1.0-py3-none-any.whl")


def test_keep_alive_connections_are_reused_and_bytes_counted(server: IndexServer) -> None:
    counter = ByteCounter()
    before = GLOBAL_COUNTER.bytes_received
    with HttpClient(FAST, counter=counter) as client:
        sizes = [len(client.get(server.project_url("demo")).read()) for _ in range(3)]
        assert list(client.idle_connections().values()) == [1]
    assert counter.requests == 3
    assert counter.bytes_received == sum(sizes) == server.bytes_sent_for("/simple/demo/")
    assert GLOBAL_COUNTER.bytes_received - before >= sum(sizes)


def test_range_and_streaming(server: IndexServer) -> None:
    data = Path(server.catalog.root, "demo-1.0-py3-none-any.whl").read_bytes()
    with HttpClient(FAST) as client:
        tail = client.get(_wheel_url(server), range=-100)
        assert tail.status == 206 and tail.read() == data[-100:]
        assert tail.content_range == (len(data) - 100, len(data) - 1, len(data))
        middle = client.get(_wheel_url(server), range=(10, 19))
        assert middle.read() == data[10:20]
        streamed = client.get(_wheel_url(server), stream=True)
        assert b"".join(streamed.iter_chunks(4096)) == data
        assert streamed.bytes_received == len(data)


def test_retries_5xx_then_succeeds(server: IndexServer) -> None:
    server.update(faults=(Fault("http_500", pattern="/simple/*", count=2, status=503),))
    with HttpClient(FAST) as client:
        response = client.get(server.project_url("demo"))
        assert response.status == 200 and b"demo" in response.read()
    assert [r.status for r in server.matching("/simple/demo/")] == [503, 503, 200]


def test_retries_are_bounded(server: IndexServer) -> None:
    server.update(faults=(Fault("http_500", pattern="/simple/*"),))
    config = HttpConfig(max_retries=2, backoff_initial=0.01, backoff_max=0.02)
    with HttpClient(config) as client:
        response = client.get(server.project_url("demo"))
        assert response.status == 500
        with pytest.raises(HttpStatusError, match="HTTP 500"):
            response.raise_for_status()
    assert server.count("/simple/demo/") == 3


def test_broken_body_is_retried_for_documents(server: IndexServer) -> None:
    server.update(faults=(Fault("reset_mid_body", pattern="/simple/*", count=1),))
    with HttpClient(FAST) as client:
        assert b"demo" in client.get(server.project_url("demo")).read()
    assert server.count("/simple/demo/") == 2


def test_broken_stream_raises_connection_error(server: IndexServer) -> None:
    server.update(faults=(Fault("truncate_body", pattern="demo-*", count=1),))
    with HttpClient(FAST) as client:
        response = client.get(_wheel_url(server), stream=True)
        with pytest.raises(HttpConnectionError, match="ended after|broke"):
            for _ in response.iter_chunks():
                pass


def test_read_timeout(server: IndexServer) -> None:
    server.update(faults=(Fault("slow", pattern="/simple/*", delay=1.0),))
    config = HttpConfig(read_timeout=0.2, max_retries=1, backoff_initial=0.01)
    with HttpClient(config) as client:
        with pytest.raises(HttpConnectionError, match="timed out"):
            client.get(server.project_url("demo"))


def test_document_size_cap(server: IndexServer) -> None:
    with HttpClient(HttpConfig(max_document_bytes=1000)) as client:
        with pytest.raises(ResponseTooLargeError, match="more than 1000 bytes"):
            client.get(_wheel_url(server))
        assert len(client.get(_wheel_url(server), range=(0, 99)).read()) == 100


def test_redirects_keep_credentials_on_the_same_host_only() -> None:
    with _Recorder("127.0.0.1") as first, _Recorder("localhost") as other:
        first.routes["/a"] = lambda: (302, {"Location": "/b"}, b"")
        first.routes["/b"] = lambda: (302, {"Location": f"{other.url}/c"}, b"")
        other.routes["/c"] = lambda: (200, {}, b"done")
        url = first.url.replace("http://", "http://user:s3cret@") + "/a"
        with HttpClient(FAST) as client:
            response = client.get(url, headers={"X-Test": "1"})
            assert response.read() == b"done"
            assert response.url == f"{other.url}/c"
        expected = "Basic " + base64.b64encode(b"user:s3cret").decode()
        assert first.seen == [("/a", expected, None), ("/b", expected, None)]
        assert other.seen == [("/c", None, None)]


def test_explicit_authorization_is_not_forwarded_across_hosts() -> None:
    with _Recorder("127.0.0.1") as first, _Recorder("localhost") as other:
        first.routes["/a"] = lambda: (301, {"Location": f"{other.url}/c"}, b"")
        other.routes["/c"] = lambda: (200, {}, b"ok")
        with HttpClient(FAST) as client:
            assert client.get(first.url + "/a", headers={"Authorization": "Bearer t"}).read() == b"ok"
        assert first.seen[0][1] == "Bearer t" and other.seen[0][1] is None


def test_redirect_loops_are_bounded() -> None:
    with _Recorder() as srv:
        srv.routes["/loop"] = lambda: (302, {"Location": "/loop"}, b"")
        with HttpClient(HttpConfig(max_redirects=3)) as client:
            with pytest.raises(TooManyRedirectsError):
                client.get(srv.url + "/loop")
        assert len(srv.seen) == 4


def test_configured_index_credentials_apply_to_same_origin_files(tmp_path: Path) -> None:
    build_wheel(tmp_path, "demo", "1.0")
    with IndexServer(tmp_path, config=IndexConfig(require_auth=("alice", "pw"))) as srv:
        with HttpClient(FAST, configured_indexes=[srv.auth_url()]) as client:
            assert client.get(srv.file_url("demo-1.0-py3-none-any.whl")).status == 200
        with HttpClient(FAST) as anonymous:
            assert anonymous.get(srv.file_url("demo-1.0-py3-none-any.whl")).status == 401


def test_a_named_netrc_is_the_only_netrc_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`netrc_file` replaces the default netrc ($NETRC, ~/.netrc); it is not a fallback to it."""
    build_wheel(tmp_path, "demo", "1.0")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login home password home-pw\n")
    named = tmp_path / "named.netrc"
    named.write_text("machine 127.0.0.1 login alice password pw\n")
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(home))
    with IndexServer(tmp_path, config=IndexConfig(require_auth=("alice", "pw"))) as srv:
        url = srv.file_url("demo-1.0-py3-none-any.whl")
        with HttpClient(FAST, netrc_file=named) as client:
            assert client.get(url).status == 200
        with HttpClient(FAST) as default:  # ~/.netrc, with the wrong password here
            assert default.get(url).status == 401
        srv.update(require_auth=("home", "home-pw"))
        with HttpClient(FAST, netrc_file=named) as client:
            assert client.get(url).status == 401  # ~/.netrc would have been accepted
        with HttpClient(FAST, netrc_file=tmp_path / "missing.netrc") as client:
            assert client.get(url).status == 401
        with HttpClient(FAST) as default:
            assert default.get(url).status == 200


def test_errors_never_show_credentials() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with HttpClient(HttpConfig(max_retries=1, backoff_initial=0.01, connect_timeout=1)) as client:
        with pytest.raises(HttpConnectionError) as info:
            client.get(f"http://bob:hunter2@127.0.0.1:{port}/simple/")
    assert "hunter2" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 10)
    with HttpClient() as client:
        assert client.get(path.as_uri()).read() == path.read_bytes()
        part = client.get(path.as_uri(), range=-16)
        assert part.status == 206 and part.read() == path.read_bytes()[-16:]
        assert client.get((tmp_path / "missing").as_uri()).status == 404


# -- Response.readinto (the download loop's copy-free reads) -------------------------------------


def _drain_into(response: Response, size: int) -> bytes:
    buf = memoryview(bytearray(size))
    out = bytearray()
    while True:
        n = response.readinto(buf)
        if not n:
            return bytes(out)
        assert 0 < n <= size
        out += buf[:n]


def test_readinto_streams_the_body_and_returns_the_connection(server: IndexServer) -> None:
    data = Path(server.catalog.root, "demo-1.0-py3-none-any.whl").read_bytes()
    with HttpClient(FAST) as client:
        response = client.get(_wheel_url(server), stream=True)
        assert _drain_into(response, 5000) == data
        assert response.bytes_received == len(data)
        assert response.readinto(memoryview(bytearray(10))) == 0  # stays at the end
        assert sum(client.idle_connections().values()) == 1  # reusable
        resumed = client.get(_wheel_url(server), range=100, stream=True)
        assert resumed.status == 206 and _drain_into(resumed, 1 << 20) == data[100:]


def test_readinto_of_a_body_read_already(server: IndexServer) -> None:
    data = Path(server.catalog.root, "demo-1.0-py3-none-any.whl").read_bytes()
    with HttpClient(FAST) as client:
        whole = client.get(_wheel_url(server))  # not streamed: the body is in memory
        assert _drain_into(whole, 777) == data


def test_readinto_raises_when_the_body_ends_short(server: IndexServer) -> None:
    server.update(faults=(Fault("truncate_body", pattern="demo-*", count=1),))
    with HttpClient(FAST) as client:
        response = client.get(_wheel_url(server), stream=True)
        with pytest.raises(HttpConnectionError, match="ended after|broke"):
            _drain_into(response, 4096)
        assert not client.idle_connections()  # a broken connection is dropped
