"""Wheel -> dependency layer: the installed-wheel chroot pex would embed, compressed exactly once.

A PEX built by pex 2.x (with pre-installed wheels, the default) carries each dependency as the
directory `.deps/<wheel file name>/` holding the wheel installed by `pex.pep_427.
install_wheel_chroot` (including its `.layout.json` and `<project>.pex-info/` markers). The
runtime extracts that directory to `PEX_ROOT/installed_wheels/...` and trusts the `.layout.json`
there; PEX-INFO's `distributions` maps the wheel file name to the chroot fingerprint.

A *layer* is that directory already compressed into a zip fragment (see `fragment`) with names
`.deps/<wheel file name>/...`, so the zipapp builder raw-copies it. Layers are cached under
`<cache_root>/layers/v1/<key>/` where `key` covers everything that changes the bytes: the wheel
sha256 and file name, the compression level, our layout version and the pex version (whose
installer produces the chroot). A `packed` variant (the standalone zip pex's packed layout puts at
`.deps/<wheel file name>`) is derived from the same fragment on demand and cached next to it.

Cache writes go through `util.cache.atomic_directory` / `atomic_file`: build in a sibling work
dir under a file lock, check again after locking, then rename into place. Racing builders do the
work once and all see one intact layer. Wheels are checked (`wheel_checks`) before pex installs
them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from fastpex.core.pack.assembler import fragment_to_zip
from fastpex.core.pack.errors import CorruptWheelError, LayerError
from fastpex.core.pack.fragment import (
    ZIP_DEFLATED,
    ZIP_STORED,
    Precompressed,
    SourceEntry,
    write_fragment,
)
from fastpex.core.pack.installed_pex import pex_version, script_dir
from fastpex.core.pack.wheel_checks import find_corrupt_member, verify_sha256, verify_wheel_zip
from fastpex.core.util.cache import CacheKind, atomic_directory, atomic_file, cache_dir, file_lock

if TYPE_CHECKING:
    from pex.pep_427 import InstalledWheel

__all__ = [
    "LAYOUT_VERSION",
    "Layer",
    "WheelInput",
    "build_layer",
    "build_layers",
    "ensure_packed",
    "layer_key",
    "load_layer",
]

# Bump when the bytes a layer holds for the same inputs change (entry naming, modes, ordering...).
LAYOUT_VERSION = 2  # 2: unchanged wheel members keep the wheel's compressed bytes
DEPS_DIR = ".deps"
FRAGMENT_NAME = "layer.frag"
MANIFEST_NAME = "manifest.json"
PACKED_NAME = "layer.zip"
DEFAULT_COMPRESS_LEVEL = 6

PathLike = Union[str, "os.PathLike[str]"]


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
    # A whole-wheel layer (`wheel_files`): `.deps/<wheel>` is the wheel file, installed at run time.
    is_wheel_file: bool = False

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


def layer_key(wheel_sha256: str, compress_level: int, wheel_filename: str) -> str:
    """Cache key: sha256 over everything that determines a layer's bytes.

    The wheel file name is included because it is embedded in every entry name
    (`.deps/<wheel file name>/`) and in pex's `original-whl-info.json`.
    """
    material = {
        "compress_level": compress_level,
        "layout_version": LAYOUT_VERSION,
        "pex_version": pex_version(),
        "wheel_filename": wheel_filename,
        "wheel_sha256": wheel_sha256.lower(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def layers_root(cache_root: Optional[PathLike]) -> Path:
    return cache_dir(CacheKind.LAYERS, Path(cache_root) if cache_root is not None else None)


def project_and_version(wheel: WheelInput) -> Tuple[str, str]:
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
    directory = layers_root(cache_root) / key
    return read_layer_dir(directory)


def write_manifest(out_dir: PathLike, manifest: Dict[str, Any]) -> None:
    """A layer's manifest.json, durable before its directory is renamed into place (pack's
    chroot layers and whole-wheel layers share the format `read_layer_dir` reads)."""
    with open(os.path.join(out_dir, MANIFEST_NAME), "w") as fp:
        json.dump(manifest, fp, sort_keys=True, indent=1)
        fp.write("\n")
        fp.flush()
        os.fsync(fp.fileno())


def read_layer_dir(directory: Path, built: bool = False) -> Optional[Layer]:
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
        is_wheel_file=data.get("kind") == "wheel-file",
    )

# --- building ----------------------------------------------------------------------------------


def _install_chroot(wheel_path: str, dest: str, wheel_name: str) -> "InstalledWheel":
    """Install exactly as pex does for a downloaded wheel (resolver `_perform_install`)."""
    from pex.pep_427 import install_wheel_chroot

    try:
        return install_wheel_chroot(wheel=wheel_path, destination=dest)
    except LayerError:
        raise
    except Exception as e:  # pex raises a variety of errors for broken wheels
        member = find_corrupt_member(wheel_path)
        where = f" member {member!r}" if member else ""
        raise CorruptWheelError(
            f"Wheel {wheel_name}{where} is corrupt or not a valid wheel: {e}",
            wheel=wheel_name,
            member=member,
        ) from e


def _wheel_donors(wheel_path: str) -> Dict[str, Precompressed]:
    """Each wheel member's compressed bytes, by member name: most files of an installed wheel
    are byte-identical to their member, so their layer entries can reuse the wheel's own
    compressed data instead of deflating it again (deflate is ~30 MB/s; copying is GB/s)."""
    donors: Dict[str, Precompressed] = {}
    with zipfile.ZipFile(wheel_path) as zf, open(wheel_path, "rb") as raw:
        for info in zf.infolist():
            if info.is_dir() or info.flag_bits & 0x1 or info.compress_type not in (
                ZIP_STORED,
                ZIP_DEFLATED,
            ):
                continue
            raw.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", raw.read(4))
            donors[info.filename] = Precompressed(
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
    rel: str, path: str, donors: Mapping[str, Precompressed], compress_level: int
) -> Optional[Precompressed]:
    """The wheel's compressed bytes for the installed file `rel`, if they hold its content."""
    donor = donors.get(rel)
    if donor is None or (compress_level == 0 and donor.method != ZIP_STORED):
        return None
    if os.path.getsize(path) != donor.file_size or _crc32_of(path) != donor.crc32:
        return None  # pex rewrote it (RECORD, scripts, ...): compress it afresh
    return donor


