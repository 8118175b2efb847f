from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Sequence

import pytest

from fastpex.testing.pythons import cpython
from fastpex.core.cli import pack as pack_cli
from fastpex.core.pack import bootstrap as bootstrap_mod
from fastpex.core.pack.assemble import PexBuildResult, build_pex
from fastpex.core.pack.bootstrap import ensure_bootstrap
from fastpex.core.pack.errors import (
    InvalidSourceError,
    PexBuildError,
    ScriptNotFoundError,
    Zip64RequiredError,
)
from fastpex.core.pack.fragment import SourceEntry, write_fragment
from fastpex.core.pack.layers import Layer, build_layers
from fastpex.core.pack.options import DEFAULT_SHEBANG, PexOptions
from fastpex.core.pack.pex_info import admits_python_before_3_13, render_pex_metadata
from fastpex.core.pack.sources import collect_sources
from fastpex.testing.wheels import build_wheel

STOCK_PEX = Path(sys.executable).parent / "pex"

APP = b"""\
import sys

import greet
import six


def main():
    print("app:", greet.hello(), "six", six.__version__, "py%d.%d" % sys.version_info[:2])
"""


def _clean_env(pex_root: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEX_", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PEX_ROOT"] = str(pex_root)
    env.update(extra)
    return env


def _python(version: str) -> Path:
    return cpython(version)


