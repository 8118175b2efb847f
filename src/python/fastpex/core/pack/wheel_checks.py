"""Wheel checks: refuse a wheel before pex installs it, so a hostile or damaged file never
becomes a cached layer.

A wheel is refused when its bytes don't match the sha256 it must have, when a member could be
written outside the install directory or collides with another, when its RECORD disagrees with
its contents (the wheel was altered after it was built), or when its zip structure lies.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import posixpath
import stat
import zipfile
import zlib
from typing import Dict, Optional, Tuple, Union

from fastpex.core.errors import HashMismatchError
from fastpex.core.pack.errors import CorruptWheelError, UnsafeWheelError
from fastpex.core.util.hashing import sha256_file

__all__ = ["find_corrupt_member", "verify_sha256", "verify_wheel_zip"]

PathLike = Union[str, "os.PathLike[str]"]


def verify_sha256(path: str, filename: str, sha256: str) -> None:
    """Refuse the wheel at `path` unless its sha256 is `sha256` (core `HashMismatchError`)."""
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise CorruptWheelError(f"Cannot read wheel {filename} at {path}: {e}", wheel=filename)
    if actual != sha256.lower():
        raise HashMismatchError(
            f"Wheel {filename} at {path} has sha256 {actual} but "
            f"{sha256} was expected; refusing to use it.",
            subject=filename,
            expected=sha256.lower(),
            actual=actual,
        )


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _check_members(zf: zipfile.ZipFile, wheel_name: str) -> None:
    """Refuse members that could escape the install dir or that collide."""
    seen: Dict[str, str] = {}
    for info in zf.infolist():
        name = info.filename
        problem = None
        if "\x00" in name or "\\" in name:
            problem = "has a NUL or backslash in its path"
        elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problem = "has an absolute path"
        elif ".." in name.split("/"):
            problem = "has a `..` path component"
        if problem:
            raise UnsafeWheelError(
                f"Wheel {wheel_name} member {name!r} {problem}; refusing to install it.",
                wheel=wheel_name,
                member=name,
            )
        normalized = posixpath.normpath(name)
        if normalized in seen:
            raise UnsafeWheelError(
                f"Wheel {wheel_name} has duplicate member {name!r}"
                + (f" (also as {seen[normalized]!r})" if seen[normalized] != name else "")
                + "; which copy is installed would be ambiguous.",
                wheel=wheel_name,
                member=name,
            )
        seen[normalized] = name
        if _is_symlink(info):
            if info.file_size > _MAX_SYMLINK_TARGET:
                raise UnsafeWheelError(
                    f"Wheel {wheel_name} member {name!r} is a symlink with a {info.file_size}-byte "
                    f"target; refusing to install it.",
                    wheel=wheel_name,
                    member=name,
                )
            target = zf.read(info).decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise UnsafeWheelError(
                    f"Wheel {wheel_name} member {name!r} is a symlink to {target!r} which "
                    f"escapes the wheel; refusing to install it.",
                    wheel=wheel_name,
                    member=name,
                )


_MAX_SYMLINK_TARGET = 4096
# PEP 427: RECORD hashes are sha256 or stronger; md5/sha1 prove nothing against a forger.
_RECORD_ALGORITHMS = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b"})
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


def _record_path(zf: zipfile.ZipFile, wheel_name: str) -> str:
    records = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise CorruptWheelError(
            f"Wheel {wheel_name} has {len(records)} `*.dist-info/RECORD` files, not exactly one; "
            f"it is not a valid wheel.",
            wheel=wheel_name,
        )
    return records[0]


def _read_record(zf: zipfile.ZipFile, record: str, wheel_name: str) -> Dict[str, Tuple[str, str, Optional[int]]]:
    """RECORD as {normalized path: (algorithm, urlsafe-b64 digest, size)}; only hashed rows."""
    try:
        text = zf.read(record).decode("utf-8")
    except (UnicodeDecodeError,) + _ZIP_READ_ERRORS as e:
        raise CorruptWheelError(f"Wheel {wheel_name} has an unreadable RECORD: {e}", wheel=wheel_name, member=record)
    rows: Dict[str, Tuple[str, str, Optional[int]]] = {}
    try:
        parsed = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise CorruptWheelError(f"Wheel {wheel_name} has a malformed RECORD: {e}", wheel=wheel_name, member=record)
    for row in parsed:
        if not row or not row[0]:
            continue
        path = posixpath.normpath(row[0])
        digest = row[1] if len(row) > 1 else ""
        if not digest:
            continue  # RECORD itself (and signatures) carry no hash
        algorithm, _, value = digest.partition("=")
        size: Optional[int] = None
        if len(row) > 2 and row[2].strip():
            try:
                size = int(row[2])
            except ValueError:
                size = -1
        rows[path] = (algorithm.lower(), value, size)
    return rows


def _verify_record(zf: zipfile.ZipFile, wheel_name: str) -> None:
    """Every file in the wheel must be listed in RECORD with its hash (sha256 or stronger) and
    size, and every hashed RECORD row must be in the wheel: a RECORD that disagrees with the
    contents means the wheel was altered after it was built. Also reads every member through
    zipfile, which catches central directories that lie (offsets, sizes, methods, CRCs)."""
    record = _record_path(zf, wheel_name)
    dist_info = record.rsplit("/", 1)[0]
    unsigned = {record, f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s"}
    rows = _read_record(zf, record, wheel_name)
    listed = set()
    for info in zf.infolist():
        name = info.filename
        if name.endswith("/") or name in unsigned:
            continue
        normalized = posixpath.normpath(name)
        row = rows.get(normalized)

        def refuse(problem: str, *, name: str = name) -> UnsafeWheelError:
            return UnsafeWheelError(
                f"Wheel {wheel_name} member {name!r} {problem}: the wheel's RECORD disagrees with "
                f"its contents, so it was altered after it was built; refusing to install it.",
                wheel=wheel_name,
                member=name,
            )

        if row is None:
            raise refuse("is not listed in RECORD")
        algorithm, expected, size = row
        if algorithm not in _RECORD_ALGORITHMS:
            raise refuse(f"has a RECORD hash of unsupported algorithm `{algorithm}`")
        listed.add(normalized)
        digest = hashlib.new(algorithm)
        actual_size = 0
        try:
            with zf.open(info) as fp:
                while True:
                    chunk = fp.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    actual_size += len(chunk)
        except _ZIP_READ_ERRORS as e:
            raise CorruptWheelError(
                f"Wheel {wheel_name} member {name!r} is corrupt (the zip's directory and data "
                f"disagree): {e}",
                wheel=wheel_name,
                member=name,
            ) from e
        if actual_size != info.file_size:  # zipfile trusts the directory's size; we don't
            raise CorruptWheelError(
                f"Wheel {wheel_name} member {name!r} is corrupt: the zip's directory says "
                f"{info.file_size} bytes, its data has {actual_size}",
                wheel=wheel_name,
                member=name,
            )
        actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
        if actual != expected.rstrip("="):
            raise refuse(f"has {algorithm} {actual}, but RECORD says {expected}")
        if size is not None and size != actual_size:
            raise refuse(f"is {actual_size} bytes, but RECORD says {size}")
    missing = sorted(set(rows) - listed)
    if missing:
        raise UnsafeWheelError(
            f"Wheel {wheel_name} RECORD lists {missing[0]!r}, which is not in the wheel: the "
            f"wheel's RECORD disagrees with its contents; refusing to install it.",
            wheel=wheel_name,
            member=missing[0],
        )


def verify_wheel_zip(path: PathLike, filename: str) -> None:
    """Refuse a wheel whose members could escape the install dir or collide, whose RECORD
    disagrees with its contents, or whose zip structure lies; raises only `LayerError`s."""
    try:
        with zipfile.ZipFile(path) as zf:
            _check_members(zf, filename)
            _verify_record(zf, filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, NotImplementedError) as e:
        raise CorruptWheelError(f"Wheel {filename} is not a valid zip file: {e}", wheel=filename)


def find_corrupt_member(path: str) -> Optional[str]:
    """The first member whose data cannot be read, so an install failure can name it."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                try:
                    with zf.open(info) as fp:
                        while fp.read(1 << 20):
                            pass
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
                    return info.filename
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return None
