"""The application sources of a PEX: a directory or a mapping, normalized and checked so that no
path escapes the PEX root or shadows its internals.
"""

from __future__ import annotations

import os
import stat
from typing import Dict, List, Mapping, Tuple

from fastpex.core.pack.errors import InvalidSourceError
from fastpex.core.pack.options import RESERVED_TOP_LEVEL, Sources

__all__ = ["SourceFile", "collect_sources"]

# (relpath inside the PEX, bytes, executable)
SourceFile = Tuple[str, bytes, bool]


def collect_sources(sources: Sources) -> List[SourceFile]:
    """Normalize sources to sorted `(relpath, bytes, executable)`; validates every path.

    A directory contributes every file under it except bytecode (`__pycache__`, `*.pyc`), like
    `pex -D`. A mapping is `relpath -> bytes` (never executable).
    """
    from pex.common import is_pyc_file

    items: Dict[str, Tuple[bytes, bool]] = {}
    if sources is None:
        return []
    if isinstance(sources, Mapping):
        for name, data in sources.items():
            items[_check_source_name(name)] = (bytes(data), False)
    else:
        root = os.fspath(sources)
        if not os.path.isdir(root):
            raise InvalidSourceError(f"The sources directory {root} does not exist.")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for filename in filenames:
                if is_pyc_file(filename):
                    continue
                path = os.path.join(dirpath, filename)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                with open(path, "rb") as fp:
                    data = fp.read()
                items[_check_source_name(rel)] = (data, bool(os.stat(path).st_mode & stat.S_IXUSR))
    return [(name, data, exe) for name, (data, exe) in sorted(items.items())]


def _check_source_name(name: str) -> str:
    normalized = name.replace("\\", "/")
    parts = normalized.split("/")
    if (
        not normalized
        or normalized.startswith("/")
        or normalized.endswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidSourceError(f"Source path {name!r} must be a relative path inside the PEX.")
    if parts[0] in RESERVED_TOP_LEVEL:
        raise InvalidSourceError(
            f"Source path {name!r} collides with PEX internals ({parts[0]} is reserved)."
        )
    return normalized
