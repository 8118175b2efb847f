"""Installed-wheel layers: one or more wheels -> a cached, reproducible tar+gzip blob.

The cache key is every input of the bytes: the wheels' sha256s, the venv scheme (prefix,
Python X.Y), the compiling interpreter's full version, the compression and its level, zlib's
runtime version and `FORMAT_VERSION` (bump it whenever the layer bytes change for the same
inputs). Each entry is a directory (`layer.tar.gz` + `layer.json`) made with
`util.cache.atomic_directory`, so concurrent builders end with one intact copy.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import posixpath
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from fastpex.core.errors import HashMismatchError, UserError
from fastpex.core.image.bytecode import Compiler
from fastpex.core.image.install import PlannedFile, VenvScheme, plan_install, record_file, record_hash
from fastpex.core.image.tarball import COMPRESSION, DIRECTORY, FILE, SYMLINK, TarEntry, write_layer
from fastpex.core.pack.layers import WheelInput
from fastpex.core.util.cache import CacheKind, atomic_directory, cache_dir

FORMAT_VERSION = 3  # 2: deflated in fixed 4 MiB pieces; 3: byte code in shards of 500 modules
DEFAULT_COMPRESS_LEVEL = 6
_BLOB = "layer.tar.gz"
_META = "layer.json"


@dataclass(frozen=True)
class LayerSettings:
    """What, besides the wheels, decides a layer's bytes."""

    scheme: VenvScheme
    compiler: Compiler
    compress_level: int = DEFAULT_COMPRESS_LEVEL

    def key_material(self) -> Dict[str, object]:
        import zlib

        return {
            "format": FORMAT_VERSION,
            "prefix": self.scheme.prefix,
            "python": self.scheme.python_version,
            "compiler": [self.compiler.interpreter.implementation, self.compiler.version],
            "compression": COMPRESSION,
            "level": self.compress_level,
            "zlib": zlib.ZLIB_RUNTIME_VERSION,
        }


@dataclass(frozen=True)
class CachedLayer:
    """A layer blob in the cache: its OCI digest/size, tar diff_id, and what it installs."""

    key: str
    path: Path
    digest: str
    size: int
    diff_id: str
    wheels: Tuple[str, ...]  # wheel file names
    files: Mapping[str, str]  # installed path -> RECORD-style hash ("" for links)
    built: bool = False


def layer_key(wheels: Sequence[WheelInput], settings: LayerSettings) -> str:
    material = dict(settings.key_material(), wheels=sorted(w.sha256 for w in wheels))
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _layers_root(cache_root: Optional[Path]) -> Path:
    return cache_dir(CacheKind.IMAGE_LAYERS, cache_root)


def _entry_dir(key: str, cache_root: Optional[Path]) -> Path:
    return _layers_root(cache_root) / key[:2] / key


def load_layer(key: str, cache_root: Optional[Path] = None) -> Optional[CachedLayer]:
    directory = _entry_dir(key, cache_root)
    try:
        meta = json.loads((directory / _META).read_text())
    except (OSError, ValueError):
        return None
    blob = directory / _BLOB
    if not blob.is_file():
        return None
    return CachedLayer(
        key=key, path=blob, digest=meta["digest"], size=meta["size"], diff_id=meta["diff_id"],
        wheels=tuple(meta["wheels"]), files=meta["files"],
    )


