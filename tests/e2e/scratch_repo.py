"""Scratch Pants repositories with fastpex enabled, for the remote-cache and concurrency tests.

Like `pants_e2e_test.py`'s repos (this checkout's backend on `pythonpath`, a loopback index of
factory wheels), plus: two apps (a zipapp and a packed directory) and per-run local caches, so a
test can build with one set of caches, wipe them, and build again with another set, or give two
concurrent `pants` processes the same named caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from fastpex.testing.pythons import cpython
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import build_wheel

REPO_ROOT = Path(os.environ.get("FASTPEX_REPO_ROOT", Path(__file__).resolve().parents[2]))
LAUNCHER = REPO_ROOT / "pants"

APP = "src/app:app"  # zipapp: greet -> colorize
APP_PACKED = "src/app:app-packed"  # the same app as a packed directory
TOOL = "src/tool:tool"  # packed directory: colorize + shout
APP_OUT = "src.app/app.pex"
APP_PACKED_OUT = "src.app/app-packed.pex"
TOOL_OUT = "src.tool/tool.pex"


def python311() -> str:
    configured = os.environ.get("FASTPEX_TEST_PYTHON311")
    if configured and Path(configured).exists():
        return configured
    return str(cpython("3.11"))


def build_dists(dists: Path) -> None:
    """The loopback index's wheels; a few MB of padding so downloads take measurable time."""
    build_wheel(
        dists,
        "greet",
        "1.0",
        requires_dist=["colorize>=2"],
        files={"greet/__init__.py": b"from colorize import paint\n\ndef hello(n):\n    return paint('hello ' + n)\n"},
        file_size_padding=2_000_000,
    )
    build_wheel(
        dists,
        "colorize",
        "2.1",
        files={"colorize/__init__.py": b"def paint(s):\n    return '*' + s + '*'\n"},
        file_size_padding=1_000_000,
    )
    build_wheel(
        dists,
        "shout",
        "1.0",
        files={"shout/__init__.py": b"def shout(s):\n    return s.upper() + '!'\n"},
        file_size_padding=1_500_000,
    )


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())