def _pex(layers: Sequence[Layer], output: Path, cache_root: Path, **options: Any) -> PexBuildResult:
    """`build_pex` with the PEX options as keywords."""
    return build_pex(layers, output, PexOptions(**options), cache_root=cache_root)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Wheels (a factory `greet` + the real `six`), their layers, app sources and a cache."""
    base = tmp_path_factory.mktemp("pexbuild")
    dist = base / "dist"
    greet = build_wheel(
        dist,
        "greet",
        "1.0",
        files={
            "greet/__init__.py": (
                b"def hello():\n    return 'hello'\n\n\n"
                b"def main():\n    print('greet main', hello())\n"
            )
        },
        console_scripts={"greet-cli": "greet:main"},
    )
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    pip_env["PIP_CONFIG_FILE"] = os.devnull
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary=:all:",
         "-d", str(dist), "six==1.16.0"],
        env=pip_env,
        capture_output=True,
        text=True,
    )
    assert download.returncode == 0, f"could not download the six wheel from PyPI: {download.stderr[-500:]}"
    six = dist / "six-1.16.0-py2.py3-none-any.whl"
    src = base / "src"
    src.mkdir()
    (src / "app.py").write_bytes(APP)
    cache = base / "cache"
    layers = build_layers([(greet, _sha(greet)), (six, _sha(six))], cache_root=cache, jobs=2)
    return {"base": base, "dist": dist, "src": src, "cache": cache, "layers": layers, "six": six, "greet": greet}


@pytest.fixture(scope="module")
def built(env) -> dict:
    out = env["base"] / "out"
    out.mkdir()
    common = dict(sources=env["src"], entry_point="app:main", cache_root=env["cache"], include_tools=True)
    zipapp = _pex(env["layers"], out / "app.pex", layout="zipapp", **common)
    packed = _pex(env["layers"], out / "app_packed", layout="packed", **common)
    return {"zipapp": Path(zipapp.output), "packed": Path(packed.output), "result": zipapp}


def _run(python: Path, pex: Path, pex_root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), str(pex), *args],
        env=_clean_env(pex_root, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("version", ["3.11", "3.13", "3.9"])
@pytest.mark.parametrize("layout", ["zipapp", "packed"])
def test_real_pex_runs(built, tmp_path: Path, version: str, layout: str) -> None:
    python = _python(version)
    result = _run(python, built[layout], tmp_path / "pex_root")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"app: hello six 1.16.0 py{version}\n"


def test_zipapp_is_a_valid_executable_zip(built) -> None:
    pex = built["zipapp"]
    assert os.access(pex, os.X_OK)
    assert pex.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(pex) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
    assert {"PEX-INFO", "__main__.py", "__pex__/__init__.py", "app.py", ".bootstrap/", ".deps/"} <= names
    assert ".deps/six-1.16.0-py2.py3-none-any.whl/.layout.json" in names
    if shutil.which("unzip"):
        check = subprocess.run(["unzip", "-tq", str(pex)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def test_pex_tools_info_and_venv(built, tmp_path: Path) -> None:
    python = _python("3.11")
    info = _run(python, built["zipapp"], tmp_path / "root", "info", PEX_TOOLS="1")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["entry_point"] == "app:main"

    venv = tmp_path / "venv"
    made = _run(python, built["zipapp"], tmp_path / "root", "venv", str(venv), PEX_TOOLS="1")
    assert made.returncode == 0, made.stderr
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import greet, six; print(greet.hello(), six.__version__)"],
        env=_clean_env(tmp_path / "root"),
        capture_output=True,
        text=True,
    )
    assert check.stdout == "hello 1.16.0\n", check.stderr


def test_same_distributions_as_stock_pex(env, built, tmp_path: Path) -> None:
    assert STOCK_PEX.exists(), f"stock pex (in the fastpex-dev resolve) not found at {STOCK_PEX}"
    stock = tmp_path / "stock.pex"
    result = subprocess.run(
        [str(STOCK_PEX), "--no-pypi", "-f", str(env["dist"]), "greet", "six", "-D", str(env["src"]),
         "-e", "app:main", "-o", str(stock)],
        env=_clean_env(tmp_path / "stock_root"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(stock) as zf:
        stock_info = json.loads(zf.read("PEX-INFO"))
    ours = built["result"].pex_info
    assert ours["distributions"] == stock_info["distributions"]  # same keys and fingerprints
    assert ours["code_hash"] == stock_info["code_hash"]
    assert set(ours) == set(stock_info)


def test_metadata_matches_pex_builder(env, tmp_path: Path) -> None:
    """Our PEX-INFO / __main__.py / __pex__/__init__.py are byte-identical to PEXBuilder's."""
    from pex.pex_builder import PEXBuilder
    from pex.pex_info import PexInfo

    sources = {"app.py": APP, "pkg/__init__.py": b"", "pkg/.hidden": b"not hashed", "pkg/m.py": b"x=1\n"}
    items = collect_sources(sources)
    bootstrap = ensure_bootstrap(includes_tools=False, cache_root=env["cache"])
    pex_info, main, hook = render_pex_metadata(
        layers=env["layers"],
        sources=items,
        bootstrap_hash=bootstrap.bootstrap_hash,
        options=PexOptions(
            entry_point="app:main",
            interpreter_constraints=[">=3.9", "CPython==3.11.*"],
            inject_env={"A": "1"},
            inject_args=["--flag"],
            inherit_path="fallback",
            strip_pex_env=False,
        ),
    )
    reference = json.loads(pex_info)
    for key in ("code_hash", "pex_hash", "bootstrap_hash"):
        reference.pop(key)

    src = tmp_path / "src"
    builder = PEXBuilder(path=str(tmp_path / "chroot"), interpreter=bootstrap_mod._NoInterpreter())
    builder.info = PexInfo.from_json(json.dumps(reference))
    builder.set_shebang(DEFAULT_SHEBANG)
    for name, data in sources.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
        builder.add_source(str(src / name), name)
    builder.freeze(bytecode_compile=False)
    chroot = Path(builder.path())
    assert (chroot / "PEX-INFO").read_bytes() == pex_info
    assert (chroot / "__main__.py").read_bytes() == main
    assert (chroot / "__pex__" / "__init__.py").read_bytes() == hook


def test_identical_inputs_identical_bytes(env, tmp_path: Path) -> None:
    kwargs = dict(sources=env["src"], entry_point="app:main", cache_root=env["cache"])
    a = _pex(env["layers"], tmp_path / "a.pex", **kwargs)
    b = _pex(list(reversed(env["layers"])), tmp_path / "b.pex", **kwargs)
    assert _sha(Path(a.output)) == _sha(Path(b.output))
    _pex(env["layers"], tmp_path / "pa", layout="packed", **kwargs)
    _pex(env["layers"], tmp_path / "pb", layout="packed", **kwargs)
    assert _tree(tmp_path / "pa") == _tree(tmp_path / "pb")


