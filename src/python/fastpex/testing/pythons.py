"""The CPython interpreters the tests run things on, found on this machine, never assumed.

The project's machines ship CPython 3.9-3.13 (pyenv); a test that needs one fails, with how to
install it, rather than skipping: a missing interpreter is a broken machine, not a reason to
test less.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import List, Tuple


def _pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _patch_key(path: Path) -> Tuple[int, ...]:
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)$", path.parents[1].name)
    return tuple(int(x) for x in match.groups()) if match else (-1,)


def cpython(minor: str) -> Path:
    """`pythonX.Y` for `minor` ("3.11"): pyenv's newest X.Y.Z, else the one on PATH."""
    candidates: List[Path] = sorted(
        (p for p in _pyenv_root().glob(f"versions/{minor}.*/bin/python{minor}") if re.match(r"^\d+\.\d+\.\d+$", p.parents[1].name)),
        key=_patch_key,
    )
    if candidates:
        return candidates[-1]
    on_path = shutil.which(f"python{minor}")
    if on_path:
        return Path(on_path)
    raise AssertionError(
        f"CPython {minor} is not installed (looked in {_pyenv_root()}/versions and on PATH): "
        f"the tests need CPython 3.9-3.13, e.g. `pyenv install {minor}`"
    )
