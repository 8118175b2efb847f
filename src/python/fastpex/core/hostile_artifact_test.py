"""Hostile artifacts: wheels that try to write outside the install tree, whose RECORD disagrees
with their contents, or whose zip central directory lies. Each is refused with an error naming
the wheel (and member), nothing is written outside the cache, and no layer is cached.

The same lying directories are fed to the metadata range reader (`zipmeta` + `metadata`), which
must refuse them as `ZipFormatError` / `MetadataError`, never crash or inflate without bound.
"""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import pytest

from fastpex.core.pack.errors import CorruptWheelError, LayerError, UnsafeWheelError
from fastpex.core.pack.layers import build_layer
from fastpex.core.util.hashing import sha256_file
from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata import MetadataError, inflate_member
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.index import IndexClient
from fastpex.core.util.zipmeta import (
    ZipFormatError,
    local_data_offset,
    locate_central_directory,
    parse_central_directory,
)
from fastpex.testing.hostile_http import HostileServer, ranged, static
from fastpex.testing.wheels import record_digest

NAME = "bad-1.0-py3-none-any.whl"
DIST_INFO = "bad-1.0.dist-info"
METADATA = b"Metadata-Version: 2.1\nName: bad\nVersion: 1.0\n"
WHEEL = b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"

Member = Tuple[Union[str, zipfile.ZipInfo], bytes]


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _name(member: Union[str, zipfile.ZipInfo]) -> str:
    return member.filename if isinstance(member, zipfile.ZipInfo) else member


def wheel_bytes(
    members: Sequence[Member],
    *,
    record: Optional[Callable[[List[Tuple[str, str, str]]], List[Tuple[str, str, str]]]] = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A wheel of `members` + METADATA/WHEEL with a correct RECORD, which `record` may edit."""
    everything: List[Member] = list(members) + [(f"{DIST_INFO}/METADATA", METADATA), (f"{DIST_INFO}/WHEEL", WHEEL)]
    rows = [(_name(m), record_digest(d), str(len(d))) for m, d in everything]
    if record is not None:
        rows = record(rows)
    text = "".join(f"{p},{h},{s}\n" for p, h, s in rows) + f"{DIST_INFO}/RECORD,,\n"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for member, data in everything:
                zf.writestr(member, data)
            zf.writestr(f"{DIST_INFO}/RECORD", text)
    return buf.getvalue()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "dist" / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _entries(raw: bytes) -> Dict[str, Tuple[int, int]]:
    """member name -> (offset of its central directory entry, offset of its local header)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos = zf.infolist()
    out = {}
    pos = raw.find(b"PK\x01\x02")
    for info in infos:
        out[info.filename] = (pos, info.header_offset)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    return out


def _assert_refused(tmp_path: Path, path: Path, error: Type[LayerError], member: Optional[str] = None) -> LayerError:
    cache = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    before = sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts)
    with pytest.raises(error) as excinfo:
        build_layer(path, sha256_file(str(path)), cache_root=cache)
    assert excinfo.value.wheel == NAME and NAME in str(excinfo.value)
    if member is not None:
        assert excinfo.value.member == member
        assert member in str(excinfo.value) or repr(member) in str(excinfo.value)
    after = sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert after == before, "something was written outside the cache"
    layers = cache / "layers"
    left = [p.name for p in layers.rglob("*") if p.parent.parent == layers and not p.name.endswith((".lock", ".lck"))]
    assert left == [], f"a layer was cached for a refused wheel: {left}"
    return excinfo.value


# -- members that would land outside the tree --------------------------------------------------


@pytest.mark.parametrize(
    "members, member",
    [
        ([("/tmp/evil.py", b"x")], "/tmp/evil.py"),
        ([("bad/../../outside/evil.py", b"x")], "bad/../../outside/evil.py"),
        ([("..\\outside\\evil.py", b"x")], "..\\outside\\evil.py"),
        ([("C:/evil.py", b"x")], "C:/evil.py"),
        ([("bad/dup.py", b"1"), ("bad/dup.py", b"2")], "bad/dup.py"),
        ([("bad/dup.py", b"1"), ("bad/./dup.py", b"2")], "bad/./dup.py"),
        ([(_symlink("bad/link"), b"../../outside")], "bad/link"),
        ([(_symlink("bad/abs"), b"/etc/passwd")], "bad/abs"),
        ([(_symlink("bad/long"), b"a/" * 4096)], "bad/long"),
    ],
    ids=["absolute", "dotdot", "backslash", "drive", "duplicate", "duplicate-normalized", "symlink-up",
         "symlink-absolute", "symlink-huge"],
)
def test_members_escaping_the_tree_are_refused(tmp_path: Path, members: List[Member], member: str) -> None:
    _assert_refused(tmp_path, _write(tmp_path, wheel_bytes(members)), UnsafeWheelError, member)


