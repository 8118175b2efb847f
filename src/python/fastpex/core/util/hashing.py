"""sha256 of files: the one file-hashing helper of the core (store, index, fetch and pack use it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Union

__all__ = ["hash_file", "sha256_file"]

_CHUNK = 1 << 20


def hash_file(path: Union[str, Path], *, limit: Optional[int] = None) -> "hashlib._Hash":
    """A sha256 object fed with the file's first `limit` bytes (all when None), so a resumed
    download can go on hashing where its partial file ends."""
    h = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as fp:
        while remaining is None or remaining > 0:
            want = _CHUNK if remaining is None else min(_CHUNK, remaining)
            chunk = fp.read(want)
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return h


def sha256_file(path: Union[str, Path]) -> str:
    """The hex sha256 of a whole file."""
    return hash_file(path).hexdigest()
