"""Reproducible layer tarballs: our own ustar/pax writer and gzip framing.

Written by hand rather than with `tarfile`/`gzip` so that the bytes depend only on the entries,
the compression level and zlib, never on the Python that runs the build (their header details
have changed between releases): sorted entries, mtime 0, uid/gid 0, empty owner names, fixed
modes, a pax `path`/`linkpath` record only for names that don't fit ustar, no pax times, no
xattrs. gzip: no file name, mtime 0, OS 255 (unknown), deflated in fixed pieces (see
`GzipLayerSink`), so the same entries give the same digest on any machine with the same zlib.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Deque, Iterable, Optional

BLOCK = 512
GZIP_OS_UNKNOWN = 255
COMPRESSION = "gzip"

FILE, DIRECTORY, SYMLINK = "0", "5", "2"


@dataclass(frozen=True)
class TarEntry:
    """One member of a layer: `path` relative to the image root (no leading `/`)."""

    path: str
    kind: str  # FILE, DIRECTORY, SYMLINK
    mode: int
    size: int = 0
    link_target: str = ""
    # Writes the file's `size` bytes to the sink it is given (files only).
    write_data: Optional[Callable[[Callable[[bytes], None]], None]] = None


def _octal(value: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, value)) + b"\0"


def _header(name: bytes, kind: str, mode: int, size: int, linkname: bytes) -> bytes:
    fields = [
        name.ljust(100, b"\0"),
        _octal(mode, 8),
        _octal(0, 8),  # uid
        _octal(0, 8),  # gid
        _octal(size, 12),
        _octal(0, 12),  # mtime
        b" " * 8,  # checksum placeholder
        kind.encode("ascii"),
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 32,  # uname
        b"\0" * 32,  # gname
        _octal(0, 8),
        _octal(0, 8),
        b"\0" * 155,  # prefix: unused, long names go in a pax record
        b"\0" * 12,
    ]
    header = b"".join(fields)
    assert len(header) == BLOCK
    checksum = sum(header)
    return header[:148] + (b"%06o\0 " % checksum) + header[156:]


def _pax_record(key: str, value: bytes) -> bytes:
    """`"%d key=value\n"`, the length counting its own digits (POSIX pax)."""
    body = b" " + key.encode("ascii") + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode("ascii") + body


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _ascii_fits(raw: bytes, limit: int) -> bool:
    return len(raw) <= limit and all(b < 128 for b in raw)


class TarWriter:
    """Writes entries, in the order given, as a tar stream to `sink`."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def add(self, entry: TarEntry) -> None:
        name = entry.path + ("/" if entry.kind == DIRECTORY and not entry.path.endswith("/") else "")
        raw_name = name.encode("utf-8")
        raw_link = entry.link_target.encode("utf-8")
        records = b""
        if not _ascii_fits(raw_name, 100):
            records += _pax_record("path", raw_name)
            raw_name = raw_name[:100].decode("utf-8", "ignore").encode("ascii", "replace")[:100]
        if not _ascii_fits(raw_link, 100):
            records += _pax_record("linkpath", raw_link)
            raw_link = b""
        if records:
            self._sink(_header(b"././@PaxHeader", "x", 0o644, len(records), b""))
            self._sink(records + _padding(len(records)))
        size = entry.size if entry.kind == FILE else 0
        self._sink(_header(raw_name, entry.kind, entry.mode & 0o7777, size, raw_link))
        if entry.kind == FILE:
            written = 0

            def counting(chunk: bytes) -> None:
                nonlocal written
                written += len(chunk)
                self._sink(chunk)

            if entry.write_data is not None:
                entry.write_data(counting)
            if written != size:
                raise ValueError(f"{entry.path}: wrote {written} bytes, header says {size}")
            self._sink(_padding(size))

    def close(self) -> None:
        self._sink(b"\0" * (2 * BLOCK))


@dataclass(frozen=True)
class LayerDigests:
    """A compressed layer's digest and size, and the digest of its tar (the config's diff_id)."""

    digest: str
    size: int
    diff_id: str


CHUNK = 4 << 20  # tar bytes per independently deflated piece
WINDOW = 32 << 10  # deflate's window: each piece is primed with the 32 KiB before it


def _deflate_piece(data: bytes, primer: bytes, level: int, last: bool) -> bytes:
    if primer:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, primer)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


_POOL: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _forget_pool() -> None:
    """A forked child has the pool object but none of its threads: it must make its own."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    return _POOL


class GzipLayerSink:
    """tar bytes in -> one gzip member out to `out`, hashing both sides.

    The tar stream is cut into fixed `CHUNK`s, each deflated on its own (primed with the 32 KiB
    before it, ended by a sync flush) in a thread pool, and the pieces concatenated: one valid
    deflate stream, as pigz makes them, so one large layer (torch) uses every core. The cut
    points depend only on the bytes, so the output is the same whatever the thread count.
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._level = level
        self._pending = bytearray()
        self._primer = b""
        self._futures: Deque["concurrent.futures.Future[bytes]"] = collections.deque()
        self._crc = 0
        self._raw_size = 0
        self._tar_hash = hashlib.sha256()
        self._gz_hash = hashlib.sha256()
        self._gz_size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        self._emit(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, GZIP_OS_UNKNOWN]))

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._gz_hash.update(data)
            self._gz_size += len(data)

    def _drain(self, keep: int) -> None:
        while len(self._futures) > keep:
            self._emit(self._futures.popleft().result())

    def write(self, data: bytes) -> None:
        self._tar_hash.update(data)
        self._crc = zlib.crc32(data, self._crc)
        self._raw_size += len(data)
        self._pending.extend(data)
        while len(self._pending) > CHUNK:
            piece = bytes(self._pending[:CHUNK])
            del self._pending[:CHUNK]
            self._futures.append(_pool().submit(_deflate_piece, piece, self._primer, self._level, False))
            self._primer = piece[-WINDOW:]
            self._drain(keep=8)

    def finish(self) -> LayerDigests:
        self._futures.append(_pool().submit(_deflate_piece, bytes(self._pending), self._primer, self._level, True))
        self._pending.clear()
        self._drain(keep=0)
        self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self._raw_size & 0xFFFFFFFF))
        return LayerDigests(
            digest="sha256:" + self._gz_hash.hexdigest(),
            size=self._gz_size,
            diff_id="sha256:" + self._tar_hash.hexdigest(),
        )


def write_layer(entries: Iterable[TarEntry], out: BinaryIO, level: int) -> LayerDigests:
    """Write `entries` (already sorted and complete) as a gzip-compressed tar to `out`."""
    sink = GzipLayerSink(out, level)
    # Feed zlib in large pieces: many small writes cost more than the copies they save.
    buffer = bytearray()

    def buffered(data: bytes) -> None:
        buffer.extend(data)
        if len(buffer) >= 1 << 20:
            sink.write(bytes(buffer))
            buffer.clear()

    writer = TarWriter(buffered)
    for entry in entries:
        writer.add(entry)
    writer.close()
    if buffer:
        sink.write(bytes(buffer))
    return sink.finish()
