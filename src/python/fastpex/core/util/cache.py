"""fastpex's on-disk caches: one versioned directory per kind, one atomic-write helper for all.

Modelled on pex's `pex/cache/dirs.py` + `pex/atomic_directory.py`: bump a kind's version instead
of migrating entries in place; nothing partial is ever visible under a final name, and two
processes racing for the same entry both end with one intact copy.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

CACHE_DIR_ENV = "FASTPEX_CACHE_DIR"


class CacheKind(enum.Enum):
    """Every cache directory fastpex writes, with its format version."""

    METADATA = ("metadata", 1, "core metadata (METADATA bytes) keyed by artifact sha256 or URL")
    ARTIFACTS = ("artifacts", 1, "downloaded artifacts, content-addressed by sha256")
    HASHES = ("hashes", 1, "sha256 of artifacts whose index gave none, keyed by URL + validators")
    LAYERS = ("layers", 1, "pre-compressed PEX dependency layers keyed by wheel sha256 + settings")
    BOOTSTRAP = ("bootstrap", 1, "PEX bootstrap fragments keyed by pex version")
    TOOLS = ("tools", 1, "pinned tool installs (pip) used by the resolver")
    RESOLUTIONS = ("resolutions", 1, "pip reports keyed by pip's inputs, valid while its pages are")
    LOCKS = ("locks", 1, "finished locks keyed by every input, valid while the pages they read are")
    IMAGE_LAYERS = ("image-layers", 1, "installed-wheel OCI layer blobs (tar+gzip) keyed by wheel sha256s + prefix + Python + compression")
    PAGES = ("pages", 1, "index pages: validators per page URL, each parsed page by its body's sha256")
    BUILT_WHEELS = ("built-wheels", 1, "wheels built from sdists keyed by sdist + build requirements + settings + interpreter")

    def __init__(self, dirname: str, version: int, description: str) -> None:
        self.dirname = dirname
        self.version = version
        self.description = description


def default_cache_root() -> Path:
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "fastpex"


def cache_dir(kind: CacheKind, root: Optional[Path] = None) -> Path:
    """`<root>/<kind>/v<version>`, created on demand; swept of dead writers' temp files at most
    once per `STALE_TEMP_AGE` (`remove_stale_temp_files`)."""
    path = (root or default_cache_root()) / kind.dirname / f"v{kind.version}"
    path.mkdir(parents=True, exist_ok=True)
    _sweep_now_and_then(path)
    return path


# A temp file or work dir is this old (by mtime) before a sweep may take it: far longer than a
# live writer leaves its temp file untouched (a download writes continuously and gives up after
# `total_timeout`, 300 s), and atomic_file/atomic_directory writers hold the entry's lock too.
STALE_TEMP_AGE = 3600.0
# `.<entry>.<8 random chars>.tmp|.work`: the names tempfile.mkstemp/mkdtemp give every writer here.
_TEMP_NAME = re.compile(r"^\.(?P<entry>.+)\.[A-Za-z0-9_]{8}\.(?:tmp|work)$")


def _sweep_now_and_then(kind_dir: Path) -> None:
    marker = kind_dir.with_name(f".{kind_dir.name}.swept")  # outside the entries' directory
    try:
        if time.time() - marker.stat().st_mtime < STALE_TEMP_AGE:
            return
    except FileNotFoundError:
        pass
    try:
        marker.touch()
    except OSError:
        return  # a read-only cache: nothing to sweep either
    remove_stale_temp_files(kind_dir)


@contextlib.contextmanager
def _unless_locked(lock_path: Path) -> Iterator[bool]:
    """Yields False while another holder (a live writer) has `lock_path`; else True, holding it.
    A missing lock file is not created: no atomic_file writer is at work without one."""
    try:
        fd = os.open(str(lock_path), os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: Path, *, older_than: float = STALE_TEMP_AGE, depth: int = 2) -> List[Path]:
    """Remove the temp files and work dirs that writers killed mid-write left beside entries in
    `directory` (and its subdirectories, `depth` levels down), and return them.

    Only names these helpers give (`.<entry>.<8 chars>.tmp` or `.work`), untouched for
    `older_than` seconds, whose entry's lock no one holds (taken while removing): never a live
    writer's. Work dirs are not looked into, only removed whole.
    """
    cutoff = time.time() - older_than
    removed: List[Path] = []
    try:
        children = list(os.scandir(directory))
    except OSError:
        return removed
    for child in children:
        match = _TEMP_NAME.match(child.name)
        if match is None:
            if depth > 0 and not child.name.startswith(".") and child.is_dir(follow_symlinks=False):
                removed += remove_stale_temp_files(Path(child.path), older_than=older_than, depth=depth - 1)
            continue
        try:
            if child.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        path = Path(child.path)
        with _unless_locked(lock_path_for(path.with_name(match.group("entry")))) as free:
            if not free:
                continue
            if child.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block (across processes)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_path_for(final: Path) -> Path:
    """The one name of the file lock that guards creating `final` (`<name>.lck`)."""
    return final.with_name(final.name + ".lck")


@contextlib.contextmanager
def _creating(final: Path) -> Iterator[bool]:
    """Yields True when the caller must create `final`: it didn't exist, and still doesn't now
    that we hold its lock (another process may have made it while we waited)."""
    if final.exists():
        yield False
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path_for(final)):
        yield not final.exists()


def atomic_file(
    final: Path,
    produce: Callable[[Path], None],
    *,
    verify: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Create `final` once: `produce(tmp)` writes a sibling temp file, `verify(tmp)` may raise,
    then it is fsynced and renamed into place under a lock. Returns `final`.

    If another process created `final` meanwhile, its copy wins and ours is discarded.
    """
    with _creating(final) as must_create:
        if not must_create:
            return final
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            produce(tmp)
            if verify is not None:
                verify(tmp)
            with open(tmp, "rb+") as fp:
                os.fsync(fp.fileno())
            os.replace(tmp, final)
            fsync_dir(final.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
    return final


def atomic_directory(final: Path, produce: Callable[[Path], None]) -> Path:
    """Like `atomic_file` for a directory: `produce(work_dir)` fills a sibling work dir."""
    with _creating(final) as must_create:
        if not must_create:
            return final
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".work", dir=final.parent))
        try:
            produce(work)
            os.replace(work, final)
            fsync_dir(final.parent)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return final


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomically(final: Union[str, Path], data: bytes, *, durable: bool = True) -> Path:
    """Replace `final` with `data`: a sibling temp file, fsynced, renamed over it.

    `durable=False` skips the fsync: for entries that are a pure function of their key and
    checked when read (a crash may then lose or tear one, which its reader takes for a miss).

    Last writer wins; readers see the old or the new file, never a partial one; on any error
    the old file is untouched. The new file keeps the old one's permissions (else 0666 minus
    the umask, like `open`), so rewriting a user's lockfile doesn't change its mode.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            mode = final.stat().st_mode & 0o7777 if final.exists() else 0o666 & ~_umask()
            os.fchmod(fp.fileno(), mode)
            if durable:
                os.fsync(fp.fileno())
        os.replace(tmp_name, final)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return final


def write_text_atomically(final: Union[str, Path], text: str) -> Path:
    """`write_bytes_atomically` of `text` in UTF-8."""
    return write_bytes_atomically(final, text.encode("utf-8"))