def snapshot_plugin(dest: Path) -> Path:
    """A private copy of this checkout's `src/python/fastpex` (a `pythonpath` entry for Pants).

    The plugin ships its core's files into every fastpex process, so they are part of every
    fastpex cache key: a test comparing cache keys across runs must not see the checkout
    change under it (e.g. while someone edits it).
    """
    shutil.copytree(
        REPO_ROOT / "src" / "python" / "fastpex",
        dest / "fastpex",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return dest


def pants_toml(
    index: IndexServer,
    *,
    targets: Sequence[str] = ("linux_x86_64-cp311",),
    global_toml: str = "",
    plugin_path: Optional[Path] = None,
) -> str:
    """A pants.toml that enables this checkout's fastpex (or `plugin_path`'s copy of it) on a
    resolve `app` locked from `index` for `targets`; Pants' own tools come from PyPI."""
    global_extra = textwrap.indent(textwrap.dedent(global_toml).strip(), " " * 16)
    target_list = ", ".join(f'"{t}"' for t in targets)
    return f"""
                [GLOBAL]
                pants_version = "2.17.1"
                pythonpath = ["{plugin_path or REPO_ROOT / 'src' / 'python'}"]
                backend_packages = ["pants.backend.python", "fastpex.pants"]
                pantsd = false
{global_extra}

                [anonymous-telemetry]
                enabled = false

                [source]
                root_patterns = ["/src"]

                [python]
                interpreter_constraints = ["CPython==3.11.*"]
                enable_resolves = true
                pip_version = "latest"
                default_resolve = "app"

                [python.resolves]
                app = "3rdparty/app.lock"

                [python-repos]
                indexes = ["{index.simple_url}", "https://pypi.org/simple/"]

                [python-bootstrap]
                search_path = ["<PYENV>", "<PATH>"]

                [fastpex]
                resolves = ["app"]
                indexes = ["{index.simple_url}"]
                targets = [{target_list}]
            """


def write_repo(
    root: Path, index: IndexServer, *, global_toml: str = "", plugin_path: Optional[Path] = None
) -> None:
    """A repo with fastpex apps. `global_toml` is appended to its `[GLOBAL]` section;
    `plugin_path` replaces this checkout's `src/python` on Pants' `pythonpath`."""
    write_files(
        root,
        {
            "pants.toml": pants_toml(index, global_toml=global_toml, plugin_path=plugin_path),
            "3rdparty/BUILD": """
                python_requirement(name="greet", requirements=["greet>=1"], resolve="app")
                python_requirement(name="colorize", requirements=["colorize>=2"], resolve="app")
                python_requirement(name="shout", requirements=["shout"], resolve="app")
            """,
            "src/app/__init__.py": "",
            "src/app/main.py": """
                import greet


                def main():
                    print(greet.hello("fastpex"))
            """,
            "src/app/BUILD": """
                python_sources(name="lib")
                fastpex_binary(name="app", entry_point="app.main:main")
                fastpex_binary(name="app-packed", entry_point="app.main:main", layout="packed")
            """,
            "src/tool/__init__.py": "",
            "src/tool/main.py": """
                import colorize
                import shout


                def main():
                    print(colorize.paint(shout.shout("tool")))
            """,
            "src/tool/BUILD": """
                python_sources(name="lib")
                fastpex_binary(name="tool", entry_point="tool.main:main", layout="packed")
            """,
        },
    )


@dataclass(frozen=True)
class Caches:
    """Every local cache one `pants` run may use, under one directory."""

    root: Path
    store_dir: Optional[Path] = None  # default <root>/lmdb_store
    named_dir: Optional[Path] = None  # default <root>/named_caches

    @property
    def store(self) -> Path:
        return self.store_dir or self.root / "lmdb_store"

    @property
    def named(self) -> Path:
        return self.named_dir or self.root / "named_caches"

    @property
    def fastpex(self) -> Path:
        """fastpex's own cache inside Pants: the `fastpex` named cache."""
        return self.named / "fastpex"

    def args(self) -> List[str]:
        return [f"--local-store-dir={self.store}", f"--named-caches-dir={self.named}"]


def pants_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTS_")}
    env.pop("FASTPEX_CACHE_DIR", None)
    return env


def pants_argv(caches: Caches, *args: str) -> List[str]:
    return [str(LAUNCHER), "--no-pantsd", *caches.args(), *args]


def pants(
    root: Path, caches: Caches, *args: str, check: bool = True, timeout: float = 600
) -> "subprocess.CompletedProcess[str]":
    proc = subprocess.run(
        pants_argv(caches, *args),
        cwd=root,
        env=pants_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pants {' '.join(args)} in {root} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-20000:]}"
        )
    return proc


def wipe_local_state(root: Path) -> None:
    """Everything Pants keeps in the repo between runs (workdir, dist, pid files)."""
    for name in (".pants.d", "dist", ".pids"):
        shutil.rmtree(root / name, ignore_errors=True)


def lock_pins(lockfile: Path) -> Dict[str, str]:
    text = "".join(line for line in lockfile.read_text().splitlines(keepends=True) if not line.startswith("//"))
    lock = json.loads(text)
    return {
        r["project_name"]: r["version"]
        for resolve in lock["locked_resolves"]
        for r in resolve["locked_requirements"]
    }


def sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: Path) -> Dict[str, str]:
    """relpath -> sha256 (+ mode) of every file under `path` (or of `path` itself)."""
    if path.is_file():
        return {".": sha256_path(path)}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(path).as_posix()] = f"{sha256_path(p)} {oct(p.stat().st_mode & 0o777)}"
        elif p.is_symlink():
            out[p.relative_to(path).as_posix()] = f"-> {os.readlink(p)}"
    return out


def run_pex(pex: Path, pex_root: Path) -> str:
    env = dict(os.environ, PEX_ROOT=str(pex_root))
    env.pop("PEX_PYTHON_PATH", None)
    argv = [python311(), str(pex / "__main__.py") if pex.is_dir() else str(pex)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=120).stdout


