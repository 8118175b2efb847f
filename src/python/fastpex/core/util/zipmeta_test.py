"""util/zipmeta.py against archives written by `zipfile` (the reference): the central directory
found from a tail of any size, with prefixes, comments and ZIP64, each member's data located
exactly; and malformed structures refused with `ZipFormatError` alone."""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Callable, Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpex.core.util.zipmeta import (
    ZipFormatError,
    local_data_offset,
    locate_central_directory,
    parse_central_directory,
    parse_central_directory_suffix,
)


def _archive(members: Dict[str, bytes], *, prefix: bytes = b"", comment: bytes = b"", zip64: bool = False) -> bytes:
    """`prefix` is prepended to the finished archive (`cat shebang app.zip`): every offset in
    it is then short by the prefix's length, which readers must detect."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.comment = comment
        for index, (name, data) in enumerate(members.items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if index % 2 else zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=zip64) as fp:
                fp.write(data)
    return prefix + buffer.getvalue()


def _read_members(blob: bytes, tail_size: int) -> Tuple[Dict[str, bytes], List[Tuple[int, int]]]:
    """Every member's bytes through zipmeta alone, as a range reader would: a tail first, then
    `read(start, end)` for anything before it. Returns the members and the ranges read."""
    reads: List[Tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        assert 0 <= start <= end <= len(blob)
        reads.append((start, end))
        return blob[start:end]

    tail_offset = max(0, len(blob) - tail_size)
    directory = locate_central_directory(blob[tail_offset:], tail_offset, read)
    entries = parse_central_directory(read(directory.offset, directory.offset + directory.size), directory.prefix)
    assert len(entries) == directory.entries
    members = {}
    for entry in entries:
        header = read(entry.local_header_offset, min(len(blob), entry.local_header_offset + 30 + 1024))
        start = entry.local_header_offset + local_data_offset(header, entry)
        raw = read(start, start + entry.compressed_size)
        data = raw if entry.method == 0 else zlib.decompress(raw, -15)
        assert len(data) == entry.uncompressed_size and zlib.crc32(data) == entry.crc
        members[entry.name] = data
    return members, reads


_MEMBERS = st.dictionaries(
    st.text(alphabet="abcdefé/_.-", min_size=1, max_size=20).filter(lambda n: not n.endswith("/")),
    st.binary(max_size=2000),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    _MEMBERS,
    st.binary(max_size=300),
    st.binary(max_size=200).filter(lambda c: b"PK" not in c),
    st.booleans(),
    st.integers(min_value=22, max_value=70000),
)
def test_members_read_back_exactly(members: Dict[str, bytes], prefix: bytes, comment: bytes, zip64: bool, tail: int) -> None:
    blob = _archive(members, prefix=prefix, comment=comment, zip64=zip64)
    assert zipfile.ZipFile(io.BytesIO(blob)).testzip() is None  # a sound archive to begin with
    found, _ = _read_members(blob, tail + len(comment))
    assert found == members
    tail_offset = max(0, len(blob) - tail - len(comment))
    assert locate_central_directory(blob[tail_offset:], tail_offset, _read(blob)).prefix == len(prefix)


@pytest.mark.parametrize("zip64", [False, True])
def test_a_tail_holding_the_end_records_needs_no_other_read(zip64: bool) -> None:
    blob = _archive({"pkg/__init__.py": b"", "pkg-1.0.dist-info/METADATA": b"Name: pkg\n"}, zip64=zip64)

    def no_read(start: int, end: int) -> bytes:
        raise AssertionError(f"read({start}, {end}) for bytes the tail holds")

    directory = locate_central_directory(blob, 0, no_read)
    assert directory.entries == 2 and directory.prefix == 0
    assert directory.offset + directory.size <= directory.end <= len(blob)


def test_a_suffix_of_the_directory_gives_its_last_entries() -> None:
    """Wheels put .dist-info last: a suffix of the directory finds METADATA."""
    members = {f"pkg/m{i}.py": b"x" * i for i in range(20)}
    members["pkg-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\n"
    blob = _archive(members)
    tail_offset = 0
    directory = locate_central_directory(blob, tail_offset, lambda s, e: blob[s:e])
    whole = blob[directory.offset : directory.offset + directory.size]
    suffix = parse_central_directory_suffix(whole[len(whole) // 2 :])
    assert suffix and suffix[-1].name == "pkg-1.0.dist-info/METADATA"
    assert [e.name for e in suffix] == [e.name for e in parse_central_directory(whole)][-len(suffix) :]
    assert parse_central_directory_suffix(b"no entries here") == []


def _read(blob: bytes) -> Callable[[int, int], bytes]:
    """A range reader over `blob`."""
    return lambda start, end: blob[start:end]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:-22] + b"XX" + b[-20:],  # the EOCD signature gone
        lambda b: b[: len(b) // 2],  # truncated: no EOCD in the last bytes
        lambda b: b[:-22] + b[-22:-6] + (2**31).to_bytes(4, "little") + b[-2:],  # directory offset past the end
    ],
)
def test_broken_end_records_are_zip_format_errors(corrupt: Callable[[bytes], bytes]) -> None:
    blob = corrupt(_archive({"a.txt": b"hello"}))
    with pytest.raises(ZipFormatError):
        directory = locate_central_directory(blob, 0, _read(blob))
        parse_central_directory(blob[directory.offset : directory.offset + directory.size], directory.prefix)


def test_a_local_header_that_disagrees_with_the_directory_is_refused() -> None:
    blob = _archive({"a.txt": b"hello", "b.txt": b"world"})
    directory = locate_central_directory(blob, 0, _read(blob))
    first, second = parse_central_directory(blob[directory.offset : directory.offset + directory.size])
    # The header at the first entry's offset, checked against the second entry: another name.
    with pytest.raises(ZipFormatError, match="names another file"):
        local_data_offset(blob[first.local_header_offset :], second)
    with pytest.raises(ZipFormatError, match="no local file header"):
        local_data_offset(b"PK\x01\x02" + bytes(40), first)
    tampered = bytearray(blob[first.local_header_offset :])
    tampered[18:22] = (first.compressed_size + 1).to_bytes(4, "little")  # the local compressed size
    with pytest.raises(ZipFormatError, match="disagrees with the directory"):
        local_data_offset(bytes(tampered), first)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_directories_raise_only_zip_format_error(data: bytes) -> None:
    try:
        parse_central_directory(b"PK\x01\x02" + data)
    except ZipFormatError:
        pass


@pytest.mark.parametrize("prefix", [b"", b"#!/usr/bin/env python3\n"])
def test_zip64_end_records_with_and_without_a_prefix(prefix: bytes) -> None:
    """More than 65535 entries: zipfile writes a ZIP64 end record and locator (as a PEX's
    dependency set can need), before which a prefix (a PEX's shebang) shifts every offset."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(65536):
            archive.writestr(zipfile.ZipInfo(f"m/{i}", date_time=(2020, 1, 1, 0, 0, 0)), b"")
        archive.writestr(zipfile.ZipInfo("last.txt", date_time=(2020, 1, 1, 0, 0, 0)), b"the end")
    blob = prefix + buffer.getvalue()
    tail_offset = len(blob) - 4096
    directory = locate_central_directory(blob[tail_offset:], tail_offset, _read(blob))
    assert directory.entries == 65537 and directory.prefix == len(prefix)
    assert blob[directory.end : directory.end + 4] == b"PK\x06\x06"  # the ZIP64 end record
    entries = parse_central_directory_suffix(blob[directory.end - 1000 : directory.end], directory.prefix)
    last = entries[-1]
    assert last.name == "last.txt"
    start = last.local_header_offset + local_data_offset(blob[last.local_header_offset :], last)
    assert blob[start : start + last.compressed_size] == b"the end"
