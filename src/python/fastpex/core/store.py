"""The content-addressed artifact store: `<cache>/artifacts/v1/<sha256[:2]>/<sha256>`.

Fetch writes here and the layer stage reads from here; the metadata stage also stores full
downloads here (same layout), so a wheel downloaded to read its metadata is never fetched
twice. An entry's name is its sha256, so an entry whose size matches is trusted by name (a warm
fetch must not rehash gigabytes); `verify(full=True)` rehashes and evicts a corrupt entry.

Nothing partial is ever visible under a final name: complete files arrive by rename, under a
per-entry file lock with a re-check after locking, so two processes racing for one entry end
with one intact copy. Resumable partial downloads live apart, in `partial/<sha256>.part`, with a
tiny `.json` beside each recording the URL and the server's validators (ETag, Last-Modified).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Optional, Union

from fastpex.core.errors import HashMismatchError, UserError
from fastpex.core.model import Artifact
from fastpex.core.util.cache import (
    CacheKind,
    atomic_file,
    cache_dir,
    file_lock,
    fsync_dir,
    lock_path_for,
    write_bytes_atomically,
)
from fastpex.core.util.hashing import hash_file

__all__ = [
    "ArtifactStore",
    "PartialInfo",
    "StoreError",
]

_CHUNK = 1 << 20
# Entries are read-only: `fetch --dest` hard-links them out, and a write through such a link
# would silently corrupt the store.
_ENTRY_MODE = 0o444


class StoreError(UserError):
    """A store entry can't be named: the sha256 a lock gave is not a hex digest (a damaged lock)."""


def _mismatch(artifact: Artifact, actual_sha256: str, actual_size: int) -> HashMismatchError:
    """Bytes offered to the store that don't match the artifact's sha256 or size."""
    size_note = ""
    if artifact.size is not None and artifact.size != actual_size:
        size_note = f" and its size is {actual_size} bytes instead of {artifact.size}"
    return HashMismatchError(
        f"The content offered for `{artifact.filename}` has sha256 {actual_sha256} but the "
        f"lock expects {artifact.sha256}{size_note}. Nothing was stored. The source file "
        f"changed since the lock was made, or the lock is wrong: regenerate the lock",
        subject=artifact.filename,
        expected=artifact.sha256,
        actual=actual_sha256,
    )


