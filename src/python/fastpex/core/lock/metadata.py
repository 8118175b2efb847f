"""Core metadata of a distribution, without downloading the distribution when at all possible.

A resolver needs a few KB of `METADATA` per candidate, while a wheel can weigh 900 MB. This
module gets those bytes with one explicit, ordered strategy (as uv does), each step ending in a
typed outcome, the first `Found` winning:

  0. the persistent cache (keyed by the artifact's sha256 when known; else by URL + the
     artifact's ETag/Last-Modified/Content-Length from a HEAD request), then the
     content-addressed artifact store (an artifact downloaded earlier is read locally);
  1. ADVERTISED: the index advertises PEP 658/714 metadata -> `<url>.metadata`, verified
     against the advertised hash;
  2. PROBE: `<url>.metadata` even when not advertised (PyPI's file host serves it for many
     files although its index pages don't say so);
  3. RANGE: wheels only: HTTP range reads of the zip's end (EOCD/ZIP64), central directory and
     the `*.dist-info/METADATA` member, inflated under a size cap and CRC-checked;
  4. FULL: a streamed download, sha256-verified and written to the artifact store at
     `cache_dir(ARTIFACTS)/<sha[:2]>/<sha>` so FETCH never downloads it again. sdists get
     their PKG-INFO from here, accepted only when it is reliable (PEP 643).
"""

from __future__ import annotations

import email.parser
import email.policy
import enum
import hashlib
import json
import logging
import os
import struct
import tarfile
import tempfile
import threading
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fastpex.core.util.cache import CacheKind, atomic_file, cache_dir, write_bytes_atomically
from fastpex.core.net.http import HttpClient, HttpConnectionError, HttpError, Response
from fastpex.core.net.index import ProjectFile, dist_name_version, valid_digest
from fastpex.core.store import ArtifactStore
from fastpex.core.util.urls import redact, strip_credentials
from fastpex.core.util.zipmeta import (  # noqa: F401 - re-exported: metadata's range reader API
    MAX_CENTRAL_DIRECTORY_BYTES,
    CentralDirectory,
    ZipEntry,
    ZipFormatError,
    local_data_offset,
    locate_central_directory,
    parse_central_directory,
    parse_central_directory_suffix,
)

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
DEFAULT_TAIL_BYTES = 64 * KiB
DEFAULT_MAX_METADATA_BYTES = 10 * MiB  # larger uncompressed METADATA = decompression bomb
DEFAULT_WORKERS = 16
# PEP 643: only these fields decide a resolution; if an sdist marks any of them Dynamic, its
# PKG-INFO is not authoritative and only building it would tell (which locking refuses to do).
RESOLUTION_FIELDS = frozenset({"requires-dist", "requires-python", "provides-extra"})
_PROBE_GIVE_UP_AFTER = 3  # misses on a host without a single hit -> stop probing it


# -- outcomes and errors -----------------------------------------------------------------------


class MetadataSource(enum.Enum):
    """Where metadata came from; also the name of the strategy step that produced it."""

    CACHE = "cache"
    STORE = "store"  # the artifact was already in the content-addressed store
    LOCAL = "local"  # a file:// artifact (find-links)
    ADVERTISED = "advertised"
    PROBE = "probe"
    RANGE = "range"
    FULL = "full"


@dataclass(frozen=True)
class Found:
    data: bytes
    source: MetadataSource
    artifact_sha256: Optional[str] = None  # learned when the whole artifact was hashed


@dataclass(frozen=True)
class Unavailable:
    """This step cannot help for this file; the next one is tried."""

    source: MetadataSource
    reason: str


Outcome = Union[Found, Unavailable]


@dataclass(frozen=True)
class MetadataResult:
    file: ProjectFile
    data: bytes
    source: MetadataSource
    artifact_sha256: Optional[str] = None

    @property
    def sha256(self) -> str:
        """The sha256 of the metadata bytes (what a PEP 658 `core-metadata` hash is)."""
        return hashlib.sha256(self.data).hexdigest()