def _tree(root: Path) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (_sha(path), os.stat(path).st_mode)
    return out


def test_packed_layout_matches_pex(built, env) -> None:
    packed = built["packed"]
    assert (packed / "pex").is_symlink() and os.readlink(packed / "pex") == "__main__.py"
    assert zipfile.is_zipfile(packed / ".bootstrap")
    for layer in env["layers"]:
        dep = packed / ".deps" / layer.wheel_filename
        assert os.stat(dep).st_ino == os.stat(layer.packed_path).st_ino  # hard-linked from cache
        with zipfile.ZipFile(dep) as zf:
            assert ".layout.json" in zf.namelist()
    assert (packed / "app.py").read_bytes() == APP


def test_split_layout_overlays_into_a_packed_pex(env, tmp_path: Path) -> None:
    out = tmp_path / "split"
    result = _pex(env["layers"], out, layout="split", sources=env["src"], entry_point="app:main",
                       cache_root=env["cache"])
    deps, srcs = map(Path, result.outputs)
    assert sorted(p.name for p in deps.iterdir()) == [".bootstrap", ".deps"]
    # A source-only change leaves the deps directory byte-identical.
    src2 = tmp_path / "src2"
    shutil.copytree(env["src"], src2)
    (src2 / "extra.py").write_text("X = 1\n")
    out2 = tmp_path / "split2"
    _pex(env["layers"], out2, layout="split", sources=src2, entry_point="app:main", cache_root=env["cache"])
    assert _tree(out / "deps") == _tree(out2 / "deps")
    assert _tree(out / "srcs") != _tree(out2 / "srcs")

    app = tmp_path / "app"
    shutil.copytree(deps, app, symlinks=True)
    shutil.copytree(srcs, app, symlinks=True, dirs_exist_ok=True)
    run = _run(_python("3.11"), app, tmp_path / "root")
    assert run.stdout == "app: hello six 1.16.0 py3.11\n", run.stderr


@pytest.mark.parametrize("layout", ["packed", "split"])
def test_parts_merge_into_the_whole(env, tmp_path: Path, layout: str) -> None:
    kwargs = dict(layout=layout, sources=env["src"], entry_point="app:main", cache_root=env["cache"])
    whole = _pex(env["layers"], tmp_path / "whole", **kwargs)
    deps = _pex(env["layers"], tmp_path / "deps", part="deps", layout=layout, cache_root=env["cache"])
    app = _pex(env["layers"], tmp_path / "app", part="app", **kwargs)
    merged = tmp_path / "merged"
    for half in (tmp_path / "deps", tmp_path / "app"):
        shutil.copytree(half, merged, symlinks=True, dirs_exist_ok=True)
    assert _tree(merged) == _tree(tmp_path / "whole")
    # The halves share no file, and the deps half holds no application byte.
    assert not set(_tree(tmp_path / "deps")) & set(_tree(tmp_path / "app"))
    assert not any(name.endswith(("PEX-INFO", "__main__.py", "app.py")) for name in _tree(tmp_path / "deps"))
    assert deps.pex_info == {} and app.pex_info == whole.pex_info
    runnable = merged if layout == "packed" else tmp_path / "runnable"
    if layout == "split":
        shutil.copytree(merged / "deps", runnable, symlinks=True)
        shutil.copytree(merged / "srcs", runnable, symlinks=True, dirs_exist_ok=True)
    run = _run(_python("3.11"), runnable, tmp_path / "root")
    assert run.stdout == "app: hello six 1.16.0 py3.11\n", run.stderr


def test_a_zipapp_has_no_parts(env, tmp_path: Path) -> None:
    with pytest.raises(PexBuildError, match="only the packed and split layouts"):
        _pex(env["layers"], tmp_path / "x.pex", part="deps", cache_root=env["cache"])
    assert not (tmp_path / "x.pex").exists()