@dataclass(frozen=True)
class PartialInfo:
    """What we know about a partial download: where it came from and how to validate a resume."""

    url: str  # credential-free
    etag: Optional[str] = None
    last_modified: Optional[str] = None
    accept_ranges: bool = False

    @property
    def validator(self) -> Optional[str]:
        """The `If-Range` value: a strong ETag, else Last-Modified (RFC 9110 13.1.5)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


class ArtifactStore:
    """Artifacts by sha256 under a fastpex cache root (`None`: the default cache root)."""

    def __init__(self, root: Optional[Union[str, Path]] = None) -> None:
        self.dir = cache_dir(CacheKind.ARTIFACTS, Path(root) if root is not None else None)
        self.partial_dir = self.dir / "partial"

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.dir)!r})"

    # -- lookup -------------------------------------------------------------------------------

    def path_for(self, sha256: str) -> Path:
        sha256 = _check_sha(sha256)
        return self.dir / sha256[:2] / sha256

    def has(self, artifact: Artifact) -> bool:
        """Present under its name with the expected size (when the lock knows it). No rehash."""
        try:
            size = self.path_for(artifact.sha256).stat().st_size
        except FileNotFoundError:
            return False
        return artifact.size is None or size == artifact.size

    def verify(self, artifact: Artifact, full: bool = True) -> bool:
        """Is the entry intact? `full` rehashes it. A corrupt entry is evicted (False)."""
        path = self.path_for(artifact.sha256)
        if not path.exists():
            return False
        ok = self.has(artifact)
        if ok and full:
            ok = hash_file(path).hexdigest() == artifact.sha256.lower()
        if not ok:
            self.evict(artifact.sha256)
        return ok

    def evict(self, sha256: str) -> None:
        """Remove an entry (e.g. a corrupt one), under its lock so no writer is mid-rename."""
        path = self.path_for(sha256)
        with file_lock(lock_path_for(path)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- adding complete content --------------------------------------------------------------

    def add_stream(self, artifact: Artifact, chunks: Iterable[bytes]) -> Path:
        """Store the bytes of `chunks` as `artifact`, verified by sha256 and size."""
        return self._add(artifact, lambda fp: _copy_chunks(chunks, fp))

    def add_file(self, artifact: Artifact, source: Union[str, Path]) -> Path:
        """Copy `source` into the store as `artifact`, verified by sha256 and size."""

        def produce(fp: IO[bytes]) -> Iterator[bytes]:
            with open(source, "rb") as src:
                yield from _copy_chunks(iter(lambda: src.read(_CHUNK), b""), fp)

        return self._add(artifact, produce)

    def _add(self, artifact: Artifact, produce: Callable[[IO[bytes]], Iterator[bytes]]) -> Path:
        """`produce(fp)` writes into the temp file and yields what it wrote (to hash it).

        Through `cache.atomic_file`: a sibling temp file, verified, renamed under the entry's
        lock. An entry of the wrong size (damaged) is evicted first, so it is replaced.
        """
        final = self.path_for(artifact.sha256)
        if self.has(artifact):
            return final
        if final.exists():
            self.evict(artifact.sha256)

        def write(tmp: Path) -> None:
            h = hashlib.sha256()
            size = 0
            with open(tmp, "wb") as fp:
                for chunk in produce(fp):
                    h.update(chunk)
                    size += len(chunk)
            _check(artifact, h.hexdigest(), size)

        atomic_file(final, write)
        if os.stat(final).st_mode & 0o222:
            os.chmod(final, _ENTRY_MODE)  # after the rename: atomic_file fsyncs the temp file writable
        return final

    # -- partial downloads --------------------------------------------------------------------

    def partial_path(self, sha256: str) -> Path:
        return self.partial_dir / f"{_check_sha(sha256)}.part"

    def partial_info_path(self, sha256: str) -> Path:
        return self.partial_dir / f"{_check_sha(sha256)}.json"

    @contextlib.contextmanager
    def download_lock(self, sha256: str) -> Iterator[None]:
        """Held for a whole download, so two processes never write one partial file."""
        with file_lock(lock_path_for(self.partial_dir / _check_sha(sha256))):
            yield

    def read_partial_info(self, sha256: str) -> Optional[PartialInfo]:
        try:
            data = json.loads(self.partial_info_path(sha256).read_text())
            return PartialInfo(
                url=str(data["url"]),
                etag=data.get("etag"),
                last_modified=data.get("last_modified"),
                accept_ranges=bool(data.get("accept_ranges", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_partial_info(self, sha256: str, info: PartialInfo) -> None:
        path = self.partial_info_path(sha256)
        data = {
            "url": info.url,
            "etag": info.etag,
            "last_modified": info.last_modified,
            "accept_ranges": info.accept_ranges,
        }
        write_bytes_atomically(path, json.dumps(data, sort_keys=True).encode("utf-8"))

    def discard_partial(self, sha256: str) -> None:
        for path in (self.partial_path(sha256), self.partial_info_path(sha256)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def commit_partial(self, artifact: Artifact, actual_sha256: str) -> Path:
        """Move a complete partial download into place; the caller hashed it while writing.

        Raises `HashMismatchError` (and deletes the partial) if it isn't the artifact.
        If another process stored the entry meanwhile, its copy wins and ours is deleted.
        """
        part = self.partial_path(artifact.sha256)
        size = part.stat().st_size
        try:
            _check(artifact, actual_sha256, size)
        except HashMismatchError:
            self.discard_partial(artifact.sha256)
            raise
        final = self.path_for(artifact.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(lock_path_for(final)):
            if self.has(artifact):
                self.discard_partial(artifact.sha256)
                return final
            with open(part, "rb+") as fp:
                os.fsync(fp.fileno())
            os.chmod(part, _ENTRY_MODE)
            os.replace(part, final)
            fsync_dir(final.parent)
        with contextlib.suppress(FileNotFoundError):
            self.partial_info_path(artifact.sha256).unlink()
        return final

    # -- helpers ------------------------------------------------------------------------------

    def clear(self) -> None:
        """Delete every entry (tests, `fastpex cache clean`)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)


def _copy_chunks(chunks: Iterable[bytes], fp: IO[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if chunk:
            fp.write(chunk)
            yield chunk


def _check(artifact: Artifact, actual_sha256: str, size: int) -> None:
    if actual_sha256.lower() != artifact.sha256.lower() or (artifact.size is not None and size != artifact.size):
        raise _mismatch(artifact, actual_sha256, size)


def _check_sha(sha256: str) -> str:
    """Entry names come from locks: refuse anything that isn't 64 hex digits (no `../`)."""
    lowered = sha256.lower()
    if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
        raise StoreError(
            f"`{sha256}` is not a sha256 hex digest, so it can't name a store entry. "
            f"The lock is damaged: regenerate it"
        )
    return lowered
