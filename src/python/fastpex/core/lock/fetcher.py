"""The metadata fetcher: one ordered strategy per file, each step a typed outcome (see
`metadata`'s docstring for the steps), cached, deduplicated and run in parallel.

Split from `metadata` (what core metadata is and how it is checked and read from an artifact)
because this is the part that talks HTTP: HEAD validators, `.metadata` requests, zip range
reads and the last-resort download into the artifact store (`metadata_store`).
"""

from __future__ import annotations

import logging
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from fastpex.core.lock.metadata import (
    DEFAULT_MAX_METADATA_BYTES,
    DEFAULT_TAIL_BYTES,
    DEFAULT_WORKERS,
    Found,
    InvalidDistributionError,
    MetadataInconsistentError,
    MetadataResult,
    MetadataSource,
    MetadataStats,
    MetadataTooLargeError,
    MetadataUnavailableError,
    Outcome,
    Unavailable,
    inflate_member,
    metadata_from_artifact,
    name_version_problem,
    select_metadata_entry,
    verify_advertised,
)
from fastpex.core.lock.metadata_store import (
    Validators,
    artifact_store_path,
    download_to_store,
    head_validators,
)
from fastpex.core.net.errors import HttpConnectionError, HttpError
from fastpex.core.net.http import HttpClient
from fastpex.core.net.index import ProjectFile, valid_digest
from fastpex.core.net.response import RangeSpec, Response
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically
from fastpex.core.util.urls import redact
from fastpex.core.util.zipmeta import (
    MAX_CENTRAL_DIRECTORY_BYTES,
    ZipEntry,
    ZipFormatError,
    local_data_offset,
    locate_central_directory,
    parse_central_directory,
    parse_central_directory_suffix,
)

__all__ = ["MetadataFetcher"]

logger = logging.getLogger("fastpex.core.lock.metadata")

_PROBE_GIVE_UP_AFTER = 3  # misses on a host without a single hit -> stop probing it


class _RemoteZip:
    """Byte ranges of one remote file, remembering what was already fetched."""

    def __init__(self, fetcher: "MetadataFetcher", url: str, size: int, segments: List[Tuple[int, bytes]]) -> None:
        self._fetcher = fetcher
        self.url = url
        self.size = size
        self._segments = segments

    def read(self, start: int, end: int) -> bytes:
        start, end = max(0, start), min(end, self.size)
        if end <= start:
            return b""
        for seg_start, data in self._segments:
            if seg_start <= start and end <= seg_start + len(data):
                return data[start - seg_start : end - seg_start]
        # Fetch only the part not already held when the request overlaps a held segment's start.
        for seg_start, data in self._segments:
            if start < seg_start < end <= seg_start + len(data):
                head = self._fetch(start, seg_start)
                return head + data[: end - seg_start]
        return self._fetch(start, end)

    def _fetch(self, start: int, end: int) -> bytes:
        data = self._fetcher._range_request(self.url, start, end - 1, self.size)  # noqa: SLF001
        self._segments.append((start, data))
        return data


