"""One artifact, downloaded into the store: HTTP, retries, resume, the partial file.

Every download streams into `<store>/partial/<sha256>.part` while hashing, and only a file whose
sha256 and size match the lock is renamed into the store. Transient failures (5xx, reset,
timeout, truncated body, wrong Content-Length) are retried with the shared backoff
(`net/retry.py`), resuming with `Range` where the server allows it; a hash mismatch is not
transient and fails at once. A proxy that refuses connections gets one retry per downloader in
all, not per artifact: the first artifact to give up cancels the rest (`ArtifactDownloader._may_retry`).

Why the body loop looks the way it does: on a fast link fetching is CPU-bound. Decrypting,
hashing and writing cost ~2 CPU-seconds per GB even when done well; reading one ~16 KiB TLS
record per Python iteration and writing through the page cache cost ~3.3 CPU-s/GB. So each
read fills a 1 MiB buffer in C (`Response.readinto`), which is hashed in place and written with
O_DIRECT where the filesystem allows it (`PartialWriter`).

The transport is the shared keep-alive `HttpClient` with its own retries off: retrying here
lets a retry resume from the partial file instead of starting over.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import threading
import time
from pathlib import Path
from typing import Dict, Mapping, Optional
from urllib.parse import unquote, urlsplit

from fastpex.core.errors import HashMismatchError
from fastpex.core.fetch.errors import DownloadError, download_mismatch, proxy_failure
from fastpex.core.fetch.progress import Reporter
from fastpex.core.model import Artifact, FetchedArtifact
from fastpex.core.net.hints import status_hint
from fastpex.core.net.errors import HttpConnectionError, ProxyError, TooManyRedirectsError
from fastpex.core.net.http import HttpClient
from fastpex.core.net.response import Response
from fastpex.core.net.retry import (
    REFUSED_PROXY_RETRIES,
    TRANSIENT_STATUSES,
    Backoff,
    connection_refused,
    parse_retry_after,
)
from fastpex.core.store import ArtifactStore, PartialInfo
from fastpex.core.util.hashing import hash_file
from fastpex.core.util.urls import strip_credentials

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_TIMEOUT",
    "MAX_BACKOFF",
    "MAX_READ",
    "ArtifactDownloader",
    "Cancelled",
    "PartialWriter",
]

DEFAULT_TIMEOUT = 30.0  # seconds without a byte before a connection counts as stalled
DEFAULT_BACKOFF = 0.5  # first retry delay (s); doubles per attempt, with jitter
MAX_BACKOFF = 30.0
# Body reads: one call fills up to MAX_READ bytes; the size adapts to the link (see _stream).
_MIN_READ = 16 * 1024
_START_READ = 64 * 1024
MAX_READ = 1024 * 1024
_DIRECT_ALIGN = 4096
# FASTPEX_FETCH_DIRECT_IO=0 writes through the page cache (e.g. to compare, or for a filesystem
# whose O_DIRECT is slow).
USE_DIRECT_IO = os.environ.get("FASTPEX_FETCH_DIRECT_IO", "1") != "0"


class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(
        self, reason: str, retry_after: Optional[float] = None, *, hint: str = "", refused_by: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.hint = hint  # what to do when the retries run out ("" for DownloadError's default)
        self.refused_by = refused_by  # the proxy (redacted) that refused the connection, if one did


class Cancelled(Exception):
    """Another download failed; stop this one at the next chunk (its partial is kept)."""


def _mismatch(artifact: Artifact, actual: Optional[str], actual_size: Optional[int]) -> HashMismatchError:
    """The store's refusal of a download, as the fetch error that names the URL."""
    return download_mismatch(
        artifact.url,
        artifact.filename,
        artifact.sha256,
        actual or "unknown",
        expected_size=artifact.size,
        actual_size=actual_size,
    )


def _download_hint(status: int) -> str:
    return status_hint(status, gone="The file is gone from the index: regenerate the lock")


def _star_total(value: Optional[str]) -> Optional[int]:
    """The complete length of `bytes */1234` (a 416's Content-Range)."""
    if value and "/" in value:
        total = value.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    return None