def test_console_script_entry_point(env, tmp_path: Path) -> None:
    result = _pex(env["layers"], tmp_path / "s.pex", script="greet-cli", cache_root=env["cache"])
    assert result.pex_info["entry_point"] == "greet:main"
    run = _run(_python("3.11"), Path(result.output), tmp_path / "root")
    assert run.stdout == "greet main hello\n", run.stderr


def test_venv_mode_with_injected_env_and_args(env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "show.py").write_text(
        "import os, sys, six\n"
        "def main():\n"
        "    in_venv = sys.prefix != sys.base_prefix\n"
        "    print(sys.argv[1:], os.environ.get('FOO'), in_venv, six.__version__)\n"
    )
    result = _pex(env["layers"], tmp_path / "v.pex", sources=src, entry_point="show:main",
                       venv=True, inject_env={"FOO": "bar"}, inject_args=["--injected"],
                       cache_root=env["cache"])
    assert result.pex_info["venv"] is True and result.pex_info["includes_tools"] is True
    run = _run(_python("3.11"), Path(result.output), tmp_path / "root", "extra")
    assert run.stdout == "['--injected', 'extra'] bar True 1.16.0\n", run.stderr


def test_failed_build_leaves_no_trace(env, tmp_path: Path) -> None:
    out = tmp_path / "app.pex"
    out.write_bytes(b"previous build")
    with pytest.raises(ScriptNotFoundError, match="nope"):
        _pex(env["layers"], out, script="nope", cache_root=env["cache"])
    with pytest.raises(InvalidSourceError):
        _pex(env["layers"], out, sources={"__main__.py": b""}, cache_root=env["cache"])
    assert out.read_bytes() == b"previous build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.pex"]


def _huge_layer(tmp_path: Path, entries: int) -> Layer:
    """A synthetic layer with many tiny entries (installing such a wheel would be slow)."""
    directory = tmp_path / "huge-layer"
    directory.mkdir()
    name = "huge-1.0-py3-none-any.whl"
    prefix = f".deps/{name}/"
    index = write_fragment(
        [SourceEntry(prefix)]
        + [SourceEntry(f"{prefix}f{i:05d}", data=b"", compress=False) for i in range(entries)],
        directory / "layer.frag",
        0,
    )
    return Layer(
        directory=str(directory), key="huge", wheel_filename=name, wheel_sha256="0" * 64,
        project_name="huge", version="1.0", fingerprint="f" * 64, entry_count=len(index.entries),
        fragment_size=os.path.getsize(directory / "layer.frag"), compress_level=0,
        pex_version="2.100.7",
    )


