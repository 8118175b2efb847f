"""memory_scratch: a fresh directory on a tmpfs for pip's temporary files, or None."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fastpex.core.util import scratch
from fastpex.core.util.scratch import memory_scratch


def test_a_fresh_directory_under_the_root_removed_afterwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    with memory_scratch("fastpex-pip-", root=tmp_path) as first, memory_scratch("fastpex-pip-", root=tmp_path) as second:
        assert first is not None and second is not None and first != second
        assert first.parent == tmp_path and first.name.startswith("fastpex-pip-") and first.is_dir()
        (first / "pip-unpack-x").mkdir()
        (first / "pip-unpack-x" / "METADATA").write_text("Name: x\n")
    assert list(tmp_path.iterdir()) == []


def test_removed_when_the_block_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    with pytest.raises(RuntimeError), memory_scratch("p-", root=tmp_path) as path:
        assert path is not None
        raise RuntimeError("pip failed")
    assert list(tmp_path.iterdir()) == []


def test_none_when_tmpdir_is_set_or_the_root_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with memory_scratch("p-", root=tmp_path) as chosen:
        assert chosen is None  # the caller's TMPDIR wins
    monkeypatch.delenv("TMPDIR")
    with memory_scratch("p-", root=tmp_path / "missing") as missing:
        assert missing is None
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    try:
        with memory_scratch("p-", root=read_only) as unwritable:
            # root may write anywhere; then a directory is made and removed as usual
            assert unwritable is None or unwritable.parent == read_only
    finally:
        read_only.chmod(0o755)
    assert list(read_only.iterdir()) == []


def test_what_a_killed_lock_left_is_removed_after_a_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    old, recent, other = tmp_path / "fastpex-pip-old", tmp_path / "fastpex-pip-recent", tmp_path / "unrelated-old"
    for path in (old, recent, other):
        (path / "pip-unpack-x").mkdir(parents=True)
    day_ago = time.time() - 25 * 3600
    for path in (old, other):
        os.utime(path, (day_ago, day_ago))
    with memory_scratch("fastpex-pip-", root=tmp_path) as fresh:
        assert fresh is not None
        assert not old.exists() and recent.is_dir() and other.is_dir()


def test_an_os_error_of_the_block_passes_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block's own OSError is the block's, with a scratch or without one (it is not taken
    for "no scratch here", which would make the generator yield twice)."""
    monkeypatch.delenv("TMPDIR", raising=False)
    for root in (tmp_path / "missing-root", tmp_path):
        with pytest.raises(FileNotFoundError), memory_scratch("p-", root=root):
            (tmp_path / "missing" / "file").read_text()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(scratch, "MIN_FREE_BYTES", 1 << 62)  # no tmpfs has that much room
    with pytest.raises(FileNotFoundError), memory_scratch("p-", root=tmp_path) as path:
        assert path is None
        (tmp_path / "missing" / "file").read_text()
