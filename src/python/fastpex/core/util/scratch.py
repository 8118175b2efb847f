"""Scratch space in memory for short-lived, small files: pip's temporary files during a lock.

A lock's pip runs create and delete a directory and a file for every metadata file they read
(pip's `pip-unpack-*`), ~700 of each for ml-core's six targets. On ext4, creating an inode
right after many were deleted makes the kernel skip each recently deleted one
(`recently_deleted` in `find_inode_bit`); measured with `perf` on this machine, that was
~0.8 CPU-s of system time in one lock, more than fastpex's whole page work. A tmpfs has no
such cost. It is used only where it exists, is writable and has room, and only when the
caller does not set TMPDIR itself; otherwise pip keeps the default temporary directory. What a
killed lock left there is removed after a day.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["MEMORY_SCRATCH_ROOT", "memory_scratch"]

MEMORY_SCRATCH_ROOT = Path("/dev/shm")
MIN_FREE_BYTES = 1 << 30  # pip's scratch in a wheels-only lock is kilobytes; keep far from full
STALE_AFTER_SECONDS = 24 * 3600  # a scratch this old belongs to a lock that was killed


@contextlib.contextmanager
def memory_scratch(prefix: str, root: Path = MEMORY_SCRATCH_ROOT) -> Iterator[Optional[Path]]:
    """A fresh directory under `root` (a tmpfs, by default /dev/shm) for the block, removed
    after it; None when TMPDIR is set, or `root` is missing, not writable or short of room."""
    path = None if os.environ.get("TMPDIR") else _fresh_directory(root, prefix)
    try:
        yield path  # the block's own errors pass through untouched
    finally:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


def _fresh_directory(root: Path, prefix: str) -> Optional[Path]:
    try:
        if shutil.disk_usage(root).free < MIN_FREE_BYTES or not os.access(root, os.W_OK | os.X_OK):
            return None
        _remove_stale(root, prefix)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError:
        return None


def _remove_stale(root: Path, prefix: str) -> None:
    """Remove what killed locks left (memory is not reclaimed until reboot otherwise): this
    prefix's directories untouched for a day. Best effort; another user's are not ours to
    remove and stay."""
    cutoff = time.time() - STALE_AFTER_SECONDS
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue
