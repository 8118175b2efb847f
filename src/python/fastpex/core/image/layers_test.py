from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from fastpex.core.errors import UserError
from fastpex.core.image.bytecode import NoCompilerError, find_compiler
from fastpex.core.image.install import HostileWheelError, VenvScheme
from fastpex.core.image.layers import LayerSettings, build_layer, build_layers
from fastpex.core.pack.layers import WheelInput
from fastpex.testing.pythons import cpython
from fastpex.testing.wheels import WheelFactory, record_digest

PEX = Path(sys.executable).with_name("pex")


def _input(path: Path) -> WheelInput:
    return WheelInput(str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def _settings(python: str = "3.11", prefix: str = "/app") -> LayerSettings:
    return LayerSettings(VenvScheme(prefix, python), find_compiler([str(cpython(python))], python))


def _members(blob: Path) -> Dict[str, tarfile.TarInfo]:
    with tarfile.open(blob) as tar:
        return {m.name: m for m in tar.getmembers()}


def _read(blob: Path, name: str) -> bytes:
    with tarfile.open(blob) as tar:
        fp = tar.extractfile(name)
        assert fp is not None
        return fp.read()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    factory = WheelFactory(tmp_path_factory.mktemp("wheels"))
    demo = factory.wheel(
        "demo-lib", "1.0",
        files={
            "demo_lib/__init__.py": b"VALUE = 42\ndef main():\n    print('main', VALUE)\ndef gui():\n    print('gui')\n",
            "demo_lib/sub/__init__.py": b"",
            "demo_lib/sub/mod.py": b"class run:\n    @staticmethod\n    def me():\n        print('run.me')\n        return 3\n",
            "demo_lib-1.0.data/scripts/rawtool": b"#!python\nimport demo_lib\nprint('raw', demo_lib.VALUE)\n",
            "demo_lib-1.0.data/scripts/shtool": b"#!/bin/sh\necho hi\n",
            "demo_lib-1.0.data/data/share/demo/thing.txt": b"data\n",
            "demo_lib-1.0.data/headers/demo.h": b"int x;\n",
            "demo_lib-1.0.data/platlib/extra_plat.py": b"Q = 1\n",
            "demo_lib.pth": b"import sys; sys.demo_pth = True\n",
        },
        console_scripts={"demo-cli": "demo_lib:main", "demo-cli2": "demo_lib.sub.mod:run.me"},
        entry_points={"gui_scripts": {"demo-gui": "demo_lib:gui"}},
    )
    plain = factory.wheel("plain", "2.0", tag="cp311-cp311-linux_x86_64", files={"plain/__init__.py": b"P = 2\n"})
    return [demo, plain]


def _pex_venv(wheels: List[Path], dest: Path, tmp: Path) -> Path:
    python = str(cpython("3.11"))
    pex_file = tmp / "app.pex"
    env = {**os.environ, "PEX_ROOT": str(tmp / "pex_root")}
    subprocess.run(
        [str(PEX), "--no-pypi", "-f", str(wheels[0].parent), "demo-lib", "plain", "--python", python,
         "--include-tools", "-o", str(pex_file)],
        check=True, env=env, capture_output=True,
    )
    subprocess.run(
        [python, str(pex_file), "venv", "--scope", "deps", "--site-packages-copies", str(dest)],
        check=True, env={**env, "PEX_TOOLS": "1"}, capture_output=True,
    )
    return dest


# Files pex's venv has that are its own bookkeeping or the venv itself (our venv layer's job).
def _pex_specific(relative: str) -> bool:
    name = relative.split("/")[-1]
    return (
        relative.startswith(("bin/activate", "bin/Activate", "bin/python", "include/python", "lib64"))
        or relative in (".pex-venv-scope", "pyvenv.cfg")
        or ".pex-info" in relative
        or name == "REQUESTED"
        or "__pycache__" in relative
        or "_distutils_hack" in relative
        or relative.endswith("distutils-precedence.pth")
    )


def test_installed_files_match_pex_venv(wheels: List[Path], tmp_path: Path) -> None:
    venv = _pex_venv(wheels, tmp_path / "venv", tmp_path)
    theirs = {
        str(p.relative_to(venv)) for p in venv.rglob("*") if (p.is_file() or p.is_symlink()) and not _pex_specific(str(p.relative_to(venv)))
    }
    layer = build_layer([_input(w) for w in wheels], _settings(), tmp_path / "cache")
    members = _members(layer.path)
    ours = {n[len("app/venv/"):] for n, m in members.items() if not m.isdir() and "__pycache__" not in n}
    assert ours == theirs

    site = "app/venv/lib/python3.11/site-packages"
    # A `#!python` script is rewritten the way pex rewrites it, to the venv's interpreter.
    theirs_raw = (venv / "bin/rawtool").read_bytes().replace(str(venv).encode(), b"/app/venv")
    assert _read(layer.path, "app/venv/bin/rawtool") == theirs_raw
    assert _read(layer.path, "app/venv/bin/shtool") == (venv / "bin/shtool").read_bytes()
    assert members["app/venv/bin/rawtool"].mode == 0o755
    # Console and GUI scripts: the same shebang, and they call the same function.
    python = str(venv / "bin" / "python3.11")
    for script in ("demo-cli", "demo-cli2", "demo-gui"):
        ours_script = _read(layer.path, f"app/venv/bin/{script}")
        assert ours_script.splitlines()[0] == b"#!/app/venv/bin/python3.11 -I"
        assert (venv / "bin" / script).read_bytes().splitlines()[0].replace(str(venv).encode(), b"/app/venv") == ours_script.splitlines()[0]
        assert members[f"app/venv/bin/{script}"].mode == 0o755
        our_file = tmp_path / f"ours-{script}"
        our_file.write_bytes(ours_script)
        mine = subprocess.run([python, str(our_file)], capture_output=True, text=True)
        pexs = subprocess.run([python, str(venv / "bin" / script)], capture_output=True, text=True)
        assert (mine.stdout, mine.returncode) == (pexs.stdout, pexs.returncode) and mine.stdout
    # Byte code: unchecked-hash pycs (PEP 552 flags == 0b01) for every module, none for scripts.
    pyc = _read(layer.path, f"{site}/demo_lib/sub/__pycache__/mod.cpython-311.pyc")
    assert int.from_bytes(pyc[4:8], "little") == 0b01
    assert not any("bin/__pycache__" in n for n in members)
    assert f"{site}/__pycache__/extra_plat.cpython-311.pyc" in members
    # INSTALLER and a RECORD listing every installed file, pycs included.
    assert _read(layer.path, f"{site}/demo_lib-1.0.dist-info/INSTALLER") == b"fastpex\n"
    record = _read(layer.path, f"{site}/demo_lib-1.0.dist-info/RECORD").decode()
    assert "../../../bin/demo-cli,sha256=" in record and "demo_lib/sub/__pycache__/mod.cpython-311.pyc,sha256=" in record
    assert f"../../../bin/rawtool,{record_digest(_read(layer.path, 'app/venv/bin/rawtool'))}," in record
    # Reproducible tar: owner, times and modes fixed, parents listed before children.
    names = list(members)
    assert names == sorted(names) and names[0] == "app"
    for member in members.values():
        assert (member.uid, member.gid, member.mtime, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode in (0o644, 0o755) and not member.pax_headers


def test_blobs_are_byte_identical_across_cache_roots(wheels: List[Path], tmp_path: Path) -> None:
    inputs = [_input(w) for w in wheels]
    groups = [[inputs[0]], [inputs[1]], inputs]
    first = build_layers(groups, _settings(), cache_root=tmp_path / "a", jobs=2)
    second = build_layers(groups, _settings(), cache_root=tmp_path / "b", jobs=1)
    assert [layer.digest for layer in first] == [layer.digest for layer in second]
    assert all(layer.built for layer in first)
    for a, b in zip(first, second):
        assert a.path.read_bytes() == b.path.read_bytes()
        assert "sha256:" + hashlib.sha256(a.path.read_bytes()).hexdigest() == a.digest
    again = build_layers(groups, _settings(), cache_root=tmp_path / "a")
    assert [layer.digest for layer in again] == [layer.digest for layer in first]
    assert not any(layer.built for layer in again)
    # Another prefix or level is another key, and other bytes.
    other = build_layer([inputs[1]], _settings(prefix="/srv"), tmp_path / "a")
    assert other.digest != first[1].digest and "srv/venv/lib/python3.11/site-packages/plain/__init__.py" in _members(other.path)


def _hostile_wheel(path: Path, name: str, mode: int = 0o644, data: bytes = b"x = 1\n", link: bool = False) -> Path:
    members = {
        "evil-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        "evil-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = ((stat.S_IFLNK | 0o777) if link else (mode if stat.S_IFMT(mode) else stat.S_IFREG | mode)) << 16
        zf.writestr(info, data)
        for member, content in members.items():
            zf.writestr(member, content)
    return path


@pytest.mark.parametrize(
    "member, kwargs, message",
    [
        ("/etc/passwd", {}, "absolute path"),
        ("../../../../etc/cron.d/x", {}, "`..`"),
        ("evil/../../../../x.py", {}, "`..`"),
        ("evil-1.0.data/data/../../../../../../etc/x", {}, "`..`"),
        ("evil/link", {"link": True, "data": b"../../../../../../etc/shadow"}, "leaves"),
        ("evil/abs_link", {"link": True, "data": b"/etc/shadow"}, "leaves"),
        ("evil/dev", {"mode": stat.S_IFCHR | 0o644}, "device node"),
        ("evil/suid", {"mode": 0o4755}, "setuid"),
        ("evil/sgid", {"mode": 0o2755}, "setgid"),
        ("evil\\..\\x.py", {}, "backslash"),
    ],
)
def test_hostile_wheels_are_refused(tmp_path: Path, member: str, kwargs: dict, message: str) -> None:
    wheel = _hostile_wheel(tmp_path / "evil-1.0-py3-none-any.whl", member, **kwargs)
    with pytest.raises(HostileWheelError, match=message) as info:
        build_layer([_input(wheel)], _settings(), tmp_path / "cache")
    assert "evil-1.0-py3-none-any.whl" in str(info.value) and member in str(info.value)
    # Nothing half-written in the cache.
    # Entry locks and the cache's sweep marker (`.v1.swept`, beside the entries) are bookkeeping.
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.endswith((".lck", ".swept"))]
    assert leftovers == []


def test_hostile_script_name_is_refused(tmp_path: Path) -> None:
    wheel = WheelFactory(tmp_path).wheel("evil", "1.0", console_scripts={"../../etc/x": "evil:main"})
    with pytest.raises(HostileWheelError, match="not a plain file name"):
        build_layer([_input(wheel)], _settings(), tmp_path / "cache")


def test_a_link_inside_the_tree_is_kept(tmp_path: Path) -> None:
    wheel = _hostile_wheel(tmp_path / "evil-1.0-py3-none-any.whl", "evil/alias.py", link=True, data=b"../evil-1.0.dist-info/METADATA")
    layer = build_layer([_input(wheel)], _settings(), tmp_path / "cache")
    member = _members(layer.path)["app/venv/lib/python3.11/site-packages/evil/alias.py"]
    assert member.issym() and member.linkname == "../evil-1.0.dist-info/METADATA"


def test_no_interpreter_for_the_target_python(tmp_path: Path) -> None:
    with pytest.raises(NoCompilerError, match="needs a CPython 3.11 interpreter") as info:
        find_compiler([str(cpython("3.12"))], "3.11")
    assert "3.12" in str(info.value)


def test_wheel_with_wrong_sha256_is_refused(wheels: List[Path], tmp_path: Path) -> None:
    wrong = WheelInput(str(wheels[1]), "0" * 64)
    with pytest.raises(Exception, match="sha256"):
        build_layer([wrong], _settings(), tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("layer.tar.gz")]


def test_colliding_wheels_are_refused(tmp_path: Path) -> None:
    factory = WheelFactory(tmp_path)
    a = factory.wheel("a", "1.0", files={"shared/x.py": b"A = 1\n"})
    b = factory.wheel("b", "1.0", files={"shared/x.py": b"B = 1\n"})
    with pytest.raises(UserError, match="both install"):
        build_layer([_input(a), _input(b)], _settings(), tmp_path / "cache")


def test_byte_code_shards_map_back_to_their_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import marshal

    from fastpex.core.image import bytecode

    monkeypatch.setattr(bytecode, "SHARD", 2)
    files = {f"many/m{i}.py": f"VALUE = {i}\n".encode() for i in range(7)}
    wheel = WheelFactory(tmp_path).wheel("many", "1.0", files=files)
    layer = build_layer([_input(wheel)], _settings(), tmp_path / "cache")
    for i in range(7):
        pyc = _read(layer.path, f"app/venv/lib/python3.11/site-packages/many/__pycache__/m{i}.cpython-311.pyc")
        namespace: dict = {}
        exec(marshal.loads(pyc[16:]), namespace)
        assert namespace["VALUE"] == i