# -- RECORD that disagrees with the contents ---------------------------------------------------


def _retarget(path: str, column: int, value: str) -> Callable[[List[Tuple[str, str, str]]], List[Tuple[str, str, str]]]:
    def edit(rows: List[Tuple[str, str, str]]) -> List[Tuple[str, str, str]]:
        out = []
        for row in rows:
            if row[0] == path:
                row = tuple(value if i == column else v for i, v in enumerate(row))  # type: ignore[assignment]  # a mutated RECORD row, same shape
            out.append(row)
        return out

    return edit


GOOD = [("bad/__init__.py", b"print('hi')\n")]


@pytest.mark.parametrize(
    "edit, member, problem",
    [
        (_retarget("bad/__init__.py", 1, record_digest(b"something else")), "bad/__init__.py", "RECORD says"),
        (_retarget("bad/__init__.py", 2, "3"), "bad/__init__.py", "RECORD says 3"),
        (_retarget("bad/__init__.py", 1, "md5=" + "A" * 22), "bad/__init__.py", "unsupported algorithm `md5`"),
        (lambda rows: [r for r in rows if r[0] != "bad/__init__.py"], "bad/__init__.py", "not listed in RECORD"),
        (lambda rows: rows + [("bad/gone.py", record_digest(b""), "0")], "bad/gone.py", "not in the wheel"),
    ],
    ids=["hash", "size", "weak-hash", "unlisted", "listed-missing"],
)
def test_record_that_disagrees_with_contents_is_refused(tmp_path: Path, edit, member: str, problem: str) -> None:
    error = _assert_refused(tmp_path, _write(tmp_path, wheel_bytes(GOOD, record=edit)), UnsafeWheelError, member)
    assert problem in str(error) and "RECORD" in str(error)


def test_a_wheel_without_record_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("bad/__init__.py", b"")
        zf.writestr(f"{DIST_INFO}/METADATA", METADATA)
        zf.writestr(f"{DIST_INFO}/WHEEL", WHEEL)
    _assert_refused(tmp_path, _write(tmp_path, buf.getvalue()), CorruptWheelError)


def test_an_honest_wheel_passes_every_check(tmp_path: Path) -> None:
    path = _write(tmp_path, wheel_bytes(GOOD))
    layer = build_layer(path, sha256_file(str(path)), cache_root=tmp_path / "cache")
    assert layer.wheel_filename == NAME and layer.entry_count > 0


# -- central directories that lie --------------------------------------------------------------


def _lie_stored_but_deflated(raw: bytearray, entries: Dict[str, Tuple[int, int]], member: str) -> None:
    cd, local = entries[member]
    struct.pack_into("<H", raw, cd + 10, zipfile.ZIP_STORED)
    struct.pack_into("<H", raw, local + 8, zipfile.ZIP_STORED)


def _lie_sizes_differ_from_local_header(raw: bytearray, entries: Dict[str, Tuple[int, int]], member: str) -> None:
    cd, _ = entries[member]
    (usize,) = struct.unpack_from("<I", raw, cd + 24)
    struct.pack_into("<I", raw, cd + 24, usize + 7)


def _lie_offset_outside(raw: bytearray, entries: Dict[str, Tuple[int, int]], member: str) -> None:
    cd, _ = entries[member]
    struct.pack_into("<I", raw, cd + 42, len(raw) + 1000)


def _lie_offset_to_other_member(raw: bytearray, entries: Dict[str, Tuple[int, int]], member: str) -> None:
    cd, _ = entries[member]
    struct.pack_into("<I", raw, cd + 42, entries["bad/__init__.py"][1])


def _lie_crc(raw: bytearray, entries: Dict[str, Tuple[int, int]], member: str) -> None:
    cd, local = entries[member]
    for pos in (cd + 16, local + 14):
        struct.pack_into("<I", raw, pos, 0xDEADBEEF)


def _lie_local_name(raw: bytearray, entries: Dict[str, Tuple[int, int]], member: str) -> None:
    _, local = entries[member]
    raw[local + 30] ^= 0x20  # `b` -> `B`: the local header names another file


LIES = {
    "local-name": _lie_local_name,
    "stored-but-deflated": _lie_stored_but_deflated,
    "sizes-disagree": _lie_sizes_differ_from_local_header,
    "offset-outside": _lie_offset_outside,
    "offset-to-other-member": _lie_offset_to_other_member,
    "crc": _lie_crc,
}


