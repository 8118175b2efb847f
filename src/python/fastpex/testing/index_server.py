"""Loopback PEP 503/691 package index with switches and injectable faults.

fastpex's locker/fetcher must cope with every index flavour (metadata
advertised or not, range support or not, hashes or not) and with flaky
networks. This server serves a directory of wheels/sdists over real HTTP so
tests can flip those behaviours per test and observe exactly which requests a
client made (and how many ran concurrently).
"""

from __future__ import annotations

import email.utils
import fnmatch
import hashlib
import ssl
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from packaging.utils import canonicalize_name

from fastpex.testing.index_server_catalog import DistCatalog, DistFile
from fastpex.testing.index_server_config import (
    DEFAULT_UPLOAD_TIME,
    FAULT_KINDS,
    HTML_TYPES,
    JSON_TYPES,
    PEP691_HTML,
    PEP691_JSON,
    UNSATISFIABLE,
    Fault,
    IndexConfig,
    LiveRecord,
    RequestRecord,
    parse_range,
)
from fastpex.testing.index_server_handler import IndexHTTPServer

# The public surface stays here (tests import it from this module); the parts live in
# index_server_config (switches, log records), index_server_catalog (the served files),
# index_server_pages (rendering) and index_server_handler (HTTP transport and faults).
__all__ = [
    "DEFAULT_UPLOAD_TIME",
    "FAULT_KINDS",
    "HTML_TYPES",
    "JSON_TYPES",
    "PEP691_HTML",
    "PEP691_JSON",
    "UNSATISFIABLE",
    "DistFile",
    "Fault",
    "IndexConfig",
    "IndexServer",
    "RequestRecord",
    "parse_range",
]


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
        self.catalog = DistCatalog(self.dist_dir)
        self._config = config or IndexConfig()
        self._lock = threading.Lock()
        self._fired: Dict[Fault, int] = {}
        self._log: List[LiveRecord] = []
        self._in_flight_files = 0
        self._max_in_flight_files = 0
        self._page_versions: Dict[Tuple[str, str], Tuple[str, int]] = {}  # (path, media) -> (ETag, mtime)
        self.pages_rendered = 0  # project pages sent in full (200), the count a page cache saves
        self._stopping = threading.Event()
        self._httpd: Optional[IndexHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.errors: List[BaseException] = []

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "IndexServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = IndexHTTPServer(self)
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

    def _begin(self, live: LiveRecord) -> None:
        with self._lock:
            self._log.append(live)
            if live.is_file:
                self._in_flight_files += 1
                self._max_in_flight_files = max(self._max_in_flight_files, self._in_flight_files)

    def _update(self, live: LiveRecord, status: Optional[int] = None, sent: int = 0) -> None:
        with self._lock:
            if status is not None:
                live.status = status
            live.bytes_sent += sent

    def _complete(self, live: LiveRecord) -> None:
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
