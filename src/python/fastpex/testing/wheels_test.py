from __future__ import annotations

import base64
import csv
import email.parser
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from fastpex.testing.fixtures import run_pip, wheel_factory  # noqa: F401
from fastpex.testing.wheels import (
    WheelFactory,
    WheelSpec,
    build_sdist,
    build_wheel,
    build_wheels,
    sha256_file,
    wheel_metadata_bytes,
)


def _metadata(path: Path):
    return email.parser.BytesParser().parsebytes(wheel_metadata_bytes(path))


def _dist_info_text(path: Path, member: str) -> str:
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(f".dist-info/{member}"))
        return zf.read(name).decode("utf-8")


def test_wheel_installs_with_pip_and_imports(tmp_path: Path) -> None:
    whl = build_wheel(
        tmp_path / "dist",
        "Demo.Pkg",
        "1.2.3",
        files={"demo_pkg/__init__.py": b"__version__ = '1.2.3'\ndef main():\n    print('hi')\n"},
        console_scripts={"demo-cli": "demo_pkg:main"},
    )
    target = tmp_path / "target"
    run_pip(["install", "--no-index", "--no-deps", "--target", str(target), str(whl)])
    assert (target / "demo_pkg-1.2.3.dist-info" / "METADATA").is_file()
    out = subprocess.run(
        [sys.executable, "-c", "import demo_pkg; print(demo_pkg.__version__)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1.2.3"
    assert (target / "bin" / "demo-cli").is_file()


def test_default_package_file_carries_version_and_extra_files_add_to_it(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path, "my-lib", "0.1", files={"my_lib/data.txt": b"payload", "top.py": b"X = 1\n"})
    with zipfile.ZipFile(whl) as zf:
        assert zf.read("my_lib/__init__.py") == b'__version__ = "0.1"\n'
        assert zf.read("my_lib/data.txt") == b"payload"
        assert zf.read("top.py") == b"X = 1\n"


def test_record_hashes_and_sizes_verify(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path, "rec", "1.0", requires_dist=["six"], console_scripts={"r": "rec:main"})
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("utf-8"))))
        assert sorted(r[0] for r in rows) == sorted(names)
        for path, digest, size in rows:
            if path == record_name:
                assert (digest, size) == ("", "")
                continue
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}"
            assert int(size) == len(data)


def test_metadata_fields_parse(tmp_path: Path) -> None:
    whl = build_wheel(
        tmp_path,
        "Fancy_Name",
        "2.0",
        requires_dist=["requests>=2.0", 'tomli; python_version < "3.11"', 'pytest; extra == "test"'],
        extras_map={"Speed": ["orjson>=3"]},
        requires_python=">=3.8",
    )
    msg = _metadata(whl)
    assert msg["Metadata-Version"] == "2.1"
    assert msg["Name"] == "Fancy_Name"
    assert msg["Version"] == "2.0"
    assert msg["Requires-Python"] == ">=3.8"
    assert msg.get_all("Requires-Dist") == [
        "requests>=2.0",
        'tomli; python_version < "3.11"',
        'pytest; extra == "test"',
        'orjson>=3; extra == "speed"',
    ]
    assert msg.get_all("Provides-Extra") == ["speed", "test"]


def test_identical_inputs_give_identical_bytes(tmp_path: Path) -> None:
    kwargs = dict(requires_dist=["a", "b>1"], file_size_padding=1000, console_scripts={"x": "p:m"})
    first = build_wheel(tmp_path / "a", "same", "1.0", **kwargs)  # type: ignore[arg-type]  # one dict of keyword options for both builds
    second = build_wheel(tmp_path / "b", "same", "1.0", **kwargs)  # type: ignore[arg-type]  # one dict of keyword options for both builds
    assert first.read_bytes() == second.read_bytes()
    other = build_wheel(tmp_path / "c", "same", "1.0", requires_dist=["a"])
    assert other.read_bytes() != first.read_bytes()
    s1 = build_sdist(tmp_path / "a", "same", "1.0", requires_dist=["a"])
    s2 = build_sdist(tmp_path / "b", "same", "1.0", requires_dist=["a"])
    assert s1.read_bytes() == s2.read_bytes()


