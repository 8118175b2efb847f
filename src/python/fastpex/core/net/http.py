"""A small, thread-safe HTTP/1.1 client for index pages, metadata and artifacts.

Why not urllib: it opens a new TCP+TLS connection per request, which dominates the cost of the
thousands of tiny requests locking makes (pages, `.metadata` files, zip range reads). This
client keeps idle connections per (scheme, host, port), bounds everything a server controls
(redirects, retries, document sizes, timeouts), never sends credentials to a host they were not
configured for, and counts every body byte received so benchmarks and tests can assert on it.

It is shared by LOCK (pages, metadata) and FETCH (artifacts): `get(..., stream=True)` hands out
the body in chunks and leaves resuming to the caller.
"""

from __future__ import annotations

import builtins
import http.client
import logging
import random
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urljoin, urlsplit

from fastpex.core.util.urls import authorization_for, redact, strip_credentials

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_DOCUMENT_BYTES = 64 * MiB
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_ERROR_BODY_CAP = 64 * 1024

# `range=` accepts a literal header value (`"bytes=0-99"`), a negative int for a suffix range
# (`-65536` = the last 64 KiB), a non-negative int for "from offset to the end", or an
# inclusive `(start, end)` pair (`end=None` = to the end).
RangeSpec = Union[str, int, Tuple[int, Optional[int]]]


class HttpError(Exception):
    """Base of every error this module raises; messages name only redacted URLs."""


class HttpConnectionError(HttpError):
    """The server could not be reached (after retries), or the connection broke."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(
            f"could not reach `{self.url}`: {reason}. Check the URL, your network, and proxy "
            f"settings; the request was retried before giving up"
        )


class HttpStatusError(HttpError):
    """The server answered with an unexpected HTTP status."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.url = redact(url)
        self.status = status
        hint = ""
        if status in (401, 403):
            hint = (
                ": the index needs credentials, or rejected the ones sent. Put them in the index "
                "URL (`https://user:${TOKEN}@host/simple/`) or in ~/.netrc"
            )
        elif status == 404:
            hint = ": the resource does not exist on this server"
        super().__init__(f"`{self.url}` answered HTTP {status} {reason}".rstrip() + hint)


class ResponseTooLargeError(HttpError):
    """A document exceeded its size cap (a misbehaving or hostile server)."""

    def __init__(self, url: str, limit: int) -> None:
        self.url = redact(url)
        self.limit = limit
        super().__init__(
            f"`{self.url}` sent more than {limit} bytes for a document that should be small; "
            f"refusing to read further. If the server is right, raise the limit "
            f"(`HttpConfig.max_document_bytes`)"
        )


class TooManyRedirectsError(HttpError):
    def __init__(self, url: str, limit: int) -> None:
        self.url = redact(url)
        super().__init__(
            f"`{self.url}` redirected more than {limit} times; the server is misconfigured or "
            f"redirects in a loop"
        )


