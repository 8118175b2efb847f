"""FETCH: download the artifacts a target needs, in parallel, into the verified store.

pip and pex download one artifact at a time. Here a bounded number (`jobs`) of downloads run at
once, spread over one worker process per CPU core (each running its share of the `jobs` in
threads, with its own keep-alive connections); every download streams into
`<store>/partial/<sha256>.part` while hashing, and only a file whose sha256 and size match the
lock is renamed into the store. Transient failures (5xx, reset, timeout, truncated body, wrong
Content-Length) are retried with exponential backoff + jitter, resuming with `Range` where the
server allows it; a hash mismatch is not transient and fails the fetch at once.

Why processes, and why the body loop looks the way it does: on a fast link fetching is CPU-bound.
Decrypting, hashing and writing cost ~2 CPU-seconds per GB even when done well, and the previous
design (threads of one process reading one ~16 KiB TLS record per Python iteration, copying it
twice, writing through the page cache) spent ~3.3 CPU-s/GB and held one GIL: 230 MB/s where
parallel curl reached 760 MB/s on the 2-core benchmark machine. Now each read fills a 1 MiB
buffer in C (`Response.readinto`), which is hashed in place and written with O_DIRECT where the
filesystem allows it (the page cache's copy and writeback cost more CPU than the hashing), and
the work runs in as many processes as there are cores. The parent process owns the queue
(biggest first), the bound on concurrent downloads, the reporter, cancellation and the errors
it raises (of the same types and messages as ever); workers send it progress every 0.1 s.

A warm store costs nothing: an entry named by its sha256 with the right size is trusted, with
no request and no rehash. `offline=True` never opens a socket (and starts no worker).

The transport is the shared keep-alive `HttpClient` (core/http.py) with its own retries off:
retrying here lets a retry resume from the partial file instead of starting over.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import pickle
import random
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from pathlib import Path
from typing import IO, Dict, Iterable, List, Mapping, Optional, Sequence, Set
from urllib.parse import unquote, urlsplit

from fastpex.core.net.http import (
    HttpClient,
    HttpConfig,
    HttpConnectionError,
    Response,
    TooManyRedirectsError,
)
from fastpex.core.model import Artifact, FetchedArtifact
from fastpex.core.store import ArtifactStore, PartialInfo, StoreHashMismatchError, hash_file
from fastpex.core.util.urls import redact, strip_credentials

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_JOBS",
    "DownloadError",
    "FetchError",
    "HashMismatchError",
    "OfflineError",
    "QuietReporter",
    "Reporter",
    "TTYReporter",
    "default_processes",
    "default_reporter",
    "fetch",
]

def _default_jobs() -> int:
    """Two downloads per CPU core, at least 4 (one connection rarely fills a fast link) and at
    most 16. Fetching a fast link is CPU-bound (TLS, sha256, writing: ~2 CPU-s per GB), and
    streams beyond what the cores can drain only add contention: measured on the 2-core
    benchmark machine (ml-core, 62 files, 4.17 GB, 2 worker processes), 4 streams took
    5.5-6.2 s, 8 streams 6.2-6.4 s and 16 streams 7.1 s."""
    return max(4, min(16, 2 * (os.cpu_count() or 1)))


DEFAULT_JOBS = _default_jobs()
DEFAULT_TIMEOUT = 30.0  # seconds without a byte before a connection counts as stalled
DEFAULT_BACKOFF = 0.5  # first retry delay (s); doubles per attempt, with jitter
MAX_BACKOFF = 30.0
_USER_AGENT = "fastpex-fetch/1"
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Body reads: one call fills up to _MAX_READ bytes; the size adapts to the link (see _stream).
_MIN_READ = 16 * 1024
_START_READ = 64 * 1024
_MAX_READ = 1024 * 1024
_DIRECT_ALIGN = 4096
# FASTPEX_FETCH_DIRECT_IO=0 writes through the page cache (e.g. to compare, or for a filesystem
# whose O_DIRECT is slow).
_USE_DIRECT_IO = os.environ.get("FASTPEX_FETCH_DIRECT_IO", "1") != "0"


# --------------------------------------------------------------------------------------------
# Errors


class FetchError(Exception):
    """Base of every error `fetch` raises."""


class HashMismatchError(FetchError):
    """The downloaded bytes aren't the locked artifact. Not retried: it isn't transient."""

    def __init__(
        self,
        url: str,
        filename: str,
        expected: str,
        actual: str,
        *,
        expected_size: Optional[int] = None,
        actual_size: Optional[int] = None,
    ) -> None:
        self.url = redact(url)
        self.filename = filename
        self.expected = expected
        self.actual = actual
        size_note = ""
        if expected_size is not None and actual_size is not None and expected_size != actual_size:
            size_note = f" ({actual_size} bytes where the lock says {expected_size})"
        super().__init__(
            f"`{filename}` downloaded from {self.url} has sha256 {actual}{size_note}, but the "
            f"lock expects {expected}. The partial download was deleted and nothing was stored. "
            f"The file on the index changed since the lock was made (or something between you "
            f"and the index altered it): check the index, then regenerate the lock"
        )


def _mismatch(artifact: Artifact, e: StoreHashMismatchError) -> HashMismatchError:
    """The store's refusal of a download, as the fetch error that names the URL."""
    return HashMismatchError(
        artifact.url,
        artifact.filename,
        artifact.sha256,
        e.actual,
        expected_size=artifact.size,
        actual_size=e.actual_size,
    )