def test_zip64_zipapp_needs_python_3_13(env, tmp_path: Path) -> None:
    huge = _huge_layer(tmp_path, 66000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(Zip64RequiredError, match="packed"):
        _pex([huge], out_dir / "app.pex", cache_root=env["cache"])
    with pytest.raises(Zip64RequiredError, match="packed"):
        _pex([huge], out_dir / "app.pex", interpreter_constraints=[">=3.9"], cache_root=env["cache"])
    assert list(out_dir.iterdir()) == []

    result = _pex([huge], out_dir / "app.pex", interpreter_constraints=[">=3.13"], cache_root=env["cache"])
    assert result.zip64
    with zipfile.ZipFile(result.output) as zf:
        assert len(zf.infolist()) > 66000


def test_zip64_zipapp_over_65535_entries_runs_under_pex_on_3_13(tmp_path: Path) -> None:
    """A real wheel of 66,000 modules: the zipapp needs ZIP64 and still runs, under pex's own
    runtime on 3.13 (zipimport reads ZIP64 from 3.13 on), `PEX_TOOLS=1 ... info` included; the
    same wheels for a target admitting an older Python are refused with the way out named."""
    count = 65_600  # + the wheel's other entries: past the 65,535 a zip without ZIP64 can hold
    files = {f"many/m{i:05d}.py": b"" for i in range(count)}
    files["many/__init__.py"] = b"import os\nCOUNT = len(os.listdir(os.path.dirname(__file__))) - 1\n"
    wheel = build_wheel(tmp_path / "dist", "many", "1.0", files=files)
    cache = tmp_path / "cache"
    layers = build_layers([(wheel, _sha(wheel))], cache_root=cache, jobs=2)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_bytes(
        b"import sys\nimport many\nimport many.m65599\n\n\n"
        b"def main():\n    print('modules', many.COUNT, 'py%d.%d' % sys.version_info[:2])\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    common: Dict[str, Any] = dict(sources=src, entry_point="app:main", include_tools=True)
    with pytest.raises(Zip64RequiredError, match="packed"):
        _pex(layers, out / "old.pex", cache_root=cache, interpreter_constraints=["CPython>=3.11"], **common)
    assert list(out.iterdir()) == []

    result = _pex(layers, out / "app.pex", cache_root=cache, interpreter_constraints=["CPython>=3.13"], **common)
    assert result.zip64
    with zipfile.ZipFile(result.output) as zf:
        assert len(zf.infolist()) > 65535
    raw = Path(result.output).read_bytes()
    assert raw.rfind(b"PK\x06\x06") > 0 and raw.rfind(b"PK\x06\x07") > 0  # really ZIP64 end records
    python = _python("3.13")
    run = _run(python, Path(result.output), tmp_path / "pex_root")
    assert run.returncode == 0, run.stderr[-2000:]
    # The installed package holds every module, `__init__.py` and the `__pycache__` of the two
    # imported, `COUNT` leaves one out.
    assert run.stdout.strip() == f"modules {count + 1} py3.13"
    info = _run(python, Path(result.output), tmp_path / "pex_root", "info", PEX_TOOLS="1")
    assert info.returncode == 0, info.stderr[-2000:]
    assert "many-1.0-py3-none-any.whl" in json.loads(info.stdout)["distributions"]


def test_admits_python_before_3_13() -> None:
    assert admits_python_before_3_13([])
    assert admits_python_before_3_13([">=3.9"])
    assert admits_python_before_3_13([">=3.13", "CPython==3.12.*"])
    assert not admits_python_before_3_13([">=3.13"])
    assert not admits_python_before_3_13(["CPython>=3.13,<4"])


# --- CLI -------------------------------------------------------------------------------------


def test_cli_builds_and_reports_user_errors(env, tmp_path: Path, capsys) -> None:
    greet, six = env["greet"], env["six"]
    out = tmp_path / "cli.pex"
    manifest = tmp_path / "wheels.json"
    manifest.write_text(json.dumps([{"path": str(six), "sha256": _sha(six)}]))
    argv = [
        "--wheel", f"{greet}={_sha(greet)}", "--wheels-manifest", str(manifest),
        "--sources", str(env["src"]), "--entry-point", "app:main", "--interpreter-constraint", ">=3.9",
        "--inject-env", "FOO=bar", "--inject-arg", "x", "--output", str(out),
        "--cache-dir", str(env["cache"]), "--layer-jobs", "1",
    ]
    assert pack_cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with zipfile.ZipFile(out) as zf:
        info = json.loads(zf.read("PEX-INFO"))
    assert info["inject_env"] == {"FOO": "bar"} and info["inject_args"] == ["x"]
    assert info["interpreter_constraints"] == [">=3.9"]
    assert sorted(info["distributions"]) == sorted(layer.wheel_filename for layer in env["layers"])

    bad = ["--wheel", f"{greet}={'0' * 64}", "--output", str(tmp_path / "bad.pex"), "--cache-dir", str(env["cache"])]
    assert pack_cli.main(bad) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and greet.name in err
    assert not (tmp_path / "bad.pex").exists()

    assert pack_cli.main(["--wheel", str(tmp_path / "missing.whl"), "--output", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert pack_cli.main(["--layout", "bogus", "--output", "x"]) == 2