class MetadataError(Exception):
    """Base of this module's errors; every message names the (redacted) URL involved."""


class MetadataMismatchError(MetadataError):
    """The `.metadata` file does not have the hash its index advertised."""

    def __init__(self, url: str, algorithm: str, expected: str, actual: str) -> None:
        self.url = redact(url)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the core metadata at `{self.url}` has {algorithm} `{actual}`, but the index "
            f"advertised `{expected}`. The index or a proxy in between serves inconsistent "
            f"data; report it to the index's operators or use another index"
        )


class ArtifactHashMismatchError(MetadataError):
    def __init__(self, url: str, expected: str, actual: str) -> None:
        self.url = redact(url)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"`{self.url}` downloaded with sha256 `{actual}`, but the index says `{expected}`. "
            f"The file changed or was corrupted in transit; nothing was cached. Retry, and if it "
            f"persists report it to the index's operators"
        )


class MetadataInconsistentError(MetadataError):
    """METADATA names a different project or version than the artifact's filename."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = redact(url)
        super().__init__(
            f"the core metadata of `{self.url}` does not match its filename: {problem}. The "
            f"distribution is broken; exclude this version or use another index"
        )


class MetadataTooLargeError(MetadataError):
    """A declared or actual metadata size beyond the cap (a decompression bomb)."""

    def __init__(self, url: str, what: str, size: int, limit: int) -> None:
        self.url = redact(url)
        super().__init__(
            f"refusing to read the core metadata of `{self.url}`: {what} is {size} bytes, over "
            f"the {limit}-byte limit. Such a file is broken or hostile; exclude this version"
        )


class InvalidDistributionError(MetadataError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        super().__init__(
            f"`{self.url}` is not a valid distribution: {reason}. Exclude this version or report "
            f"it to its maintainers"
        )


class SdistMetadataError(MetadataError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        super().__init__(
            f"cannot lock `{self.url}` without building it: {reason}. Building sdists is not "
            f"supported for locking; pin a version that has a wheel for this target, or ask the "
            f"project to publish one"
        )


class MetadataUnavailableError(MetadataError):
    """The network failed for every way of getting the metadata."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        super().__init__(f"could not get the core metadata of `{self.url}`: {reason}")


# -- statistics --------------------------------------------------------------------------------


class MetadataStats:
    """Thread-safe counters: requests by kind, results by source, body bytes received."""

    REQUEST_KINDS = ("head", "advertised", "probe", "range", "full")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Dict[str, int] = {k: 0 for k in self.REQUEST_KINDS}
        self._sources: Dict[str, int] = {s.value: 0 for s in MetadataSource}
        self._bytes = 0

    def request(self, kind: str) -> None:
        with self._lock:
            self._requests[kind] += 1

    def received(self, n: int) -> None:
        with self._lock:
            self._bytes += n

    def result(self, source: MetadataSource) -> None:
        with self._lock:
            self._sources[source.value] += 1

    @property
    def bytes_received(self) -> int:
        with self._lock:
            return self._bytes

    def requests(self, kind: Optional[str] = None) -> int:
        with self._lock:
            return self._requests[kind] if kind else sum(self._requests.values())

    def results(self, source: MetadataSource) -> int:
        with self._lock:
            return self._sources[source.value]

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            return {"requests": dict(self._requests), "results": dict(self._sources), "bytes": self._bytes}


# -- validators, the artifact store and the hash cache (shared with the proxy) -----------------


@dataclass(frozen=True)
class Validators:
    """HTTP validators of an artifact: what says "still the same bytes" without a hash."""

    etag: Optional[str] = None
    last_modified: Optional[str] = None
    content_length: Optional[int] = None

    @classmethod
    def from_response(cls, response: Response) -> "Validators":
        length = response.content_length
        content_range = response.content_range
        if content_range is not None and content_range[2] is not None:
            length = content_range[2]
        return cls(response.header("ETag"), response.header("Last-Modified"), length)

    @property
    def usable(self) -> bool:
        return any(v is not None for v in (self.etag, self.last_modified, self.content_length))

    def key(self, url: str) -> str:
        doc = [strip_credentials(url), self.etag, self.last_modified, self.content_length]
        return hashlib.sha256(json.dumps(doc).encode("utf-8")).hexdigest()


