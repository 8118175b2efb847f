"""A wheels-only lock gives pip a TMPDIR in memory (util/scratch.py) and removes it; a lock
that may build sdists leaves pip's TMPDIR alone."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import List

from fastpex.core.lock.api import LockOptions, LockRequest, lock
from fastpex.core.platforms import parse_target
from fastpex.core.util.scratch import MEMORY_SCRATCH_ROOT, MIN_FREE_BYTES
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory


def build_catalog(f: WheelFactory) -> None:
    f.wheel("app", "1.0", requires_dist=["dep>=1"])
    f.wheel("dep", "1.0")


def _recording_pip(tmp_path: Path) -> Path:
    """A `--pip` interpreter that writes each process's TMPDIR to a log, then runs Python."""
    script = tmp_path / "python-recording-tmpdir"
    script.write_text(f'#!/bin/sh\necho "tmpdir=${{TMPDIR:-}}" >> "{tmp_path / "tmpdirs.log"}"\nexec "{sys.executable}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _tmpdirs(tmp_path: Path) -> List[str]:
    return [line[len("tmpdir="):] for line in (tmp_path / "tmpdirs.log").read_text().splitlines()]


def _lock(catalog: IndexServer, tmp_path: Path, *, only_binary: bool) -> None:
    lock(LockRequest(
        resolve_name="r",
        requirements=("app",),
        targets=(parse_target("linux_x86_64-cp311"), parse_target("linux_x86_64-cp312")),
        output=tmp_path / "r.lock",
        indexes=(("default", catalog.simple_url),),
        cache_root=tmp_path / "cache",
        options=LockOptions(pip=str(_recording_pip(tmp_path)), only_binary=only_binary, reuse=False),
    ))


def test_a_wheels_only_locks_pip_runs_in_a_memory_scratch_removed_afterwards(catalog: IndexServer, tmp_path: Path) -> None:
    _lock(catalog, tmp_path, only_binary=True)
    probe, *runs = _tmpdirs(tmp_path)
    assert probe == ""  # the version probe runs before the scratch exists
    assert runs and len(set(runs)) == 1
    usable = (
        not os.environ.get("TMPDIR")
        and os.access(MEMORY_SCRATCH_ROOT, os.W_OK | os.X_OK)
        and os.statvfs(MEMORY_SCRATCH_ROOT).f_bavail * os.statvfs(MEMORY_SCRATCH_ROOT).f_frsize >= MIN_FREE_BYTES
    )
    if usable:
        scratch = Path(runs[0])
        assert scratch.parent == MEMORY_SCRATCH_ROOT and scratch.name.startswith("fastpex-pip-")
        assert not scratch.exists()  # removed when the lock ended
    else:
        assert runs == [""]


def test_a_lock_that_may_build_sdists_keeps_the_default_tmpdir(catalog: IndexServer, tmp_path: Path) -> None:
    _lock(catalog, tmp_path, only_binary=False)
    assert set(_tmpdirs(tmp_path)) == {""}
