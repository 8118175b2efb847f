"""The ./pants launcher fails fast, with a message that says what to do, on a bad bootstrap."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(os.environ.get("FASTPEX_REPO_ROOT", Path(__file__).resolve().parents[2]))


def _launch(tmp_path: Path, **env: str) -> "subprocess.CompletedProcess[str]":
    base = {
        "HOME": str(tmp_path / "home"),
        "PATH": "/usr/bin:/bin",
        "FASTPEX_BOOTSTRAP_DIR": str(tmp_path / "bootstrap"),
    }
    return subprocess.run(
        [str(REPO_ROOT / "pants"), "--version"],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_python39_names_where_it_looked(tmp_path: Path) -> None:
    empty_pyenv = tmp_path / "pyenv"
    (empty_pyenv / "versions").mkdir(parents=True)
    proc = _launch(tmp_path, PYENV_ROOT=str(empty_pyenv))
    assert proc.returncode == 1
    assert "no CPython 3.9 found" in proc.stderr
    assert "PANTS_PYTHON" in proc.stderr and str(empty_pyenv) in proc.stderr
    assert not (tmp_path / "bootstrap").exists() or not any((tmp_path / "bootstrap").rglob("pants"))


def test_wrong_pants_python_is_refused(tmp_path: Path) -> None:
    proc = _launch(tmp_path, PANTS_PYTHON="/usr/bin/false")
    assert proc.returncode == 1
    assert "is not a CPython 3.9 interpreter" in proc.stderr


def test_unreachable_index_fails_fast_with_a_hint(tmp_path: Path) -> None:
    python39 = next(Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")).glob("versions/3.9*/bin/python3.9"))
    started = time.monotonic()
    proc = _launch(
        tmp_path,
        PANTS_PYTHON=str(python39),
        FASTPEX_BOOTSTRAP_INDEX_URL="http://127.0.0.1:9/simple/",
    )
    assert proc.returncode == 1
    assert "is unreachable" in proc.stderr and "FASTPEX_BOOTSTRAP_INDEX_URL" in proc.stderr
    assert time.monotonic() - started < 60
    # Nothing half-installed is left to be mistaken for a bootstrap on the next run.
    assert not list((tmp_path / "bootstrap").rglob(".fastpex-bootstrap-complete"))


def _shim(tmp_path: Path, python39: Path) -> Path:
    """A version manager's shim on PATH (`.../shims/python3.9`) that records each run."""
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python3.9"
    shim.write_text(f'#!/bin/sh\necho run >> "{tmp_path / "shim-runs"}"\nexec "{python39}" "$@"\n')
    shim.chmod(0o755)
    return shims


def test_pyenv_versions_are_taken_before_a_shim_on_path(tmp_path: Path) -> None:
    """A shim costs 0.2-0.3 s a run (pyenv's asks pyenv), and fails when 3.9 isn't selected."""
    python39 = next(Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")).glob("versions/3.9*/bin/python3.9"))
    pyenv = tmp_path / "pyenv"
    (pyenv / "versions" / "3.9.99" / "bin").mkdir(parents=True)
    (pyenv / "versions" / "3.9.99" / "bin" / "python3.9").symlink_to(python39)
    shims = _shim(tmp_path, python39)
    unreachable = "http://127.0.0.1:9/simple/"  # fail right after the interpreter is chosen
    proc = _launch(tmp_path, PATH=f"{shims}:/usr/bin:/bin", PYENV_ROOT=str(pyenv), FASTPEX_BOOTSTRAP_INDEX_URL=unreachable)
    assert proc.returncode == 1 and "is unreachable" in proc.stderr
    assert not (tmp_path / "shim-runs").exists()

    # With no 3.9 among pyenv's versions, the shim is still found.
    (pyenv / "versions" / "3.9.99" / "bin" / "python3.9").unlink()
    proc = _launch(tmp_path, PATH=f"{shims}:/usr/bin:/bin", PYENV_ROOT=str(pyenv), FASTPEX_BOOTSTRAP_INDEX_URL=unreachable)
    assert proc.returncode == 1 and "is unreachable" in proc.stderr
    assert (tmp_path / "shim-runs").exists()
