"""Base images and running images, for tests (no Docker: podman cannot run containers here).

`python_base_layout` makes a base image from one of the machine's CPython installs with
`python -m fastpex image-base` (once per session and interpreter; later calls copy it).
`run_in_image` unpacks an image with umoci (`umoci unpack --image DIR:TAG BUNDLE`) and runs a
command chrooted into its root filesystem with the image config's Env and WorkingDir, which
umoci writes into the bundle's runtime config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

_SRC = Path(__file__).resolve().parents[2]
_built: Dict[Tuple[str, str], Path] = {}


def _fastpex(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(_SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "fastpex", *args], capture_output=True, text=True, env=env)


def python_base_layout(dest: Path, python: str, tag: str = "base") -> Path:
    """An OCI layout at `dest` holding a minimal base image with `python` (a CPython path)."""
    key = (os.path.realpath(python), tag)
    built = _built.get(key)
    if built is None or not (built / "index.json").exists():
        built = Path(tempfile.mkdtemp(prefix="fastpex-base-")) / "layout"
        proc = _fastpex("image-base", "--python", python, "--output", str(built), "--tag", tag)
        if proc.returncode != 0:
            raise AssertionError(f"fastpex image-base failed ({proc.returncode}): {proc.stderr}")
        _built[key] = built
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(built, dest)
    return dest


def unpack(layout: Path, tag: str, bundle: Path) -> Dict:
    """`umoci unpack` the image into `bundle`; returns the bundle's runtime config."""
    if bundle.exists():
        shutil.rmtree(bundle)
    proc = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"umoci unpack failed ({proc.returncode}): {proc.stderr}")
    return dict(json.loads((bundle / "config.json").read_text()))


def run_in_image(
    layout: Path,
    tag: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run `argv` (the whole command) inside the image, chrooted into its unpacked root
    filesystem at `workdir/rootfs` (`workdir` is the bundle directory, made anew)."""
    config = unpack(layout, tag, Path(workdir))
    process = config.get("process") or {}
    environment = dict(item.partition("=")[::2] for item in process.get("env") or [])
    environment.update(env or {})
    rootfs = str(Path(workdir) / "rootfs")
    cwd = process.get("cwd") or "/"

    def enter() -> None:
        os.chroot(rootfs)
        os.chdir(cwd)

    return subprocess.run(
        list(argv), env=environment, preexec_fn=enter, capture_output=True, text=True, timeout=timeout
    )
