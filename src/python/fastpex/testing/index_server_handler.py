"""The index server's HTTP transport: the threaded server and the request handler that routes,
checks auth and applies injected faults to each response.

Split out of index_server.py; `IndexServer` (the lifecycle and the request log) drives these.
"""

from __future__ import annotations

import base64
import email.utils
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from packaging.utils import canonicalize_name

from fastpex.testing.index_server_catalog import DistFile
from fastpex.testing.index_server_config import (
    BODY_FAULTS,
    TRANSPORT_FAULTS,
    UNSATISFIABLE,
    Fault,
    IndexConfig,
    LiveRecord,
    parse_range,
)
from fastpex.testing.index_server_pages import (
    corrupt_metadata,
    file_entry,
    negotiate,
    project_page,
    root_page,
    wrong_digest,
)

if TYPE_CHECKING:
    from fastpex.testing.index_server import IndexServer

__all__ = ["Body", "IndexHTTPServer", "IndexRequestHandler"]


class IndexHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can force-close idle keep-alive connections on stop."""

    daemon_threads = False  # tracked so server_close() joins every handler thread
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, index: IndexServer) -> None:
        self.index = index
        self._conns: set = set()
        self._conn_lock = threading.Lock()
        self._closing = False
        super().__init__((index.host, 0), IndexRequestHandler)

    def get_request(self):
        sock, address = super().get_request()
        context = self.index.ssl_context
        if context is not None:
            # The handshake runs in the handler thread: a client that never speaks TLS must not
            # stall the accept loop.
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request_thread(self, request, client_address) -> None:
        with self._conn_lock:
            if self._closing:
                self.shutdown_request(request)
                return
            self._conns.add(request)
        try:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(10)
                    request.do_handshake()
                    request.settimeout(None)
                except (OSError, ValueError):  # a failed handshake (e.g. an untrusted CA): drop it
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._conns.discard(request)

    def close_connections(self) -> None:
        with self._conn_lock:
            self._closing = True
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        """Keep handler crashes for inspection instead of printing tracebacks."""
        error = sys.exc_info()[1]
        if error is not None:
            self.index.errors.append(error)


Body = Union[bytes, Tuple[Path, int, int]]  # bytes, or (file, offset, length)


class IndexRequestHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per small response
    protocol_version = "HTTP/1.1"
    server_version = "fastpex-index/1.0"
    timeout = 60  # per-socket safety net; stop() closes connections anyway
    server: IndexHTTPServer

    # -- plumbing --------------------------------------------------------
    @property
    def index(self) -> IndexServer:
        return self.server.index

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silence stderr logging; the structured request log replaces it."""

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _handle(self, head: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self._head = head
        self._live = LiveRecord(
            method=self.command,
            path=path,
            query=split.query,
            range=self.headers.get("Range"),
            accept=self.headers.get("Accept"),
            is_file=path.startswith("/files/"),
            started=time.monotonic(),
            conditional=bool(self.headers.get("If-None-Match") or self.headers.get("If-Modified-Since")),
        )
        self.index._begin(self._live)
        try:
            self._route(path, split.query)
        except OSError:
            self.close_connection = True
        finally:
            self.index._complete(self._live)

    def _route(self, path: str, query: str) -> None:
        config = self.index.config
        filename = path[len("/files/") :] if path.startswith("/files/") else None
        if not self._authorized(config):
            challenge = {"WWW-Authenticate": 'Basic realm="fastpex"'}
            self._respond(401, b"authentication required\n", "text/plain", challenge)
            return
        faults = self.index.fire(TRANSPORT_FAULTS, filename, path)
        self._live.faults.extend(f.kind for f in faults)
        if filename is not None:
            self._serve_file(config, filename, faults)
        elif path == "/simple" or path.startswith("/simple/"):
            self._serve_simple(config, path, query, faults)
        else:
            self._respond(404, b"not found\n", "text/plain", faults=faults)

    def _authorized(self, config: IndexConfig) -> bool:
        if config.require_auth is None:
            return True
        expected = base64.b64encode(":".join(config.require_auth).encode("utf-8")).decode("ascii")
        return self.headers.get("Authorization", "").strip() == f"Basic {expected}"

    # -- responses -------------------------------------------------------
    def _respond(
        self,
        status: int,
        body: Body,
        content_type: str,
        headers: Optional[Mapping[str, str]] = None,
        faults: Sequence[Fault] = (),
    ) -> None:
        """Send a complete response, applying transport faults on the way."""
        by_kind: Dict[str, Fault] = {}
        for fault in faults:
            by_kind.setdefault(fault.kind, fault)
        slow = by_kind.get("slow")
        if slow is not None:
            self.index.sleep(slow.delay)
        error = by_kind.get("http_500")
        if error is not None:
            status, body, content_type, headers = error.status, f"{error.status} injected\n".encode(), "text/plain", {}
        body_fault = None if error else next((by_kind[k] for k in BODY_FAULTS if k in by_kind), None)
        length = len(body) if isinstance(body, bytes) else body[2]
        declared = length
        if body_fault is not None and body_fault.kind == "wrong_content_length":
            declared = max(0, length + body_fault.length_delta)

        self.index._update(self._live, status=status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(declared))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body_fault is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        limit = 0 if self._head else length
        if body_fault is not None and body_fault.kind in ("reset_mid_body", "truncate_body"):
            limit = int(length * body_fault.fraction)
        if min(limit, declared) == 0 and body_fault is None:
            self.index._complete(self._live)
        self.end_headers()
        self._write_body(body, limit, declared, slow.chunk_delay if slow is not None else 0.0)
        if body_fault is not None:
            self.index._complete(self._live)
            if body_fault.kind == "reset_mid_body":
                self._reset_connection()
            else:
                self.connection.shutdown(socket.SHUT_WR)  # FIN now, not after the handler returns

    def _chunks(self, body: Body, limit: int) -> Iterator[bytes]:
        size = self.index.config.chunk_size
        if isinstance(body, bytes):
            for pos in range(0, limit, size):
                yield body[pos : min(pos + size, limit)]
            return
        path, offset, _ = body
        with open(path, "rb") as fp:
            fp.seek(offset)
            remaining = limit
            while remaining > 0:
                chunk = fp.read(min(size, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def _write_body(self, body: Body, limit: int, declared: int, chunk_delay: float) -> None:
        sent = 0
        for i, chunk in enumerate(self._chunks(body, limit)):
            if i and chunk_delay:
                self.index.sleep(chunk_delay)
            self.index._update(self._live, sent=len(chunk))
            sent += len(chunk)
            if sent >= declared:
                self.index._complete(self._live)
            try:
                self.wfile.write(chunk)
            except OSError:
                self.index._update(self._live, sent=-len(chunk))
                raise

    def _reset_connection(self) -> None:
        """Abort with RST (SO_LINGER 0) instead of an orderly FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()  # drop makefile()'s reference so close() really closes
        self.connection.close()

    # -- files -----------------------------------------------------------
    def _serve_file(self, config: IndexConfig, filename: str, faults: Sequence[Fault]) -> None:
        if "/" in filename or filename.startswith("."):
            self._respond(404, b"not found\n", "text/plain", faults=faults)
            return
        if filename.endswith(".metadata"):
            self._serve_metadata(config, filename[: -len(".metadata")], faults)
            return
        dist = self.index.catalog.get(filename)
        if dist is None:
            self._respond(404, b"not found\n", "text/plain", faults=faults)
            return
        self._serve_bytes(config, (dist.path, 0, dist.size), dist.size, faults)

    def _serve_metadata(self, config: IndexConfig, wheel: str, faults: Sequence[Fault]) -> None:
        dist = self.index.catalog.get(wheel)
        if not config.serve_metadata_files or dist is None or dist.metadata is None:
            self._respond(404, b"not found\n", "text/plain", faults=faults)
            return
        data = dist.metadata
        wrong = self.index.fire(("wrong_metadata",), wheel, f"/files/{wheel}.metadata")
        if wrong:
            self._live.faults.append("wrong_metadata")
            data = corrupt_metadata(data)
        self._serve_bytes(config, data, len(data), faults)

    def _serve_bytes(self, config: IndexConfig, body: Body, size: int, faults: Sequence[Fault]) -> None:
        headers = {"Accept-Ranges": "bytes"} if config.honour_range else {}
        byte_range = parse_range(self.headers.get("Range"), size) if config.honour_range else None
        if byte_range == UNSATISFIABLE:
            headers["Content-Range"] = f"bytes */{size}"
            self._respond(416, b"range not satisfiable\n", "text/plain", headers, faults)
            return
        if byte_range is None:
            self._respond(200, body, "application/octet-stream", headers, faults)
            return
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if isinstance(body, bytes):
            part: Body = body[start : end + 1]
        else:
            part = (body[0], body[1] + start, end - start + 1)
        self._respond(206, part, "application/octet-stream", headers, faults)

    # -- simple API ------------------------------------------------------
    def _serve_simple(self, config: IndexConfig, path: str, query: str, faults: Sequence[Fault]) -> None:
        parts = [p for p in path.split("/") if p]
        suffix = f"?{query}" if query else ""
        if len(parts) == 1:
            if not path.endswith("/"):
                self._redirect("/simple/" + suffix, faults)
            else:
                self._serve_page(query, faults, self._root_page)
            return
        if len(parts) != 2:
            self._respond(404, b"not found\n", "text/plain", faults=faults)
            return
        normalized = canonicalize_name(parts[1])
        if parts[1] != normalized or not path.endswith("/"):
            self._redirect(f"/simple/{normalized}/{suffix}", faults)
            return
        dists = self.index.catalog.projects().get(normalized)
        if not dists:
            self._respond(404, b"no such project\n", "text/plain", faults=faults)
            return
        self._serve_page(query, faults, lambda media: self._project_page(config, normalized, dists, media))

    def _redirect(self, location: str, faults: Sequence[Fault]) -> None:
        self._respond(301, b"moved\n", "text/plain", {"Location": location}, faults)

    def _serve_page(self, query: str, faults: Sequence[Fault], render) -> None:
        fmt = parse_qs(query).get("format")  # `+` arrives form-decoded as a space
        media = negotiate(fmt[0].replace(" ", "+") if fmt else self.headers.get("Accept"))
        if media is None:
            self._respond(406, b"not acceptable\n", "text/plain", {"Vary": "Accept"}, faults)
            return
        body = render(media)
        headers = {"Vary": "Accept", **self.index._page_validators(self._live.path, media, body)}
        if self._not_modified(headers):
            self._respond(304, b"", media, headers, faults)
            return
        with self.index._lock:
            self.index.pages_rendered += 1
        self._respond(200, body, media, headers, faults)

    def _not_modified(self, validators: Mapping[str, str]) -> bool:
        if "ETag" in validators and self.headers.get("If-None-Match") is not None:
            tags = [t.strip() for t in self.headers["If-None-Match"].split(",")]
            return validators["ETag"] in tags or "*" in tags
        since = self.headers.get("If-Modified-Since")
        if "Last-Modified" in validators and since:
            try:
                return email.utils.parsedate_to_datetime(since) >= email.utils.parsedate_to_datetime(validators["Last-Modified"])
            except (TypeError, ValueError):
                return False
        return False

    def _root_page(self, media: str) -> bytes:
        return root_page(self.index.catalog.projects(), media)

    def _project_page(self, config: IndexConfig, project: str, dists: List[DistFile], media: str) -> bytes:
        entries = [self._file_entry(config, d) for d in dists]
        return project_page(project, dists, entries, media)

    def _file_entry(self, config: IndexConfig, dist: DistFile) -> dict:
        sha = dist.sha256
        if self.index.fire(("wrong_hash",), dist.filename, f"/files/{dist.filename}"):
            self._live.faults.append("wrong_hash")
            sha = wrong_digest(sha)
        return file_entry(config, dist, self.index.file_url(dist.filename), sha)