def test_zip_layout_is_fixed(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path, "lay", "1", files={"lay/b.py": b"", "lay/a.py": b""})
    with zipfile.ZipFile(whl) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names[:3] == ["lay/__init__.py", "lay/a.py", "lay/b.py"]
    assert names[3:] == ["lay-1.dist-info/METADATA", "lay-1.dist-info/WHEEL", "lay-1.dist-info/RECORD"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_padding_grows_size_incompressibly(tmp_path: Path) -> None:
    small = build_wheel(tmp_path / "s", "pad", "1.0")
    big = build_wheel(tmp_path / "b", "pad", "1.0", file_size_padding=300_000)
    assert big.stat().st_size - small.stat().st_size >= 300_000
    again = build_wheel(tmp_path / "c", "pad", "1.0", file_size_padding=300_000)
    assert sha256_file(big) == sha256_file(again)


def test_platform_tag_in_filename_and_wheel_file(tmp_path: Path) -> None:
    tag = "cp311-cp311-manylinux_2_17_x86_64"
    whl = build_wheel(tmp_path, "native", "1.0", tag=tag)
    assert whl.name == f"native-1.0-{tag}.whl"
    wheel_file = _dist_info_text(whl, "WHEEL")
    assert f"Tag: {tag}\n" in wheel_file
    assert "Root-Is-Purelib: false" in wheel_file
    assert "Wheel-Version: 1.0" in wheel_file


def test_compressed_tag_set_expands_and_stays_purelib(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path, "uni", "1.0", tag="py2.py3-none-any")
    wheel_file = _dist_info_text(whl, "WHEEL")
    assert "Tag: py2-none-any\nTag: py3-none-any\n" in wheel_file
    assert "Root-Is-Purelib: true" in wheel_file


def test_filename_and_dist_info_are_normalized(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path, "Foo.Bar-_baz", "1.0-1")
    assert whl.name == "foo_bar_baz-1.0.post1-py3-none-any.whl"
    with zipfile.ZipFile(whl) as zf:
        assert "foo_bar_baz-1.0.post1.dist-info/METADATA" in zf.namelist()


def test_helpers_read_metadata_and_hash(tmp_path: Path) -> None:
    whl = build_wheel(tmp_path, "h", "1.0", requires_python=">=3")
    assert wheel_metadata_bytes(whl).startswith(b"Metadata-Version: 2.1\nName: h\n")
    assert sha256_file(whl) == hashlib.sha256(whl.read_bytes()).hexdigest()


def test_build_wheels_and_factory(wheel_factory: WheelFactory) -> None:  # noqa: F811
    specs = [WheelSpec("a", "1.0"), WheelSpec("b", "2.0", requires_dist=("a",), tag="py3-none-manylinux1_x86_64")]
    paths = build_wheels(wheel_factory.dist_dir, specs)
    assert [p.name for p in paths] == ["a-1.0-py3-none-any.whl", "b-2.0-py3-none-manylinux1_x86_64.whl"]
    assert _metadata(paths[1]).get_all("Requires-Dist") == ["a"]
    sdist = wheel_factory.sdist("c", "3.0")
    whl = wheel_factory("d", "4.0")
    assert wheel_factory.built == [sdist, whl]
    assert {p.name for p in wheel_factory.dist_dir.iterdir()} >= {sdist.name, whl.name}


def test_sdist_contents_and_setuptools_build(tmp_path: Path) -> None:
    sdist = build_sdist(tmp_path, "Sd.Ist", "1.0", requires_dist=["six>=1"], requires_python=">=3.7")
    assert sdist.name == "sd_ist-1.0.tar.gz"
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
        pkg_info = tf.extractfile("sd_ist-1.0/PKG-INFO").read()  # type: ignore[union-attr]  # the member exists: the test just wrote it
        assert {m.mtime for m in tf.getmembers()} == {0}
    assert "sd_ist-1.0/pyproject.toml" in names and "sd_ist-1.0/setup.py" in names
    msg = email.parser.BytesParser().parsebytes(pkg_info)
    assert (msg["Name"], msg["Version"], msg.get_all("Requires-Dist")) == ("Sd.Ist", "1.0", ["six>=1"])
    # No `wheel` package in the dev venv, so drive setuptools' egg_info/build directly.
    with tarfile.open(sdist) as tf:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(tmp_path / "src", **safe)  # type: ignore[arg-type]  # `filter=` only where tarfile has it (3.12+)
    src = tmp_path / "src" / "sd_ist-1.0"
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "build"], cwd=src, check=True, capture_output=True)
    requires = (src / "Sd.Ist.egg-info" / "requires.txt").read_text()
    assert requires.split() == ["six>=1"]
    assert (src / "build" / "lib" / "sd_ist" / "__init__.py").read_text() == '__version__ = "1.0"\n'


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,5}([._-][A-Za-z0-9]{1,4}){0,2}", fullmatch=True)
_versions = st.tuples(st.integers(0, 99), st.integers(0, 99), st.sampled_from(["", "a1", ".post2", ".dev3"])).map(
    lambda t: f"{t[0]}.{t[1]}{t[2]}"
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names, version=_versions)
def test_filenames_round_trip_through_packaging(tmp_path: Path, name: str, version: str) -> None:
    whl = build_wheel(tmp_path, name, version)
    sdist = build_sdist(tmp_path, name, version)
    assert parse_wheel_filename(whl.name)[:2] == (canonicalize_name(name), Version(version))
    assert parse_sdist_filename(sdist.name) == (canonicalize_name(name), Version(version))
    assert _metadata(whl)["Version"] == str(Version(version))


@pytest.mark.parametrize("bad", ["not a req !!", "x[;"])
def test_invalid_requirement_is_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(Exception):
        build_wheel(tmp_path, "bad", "1.0", requires_dist=[bad])
