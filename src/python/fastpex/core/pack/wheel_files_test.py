"""`deps_install="wheels"`: whole wheels under `.deps/`, installed by pex's own runtime on first
start (in parallel), for the zipapp and packed layouts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict

import pytest

from fastpex.core.cli import pack as pack_cli
from fastpex.core.pack.api import PackRequest, pack
from fastpex.core.pack.assemble import build_pex
from fastpex.core.pack.errors import PexBuildError, WheelHashMismatchError
from fastpex.core.pack.layers import WheelInput, build_layers
from fastpex.core.pack.options import PexOptions
from fastpex.core.pack.wheel_files import build_wheel_file_layers
from fastpex.testing.pythons import cpython
from fastpex.testing.wheels import build_wheel

STOCK_PEX = Path(sys.executable).parent / "pex"
APP = b"import greet, shout\n\n\ndef main():\n    print('app:', greet.hello(), shout.shout('hi'))\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_env(pex_root: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEX_", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PEX_ROOT"] = str(pex_root)
    env.update(extra)
    return env


def _run(pex: Path, pex_root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(cpython("3.11")), str(pex), *args],
        env=_clean_env(pex_root, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("wheelfiles")
    dist = base / "dist"
    greet = build_wheel(
        dist, "greet", "1.0",
        files={"greet/__init__.py": b"def hello():\n    return 'hello'\n\n\ndef main():\n    print('greet main')\n"},
        console_scripts={"greet-cli": "greet:main"},
    )
    shout = build_wheel(dist, "shout", "2.0", files={"shout/__init__.py": b"def shout(s):\n    return s.upper()\n"})
    # pex's runtime installs in parallel from 2 x 4 wheels on (`jobs.MULTIPROCESSING_DEFAULT_MIN_AVERAGE_LOAD`).
    pads = [build_wheel(dist, f"pad{i}", "1.0") for i in range(6)]
    src = base / "src"
    src.mkdir()
    (src / "app.py").write_bytes(APP)
    wheels = tuple(WheelInput(str(w), _sha(w)) for w in [greet, shout, *pads])
    return {"base": base, "dist": dist, "src": src, "cache": base / "cache", "wheels": wheels}


def _pack(env: dict, output: Path, cache: Path = None, **options) -> Path:  # type: ignore[assignment]
    opts = PexOptions(sources=env["src"], entry_point="app:main", deps_install="wheels", **options)
    result = pack(PackRequest(wheels=env["wheels"], output=str(output), options=opts,
                              cache_root=str(cache or env["cache"]), layer_jobs=2))
    return Path(result.output)


@pytest.fixture(scope="module")
def built(env) -> dict:
    out = env["base"] / "out"
    return {
        "zipapp": _pack(env, out / "app.pex", include_tools=True),
        "packed": _pack(env, out / "app_packed", layout="packed", include_tools=True),
    }


def test_zipapp_stores_the_wheels_whole(env, built) -> None:
    with zipfile.ZipFile(built["zipapp"]) as zf:
        info = json.loads(zf.read("PEX-INFO"))
        deps = sorted(n for n in zf.namelist() if n.startswith(".deps/"))
        assert deps == [".deps/"] + sorted(f".deps/{w.wheel_filename}" for w in env["wheels"])
        for wheel in env["wheels"]:
            member = zf.getinfo(f".deps/{wheel.wheel_filename}")
            assert member.compress_type == zipfile.ZIP_STORED
            assert (member.external_attr >> 16) == 0o100644
            assert zf.read(member) == Path(wheel.path).read_bytes()
        assert zf.testzip() is None
    assert info["deps_are_wheel_files"] is True
    assert info["max_install_jobs"] == 0  # one job per core: the point of storing wheels
    assert info["distributions"] == {w.wheel_filename: w.sha256 for w in env["wheels"]}
    assert info["requirements"] == ["greet==1.0"] + [f"pad{i}==1.0" for i in range(6)] + ["shout==2.0"]


def test_packed_holds_the_wheel_files(env, built) -> None:
    packed = built["packed"]
    for wheel in env["wheels"]:
        dep = packed / ".deps" / wheel.wheel_filename
        assert dep.is_file() and _sha(dep) == wheel.sha256
    info = json.loads((packed / "PEX-INFO").read_text())
    assert info["deps_are_wheel_files"] is True


@pytest.mark.parametrize("layout", ["zipapp", "packed"])
def test_runs_under_pex_runtime_installing_wheels_in_parallel(env, built, tmp_path: Path, layout: str) -> None:
    root = tmp_path / "root"
    result = _run(built[layout], root, PEX_VERBOSE="9")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "app: hello HI\n"
    assert re.search(r"Using [2-9] parallel jobs to install 8 wheels", result.stderr), result.stderr[-2000:]
    for wheel in env["wheels"]:  # installed by the runtime, keyed by the wheel's sha256
        (installed,) = (root / "installed_wheels").glob(f"*/{wheel.sha256}/{wheel.wheel_filename}")
        assert (installed / ".layout.json").is_file()
    again = _run(built[layout], root)
    assert again.returncode == 0 and again.stdout == "app: hello HI\n", again.stderr


@pytest.mark.parametrize("layout", ["zipapp", "packed"])
def test_pex_tools_info_and_venv(built, tmp_path: Path, layout: str) -> None:
    info = _run(built[layout], tmp_path / "root", "info", PEX_TOOLS="1")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["deps_are_wheel_files"] is True
    venv = tmp_path / "venv"
    made = _run(built[layout], tmp_path / "root", "venv", str(venv), PEX_TOOLS="1")
    assert made.returncode == 0, made.stderr
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import greet, shout; print(greet.hello(), shout.shout('x'))"],
        env=_clean_env(tmp_path / "root"), capture_output=True, text=True,
    )
    assert check.stdout == "hello X\n", check.stderr


def _tree(root: Path) -> Dict[str, object]:
    return {
        p.relative_to(root).as_posix(): ("link", os.readlink(p)) if p.is_symlink() else (_sha(p), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_rebuilds_are_byte_identical(env, built, tmp_path: Path) -> None:
    again = _pack(env, tmp_path / "again.pex", include_tools=True)
    fresh = _pack(env, tmp_path / "fresh.pex", cache=tmp_path / "fresh-cache", include_tools=True)
    assert _sha(again) == _sha(built["zipapp"]) == _sha(fresh)
    # (not against `built`: running a packed PEX leaves `__pycache__/` in it)
    packed = _pack(env, tmp_path / "again_packed", layout="packed", include_tools=True)
    fresh_packed = _pack(env, tmp_path / "fresh_packed", layout="packed", include_tools=True,
                         cache=tmp_path / "fresh-cache")
    assert _tree(packed) == _tree(fresh_packed)
    assert not os.path.samefile(packed / ".deps" / env["wheels"][0].wheel_filename, env["wheels"][0].path)


def test_pex_info_matches_stock_pex_no_pre_install_wheels(env, built, tmp_path: Path) -> None:
    stock = tmp_path / "stock.pex"
    result = subprocess.run(
        [str(STOCK_PEX), "--no-pypi", "-f", str(env["dist"]), *(f"pad{i}==1.0" for i in range(6)), "greet==1.0", "shout==2.0", "-D", str(env["src"]),
         "-e", "app:main", "--include-tools", "--no-pre-install-wheels", "--max-install-jobs", "0", "-o", str(stock)],
        env=_clean_env(tmp_path / "stock_root"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(stock) as zf, zipfile.ZipFile(built["zipapp"]) as ours:
        theirs, mine = json.loads(zf.read("PEX-INFO")), json.loads(ours.read("PEX-INFO"))
        for key in ("distributions", "deps_are_wheel_files", "max_install_jobs", "code_hash", "requirements"):
            assert mine[key] == theirs[key], key
        assert set(mine) == set(theirs)
        for wheel in env["wheels"]:
            name = f".deps/{wheel.wheel_filename}"
            assert ours.getinfo(name).compress_type == zf.getinfo(name).compress_type
            assert ours.read(name) == zf.read(name)


def test_max_install_jobs_and_script(env, tmp_path: Path) -> None:
    opts = PexOptions(script="greet-cli", deps_install="wheels", max_install_jobs=2)
    out = pack(PackRequest(wheels=env["wheels"], output=str(tmp_path / "s.pex"), options=opts,
                           cache_root=str(env["cache"])))
    assert out.pex_info["max_install_jobs"] == 2
    assert out.pex_info["entry_point"] == "greet:main"  # found in the wheel's entry_points.txt
    run = _run(Path(out.output), tmp_path / "root")
    assert run.returncode == 0 and run.stdout == "greet main\n", run.stderr
    # Pre-installed chroots are extracted over one job per core too, unless told otherwise.
    default = pack(PackRequest(wheels=env["wheels"], output=str(tmp_path / "d.pex"),
                               options=PexOptions(sources=env["src"], entry_point="app:main"),
                               cache_root=str(env["cache"])))
    assert default.pex_info["deps_are_wheel_files"] is False and default.pex_info["max_install_jobs"] == 0
    serial = pack(PackRequest(wheels=env["wheels"], output=str(tmp_path / "serial.pex"),
                              options=PexOptions(sources=env["src"], entry_point="app:main", max_install_jobs=1),
                              cache_root=str(env["cache"])))
    assert serial.pex_info["max_install_jobs"] == 1


def test_refusals(env, tmp_path: Path) -> None:
    greet = env["wheels"][0]
    bad = WheelInput(greet.path, "0" * 64)
    with pytest.raises(WheelHashMismatchError):
        pack(PackRequest(wheels=(bad,), output=str(tmp_path / "bad.pex"),
                         options=PexOptions(deps_install="wheels"), cache_root=str(tmp_path / "c")))
    assert not (tmp_path / "bad.pex").exists()
    chroots = build_layers([greet], cache_root=env["cache"], jobs=1)
    with pytest.raises(PexBuildError, match="installed chroot"):
        build_pex(chroots, tmp_path / "mixed.pex", PexOptions(deps_install="wheels"), cache_root=env["cache"])
    whole = build_wheel_file_layers([greet], cache_root=env["cache"])
    with pytest.raises(PexBuildError, match="whole wheel"):
        build_pex(whole, tmp_path / "mixed.pex", PexOptions(), cache_root=env["cache"])
    with pytest.raises(PexBuildError, match="deps_install"):
        build_pex(whole, tmp_path / "x.pex", PexOptions(deps_install="bogus"), cache_root=env["cache"])


def test_cli_flags(env, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_packed"
    argv = [*(f"--wheel={w.path}={w.sha256}" for w in env["wheels"]), "--sources", str(env["src"]),
            "--entry-point", "app:main", "--layout", "packed", "--deps-install", "wheels",
            "--max-install-jobs", "-1", "--cache-dir", str(env["cache"]), "--output", str(out)]
    assert pack_cli.main(argv) == 0
    info = json.loads((out / "PEX-INFO").read_text())
    assert info["deps_are_wheel_files"] is True and info["max_install_jobs"] == -1
    assert pack_cli.main([*argv[:-1], str(tmp_path / "y"), "--max-install-jobs", "-2"]) == 2
    assert "--max-install-jobs" in capsys.readouterr().err
