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
