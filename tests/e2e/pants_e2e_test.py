"""End to end through real Pants 2.17.1: a fresh repo that enables fastpex, a loopback index.

Each test builds a small monorepo in a temp dir whose pants.toml loads this checkout's
backend (`pythonpath`), points `[python-repos]` at a loopback index of factory wheels that
advertises no PEP 658 metadata and serves no `.metadata` files, and runs this checkout's
`./pants` launcher in it, as a user of another repository would.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Iterator, List, Sequence

import pytest

from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

REPO_ROOT = Path(os.environ.get("FASTPEX_REPO_ROOT", Path(__file__).resolve().parents[2]))
LAUNCHER = REPO_ROOT / "pants"
PY311 = "/root/.pyenv/versions/3.11.7/bin/python3.11"


def _python311() -> str:
    for candidate in (os.environ.get("FASTPEX_TEST_PYTHON311"), PY311, "python3.11"):
        if candidate and (Path(candidate).exists() or candidate == "python3.11"):
            return candidate
    raise AssertionError("no CPython 3.11 to run the built PEX with")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    dists = tmp_path_factory.mktemp("dists")
    build_wheel(
        dists,
        "greet",
        "1.0",
        requires_dist=["colorize>=2", 'macpolish; sys_platform == "darwin"'],
        files={"greet/__init__.py": b"from colorize import paint\n\ndef hello(n):\n    return paint('hello ' + n)\n"},
        file_size_padding=2_000_000,
    )
    build_wheel(dists, "greet", "0.9", files={"greet/__init__.py": b"def hello(n):\n    return 'old'\n"})
    build_wheel(
        dists,
        "colorize",
        "2.1",
        files={"colorize/__init__.py": b"def paint(s):\n    return '*' + s + '*'\n"},
        file_size_padding=1_000_000,
    )
    build_wheel(dists, "colorize", "1.0")
    build_wheel(dists, "macpolish", "3.0", tag="py3-none-macosx_11_0_arm64")
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False, honour_range=True)
    with IndexServer(dists, config=config) as server:
        yield server


def _write(root: Path, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())


def _make_repo(root: Path, index: IndexServer, requirements: Sequence[str] = ("greet>=1",)) -> None:
    reqs = "\n".join(
        f'python_requirement(name="r{i}", requirements=["{r}"], resolve="app")'
        for i, r in enumerate(requirements)
    )
    _write(
        root,
        {
            "pants.toml": f"""
                [GLOBAL]
                pants_version = "2.17.1"
                pythonpath = ["{REPO_ROOT / 'src' / 'python'}"]
                backend_packages = ["pants.backend.python", "fastpex.pants"]
                pantsd = false

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
                # Pants' own tools (pytest) come from PyPI; the app's requirements are locked
                # from the loopback index only.
                indexes = ["{index.simple_url}", "https://pypi.org/simple/"]

                [python-bootstrap]
                search_path = ["<PYENV>", "<PATH>"]

                [fastpex]
                resolves = ["app"]
                indexes = ["{index.simple_url}"]
                targets = ["linux_x86_64-cp311", "macosx_arm64-cp311"]
            """,
            "3rdparty/BUILD": reqs + "\n",
            "src/app/__init__.py": "",
            "src/app/main.py": """
                import greet


                def main():
                    print(greet.hello("fastpex"))
            """,
            "src/app/main_test.py": """
                from app.main import main


                def test_main(capsys):
                    main()
                    assert capsys.readouterr().out == "*hello fastpex*\\n"
            """,
            "src/app/BUILD": """
                python_sources(name="lib")
                python_tests(name="tests")
                fastpex_binary(name="app", entry_point="app.main:main")
                fastpex_binary(name="app-packed", entry_point="app.main:main", layout="packed")
            """,
        },
    )


def _pants(root: Path, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTS_")}
    proc = subprocess.run(
        [str(LAUNCHER), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pants {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _lock_json(path: Path) -> dict:
    text = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("//"))
    return json.loads(text)


def _artifact_gets(index: IndexServer) -> List[str]:
    """Requests that fetched a whole wheel (no Range) from the index."""
    return [
        r.path
        for r in index.requests
        if r.path.startswith("/files/") and r.path.endswith(".whl") and not r.range and r.method == "GET"
    ]


def test_lock_then_stock_test_and_fastpex_package(tmp_path: Path, index: IndexServer) -> None:
    _make_repo(tmp_path, index)
    index.reset_log()

    _pants(tmp_path, "generate-lockfiles", "--resolve=app")

    lockfile = tmp_path / "3rdparty" / "app.lock"
    assert lockfile.read_text().startswith("// This lockfile was autogenerated by Pants.")
    lock = _lock_json(lockfile)
    pins = {
        r["project_name"]: r["version"]
        for resolve in lock["locked_resolves"]
        for r in resolve["locked_requirements"]
    }
    assert pins == {"greet": "1.0", "colorize": "2.1", "macpolish": "3.0"}
    for resolve in lock["locked_resolves"]:
        for req in resolve["locked_requirements"]:
            for artifact in req["artifacts"]:
                assert artifact["algorithm"] == "sha256" and len(artifact["hash"]) == 64
    # The index advertised no metadata and served no .metadata: metadata came from range reads.
    assert _artifact_gets(index) == []
    assert (tmp_path / "3rdparty" / "pylock.app.toml").read_text().startswith("lock-version")

    # Pants' own python goals consume the lock fastpex wrote.
    tested = _pants(tmp_path, "test", "src/app:tests")
    assert "succeeded" in tested.stderr

    # The fastpex_binary builds for linux only: the darwin-only dependency is never fetched.
    index.reset_log()
    _pants(tmp_path, "package", "src/app:app", "src/app:app-packed")
    fetched = {Path(r.path).name for r in index.requests if r.path.startswith("/files/")}
    assert not any(name.startswith("macpolish") for name in fetched), fetched
    env = dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root"))
    for name in ("app.pex", "app-packed.pex"):
        pex = tmp_path / "dist" / "src.app" / name
        run = subprocess.run([_python311(), str(pex)], capture_output=True, text=True, env=env, check=True)
        assert run.stdout == "*hello fastpex*\n", name
    assert (tmp_path / "dist" / "src.app" / "app-packed.pex").is_dir()

    # PEX_TOOLS work on the zipapp.
    info = subprocess.run(
        [_python311(), str(tmp_path / "dist" / "src.app" / "app.pex"), "info"],
        capture_output=True, text=True, env=dict(env, PEX_TOOLS="1"), check=True,
    )
    assert json.loads(info.stdout)["entry_point"] == "app.main:main"


def test_relock_is_byte_identical_and_bad_requirement_keeps_lock(tmp_path: Path, index: IndexServer) -> None:
    _make_repo(tmp_path, index)
    _pants(tmp_path, "generate-lockfiles")
    lockfile = tmp_path / "3rdparty" / "app.lock"
    first = lockfile.read_bytes()
    _pants(tmp_path, "generate-lockfiles", "--resolve=app")
    assert lockfile.read_bytes() == first

    # A requirement nothing satisfies: a clear error naming the target, the old lock untouched.
    (tmp_path / "3rdparty" / "BUILD").write_text(
        'python_requirement(name="r0", requirements=["greet>=7"], resolve="app")\n'
    )
    failed = _pants(tmp_path, "generate-lockfiles", "--resolve=app", check=False)
    assert failed.returncode != 0
    assert "linux_x86_64-cp311" in failed.stderr or "macosx_arm64-cp311" in failed.stderr
    assert "greet" in failed.stderr
    assert lockfile.read_bytes() == first
