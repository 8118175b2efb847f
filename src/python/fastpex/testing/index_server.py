"""Loopback PEP 503/691 package index with switches and injectable faults.

fastpex's locker/fetcher must cope with every index flavour (metadata
advertised or not, range support or not, hashes or not) and with flaky
networks. This server serves a directory of wheels/sdists over real HTTP so
tests can flip those behaviours per test and observe exactly which requests a
client made (and how many ran concurrently).
"""

from __future__ import annotations

import base64
import email.parser
import email.utils
import fnmatch
import hashlib
import html
import json
import os
import socket
import ssl
import struct
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from fastpex.testing.wheels import sha256_file, wheel_metadata_bytes

__all__ = [
    "DEFAULT_UPLOAD_TIME",
    "FAULT_KINDS",
    "HTML_TYPES",
    "JSON_TYPES",
    "PEP691_JSON",
    "DistFile",
    "Fault",
    "IndexConfig",
    "IndexServer",
    "RequestRecord",
    "parse_range",
]

PEP691_JSON = "application/vnd.pypi.simple.v1+json"
PEP691_HTML = "application/vnd.pypi.simple.v1+html"
JSON_TYPES = (PEP691_JSON, "application/vnd.pypi.simple.latest+json")
HTML_TYPES = (PEP691_HTML, "application/vnd.pypi.simple.latest+html", "text/html")
API_VERSION = "1.1"
DEFAULT_UPLOAD_TIME = datetime(2020, 1, 1, tzinfo=timezone.utc)
FAULT_KINDS = (
    "http_500",
    "reset_mid_body",
    "truncate_body",
    "wrong_content_length",
    "slow",
    "wrong_hash",
    "wrong_metadata",
)
_BODY_FAULTS = ("reset_mid_body", "truncate_body", "wrong_content_length")
_TRANSPORT_FAULTS = ("http_500", "slow") + _BODY_FAULTS
_WRONG_METADATA_LINE = b"Requires-Dist: fastpex-injected-wrong-metadata\n"
UNSATISFIABLE = (-1, -1)


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour.

    `pattern` is an fnmatch glob on the file name of `/files/` requests; a
    pattern starting with `/` instead matches the request path of any request
    (e.g. `/simple/*` to break index pages). `count` fires the fault that many
    times (then the server behaves); None means always.
    """

    kind: str
    pattern: str = "*"
    count: Optional[int] = None
    status: int = 500  # http_500: the 5xx code to answer with
    delay: float = 0.0  # slow: seconds before the response starts
    chunk_delay: float = 0.0  # slow: seconds between body chunks
    fraction: float = 0.5  # reset_mid_body/truncate_body: share of the body sent
    length_delta: int = 1024  # wrong_content_length: declared minus actual bytes

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")

    def matches(self, filename: Optional[str], path: str) -> bool:
        if self.pattern.startswith("/"):
            return fnmatch.fnmatchcase(path, self.pattern)
        return filename is not None and fnmatch.fnmatchcase(filename, self.pattern)


@dataclass(frozen=True)
class IndexConfig:
    """Runtime switches; swap with `server.config = replace(...)` or `server.update(...)`."""

    advertise_metadata: bool = True  # PEP 658/714 attributes on wheel links
    serve_metadata_files: bool = True  # `/files/<wheel>.metadata` answers 200 (else 404)
    honour_range: bool = True  # 206/416 for Range requests (else 200 full body)
    include_hashes: bool = True  # `#sha256=` / `hashes` on file links
    include_sizes: bool = True  # PEP 700 `size` on JSON file entries (HTML pages never have one)
    upload_times: Mapping[str, datetime] = field(default_factory=dict)  # filename -> time
    default_upload_time: datetime = DEFAULT_UPLOAD_TIME
    yanked: Mapping[str, str] = field(default_factory=dict)  # filename -> reason ("" allowed)
    faults: Tuple[Fault, ...] = ()
    require_auth: Optional[Tuple[str, str]] = None  # (user, password) for HTTP basic auth
    chunk_size: int = 64 * 1024
    # Validators on /simple/ pages, honoured with 304 (If-None-Match first, as RFC 9110 says,
    # else If-Modified-Since); () sends none and ignores conditions, like this machine's PyPI.
    page_validators: Tuple[str, ...] = ("etag", "last-modified")


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, as seen by the server."""

    method: str
    path: str  # percent-decoded, without query
    query: str
    range: Optional[str]
    accept: Optional[str]
    status: int  # 0 if the connection failed before a status was sent
    bytes_sent: int  # body bytes written (headers excluded)
    started: float  # time.monotonic()
    finished: float  # when the response was complete from the client's view
    faults: Tuple[str, ...]
    conditional: bool = False  # it carried If-None-Match or If-Modified-Since


