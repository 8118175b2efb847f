"""A response from `HttpClient`: its body read once, whole, in chunks or into a buffer.

Also the `Range` request and `Content-Range` helpers, and the byte counters every client
adds to (benchmarks and tests assert on bytes received).
"""

from __future__ import annotations

import http.client
import threading
import time
from email.message import Message
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union, overload

from fastpex.core.net.errors import HttpConnectionError, HttpStatusError, ResponseTooLargeError

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "GLOBAL_COUNTER",
    "ByteCounter",
    "RangeSpec",
    "Response",
    "parse_content_range",
    "range_header",
]

MiB = 1024 * 1024
DEFAULT_MAX_DOCUMENT_BYTES = 64 * MiB


# `range=` accepts a literal header value (`"bytes=0-99"`), a negative int for a suffix range
# (`-65536` = the last 64 KiB), a non-negative int for "from offset to the end", or an
# inclusive `(start, end)` pair (`end=None` = to the end).
RangeSpec = Union[str, int, Tuple[int, Optional[int]]]


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
        on_done: Optional[Callable[[bool], None]] = None,
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

    @overload
    def header(self, name: str) -> Optional[str]: ...

    @overload
    def header(self, name: str, default: str) -> str: ...

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The header's value, else `default` (a `str` default makes the result a `str`)."""
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

    def buffer_body(self, body: bytes) -> None:
        """From now on `read()` returns `body`: the client read (and decoded) the raw body
        itself, or there is none (HEAD). The connection goes back to the pool if it can."""
        self._finish(reusable=True)
        self._body = body
        self._consumed = False

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
