from __future__ import annotations

import hashlib
import io
import random
import shutil
import stat
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

from fastpex.testing.pythons import cpython
from fastpex.core.pack import fragment
from fastpex.core.pack.assembler import ZipAssembler, fragment_to_zip, requires_zip64
from fastpex.core.pack.errors import DuplicateEntryError, FragmentError
from fastpex.core.pack.fragment import SourceEntry, read_fragment_index, write_fragment



def _unzip_t(path: Path) -> None:
    unzip = shutil.which("unzip")
    # .ci/run installs unzip; a missing one must not silently drop the check.
    assert unzip is not None, "the `unzip` binary is not installed (apt-get -y install unzip)"
    result = subprocess.run([unzip, "-tq", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _sample_entries(tmp_path: Path) -> dict:
    big = tmp_path / "big.bin"
    big.write_bytes(b"abcdefgh" * 40000)
    script = tmp_path / "tool.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    return {
        "pkg/": None,
        "pkg/__init__.py": b"VALUE = 42\n" * 50,
        "pkg/empty.txt": b"",
        "pkg/random.bin": random.Random(7).randbytes(5000),  # incompressible: stored
        "pkg/big.bin": big,
        "pkg/bin/": None,
        "pkg/bin/tool.sh": script,
        "pkg/d\u00e9j\u00e0.txt": "unicode name".encode(),
    }


def _to_sources(spec: dict) -> list:
    out = []
    for name, value in spec.items():
        if value is None:
            out.append(SourceEntry(name))
        elif isinstance(value, Path):
            out.append(
                SourceEntry(name, path=str(value), executable=bool(value.stat().st_mode & stat.S_IXUSR))
            )
        else:
            out.append(SourceEntry(name, data=value))
    return out


def _expected_bytes(spec: dict) -> dict:
    return {
        name: (value.read_bytes() if isinstance(value, Path) else value)
        for name, value in spec.items()
        if value is not None
    }


def test_fragment_round_trip_with_preamble(tmp_path: Path) -> None:
    spec = _sample_entries(tmp_path)
    frag = tmp_path / "a.frag"
    index = write_fragment(_to_sources(spec), frag, 6)
    assert [e.name for e in index.entries] == sorted(spec)
    assert read_fragment_index(frag) == index

    other = tmp_path / "b.frag"
    write_fragment([SourceEntry("other/x.py", data=b"x = 1\n")], other, 9)

    out = tmp_path / "out.zip"
    preamble = b"#!/usr/bin/env python3\n"
    with ZipAssembler(out, preamble=preamble) as zf:
        assert zf.add_fragment(frag) == len(spec)
        zf.add_fragment(other)
        zf.add_bytes("__main__.py", b"print('ok')\n", executable=True)
        zf.add_bytes("other/")
    assert out.read_bytes().startswith(preamble)

    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        names = z.namelist()
        assert len(names) == len(set(names)) == len(spec) + 3
        for name, data in _expected_bytes(spec).items():
            assert z.read(name) == data, name
        assert z.read("other/x.py") == b"x = 1\n"
        infos = {i.filename: i for i in z.infolist()}
        # Absolute offsets, exactly like pex/zipfile append to a shebang'ed file.
        assert infos[sorted(spec)[0]].header_offset == len(preamble)
        assert infos["pkg/"].external_attr == (stat.S_IFDIR | 0o755) << 16 | 0x10
        assert infos["pkg/__init__.py"].external_attr >> 16 == stat.S_IFREG | 0o644
        assert infos["pkg/bin/tool.sh"].external_attr >> 16 == stat.S_IFREG | 0o755
        assert infos["__main__.py"].external_attr >> 16 == stat.S_IFREG | 0o755
        assert infos["pkg/__init__.py"].compress_type == zipfile.ZIP_DEFLATED
        assert infos["pkg/random.bin"].compress_type == zipfile.ZIP_STORED
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos.values())
    _unzip_t(out)


def test_assembly_copies_fragment_bytes_verbatim(tmp_path: Path, monkeypatch) -> None:
    spec = _sample_entries(tmp_path)
    frag = tmp_path / "a.frag"
    index = write_fragment(_to_sources(spec), frag, 6)

    calls = []
    real = zlib.compressobj

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(zlib, "compressobj", counting)
    out = tmp_path / "out.zip"
    with ZipAssembler(out, preamble=b"#!python\n") as zf:
        zf.add_fragment(frag)
        zf.add_fragment(frag, strip_prefix="pkg/", prefix="renamed/")
    assert calls == [], "assembling must not compress fragment entries again"

    region = frag.read_bytes()[: index.data_size]
    assert out.read_bytes()[len(b"#!python\n") : len(b"#!python\n") + index.data_size] == region
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        for name, data in _expected_bytes(spec).items():
            assert z.read("renamed/" + name[len("pkg/") :]) == data
        assert "renamed/" not in z.namelist()  # the stripped root itself is dropped


