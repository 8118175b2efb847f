"""Every subcommand's path arguments are relative to the working directory, resolved once at the
edge: a relative --cache-dir, --output, --lock, --dest, --sources, --wheel... work as absolute ones do."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fastpex.core.cli import build as build_cli
from fastpex.core.cli import fetch as fetch_cli
from fastpex.core.cli import lock as lock_cli
from fastpex.core.cli import pack as pack_cli
from fastpex.core.cli.run import path_argument
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory


def build_catalog(f: WheelFactory) -> None:
    f.wheel("greet", "1.0", requires_dist=["colorize"], files={"greet/__init__.py": b"X = 1\n"})
    f.wheel("colorize", "2.1")


def test_path_argument_is_absolute_and_expands_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert path_argument("a/b") == str(tmp_path / "a" / "b")
    assert path_argument("~/c") == str(tmp_path / "home" / "c")
    assert path_argument("/abs/../x") == "/x"


def test_relative_paths_work_for_every_subcommand(
    catalog: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    (work / "src" / "app").mkdir(parents=True)
    (work / "src" / "app" / "__init__.py").write_text("")
    (work / "reqs.txt").write_text("greet\n")
    monkeypatch.chdir(work)
    target = "linux_x86_64-cp311"

    assert lock_cli.main(["--resolve", "app", "--requirements-file", "reqs.txt", "--index", catalog.simple_url,
                          "--target", target, "--output", "out/app.lock", "--pylock-output", "out/pylock.toml",
                          "--cache-dir", "cache", "--quiet"]) == 0, capsys.readouterr().err
    assert (work / "out" / "app.lock").is_file() and (work / "out" / "pylock.toml").is_file()
    assert (work / "cache").is_dir()

    assert fetch_cli.main(["--lock", "out/app.lock", "--target", target, "--cache-dir", "cache",
                           "--dest", "wheels", "--manifest-out", "out/wheels.json"]) == 0, capsys.readouterr().err
    manifest = json.loads((work / "out" / "wheels.json").read_text())
    assert sorted(e["filename"] for e in manifest) == ["colorize-2.1-py3-none-any.whl", "greet-1.0-py3-none-any.whl"]
    assert all(Path(e["path"]).is_absolute() for e in manifest)

    wheels = sorted(p.name for p in (work / "wheels").iterdir())
    for no_proxy in ((), ("--no-proxy",)):
        assert lock_cli.main(["--resolve", "app", "--requirement", "greet", "--find-links", "wheels", "--target", target,
                              "--output", "out/local.lock", "--cache-dir", "cache", "--quiet", *no_proxy]) == 0, capsys.readouterr().err
        assert f"file://{work}/wheels/greet-1.0-py3-none-any.whl" in (work / "out" / "local.lock").read_text()
    assert pack_cli.main([*(a for w in wheels for a in ("--wheel", f"wheels/{w}")), "--sources", "src",
                          "--cache-dir", "pack-cache", "--output", "out/packed.pex"]) == 0, capsys.readouterr().err
    assert pack_cli.main(["--wheels-manifest", "out/wheels.json", "--sources", "src",
                          "--cache-dir", "pack-cache", "--output", "out/manifest.pex"]) == 0, capsys.readouterr().err

    assert build_cli.main(["--lock", "out/app.lock", "--target", target, "--cache-dir", "build-cache",
                           "--sources", "src", "--output", "out/built.pex"]) == 0, capsys.readouterr().err
    for pex in ("packed", "manifest", "built"):
        with zipfile.ZipFile(work / "out" / f"{pex}.pex") as zf:
            assert sorted(json.loads(zf.read("PEX-INFO"))["distributions"]) == wheels, pex
            assert "app/__init__.py" in zf.namelist(), pex
    assert (work / "build-cache").is_dir() and (work / "pack-cache").is_dir()
