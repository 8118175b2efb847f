"""Outputs pinned by digest: a lock, its pylock.toml and PEXes made on the loopback index.

fastpex promises byte-identical outputs for identical inputs, on any machine. These digests
were taken before the core was restructured into stage packages and must not move unless
a change means to alter an output format; such a change updates them here, on purpose, and
says why in its commit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory

EXPECTED = {
    "lock": "22beaaa279b9de8a23bcec0844d3c07a81b82eea2829e324da94565704df05b0",
    "pylock": "c4e1b880b6eff8219fc698d57d86bebe35fc276f7cf5769e4a203796e6038634",
    "zipapp": "e52052f025e4952c287284d479688e18345a5b0b141e6c568bbc5acf478987d2",
    "packed": "8db7c1846108ba0a9d66a406415c9f009f1b4532df87942e40bdfe1c15085eb5",
}


def build_catalog(f: WheelFactory) -> None:
    f.wheel("app", "1.0", requires_dist=["dep>=1", 'macdep; sys_platform == "darwin"'],
            files={"app/__init__.py": b"def main():\n    print('hi')\n"})
    f.wheel("dep", "1.0")
    f.wheel("dep", "2.0", requires_python=">=3.12")
    f.wheel("macdep", "1.0")
    f.wheel("native", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    f.wheel("native", "1.0", tag="cp311-cp311-macosx_11_0_arm64")
    f.wheel("native", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64")


def _fastpex(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-m", "fastpex", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def _tree_digest(root: Path) -> str:
    """One digest over a directory: each entry's relative path, then its bytes (or `D`)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes() if path.is_file() else b"D")
    return h.hexdigest()


def test_lock_pylock_and_pexes_are_byte_identical_to_the_pinned_digests(catalog: IndexServer, tmp_path: Path) -> None:
    port = catalog.simple_url.split("/")[2].encode()  # the only input that differs per run

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes().replace(port, b"PORT")).hexdigest()

    lock, pylock, cache = tmp_path / "x.lock", tmp_path / "pylock.toml", tmp_path / "cache"
    _fastpex("lock", "--resolve", "r", "--index", catalog.simple_url, "--requirement", "app", "--requirement", "native",
             "--target", "linux_x86_64-cp311", "--target", "macosx_arm64-cp311", "--target", "linux_x86_64-cp312",
             "--output", str(lock), "--pylock-output", str(pylock), "--cache-dir", str(cache), "--quiet")
    got: Dict[str, str] = {"lock": digest(lock), "pylock": digest(pylock)}
    sources = tmp_path / "src" / "hello"
    sources.mkdir(parents=True)
    (sources / "__init__.py").write_text("X = 1\n")
    for layout in ("zipapp", "packed"):
        out = tmp_path / f"out-{layout}.pex"
        _fastpex("build", "--lock", str(lock), "--target", "linux_x86_64-cp311", "--sources", str(sources.parent),
                 "--entry-point", "app:main", "--layout", layout, "--output", str(out), "--cache-dir", str(cache))
        got[layout] = digest(out) if out.is_file() else _tree_digest(out)
    assert got == EXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
