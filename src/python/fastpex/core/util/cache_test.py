"""util/cache.py's atomic helpers under real concurrency (several processes) and real crashes
(a writer killed mid-write): a final name only ever holds a complete entry, and nothing but
the entry and its lock file is left next to it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any, List

import pytest

from fastpex.core.util.cache import (
    CACHE_DIR_ENV,
    CacheKind,
    atomic_directory,
    atomic_file,
    cache_dir,
    default_cache_root,
    lock_path_for,
    remove_stale_temp_files,
    write_bytes_atomically,
)

WRITERS = 5
_CHUNK = 64 * 1024
_CHUNKS = 16  # 1 MiB per entry, written in slow pieces so that the writers really overlap
_SPAWN = multiprocessing.get_context("spawn")


def _payload(writer: int) -> bytes:
    return bytes([65 + writer]) * (_CHUNK * _CHUNKS)


def _write_slowly(path: Path, writer: int) -> None:
    with open(path, "wb") as fp:
        for _ in range(_CHUNKS):
            fp.write(_payload(writer)[:_CHUNK])
            fp.flush()
            time.sleep(0.005)


def _note(log: Path, writer: int) -> None:
    fd = os.open(str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{writer}\n".encode())
    finally:
        os.close(fd)


def _file_writer(final: str, log: str, writer: int, barrier: Any) -> None:
    barrier.wait()

    def produce(tmp: Path) -> None:
        _note(Path(log), writer)
        _write_slowly(tmp, writer)

    atomic_file(Path(final), produce)


def _directory_writer(final: str, log: str, writer: int, barrier: Any) -> None:
    barrier.wait()

    def produce(work: Path) -> None:
        _note(Path(log), writer)
        for name in ("a", "b", "c"):
            _write_slowly(work / name, writer)

    atomic_directory(Path(final), produce)


def _replacing_writer(final: str, writer: int, barrier: Any, rounds: int) -> None:
    barrier.wait()
    for _ in range(rounds):
        write_bytes_atomically(final, _payload(writer))


def _crashing_writer(final: str, started: str) -> None:
    def produce(tmp: Path) -> None:
        with open(tmp, "wb") as fp:
            fp.write(b"half of an entry")
            fp.flush()
            Path(started).touch()
            time.sleep(60)  # killed here, mid-write, holding the entry's lock

    atomic_file(Path(final), produce)


def _run_all(target: Any, args_for: List[tuple]) -> None:
    processes = [_SPAWN.Process(target=target, args=args) for args in args_for]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0, f"a writer failed with exit code {process.exitcode}"


def _leftovers(directory: Path, *keep: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if p not in keep)


def test_concurrent_atomic_file_writers_end_with_one_complete_entry(tmp_path: Path) -> None:
    final, log = tmp_path / "entries" / "entry", tmp_path / "producers.log"
    barrier = _SPAWN.Barrier(WRITERS)
    _run_all(_file_writer, [(str(final), str(log), w, barrier) for w in range(WRITERS)])
    producers = log.read_text().split()
    # The lock and the re-check after taking it: exactly one process produced the entry; the
    # others waited, then found it made.
    assert len(producers) == 1, producers
    assert final.read_bytes() == _payload(int(producers[0]))
    assert _leftovers(final.parent, final, lock_path_for(final)) == []  # no temp files


def test_concurrent_atomic_directory_writers_end_with_one_complete_directory(tmp_path: Path) -> None:
    final, log = tmp_path / "entries" / "tree", tmp_path / "producers.log"
    barrier = _SPAWN.Barrier(WRITERS)
    _run_all(_directory_writer, [(str(final), str(log), w, barrier) for w in range(WRITERS)])
    producers = log.read_text().split()
    assert len(producers) == 1, producers
    assert sorted(p.name for p in final.iterdir()) == ["a", "b", "c"]
    assert all((final / name).read_bytes() == _payload(int(producers[0])) for name in "abc")
    assert _leftovers(final.parent, final, lock_path_for(final)) == []  # no work dirs


def test_concurrent_replacements_are_never_seen_half_written(tmp_path: Path) -> None:
    """write_bytes_atomically is last-writer-wins: a reader racing the writers sees one
    writer's whole payload each time, never a mix or a prefix."""
    final = tmp_path / "lockfile.json"
    final.write_bytes(b"old")
    rounds = 20
    barrier = _SPAWN.Barrier(WRITERS + 1)
    processes = [
        _SPAWN.Process(target=_replacing_writer, args=(str(final), w, barrier, rounds)) for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    whole = {_payload(w) for w in range(WRITERS)} | {b"old"}
    reads = 0
    while any(p.is_alive() for p in processes):
        assert final.read_bytes() in whole
        reads += 1
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert reads > 0 and final.read_bytes() in whole - {b"old"}
    assert _leftovers(tmp_path, final) == []


def test_a_writer_killed_mid_write_leaves_no_entry_and_no_stuck_lock(tmp_path: Path) -> None:
    final, started = tmp_path / "entries" / "entry", tmp_path / "started"
    crashing = _SPAWN.Process(target=_crashing_writer, args=(str(final), str(started)))
    crashing.start()
    deadline = time.monotonic() + 60
    while not started.exists():
        assert crashing.is_alive() and time.monotonic() < deadline, "the writer never started"
        time.sleep(0.01)
    assert crashing.pid is not None
    os.kill(crashing.pid, signal.SIGKILL)
    crashing.join(30)
    assert crashing.exitcode == -signal.SIGKILL
    assert not final.exists()  # the half-written bytes are only ever under a temp name
    # The dead writer's lock died with it: the next writer is not blocked, and makes the entry.

    def produce(tmp: Path) -> None:
        tmp.write_bytes(b"complete entry")

    atomic_file(final, produce)
    assert final.read_bytes() == b"complete entry"


def _killed_writer_leftover(final: Path, started: Path) -> Path:
    """Run a writer, SIGKILL it mid-write, and return the temp file it left beside `final`."""
    crashing = _SPAWN.Process(target=_crashing_writer, args=(str(final), str(started)))
    crashing.start()
    _wait_for(started, crashing)
    assert crashing.pid is not None
    os.kill(crashing.pid, signal.SIGKILL)
    crashing.join(30)
    assert crashing.exitcode == -signal.SIGKILL
    (temp,) = [p for p in final.parent.iterdir() if p.name.endswith(".tmp")]
    return temp


def _wait_for(started: Path, process: Any) -> None:
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.is_alive() and time.monotonic() < deadline, "the writer never started"
        time.sleep(0.01)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_writers_temp_file_is_swept_once_stale_never_a_live_writers(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    kind_dir = cache_dir(CacheKind.ARTIFACTS, root)
    dead = _killed_writer_leftover(kind_dir / "ab" / "dead-entry", tmp_path / "dead-started")
    # A live writer, mid-write and holding its entry's lock, whose temp file looks just as old.
    live_final, live_started = kind_dir / "cd" / "live-entry", tmp_path / "live-started"
    live = _SPAWN.Process(target=_crashing_writer, args=(str(live_final), str(live_started)))
    live.start()
    try:
        _wait_for(live_started, live)
        (live_temp,) = [p for p in live_final.parent.iterdir() if p.name.endswith(".tmp")]
        # Fresh temp files are left alone: a writer may still own one whatever its lock says.
        assert remove_stale_temp_files(kind_dir) == [] and dead.exists()
        _age(dead, 2 * 3600)
        _age(live_temp, 2 * 3600)
        assert remove_stale_temp_files(kind_dir) == [dead]
        assert not dead.exists() and live_temp.exists()
        assert sorted(p.name for p in dead.parent.iterdir()) == [lock_path_for(dead.parent / "dead-entry").name]
    finally:
        assert live.pid is not None
        os.kill(live.pid, signal.SIGKILL)
        live.join(30)
    # Dead now too: its lock died with it, so the stale temp file goes.
    assert remove_stale_temp_files(kind_dir) == [live_temp]


def test_opening_a_cache_dir_sweeps_it_at_most_once_an_hour(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    kind_dir = cache_dir(CacheKind.METADATA, root)
    final = kind_dir / "ab" / "entry"
    temp = _killed_writer_leftover(final, tmp_path / "started")
    stale_work = kind_dir / ".tree.a1b2c3d4.work"  # an atomic_directory writer's, lock-less
    (stale_work / "sub").mkdir(parents=True)
    keep = [kind_dir / ".notes.tmp", kind_dir / "ab" / "entry.tmp"]  # not names the helpers give
    for path in keep:
        path.write_bytes(b"x")
    for path in (temp, stale_work, *keep):
        _age(path, 2 * 3600)
    cache_dir(CacheKind.METADATA, root)  # swept when it was created, a moment ago: not again
    assert temp.exists()
    marker = kind_dir.with_name(f".{kind_dir.name}.swept")
    _age(marker, 2 * 3600)
    assert cache_dir(CacheKind.METADATA, root) == kind_dir
    assert not temp.exists() and not stale_work.exists() and all(p.exists() for p in keep)
    assert marker.stat().st_mtime > time.time() - 60


def test_a_failed_produce_or_verify_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "entry"

    def produce(tmp: Path) -> None:
        tmp.write_bytes(b"wrong bytes")

    def verify(tmp: Path) -> None:
        raise ValueError("hash mismatch")

    with pytest.raises(ValueError, match="hash mismatch"):
        atomic_file(final, produce, verify=verify)
    assert not final.exists() and _leftovers(tmp_path, lock_path_for(final)) == []

    def half_then_fail(work: Path) -> None:
        (work / "half").write_bytes(b"x")
        raise OSError("disk full")

    tree = tmp_path / "tree"
    with pytest.raises(OSError, match="disk full"):
        atomic_directory(tree, half_then_fail)
    assert not tree.exists() and _leftovers(tmp_path, lock_path_for(final), lock_path_for(tree)) == []


def test_an_existing_entry_is_kept_and_produce_not_called(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    final.write_bytes(b"first")
    calls: List[Path] = []
    assert atomic_file(final, calls.append) == final
    assert atomic_directory(tmp_path, calls.append) == tmp_path
    assert calls == [] and final.read_bytes() == b"first"


def test_write_bytes_atomically_keeps_the_mode_and_the_old_file_on_error(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "lock.json"
    write_bytes_atomically(final, b"one")  # creates its directory
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o666 & ~umask
    final.chmod(0o600)
    write_bytes_atomically(final, b"two", durable=False)
    assert final.read_bytes() == b"two" and stat.S_IMODE(final.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        write_bytes_atomically(final, "not bytes")  # type: ignore[arg-type]  # the failure under test
    assert final.read_bytes() == b"two" and _leftovers(final.parent, final) == []


def test_cache_dirs_are_versioned_under_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "root"))
    assert default_cache_root() == tmp_path / "root"
    path = cache_dir(CacheKind.METADATA)
    assert path == tmp_path / "root" / "metadata" / f"v{CacheKind.METADATA.version}" and path.is_dir()
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "fastpex"
    assert len({kind.dirname for kind in CacheKind}) == len(CacheKind)  # one directory per kind