@dataclass
class _LiveRecord:
    """Mutable log entry, finalized *before* the client can see the response end."""

    method: str
    path: str
    query: str
    range: Optional[str]
    accept: Optional[str]
    is_file: bool
    started: float
    status: int = 0
    bytes_sent: int = 0
    finished: Optional[float] = None
    faults: List[str] = field(default_factory=list)
    conditional: bool = False

    def snapshot(self) -> RequestRecord:
        return RequestRecord(
            method=self.method,
            path=self.path,
            query=self.query,
            range=self.range,
            accept=self.accept,
            status=self.status,
            bytes_sent=self.bytes_sent,
            started=self.started,
            finished=self.finished if self.finished is not None else time.monotonic(),
            faults=tuple(self.faults),
            conditional=self.conditional,
        )


@dataclass(frozen=True)
class DistFile:
    """A distribution in the served directory plus facts pages need."""

    filename: str
    path: Path
    project: str  # canonical name
    version: str
    size: int
    sha256: str
    requires_python: Optional[str]
    metadata: Optional[bytes]  # wheel METADATA member (None for sdists)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


def parse_range(header: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """Parse a single `Range: bytes=` spec into inclusive (start, end).

    Returns None when the header should be ignored (absent, malformed,
    multi-range) and UNSATISFIABLE when a 416 is due, following RFC 9110.
    """
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[len("bytes=") :].strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size - 1)


