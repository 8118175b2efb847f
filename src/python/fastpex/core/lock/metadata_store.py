"""Artifacts and their hashes as locking keeps them: HTTP validators, the content-addressed
artifact store (`store.ArtifactStore`, shared with FETCH) and the URL + validators -> sha256 cache.

`remote_sha256` is the one way locking learns the sha256 an index did not give: a `file://`
URL is hashed in place; a remote one is answered from the hash cache when the server's
validators are unchanged, else streamed once into the artifact store (so FETCH never downloads
it again) and its hash cached.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import unquote, urlsplit

from fastpex.core.errors import HashMismatchError
from fastpex.core.lock.metadata import ArtifactHashMismatchError, MetadataUnavailableError
from fastpex.core.model import Artifact
from fastpex.core.net.errors import HttpError
from fastpex.core.net.http import HttpClient
from fastpex.core.net.index import valid_digest
from fastpex.core.net.response import Response
from fastpex.core.store import ArtifactStore
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically
from fastpex.core.util.hashing import sha256_file
from fastpex.core.util.urls import filename_from_url, strip_credentials

__all__ = [
    "StoredArtifact",
    "Validators",
    "artifact_store_path",
    "download_to_store",
    "head_validators",
    "read_cached_hash",
    "remote_sha256",
    "write_cached_hash",
]


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

    With a known sha256 the bytes go through `ArtifactStore.add_stream` (hashed while written,
    nothing kept on a mismatch). Without one, they are hashed into a scratch file first, then
    added under their hash: the store has no entry point that names an entry after the fact.
    """
    if response is None:
        response = http.get(url, stream=True)
    if response.status != 200:
        response.close()
        raise MetadataUnavailableError(url, f"downloading it answered HTTP {response.status}")
    validators = Validators.from_response(response)
    store = ArtifactStore(cache_root)
    size = 0

    def chunks() -> Iterator[bytes]:
        nonlocal size
        for chunk in response.iter_chunks():
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    expected = expected_sha256.lower() if expected_sha256 else None
    try:
        if expected is not None and valid_digest("sha256", expected):
            artifact = Artifact(url=strip_credentials(url), filename=filename_from_url(url), sha256=expected)
            try:
                path = store.add_stream(artifact, chunks())
            except HashMismatchError as e:
                raise ArtifactHashMismatchError(url, expected, e.actual or "?") from e
            actual = expected
            if size == 0:  # already stored: nothing was read
                size = path.stat().st_size
        else:
            with tempfile.NamedTemporaryFile(prefix=".download-", suffix=".tmp", dir=store.dir) as scratch:
                digest = hashlib.sha256()
                for chunk in chunks():
                    digest.update(chunk)
                    scratch.write(chunk)
                scratch.flush()
                actual = digest.hexdigest()
                if expected is not None and actual != expected:
                    raise ArtifactHashMismatchError(url, expected, actual)
                artifact = Artifact(url=strip_credentials(url), filename=filename_from_url(url), sha256=actual, size=size)
                path = store.add_file(artifact, scratch.name)
    finally:
        response.close()
    if validators.usable:
        write_cached_hash(url, validators, actual, cache_root)
    return StoredArtifact(actual, path, size, validators)


def remote_sha256(http: HttpClient, url: str, cache_root: Optional[Path] = None) -> str:
    """The sha256 of the file at `url`, for an index that gave none (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return sha256_file(unquote(parts.path))
    validators = head_validators(http, url)
    if validators is not None:
        cached = read_cached_hash(url, validators, cache_root)
        if cached is not None:
            return cached
    try:
        return download_to_store(http, url, None, cache_root).sha256
    except HttpError as e:
        raise MetadataUnavailableError(url, f"downloading it to compute its sha256 failed ({e})") from e