class _RangeIgnored(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("the server ignored the Range header")
        self.response = response


class MetadataFetcher:
    """Gets core metadata for `ProjectFile`s: cached, deduplicated and parallel.

    `get` blocks; `prefetch` schedules on a thread pool and returns futures. Concurrent requests
    for the same file share one fetch.
    """

    def __init__(
        self,
        http: HttpClient,
        cache_root: Optional[Path] = None,
        *,
        workers: int = DEFAULT_WORKERS,
        tail_bytes: int = DEFAULT_TAIL_BYTES,
        max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
        probe: bool = True,
    ) -> None:
        self.http = http
        self.cache_root = cache_root
        self.workers = workers
        self.tail_bytes = tail_bytes
        self.max_metadata_bytes = max_metadata_bytes
        self.probe = probe
        self.stats = MetadataStats()
        self._lock = threading.Lock()
        self._futures: Dict[Tuple[str, Optional[str]], "Future[MetadataResult]"] = {}
        self._executor: Optional[ThreadPoolExecutor] = None
        self._probe_hosts: Dict[str, Tuple[int, int]] = {}  # host -> (hits, misses)

    # -- public API --------------------------------------------------------------------------
    def get(self, file: ProjectFile) -> bytes:
        return self.fetch(file).data

    def fetch(self, file: ProjectFile) -> MetadataResult:
        future, owner = self._claim(file)
        if owner:
            self._run(file, future)
        return future.result()

    def prefetch(self, files: Iterable[ProjectFile]) -> List["Future[MetadataResult]"]:
        futures = []
        for file in files:
            future, owner = self._claim(file)
            if owner:
                self._pool().submit(self._run, file, future)
            futures.append(future)
        return futures

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "MetadataFetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling --------------------------------------------------------------------------
    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fastpex-metadata")
            return self._executor

    def _claim(self, file: ProjectFile) -> Tuple["Future[MetadataResult]", bool]:
        key = (file.url, file.sha256)
        with self._lock:
            existing = self._futures.get(key)
            if existing is not None:
                return existing, False
            future: "Future[MetadataResult]" = Future()
            future.set_running_or_notify_cancel()
            self._futures[key] = future
            return future, True

    def _run(self, file: ProjectFile, future: "Future[MetadataResult]") -> None:
        try:
            result = self._resolve(file)
        except BaseException as e:  # noqa: BLE001 - handed to every waiter
            with self._lock:
                self._futures.pop((file.url, file.sha256), None)  # a later call may retry
            future.set_exception(e)
            return
        self.stats.result(result.source)
        future.set_result(result)

    # -- the strategy ------------------------------------------------------------------------
    def _resolve(self, file: ProjectFile) -> MetadataResult:
        if urlsplit(file.url).scheme == "file":
            path = Path(unquote(urlsplit(file.url).path))
            data = metadata_from_artifact(path, file, self.max_metadata_bytes)
            self._check(data, file)
            return MetadataResult(file, data, MetadataSource.LOCAL, file.sha256)

        sha = file.sha256
        validators = None if sha else self._head(file)
        cached = self._cache_read(file, sha, validators)
        if cached is not None:
            return MetadataResult(file, cached, MetadataSource.CACHE, sha)
        if sha and valid_digest("sha256", sha) and artifact_store_path(sha, self.cache_root).is_file():
            data = metadata_from_artifact(artifact_store_path(sha, self.cache_root), file, self.max_metadata_bytes)
            found: Outcome = Found(data, MetadataSource.STORE, sha)
        else:
            found = self._run_strategy(file)
        assert isinstance(found, Found)
        self._check(found.data, file)
        self._cache_write(file, found.data, sha or found.artifact_sha256, validators)
        return MetadataResult(file, found.data, found.source, sha or found.artifact_sha256)

    def _run_strategy(self, file: ProjectFile) -> Found:
        steps: Sequence[Tuple[MetadataSource, Callable[[ProjectFile], Outcome]]] = (
            (MetadataSource.ADVERTISED, self._via_advertised),
            (MetadataSource.PROBE, self._via_probe),
            (MetadataSource.RANGE, self._via_range),
            (MetadataSource.FULL, self._via_full_download),
        )
        for _source, step in steps:
            outcome = step(file)
            if isinstance(outcome, Found):
                return outcome
            logger.debug("%s: %s step skipped: %s", redact(file.url), outcome.source.value, outcome.reason)
        raise AssertionError("the full-download step always decides")  # pragma: no cover

    def _check(self, data: bytes, file: ProjectFile) -> None:
        problem = name_version_problem(data, file.filename)
        if problem is not None:
            raise MetadataInconsistentError(file.url, problem)

    def _get(
        self,
        kind: str,
        url: str,
        *,
        range: Optional[RangeSpec] = None,  # noqa: A002 - the HTTP name
        stream: bool = False,
        max_bytes: Optional[int] = None,
    ) -> Response:
        self.stats.request(kind)
        try:
            response = self.http.get(url, range=range, stream=stream, max_bytes=max_bytes)
        except HttpError as e:
            raise MetadataUnavailableError(url, str(e)) from e
        self.stats.received(response.bytes_received)  # bodies already read (errors, documents)
        return response

    def _read(self, response: Response, limit: int) -> bytes:
        before = response.bytes_received
        try:
            data = response.read(limit)
        except HttpError as e:
            raise MetadataUnavailableError(response.url, str(e)) from e
        finally:
            self.stats.received(response.bytes_received - before)
        return data

    def _head(self, file: ProjectFile) -> Optional[Validators]:
        self.stats.request("head")
        return head_validators(self.http, file.url)

    def _via_advertised(self, file: ProjectFile) -> Outcome:
        source = MetadataSource.ADVERTISED
        if file.core_metadata is None or file.core_metadata is False:
            return Unavailable(source, "the index does not advertise core metadata")
        response = self._get("advertised", file.metadata_url, max_bytes=self.max_metadata_bytes)
        if response.status != 200:
            response.close()
            logger.warning(
                "the index advertises core metadata for `%s` but `%s` answered HTTP %d; reading the wheel instead",
                file.filename,
                redact(file.metadata_url),
                response.status,
            )
            return Unavailable(source, f"HTTP {response.status}")
        data = self._read(response, self.max_metadata_bytes)
        if isinstance(file.core_metadata, Mapping):
            verify_advertised(data, file.core_metadata, file.metadata_url)
        return Found(data, source)

    def _via_probe(self, file: ProjectFile) -> Outcome:
        source = MetadataSource.PROBE
        if not self.probe:
            return Unavailable(source, "probing is disabled")
        if file.core_metadata not in (None, False):
            return Unavailable(source, "already tried as advertised")
        host = urlsplit(file.url).netloc
        with self._lock:
            hits, misses = self._probe_hosts.get(host, (0, 0))
        if hits == 0 and misses >= _PROBE_GIVE_UP_AFTER:
            return Unavailable(source, "this host serves no `.metadata` files")
        response = self._get("probe", file.metadata_url, max_bytes=self.max_metadata_bytes)
        data = self._read(response, self.max_metadata_bytes) if response.status == 200 else b""
        if response.status != 200:
            response.close()
        problem = None if response.status == 200 else f"HTTP {response.status}"
        if problem is None:
            problem = name_version_problem(data, file.filename)  # a catch-all 200 page is no hit
        with self._lock:
            hits, misses = self._probe_hosts.get(host, (0, 0))
            self._probe_hosts[host] = (hits + 1, misses) if problem is None else (hits, misses + 1)
        if problem is not None:
            return Unavailable(source, problem)
        return Found(data, source)

    def _range_request(self, url: str, first: int, last: int, size: Optional[int]) -> bytes:
        """Bytes [first, last] of `url`; raises `_RangeIgnored` if the server sends it all."""
        response = self._get("range", url, range=(first, last), stream=True)
        if response.status == 200:
            raise _RangeIgnored(response)
        if response.status != 206:
            response.close()
            raise MetadataUnavailableError(url, f"a range request answered HTTP {response.status}")
        content_range = response.content_range
        expected_len = last - first + 1
        data = self._read(response, max(expected_len, 0) + 1)
        if content_range is None or content_range[0] != first or len(data) != content_range[1] - first + 1:
            raise ZipFormatError("the server answered a range request with a different range")
        if size is not None and content_range[2] is not None and content_range[2] != size:
            raise ZipFormatError("the file changed size between range requests")
        return data

    def _via_range(self, file: ProjectFile) -> Outcome:
        source = MetadataSource.RANGE
        if not file.is_wheel:
            return Unavailable(source, "only wheels are zip files with a METADATA member")
        # A suffix range gets the EOCD without knowing the size; the reply says the size.
        response = self._get("range", file.url, range=-self.tail_bytes, stream=True)
        if response.status == 200:
            return self._via_full_download(file, response)
        if response.status == 416:
            response.close()
            return Unavailable(source, "the server could not satisfy a suffix range")
        if response.status != 206:
            response.close()
            raise MetadataUnavailableError(file.url, f"it answered HTTP {response.status}")
        content_range = response.content_range
        tail = self._read(response, self.tail_bytes + 1)
        if content_range is None or content_range[2] is None or len(tail) != content_range[1] - content_range[0] + 1:
            return Unavailable(source, "the server's range reply has no usable Content-Range")
        size = content_range[2]
        remote = _RemoteZip(self, file.url, size, [(content_range[0], tail)])
        try:
            return Found(self._metadata_by_ranges(file, remote, tail, content_range[0]), source)
        except _RangeIgnored as e:
            return self._via_full_download(file, e.response)
        except (ZipFormatError, struct.error, UnicodeDecodeError, IndexError) as e:
            logger.warning("reading `%s` by ranges failed (%s); downloading it whole", redact(file.url), e)
            return Unavailable(source, str(e))

    def _metadata_by_ranges(self, file: ProjectFile, remote: _RemoteZip, tail: bytes, tail_offset: int) -> bytes:
        cd = locate_central_directory(tail, tail_offset, remote.read)
        if cd.size > MAX_CENTRAL_DIRECTORY_BYTES:
            raise MetadataTooLargeError(file.url, "the zip central directory", cd.size, MAX_CENTRAL_DIRECTORY_BYTES)
        cd_end = cd.offset + cd.size
        entries: List[ZipEntry] = []
        if cd.offset < tail_offset < cd_end:
            # Only the directory's end is held: wheels list `.dist-info/` last, so try that first.
            entries = parse_central_directory_suffix(tail[: cd_end - tail_offset], cd.prefix)
        member = select_metadata_entry((e.name for e in entries), file.filename)
        if member is None:
            entries = parse_central_directory(remote.read(cd.offset, cd_end), cd.prefix)
            member = select_metadata_entry((e.name for e in entries), file.filename)
        if member is None:
            raise InvalidDistributionError(file.url, "it has no single `<name>-<version>.dist-info/METADATA`")
        entry = next(e for e in entries if e.name == member)
        limit = self.max_metadata_bytes
        if entry.uncompressed_size > limit:
            raise MetadataTooLargeError(file.url, f"`{member}` (declared)", entry.uncompressed_size, limit)
        if entry.compressed_size > limit:
            raise MetadataTooLargeError(file.url, f"`{member}` (compressed)", entry.compressed_size, limit)
        guess_end = entry.local_header_offset + 30 + len(member.encode("utf-8")) + 64 + entry.compressed_size
        header = remote.read(entry.local_header_offset, min(guess_end, remote.size))
        start = local_data_offset(header, entry)
        if start + entry.compressed_size > len(header):
            header += remote.read(entry.local_header_offset + len(header), entry.local_header_offset + start + entry.compressed_size)
        compressed = header[start : start + entry.compressed_size]
        return inflate_member(entry, compressed, limit, file.url)

    def _via_full_download(self, file: ProjectFile, response: Optional[Response] = None) -> Outcome:
        """The last resort: the whole artifact, straight into the artifact store."""
        if response is None:  # else: a range request was answered with the whole file
            response = self._get("full", file.url, stream=True)
        attempts = self.http.config.max_retries + 1
        for attempt in range(attempts):
            try:
                stored = download_to_store(
                    self.http, file.url, file.sha256, self.cache_root, response=response, on_bytes=self.stats.received
                )
                break
            except HttpConnectionError as e:
                if attempt + 1 >= attempts:
                    raise MetadataUnavailableError(file.url, f"the download kept failing ({e})") from e
                logger.debug("download of %s broke (%s); restarting", redact(file.url), e)
                response = self._get("full", file.url, stream=True)
        data = metadata_from_artifact(stored.path, file, self.max_metadata_bytes)
        return Found(data, MetadataSource.FULL, stored.sha256)

    # -- persistent cache --------------------------------------------------------------------
    def _cache_paths(self, file: ProjectFile, sha: Optional[str], validators: Optional[Validators]) -> List[Path]:
        root = cache_dir(CacheKind.METADATA, self.cache_root)
        paths = []
        if sha and valid_digest("sha256", sha):  # index text: never a path (`../../x`)
            paths.append(root / "sha256" / sha[:2] / sha)
        if validators is not None:
            key = validators.key(file.url)
            paths.append(root / "url" / key[:2] / key)
        return paths

    def _cache_read(self, file: ProjectFile, sha: Optional[str], validators: Optional[Validators]) -> Optional[bytes]:
        for path in self._cache_paths(file, sha, validators):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if name_version_problem(data, file.filename) is None:
                return data
            logger.warning("evicting a cached metadata entry for `%s` that does not match it", file.filename)
            path.unlink(missing_ok=True)
        return None

    def _cache_write(self, file: ProjectFile, data: bytes, sha: Optional[str], validators: Optional[Validators]) -> None:
        for path in self._cache_paths(file, sha, validators):
            write_bytes_atomically(path, data)
