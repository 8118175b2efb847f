from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import zipfile
from pathlib import Path

import pytest

from fastpex.core.errors import HashMismatchError
from fastpex.core.pack import fragment, layers
from fastpex.core.pack.assembler import fragment_to_zip
from fastpex.core.pack.errors import CorruptWheelError, UnsafeWheelError
from fastpex.core.pack.fragment import read_fragment_index
from fastpex.core.pack.layers import (
    WheelInput,
    build_layer,
    build_layers,
    ensure_packed,
)
from fastpex.testing.wheels import build_wheel


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _layer_dirs(cache: Path) -> list:
    root = cache / "layers" / "v1"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return build_wheel(
        tmp_path / "dist",
        "demo-pkg",
        "1.2.0",
        files={
            "demo_pkg/__init__.py": b"VALUE = 'demo'\n",
            "demo_pkg/data/info.txt": b"payload\n" * 100,
        },
        console_scripts={"demo": "demo_pkg:main"},
    )


def _installed_by_pex(wheel: Path, dest: Path) -> dict:
    """What pex itself installs (the reference chroot), as relpath -> (bytes, executable)."""
    from pex.pep_427 import install_wheel_chroot

    installed = install_wheel_chroot(str(wheel), str(dest))
    files = {}
    for root, _, names in os.walk(dest):
        for name in names:
            path = Path(root) / name
            rel = path.relative_to(dest).as_posix()
            files[rel] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return {"files": files, "fingerprint": installed.fingerprint}


def test_layer_matches_pex_install(tmp_path: Path, wheel: Path) -> None:
    cache = tmp_path / "cache"
    layer = build_layer(wheel, _sha(wheel), cache_root=cache)
    assert layer.built
    assert layer.wheel_filename == wheel.name
    assert (layer.project_name, layer.version) == ("demo-pkg", "1.2.0")
    assert layer.requirement == "demo-pkg==1.2.0"
    assert layer.console_scripts == {"demo": "demo_pkg:main"}
    assert "demo" in layer.scripts
    assert Path(layer.fragment_path) == cache / "layers" / "v1" / layer.key / "layer.frag"

    reference = _installed_by_pex(wheel, tmp_path / "ref" / wheel.name)
    assert layer.fingerprint == reference["fingerprint"]

    out = tmp_path / "layer.zip"
    fragment_to_zip(layer.fragment_path, out)
    prefix = f".deps/{wheel.name}/"
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert all(n.startswith(prefix) for n in names)
        assert prefix in names and prefix + "demo_pkg/data/" in names
        got = {
            n[len(prefix) :]: (zf.read(n), bool((zf.getinfo(n).external_attr >> 16) & stat.S_IXUSR))
            for n in names
            if not n.endswith("/")
        }
    assert got == reference["files"]
    assert ".layout.json" in got
    assert layer.entry_count == len(names)


