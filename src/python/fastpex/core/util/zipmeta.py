"""Zip structures of a wheel read by HTTP range requests: EOCD, ZIP64 records, central directory
and local headers, as pure functions over bytes.

The bytes come from an untrusted server, so every function here either returns a structure that
is consistent with itself or raises `ZipFormatError` (never `struct.error`, `IndexError` or a
decoding error): offsets and sizes that point outside the file, entries that run past their
directory, and local headers that disagree with the central directory are all refused.
`metadata.py` turns a `ZipFormatError` into "read the whole file instead", never a crash.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Callable, List, Tuple, TypeVar

_T = TypeVar("_T")

MAX_CENTRAL_DIRECTORY_BYTES = 256 * 1024 * 1024  # a bigger directory is not a wheel's

_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_SIG_EOCD = b"PK\x05\x06"
_SIG_ZIP64_LOCATOR = b"PK\x06\x07"
_SIG_ZIP64_EOCD = b"PK\x06\x06"
_SIG_CENTRAL = b"PK\x01\x02"
_SIG_LOCAL = b"PK\x03\x04"


class ZipFormatError(Exception):
    """The bytes are not the zip structure they should be (internal; becomes an outcome)."""


def _typed(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Any low-level failure on malformed bytes becomes a `ZipFormatError`."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> _T:
        try:
            return fn(*args, **kwargs)
        except ZipFormatError:
            raise
        except (struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError) as e:
            raise ZipFormatError(f"malformed zip structure ({type(e).__name__}: {e})") from e

    return wrapper


@dataclass(frozen=True)
class ZipEntry:
    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    uncompressed_size: int
    local_header_offset: int


@dataclass(frozen=True)
class CentralDirectory:
    """Where the central directory is (absolute offsets, already corrected for prefixes)."""

    offset: int
    size: int
    entries: int
    end: int  # where the directory ends (the ZIP64 EOCD record or the EOCD)
    prefix: int  # bytes prepended before the archive (0 for real wheels)


@_typed
def locate_central_directory(tail: bytes, tail_offset: int, read: Callable[[int, int], bytes]) -> CentralDirectory:
    """Find the EOCD in `tail` (the file's last bytes, starting at `tail_offset`), following a
    ZIP64 locator when present. `read(start, end)` fetches bytes outside the tail."""
    pos = tail.rfind(_SIG_EOCD)
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            fields = _EOCD.unpack_from(tail, pos)
            comment_len = fields[7]
            if pos + _EOCD.size + comment_len <= len(tail):
                break
        pos = tail.rfind(_SIG_EOCD, 0, pos)
    if pos < 0:
        raise ZipFormatError("no end-of-central-directory record in the last bytes")
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
    if disk != 0 or cd_disk != 0:
        raise ZipFormatError("multi-disk archives are not wheels")
    eocd_abs = tail_offset + pos
    end = eocd_abs
    locator_abs = eocd_abs - _ZIP64_LOCATOR.size
    locator = _slice(tail, tail_offset, locator_abs, eocd_abs, read) if locator_abs >= 0 else b""
    if locator[:4] == _SIG_ZIP64_LOCATOR:
        _, _, record_offset, _ = _ZIP64_LOCATOR.unpack(locator)
        # The record normally sits right before the locator; trust that over `record_offset`
        # when the archive has a prefix, as zipfile does.
        record_abs = locator_abs - _ZIP64_EOCD.size
        record = _slice(tail, tail_offset, record_abs, locator_abs, read) if record_abs >= 0 else b""
        if record[:4] != _SIG_ZIP64_EOCD:
            record_abs = record_offset
            record = read(record_abs, record_abs + _ZIP64_EOCD.size)
        if record[:4] != _SIG_ZIP64_EOCD:
            raise ZipFormatError("a ZIP64 locator points at no ZIP64 end-of-central-directory record")
        fields64 = _ZIP64_EOCD.unpack(record)
        entries, cd_size, cd_offset = fields64[7], fields64[8], fields64[9]
        end = record_abs
    prefix = end - (cd_offset + cd_size)
    if prefix < 0:
        raise ZipFormatError("the central directory would start before the file")
    return CentralDirectory(cd_offset + prefix, cd_size, entries, end, prefix)


def _slice(tail: bytes, tail_offset: int, start: int, end: int, read: Callable[[int, int], bytes]) -> bytes:
    if start >= tail_offset:
        return tail[start - tail_offset : end - tail_offset]
    return read(start, end)


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> Tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag != 0x0001:
            continue
        values = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
        idx = 0
        if usize == 0xFFFFFFFF:
            usize, idx = values[idx], idx + 1
        if csize == 0xFFFFFFFF:
            csize, idx = values[idx], idx + 1
        if offset == 0xFFFFFFFF:
            offset = values[idx]
        return usize, csize, offset
    if 0xFFFFFFFF in (usize, csize, offset):
        raise ZipFormatError("a ZIP64 entry lacks its ZIP64 extra field")
    return usize, csize, offset


@_typed
def parse_central_directory(data: bytes, prefix: int = 0) -> List[ZipEntry]:
    """All entries of a central directory that spans exactly `data`."""
    entries: List[ZipEntry] = []
    pos = 0
    while pos < len(data):
        if pos + _CENTRAL.size > len(data) or data[pos : pos + 4] != _SIG_CENTRAL:
            raise ZipFormatError(f"bad central directory entry at +{pos}")
        f = _CENTRAL.unpack_from(data, pos)
        flags, method, crc, csize, usize = f[3], f[4], f[7], f[8], f[9]
        name_len, extra_len, comment_len, offset = f[10], f[11], f[12], f[16]
        name_end = pos + _CENTRAL.size + name_len
        extra_end = name_end + extra_len
        if extra_end + comment_len > len(data):
            raise ZipFormatError("a central directory entry runs past the directory")
        raw_name = data[name_end - name_len : name_end]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        usize, csize, offset = _zip64_extra(data[name_end:extra_end], usize, csize, offset)
        entries.append(ZipEntry(name, method, flags, crc, csize, usize, offset + prefix))
        pos = extra_end + comment_len
    return entries


def parse_central_directory_suffix(data: bytes, prefix: int = 0) -> List[ZipEntry]:
    """The complete entries in a suffix of a central directory (`data` ends where it ends).

    Entries are variable-length, so the first whole entry is found by trying each signature
    and accepting the first one from which parsing lands exactly on the end. Wheels put
    `.dist-info` last, so this usually finds METADATA without reading the whole directory.
    """
    pos = data.find(_SIG_CENTRAL)
    while pos >= 0:
        try:
            return parse_central_directory(data[pos:], prefix)
        except (ZipFormatError, struct.error, UnicodeDecodeError, IndexError):
            pos = data.find(_SIG_CENTRAL, pos + 1)
    return []



@_typed
def local_data_offset(header: bytes, entry: ZipEntry) -> int:
    """Offset of the member's data relative to its local header."""
    if len(header) < _LOCAL.size or header[:4] != _SIG_LOCAL:
        raise ZipFormatError(f"no local file header for `{entry.name}`")
    f = _LOCAL.unpack_from(header, 0)
    flags, method, crc, csize, usize, name_len = f[2], f[3], f[6], f[7], f[8], f[9]
    if len(header) >= _LOCAL.size + name_len:
        raw = header[_LOCAL.size : _LOCAL.size + name_len]
        if raw.decode("utf-8" if flags & 0x800 else "cp437") != entry.name:
            raise ZipFormatError(f"the local header of `{entry.name}` names another file")
    if method != entry.method:
        raise ZipFormatError(f"the local header of `{entry.name}` says compression {method}, the directory {entry.method}")
    if not flags & 0x8 and 0xFFFFFFFF not in (csize, usize):
        # Sizes in the local header are authoritative unless a data descriptor follows.
        if (crc, csize, usize) != (entry.crc, entry.compressed_size, entry.uncompressed_size):
            raise ZipFormatError(f"the local header of `{entry.name}` disagrees with the directory on its size or CRC")
    return _LOCAL.size + name_len + f[10]
