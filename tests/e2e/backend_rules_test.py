"""The backend's own tests (argv builders, RuleRunner rule tests, claim_resolves, the tool's
sources) run under the real Pants 2.17.1 and pantsbuild.pants.testutil, in Pants' interpreter.

They can't be ordinary `python_tests` here: Pants 2.17 has one pytest for every resolve, and
the core's tests need pytest with the core's `packaging` (26.4, CPython >= 3.10) while the
backend's need CPython 3.9 with Pants' own `packaging` 21.3. So this test runs them, in this
checkout, with the launcher's Pants venv, and fails if any fails or too few ran.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from fastpex.testing.pants_venv import pants_python

REPO_ROOT = Path(os.environ.get("FASTPEX_REPO_ROOT", Path(__file__).resolve().parents[2]))
BACKEND = REPO_ROOT / "src" / "python" / "fastpex" / "pants"


def test_the_backend_tests_pass_under_pants_2_17():
    test_files = sorted(BACKEND.rglob("*_test.py"))
    assert len(test_files) >= 5, test_files
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PANTS_", "PEX_"))}
    env["PYTHONPATH"] = str(REPO_ROOT / "src" / "python")
    proc = subprocess.run(
        [str(pants_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, test_files)],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=900,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 40, summary
    assert "skipped" not in summary and "failed" not in summary, summary
