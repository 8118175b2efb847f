"""The served directory: which files are distributions, and the facts index pages need of them.

Split out of index_server.py; `DistFile` is importable from `fastpex.testing.index_server`.
"""

from __future__ import annotations

import email.parser
import os
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from fastpex.testing.wheels import sha256_file, wheel_metadata_bytes

__all__ = ["DistCatalog", "DistFile"]


@dataclass(frozen=True)
class DistFile:
    """A distribution in the served directory plus facts pages need."""

    filename: str
    path: Path
    project: str  # canonical name
    version: str
    size: int
    sha256: str
    requires_python: Optional[str]
    metadata: Optional[bytes]  # wheel METADATA member (None for sdists)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

def _sdist_pkg_info(path: Path) -> Optional[bytes]:
    """PKG-INFO of an sdist, only to learn its Requires-Python."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/PKG-INFO")]
                return zf.read(names[0]) if names else None
        with tarfile.open(path) as tf:
            for member in tf.getmembers():
                if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                    fp = tf.extractfile(member)
                    return fp.read() if fp else None
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return None
    return None


def _requires_python(metadata: Optional[bytes]) -> Optional[str]:
    if not metadata:
        return None
    msg = email.parser.BytesHeaderParser().parsebytes(metadata)
    value = msg.get("Requires-Python")
    return str(value).strip() if value else None


def _identify(filename: str) -> Optional[Tuple[str, str]]:
    """(canonical project, version) from a distribution filename, else None."""
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return str(name), str(version)
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return str(name), str(version)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


class DistCatalog:
    """Scans the dist dir per request (so tests may add files live), caching hashes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: Dict[Tuple[str, int, int], DistFile] = {}
        self._lock = threading.Lock()

    def _load(self, entry: os.DirEntry, ident: Tuple[str, str]) -> DistFile:
        st = entry.stat()
        key = (entry.name, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        path = Path(entry.path)
        metadata = wheel_metadata_bytes(path) if entry.name.endswith(".whl") else None
        pkg_info = metadata if metadata is not None else _sdist_pkg_info(path)
        dist = DistFile(
            filename=entry.name,
            path=path,
            project=ident[0],
            version=ident[1],
            size=st.st_size,
            sha256=sha256_file(path),
            requires_python=_requires_python(pkg_info),
            metadata=metadata,
        )
        with self._lock:
            self._cache[key] = dist
        return dist

    def files(self) -> List[DistFile]:
        out = []
        with os.scandir(self.root) as it:
            for entry in it:
                ident = _identify(entry.name)
                if ident is not None and entry.is_file():
                    out.append(self._load(entry, ident))
        return sorted(out, key=lambda d: d.filename)

    def projects(self) -> Dict[str, List[DistFile]]:
        grouped: Dict[str, List[DistFile]] = {}
        for dist in self.files():
            grouped.setdefault(dist.project, []).append(dist)
        return grouped

    def get(self, filename: str) -> Optional[DistFile]:
        return next((d for d in self.files() if d.filename == filename), None)
