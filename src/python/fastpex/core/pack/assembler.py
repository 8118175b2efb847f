"""Zip assembly: one zip archive from fragments copied verbatim plus a few new small entries.

Only the central directory is synthesized (APPNOTE 4.3.12-4.3.16). Zips written here record
absolute file offsets (counted from the first byte of the file, including any preamble such as a
PEX shebang line). That is exactly what pex 2.x writes (it appends to the shebang'ed file with
`zipfile` in "a" mode) and both `zipfile` and `zipimport` accept it. ZIP64 records are written
exactly when a value reaches its classic field's limit (the all-ones value is the ZIP64 sentinel
per APPNOTE 4.4.1.4): >= 0xFFFF entries, or a size/offset >= 0xFFFFFFFF.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple, Type, Union

from fastpex.core.pack.errors import DuplicateEntryError, FragmentError
from fastpex.core.pack.fragment import (
    DEFAULT_DATE_TIME,
    FLAG_UTF8,
    MAX_U16,
    MAX_U32,
    VERSION_DEFAULT,
    VERSION_ZIP64,
    FragmentEntry,
    PositionWriter,
    SourceEntry,
    dos_date_time,
    encode_name,
    local_header,
    read_fragment_index,
    validate_name,
    write_fragment,
)

__all__ = ["ZipAssembler", "ZipResult", "fragment_to_zip", "requires_zip64"]

PathLike = Union[str, "os.PathLike[str]"]

# "Made by" unix (3), as CPython's zipfile writes.
_CREATE_SYSTEM_UNIX = 3
_COPY_CHUNK = 1024 * 1024  # read size when sendfile is unavailable

_CENTRAL_HEADER = struct.Struct("<4sBBBBHHHHIIIHHHHHII")
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD_SIG = b"PK\x05\x06"
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_EOCD64_SIG = b"PK\x06\x06"
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"


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
        entry_count >= MAX_U16
        or central_directory_offset >= MAX_U32
        or max_entry_size >= MAX_U32
    )


@dataclass(frozen=True)
class _CentralRecord:
    name_bytes: bytes
    entry: FragmentEntry
    offset: int  # absolute offset of the local header in the output


def _copy_range(src: BinaryIO, dst: PositionWriter, offset: int, count: int) -> None:
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
        chunk = src.read(min(_COPY_CHUNK, remaining))
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
        self._fp: BinaryIO = open(self._path, "wb", buffering=0)
        self._out = PositionWriter(self._fp, 0)
        self._records: List[_CentralRecord] = []
        self._owners: Dict[str, str] = {}
        self._allow_zip64 = allow_zip64
        self._compresslevel = compresslevel
        self._dos_time, self._dos_date = dos_date_time(date_time)
        self._max_entry_size = 0
        self._result: Optional[ZipResult] = None
        if preamble:
            self._out.write(preamble)

    def __enter__(self) -> "ZipAssembler":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
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
        if isinstance(fragment, (str, os.PathLike)):
            with open(fragment, "rb") as fp:
                return self._add_fragment_fp(fp, strip_prefix, prefix, label or os.fspath(fragment))
        return self._add_fragment_fp(fragment, strip_prefix, prefix, label or "<fragment>")

    def _add_fragment_fp(self, fp: BinaryIO, strip_prefix: str, prefix: str, label: str) -> int:
        index = read_fragment_index(fp, label=label)
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
                validate_name(name)
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
                name_bytes, utf8 = encode_name(name)
                renamed = FragmentEntry(
                    name=name,
                    flags=(entry.flags & ~FLAG_UTF8) | utf8,
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
                self._out.write(local_header(renamed, name_bytes) + name_bytes)
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
        validate_name(name)
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
        self._records.append(_CentralRecord(encode_name(name)[0], entry, offset))
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
        zip64 = zip64 or cd_size >= MAX_U32
        self._out.write(central)
        count = len(self._records)
        if zip64:
            eocd64_offset = self._out.pos
            self._out.write(
                _EOCD64.pack(
                    _EOCD64_SIG,
                    _EOCD64.size - 12,
                    (_CREATE_SYSTEM_UNIX << 8) | VERSION_ZIP64,
                    VERSION_ZIP64,
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
                min(count, MAX_U16),
                min(count, MAX_U16),
                min(cd_size, MAX_U32),
                min(cd_offset, MAX_U32),
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
    force_sizes = e.local_zip64
    if usize >= MAX_U32 or force_sizes:
        extra_values.append(usize)
        usize = MAX_U32
    if csize >= MAX_U32 or force_sizes:
        extra_values.append(csize)
        csize = MAX_U32
    if offset >= MAX_U32:
        extra_values.append(offset)
        offset = MAX_U32
    if extra_values:
        extra = struct.pack(f"<HH{len(extra_values)}Q", 1, 8 * len(extra_values), *extra_values)
        version = VERSION_ZIP64
    else:
        extra = b""
        version = max(VERSION_DEFAULT, e.extract_version)
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