def _verify_sha256(wheel: WheelInput) -> None:
    hasher = hashlib.sha256()
    with open(wheel.path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            hasher.update(chunk)
    if hasher.hexdigest() != wheel.sha256:
        raise HashMismatchError(
            f"The wheel `{wheel.wheel_filename}` has sha256 {hasher.hexdigest()}, expected {wheel.sha256}",
            subject=wheel.wheel_filename, expected=wheel.sha256, actual=hasher.hexdigest(),
        )


def _parents(path: str) -> Iterable[str]:
    parent = posixpath.dirname(path)
    while parent not in ("", "/"):
        yield parent
        parent = posixpath.dirname(parent)


Sink = Callable[[bytes], None]


def _copier(zf: zipfile.ZipFile, member: str) -> Callable[[Sink], None]:
    def write(sink: Sink) -> None:
        with zf.open(member) as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                sink(chunk)
    return write


def _bytes_writer(data: bytes) -> Callable[[Sink], None]:
    return lambda sink: sink(data)


def installed_entries(
    zipfiles: Sequence[Tuple[WheelInput, zipfile.ZipFile]], settings: LayerSettings
) -> Tuple[List[TarEntry], Dict[str, str]]:
    """Every tar entry the wheels install (sorted, parent directories included), and the
    installed files (path -> hash) for collision checks between layers."""
    files: Dict[str, Tuple[PlannedFile, zipfile.ZipFile, str]] = {}
    for wheel, zf in zipfiles:
        plan = plan_install(zf, wheel.wheel_filename, settings.scheme)
        to_compile = [f for f in plan.files if f.compile_as and f.member]
        compiled = settings.compiler.compile_members(
            wheel.path, [(f.member, f.path) for f in to_compile if f.member is not None]
        )
        pycs = []
        for i, f in enumerate(to_compile):
            data = compiled.get(i)
            if data is not None and f.compile_as is not None:
                pycs.append(PlannedFile(path=f.compile_as, mode=0o644, data=data, size=len(data), record_hash=record_hash(data)))
        record = record_file(plan, settings.scheme, pycs)
        for f in [*plan.files, *pycs, record]:
            previous = files.get(f.path)
            if previous is not None:
                same = previous[0].record_hash and previous[0].record_hash == f.record_hash
                if not same:
                    raise UserError(
                        f"The wheels `{previous[2]}` and `{wheel.wheel_filename}` both install `{f.path}` with "
                        f"different contents: drop one of them from the requirements"
                    )
                continue
            files[f.path] = (f, zf, wheel.wheel_filename)
    directories: Set[str] = set()
    for path in files:
        directories.update(_parents(path))
    entries: List[TarEntry] = [TarEntry(d.lstrip("/"), DIRECTORY, 0o755) for d in directories]
    for path, (f, zf, _) in files.items():
        name = path.lstrip("/")
        if f.link_target is not None:
            entries.append(TarEntry(name, SYMLINK, 0o777, link_target=f.link_target))
        elif f.data is not None:
            entries.append(TarEntry(name, FILE, f.mode, len(f.data), write_data=_bytes_writer(f.data)))
        else:
            assert f.member is not None
            entries.append(TarEntry(name, FILE, f.mode, f.size, write_data=_copier(zf, f.member)))
    entries.sort(key=lambda e: e.path)
    return entries, {path: f.record_hash for path, (f, _, _) in files.items()}


def build_layer(wheels: Sequence[WheelInput], settings: LayerSettings, cache_root: Optional[Path] = None) -> CachedLayer:
    """The layer of `wheels` (installed together), from the cache or built into it."""
    key = layer_key(wheels, settings)
    cached = load_layer(key, cache_root)
    if cached is not None:
        return cached
    built = False

    def produce(work: Path) -> None:
        nonlocal built
        with ExitStack() as stack:
            opened = []
            for wheel in sorted(wheels, key=lambda w: w.sha256):
                _verify_sha256(wheel)
                try:
                    opened.append((wheel, stack.enter_context(zipfile.ZipFile(wheel.path))))
                except zipfile.BadZipFile as e:
                    raise UserError(f"The wheel `{wheel.wheel_filename}` is not a zip file: {e}") from None
            entries, files = installed_entries(opened, settings)
            with open(work / _BLOB, "wb") as out:
                digests = write_layer(entries, out, settings.compress_level)
                out.flush()
                os.fsync(out.fileno())
        meta = {
            "digest": digests.digest, "size": digests.size, "diff_id": digests.diff_id,
            "wheels": sorted(w.wheel_filename for w in wheels), "files": files,
            "key_material": settings.key_material(),
        }
        (work / _META).write_text(json.dumps(meta, sort_keys=True))
        built = True

    atomic_directory(_entry_dir(key, cache_root), produce)
    layer = load_layer(key, cache_root)
    assert layer is not None
    return CachedLayer(**{**layer.__dict__, "built": built})


def _job(args: Tuple[Tuple[WheelInput, ...], LayerSettings, Optional[Path]]) -> CachedLayer:
    wheels, settings, cache_root = args
    return build_layer(wheels, settings, cache_root)


def build_layers(
    groups: Sequence[Sequence[WheelInput]],
    settings: LayerSettings,
    *,
    cache_root: Optional[Path] = None,
    jobs: Optional[int] = None,
) -> List[CachedLayer]:
    """One layer per group (in order), cache misses built in parallel processes (largest
    first, so the big one doesn't start last)."""
    results: List[Optional[CachedLayer]] = [load_layer(layer_key(g, settings), cache_root) for g in groups]
    missing = [i for i, r in enumerate(results) if r is None]
    missing.sort(key=lambda i: -sum(os.path.getsize(w.path) for w in groups[i]))
    jobs = jobs if jobs is not None else min(2, os.cpu_count() or 1)
    if len(missing) > 1 and jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(missing))) as pool:
            futures = {i: pool.submit(_job, (tuple(groups[i]), settings, cache_root)) for i in missing}
            for i, future in futures.items():
                results[i] = future.result()
    else:
        for i in missing:
            results[i] = build_layer(groups[i], settings, cache_root)
    return [r for r in results if r is not None]