class PartialWriter:
    """Appends to a partial download, bypassing the page cache (O_DIRECT) where it can.

    Measured on this project's 2-core machine, 3.4 GB through the page cache cost 4.0-4.4
    CPU-seconds machine-wide (copies, then the kernel's writeback), with O_DIRECT 0.8-2.0 s:
    on a machine that also decrypts and hashes every byte that is the difference between
    filling the link and not. O_DIRECT needs aligned offsets and lengths, so it is used only
    from offset 0 (or an aligned resume point), for whole `MAX_READ` buffers; the last,
    short write and any filesystem that refuses O_DIRECT (tmpfs, some FUSE, macOS has none)
    go through the page cache. `commit_partial` fsyncs either way.
    """

    def __init__(self, part: Path, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self.closed = False
        self.direct = False
        direct_flag = getattr(os, "O_DIRECT", 0)
        offset = part.stat().st_size if append and part.exists() else 0
        if direct_flag and USE_DIRECT_IO and offset % _DIRECT_ALIGN == 0:
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


class ArtifactDownloader:
    """Downloads artifacts into `store` one at a time per thread; `cancelled` stops them all."""

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
        self.backoff = Backoff(initial=backoff, maximum=MAX_BACKOFF, jitter=(0.5, 1.0))
        self.reporter = reporter
        self.cancelled = threading.Event()
        self.client = client
        self._on_disk: Dict[str, int] = {}  # bytes reported to the reporter, per artifact
        # Connections refused by each proxy, counted over every artifact of this downloader.
        self._proxy_refusals: Dict[str, int] = {}
        self._refusals_lock = threading.Lock()

    def _may_retry(self, error: "_Transient", attempt: int) -> bool:
        """Whether to try again after `attempt` attempts failed with `error`.

        A proxy that refuses connections fails every artifact alike, so its refusals share one
        budget (`REFUSED_PROXY_RETRIES` in all, not per artifact): after that a refusal fails
        its artifact at once, which cancels the others (`fetch_one`), instead of each one
        retrying on its own with backoff."""
        if attempt > self.retries:
            return False
        if not error.refused_by:
            return True
        with self._refusals_lock:
            refusals = self._proxy_refusals.get(error.refused_by, 0) + 1
            self._proxy_refusals[error.refused_by] = refusals
        return refusals <= REFUSED_PROXY_RETRIES

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
        except Cancelled:
            raise
        except BaseException:
            self.cancelled.set()
            raise

    def _fetch_one(self, artifact: Artifact) -> FetchedArtifact:
        if self.cancelled.is_set():
            raise Cancelled()
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
                    raise Cancelled()
                try:
                    path = self._attempt(artifact)
                    break
                except _Transient as e:
                    attempt += 1
                    if not self._may_retry(e, attempt):
                        raise DownloadError(
                            artifact.url, artifact.filename, e.reason, attempts=attempt, hint=e.hint
                        ) from None
                    delay = self.backoff.delay(attempt - 1, e.retry_after)
                    self.reporter.artifact_retrying(artifact, attempt + 1, e.reason, delay)
                    if self.cancelled.wait(delay):
                        raise Cancelled() from None
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
        except HashMismatchError as e:
            raise _mismatch(artifact, e.actual, source.stat().st_size) from None
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
        except ProxyError as e:  # the proxy, not the index, failed: say which one
            reason, hint = proxy_failure(e)
            refused_by = e.proxy if e.keeps_exit_code_when_wrapped and connection_refused(e) else ""
            raise _Transient(reason, hint=hint, refused_by=refused_by) from None
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
            if status in TRANSIENT_STATUSES or 500 <= status < 600:
                raise _Transient(f"HTTP {status} {response.reason}", parse_retry_after(response.header("Retry-After")))
            if status not in (200, 206):
                raise DownloadError(
                    artifact.url,
                    artifact.filename,
                    f"HTTP {status} {response.reason}",
                    hint=_download_hint(status),
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
        read size adapts between `_MIN_READ` and `MAX_READ`, so a slow link still reports
        progress and notices cancellation every ~50 ms. The file is written with O_DIRECT
        where the filesystem allows it (see `PartialWriter`).
        """
        written = 0
        on_disk = self._on_disk.get(artifact.sha256, 0)
        limit = artifact.size
        buf = mmap.mmap(-1, MAX_READ)  # page-aligned, as O_DIRECT wants
        view = memoryview(buf)
        fill = 0  # bytes in the buffer, not yet written
        want = _START_READ
        writer = PartialWriter(part, append=append)
        try:
            while True:
                if self.cancelled.is_set():
                    raise Cancelled()
                started = time.monotonic()
                n = response.readinto(view[fill : fill + min(want, MAX_READ - fill)])
                if not n:
                    break
                hasher.update(view[fill : fill + n])
                fill += n
                if fill == MAX_READ:
                    writer.write(view)
                    fill = 0
                written += n
                on_disk += n
                self._progress_to(artifact, on_disk)
                if limit is not None and on_disk > limit:
                    writer.close()
                    self.store.discard_partial(artifact.sha256)
                    raise download_mismatch(
                        artifact.url,
                        artifact.filename,
                        artifact.sha256,
                        "unknown (the server sent more bytes than the lock's size)",
                        expected_size=artifact.size,
                    )
                elapsed = time.monotonic() - started
                if elapsed < 0.025 and want < MAX_READ:
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
            raise _mismatch(artifact, actual, actual_size)
        actual_size = self.store.partial_path(artifact.sha256).stat().st_size
        try:
            return self.store.commit_partial(artifact, actual)
        except HashMismatchError:  # size disagreed
            raise _mismatch(artifact, actual, actual_size) from None

