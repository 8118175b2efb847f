"""Zip fragments: pre-compressed zip local entries that can be assembled into a zip by raw copy.

Building a PEX with pex recompresses every dependency file on every build. A *fragment* is the
slice of a zip archive that holds local file headers + compressed data for a set of entries,
written once (deterministically) and followed by a small binary index. Assembling a zip from
fragments (`assembler.ZipAssembler`) copies those bytes verbatim and only synthesizes the central
directory, whose records are the index entries with their offsets shifted.

Fragment file format (all integers little endian)::

    [local entries: local file header + compressed data, sorted by name] (data_size bytes)
    [index: one record per entry, see `_INDEX_RECORD` + the UTF-8 name]  (index_size bytes)
    [trailer: magic, data_size, index_size, entry_count, crc32(index)]   (_TRAILER.size bytes)

Local entries start at offset 0, so an index offset is an offset within the fragment file.
This module also holds the local-header encoding (APPNOTE 4.3.7) the assembler shares.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, List, Optional, Sequence, Set, Tuple, Union

from fastpex.core.pack.errors import DuplicateEntryError, FragmentError

__all__ = [
    "DEFAULT_DATE_TIME",
    "FragmentEntry",
    "FragmentIndex",
    "Precompressed",
    "SourceEntry",
    "read_fragment_index",
    "write_fragment",
]

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = stat.S_IFREG | 0o644
EXECUTABLE_MODE = stat.S_IFREG | 0o755
DIRECTORY_MODE = stat.S_IFDIR | 0o755

ZIP_STORED = 0
ZIP_DEFLATED = 8

MAX_U16 = 0xFFFF
MAX_U32 = 0xFFFFFFFF
# What CPython's zipfile writes: spec 2.0 (20) or 4.5 (45) when ZIP64 is used.
VERSION_DEFAULT = 20
VERSION_ZIP64 = 45
FLAG_UTF8 = 0x800
# Entries this big may need a ZIP64 local extra; zipfile uses the same 5% slack for deflate growth.
_ZIP64_LOCAL_THRESHOLD = int(MAX_U32 / 1.05)
# Files up to this size are compressed in memory so we can fall back to STORED when deflate does
# not help; bigger files are streamed.
_IN_MEMORY_LIMIT = 16 * 1024 * 1024
_CHUNK = 1024 * 1024

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIG = b"PK\x03\x04"

_MAGIC = b"FPXFRAG\x01"
_TRAILER = struct.Struct("<8sQQII")
# flags, method, dos_time, dos_date, crc32, compressed_size, file_size, offset, external_attr,
# extract_version, name_len.
_INDEX_RECORD = struct.Struct("<HHHHIQQQIHH")


@dataclass(frozen=True)
class Precompressed:
    """An entry's already-compressed bytes inside another zip (e.g. the wheel it came from):
    `compressed_size` bytes at `offset` of `zip_path`, with the method, CRC and sizes they were
    made with."""

    zip_path: str
    offset: int
    method: int
    crc32: int
    compressed_size: int
    file_size: int


@dataclass(frozen=True)
class SourceEntry:
    """An entry to compress into a fragment: a directory (name ends in "/"), bytes or a file.

    With `precompressed`, its bytes are copied as they are instead of being compressed again
    (the content is the file at `path`, which the caller has checked against the CRC).
    """

    name: str
    data: Optional[bytes] = None
    path: Optional[str] = None
    executable: bool = False
    compress: bool = True
    precompressed: Optional[Precompressed] = None

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True)
class FragmentEntry:
    """Index record of one local entry inside a fragment (enough to write its central record)."""

    name: str
    flags: int
    method: int
    dos_time: int
    dos_date: int
    crc32: int
    compressed_size: int
    file_size: int
    offset: int  # of the local file header, within the fragment
    external_attr: int
    extract_version: int

    @property
    def local_header_size(self) -> int:
        return _LOCAL_HEADER.size + len(self.name.encode("utf-8")) + self.local_extra_size

    @property
    def local_extra_size(self) -> int:
        return 20 if self.local_zip64 else 0

    @property
    def local_zip64(self) -> bool:
        return self.file_size > _ZIP64_LOCAL_THRESHOLD or self.compressed_size > _ZIP64_LOCAL_THRESHOLD


@dataclass(frozen=True)
class FragmentIndex:
    """The entries of a fragment and the size of its local-entries region."""

    entries: Tuple[FragmentEntry, ...]
    data_size: int

    @property
    def max_entry_size(self) -> int:
        return max((max(e.file_size, e.compressed_size) for e in self.entries), default=0)



def dos_date_time(date_time: Sequence[int]) -> Tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    if year < 1980:
        raise ValueError(f"zip timestamps cannot predate 1980: {tuple(date_time)}")
    dos_date = (year - 1980) << 9 | month << 5 | day
    dos_time = hour << 11 | minute << 5 | second // 2
    return dos_time, dos_date


def encode_name(name: str) -> Tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), FLAG_UTF8


def validate_name(name: str) -> None:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise FragmentError(f"Invalid zip entry name {name!r}.")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FragmentError(f"Invalid zip entry name {name!r}.")


def local_header(entry: FragmentEntry, name_bytes: bytes) -> bytes:
    if entry.local_zip64:
        extra = struct.pack("<HHQQ", 1, 16, entry.file_size, entry.compressed_size)
        csize = usize = MAX_U32
        version = VERSION_ZIP64
    else:
        extra = b""
        csize, usize = entry.compressed_size, entry.file_size
        version = VERSION_DEFAULT
    return (
        _LOCAL_HEADER.pack(
            _LOCAL_SIG,
            version,
            entry.flags,
            entry.method,
            entry.dos_time,
            entry.dos_date,
            entry.crc32,
            csize,
            usize,
            len(name_bytes),
            len(extra),
        )
        + extra
    )


def _external_attr(source: SourceEntry) -> int:
    if source.is_dir:
        return (DIRECTORY_MODE << 16) | 0x10  # 0x10: the MS-DOS directory bit, as zipfile sets
    return (EXECUTABLE_MODE if source.executable else FILE_MODE) << 16


def _deflater(level: int) -> "zlib._Compress":
    return zlib.compressobj(level, zlib.DEFLATED, -15)


class PositionWriter:
    """Position-tracking writer over a binary file object (never trusts `tell` after sendfile)."""

    def __init__(self, fp: BinaryIO, pos: int) -> None:
        self.fp = fp
        self.pos = pos

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.fp.write(view)
            if written is None:  # pragma: no cover - non-blocking raw files only
                continue
            view = view[written:]
        self.pos += len(data)


def _write_source(
    out: PositionWriter,
    seekable: BinaryIO,
    source: SourceEntry,
    compresslevel: int,
    dos_time: int,
    dos_date: int,
) -> FragmentEntry:
    name_bytes, flags = encode_name(source.name)
    offset = out.pos
    # What every kind of entry shares; as it stands, the record of an empty directory.
    base = FragmentEntry(
        name=source.name,
        flags=flags,
        method=ZIP_STORED,
        dos_time=dos_time,
        dos_date=dos_date,
        crc32=0,
        compressed_size=0,
        file_size=0,
        offset=offset,
        external_attr=_external_attr(source),
        extract_version=20,
    )
    if source.is_dir:
        if source.data or source.path:
            raise FragmentError(f"Directory entry {source.name!r} cannot have content.")
        out.write(local_header(base, name_bytes) + name_bytes)
        return base

    if source.precompressed is not None:
        return _write_precompressed(out, source.precompressed, name_bytes, base)

    size = len(source.data) if source.data is not None else None
    if size is None:
        if source.path is None:
            raise FragmentError(f"Entry {source.name!r} has neither data nor a path.")
        size = os.stat(source.path).st_size
    path = source.path
    deflate = source.compress and compresslevel > 0

    if size <= _IN_MEMORY_LIMIT:
        data = source.data
        if data is None:
            assert path is not None  # no data means a path (checked above)
            with open(path, "rb") as fp:
                data = fp.read()
        crc = zlib.crc32(data)
        method, payload = ZIP_STORED, data
        if deflate:
            compressor = _deflater(compresslevel)
            compressed = compressor.compress(data) + compressor.flush()
            if len(compressed) < len(data):
                method, payload = ZIP_DEFLATED, compressed
        entry = dataclasses.replace(
            base,
            method=method,
            crc32=crc,
            compressed_size=len(payload),
            file_size=len(data),
            extract_version=VERSION_ZIP64 if len(data) > _ZIP64_LOCAL_THRESHOLD else 20,
        )
        out.write(local_header(entry, name_bytes) + name_bytes)
        out.write(payload)
        return entry

    # Big file: stream it (always deflated if compression is on), then patch the local header.
    zip64 = size > _ZIP64_LOCAL_THRESHOLD
    provisional = dataclasses.replace(
        base,
        method=ZIP_DEFLATED if deflate else ZIP_STORED,
        crc32=0,
        compressed_size=size if zip64 else 0,
        file_size=size,
        extract_version=VERSION_ZIP64 if zip64 else 20,
    )
    header = local_header(provisional, name_bytes) + name_bytes
    out.write(header)
    crc = 0
    file_size = 0
    compressed_size = 0
    streaming = _deflater(compresslevel) if deflate else None
    reader: BinaryIO
    if source.data is not None:
        reader = io.BytesIO(source.data)
    else:
        assert path is not None  # no data means a path (checked above)
        reader = open(path, "rb")
    with reader:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            crc = zlib.crc32(chunk, crc)
            file_size += len(chunk)
            payload = streaming.compress(chunk) if streaming else chunk
            compressed_size += len(payload)
            out.write(payload)
    if streaming:
        tail = streaming.flush()
        compressed_size += len(tail)
        out.write(tail)
    if file_size != size:
        raise FragmentError(f"{source.path} changed size while being compressed.")
    entry = dataclasses.replace(
        provisional, crc32=crc, compressed_size=compressed_size, file_size=file_size
    )
    if entry.local_zip64 != zip64:
        raise FragmentError(
            f"Compressed data of {source.name!r} outgrew its local header; store it instead."
        )
    end = out.pos
    out.fp.flush()
    seekable.seek(offset)
    seekable.write(local_header(entry, name_bytes))
    seekable.seek(end)
    return entry


def _write_precompressed(
    out: PositionWriter, pre: Precompressed, name_bytes: bytes, base: FragmentEntry
) -> FragmentEntry:
    """A raw copy of compressed bytes from another zip: no inflate, no deflate."""
    if pre.method not in (ZIP_STORED, ZIP_DEFLATED):
        raise FragmentError(f"Entry {base.name!r}: compression method {pre.method} is not supported.")
    entry = dataclasses.replace(
        base,
        method=pre.method,
        crc32=pre.crc32,
        compressed_size=pre.compressed_size,
        file_size=pre.file_size,
        extract_version=VERSION_ZIP64 if pre.file_size > _ZIP64_LOCAL_THRESHOLD else 20,
    )
    out.write(local_header(entry, name_bytes) + name_bytes)
    remaining = pre.compressed_size
    with open(pre.zip_path, "rb") as fp:
        fp.seek(pre.offset)
        while remaining > 0:
            chunk = fp.read(min(_CHUNK, remaining))
            if not chunk:
                raise FragmentError(f"{pre.zip_path} ended inside the data of {base.name!r}.")
            remaining -= len(chunk)
            out.write(chunk)
    return entry


def _encode_index(entries: Sequence[FragmentEntry]) -> bytes:
    parts: List[bytes] = []
    for e in entries:
        name = e.name.encode("utf-8")
        parts.append(
            _INDEX_RECORD.pack(
                e.flags,
                e.method,
                e.dos_time,
                e.dos_date,
                e.crc32,
                e.compressed_size,
                e.file_size,
                e.offset,
                e.external_attr,
                e.extract_version,
                len(name),
            )
        )
        parts.append(name)
    return b"".join(parts)


def write_fragment(
    entries: Iterable[SourceEntry],
    out: Union[PathLike, BinaryIO],
    compresslevel: int = 6,
    *,
    date_time: Sequence[int] = DEFAULT_DATE_TIME,
) -> FragmentIndex:
    """Compress `entries` (sorted by name, each exactly once) into a fragment at `out`.

    `out` is a path (created/truncated) or a seekable binary file positioned at 0. The result is
    a pure function of the entries' names, contents, executable bits, `compresslevel` and
    `date_time`. `compresslevel` 0 stores everything.
    """
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be in 0..9, got {compresslevel}")
    ordered = sorted(entries, key=lambda e: e.name)
    seen: Set[str] = set()
    for source in ordered:
        validate_name(source.name)
        if source.name in seen:
            raise DuplicateEntryError(source.name, "this fragment", "this fragment")
        seen.add(source.name)
    dos_time, dos_date = dos_date_time(date_time)

    own = isinstance(out, (str, os.PathLike))
    fp: BinaryIO = open(out, "wb") if isinstance(out, (str, os.PathLike)) else out
    try:
        writer = PositionWriter(fp, 0)
        written = tuple(
            _write_source(writer, fp, source, compresslevel, dos_time, dos_date)
            for source in ordered
        )
        index = _encode_index(written)
        writer.write(index)
        writer.write(
            _TRAILER.pack(_MAGIC, writer.pos - len(index), len(index), len(written), zlib.crc32(index))
        )
        fp.flush()
        return FragmentIndex(entries=written, data_size=writer.pos - len(index) - _TRAILER.size)
    finally:
        if own:
            fp.close()


def _read_index(fp: BinaryIO, label: str) -> FragmentIndex:
    fp.seek(0, os.SEEK_END)
    total = fp.tell()
    if total < _TRAILER.size:
        raise FragmentError(f"{label} is not a fragment (too small).")
    fp.seek(total - _TRAILER.size)
    magic, data_size, index_size, count, crc = _TRAILER.unpack(fp.read(_TRAILER.size))
    if magic != _MAGIC or data_size + index_size + _TRAILER.size != total:
        raise FragmentError(f"{label} is not a fragment (bad trailer).")
    fp.seek(data_size)
    raw = fp.read(index_size)
    if zlib.crc32(raw) != crc:
        raise FragmentError(f"{label} has a corrupt index.")
    entries: List[FragmentEntry] = []
    pos = 0
    # A cache entry is not trusted blindly: a well-formed CRC over a malformed index (a
    # corrupted or tampered cache) is refused here, not as a crash while assembling.
    for _ in range(count):
        try:
            (flags, method, dos_time, dos_date, crc32, csize, usize, offset, ext, version, name_len) = (
                _INDEX_RECORD.unpack_from(raw, pos)
            )
            pos += _INDEX_RECORD.size
            name = raw[pos : pos + name_len].decode("utf-8")
        except (struct.error, UnicodeDecodeError) as e:
            raise FragmentError(f"{label} has a corrupt index ({e}).") from e
        pos += name_len
        if pos > len(raw) or offset + csize > data_size:
            raise FragmentError(f"{label} has a corrupt index (an entry lies outside the fragment).")
        entries.append(
            FragmentEntry(name, flags, method, dos_time, dos_date, crc32, csize, usize, offset, ext, version)
        )
    if pos != len(raw):
        raise FragmentError(f"{label} has a corrupt index (trailing bytes).")
    return FragmentIndex(entries=tuple(entries), data_size=data_size)


def read_fragment_index(fragment: Union[PathLike, BinaryIO], *, label: Optional[str] = None) -> FragmentIndex:
    """Read the index of a fragment file (path or seekable binary file); `label` names it in
    errors (default: its path)."""
    if isinstance(fragment, (str, os.PathLike)):
        with open(fragment, "rb") as fp:
            return _read_index(fp, label or os.fspath(fragment))
    return _read_index(fragment, label or "fragment")
