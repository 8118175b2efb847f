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

This module holds what that strategy produces and checks: outcomes, errors, the metadata
checks and reading metadata out of an artifact on disk. The strategy itself (the HTTP side)
is `fetcher.MetadataFetcher`; the artifact store and hash cache are `metadata_store`.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import enum
import hashlib
import tarfile
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fastpex.core.errors import HashMismatchError, OperationalError
from fastpex.core.lock.parsed import requirement
from fastpex.core.net.index import ProjectFile
from fastpex.core.util.filenames import dist_name_version
from fastpex.core.util.urls import redact
from fastpex.core.util.zipmeta import ZipEntry, ZipFormatError

if TYPE_CHECKING:
    from packaging.requirements import Requirement

KiB = 1024
MiB = 1024 * KiB
DEFAULT_TAIL_BYTES = 64 * KiB
DEFAULT_MAX_METADATA_BYTES = 10 * MiB  # larger uncompressed METADATA = decompression bomb
DEFAULT_WORKERS = 16
# PEP 643: only these fields decide a resolution; if an sdist marks any of them Dynamic, its
# PKG-INFO is not authoritative and only building it would tell (which locking refuses to do).
RESOLUTION_FIELDS = frozenset({"requires-dist", "requires-python", "provides-extra"})


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


class MetadataError(OperationalError):
    """Base of this module's errors; every message names the (redacted) URL involved.

    Operational (exit 1): the index or the artifact let locking down; the resolver re-raises
    them as `ResolveError`s naming the target."""


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


class ArtifactHashMismatchError(MetadataError, HashMismatchError):
    """A downloaded artifact whose sha256 is not the one its index gave."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        self.url = redact(url)
        HashMismatchError.__init__(
            self,
            f"`{self.url}` downloaded with sha256 `{actual}`, but the index says `{expected}`. "
            f"The file changed or was corrupted in transit; nothing was cached. Retry, and if it "
            f"persists report it to the index's operators",
            subject=self.url,
            expected=expected,
            actual=actual,
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


def verify_advertised(data: bytes, advertised: Mapping[str, str], url: str) -> None:
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
                        member_fp = tf.extractfile(member)
                        data = member_fp.read(limit + 1) if member_fp is not None else b""
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


def declared_requirements(metadata: bytes) -> Tuple[Optional[str], List[Requirement]]:
    """(normalized Name, every parseable Requires-Dist entry) of core metadata, for
    speculation: the caller evaluates markers (extras included) and specifiers. Parsed
    requirements are shared: read only. (None, []) for metadata that does not parse."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(metadata)
    except Exception:  # noqa: BLE001 - speculation must never fail a request
        return None, []
    name = headers.get("Name")
    parsed = (requirement(str(raw)) for raw in headers.get_all("Requires-Dist") or [])
    return (canonicalize_name(str(name).strip()) if name else None), [r for r in parsed if r is not None]


__all__ = [
    "DEFAULT_MAX_METADATA_BYTES",
    "DEFAULT_TAIL_BYTES",
    "ArtifactHashMismatchError",
    "Found",
    "InvalidDistributionError",
    "MetadataError",
    "MetadataInconsistentError",
    "MetadataMismatchError",
    "MetadataResult",
    "MetadataSource",
    "MetadataStats",
    "MetadataTooLargeError",
    "MetadataUnavailableError",
    "Outcome",
    "SdistMetadataError",
    "Unavailable",
    "check_sdist_metadata",
    "inflate_member",
    "metadata_from_artifact",
    "name_version_problem",
    "select_metadata_entry",
    "declared_requirements",
    "verify_advertised",
    "wheel_metadata_from_file",
]
