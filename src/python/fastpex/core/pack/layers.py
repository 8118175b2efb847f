"""Wheel -> dependency layer: the installed-wheel chroot pex would embed, compressed exactly once.

A PEX built by pex 2.x (with pre-installed wheels, the default) carries each dependency as the
directory `.deps/<wheel file name>/` holding the wheel installed by `pex.pep_427.
install_wheel_chroot` (including its `.layout.json` and `<project>.pex-info/` markers). The
runtime extracts that directory to `PEX_ROOT/installed_wheels/...` and trusts the `.layout.json`
there; PEX-INFO's `distributions` maps the wheel file name to the chroot fingerprint.

A *layer* is that directory already compressed into a zip fragment (see `zipfrag`) with names
`.deps/<wheel file name>/...`, so the zipapp builder raw-copies it. Layers are cached under
`<cache_root>/layers/v1/<key>/` where `key` covers everything that changes the bytes: the wheel
sha256 and file name, the compression level, our layout version and the pex version (whose
installer produces the chroot). A `packed` variant (the standalone zip pex's packed layout puts at
`.deps/<wheel file name>`) is derived from the same fragment on demand and cached next to it.

Cache writes are atomic: build in a sibling temp dir, hold `fcntl.flock` on `<key>.lock`, check
again after locking, then rename into place. Racing builders do the work once and all see one
intact layer.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import posixpath
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from fastpex.core.pack import zipfrag
from fastpex.core.util.cache import CacheKind, cache_dir, file_lock
from fastpex.core.store import sha256_file

__all__ = [
    "CorruptWheelError",
    "HashMismatchError",
    "LAYOUT_VERSION",
    "Layer",
    "LayerError",
    "UnsafeWheelError",
    "WheelInput",
    "build_layer",
    "build_layers",
    "ensure_packed",
    "layer_key",
    "load_layer",
    "sha256_file",
]

# Bump when the bytes a layer holds for the same inputs change (entry naming, modes, ordering...).
LAYOUT_VERSION = 2  # 2: unchanged wheel members keep the wheel's compressed bytes
DEPS_DIR = ".deps"
FRAGMENT_NAME = "layer.frag"
MANIFEST_NAME = "manifest.json"
PACKED_NAME = "layer.zip"
DEFAULT_COMPRESS_LEVEL = 6

PathLike = Union[str, "os.PathLike[str]"]


class LayerError(Exception):
    """A wheel could not be turned into a layer; names the wheel (and member when relevant)."""

    def __init__(self, message: str, wheel: str, member: Optional[str] = None) -> None:
        super().__init__(message, wheel, member)
        self.message = message
        self.wheel = wheel
        self.member = member

    def __str__(self) -> str:
        return self.message


class HashMismatchError(LayerError):
    """The wheel's sha256 is not the one the caller (lock) expected."""


class CorruptWheelError(LayerError):
    """The wheel is not a readable zip / not a valid wheel."""


class UnsafeWheelError(LayerError):
    """A wheel member would be written outside the install dir (or is ambiguous)."""


@dataclass(frozen=True)
class WheelInput:
    """A wheel to layer: its path, the sha256 it must have and its file name if `path` isn't it
    (e.g. a content-addressed store names files by hash)."""

    path: str
    sha256: str
    filename: Optional[str] = None

    @property
    def wheel_filename(self) -> str:
        return self.filename or os.path.basename(self.path)


@dataclass(frozen=True)
class Layer:
    """A cached dependency layer. `built` says whether this call did the work (cache miss)."""

    directory: str
    key: str
    wheel_filename: str
    wheel_sha256: str
    project_name: str
    version: str
    fingerprint: str
    entry_count: int
    fragment_size: int
    compress_level: int
    pex_version: str
    console_scripts: Mapping[str, str] = field(default_factory=dict)
    gui_scripts: Mapping[str, str] = field(default_factory=dict)
    scripts: Tuple[str, ...] = ()
    built: bool = field(default=False, compare=False)

    @property
    def fragment_path(self) -> str:
        return os.path.join(self.directory, FRAGMENT_NAME)

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.directory, MANIFEST_NAME)

    @property
    def packed_path(self) -> str:
        return os.path.join(self.directory, PACKED_NAME)

    @property
    def deps_relpath(self) -> str:
        """Where the runtime expects this dependency: `.deps/<wheel file name>`."""
        return f"{DEPS_DIR}/{self.wheel_filename}"

    @property
    def requirement(self) -> str:
        """The pinned requirement pex records for an added distribution (`name==version`)."""
        return f"{self.project_name}=={self.version}"