def test_streamed_big_entries_round_trip(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fragment, "_IN_MEMORY_LIMIT", 1000)
    monkeypatch.setattr(fragment, "_CHUNK", 4096)
    data = b"streamed " * 10000
    src = tmp_path / "s.txt"
    src.write_bytes(data)
    frag = tmp_path / "s.frag"
    write_fragment([SourceEntry("s.txt", path=str(src)), SourceEntry("m.txt", data=data)], frag, 6)
    out = tmp_path / "s.zip"
    fragment_to_zip(frag, out)
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        assert z.read("s.txt") == data == z.read("m.txt")


def test_deterministic_bytes(tmp_path: Path) -> None:
    digests = set()
    for attempt in range(2):
        d = tmp_path / str(attempt)
        d.mkdir()
        spec = _sample_entries(d)
        entries = _to_sources(spec)
        random.Random(attempt).shuffle(entries)  # input order must not matter
        write_fragment(entries, d / "f.frag", 6)
        with ZipAssembler(d / "o.zip", preamble=b"#!/usr/bin/env python3\n") as zf:
            zf.add_fragment(d / "f.frag")
            zf.add_bytes("PEX-INFO", b"{}")
        digests.add(
            (
                hashlib.sha256((d / "f.frag").read_bytes()).hexdigest(),
                hashlib.sha256((d / "o.zip").read_bytes()).hexdigest(),
            )
        )
    assert len(digests) == 1


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.frag", tmp_path / "b.frag"
    write_fragment([SourceEntry("x/"), SourceEntry("x/same.py", data=b"1")], a)
    write_fragment([SourceEntry("x/other.py", data=b"3"), SourceEntry("x/same.py", data=b"2")], b)
    zf = ZipAssembler(tmp_path / "o.zip")
    zf.add_fragment(a)
    position = zf.position
    with pytest.raises(DuplicateEntryError, match="x/same.py"):
        zf.add_fragment(b)
    assert zf.position == position, "nothing may be written for a refused fragment"
    with pytest.raises(DuplicateEntryError):
        zf.add_bytes("x/")
    zf.add_bytes("x/other.py", b"refused fragments claim no names")
    zf.abort()
    assert not (tmp_path / "o.zip").exists()

    with pytest.raises(DuplicateEntryError):
        write_fragment([SourceEntry("d", data=b""), SourceEntry("d", data=b"")], tmp_path / "c.frag")


def test_invalid_names_and_corrupt_fragments(tmp_path: Path) -> None:
    for bad in ("/abs", "../up", "a/../b", "a//b", "a\\b"):
        with pytest.raises(FragmentError):
            write_fragment([SourceEntry(bad, data=b"")], io.BytesIO())
    frag = tmp_path / "f.frag"
    write_fragment([SourceEntry("a", data=b"a")], frag)
    data = frag.read_bytes()
    (tmp_path / "trunc.frag").write_bytes(data[:-3])
    with pytest.raises(FragmentError):
        read_fragment_index(tmp_path / "trunc.frag")
    flipped = bytearray(data)
    flipped[-_trailer_size() - 2] ^= 0xFF  # inside the index
    (tmp_path / "flip.frag").write_bytes(bytes(flipped))
    with pytest.raises(FragmentError, match="corrupt index"):
        read_fragment_index(tmp_path / "flip.frag")


def _trailer_size() -> int:
    return fragment._TRAILER.size


def test_requires_zip64_boundaries() -> None:
    assert not requires_zip64(0xFFFE, 0xFFFFFFFE, 0xFFFFFFFE)
    assert requires_zip64(0xFFFF, 0, 0)
    assert requires_zip64(1, 0xFFFFFFFF, 0)
    assert requires_zip64(1, 0, 0xFFFFFFFF)


def test_zip64_many_entries(tmp_path: Path) -> None:
    count = 70000
    frag = tmp_path / "many.frag"
    write_fragment(
        (SourceEntry(f"d{i % 50}/f{i}", data=b"%d" % i, compress=False) for i in range(count)),
        frag,
        0,
    )
    out = tmp_path / "many.pyz"
    with ZipAssembler(out, preamble=b"#!/usr/bin/env python3\n") as zf:
        zf.add_fragment(frag)
        zf.add_bytes("__main__.py", b"print('zip64 ok')\n")
        assert zf.needs_zip64
    assert zf.close().zip64
    raw = out.read_bytes()
    assert b"PK\x06\x06" in raw[-200:] and b"PK\x06\x07" in raw[-200:]
    with zipfile.ZipFile(out) as z:
        assert len(z.infolist()) == count + 1
        assert z.read("d7/f12357") == b"12357"
        assert z.testzip() is None
    _unzip_t(out)
    # zipimport reads ZIP64 from Python 3.13 on; before that it cannot (hence Zip64RequiredError).
    result = subprocess.run([str(cpython("3.13")), str(out)], capture_output=True, text=True)
    assert result.stdout == "zip64 ok\n", result.stderr
    assert subprocess.run([str(cpython("3.12")), str(out)], capture_output=True).returncode != 0


def test_no_zip64_records_when_not_needed(tmp_path: Path) -> None:
    out = tmp_path / "small.zip"
    with ZipAssembler(out) as zf:
        zf.add_bytes("a", b"a")
    assert not zf.close().zip64
    assert b"PK\x06\x06" not in out.read_bytes()