def test_cache_hit_does_no_work(tmp_path: Path, wheel: Path) -> None:
    cache = tmp_path / "cache"
    first = build_layer(wheel, _sha(wheel), cache_root=cache)
    before = os.stat(first.fragment_path)
    sha = _sha(wheel)
    wheel.unlink()  # a hit must not even read the wheel
    second = build_layer(wheel, sha, cache_root=cache)
    assert first.built and not second.built
    assert second == first
    after = os.stat(second.fragment_path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # A different compression level is a different layer.
    with pytest.raises(CorruptWheelError):
        build_layer(wheel, sha, cache_root=cache, compress_level=1)


def _race(args) -> tuple:
    wheel, sha, cache, barrier = args
    barrier.wait()
    layer = build_layer(wheel, sha, cache_root=cache)
    return layer.key, layer.built


def test_concurrent_builds_leave_one_intact_layer(tmp_path: Path, wheel: Path) -> None:
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    queue = ctx.Queue()

    def worker() -> None:
        queue.put(_race((str(wheel), _sha(wheel), str(cache), barrier)))

    procs = [ctx.Process(target=worker) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    keys = {key for key, _ in results}
    assert len(keys) == 1
    assert sorted(built for _, built in results) == [False, True], "exactly one process builds"
    (key,) = keys
    assert _layer_dirs(cache) == [key, f"{key}.lck"], "no temp dirs left behind"
    layer = layers.load_layer(key, cache_root=cache)
    assert layer is not None and not layer.built
    index = read_fragment_index(layer.fragment_path)
    assert len(index.entries) == layer.entry_count


def test_build_layers_in_parallel_keeps_order(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    wheels = [build_wheel(dist, f"p{i}", "1.0") for i in range(3)]
    cache = tmp_path / "cache"
    result = build_layers([(w, _sha(w)) for w in wheels], cache_root=cache, jobs=2)
    assert [layer.wheel_filename for layer in result] == [w.name for w in wheels]
    assert all(layer.built for layer in result)
    again = build_layers([(w, _sha(w)) for w in wheels], cache_root=cache, jobs=2)
    assert again == result and not any(layer.built for layer in again)


def test_store_named_wheel_uses_given_filename(tmp_path: Path, wheel: Path) -> None:
    stored = tmp_path / "store" / _sha(wheel)
    stored.parent.mkdir()
    stored.write_bytes(wheel.read_bytes())
    layer = build_layer(WheelInput(str(stored), _sha(wheel), filename=wheel.name), cache_root=tmp_path / "c")
    assert layer.wheel_filename == wheel.name
    reference = _installed_by_pex(wheel, tmp_path / "ref" / wheel.name)
    assert layer.fingerprint == reference["fingerprint"]
    with pytest.raises(CorruptWheelError, match="not a valid wheel file name"):
        build_layer(stored, _sha(wheel), cache_root=tmp_path / "c")


def test_packed_variant(tmp_path: Path, wheel: Path) -> None:
    layer = build_layer(wheel, _sha(wheel), cache_root=tmp_path / "cache")
    packed = ensure_packed(layer)
    assert packed == layer.packed_path
    inode = os.stat(packed).st_ino
    assert ensure_packed(layer) == packed and os.stat(packed).st_ino == inode
    prefix = f".deps/{wheel.name}/"
    with zipfile.ZipFile(packed) as pz, zipfile.ZipFile(_as_zip(layer, tmp_path)) as full:
        assert pz.testzip() is None
        expected = {n[len(prefix) :]: full.read(n) for n in full.namelist() if n != prefix}
        assert {n: pz.read(n) for n in pz.namelist()} == expected
        assert ".layout.json" in pz.namelist()


def _as_zip(layer, tmp_path: Path) -> Path:
    out = tmp_path / "full.zip"
    fragment_to_zip(layer.fragment_path, out)
    return out


# --- refusing bad wheels -----------------------------------------------------------------------


def _raw_wheel(dest: Path, members: list, name: str = "bad-1.0-py3-none-any.whl") -> Path:
    """A wheel with arbitrary members: list of (name, bytes) or (ZipInfo, bytes)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / name
    base = [
        ("bad-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: bad\nVersion: 1.0\n"),
        ("bad-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members + base:
            zf.writestr(member, data)
        zf.writestr("bad-1.0.dist-info/RECORD", b"")
    return path


def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "members, member",
    [
        ([("/etc/evil.py", b"x")], "/etc/evil.py"),
        ([("bad/../../evil.py", b"x")], "bad/../../evil.py"),
        ([("bad/dup.py", b"1"), ("bad/dup.py", b"2")], "bad/dup.py"),
        ([(_symlink("bad/link", "../../etc/passwd"), b"../../etc/passwd")], "bad/link"),
    ],
    ids=["absolute", "dotdot", "duplicate", "symlink-escape"],
)
def test_unsafe_wheels_are_refused(tmp_path: Path, members, member) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        whl = _raw_wheel(tmp_path / "dist", members)
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeWheelError) as excinfo:
        build_layer(whl, _sha(whl), cache_root=cache)
    assert excinfo.value.wheel == whl.name and excinfo.value.member == member
    assert whl.name in str(excinfo.value) and member in str(excinfo.value)
    assert [d for d in _layer_dirs(cache) if not d.endswith(".lck")] == []


def test_corrupt_and_mismatched_wheels_are_refused(tmp_path: Path, wheel: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(HashMismatchError, match=wheel.name):
        build_layer(wheel, "0" * 64, cache_root=cache)

    garbage = tmp_path / "junk-1.0-py3-none-any.whl"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(CorruptWheelError, match=garbage.name):
        build_layer(garbage, _sha(garbage), cache_root=cache)

    # Flip bytes inside one member's compressed data: the zip opens but that member is broken.
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("demo_pkg/data/info.txt")
    data = bytearray(wheel.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 4
    data[start : start + 8] = b"\xff" * 8
    broken = tmp_path / "broken" / wheel.name
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    with pytest.raises(CorruptWheelError) as excinfo:
        build_layer(broken, _sha(broken), cache_root=cache)
    assert excinfo.value.member == "demo_pkg/data/info.txt"
    assert wheel.name in str(excinfo.value)
    assert [d for d in _layer_dirs(cache) if not d.endswith(".lck")] == []


def test_errors_survive_process_pools(tmp_path: Path, wheel: Path) -> None:
    other = build_wheel(tmp_path / "dist2", "other", "1.0")
    with pytest.raises(HashMismatchError) as excinfo:
        build_layers([(wheel, "1" * 64), (other, _sha(other))], cache_root=tmp_path / "c", jobs=2)
    assert excinfo.value.subject == wheel.name


def test_unchanged_members_keep_the_wheels_compressed_bytes(tmp_path: Path, monkeypatch) -> None:
    """Building a layer deflates only what pex rewrote (RECORD, INSTALLER...), not the code:
    the wheel's own compressed bytes are copied into the fragment."""
    files = {f"big/mod{i}.py": (f"# module {i}\n" + "x = 1\n" * 2000).encode() for i in range(20)}
    whl = build_wheel(tmp_path, "big", "1.0", files=files)
    deflaters = []
    real = fragment._deflater

    def counting(level: int):
        deflaters.append(level)
        return real(level)

    monkeypatch.setattr(fragment, "_deflater", counting)
    layer = build_layer(whl, _sha(whl), cache_root=tmp_path / "cache")
    assert len(deflaters) < 5, deflaters  # 21 files in the wheel, a handful rewritten

    frag = Path(layer.fragment_path).read_bytes()
    with zipfile.ZipFile(whl) as zf:
        info = zf.getinfo("big/mod7.py")
        with open(whl, "rb") as raw:
            raw.seek(info.header_offset + 26)
            name_len, extra_len = int.from_bytes(raw.read(2), "little"), int.from_bytes(raw.read(2), "little")
            raw.seek(info.header_offset + 30 + name_len + extra_len)
            compressed = raw.read(info.compress_size)
    assert compressed in frag
    # And the layer still reads back as the installed files.
    out = tmp_path / "layer.zip"
    fragment_to_zip(layer.fragment_path, str(out))
    with zipfile.ZipFile(out) as zf:
        assert zf.read(f".deps/{whl.name}/big/mod7.py") == files["big/mod7.py"]