def _sdist_pkg_info(path: Path) -> Optional[bytes]:
    """PKG-INFO of an sdist, only to learn its Requires-Python."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/PKG-INFO")]
                return zf.read(names[0]) if names else None
        with tarfile.open(path) as tf:
            for member in tf.getmembers():
                if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                    fp = tf.extractfile(member)
                    return fp.read() if fp else None
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return None
    return None


def _requires_python(metadata: Optional[bytes]) -> Optional[str]:
    if not metadata:
        return None
    msg = email.parser.BytesHeaderParser().parsebytes(metadata)
    value = msg.get("Requires-Python")
    return str(value).strip() if value else None


def _identify(filename: str) -> Optional[Tuple[str, str]]:
    """(canonical project, version) from a distribution filename, else None."""
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return str(name), str(version)
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return str(name), str(version)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


class _DistCatalog:
    """Scans the dist dir per request (so tests may add files live), caching hashes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: Dict[Tuple[str, int, int], DistFile] = {}
        self._lock = threading.Lock()

    def _load(self, entry: os.DirEntry, ident: Tuple[str, str]) -> DistFile:
        st = entry.stat()
        key = (entry.name, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        path = Path(entry.path)
        metadata = wheel_metadata_bytes(path) if entry.name.endswith(".whl") else None
        pkg_info = metadata if metadata is not None else _sdist_pkg_info(path)
        dist = DistFile(
            filename=entry.name,
            path=path,
            project=ident[0],
            version=ident[1],
            size=st.st_size,
            sha256=sha256_file(path),
            requires_python=_requires_python(pkg_info),
            metadata=metadata,
        )
        with self._lock:
            self._cache[key] = dist
        return dist

    def files(self) -> List[DistFile]:
        out = []
        with os.scandir(self.root) as it:
            for entry in it:
                ident = _identify(entry.name)
                if ident is not None and entry.is_file():
                    out.append(self._load(entry, ident))
        return sorted(out, key=lambda d: d.filename)

    def projects(self) -> Dict[str, List[DistFile]]:
        grouped: Dict[str, List[DistFile]] = {}
        for dist in self.files():
            grouped.setdefault(dist.project, []).append(dist)
        return grouped

    def get(self, filename: str) -> Optional[DistFile]:
        return next((d for d in self.files() if d.filename == filename), None)


def _negotiate(accept: Optional[str]) -> Optional[str]:
    """Pick the response media type per PEP 691; None means 406."""
    if not accept or not accept.strip():
        return "text/html"
    entries = []
    for index, part in enumerate(accept.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        entries.append((-quality, index, pieces[0].lower()))
    for neg_q, _, media in sorted(entries):
        if neg_q >= 0:
            break
        if media in JSON_TYPES:
            return PEP691_JSON
        if media in HTML_TYPES:
            return media
        if media in ("*/*", "application/*", "text/*"):
            return "text/html"
    return None


def _iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wrong_digest(digest: str) -> str:
    return hashlib.sha256(b"fastpex-wrong-hash:" + digest.encode("ascii")).hexdigest()


def _corrupt_metadata(metadata: bytes) -> bytes:
    """Still-parseable METADATA that differs from the wheel's (an extra dependency)."""
    head, sep, rest = metadata.partition(b"\n")
    return head + sep + _WRONG_METADATA_LINE + rest


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can force-close idle keep-alive connections on stop."""

    daemon_threads = False  # tracked so server_close() joins every handler thread
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, index: "IndexServer") -> None:
        self.index = index
        self._conns: set = set()
        self._conn_lock = threading.Lock()
        self._closing = False
        super().__init__((index.host, 0), _Handler)

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


class IndexServer:
    """A threaded loopback index over `dist_dir`; use as a context manager.

    `host` is the loopback address to bind (e.g. `127.0.0.2`, which a `NO_PROXY=127.0.0.1`
    default does not cover); with `ssl_context` (a server-side context holding a certificate for
    `host`) it serves https."""

    def __init__(
        self,
        dist_dir: Union[str, Path],
        config: Optional[IndexConfig] = None,
        *,
        host: str = "127.0.0.1",
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.dist_dir = Path(dist_dir)
        self.host = host
        self.ssl_context = ssl_context
        self.catalog = _DistCatalog(self.dist_dir)
        self._config = config or IndexConfig()
        self._lock = threading.Lock()
        self._fired: Dict[Fault, int] = {}
        self._log: List[_LiveRecord] = []
        self._in_flight_files = 0
        self._max_in_flight_files = 0
        self._page_versions: Dict[Tuple[str, str], Tuple[str, int]] = {}  # (path, media) -> (ETag, mtime)
        self.pages_rendered = 0  # project pages sent in full (200), the count a page cache saves
        self._stopping = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.errors: List[BaseException] = []

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "IndexServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fastpex-index", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop keep-alive connections and join every thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "IndexServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("IndexServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def simple_url(self) -> str:
        return self.url + "/simple/"

    def project_url(self, project: str) -> str:
        return f"{self.simple_url}{canonicalize_name(project)}/"

    def file_url(self, filename: str) -> str:
        return f"{self.url}/files/{quote(filename)}"

    def auth_url(self) -> str:
        """simple_url with the configured basic-auth credentials embedded."""
        auth = self.config.require_auth
        if not auth:
            return self.simple_url
        user, password = (quote(a, safe="") for a in auth)
        return f"{self.scheme}://{user}:{password}@{self.host}:{self.port}/simple/"

    # -- configuration ---------------------------------------------------
    @property
    def config(self) -> IndexConfig:
        return self._config

    @config.setter
    def config(self, value: IndexConfig) -> None:
        """Replacing the config also re-arms fault counters."""
        with self._lock:
            self._config = value
            self._fired.clear()

    def update(self, **changes: object) -> IndexConfig:
        """Shorthand for `server.config = replace(server.config, **changes)`."""
        self.config = replace(self.config, **changes)  # type: ignore[arg-type]  # IndexConfig field names checked by dataclasses.replace
        return self.config

    def fire(self, kinds: Sequence[str], filename: Optional[str], path: str) -> List[Fault]:
        """Faults of `kinds` that apply now; consumes one from each counted fault."""
        fired = []
        with self._lock:
            for fault in self._config.faults:
                if fault.kind not in kinds or not fault.matches(filename, path):
                    continue
                used = self._fired.get(fault, 0)
                if fault.count is not None and used >= fault.count:
                    continue
                self._fired[fault] = used + 1
                fired.append(fault)
        return fired

    def fired_count(self, kind: Optional[str] = None) -> int:
        """How many times faults (of `kind`) fired since the config was last set."""
        with self._lock:
            return sum(n for f, n in self._fired.items() if kind is None or f.kind == kind)

    def sleep(self, seconds: float) -> None:
        """Sleep that `stop()` interrupts, so slow faults never delay shutdown."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # -- request log -----------------------------------------------------
    @property
    def requests(self) -> List[RequestRecord]:
        """Snapshot of the log, oldest first (in-flight requests included)."""
        with self._lock:
            return [r.snapshot() for r in self._log]

    def matching(self, path_glob: str, method: Optional[str] = None) -> List[RequestRecord]:
        return [
            r
            for r in self.requests
            if fnmatch.fnmatchcase(r.path, path_glob) and (method is None or r.method == method)
        ]

    def count(self, path_glob: str, method: Optional[str] = None) -> int:
        return len(self.matching(path_glob, method))

    def bytes_sent_for(self, path_glob: str) -> int:
        return sum(r.bytes_sent for r in self.matching(path_glob))

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._max_in_flight_files = self._in_flight_files

    def _begin(self, live: _LiveRecord) -> None:
        with self._lock:
            self._log.append(live)
            if live.is_file:
                self._in_flight_files += 1
                self._max_in_flight_files = max(self._max_in_flight_files, self._in_flight_files)

    def _update(self, live: _LiveRecord, status: Optional[int] = None, sent: int = 0) -> None:
        with self._lock:
            if status is not None:
                live.status = status
            live.bytes_sent += sent

    def _complete(self, live: _LiveRecord) -> None:
        """Idempotent; called just before the client can observe the end of the response."""
        with self._lock:
            if live.finished is None:
                live.finished = time.monotonic()
                if live.is_file:
                    self._in_flight_files -= 1

    def _page_validators(self, path: str, media: str, body: bytes) -> Dict[str, str]:
        """ETag / Last-Modified of a page as configured; a changed body gets a Last-Modified
        strictly later than the one before, so If-Modified-Since never hides a change."""
        kinds = self.config.page_validators
        if not kinds:
            return {}
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        with self._lock:
            known = self._page_versions.get((path, media))
            if known is None or known[0] != etag:
                mtime = max(int(time.time()), known[1] + 1 if known else 0)
                known = self._page_versions[(path, media)] = (etag, mtime)
        out = {}
        if "etag" in kinds:
            out["ETag"] = etag
        if "last-modified" in kinds:
            out["Last-Modified"] = email.utils.formatdate(known[1], usegmt=True)
        return out

    @property
    def max_concurrent_file_requests(self) -> int:
        with self._lock:
            return self._max_in_flight_files

    @property
    def in_flight_file_requests(self) -> int:
        with self._lock:
            return self._in_flight_files


Body = Union[bytes, Tuple[Path, int, int]]  # bytes, or (file, offset, length)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per small response
    protocol_version = "HTTP/1.1"
    server_version = "fastpex-index/1.0"
    timeout = 60  # per-socket safety net; stop() closes connections anyway
    server: _HTTPServer

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
        self._live = _LiveRecord(
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
        faults = self.index.fire(_TRANSPORT_FAULTS, filename, path)
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
        body_fault = None if error else next((by_kind[k] for k in _BODY_FAULTS if k in by_kind), None)
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
            data = _corrupt_metadata(data)
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
        media = _negotiate(fmt[0].replace(" ", "+") if fmt else self.headers.get("Accept"))
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
        projects = sorted(self.index.catalog.projects())
        if media == PEP691_JSON:
            doc = {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]}
            return json.dumps(doc, indent=1).encode("utf-8")
        links = "".join(f'    <a href="/simple/{p}/">{p}</a><br/>\n' for p in projects)
        return _html_doc("Simple index", links)

    def _project_page(self, config: IndexConfig, project: str, dists: List[DistFile], media: str) -> bytes:
        entries = [self._file_entry(config, d) for d in dists]
        if media == PEP691_JSON:
            versions = sorted({d.version for d in dists}, key=_version_key)
            doc = {"meta": {"api-version": API_VERSION}, "name": project, "versions": versions, "files": entries}
            return json.dumps(doc, indent=1).encode("utf-8")
        return _html_doc(f"Links for {project}", "".join(_html_link(e) for e in entries))

    def _file_entry(self, config: IndexConfig, dist: DistFile) -> dict:
        """The PEP 691 file dict; HTML rendering is derived from it."""
        sha = dist.sha256
        if self.index.fire(("wrong_hash",), dist.filename, f"/files/{dist.filename}"):
            self._live.faults.append("wrong_hash")
            sha = _wrong_digest(sha)
        entry: dict = {
            "filename": dist.filename,
            "url": self.index.file_url(dist.filename),
            "hashes": {"sha256": sha} if config.include_hashes else {},
            **({"size": dist.size} if config.include_sizes else {}),
            "upload-time": _iso(config.upload_times.get(dist.filename, config.default_upload_time)),
            "yanked": config.yanked[dist.filename] or True if dist.filename in config.yanked else False,
        }
        if dist.requires_python:
            entry["requires-python"] = dist.requires_python
        if config.advertise_metadata and dist.metadata is not None:
            meta_hash = hashlib.sha256(dist.metadata).hexdigest()
            value = {"sha256": meta_hash} if config.include_hashes else True
            entry["core-metadata"] = value
            entry["dist-info-metadata"] = value
        return entry


def _version_key(version: str) -> Version:
    return Version(version)


def _html_doc(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}  </body>\n</html>\n"
    ).encode("utf-8")


def _html_link(entry: dict) -> str:
    """PEP 503 anchor (+ PEP 592/658/714 data attributes) for one file entry."""
    href = entry["url"]
    if entry["hashes"]:
        href += f"#sha256={entry['hashes']['sha256']}"
    attrs = [f'href="{html.escape(href)}"']
    if "requires-python" in entry:
        attrs.append(f'data-requires-python="{html.escape(entry["requires-python"])}"')
    if "core-metadata" in entry:
        meta = entry["core-metadata"]
        value = f"sha256={meta['sha256']}" if isinstance(meta, dict) else "true"
        attrs.append(f'data-dist-info-metadata="{value}"')
        attrs.append(f'data-core-metadata="{value}"')
    if entry["yanked"] is not False:
        reason = entry["yanked"] if isinstance(entry["yanked"], str) else ""
        attrs.append(f'data-yanked="{html.escape(reason)}"')
    return f"    <a {' '.join(attrs)}>{html.escape(entry['filename'])}</a><br/>\n"