def head_validators(http: HttpClient, url: str) -> Optional[Validators]:
    """Validators from a HEAD request (no body), or None if the server gives none."""
    try:
        response = http.head(url)
    except HttpError:
        return None
    if response.status != 200:
        return None
    validators = Validators.from_response(response)
    return validators if validators.usable else None


def artifact_store_path(sha256: str, cache_root: Optional[Path] = None) -> Path:
    """Where the content-addressed store (`store.ArtifactStore`, shared with FETCH) keeps an
    artifact: `cache_dir(ARTIFACTS)/<sha256[:2]>/<sha256>`."""
    return ArtifactStore(cache_root).path_for(sha256)


def hash_cache_path(url: str, validators: Validators, cache_root: Optional[Path] = None) -> Path:
    key = validators.key(url)
    return cache_dir(CacheKind.HASHES, cache_root) / key[:2] / key


def read_cached_hash(url: str, validators: Validators, cache_root: Optional[Path] = None) -> Optional[str]:
    path = hash_cache_path(url, validators, cache_root)
    try:
        value = path.read_text("ascii").strip()
    except OSError:
        return None
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    path.unlink(missing_ok=True)  # garbage: never trust it
    return None


def write_cached_hash(url: str, validators: Validators, sha256: str, cache_root: Optional[Path] = None) -> None:
    write_bytes_atomically(hash_cache_path(url, validators, cache_root), sha256.encode("ascii"))


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    path: Path
    size: int
    validators: Validators


def download_to_store(
    http: HttpClient,
    url: str,
    expected_sha256: Optional[str],
    cache_root: Optional[Path] = None,
    *,
    response: Optional[Response] = None,
    on_bytes: Optional[Callable[[int], None]] = None,
) -> StoredArtifact:
    """Stream `url` (or the already-open 200 `response`) into the artifact store.

    The bytes go to a temp file while being hashed; on a hash mismatch nothing is kept. The
    final name is the sha256, so a second download of the same content is never needed.
    """
    if response is None:
        response = http.get(url, stream=True)
    if response.status != 200:
        response.close()
        raise MetadataUnavailableError(url, f"downloading it answered HTTP {response.status}")
    validators = Validators.from_response(response)
    store_root = cache_dir(CacheKind.ARTIFACTS, cache_root)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".tmp", dir=store_root)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_chunks():
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        actual = digest.hexdigest()
        if expected_sha256 and actual != expected_sha256.lower():
            raise ArtifactHashMismatchError(url, expected_sha256.lower(), actual)
        final = artifact_store_path(actual, cache_root)
        atomic_file(final, lambda target: os.replace(tmp, target))
        if validators.usable:
            write_cached_hash(url, validators, actual, cache_root)
        return StoredArtifact(actual, final, size, validators)
    finally:
        tmp.unlink(missing_ok=True)


# -- metadata checks ---------------------------------------------------------------------------


def _headers(data: bytes) -> "email.message.Message":
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)


def name_version_problem(data: bytes, filename: str) -> Optional[str]:
    """Why `data` can't be the metadata of `filename` (Name/Version disagree), else None."""
    try:
        msg = _headers(data)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not metadata"
        return f"it does not parse as core metadata ({e})"
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return "it has no `Name` or `Version` field"
    expected = dist_name_version(filename)
    if expected is None:
        return None
    if canonicalize_name(str(name).strip()) != expected[0]:
        return f"it is for project `{str(name).strip()}`, not `{expected[0]}`"
    if expected[1] is not None:
        try:
            if Version(str(version).strip()) != expected[1]:
                return f"it is for version `{str(version).strip()}`, not `{expected[1]}`"
        except InvalidVersion:
            return f"its version `{str(version).strip()}` is not a valid version"
    return None


