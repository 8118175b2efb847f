"""The index server's switches and request log types: what a test sets and what it reads back.

Split out of index_server.py (one concern a module); import these from `fastpex.testing.index_server`.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import List, Mapping, Optional, Tuple

# Public names are re-exported (and listed) by fastpex.testing.index_server.

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
BODY_FAULTS = ("reset_mid_body", "truncate_body", "wrong_content_length")
TRANSPORT_FAULTS = ("http_500", "slow") + BODY_FAULTS
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
class LiveRecord:
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