class DownloadError(FetchError):
    """A download failed for good: a permanent HTTP error, or transient errors past the retries."""

    def __init__(self, url: str, filename: str, reason: str, *, attempts: int = 1, hint: str = "") -> None:
        self.url = redact(url)
        self.filename = filename
        self.reason = reason
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f"Could not download `{filename}` from {self.url}{tries}: {reason}. "
            + (hint or "Check that the index is reachable, then run the fetch again: completed "
               "downloads are kept and partial ones resume")
        )


class OfflineError(FetchError):
    """`offline=True` and the store lacks artifacts that would need the network."""

    def __init__(self, missing: Sequence[Artifact]) -> None:
        self.missing = tuple(missing)
        names = ", ".join(f"`{a.filename}`" for a in self.missing)
        super().__init__(
            f"Offline mode: {len(self.missing)} artifact(s) are not in the artifact store and "
            f"would need the network: {names}. Run the same fetch once without `--offline` "
            f"(or point `--cache-dir` at a store that has them)"
        )


class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Cancelled(Exception):
    """Another download failed; stop this one at the next chunk (its partial is kept)."""


# --------------------------------------------------------------------------------------------
# Progress reporting


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Reporter:
    """Receives fetch progress (uv-style: one interface, several renderings). Does nothing.

    `fetch` calls the methods from the thread that called it (workers send their events to
    it); a reporter shared with other threads must still be thread-safe.
    """

    def start(self, *, total_files: int, total_bytes: int, cached_files: int, cached_bytes: int) -> None:
        """Before any download; `total_*` include the `cached_*` ones already in the store."""

    def artifact_started(self, artifact: Artifact) -> None:
        """A download begins (after the store turned out not to have it)."""

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        """`n` more bytes are on disk for `artifact`; negative when a restart discards some."""

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        """A transient failure; attempt `attempt` starts after `delay` seconds."""

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        """`artifact` is verified in the store (`cached`: it already was)."""

    def finish(self, *, ok: bool) -> None:
        """After the last download (or the failure)."""


class _Counting(Reporter):
    """Shared bookkeeping for the concrete reporters."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.lock = threading.Lock()
        self.total_files = self.total_bytes = 0
        self.cached_files = self.cached_bytes = 0
        self.done_files = 0
        self.received = 0  # bytes written this run (incl. resumed prefixes)
        self.downloaded_files = 0
        self.retries = 0
        self.started = time.monotonic()

    def start(self, *, total_files: int, total_bytes: int, cached_files: int, cached_bytes: int) -> None:
        with self.lock:
            self.total_files, self.total_bytes = total_files, total_bytes
            self.cached_files, self.cached_bytes = cached_files, cached_bytes
            self.done_files = cached_files
            self.started = time.monotonic()

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        with self.lock:
            self.received += n

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        with self.lock:
            self.retries += 1

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        with self.lock:
            self.done_files += 1
            if not cached:
                self.downloaded_files += 1

    def summary(self, ok: bool) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        downloaded = self.done_files - self.cached_files
        line = (
            f"fastpex fetch: {self.done_files}/{self.total_files} artifacts "
            f"({_human_bytes(self.total_bytes)}) {'ready' if ok else 'ready before the failure'}: "
            f"{self.cached_files} from the store, {downloaded} downloaded "
            f"({_human_bytes(self.received)} in {elapsed:.1f}s, "
            f"{_human_bytes(self.received / elapsed)}/s)"
        )
        if self.retries:
            line += f", {self.retries} retries"
        return line


class QuietReporter(_Counting):
    """For CI logs and non-TTY stderr: one summary line at the end, nothing else."""

    def finish(self, *, ok: bool) -> None:
        with self.lock:
            print(self.summary(ok), file=self.stream, flush=True)


class TTYReporter(_Counting):
    """One line rewritten in place: files done/total, bytes, rate, ETA (at most 10 redraws/s)."""

    def __init__(self, stream: Optional[IO[str]] = None, *, interval: float = 0.1) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last_draw = 0.0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.received / elapsed
        have = self.cached_bytes + self.received
        remaining = max(self.total_bytes - have, 0)
        eta = f"{remaining / rate:.0f}s" if rate > 0 and remaining else "-"
        line = (
            f"Fetching {self.done_files}/{self.total_files} files  "
            f"{_human_bytes(have)}/{_human_bytes(self.total_bytes)}  "
            f"{_human_bytes(rate)}/s  ETA {eta}"
        )
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        super().bytes_received(artifact, n)
        with self.lock:
            self._draw()

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        super().artifact_finished(artifact, cached=cached)
        with self.lock:
            self._draw()

    def finish(self, *, ok: bool) -> None:
        with self.lock:
            self.stream.write("\r\x1b[K" + self.summary(ok) + "\n")
            self.stream.flush()


def default_reporter(stream: Optional[IO[str]] = None) -> Reporter:
    """`TTYReporter` when the stream (stderr) is a terminal, else `QuietReporter`."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return TTYReporter(stream) if isatty is not None and isatty() else QuietReporter(stream)


