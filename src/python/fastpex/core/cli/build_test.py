"""`python -m fastpex lock` then `build`, against a loopback index: the whole core pipeline."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from fastpex.testing.pythons import cpython
from fastpex.core.cli import build as build_cli

from fastpex.core.cli import lock as lock_cli
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

TARGETS = ("linux_x86_64-cp311", "macosx_arm64-cp311")


def _python() -> str:
    return str(cpython("3.11"))


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[IndexServer, Path, Path]]:
    root = tmp_path_factory.mktemp("build")
    dists = root / "dists"
    dists.mkdir()
    build_wheel(
        dists,
        "greet",
        "1.0",
        requires_dist=["colorize>=2", 'macpolish; sys_platform == "darwin"'],
        files={"greet/__init__.py": b"from colorize import paint\n\ndef hello(n):\n    return paint('hello ' + n)\n"},
    )
    build_wheel(dists, "colorize", "2.1", files={"colorize/__init__.py": b"def paint(s):\n    return '<' + s + '>'\n"})
    build_wheel(dists, "macpolish", "3.0", tag="py3-none-macosx_11_0_arm64")
    build_wheel(dists, "unrelated", "1.0")
    cache = root / "cache"
    lockfile = root / "app.lock"
    with IndexServer(dists, config=IndexConfig(advertise_metadata=False, serve_metadata_files=False)) as server:
        argv = ["--resolve", "app", "--requirement", "greet", "--requirement", "unrelated", "--index", server.simple_url,
                "--output", str(lockfile), "--cache-dir", str(cache)]
        for target in TARGETS:
            argv += ["--target", target]
        assert lock_cli.main(argv) == 0
        yield server, lockfile, cache


def _sources(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "__init__.py").write_text("")
    (src / "app" / "main.py").write_text("import greet\n\ndef main():\n    print(greet.hello('pex'))\n")
    return src


def _build(lockfile: Path, cache: Path, out: Path, src: Path, *extra: str) -> int:
    return build_cli.main(
        ["--lock", str(lockfile), "--cache-dir", str(cache), "--sources", str(src), "--output", str(out), *extra]
    )


def _files_requested(server: IndexServer) -> List[str]:
    return sorted(Path(r.path).name for r in server.requests if r.path.startswith("/files/"))


def test_builds_a_runnable_pex_with_only_what_the_requirement_needs(tmp_path: Path, locked) -> None:
    server, lockfile, cache = locked
    server.reset_log()
    out = tmp_path / "app.pex"
    code = _build(lockfile, cache, out, _sources(tmp_path), "--target", "linux_x86_64-cp311",
                  "--requirement", "greet", "--entry-point", "app.main:main", "--interpreter-constraint", "CPython==3.11.*")
    assert code == 0
    requested = _files_requested(server)
    # Only the linux target's closure of `greet`: no darwin-only dependency, no unrelated root.
    assert not any(n.startswith(("macpolish", "unrelated")) for n in requested), requested
    run = subprocess.run([_python(), str(out)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root")))
    assert run.stdout == "<hello pex>\n"
    # Layers live directly under the versioned layers directory (and so are found next time).
    layer_dirs = [p for p in (cache / "layers" / "v1").iterdir() if p.is_dir()]
    assert layer_dirs and all((p / "layer.frag").is_file() for p in layer_dirs), layer_dirs

    # Identical inputs, warm caches: byte-identical output and no artifact downloads.
    server.reset_log()
    again = tmp_path / "again.pex"
    assert _build(lockfile, cache, again, _sources(tmp_path / "x"), "--target", "linux_x86_64-cp311",
                  "--requirement", "greet", "--entry-point", "app.main:main", "--interpreter-constraint", "CPython==3.11.*") == 0
    assert _files_requested(server) == []
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(out.read_bytes()).digest()


def test_constraints_narrower_than_the_locks_patch_still_build(tmp_path: Path, locked) -> None:
    """The lock resolved cp311 at 3.11.0 (the lowest patch it admits) and holds for every 3.11
    patch, so a PEX for `>=3.11.3` only builds from it; a named patch is checked as named."""
    _, lockfile, cache = locked
    out = tmp_path / "app.pex"
    assert _build(lockfile, cache, out, _sources(tmp_path), "--target", "linux_x86_64-cp311", "--requirement", "greet",
                  "--entry-point", "app.main:main", "--interpreter-constraint", "CPython>=3.11.3,<3.12") == 0
    assert out.is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--target", "linux_aarch64-cp311"), "linux_x86_64-cp311"),
        (("--target", "nonsense"), "nonsense"),
        (("--requirement", "numpy"), "not in the lock"),
        (("--interpreter-constraint", "CPython==3.12.*"), "does not satisfy"),
        (("--entry-point", "app.missing:main"), "app.missing"),
    ],
)
def test_user_errors_are_clear_and_write_nothing(tmp_path: Path, locked, capsys, extra, message) -> None:
    _, lockfile, cache = locked
    out = tmp_path / "app.pex"
    argv = ["--entry-point", "app.main:main"] if "--entry-point" not in extra else []
    code = _build(lockfile, cache, out, _sources(tmp_path), *argv, *extra)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]


def test_missing_lock_says_how_to_make_one(tmp_path: Path, capsys) -> None:
    code = build_cli.main(["--lock", str(tmp_path / "nope.lock"), "--output", str(tmp_path / "a.pex")])
    assert code == 2
    assert "generate-lockfiles" in capsys.readouterr().err


def test_offline_from_a_cold_store_fails_and_names_the_missing(tmp_path: Path, locked, capsys) -> None:
    _, lockfile, _ = locked
    out = tmp_path / "app.pex"
    code = _build(lockfile, tmp_path / "cold", out, _sources(tmp_path), "--offline", "--entry-point", "app.main:main")
    assert code == 2
    err = capsys.readouterr().err
    assert "greet-1.0-py3-none-any.whl" in err
    assert not out.exists()


def test_multi_platform_pex_carries_each_targets_wheels(tmp_path: Path, locked) -> None:
    _, lockfile, cache = locked
    out = tmp_path / "multi.pex"
    code = _build(lockfile, cache, out, _sources(tmp_path), "--target", "linux_x86_64-cp311",
                  "--target", "macosx_arm64-cp311", "--requirement", "greet", "--entry-point", "app.main:main")
    assert code == 0
    import json
    import zipfile

    with zipfile.ZipFile(out) as zf:
        distributions = json.loads(zf.read("PEX-INFO"))["distributions"]
    assert sorted(distributions) == [
        "colorize-2.1-py3-none-any.whl",
        "greet-1.0-py3-none-any.whl",
        "macpolish-3.0-py3-none-macosx_11_0_arm64.whl",
    ]
    # On this linux host the mac-only wheel is simply not activated.
    run = subprocess.run([_python(), str(out)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root")))
    assert run.stdout == "<hello pex>\n"