@dataclass(frozen=True)
class HttpConfig:
    """Every knob a server could otherwise push to the limit."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_redirects: int = 10
    max_retries: int = 3  # extra attempts after the first, for 5xx/429 and connection errors
    backoff_initial: float = 0.25  # seconds; doubles each attempt, with +-50% jitter
    backoff_max: float = 8.0
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    max_idle_per_host: int = 16
    chunk_size: int = 1024 * 1024
    user_agent: str = "fastpex"
    ca_bundle: Optional[str] = None  # default: the system store, honouring SSL_CERT_FILE
    # `read_timeout` bounds one silence; these bound a server that trickles bytes forever. The
    # status line + headers, and a whole document body, must arrive within `total_timeout`; a
    # streamed body may take longer only while it averages at least `min_stream_rate` bytes/s.
    total_timeout: float = 300.0
    min_stream_rate: int = 16 * 1024


class _Watchdog:
    """One thread that shuts down sockets whose deadline passed (a request stuck in a read
    that keeps receiving a byte now and then never hits the socket's own timeout)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: Dict[int, Tuple[float, object]] = {}
        self._next_id = 0
        self._thread: Optional[threading.Thread] = None
        self._wake_at = 0.0  # when the thread wakes next on its own

    def arm(self, sock: object, seconds: float) -> int:
        with self._cond:
            self._next_id += 1
            deadline = time.monotonic() + seconds
            self._armed[self._next_id] = (deadline, sock)
            if self._thread is None or not self._thread.is_alive():  # none yet, or lost in a fork
                self._thread = threading.Thread(target=self._run, name="fastpex-http-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wake_at:
                self._cond.notify()  # only when it would otherwise sleep past this deadline
            return self._next_id

    def disarm(self, ident: int) -> bool:
        """Stop watching; False if the deadline had already passed (the socket was shut)."""
        with self._cond:
            return self._armed.pop(ident, None) is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [k for k, (deadline, _) in self._armed.items() if deadline <= now]
                expired = [self._armed.pop(k)[1] for k in due]
                wait = min((d for d, _ in self._armed.values()), default=now + 60.0) - now
                if not expired:
                    self._wake_at = now + max(0.01, wait)
                    self._cond.wait(max(0.01, wait))
                    continue
            for sock in expired:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
                except OSError:
                    pass


_WATCHDOG = _Watchdog()


class ByteCounter:
    """Thread-safe running totals of body bytes received and requests sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = 0
        self._requests = 0

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self._bytes += n

    def add_request(self) -> None:
        with self._lock:
            self._requests += 1

    @property
    def bytes_received(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def reset(self) -> None:
        with self._lock:
            self._bytes = 0
            self._requests = 0


# Every client also adds to this one, so a benchmark can read one number for a whole run.
GLOBAL_COUNTER = ByteCounter()

_Origin = Tuple[str, str, int]


def _origin(url: str) -> _Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def range_header(spec: RangeSpec) -> str:
    """The `Range` header value for a `RangeSpec`."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, int):
        return f"bytes={spec}" if spec < 0 else f"bytes={spec}-"
    start, end = spec
    return f"bytes={start}-" if end is None else f"bytes={start}-{end}"


def parse_content_range(value: Optional[str]) -> Optional[Tuple[int, int, Optional[int]]]:
    """`bytes 0-99/1234` -> (0, 99, 1234); `*` total -> None total; malformed -> None."""
    if not value:
        return None
    unit, _, rest = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, _, total = rest.partition("/")
    first, sep, last = span.partition("-")
    try:
        if not sep:
            return None
        return int(first), int(last), (None if total.strip() == "*" else int(total))
    except ValueError:
        return None


class _Pool:
    """Idle keep-alive connections per origin. A connection is owned by one request at a time."""

    def __init__(self, config: HttpConfig) -> None:
        self._config = config
        self._idle: Dict[_Origin, List[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: Optional[ssl.SSLContext] = None

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=self._config.ca_bundle)
            return self._ssl

    def acquire(self, origin: _Origin) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._config.connect_timeout, context=self._ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._config.connect_timeout)
        return conn, False

    def release(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._config.max_idle_per_host:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


class Response:
    """A response whose body is read once, either whole (`read`) or in chunks (`iter_chunks`).

    `url` is the final URL after redirects, without credentials. The connection goes back to the
    pool only when the body was consumed completely; `close()` before that drops it.
    """

    def __init__(
        self,
        *,
        url: str,
        status: int,
        reason: str,
        headers: Message,
        body: Optional[bytes] = None,
        raw: Optional[http.client.HTTPResponse] = None,
        on_done: Optional["_Done"] = None,
        counters: Iterable[ByteCounter] = (),
        chunk_size: int = 1024 * 1024,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        local_file: Optional[Tuple[Path, int, int]] = None,
        total_timeout: Optional[float] = None,
        min_stream_rate: int = 0,
    ) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers
        self.bytes_received = 0
        self._body = body
        self._raw = raw
        self._on_done = on_done
        self._counters = tuple(counters)
        self._chunk_size = chunk_size
        self._max_document_bytes = max_document_bytes
        self._local_file = local_file
        self._consumed = False
        self._started = time.monotonic()
        self._total_timeout = total_timeout
        self._min_stream_rate = min_stream_rate

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.headers.get(name)
        return default if value is None else str(value)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_length(self) -> Optional[int]:
        value = self.header("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    @property
    def content_range(self) -> Optional[Tuple[int, int, Optional[int]]]:
        return parse_content_range(self.header("Content-Range"))

    def raise_for_status(self) -> "Response":
        if not self.ok:
            self.close()
            raise HttpStatusError(self.url, self.status, self.reason)
        return self

    def _count(self, n: int) -> None:
        self.bytes_received += n
        for counter in self._counters:
            counter.add_bytes(n)

    def _check_pace(self, whole_document: bool) -> None:
        """Give up on a body that takes too long (see `HttpConfig.total_timeout`)."""
        if self._total_timeout is None:
            return
        elapsed = time.monotonic() - self._started
        allowed = self._total_timeout
        if not whole_document and self._min_stream_rate > 0:
            allowed = max(allowed, self.bytes_received / self._min_stream_rate)
        if elapsed > allowed:
            raise HttpConnectionError(
                self.url,
                f"the server is too slow: {self.bytes_received} bytes in {elapsed:.0f} s "
                f"(a response must finish within {self._total_timeout:.0f} s, or keep up "
                f"{self._min_stream_rate} bytes/s when streamed)",
            )

    def iter_chunks(self, chunk_size: Optional[int] = None, *, _whole_document: bool = False) -> Iterator[bytes]:
        """Yield the body; raises `HttpConnectionError` if the connection breaks mid-body or
        the body is shorter than its Content-Length (callers that resume use `bytes_received`)."""
        if self._consumed:
            raise RuntimeError("the response body was already read")
        self._consumed = True
        size = chunk_size or self._chunk_size
        if self._body is not None:
            for pos in range(0, len(self._body), size):
                yield self._body[pos : pos + size]
            return
        if self._local_file is not None:
            path, offset, length = self._local_file
            with open(path, "rb") as fp:
                fp.seek(offset)
                remaining = length
                while remaining > 0:
                    chunk = fp.read(min(size, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    yield chunk
            return
        raw = self._raw
        assert raw is not None
        completed = False
        # Socket reads return one TLS record (~16 KiB) at a time; callers hash and write each
        # chunk, so batch the reads into `size`-byte chunks. On a broken connection the bytes
        # already read are still handed over, so a resumed download loses nothing.
        pending = bytearray()
        flushed_at = time.monotonic()
        try:
            while True:
                try:
                    # read1: one socket read at most, so the pace is checked between reads.
                    chunk = raw.read1(size)
                except (OSError, http.client.HTTPException) as e:
                    broken = HttpConnectionError(self.url, f"the connection broke mid-body ({e!r})")
                    if pending:
                        yield bytes(pending)
                        pending.clear()
                    raise broken
                if not chunk:
                    try:
                        raw.read()  # marks a complete response closed: its connection is reusable
                    except (OSError, http.client.HTTPException):
                        pass
                    break
                self._count(len(chunk))
                try:
                    self._check_pace(_whole_document)
                except HttpConnectionError:
                    if pending:
                        yield bytes(pending)
                        pending.clear()
                    raise
                if not pending and len(chunk) >= size:
                    yield chunk
                    continue
                pending += chunk
                # Flush on size, or every 50 ms on a slow link so progress and cancellation
                # stay responsive.
                now = time.monotonic()
                if len(pending) >= size or now - flushed_at > 0.05:
                    flushed_at = now
                    yield bytes(pending)
                    pending.clear()
            if pending:
                yield bytes(pending)
                pending.clear()
            expected = self.content_length
            encoded = self.header("Content-Encoding")
            if expected is not None and not encoded and self.bytes_received < expected:
                raise HttpConnectionError(
                    self.url,
                    f"the body ended after {self.bytes_received} of {expected} bytes",
                )
            completed = True
        finally:
            self._finish(reusable=completed)

    def readinto(self, buffer: memoryview) -> int:
        """Read up to `len(buffer)` body bytes into `buffer`; 0 once the body is complete.

        The copy-free counterpart of `iter_chunks` for large streamed bodies: one call fills the
        whole buffer with many socket reads in C (a TLS record is ~16 KiB, so per-record Python
        work is what limits `iter_chunks`), and the caller hashes and writes that buffer in
        place. Errors are those of `iter_chunks`: `HttpConnectionError` when the connection
        breaks, the body ends short of its Content-Length, or the server is too slow; the bytes
        of an interrupted call are not returned (resume from what you already wrote).
        """
        if self._raw is None:
            return self._readinto_buffered(buffer)
        self._consumed = True
        raw = self._raw
        # Paced before the read, so the bytes of a successful read are always handed over.
        try:
            self._check_pace(False)
        except HttpConnectionError:
            self._finish(reusable=False)
            raise
        try:
            n = raw.readinto(buffer)
        except (OSError, http.client.HTTPException) as e:
            self._finish(reusable=False)
            raise HttpConnectionError(self.url, f"the connection broke mid-body ({e!r})") from None
        if n:
            self._count(n)
            return n
        expected = self.content_length
        if expected is not None and not self.header("Content-Encoding") and self.bytes_received < expected:
            self._finish(reusable=False)
            raise HttpConnectionError(
                self.url, f"the body ended after {self.bytes_received} of {expected} bytes"
            )
        self._finish(reusable=True)
        return 0

    def _readinto_buffered(self, buffer: memoryview) -> int:
        """`readinto` for a body read already (or a local file): served from `iter_chunks`."""
        state = self.__dict__.setdefault("_into_state", [None, memoryview(b"")])
        if state[0] is None:
            if self._consumed and self._body is None and self._local_file is None:
                return 0  # a raw body that completed
            state[0] = self.iter_chunks(max(len(buffer), 1))
        left: memoryview = state[1]
        while not left:
            chunk = next(state[0], None)
            if chunk is None:
                return 0
            left = memoryview(chunk)
        n = min(len(buffer), len(left))
        buffer[:n] = left[:n]
        state[1] = left[n:]
        return n

    def read(self, max_bytes: Optional[int] = None) -> bytes:
        """The whole body, refusing more than `max_bytes` (default: the document cap)."""
        if self._body is not None and not self._consumed:
            self._consumed = True
            return self._body
        limit = self._max_document_bytes if max_bytes is None else max_bytes
        declared = self.content_length
        if declared is not None and declared > limit:
            self.close()
            raise ResponseTooLargeError(self.url, limit)
        parts: List[bytes] = []
        total = 0
        for chunk in self.iter_chunks(_whole_document=True):
            total += len(chunk)
            if total > limit:
                self.close()
                raise ResponseTooLargeError(self.url, limit)
            parts.append(chunk)
        return b"".join(parts)

    def _finish(self, reusable: bool) -> None:
        raw, self._raw = self._raw, None
        done, self._on_done = self._on_done, None
        if done is not None:
            done(reusable and raw is not None and not raw.will_close)

    def close(self) -> None:
        """Release the connection; an unread body means it cannot be reused."""
        self._consumed = True
        if self._raw is not None:
            self._finish(reusable=False)

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Done:
    """Returns a connection to the pool, or closes it, exactly once."""

    def __init__(self, pool: _Pool, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        self._pool = pool
        self._origin = origin
        self._conn: Optional[http.client.HTTPConnection] = conn

    def __call__(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if reusable:
            self._pool.release(self._origin, conn)
        else:
            conn.close()


class HttpClient:
    """Keep-alive HTTP(S) client; share one per process (it is thread-safe).

    `configured_indexes` are the index URLs the user configured, possibly with credentials or
    `${ENV}` references: a request to the same scheme+host+port gets their `Authorization`
    (via `urls.authorization_for`), and no other host ever sees them.
    """

    def __init__(
        self,
        config: Optional[HttpConfig] = None,
        *,
        configured_indexes: Iterable[str] = (),
        counter: Optional[ByteCounter] = None,
    ) -> None:
        self.config = config or HttpConfig()
        self.configured_indexes = tuple(configured_indexes)
        self.counter = counter or ByteCounter()
        self._pool = _Pool(self.config)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------
    def get(
        self,
        url: str,
        headers: Optional[Mapping[str, str]] = None,
        range: Optional[RangeSpec] = None,  # noqa: A002 - the HTTP name
        stream: bool = False,
        max_bytes: Optional[int] = None,
    ) -> Response:
        """GET `url` (http, https or file; credentials in it are sent only to its origin).

        Redirects are followed; 5xx/429 and connection failures are retried with backoff. Any
        final status is returned, not raised (see `Response.raise_for_status`); only an
        unreachable server raises (`HttpConnectionError`). With `stream=False` the body is read
        now, capped at `max_bytes` (default `HttpConfig.max_document_bytes`), and gzip is
        accepted; with `stream=True` read it with `iter_chunks()` (a broken body raises there,
        and is not retried: callers that can resume do so with `range=`)."""
        return self.request("GET", url, headers=headers, range=range, stream=stream, max_bytes=max_bytes)

    def head(self, url: str, headers: Optional[Mapping[str, str]] = None) -> Response:
        return self.request("HEAD", url, headers=headers)

    def request(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]] = None,
        range: Optional[RangeSpec] = None,  # noqa: A002
        stream: bool = False,
        max_bytes: Optional[int] = None,
    ) -> Response:
        if urlsplit(url).scheme == "file":
            return self._file_response(method, url, range)
        whole_document = method == "GET" and range is None and not stream
        request_headers = {
            "User-Agent": self.config.user_agent,
            "Accept-Encoding": "gzip" if whole_document else "identity",
        }
        explicit_auth: Optional[str] = None
        for key, value in (headers or {}).items():
            if key.lower() == "authorization":
                explicit_auth = value
            else:
                request_headers[key] = value
        if range is not None:
            request_headers["Range"] = range_header(range)

        original_origin = _origin(url)
        current = url  # may carry credentials while it stays on the original origin
        for _hop in builtins.range(self.config.max_redirects + 1):
            same_origin = _origin(current) == original_origin
            # Never forward the caller's or the first URL's credentials to another origin; that
            # origin only gets credentials configured for it (an index URL or ~/.netrc).
            auth = explicit_auth if same_origin else None
            if auth is None:
                auth = authorization_for(current, self.configured_indexes)
            hop_headers = dict(request_headers)
            if auth:
                hop_headers["Authorization"] = auth
            response = self._send_with_retries(method, strip_credentials(current), hop_headers, stream, max_bytes)
            location = response.header("Location")
            if response.status in REDIRECT_STATUSES and location:
                response.close()
                target = urljoin(strip_credentials(current), location)
                if _origin(target) == original_origin and strip_credentials(target) == target:
                    target = _with_userinfo(target, url)
                current = target
                continue
            return response
        raise TooManyRedirectsError(url, self.config.max_redirects)

    # -- internals ---------------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: Optional[str] = None) -> float:
        delay = min(self.config.backoff_max, self.config.backoff_initial * (2**attempt))
        if retry_after is not None:
            try:
                delay = min(self.config.backoff_max, max(delay, float(retry_after)))
            except ValueError:
                pass
        return delay * random.uniform(0.5, 1.5)

    def _send_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        stream: bool,
        max_bytes: Optional[int],
    ) -> Response:
        attempt = 0
        last_error: Optional[BaseException] = None
        while True:
            try:
                response = self._send_once(method, url, headers, stream, max_bytes)
            except (HttpConnectionError, ResponseTooLargeError):
                raise
            except _RetryableFailure as failure:
                last_error = failure.cause
                if attempt >= self.config.max_retries:
                    raise HttpConnectionError(url, f"{type(last_error).__name__}: {last_error}") from last_error
                delay = self._backoff(attempt)
                logger.debug("retrying %s %s in %.2fs after %r", method, redact(url), delay, last_error)
                time.sleep(delay)
                attempt += 1
                continue
            if response.status in RETRY_STATUSES and attempt < self.config.max_retries:
                retry_after = response.header("Retry-After")
                response.close()
                delay = self._backoff(attempt, retry_after)
                logger.debug("retrying %s %s in %.2fs after HTTP %d", method, redact(url), delay, response.status)
                time.sleep(delay)
                attempt += 1
                continue
            return response

    def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        stream: bool,
        max_bytes: Optional[int],
    ) -> Response:
        origin = _origin(url)
        if origin[0] not in ("http", "https"):
            raise HttpConnectionError(url, f"unsupported URL scheme `{origin[0]}`")
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # A reused keep-alive connection may have been closed by the server meanwhile: that
        # failure says nothing about the server, so retry it once on a fresh connection.
        for fresh_attempt in (False, True):
            conn, reused = self._pool.acquire(origin)
            try:
                if conn.sock is None:
                    conn.connect()
                    assert conn.sock is not None
                conn.sock.settimeout(self.config.read_timeout)
                conn.request(method, target, headers=dict(headers))
                self.counter.add_request()
                GLOBAL_COUNTER.add_request()
                guard = _WATCHDOG.arm(conn.sock, self.config.total_timeout)
                try:
                    raw = conn.getresponse()
                finally:
                    in_time = _WATCHDOG.disarm(guard)
                if not in_time:
                    raise _TooSlow()
            except _TooSlow:
                conn.close()
                raise HttpConnectionError(
                    url, f"the server did not send its response headers within {self.config.total_timeout:.0f} s"
                )
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and not fresh_attempt:
                    continue
                raise _RetryableFailure(e) from e
            break
        done = _Done(self._pool, origin, conn)
        response = Response(
            url=url,
            status=raw.status,
            reason=raw.reason,
            headers=raw.msg,
            raw=raw,
            on_done=done,
            counters=(self.counter, GLOBAL_COUNTER),
            chunk_size=self.config.chunk_size,
            max_document_bytes=self.config.max_document_bytes,
            total_timeout=self.config.total_timeout,
            min_stream_rate=self.config.min_stream_rate,
        )
        if method == "HEAD":
            raw.read()  # no body; marks the response complete so the connection is reusable
            response._raw = None  # noqa: SLF001
            response._body = b""  # noqa: SLF001
            done(not raw.will_close)
            return response
        wants_body_now = not stream or not response.ok or response.status in REDIRECT_STATUSES
        if not wants_body_now:
            return response
        limit = self.config.max_document_bytes if max_bytes is None else max_bytes
        if not response.ok:
            limit = _ERROR_BODY_CAP
        try:
            body = response.read(limit)
        except ResponseTooLargeError:
            if not response.ok:
                body = b""
            else:
                raise
        except HttpConnectionError as e:
            if response.status in RETRY_STATUSES or not response.ok:
                body = b""
            else:
                raise _RetryableFailure(e) from e
        if response.header("Content-Encoding", "").lower() == "gzip":
            body = _gunzip(body, limit, url)
        response._body = body  # noqa: SLF001 - hand the decoded body to read()
        response._consumed = False  # noqa: SLF001
        return response

    def _file_response(self, method: str, url: str, range_spec: Optional[RangeSpec]) -> Response:
        """file:// URLs (find-links, local mirrors) behave like a range-capable server."""
        path = Path(unquote(urlsplit(url).path))
        headers = Message()
        if not path.is_file():
            return Response(url=url, status=404, reason="Not Found", headers=headers, body=b"")
        size = path.stat().st_size
        headers["Content-Length"] = str(size)
        headers["Accept-Ranges"] = "bytes"
        start, end, status = 0, size - 1, 200
        if range_spec is not None:
            parsed = _parse_range_request(range_header(range_spec), size)
            if parsed is None:
                headers.replace_header("Content-Length", "0")
                headers["Content-Range"] = f"bytes */{size}"
                return Response(url=url, status=416, reason="Range Not Satisfiable", headers=headers, body=b"")
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            headers.replace_header("Content-Length", str(end - start + 1))
        length = end - start + 1 if size else 0
        if method == "HEAD":
            return Response(url=url, status=status, reason="OK", headers=headers, body=b"")
        return Response(
            url=url,
            status=status,
            reason="OK",
            headers=headers,
            local_file=(path, start, length),
            chunk_size=self.config.chunk_size,
            max_document_bytes=self.config.max_document_bytes,
        )


def _with_userinfo(url: str, credentialed: str) -> str:
    """`url` with the userinfo of `credentialed` (same origin), so redirects keep auth."""
    source = urlsplit(credentialed)
    if "@" not in source.netloc:
        return url
    userinfo = source.netloc.rsplit("@", 1)[0]
    parts = urlsplit(url)
    return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def _parse_range_request(value: str, size: int) -> Optional[Tuple[int, int]]:
    spec = value.strip()
    if not spec.startswith("bytes=") or size == 0:
        return None
    first, _, last = spec[len("bytes=") :].partition("-")
    if not first:
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else None


def _gunzip(data: bytes, limit: int, url: str) -> bytes:
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = decoder.decompress(data, limit + 1)
    if len(out) > limit or decoder.unconsumed_tail:
        raise ResponseTooLargeError(url, limit)
    return out


class _TooSlow(Exception):
    pass


class _RetryableFailure(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


__all__ = [
    "GLOBAL_COUNTER",
    "ByteCounter",
    "HttpClient",
    "HttpConfig",
    "HttpConnectionError",
    "HttpError",
    "HttpStatusError",
    "Response",
    "ResponseTooLargeError",
    "TooManyRedirectsError",
    "parse_content_range",
    "range_header",
]