def _lying_wheel(lie: str, member: str) -> bytes:
    raw = bytearray(wheel_bytes([("bad/__init__.py", b"x = 1\n" * 50), ("bad/data.txt", b"payload " * 200)]))
    LIES[lie](raw, _entries(bytes(raw)), member)
    return bytes(raw)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_central_directory_is_refused_by_layers(tmp_path: Path, lie: str) -> None:
    _assert_refused(tmp_path, _write(tmp_path, _lying_wheel(lie, "bad/data.txt")), CorruptWheelError)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_central_directory_is_refused_by_the_range_reader(lie: str) -> None:
    """The pure parsers + `inflate_member`, on a lie about the METADATA member."""
    raw = _lying_wheel(lie, f"{DIST_INFO}/METADATA")
    with pytest.raises(ZipFormatError):
        cd = locate_central_directory(raw[-65536:], max(0, len(raw) - 65536), lambda a, b: raw[a:b])
        (entry,) = [e for e in parse_central_directory(raw[cd.offset : cd.offset + cd.size]) if e.name.endswith("METADATA")]
        header = raw[entry.local_header_offset : entry.local_header_offset + 30 + 200 + entry.compressed_size]
        start = local_data_offset(header, entry)
        inflate_member(entry, header[start : start + entry.compressed_size], 1 << 20, "https://x.invalid/" + NAME)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_central_directory_over_http_is_an_error_naming_the_url(tmp_path: Path, lie: str) -> None:
    """End to end through range reads (then the full-download fallback): a typed error."""
    raw = _lying_wheel(lie, f"{DIST_INFO}/METADATA")
    http_config = HttpConfig(max_retries=0, read_timeout=5.0)
    with HostileServer() as server, HttpClient(http_config) as http:
        server.routes[f"/files/{NAME}"] = ranged(raw)
        server.routes["/simple/bad/"] = static(f'<a href="/files/{NAME}">{NAME}</a>'.encode(), "text/html")
        page = IndexClient(http).project_page(server.url + "/simple/", "bad")
        assert page is not None
        with pytest.raises(MetadataError) as excinfo:
            MetadataFetcher(http, tmp_path / "cache", probe=False).fetch(page.files[0])
    assert page.files[0].url in str(excinfo.value)


@pytest.mark.parametrize("lie", ["sizes-disagree", "local-name"])
def test_local_headers_must_agree_with_the_directory(lie: str) -> None:
    raw = _lying_wheel(lie, f"{DIST_INFO}/METADATA")
    cd = locate_central_directory(raw[-65536:], max(0, len(raw) - 65536), lambda a, b: raw[a:b])
    (entry,) = [e for e in parse_central_directory(raw[cd.offset : cd.offset + cd.size]) if e.name.endswith("METADATA")]
    with pytest.raises(ZipFormatError, match="local header"):
        local_data_offset(raw[entry.local_header_offset :], entry)


def test_zip_parsers_raise_only_their_typed_error_on_truncated_structures() -> None:
    raw = wheel_bytes(GOOD)
    eocd = raw.rfind(b"PK\x05\x06")
    for cut in range(eocd, len(raw)):
        try:
            locate_central_directory(raw[:cut], 0, lambda a, b: raw[a:b])
        except ZipFormatError:
            pass
    cd_start = raw.find(b"PK\x01\x02")
    for cut in range(cd_start + 1, eocd, 7):
        with pytest.raises(ZipFormatError):
            parse_central_directory(raw[cd_start:cut])


def test_a_zip64_entry_with_a_short_extra_field_is_a_format_error() -> None:
    """Sizes of 0xFFFFFFFF promise a ZIP64 extra field; one too short to hold them is refused."""
    name = b"a.dist-info/METADATA"
    extra = struct.pack("<HH", 0x0001, 4) + b"\x00" * 4  # room for no 8-byte value
    entry = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF,
        len(name), len(extra), 0, 0, 0, 0, 0,
    )
    with pytest.raises(ZipFormatError):
        parse_central_directory(entry + name + extra)


def test_a_tampered_fragment_index_is_refused_even_with_a_valid_crc() -> None:
    from fastpex.core.pack.errors import FragmentError
    from fastpex.core.pack.fragment import read_fragment_index

    corpus = Path(__file__).parent / "testdata" / "hostile"
    for name in ("frag-entry-outside-resealed.bin", "frag-count-lies-resealed.bin"):
        with pytest.raises(FragmentError, match="corrupt index"):
            read_fragment_index(io.BytesIO((corpus / name).read_bytes()))
