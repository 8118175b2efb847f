"""The Pants 2.17.1 interpreter that this repository's `./pants` launcher bootstraps.

Tests that need Pants' own code (its lockfile-header reader, the backend's RuleRunner tests) run
in that interpreter: Pants 2.17.1 runs only on CPython 3.9, next to its own `packaging` 21.3,
while the core's tests need the core's. CI runs `./pants` before the tests, so it exists.
"""

from __future__ import annotations

import os
from pathlib import Path

BOOTSTRAP_FORMAT = "2"  # the launcher's: its venv has pantsbuild.pants.testutil


def pants_python() -> Path:
    """`bin/python` of the launcher's complete Pants venv; fails (never skips) without one."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = Path(os.environ.get("FASTPEX_BOOTSTRAP_DIR") or cache / "fastpex-bootstrap")
    for marker in sorted(root.glob("*/pants-2.17.1/.fastpex-bootstrap-complete")):
        if marker.read_text().strip() == BOOTSTRAP_FORMAT:
            return marker.parent / "bin" / "python"
    raise AssertionError(f"no Pants 2.17.1 venv (bootstrap format {BOOTSTRAP_FORMAT}) under {root}: run ./pants once first")