def _iter_chroot_entries(
    chroot: str,
    prefix: str,
    donors: Mapping[str, Precompressed] = {},
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
) -> List[SourceEntry]:
    """The zip entries pex writes for an installed chroot: files (no bytecode) + parent dirs."""
    from pex.common import is_pyc_file

    files: List[SourceEntry] = []
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
                SourceEntry(
                    name=f"{prefix}/{rel}",
                    path=path,
                    executable=bool(os.stat(path).st_mode & stat.S_IXUSR),
                    precompressed=_donor_for(rel, path, donors, compress_level),
                )
            )
    return [SourceEntry(name=d) for d in sorted(dirs)] + files


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
    project_name, version = project_and_version(wheel)
    verify_sha256(wheel.path, filename, wheel.sha256)
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
    os.chmod(out_dir, 0o755)  # the atomic work dir is created private
    index = write_fragment(entries, os.path.join(out_dir, FRAGMENT_NAME), compress_level)

    console_scripts, gui_scripts = _entry_points(chroot)
    scripts_dir = installed.stashed_path(script_dir())
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
        "pex_version": pex_version(),
        "project_name": project_name,
        "scripts": scripts,
        "version": version,
        "wheel_filename": filename,
        "wheel_sha256": wheel.sha256.lower(),
    }
    write_manifest(out_dir, manifest)


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
    root = layers_root(cache_root)
    final = root / key
    layer = read_layer_dir(final)
    if layer is not None:
        return layer
    if final.exists():
        _remove_unfinished(final)
    built = False

    def produce(out_dir: Path) -> None:
        nonlocal built
        scratch = tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root)
        try:
            _build_into(wheel, key, compress_level, scratch, str(out_dir))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        built = True

    atomic_directory(final, produce)
    layer = read_layer_dir(final, built=built)
    assert layer is not None
    return layer


def _remove_unfinished(final: Path) -> None:
    """Delete a layer directory without a manifest (left by a crashed, non-atomic older writer),
    under the lock its writers take, so it can be built again."""
    with file_lock(final.with_name(final.name + ".lck")):
        if final.exists() and read_layer_dir(final) is None:
            shutil.rmtree(final)


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
    root = os.fspath(layers_root(cache_root))
    # `build_layer` takes the cache root (it finds the layers directory itself), not `root`.
    given_root = os.fspath(cache_root) if cache_root is not None else None
    results: List[Optional[Layer]] = []
    missing: List[int] = []
    for i, wheel in enumerate(inputs):
        project_and_version(wheel)
        layer = read_layer_dir(Path(root) / layer_key(wheel.sha256, compress_level, wheel.wheel_filename))
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

    def produce(tmp: Path) -> None:
        fragment_to_zip(layer.fragment_path, tmp, strip_prefix=layer.deps_relpath + "/")
        os.chmod(tmp, 0o644)

    return os.fspath(atomic_file(Path(layer.packed_path), produce))