def _pex_version() -> str:
    from pex.version import __version__

    return __version__



def layer_key(wheel_sha256: str, compress_level: int, wheel_filename: str) -> str:
    """Cache key: sha256 over everything that determines a layer's bytes.

    The wheel file name is included because it is embedded in every entry name
    (`.deps/<wheel file name>/`) and in pex's `original-whl-info.json`.
    """
    material = {
        "compress_level": compress_level,
        "layout_version": LAYOUT_VERSION,
        "pex_version": _pex_version(),
        "wheel_filename": wheel_filename,
        "wheel_sha256": wheel_sha256.lower(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def _layers_root(cache_root: Optional[PathLike]) -> Path:
    return cache_dir(CacheKind.LAYERS, Path(cache_root) if cache_root is not None else None)


def _parse_filename(wheel: WheelInput) -> Tuple[str, str]:
    filename = wheel.wheel_filename
    try:
        if "/" in filename or "\\" in filename:
            raise InvalidWheelFilename(filename)
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as e:
        raise CorruptWheelError(
            f"{filename!r} is not a valid wheel file name ({e}); pass the wheel's real file "
            f"name for {wheel.path}.",
            wheel=filename,
        )
    return str(name), str(version)


def load_layer(key: str, cache_root: Optional[PathLike] = None) -> Optional[Layer]:
    """The cached layer for `key`, or None if it was never (completely) built."""
    directory = _layers_root(cache_root) / key
    return _load(directory)


def _load(directory: Path, built: bool = False) -> Optional[Layer]:
    try:
        with open(directory / MANIFEST_NAME) as fp:
            data = json.load(fp)
    except FileNotFoundError:
        return None
    return Layer(
        directory=str(directory),
        key=data["key"],
        wheel_filename=data["wheel_filename"],
        wheel_sha256=data["wheel_sha256"],
        project_name=data["project_name"],
        version=data["version"],
        fingerprint=data["fingerprint"],
        entry_count=data["entry_count"],
        fragment_size=data["fragment_size"],
        compress_level=data["compress_level"],
        pex_version=data["pex_version"],
        console_scripts=dict(data.get("console_scripts", {})),
        gui_scripts=dict(data.get("gui_scripts", {})),
        scripts=tuple(data.get("scripts", ())),
        built=built,
    )


# --- wheel verification ------------------------------------------------------------------------


def _verify_sha256(wheel: WheelInput) -> None:
    try:
        actual = sha256_file(wheel.path)
    except OSError as e:
        raise CorruptWheelError(
            f"Cannot read wheel {wheel.wheel_filename} at {wheel.path}: {e}", wheel=wheel.wheel_filename
        )
    if actual != wheel.sha256.lower():
        raise HashMismatchError(
            f"Wheel {wheel.wheel_filename} at {wheel.path} has sha256 {actual} but "
            f"{wheel.sha256} was expected; refusing to use it.",
            wheel=wheel.wheel_filename,
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
    import csv
    import io

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
    import base64

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


def _find_corrupt_member(path: str) -> Optional[str]:
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


# --- building ----------------------------------------------------------------------------------


def _install_chroot(wheel_path: str, dest: str, wheel_name: str):
    """Install exactly as pex does for a downloaded wheel (resolver `_perform_install`)."""
    from pex.pep_427 import install_wheel_chroot

    try:
        return install_wheel_chroot(wheel=wheel_path, destination=dest)
    except LayerError:
        raise
    except Exception as e:  # pex raises a variety of errors for broken wheels
        member = _find_corrupt_member(wheel_path)
        where = f" member {member!r}" if member else ""
        raise CorruptWheelError(
            f"Wheel {wheel_name}{where} is corrupt or not a valid wheel: {e}",
            wheel=wheel_name,
            member=member,
        ) from e


def _wheel_donors(wheel_path: str) -> Dict[str, zipfrag.Precompressed]:
    """Each wheel member's compressed bytes, by member name: most files of an installed wheel
    are byte-identical to their member, so their layer entries can reuse the wheel's own
    compressed data instead of deflating it again (deflate is ~30 MB/s; copying is GB/s)."""
    donors: Dict[str, zipfrag.Precompressed] = {}
    with zipfile.ZipFile(wheel_path) as zf, open(wheel_path, "rb") as raw:
        for info in zf.infolist():
            if info.is_dir() or info.flag_bits & 0x1 or info.compress_type not in (
                zipfrag.ZIP_STORED,
                zipfrag.ZIP_DEFLATED,
            ):
                continue
            raw.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", raw.read(4))
            donors[info.filename] = zipfrag.Precompressed(
                zip_path=wheel_path,
                offset=info.header_offset + 30 + name_len + extra_len,
                method=info.compress_type,
                crc32=info.CRC,
                compressed_size=info.compress_size,
                file_size=info.file_size,
            )
    return donors


def _crc32_of(path: str) -> int:
    crc = 0
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _donor_for(
    rel: str, path: str, donors: Mapping[str, zipfrag.Precompressed], compress_level: int
) -> Optional[zipfrag.Precompressed]:
    """The wheel's compressed bytes for the installed file `rel`, if they hold its content."""
    donor = donors.get(rel)
    if donor is None or (compress_level == 0 and donor.method != zipfrag.ZIP_STORED):
        return None
    if os.path.getsize(path) != donor.file_size or _crc32_of(path) != donor.crc32:
        return None  # pex rewrote it (RECORD, scripts, ...): compress it afresh
    return donor


def _iter_chroot_entries(
    chroot: str,
    prefix: str,
    donors: Mapping[str, zipfrag.Precompressed] = {},
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
) -> List[zipfrag.SourceEntry]:
    """The zip entries pex writes for an installed chroot: files (no bytecode) + parent dirs."""
    from pex.common import is_pyc_file

    files: List[zipfrag.SourceEntry] = []
    dirs = {prefix + "/"}
    for root, dirnames, filenames in os.walk(chroot):
        dirnames.sort()
        rel_root = os.path.relpath(root, chroot)
        for filename in sorted(filenames):
            if is_pyc_file(filename):
                continue
            path = os.path.join(root, filename)
            rel = filename if rel_root == "." else f"{rel_root}/{filename}".replace(os.sep, "/")
            parts = rel.split("/")
            for i in range(1, len(parts)):
                dirs.add(prefix + "/" + "/".join(parts[:i]) + "/")
            files.append(
                zipfrag.SourceEntry(
                    name=f"{prefix}/{rel}",
                    path=path,
                    executable=bool(os.stat(path).st_mode & stat.S_IXUSR),
                    precompressed=_donor_for(rel, path, donors, compress_level),
                )
            )
    return [zipfrag.SourceEntry(name=d) for d in sorted(dirs)] + files


def _entry_points(chroot: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    from pex.dist_metadata import Distribution

    entry_map = Distribution.load(chroot).get_entry_map()
    groups = []
    for group in ("console_scripts", "gui_scripts"):
        named = entry_map.get(group, {})
        groups.append({name: str(ep.entry_point) for name, ep in sorted(named.items())})
    return groups[0], groups[1]


def _build_into(
    wheel: WheelInput,
    key: str,
    compress_level: int,
    work: str,
    out_dir: str,
) -> None:
    filename = wheel.wheel_filename
    project_name, version = _parse_filename(wheel)
    _verify_sha256(wheel)
    verify_wheel_zip(wheel.path, filename)

    wheel_path = wheel.path
    if os.path.basename(wheel_path) != filename:
        # pex derives the project name/version and `original-whl-info.json` from the file name.
        # pex resolves symlinks, so give it a hard link (or a copy across devices).
        wheel_path = os.path.join(work, "whl", filename)
        os.makedirs(os.path.dirname(wheel_path))
        try:
            os.link(wheel.path, wheel_path)
        except OSError:
            shutil.copyfile(wheel.path, wheel_path)

    chroot = os.path.join(work, "chroot", filename)
    installed = _install_chroot(wheel_path, chroot, filename)
    if not installed.fingerprint:
        raise CorruptWheelError(f"pex produced no fingerprint for {filename}", wheel=filename)

    entries = _iter_chroot_entries(
        chroot, f"{DEPS_DIR}/{filename}", _wheel_donors(wheel_path), compress_level
    )
    os.makedirs(out_dir)
    index = zipfrag.write_fragment(entries, os.path.join(out_dir, FRAGMENT_NAME), compress_level)

    console_scripts, gui_scripts = _entry_points(chroot)
    scripts_dir = installed.stashed_path(_script_dir())
    scripts = sorted(os.listdir(scripts_dir)) if os.path.isdir(scripts_dir) else []
    manifest = {
        "console_scripts": console_scripts,
        "compress_level": compress_level,
        "entry_count": len(index.entries),
        "fingerprint": installed.fingerprint,
        "fragment_size": os.path.getsize(os.path.join(out_dir, FRAGMENT_NAME)),
        "gui_scripts": gui_scripts,
        "key": key,
        "layout_version": LAYOUT_VERSION,
        "pex_version": _pex_version(),
        "project_name": project_name,
        "scripts": scripts,
        "version": version,
        "wheel_filename": filename,
        "wheel_sha256": wheel.sha256.lower(),
    }
    with open(os.path.join(out_dir, MANIFEST_NAME), "w") as fp:
        json.dump(manifest, fp, sort_keys=True, indent=1)
        fp.write("\n")
        fp.flush()
        os.fsync(fp.fileno())


def _script_dir() -> str:
    from pex.sysconfig import SCRIPT_DIR

    return SCRIPT_DIR


def build_layer(
    wheel: Union[WheelInput, PathLike],
    sha256: Optional[str] = None,
    *,
    cache_root: Optional[PathLike] = None,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    filename: Optional[str] = None,
) -> Layer:
    """Return the layer for a wheel, building and caching it on a miss.

    On a hit the wheel is not even read: the key is derived from the expected sha256, and a
    layer only ever gets cached after its wheel matched that sha256.
    """
    if not isinstance(wheel, WheelInput):
        if sha256 is None:
            raise ValueError("build_layer needs the wheel's expected sha256")
        wheel = WheelInput(path=os.fspath(wheel), sha256=sha256, filename=filename)
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be in 0..9, got {compress_level}")
    key = layer_key(wheel.sha256, compress_level, wheel.wheel_filename)
    root = _layers_root(cache_root)
    final = root / key
    layer = _load(final)
    if layer is not None:
        return layer
    with file_lock(root / f"{key}.lock"):
        layer = _load(final)
        if layer is not None:
            return layer
        work = tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root)
        try:
            out_dir = os.path.join(work, "layer")
            _build_into(wheel, key, compress_level, work, out_dir)
            if final.exists():  # A stale partial dir from a crash (no manifest): replace it.
                shutil.rmtree(final)
            os.rename(out_dir, final)
            _fsync_dir(root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    built = _load(final, built=True)
    assert built is not None
    return built


def _fsync_dir(path: PathLike) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build_layer_job(args: Tuple[WheelInput, Optional[str], int]) -> Layer:
    wheel, cache_root, compress_level = args
    return build_layer(wheel, cache_root=cache_root, compress_level=compress_level)


def build_layers(
    wheels: Iterable[Union[WheelInput, Tuple[PathLike, str]]],
    *,
    cache_root: Optional[PathLike] = None,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    jobs: Optional[int] = None,
) -> List[Layer]:
    """Layers for `wheels` (in order), building cache misses in parallel over `jobs` processes.

    `jobs` defaults to the CPU count; 1 builds in this process.
    """
    inputs = [w if isinstance(w, WheelInput) else WheelInput(os.fspath(w[0]), w[1]) for w in wheels]
    root = os.fspath(_layers_root(cache_root))
    # `build_layer` takes the cache root (it finds the layers directory itself), not `root`.
    given_root = os.fspath(cache_root) if cache_root is not None else None
    results: List[Optional[Layer]] = []
    missing: List[int] = []
    for i, wheel in enumerate(inputs):
        _parse_filename(wheel)
        layer = _load(Path(root) / layer_key(wheel.sha256, compress_level, wheel.wheel_filename))
        results.append(layer)
        if layer is None:
            missing.append(i)
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    if len(missing) > 1 and jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(missing))) as pool:
            futures = {
                i: pool.submit(_build_layer_job, (inputs[i], given_root, compress_level))
                for i in missing
            }
            for i, future in futures.items():
                results[i] = future.result()
    else:
        for i in missing:
            results[i] = build_layer(inputs[i], cache_root=given_root, compress_level=compress_level)
    return [layer for layer in results if layer is not None]


def ensure_packed(layer: Layer) -> str:
    """Path of the layer as a standalone zip (pex's packed `.deps/<whl>`), built once from the
    fragment: entries renamed relative to the chroot root, compressed data copied verbatim."""
    final = layer.packed_path
    if os.path.exists(final):
        return final
    with file_lock(Path(layer.directory + ".lock")):
        if os.path.exists(final):
            return final
        fd, tmp = tempfile.mkstemp(prefix=f".{PACKED_NAME}.", suffix=".tmp", dir=layer.directory)
        os.close(fd)
        try:
            zipfrag.fragment_to_zip(
                layer.fragment_path, tmp, strip_prefix=layer.deps_relpath + "/"
            )
            with open(tmp, "rb") as fp:
                os.fsync(fp.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return final