def file_downloads(index: IndexServer) -> List[str]:
    """Every `/files/` request (whole downloads, range reads, .metadata) the index answered."""
    return [r.path for r in index.requests if r.path.startswith("/files/")]


_COUNTER = re.compile(r"^\s+([a-z_]+): (\d+)$", re.M)


def stats_counters(stderr: str) -> Dict[str, int]:
    """The `Counters:` block that `--stats-log` prints at the end of a run."""
    start = stderr.rfind("Counters:")
    if start < 0:
        return {}
    block = stderr[start:].split("\n\n", 1)[0]
    return {name: int(value) for name, value in _COUNTER.findall(block)}


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def artifacts_in(fastpex_cache: Path) -> List[Path]:
    """The store's entries (`artifacts/v1/<sha256[:2]>/<sha256>`), without lock files."""
    root = fastpex_cache / "artifacts" / "v1"
    if not root.is_dir():
        return []
    return [p for p in root.glob("??/*") if p.is_file() and _SHA256.match(p.name)]


def check_fastpex_cache(fastpex_cache: Path, expected_wheels: Sequence[str] = ()) -> Dict[str, int]:
    """Assert the `fastpex` named cache is intact; return counts per kind.

    - no temp / partial leftovers anywhere (`*.tmp`, `.*.tmp*` dirs, `partial/*.part`);
    - every artifact's sha256 equals its file name, and it sits under its 2-char prefix dir;
    - every layer dir has a manifest naming its own key and a fragment of the manifest's size,
      and there is exactly one layer per wheel (no lost or duplicated layer).
    """
    problems: List[str] = []
    for p in fastpex_cache.rglob("*"):
        if p.name.endswith((".tmp", ".work", ".part")) or (p.parent.name == "partial" and p.name.endswith(".json")):
            problems.append(f"leftover temp/partial file: {p}")

    artifacts = artifacts_in(fastpex_cache)
    for path in artifacts:
        if path.parent.name != path.name[:2]:
            problems.append(f"artifact outside its prefix dir: {path}")
        if sha256_path(path) != path.name:
            problems.append(f"artifact content does not match its name: {path}")
    store = fastpex_cache / "artifacts" / "v1"
    if store.is_dir():
        for p in store.glob("??/*"):
            if not _SHA256.match(p.name) and not p.name.endswith(".lck"):
                problems.append(f"unexpected file in the artifact store: {p}")

    # Layer dirs are named by their 64-hex key (found at any depth under layers/, so the check
    # does not depend on how the layer cache root is nested).
    layers_root = fastpex_cache / "layers"
    layers = [p for p in layers_root.rglob("*") if p.is_dir() and _SHA256.match(p.name)] if layers_root.is_dir() else []
    wheels_seen: Dict[str, int] = {}
    for layer in layers:
        manifest_path = layer / "manifest.json"
        fragment = layer / "layer.frag"
        if not manifest_path.is_file() or not fragment.is_file():
            problems.append(f"incomplete layer dir (no manifest or fragment): {layer}")
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest["key"] != layer.name:
            problems.append(f"layer {layer} has the manifest of {manifest['key']}")
        if fragment.stat().st_size != manifest["fragment_size"]:
            problems.append(f"layer {layer}: fragment is {fragment.stat().st_size} bytes, manifest says {manifest['fragment_size']}")
        artifact = fastpex_cache / "artifacts" / "v1" / manifest["wheel_sha256"][:2] / manifest["wheel_sha256"]
        if not artifact.is_file():
            problems.append(f"layer {layer} names wheel {manifest['wheel_sha256']} that is not in the store")
        wheels_seen[manifest["wheel_filename"]] = wheels_seen.get(manifest["wheel_filename"], 0) + 1
    for wheel, count in wheels_seen.items():
        if count != 1:
            problems.append(f"{count} layers for {wheel} (expected one)")
    for wheel in expected_wheels:
        if wheel not in wheels_seen:
            problems.append(f"no layer for {wheel}")
    assert not problems, "fastpex cache is not intact:\n" + "\n".join(problems)
    return {"artifacts": len(artifacts), "layers": len(layers)}