def _retry_after(response: Response) -> Optional[float]:
    value = response.header("Retry-After")
    return float(value.strip()) if value and value.strip().isdigit() else None


def _star_total(value: Optional[str]) -> Optional[int]:
    """The complete length of `bytes */1234` (a 416's Content-Range)."""
    if value and "/" in value:
        total = value.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    return None


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return (
            "The index wants credentials, or rejected the ones sent: pass the index URL with "
            "them (`--index https://user:${TOKEN}@host/simple/`) or add the host to ~/.netrc"
        )
    if status == 404:
        return "The file is gone from the index: regenerate the lock"
    return ""


# --------------------------------------------------------------------------------------------
# One download


class _PartialWriter:
    """Appends to a partial download, bypassing the page cache (O_DIRECT) where it can.

    Measured on this project's 2-core machine, 3.4 GB through the page cache cost 4.0-4.4
    CPU-seconds machine-wide (copies, then the kernel's writeback), with O_DIRECT 0.8-2.0 s:
    on a machine that also decrypts and hashes every byte that is the difference between
    filling the link and not. O_DIRECT needs aligned offsets and lengths, so it is used only
    from offset 0 (or an aligned resume point), for whole `_MAX_READ` buffers; the last,
    short write and any filesystem that refuses O_DIRECT (tmpfs, some FUSE, macOS has none)
    go through the page cache. `commit_partial` fsyncs either way.
    """

    def __init__(self, part: Path, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self.closed = False
        self.direct = False
        direct_flag = getattr(os, "O_DIRECT", 0)
        offset = part.stat().st_size if append and part.exists() else 0
        if direct_flag and _USE_DIRECT_IO and offset % _DIRECT_ALIGN == 0:
            try:
                self.fd = os.open(part, flags | direct_flag, 0o644)
                self.direct = True
                return
            except OSError:
                pass
        self.fd = os.open(part, flags, 0o644)

    def _buffered(self) -> None:
        import fcntl

        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def write(self, data: memoryview) -> None:
        if self.direct and len(data) % _DIRECT_ALIGN:
            self._buffered()
        done = 0
        while done < len(data):
            try:
                done += os.write(self.fd, data[done:])
            except OSError as e:
                if not self.direct or e.errno != errno.EINVAL:
                    raise
                self._buffered()  # the filesystem accepted the flag but not the write

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class _Downloader:
    def __init__(
        self,
        store: ArtifactStore,
        *,
        client: HttpClient,
        retries: int,
        backoff: float,
        reporter: Reporter,
    ) -> None:
        self.store = store
        self.retries = retries
        self.backoff = backoff
        self.reporter = reporter
        self.cancelled = threading.Event()
        self.client = client
        self._on_disk: Dict[str, int] = {}  # bytes reported to the reporter, per artifact

    def _progress_to(self, artifact: Artifact, on_disk: int) -> None:
        """Tell the reporter the partial now holds `on_disk` bytes (it may have shrunk)."""
        delta = on_disk - self._on_disk.get(artifact.sha256, 0)
        self._on_disk[artifact.sha256] = on_disk
        if delta:
            self.reporter.bytes_received(artifact, delta)

    def fetch_one(self, artifact: Artifact) -> FetchedArtifact:
        """Download one artifact; a failure cancels the rest before this worker takes another."""
        try:
            return self._fetch_one(artifact)
        except _Cancelled:
            raise
        except BaseException:
            self.cancelled.set()
            raise

    def _fetch_one(self, artifact: Artifact) -> FetchedArtifact:
        if self.cancelled.is_set():
            raise _Cancelled()
        scheme = urlsplit(artifact.url).scheme.lower()
        if scheme == "file":
            return self._copy_local(artifact)
        if scheme not in ("http", "https"):
            raise DownloadError(
                artifact.url,
                artifact.filename,
                f"the URL scheme `{scheme}` is not supported",
                hint="fastpex downloads over http(s) and copies file:// URLs: regenerate the "
                "lock against such an index",
            )
        # Held across retries: a second process waits, then finds the entry in place.
        with self.store.download_lock(artifact.sha256):
            if self.store.has(artifact):
                self.reporter.artifact_finished(artifact, cached=True)
                return FetchedArtifact(artifact, str(self.store.path_for(artifact.sha256)))
            self.reporter.artifact_started(artifact)
            attempt = 0
            while True:
                if self.cancelled.is_set():
                    raise _Cancelled()
                try:
                    path = self._attempt(artifact)
                    break
                except _Transient as e:
                    attempt += 1
                    if attempt > self.retries:
                        raise DownloadError(
                            artifact.url, artifact.filename, e.reason, attempts=attempt
                        ) from None
                    delay = min(MAX_BACKOFF, self.backoff * (2 ** (attempt - 1)))
                    delay = random.uniform(delay / 2, delay)  # jitter: don't retry in lockstep
                    if e.retry_after is not None:
                        delay = max(delay, min(e.retry_after, MAX_BACKOFF))
                    self.reporter.artifact_retrying(artifact, attempt + 1, e.reason, delay)
                    if self.cancelled.wait(delay):
                        raise _Cancelled() from None
        self.reporter.artifact_finished(artifact, cached=False)
        return FetchedArtifact(artifact, str(path))

    def _copy_local(self, artifact: Artifact) -> FetchedArtifact:
        """`file://` artifacts (find-links): copied into the store and verified like downloads."""
        if self.store.has(artifact):
            self.reporter.artifact_finished(artifact, cached=True)
            return FetchedArtifact(artifact, str(self.store.path_for(artifact.sha256)))
        import urllib.request  # only for file:// artifacts

        source = Path(urllib.request.url2pathname(unquote(urlsplit(artifact.url).path)))
        if not source.is_file():
            raise DownloadError(
                artifact.url,
                artifact.filename,
                "the file does not exist",
                hint="The lock points at a local find-links directory: restore the file or "
                "regenerate the lock",
            )
        self.reporter.artifact_started(artifact)
        try:
            path = self.store.add_file(artifact, source)
        except StoreHashMismatchError as e:
            raise _mismatch(artifact, e) from None
        self.reporter.bytes_received(artifact, source.stat().st_size)
        self.reporter.artifact_finished(artifact, cached=False)
        return FetchedArtifact(artifact, str(path))

    # -- HTTP --------------------------------------------------------------------------------

    def _get(self, artifact: Artifact, headers: Mapping[str, str], resume_from: int) -> Response:
        try:
            return self.client.get(
                artifact.url,
                headers=headers,
                range=resume_from if resume_from else None,
                stream=True,
            )
        except HttpConnectionError as e:
            raise _Transient(e.reason) from None
        except TooManyRedirectsError:
            raise DownloadError(
                artifact.url, artifact.filename, "the server redirects in a loop"
            ) from None

    def _attempt(self, artifact: Artifact) -> Path:
        store, sha = self.store, artifact.sha256
        part = store.partial_path(sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        info = store.read_partial_info(sha)
        have = part.stat().st_size if part.exists() else 0
        # Resume only a partial of this URL, from a server that said it serves ranges.
        url = strip_credentials(artifact.url)  # what the .json may record
        stale = info is None or info.url != url or not info.accept_ranges
        if have and (stale or (artifact.size is not None and have > artifact.size)):
            store.discard_partial(sha)
            have = 0
        self._progress_to(artifact, have)
        if have and artifact.size is not None and have == artifact.size:
            return self._commit(artifact, hash_file(part).hexdigest(), resumed=True)

        headers = {}
        if have and info is not None and info.validator:
            headers["If-Range"] = info.validator  # a changed file answers 200: restart
        response = self._get(artifact, headers, have)
        status = response.status
        try:
            if status == 416 and have:
                complete = (response.content_range or (None, None, None))[2]
                if complete is None:
                    complete = _star_total(response.header("Content-Range"))
                if complete == have:  # every byte is already here
                    return self._commit(artifact, hash_file(part).hexdigest(), resumed=True)
                store.discard_partial(sha)
                raise _Transient("the server refused to resume (HTTP 416); restarting from zero")
            if status in _TRANSIENT_STATUS or 500 <= status < 600:
                raise _Transient(f"HTTP {status} {response.reason}", _retry_after(response))
            if status not in (200, 206):
                raise DownloadError(
                    artifact.url,
                    artifact.filename,
                    f"HTTP {status} {response.reason}",
                    hint=_status_hint(status),
                )
            resumed_from = 0
            if status == 206:
                first = (response.content_range or (None,))[0]
                if first != have:
                    store.discard_partial(sha)
                    raise _Transient(f"the server answered range {first}- to bytes={have}-")
                resumed_from = have
            elif have:
                # 200 to a Range request: the server can't (or, per If-Range, won't) resume.
                have = 0
                self._progress_to(artifact, 0)
            expected = None if artifact.size is None else artifact.size - have
            declared = response.content_length
            if expected is not None and declared is not None and declared != expected:
                raise _Transient(
                    f"the server declared {declared} bytes (Content-Length) where the lock "
                    f"expects {expected}"
                )
            store.write_partial_info(
                sha,
                PartialInfo(
                    url=url,
                    etag=response.header("ETag"),
                    last_modified=response.header("Last-Modified"),
                    accept_ranges=status == 206
                    or (response.header("Accept-Ranges") or "").strip().lower() == "bytes",
                ),
            )
            hasher = hash_file(part, limit=have) if resumed_from else hashlib.sha256()
            total = have + self._stream(artifact, response, part, append=bool(resumed_from), hasher=hasher)
        finally:
            response.close()  # a no-op after a complete body; drops a half-read connection
        if artifact.size is not None and total != artifact.size:
            raise _Transient(f"truncated body: {total} of {artifact.size} bytes")
        return self._commit(artifact, hasher.hexdigest(), resumed=bool(resumed_from))

    def _stream(
        self,
        artifact: Artifact,
        response: Response,
        part: Path,
        *,
        append: bool,
        hasher: "hashlib._Hash",
    ) -> int:
        """Body -> partial file and hasher; a transport failure keeps the partial for resume.

        One page-aligned buffer, filled by `Response.readinto` (many TLS records per call, in
        C), hashed in place and written whole: no per-record Python work and no copies. The
        read size adapts between `_MIN_READ` and `_MAX_READ`, so a slow link still reports
        progress and notices cancellation every ~50 ms. The file is written with O_DIRECT
        where the filesystem allows it (see `_PartialWriter`).
        """
        written = 0
        on_disk = self._on_disk.get(artifact.sha256, 0)
        limit = artifact.size
        buf = mmap.mmap(-1, _MAX_READ)  # page-aligned, as O_DIRECT wants
        view = memoryview(buf)
        fill = 0  # bytes in the buffer, not yet written
        want = _START_READ
        writer = _PartialWriter(part, append=append)
        try:
            while True:
                if self.cancelled.is_set():
                    raise _Cancelled()
                started = time.monotonic()
                n = response.readinto(view[fill : fill + min(want, _MAX_READ - fill)])
                if not n:
                    break
                hasher.update(view[fill : fill + n])
                fill += n
                if fill == _MAX_READ:
                    writer.write(view)
                    fill = 0
                written += n
                on_disk += n
                self._progress_to(artifact, on_disk)
                if limit is not None and on_disk > limit:
                    writer.close()
                    self.store.discard_partial(artifact.sha256)
                    raise HashMismatchError(
                        artifact.url,
                        artifact.filename,
                        artifact.sha256,
                        "unknown (the server sent more bytes than the lock's size)",
                        expected_size=artifact.size,
                    )
                elapsed = time.monotonic() - started
                if elapsed < 0.025 and want < _MAX_READ:
                    want *= 2
                elif elapsed > 0.1 and want > _MIN_READ:
                    want //= 2
        except HttpConnectionError as e:
            raise _Transient(f"{e.reason} (after {written} bytes of this response)") from None
        finally:
            try:
                if fill and not writer.closed:
                    writer.write(view[:fill])  # also on failure: a resume starts after these
            finally:
                writer.close()  # the buffer is unmapped once the last view of it is gone
        return written

    def _commit(self, artifact: Artifact, actual: str, *, resumed: bool) -> Path:
        if actual != artifact.sha256.lower():
            part = self.store.partial_path(artifact.sha256)
            actual_size = part.stat().st_size if part.exists() else None
            self.store.discard_partial(artifact.sha256)
            if resumed:
                # The kept prefix may predate a change on the server: one clean restart decides.
                raise _Transient("a resumed download did not verify; restarting from zero")
            raise HashMismatchError(
                artifact.url,
                artifact.filename,
                artifact.sha256,
                actual,
                expected_size=artifact.size,
                actual_size=actual_size,
            )
        try:
            return self.store.commit_partial(artifact, actual)
        except StoreHashMismatchError as e:  # size disagreed
            raise _mismatch(artifact, e) from None


# --------------------------------------------------------------------------------------------
# Workers
#
# A worker runs up to `slots` downloads at once in its own threads, with its own keep-alive
# client, and talks to the parent over one socket (`multiprocessing.connection` framing):
#
#   parent -> worker   ("task", id, artifact) | ("cancel",) | ("stop",)
#   worker -> parent   ("started", id) | ("bytes", id, n) | ("retry", id, attempt, reason, delay)
#                      | ("finished", id, cached) | ("done", id, path) | ("failed", id, error)
#                      | ("cancelled", id)
#
# The parent owns the queue (biggest first), the bound on concurrent downloads, the reporter,
# cancellation and the error it raises; workers only download. A worker is normally a child
# process (`python -c` importing this module), so the downloads of different workers never
# share a GIL; with one worker, or a caller's own `HttpClient`, it is a thread of this process.

_PROGRESS_INTERVAL = 0.1  # seconds between a worker's progress messages
_WORKER_START_TIMEOUT = 60.0  # seconds a worker process may take to import and say "ready"


def _restore_error(cls: type, message: str, state: Dict[str, object]) -> BaseException:
    error = cls.__new__(cls)  # type: ignore[call-overload]
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error  # type: ignore[no-any-return]


def _reduce_error(self: Exception) -> tuple:
    """Pickle a fetch error as its message and attributes (their __init__ take other args)."""
    return (_restore_error, (type(self), str(self), dict(self.__dict__)))


FetchError.__reduce__ = _reduce_error  # type: ignore[assignment,method-assign]


def _transportable(error: BaseException, artifact: Artifact) -> BaseException:
    """`error` if it survives a trip through pickle, else a DownloadError that describes it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable error
        return DownloadError(artifact.url, artifact.filename, f"{type(error).__name__}: {error}")


class _Channel:
    """One end of a worker's connection; sends from several threads are serialized."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._lock:
            self.conn.send(message)

    def recv(self) -> object:
        return self.conn.recv()


class _PipeReporter(Reporter):
    """A worker's reporter: forwards events to the parent, bytes batched per interval."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._ids: Dict[str, int] = {}
        self._pending: Dict[int, int] = {}
        self._flushed_at = time.monotonic()

    def track(self, artifact: Artifact, task_id: int) -> None:
        with self._lock:
            self._ids[artifact.sha256] = task_id

    def _flush_locked(self) -> None:
        for task_id, n in self._pending.items():
            if n:
                self._channel.send(("bytes", task_id, n))
        self._pending.clear()
        self._flushed_at = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def artifact_started(self, artifact: Artifact) -> None:
        with self._lock:
            self._channel.send(("started", self._ids[artifact.sha256]))

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        with self._lock:
            task_id = self._ids[artifact.sha256]
            self._pending[task_id] = self._pending.get(task_id, 0) + n
            if time.monotonic() - self._flushed_at >= _PROGRESS_INTERVAL:
                self._flush_locked()

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        with self._lock:
            self._flush_locked()
            self._channel.send(("retry", self._ids[artifact.sha256], attempt, reason, delay))

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        with self._lock:
            self._flush_locked()
            self._channel.send(("finished", self._ids[artifact.sha256], cached))


def _serve(channel: _Channel, downloader: _Downloader, slots: int) -> None:
    """A worker's loop: run the parent's tasks, `slots` at a time, until told to stop."""
    reporter = _PipeReporter(channel)
    downloader.reporter = reporter

    def run(task_id: int, artifact: Artifact) -> None:
        reporter.track(artifact, task_id)
        try:
            fetched = downloader.fetch_one(artifact)
            message: tuple = ("done", task_id, fetched.path)
        except _Cancelled:
            message = ("cancelled", task_id)
        except BaseException as e:  # noqa: BLE001 - every failure goes to the parent
            message = ("failed", task_id, _transportable(e, artifact))
        reporter.flush()
        try:
            channel.send(message)
        except OSError:
            pass  # the parent is gone

    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="fastpex-fetch")
    try:
        channel.send(("ready",))
        while True:
            try:
                message = channel.recv()
            except (EOFError, OSError):  # the parent is gone: stop, keeping partials
                downloader.cancelled.set()
                break
            if message[0] == "task":  # type: ignore[index]
                pool.submit(run, message[1], message[2])  # type: ignore[index]
            elif message[0] == "cancel":  # type: ignore[index]
                downloader.cancelled.set()
            else:  # "stop"
                break
    except BaseException:
        downloader.cancelled.set()  # e.g. Ctrl-C: running downloads stop at their next read
        raise
    finally:
        pool.shutdown(wait=True)


def _worker_main(fd: int) -> None:
    """Entry point of a worker process (see `_ProcessWorker`): setup, then `_serve`."""
    channel = _Channel(Connection(fd))
    try:
        setup: Dict = channel.recv()  # type: ignore[assignment]
        with HttpClient(setup["config"], configured_indexes=setup["configured_indexes"]) as client:
            downloader = _Downloader(
                setup["store"],
                client=client,
                retries=setup["retries"],
                backoff=setup["backoff"],
                reporter=Reporter(),
            )
            _serve(channel, downloader, setup["slots"])
    except (KeyboardInterrupt, EOFError, OSError):
        pass  # Ctrl-C reaches the whole process group, and the parent reports it
    finally:
        channel.conn.close()


class _Worker:
    """The parent's handle on a worker: `slots` downloads at once, over `conn`."""

    def __init__(self, conn: Connection, slots: int) -> None:
        self.conn = conn
        self.slots = slots
        self.running: Set[int] = set()

    def send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except (OSError, EOFError, ValueError):
            pass  # it died: its tasks are reported as lost when its connection closes

    def ready(self, timeout: float) -> bool:
        """Wait for the worker's ("ready",): False if it died or took longer than `timeout`."""
        try:
            return bool(self.conn.poll(timeout)) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            return False

    def describe_exit(self) -> str:
        return "the download worker stopped unexpectedly"

    def close(self, timeout: float) -> None:
        raise NotImplementedError


class _ThreadWorker(_Worker):
    """A worker in a thread of this process (one worker, or a caller's own `HttpClient`)."""

    def __init__(self, downloader: _Downloader, slots: int) -> None:
        mine, theirs = multiprocessing.Pipe(duplex=True)
        super().__init__(mine, slots)
        self._theirs = theirs
        self._thread = threading.Thread(
            target=self._run, args=(downloader, slots), name="fastpex-fetch-worker", daemon=True
        )
        self._thread.start()

    def _run(self, downloader: _Downloader, slots: int) -> None:
        try:
            _serve(_Channel(self._theirs), downloader, slots)
        finally:
            self._theirs.close()

    def close(self, timeout: float) -> None:
        self.send(("stop",))
        self._thread.join(timeout)
        self.conn.close()


class _ProcessWorker(_Worker):
    """A child `python` that imports this module and runs `_worker_main` on a socketpair."""

    def __init__(self, setup: Dict[str, object], slots: int) -> None:
        mine, theirs = socket.socketpair()
        # The child imports fastpex (and `packaging`) from where this process does.
        paths = [p for p in sys.path if p] + [str(Path(__file__).resolve().parents[3])]
        code = (
            "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
            "from fastpex.core.fetch.downloader import _worker_main; _worker_main(int(sys.argv[2]))"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(paths), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        super().__init__(Connection(mine.detach()), slots)
        self.send(dict(setup, slots=slots))

    def describe_exit(self) -> str:
        code = self.process.poll()
        how = f"exit status {code}" if code is not None else "its connection closed"
        return f"the download worker process stopped unexpectedly ({how})"

    def close(self, timeout: float) -> None:
        self.send(("stop",))
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


def _start_processes(setup: Dict[str, object], jobs: int, count: int) -> Optional[List[_Worker]]:
    """`count` worker processes sharing `jobs` slots, or None if they can't start here."""
    workers: List[_Worker] = []
    try:
        for slots in _split(jobs, count):
            workers.append(_ProcessWorker(setup, slots))
        if all(w.ready(_WORKER_START_TIMEOUT) for w in workers):
            return workers
        problem = "a worker process exited during start-up"
    except OSError as e:
        problem = f"{type(e).__name__}: {e}"
    logger.warning("fastpex fetch: downloading in threads of one process instead (%s)", problem)
    for worker in workers:
        worker.close(timeout=5.0)
    return None


def _split(jobs: int, workers: int) -> List[int]:
    """`jobs` download slots over `workers` workers, as evenly as possible."""
    return [jobs // workers + (1 if i < jobs % workers else 0) for i in range(workers)]


def default_processes(jobs: int, downloads: int) -> int:
    """Worker processes for `downloads` downloads, at most `jobs` at once: one per CPU core.

    TLS, hashing and writing cost ~2 CPU-seconds per GB, and threads of one process share
    one GIL (measured on 2 cores, the same read/hash/write loop on 3 streams of 2.2 GB:
    494 MB/s in 3 threads, 612 MB/s in 3 processes), so the downloads are spread over as many
    processes as there are cores.
    """
    return max(1, min(jobs, downloads, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------
# The pool


def _dedupe(artifacts: Iterable[Artifact]) -> List[Artifact]:
    seen: Dict[str, Artifact] = {}
    for artifact in artifacts:
        seen.setdefault(artifact.sha256.lower(), artifact)
    return list(seen.values())


def _is_local(artifact: Artifact) -> bool:
    return urlsplit(artifact.url).scheme.lower() == "file"


def fetch(
    artifacts: Iterable[Artifact],
    store: ArtifactStore,
    *,
    jobs: int = DEFAULT_JOBS,
    configured_indexes: Sequence[str] = (),
    offline: bool = False,
    retries: int = 5,
    progress: Optional[Reporter] = None,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: float = DEFAULT_BACKOFF,
    client: Optional[HttpClient] = None,
    processes: Optional[int] = None,
) -> List[FetchedArtifact]:
    """Make every artifact present and verified in `store`; returns them in input order.

    `jobs` bounds the parallel downloads, `retries` the retries per artifact after transient
    failures, `timeout` the seconds a connection may stall. `configured_indexes` are the index
    URLs (possibly with credentials) whose credentials apply to artifact URLs of the same
    origin. `client` lets a caller share its `HttpClient` (its own retries then multiply ours;
    the default client retries nothing itself); downloads then run in threads of this process.
    `processes` is the number of worker processes the `jobs` downloads are spread over
    (default `default_processes`: one per core; 0 or 1 = threads of this process). On failure
    the first error is raised once the in-flight downloads stopped; their partial files stay
    for the next run to resume.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    wanted = _dedupe(artifacts)
    reporter = progress if progress is not None else Reporter()
    cached = [a for a in wanted if store.has(a)]
    cached_shas = {a.sha256.lower() for a in cached}
    missing = [a for a in wanted if a.sha256.lower() not in cached_shas]
    if offline:
        remote = [a for a in missing if not _is_local(a)]
        if remote:
            raise OfflineError(remote)
    reporter.start(
        total_files=len(wanted),
        total_bytes=sum(a.size or 0 for a in wanted),
        cached_files=len(cached),
        cached_bytes=sum(a.size or 0 for a in cached),
    )
    results: Dict[str, FetchedArtifact] = {
        a.sha256.lower(): FetchedArtifact(a, str(store.path_for(a.sha256))) for a in cached
    }
    ok = False
    try:
        if missing:
            config = HttpConfig(
                connect_timeout=min(10.0, timeout),
                read_timeout=timeout,
                max_retries=0,  # fetch retries itself, resuming where it can
                max_idle_per_host=max(jobs, 1),
                user_agent=_USER_AGENT,
            )
            count = default_processes(jobs, len(missing)) if processes is None else processes
            count = min(count, jobs, len(missing))
            workers: Optional[List[_Worker]] = None
            if client is None and count > 1 and sys.executable:
                setup: Dict[str, object] = dict(
                    store=store,
                    config=dataclasses.replace(config, max_idle_per_host=-(-jobs // count)),
                    configured_indexes=tuple(configured_indexes),
                    retries=retries,
                    backoff=backoff,
                )
                workers = _start_processes(setup, jobs, count)
            if workers is not None:
                results.update(_download_all(workers, missing, reporter))
            else:
                own_client = client is None
                http = client or HttpClient(config, configured_indexes=configured_indexes)
                try:
                    downloader = _Downloader(store, client=http, retries=retries, backoff=backoff, reporter=Reporter())
                    thread_worker = _ThreadWorker(downloader, jobs)
                    if not thread_worker.ready(_WORKER_START_TIMEOUT):  # pragma: no cover
                        raise RuntimeError("the download thread did not start")
                    results.update(_download_all([thread_worker], missing, reporter))
                finally:
                    if own_client:
                        http.close()
        ok = True
    finally:
        reporter.finish(ok=ok)
    return [results[a.sha256.lower()] for a in wanted]


def _download_all(
    workers: List[_Worker], missing: Sequence[Artifact], reporter: Reporter
) -> Dict[str, FetchedArtifact]:
    """Hand `missing` to the workers, biggest first, never more at once than their slots.

    The parent owns the reporter: workers send events, applied here in arrival order. On the
    first error nothing more is handed out, every worker is told to cancel, and the error is
    raised once the running downloads stopped (their partial files stay, to resume).
    """
    # Biggest first: the long downloads start early and the small ones fill in around them.
    order = sorted(missing, key=lambda a: -(a.size or 0))
    queue = deque(enumerate(order))
    results: Dict[str, FetchedArtifact] = {}
    errors: List[BaseException] = []
    alive = list(workers)
    by_conn = {w.conn: w for w in workers}

    def fail(error: BaseException) -> None:
        errors.append(error)
        if len(errors) == 1:
            for other in alive:
                other.send(("cancel",))

    try:
        while True:
            if not errors:
                for worker in sorted(alive, key=lambda w: len(w.running) - w.slots):
                    while queue and len(worker.running) < worker.slots:
                        task_id, artifact = queue.popleft()
                        worker.running.add(task_id)
                        worker.send(("task", task_id, artifact))
            busy = [w.conn for w in alive if w.running]
            if not busy:
                break
            for conn in connection_wait(busy):
                worker = by_conn[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):  # the worker died (killed, out of memory...)
                    alive.remove(worker)
                    for task_id in sorted(worker.running):
                        artifact = order[task_id]
                        fail(DownloadError(artifact.url, artifact.filename, worker.describe_exit()))
                    worker.running.clear()
                    continue
                kind, task_id = message[0], message[1]
                artifact = order[task_id]
                if kind == "bytes":
                    reporter.bytes_received(artifact, message[2])
                elif kind == "started":
                    reporter.artifact_started(artifact)
                elif kind == "retry":
                    reporter.artifact_retrying(artifact, message[2], message[3], message[4])
                elif kind == "finished":
                    reporter.artifact_finished(artifact, cached=message[2])
                else:
                    worker.running.discard(task_id)
                    if kind == "done":
                        results[artifact.sha256.lower()] = FetchedArtifact(artifact, message[2])
                    elif kind == "failed":
                        fail(message[2])
        if errors:
            raise errors[0]
        return results
    except BaseException:
        for worker in alive:
            worker.send(("cancel",))
        raise
    finally:
        for worker in workers:
            worker.send(("stop",))
        for worker in workers:
            worker.close(timeout=30.0)
