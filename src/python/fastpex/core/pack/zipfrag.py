"""Zip fragments: pre-compressed zip local entries that can be assembled into a zip by raw copy.

Building a PEX with pex recompresses every dependency file on every build. A *fragment* is the
slice of a zip archive that holds local file headers + compressed data for a set of entries,
written once (deterministically) and followed by a small binary index. Assembling a zip from
fragments copies those bytes verbatim (`os.sendfile` where available) and only synthesizes the
central directory, whose records are the index entries with their offsets shifted.

Fragment file format (all integers little endian)::

    [local entries: local file header + compressed data, sorted by name] (data_size bytes)
    [index: one record per entry, see `_INDEX_RECORD` + the UTF-8 name]  (index_size bytes)
    [trailer: magic, data_size, index_size, entry_count, crc32(index)]   (_TRAILER.size bytes)

Local entries start at offset 0, so an index offset is an offset within the fragment file.

Zips written by `ZipAssembler` record absolute file offsets (counted from the first byte of the
file, including any preamble such as a PEX shebang line). That is exactly what pex 2.x writes
(it appends to the shebang'ed file with `zipfile` in "a" mode) and both `zipfile` and
`zipimport` accept it. ZIP64 records are written exactly when a value reaches its classic field's
limit (the all-ones value is the ZIP64 sentinel per APPNOTE 4.4.1.4): >= 0xFFFF entries, or a
size/offset >= 0xFFFFFFFF.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "DEFAULT_DATE_TIME",
    "DuplicateEntryError",
    "FragmentEntry",
    "FragmentError",
    "FragmentIndex",
    "SourceEntry",
    "ZipAssembler",
    "ZipResult",
    "fragment_to_zip",
    "read_fragment_index",
    "requires_zip64",
    "write_fragment",
]

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = stat.S_IFREG | 0o644
EXECUTABLE_MODE = stat.S_IFREG | 0o755
DIRECTORY_MODE = stat.S_IFDIR | 0o755

ZIP_STORED = 0
ZIP_DEFLATED = 8

_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
# What CPython's zipfile writes: "made by" unix (3), spec 2.0 (20) or 4.5 (45) when ZIP64 is used.
_CREATE_SYSTEM_UNIX = 3
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_FLAG_UTF8 = 0x800
# Entries this big may need a ZIP64 local extra; zipfile uses the same 5% slack for deflate growth.
_ZIP64_LOCAL_THRESHOLD = int(_MAX_U32 / 1.05)
# Files up to this size are compressed in memory so we can fall back to STORED when deflate does
# not help; bigger files are streamed.
_IN_MEMORY_LIMIT = 16 * 1024 * 1024
_CHUNK = 1024 * 1024

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_HEADER = struct.Struct("<4sBBBBHHHHIIIHHHHHII")
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD_SIG = b"PK\x05\x06"
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_EOCD64_SIG = b"PK\x06\x06"
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"

_MAGIC = b"FPXFRAG\x01"
_TRAILER = struct.Struct("<8sQQII")
# flags, method, dos_time, dos_date, crc32, compressed_size, file_size, offset, external_attr,
# extract_version, name_len.
_INDEX_RECORD = struct.Struct("<HHHHIQQQIHH")


class FragmentError(Exception):
    """A fragment is malformed or cannot be assembled as requested."""


class DuplicateEntryError(FragmentError):
    """Two entries of one zip would have the same name (zip readers would silently pick one)."""

    def __init__(self, name: str, first: str, second: str) -> None:
        super().__init__(
            f"Duplicate zip entry {name!r}: it is provided by both {first} and {second}."
        )
        self.name = name
        self.first = first
        self.second = second

    def __reduce__(self):  # Keep it picklable across process pools.
        return (type(self), (self.name, self.first, self.second))


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
        return 20 if self._local_zip64 else 0

    @property
    def _local_zip64(self) -> bool:
        return self.file_size > _ZIP64_LOCAL_THRESHOLD or self.compressed_size > _ZIP64_LOCAL_THRESHOLD


@dataclass(frozen=True)
class FragmentIndex:
    """The entries of a fragment and the size of its local-entries region."""

    entries: Tuple[FragmentEntry, ...]
    data_size: int

    @property
    def max_entry_size(self) -> int:
        return max((max(e.file_size, e.compressed_size) for e in self.entries), default=0)


@dataclass(frozen=True)
class ZipResult:
    """What `ZipAssembler.close` wrote."""

    entry_count: int
    zip64: bool
    size: int


def requires_zip64(entry_count: int, central_directory_offset: int, max_entry_size: int) -> bool:
    """Whether a zip with these properties needs ZIP64 records (APPNOTE 4.4.1.4 sentinels).

    The central directory offset bounds every local header offset, so it is the only offset that
    needs checking.
    """
    return (
        entry_count >= _MAX_U16
        or central_directory_offset >= _MAX_U32
        or max_entry_size >= _MAX_U32
    )


def _dos_date_time(date_time: Sequence[int]) -> Tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    if year < 1980:
        raise ValueError(f"zip timestamps cannot predate 1980: {tuple(date_time)}")
    dos_date = (year - 1980) << 9 | month << 5 | day
    dos_time = hour << 11 | minute << 5 | second // 2
    return dos_time, dos_date


def _encode_name(name: str) -> Tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _FLAG_UTF8


def _validate_name(name: str) -> None:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise FragmentError(f"Invalid zip entry name {name!r}.")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FragmentError(f"Invalid zip entry name {name!r}.")


def _local_header(entry: FragmentEntry, name_bytes: bytes) -> bytes:
    if entry._local_zip64:
        extra = struct.pack("<HHQQ", 1, 16, entry.file_size, entry.compressed_size)
        csize = usize = _MAX_U32
        version = _VERSION_ZIP64
    else:
        extra = b""
        csize, usize = entry.compressed_size, entry.file_size
        version = _VERSION_DEFAULT
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


class _Writer:
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
    out: _Writer,
    seekable: BinaryIO,
    source: SourceEntry,
    compresslevel: int,
    dos_time: int,
    dos_date: int,
) -> FragmentEntry:
    name_bytes, flags = _encode_name(source.name)
    offset = out.pos
    base = dict(
        name=source.name,
        flags=flags,
        dos_time=dos_time,
        dos_date=dos_date,
        offset=offset,
        external_attr=_external_attr(source),
    )
    if source.is_dir:
        if source.data or source.path:
            raise FragmentError(f"Directory entry {source.name!r} cannot have content.")
        entry = FragmentEntry(
            method=ZIP_STORED, crc32=0, compressed_size=0, file_size=0, extract_version=20, **base
        )
        out.write(_local_header(entry, name_bytes) + name_bytes)
        return entry

    if source.precompressed is not None:
        return _write_precompressed(out, source.precompressed, name_bytes, base)

    size = len(source.data) if source.data is not None else None
    if size is None:
        if source.path is None:
            raise FragmentError(f"Entry {source.name!r} has neither data nor a path.")
        size = os.stat(source.path).st_size
    deflate = source.compress and compresslevel > 0

    if size <= _IN_MEMORY_LIMIT:
        data = source.data
        if data is None:
            with open(source.path, "rb") as fp:  # type: ignore[arg-type]
                data = fp.read()
        crc = zlib.crc32(data)
        method, payload = ZIP_STORED, data
        if deflate:
            compressor = _deflater(compresslevel)
            compressed = compressor.compress(data) + compressor.flush()
            if len(compressed) < len(data):
                method, payload = ZIP_DEFLATED, compressed
        entry = FragmentEntry(
            method=method,
            crc32=crc,
            compressed_size=len(payload),
            file_size=len(data),
            extract_version=_VERSION_ZIP64 if len(data) > _ZIP64_LOCAL_THRESHOLD else 20,
            **base,
        )
        out.write(_local_header(entry, name_bytes) + name_bytes)
        out.write(payload)
        return entry

    # Big file: stream it (always deflated if compression is on), then patch the local header.
    zip64 = size > _ZIP64_LOCAL_THRESHOLD
    provisional = FragmentEntry(
        method=ZIP_DEFLATED if deflate else ZIP_STORED,
        crc32=0,
        compressed_size=size if zip64 else 0,
        file_size=size,
        extract_version=_VERSION_ZIP64 if zip64 else 20,
        **base,
    )
    header = _local_header(provisional, name_bytes) + name_bytes
    out.write(header)
    crc = 0
    file_size = 0
    compressed_size = 0
    compressor = _deflater(compresslevel) if deflate else None
    reader: BinaryIO
    reader = io.BytesIO(source.data) if source.data is not None else open(source.path, "rb")  # type: ignore[arg-type,assignment]
    with reader:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            crc = zlib.crc32(chunk, crc)
            file_size += len(chunk)
            payload = compressor.compress(chunk) if compressor else chunk
            compressed_size += len(payload)
            out.write(payload)
    if compressor:
        tail = compressor.flush()
        compressed_size += len(tail)
        out.write(tail)
    if file_size != size:
        raise FragmentError(f"{source.path} changed size while being compressed.")
    entry = FragmentEntry(
        method=provisional.method,
        crc32=crc,
        compressed_size=compressed_size,
        file_size=file_size,
        extract_version=provisional.extract_version,
        **base,
    )
    if entry._local_zip64 != zip64:
        raise FragmentError(
            f"Compressed data of {source.name!r} outgrew its local header; store it instead."
        )
    end = out.pos
    out.fp.flush()
    seekable.seek(offset)
    seekable.write(_local_header(entry, name_bytes))
    seekable.seek(end)
    return entry


def _write_precompressed(
    out: "_Writer", pre: Precompressed, name_bytes: bytes, base: Dict[str, object]
) -> FragmentEntry:
    """A raw copy of compressed bytes from another zip: no inflate, no deflate."""
    if pre.method not in (ZIP_STORED, ZIP_DEFLATED):
        raise FragmentError(f"Entry {base['name']!r}: compression method {pre.method} is not supported.")
    entry = FragmentEntry(
        method=pre.method,
        crc32=pre.crc32,
        compressed_size=pre.compressed_size,
        file_size=pre.file_size,
        extract_version=_VERSION_ZIP64 if pre.file_size > _ZIP64_LOCAL_THRESHOLD else 20,
        **base,  # type: ignore[arg-type]
    )
    out.write(_local_header(entry, name_bytes) + name_bytes)
    remaining = pre.compressed_size
    with open(pre.zip_path, "rb") as fp:
        fp.seek(pre.offset)
        while remaining > 0:
            chunk = fp.read(min(_CHUNK, remaining))
            if not chunk:
                raise FragmentError(f"{pre.zip_path} ended inside the data of {base['name']!r}.")
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
    seen = set()
    for source in ordered:
        _validate_name(source.name)
        if source.name in seen:
            raise DuplicateEntryError(source.name, "this fragment", "this fragment")
        seen.add(source.name)
    dos_time, dos_date = _dos_date_time(date_time)

    own = not hasattr(out, "write")
    fp: BinaryIO = open(out, "wb") if own else out  # type: ignore[arg-type,assignment]
    try:
        writer = _Writer(fp, 0)
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


def read_fragment_index(fragment: Union[PathLike, BinaryIO]) -> FragmentIndex:
    """Read the index of a fragment file (path or seekable binary file)."""
    if hasattr(fragment, "read"):
        return _read_index(fragment, "fragment")  # type: ignore[arg-type]
    with open(fragment, "rb") as fp:  # type: ignore[arg-type]
        return _read_index(fp, os.fspath(fragment))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _CentralRecord:
    name_bytes: bytes
    entry: FragmentEntry
    offset: int  # absolute offset of the local header in the output


def _copy_range(src: BinaryIO, dst: _Writer, offset: int, count: int) -> None:
    """Copy `count` bytes at `offset` of `src` to `dst` verbatim, zero-copy when possible."""
    if count == 0:
        return
    dst.fp.flush()
    try:
        in_fd, out_fd = src.fileno(), dst.fp.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        in_fd = out_fd = -1
    if in_fd >= 0 and hasattr(os, "sendfile"):
        sent = 0
        try:
            while sent < count:
                n = os.sendfile(out_fd, in_fd, offset + sent, count - sent)
                if n == 0:
                    raise FragmentError("Fragment ended before its index says it should.")
                sent += n
            dst.pos += count
            return
        except OSError:
            if sent:
                raise
    src.seek(offset)
    remaining = count
    while remaining:
        chunk = src.read(min(_CHUNK, remaining))
        if not chunk:
            raise FragmentError("Fragment ended before its index says it should.")
        dst.write(chunk)
        remaining -= len(chunk)


class ZipAssembler:
    """Writes one zip archive from fragments (copied verbatim) and a few new small entries.

    Usage::

        with ZipAssembler(path, preamble=b"#!/usr/bin/env python3\\n") as zf:
            zf.add_fragment("bootstrap.frag")
            zf.add_bytes("PEX-INFO", data)
        # close() writes the central directory (and ZIP64 records when required).
    """

    def __init__(
        self,
        out_path: PathLike,
        *,
        preamble: bytes = b"",
        allow_zip64: bool = True,
        compresslevel: int = 6,
        date_time: Sequence[int] = DEFAULT_DATE_TIME,
    ) -> None:
        self._path = os.fspath(out_path)
        # Unbuffered: we interleave our writes with sendfile on the same descriptor.
        self._fp: BinaryIO = open(self._path, "wb", buffering=0)  # type: ignore[assignment]
        self._out = _Writer(self._fp, 0)
        self._records: List[_CentralRecord] = []
        self._owners: Dict[str, str] = {}
        self._allow_zip64 = allow_zip64
        self._compresslevel = compresslevel
        self._dos_time, self._dos_date = _dos_date_time(date_time)
        self._max_entry_size = 0
        self._result: Optional[ZipResult] = None
        if preamble:
            self._out.write(preamble)

    def __enter__(self) -> "ZipAssembler":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def entry_count(self) -> int:
        return len(self._records)

    @property
    def position(self) -> int:
        return self._out.pos

    @property
    def needs_zip64(self) -> bool:
        """Whether closing now would need ZIP64 (the central directory starts at `position`)."""
        return requires_zip64(len(self._records), self._out.pos, self._max_entry_size)

    def _claim(self, name: str, source: str) -> None:
        first = self._owners.get(name)
        if first is not None:
            raise DuplicateEntryError(name, first, source)
        self._owners[name] = source

    def _check_zip64(self, entry_count: int, end: int, max_size: int) -> None:
        if not self._allow_zip64 and requires_zip64(entry_count, end, max_size):
            raise FragmentError(
                f"{self._path} would need ZIP64 extensions ({entry_count} entries, "
                f"{end} bytes) but ZIP64 is not allowed."
            )

    def add_fragment(
        self,
        fragment: Union[PathLike, BinaryIO],
        *,
        strip_prefix: str = "",
        prefix: str = "",
        label: Optional[str] = None,
    ) -> int:
        """Append every entry of a fragment; returns how many entries were added.

        Without renaming, the fragment's local-entries region is copied in one verbatim range.
        With `strip_prefix`/`prefix`, names are rewritten (`prefix + name[len(strip_prefix):]`,
        the entry named exactly `strip_prefix` is dropped): each local header is regenerated and
        each entry's compressed data is still copied verbatim.
        """
        if hasattr(fragment, "read"):
            return self._add_fragment_fp(fragment, strip_prefix, prefix, label or "<fragment>")  # type: ignore[arg-type]
        with open(fragment, "rb") as fp:  # type: ignore[arg-type]
            return self._add_fragment_fp(fp, strip_prefix, prefix, label or os.fspath(fragment))  # type: ignore[arg-type]

    def _add_fragment_fp(self, fp: BinaryIO, strip_prefix: str, prefix: str, label: str) -> int:
        index = _read_index(fp, label)
        rename = bool(strip_prefix or prefix)
        selected: List[Tuple[FragmentEntry, str]] = []
        for entry in index.entries:
            name = entry.name
            if rename:
                if not name.startswith(strip_prefix):
                    raise FragmentError(
                        f"Entry {name!r} of {label} does not start with {strip_prefix!r}."
                    )
                if name == strip_prefix:
                    continue  # The directory entry of the stripped root itself.
                name = prefix + name[len(strip_prefix) :]
                _validate_name(name)
            selected.append((entry, name))
        # Validate everything before claiming or writing anything.
        batch: Dict[str, str] = {}
        for _, name in selected:
            first = self._owners.get(name) or batch.get(name)
            if first is not None:
                raise DuplicateEntryError(name, first, label)
            batch[name] = label
        self._owners.update(batch)
        max_size = max([self._max_entry_size, index.max_entry_size])
        if not rename:
            base = self._out.pos
            self._check_zip64(len(self._records) + len(selected), base + index.data_size, max_size)
            _copy_range(fp, self._out, 0, index.data_size)
            for entry, name in selected:
                name_bytes = name.encode("utf-8")
                self._records.append(_CentralRecord(name_bytes, entry, base + entry.offset))
        else:
            for entry, name in selected:
                name_bytes, utf8 = _encode_name(name)
                renamed = FragmentEntry(
                    name=name,
                    flags=(entry.flags & ~_FLAG_UTF8) | utf8,
                    method=entry.method,
                    dos_time=entry.dos_time,
                    dos_date=entry.dos_date,
                    crc32=entry.crc32,
                    compressed_size=entry.compressed_size,
                    file_size=entry.file_size,
                    offset=entry.offset,
                    external_attr=entry.external_attr,
                    extract_version=entry.extract_version,
                )
                offset = self._out.pos
                self._check_zip64(len(self._records) + 1, offset + entry.compressed_size, max_size)
                self._out.write(_local_header(renamed, name_bytes) + name_bytes)
                _copy_range(
                    fp, self._out, entry.offset + entry.local_header_size, entry.compressed_size
                )
                self._records.append(_CentralRecord(name_bytes, renamed, offset))
        self._max_entry_size = max_size
        return len(selected)

    def add_bytes(
        self,
        name: str,
        data: bytes = b"",
        *,
        compress: bool = True,
        executable: bool = False,
    ) -> None:
        """Append one new entry (a directory if `name` ends with "/"), compressed here."""
        _validate_name(name)
        self._claim(name, "add_bytes")
        buf = io.BytesIO()
        index = write_fragment(
            [SourceEntry(name, data=None if name.endswith("/") else data, executable=executable, compress=compress)],
            buf,
            self._compresslevel if compress else 0,
        )
        (entry,) = index.entries
        offset = self._out.pos
        max_size = max(self._max_entry_size, index.max_entry_size)
        self._check_zip64(len(self._records) + 1, offset + index.data_size, max_size)
        self._out.write(buf.getbuffer()[: index.data_size].tobytes())
        self._records.append(_CentralRecord(_encode_name(name)[0], entry, offset))
        self._max_entry_size = max_size

    def close(self) -> ZipResult:
        """Write the central directory and end records; returns what was written."""
        if self._result is not None:
            return self._result
        cd_offset = self._out.pos
        zip64 = requires_zip64(len(self._records), cd_offset, self._max_entry_size)
        self._check_zip64(len(self._records), cd_offset, self._max_entry_size)
        parts: List[bytes] = []
        for record in self._records:
            parts.append(_central_record(record))
        central = b"".join(parts)
        cd_size = len(central)
        # The central directory size itself can overflow with enough entries.
        zip64 = zip64 or cd_size >= _MAX_U32
        self._out.write(central)
        count = len(self._records)
        if zip64:
            eocd64_offset = self._out.pos
            self._out.write(
                _EOCD64.pack(
                    _EOCD64_SIG,
                    _EOCD64.size - 12,
                    (_CREATE_SYSTEM_UNIX << 8) | _VERSION_ZIP64,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    cd_size,
                    cd_offset,
                )
            )
            self._out.write(_EOCD64_LOCATOR.pack(_EOCD64_LOCATOR_SIG, 0, eocd64_offset, 1))
        self._out.write(
            _EOCD.pack(
                _EOCD_SIG,
                0,
                0,
                min(count, _MAX_U16),
                min(count, _MAX_U16),
                min(cd_size, _MAX_U32),
                min(cd_offset, _MAX_U32),
                0,
            )
        )
        self._fp.close()
        self._result = ZipResult(entry_count=count, zip64=zip64, size=self._out.pos)
        return self._result

    def abort(self) -> None:
        """Close and delete the partial output."""
        if self._result is None:
            self._fp.close()
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass


def _central_record(record: _CentralRecord) -> bytes:
    e = record.entry
    extra_values: List[int] = []
    usize, csize, offset = e.file_size, e.compressed_size, record.offset
    # Local ZIP64 extras force the central sizes to ZIP64 too so both headers agree.
    force_sizes = e._local_zip64
    if usize >= _MAX_U32 or force_sizes:
        extra_values.append(usize)
        usize = _MAX_U32
    if csize >= _MAX_U32 or force_sizes:
        extra_values.append(csize)
        csize = _MAX_U32
    if offset >= _MAX_U32:
        extra_values.append(offset)
        offset = _MAX_U32
    if extra_values:
        extra = struct.pack(f"<HH{len(extra_values)}Q", 1, 8 * len(extra_values), *extra_values)
        version = _VERSION_ZIP64
    else:
        extra = b""
        version = max(_VERSION_DEFAULT, e.extract_version)
    return (
        _CENTRAL_HEADER.pack(
            _CENTRAL_SIG,
            version,
            _CREATE_SYSTEM_UNIX,
            version,
            0,
            e.flags,
            e.method,
            e.dos_time,
            e.dos_date,
            e.crc32,
            csize,
            usize,
            len(record.name_bytes),
            len(extra),
            0,
            0,
            0,
            e.external_attr,
            offset,
        )
        + record.name_bytes
        + extra
    )


def fragment_to_zip(
    fragment: PathLike,
    out_path: PathLike,
    *,
    strip_prefix: str = "",
    prefix: str = "",
) -> ZipResult:
    """Wrap a fragment into a standalone zip (optionally renaming its entries)."""
    assembler = ZipAssembler(out_path)
    try:
        assembler.add_fragment(fragment, strip_prefix=strip_prefix, prefix=prefix)
        return assembler.close()
    except BaseException:
        assembler.abort()
        raise