def check_sdist_metadata(data: bytes, url: str) -> None:
    """PEP 643: PKG-INFO is authoritative only with Metadata-Version >= 2.2 and no Dynamic
    field among those a resolver uses."""
    msg = _headers(data)
    raw_version = str(msg.get("Metadata-Version") or "").strip()
    try:
        metadata_version = Version(raw_version)
    except InvalidVersion:
        metadata_version = Version("0")
    if metadata_version < Version("2.2"):
        raise SdistMetadataError(
            url, f"its PKG-INFO has Metadata-Version `{raw_version or 'none'}` (< 2.2), so its dependencies may only be known after a build"
        )
    dynamic = {str(v).strip().lower() for v in (msg.get_all("Dynamic") or [])}
    relevant = sorted(dynamic & RESOLUTION_FIELDS)
    if relevant:
        raise SdistMetadataError(url, f"its PKG-INFO marks {', '.join(relevant)} as Dynamic")


def _verify_advertised(data: bytes, advertised: Mapping[str, str], url: str) -> None:
    for algorithm in ("sha256", "sha384", "sha512", *sorted(advertised)):
        expected = advertised.get(algorithm)
        if not expected or algorithm not in hashlib.algorithms_guaranteed:
            continue
        actual = hashlib.new(algorithm, data).hexdigest()
        if actual != expected.lower():
            raise MetadataMismatchError(url, algorithm, expected.lower(), actual)
        return


# -- zip member reading (the zip structures are parsed by `zipmeta`) -------------------------


def select_metadata_entry(names: Iterable[str], wheel_filename: str) -> Optional[str]:
    """The `<name>-<version>.dist-info/METADATA` member belonging to this wheel."""
    parsed = dist_name_version(wheel_filename)
    wanted = parsed[0] if parsed else None
    candidates = []
    for name in names:
        parts = name.split("/")
        if len(parts) != 2 or parts[1] != "METADATA" or not parts[0].endswith(".dist-info"):
            continue
        project, _, _ = parts[0][: -len(".dist-info")].rpartition("-")
        if wanted is None or canonicalize_name(project) == wanted:
            candidates.append(name)
    return candidates[0] if len(candidates) == 1 else None


def inflate_member(entry: ZipEntry, compressed: bytes, limit: int, url: str) -> bytes:
    """Decompress one member with a hard output cap, then check size and CRC."""
    if entry.flags & 0x1:
        raise ZipFormatError(f"`{entry.name}` is encrypted")
    if entry.method == zipfile.ZIP_STORED:
        data = compressed
    elif entry.method == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(compressed, limit + 1)
        except zlib.error as e:
            raise ZipFormatError(f"`{entry.name}` does not inflate ({e})") from e
        if len(data) > limit or (inflater.unconsumed_tail and len(data) >= limit):
            raise MetadataTooLargeError(url, f"`{entry.name}` inflated", len(data), limit)
    else:
        raise ZipFormatError(f"`{entry.name}` uses unsupported compression method {entry.method}")
    if len(data) != entry.uncompressed_size:
        raise ZipFormatError(
            f"`{entry.name}` inflated to {len(data)} bytes, not the declared {entry.uncompressed_size}"
        )
    if zlib.crc32(data) & 0xFFFFFFFF != entry.crc:
        raise ZipFormatError(f"`{entry.name}` fails its CRC check")
    return data


# -- local artifacts ---------------------------------------------------------------------------


