"""A loopback HTTP server that says whatever a test wants: hostile index behaviours that
`IndexServer` (a well-behaved index with faults) cannot produce, such as pages with traversal
names, lying `.metadata`, bombs, and responses that never finish."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Tuple

__all__ = ["Handler", "HostileServer", "ranged", "silent", "static", "trickle_body", "trickle_headers"]

Handler = Callable[[BaseHTTPRequestHandler, threading.Event], None]


class HostileServer:
    """Loopback HTTP server whose routes are arbitrary handler functions; records headers."""

    def __init__(self) -> None:
        self.routes: Dict[str, Handler] = {}
        self.seen: List[Tuple[str, Dict[str, str]]] = []
        self.stop_event = threading.Event()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = outer.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    route(self, outer.stop_event)
                except OSError:
                    pass  # the client gave up: that is the point of most routes

            do_HEAD = do_GET

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def static(body: bytes, content_type: str = "application/octet-stream", status: int = 200) -> Handler:
    def handle(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handle


def ranged(body: bytes) -> Handler:
    """A file served with single-range support (what a wheel's host does)."""

    def handle(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        spec = h.headers.get("Range", "")
        start, end = 0, len(body) - 1
        status = 200
        if spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            if not first:
                start = max(0, len(body) - int(last))
            else:
                start = int(first)
                end = min(int(last), end) if last else end
            status = 206
        part = body[start : end + 1]
        h.send_response(status)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
        h.send_header("Content-Length", str(len(part)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(part)

    return handle


def trickle_body(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Claims a big body, then sends one byte every 50 ms forever (never silent long enough
    for a read timeout)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
    h.send_header("Content-Length", str(10**9))
    h.end_headers()
    while not stop.wait(0.05):
        h.wfile.write(b" ")
        h.wfile.flush()


def trickle_headers(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """The status line, then an endless header, one byte every 50 ms."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.05):
        h.wfile.write(b"a")
        h.wfile.flush()


def silent(h: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Headers, then nothing at all."""
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.flush()
    stop.wait(30)