# What `zipfile` raises on a malformed or hostile archive (encrypted members: RuntimeError;
# unknown methods: NotImplementedError; bad lengths: ValueError; bad deflate data: zlib.error).
_ZIP_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def wheel_metadata_from_file(path: Path, filename: str, url: str, limit: int = DEFAULT_MAX_METADATA_BYTES) -> bytes:
    """METADATA of a wheel on disk, with the same size cap as the remote path."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = select_metadata_entry(zf.namelist(), filename)
            if member is None:
                raise InvalidDistributionError(url, "it has no single `<name>-<version>.dist-info/METADATA`")
            info = zf.getinfo(member)
            if info.file_size > limit:
                raise MetadataTooLargeError(url, f"`{member}` (declared)", info.file_size, limit)
            with zf.open(info) as fp:
                data = fp.read(limit + 1)
            if len(data) > limit:
                raise MetadataTooLargeError(url, f"`{member}`", len(data), limit)
            if len(data) != info.file_size:  # zipfile trusts the directory's size; we don't
                raise InvalidDistributionError(
                    url, f"its zip directory says `{member}` has {info.file_size} bytes, but it has {len(data)}"
                )
            return data
    except _ZIP_READ_ERRORS as e:
        raise InvalidDistributionError(url, f"it is not a readable zip ({e})") from e


def sdist_pkg_info_from_file(path: Path, filename: str, url: str, limit: int = DEFAULT_MAX_METADATA_BYTES) -> bytes:
    """The top-level `PKG-INFO` of an sdist (.tar.gz/.zip/...), size-capped."""
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.strip("/").count("/") == 1 and n.endswith("/PKG-INFO")]
                if not names:
                    raise InvalidDistributionError(url, "it has no top-level PKG-INFO")
                info = zf.getinfo(sorted(names, key=len)[0])
                if info.file_size > limit:
                    raise MetadataTooLargeError(url, "PKG-INFO (declared)", info.file_size, limit)
                with zf.open(info) as fp:
                    data = fp.read(limit + 1)
        else:
            with tarfile.open(path, "r:*") as tf:
                data = b""
                for member in tf:
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    if name.count("/") == 1 and name.endswith("/PKG-INFO") and member.isfile():
                        if member.size > limit:
                            raise MetadataTooLargeError(url, "PKG-INFO (declared)", member.size, limit)
                        fp = tf.extractfile(member)
                        data = fp.read(limit + 1) if fp is not None else b""
                        break
                else:
                    raise InvalidDistributionError(url, "it has no top-level PKG-INFO")
    except (tarfile.TarError,) + _ZIP_READ_ERRORS as e:
        raise InvalidDistributionError(url, f"it is not a readable archive ({e})") from e
    if len(data) > limit:
        raise MetadataTooLargeError(url, "PKG-INFO", len(data), limit)
    return data


def metadata_from_artifact(path: Path, file: ProjectFile, limit: int = DEFAULT_MAX_METADATA_BYTES) -> bytes:
    if file.is_wheel:
        return wheel_metadata_from_file(path, file.filename, file.url, limit)
    if file.is_sdist:
        data = sdist_pkg_info_from_file(path, file.filename, file.url, limit)
        check_sdist_metadata(data, file.url)
        return data
    raise InvalidDistributionError(file.url, "it is neither a wheel nor an sdist")


# -- the fetcher -------------------------------------------------------------------------------


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

    def _get(self, kind: str, url: str, **kwargs: object) -> Response:
        self.stats.request(kind)
        try:
            response = self.http.get(url, **kwargs)  # type: ignore[arg-type]
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
            _verify_advertised(data, file.core_metadata, file.metadata_url)
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


__all__ = [
    "DEFAULT_MAX_METADATA_BYTES",
    "DEFAULT_TAIL_BYTES",
    "ArtifactHashMismatchError",
    "Found",
    "InvalidDistributionError",
    "MetadataError",
    "MetadataFetcher",
    "MetadataInconsistentError",
    "MetadataMismatchError",
    "MetadataResult",
    "MetadataSource",
    "MetadataStats",
    "MetadataTooLargeError",
    "MetadataUnavailableError",
    "Outcome",
    "SdistMetadataError",
    "StoredArtifact",
    "Unavailable",
    "Validators",
    "artifact_store_path",
    "download_to_store",
    "head_validators",
    "metadata_from_artifact",
    "name_version_problem",
    "read_cached_hash",
    "write_cached_hash",
]
