"""Wheel -> whole-wheel dependency layer: the `.deps/<wheel>` file of pex's
`--no-pre-install-wheels`, for PEXes whose runtime installs the wheels on first start.

pex 2.x can store each dependency as the wheel file itself (PEX-INFO `deps_are_wheel_files`,
see `pex.bin.pex`): a zipapp holds one STORED member `.deps/<wheel file name>` (the wheel is
already compressed), a packed PEX a copy of the wheel at the same path, and PEX-INFO's
`distributions` maps the file name to the wheel's sha256. On first start pex's runtime
(`pex.layout._install_distribution`) installs each wheel into `PEX_ROOT/installed_wheels/` with
`install_wheel_chroot`, over `max_install_jobs` processes. The first start then spreads the
inflating over the cores, where pre-installed chroots are extracted one member at a time.

Such a layer is a `layers.Layer` whose cache entry (`<cache_root>/layers/v1/<key>/`, keyed
apart from the chroot layers) holds the verified wheel copy as `layer.zip` (what the packed
layout hard-links) and a one-entry STORED fragment `layer.frag` (what the zipapp raw-copies).
Building one costs a copy and a CRC of the wheel plus the same checks as a chroot layer
(`wheel_checks`), once per wheel; no pex install runs at build time.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import zipfile
from configparser import ConfigParser
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from fastpex.core.errors import HashMismatchError
from fastpex.core.pack.errors import CorruptWheelError
from fastpex.core.pack.fragment import SourceEntry, write_fragment
from fastpex.core.pack.layers import (
    DEPS_DIR,
    FRAGMENT_NAME,
    PACKED_NAME,
    Layer,
    WheelInput,
    layers_root,
    project_and_version,
    read_layer_dir,
    write_manifest,
)
from fastpex.core.pack.installed_pex import pex_version
from fastpex.core.pack.wheel_checks import verify_wheel_zip
from fastpex.core.util.cache import atomic_directory

__all__ = ["WHEEL_FILE_LAYOUT_VERSION", "build_wheel_file_layer", "build_wheel_file_layers", "wheel_file_layer_key"]

# Bump when the bytes of a whole-wheel layer change for the same wheel.
WHEEL_FILE_LAYOUT_VERSION = 1
_COPY_CHUNK = 8 << 20

PathLike = Union[str, "os.PathLike[str]"]


def wheel_file_layer_key(wheel_sha256: str, wheel_filename: str) -> str:
    """Cache key of a whole-wheel layer (no compression level: the wheel is stored as it is)."""
    material = {
        "kind": "wheel-file",
        "layout_version": WHEEL_FILE_LAYOUT_VERSION,
        "wheel_filename": wheel_filename,
        "wheel_sha256": wheel_sha256.lower(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def _copy_verified(wheel: WheelInput, dest: str) -> None:
    """Copy the wheel to `dest`, hashing the bytes copied: what is cached is what was checked."""
    digest = hashlib.sha256()
    try:
        with open(wheel.path, "rb") as src, open(dest, "wb") as out:
            while True:
                chunk = src.read(_COPY_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
    except OSError as e:
        raise CorruptWheelError(
            f"Cannot read wheel {wheel.wheel_filename} at {wheel.path}: {e}", wheel=wheel.wheel_filename
        )
    actual = digest.hexdigest()
    if actual != wheel.sha256.lower():
        raise HashMismatchError(
            f"Wheel {wheel.wheel_filename} at {wheel.path} has sha256 {actual} but "
            f"{wheel.sha256} was expected; refusing to use it.",
            subject=wheel.wheel_filename,
            expected=wheel.sha256.lower(),
            actual=actual,
        )
    os.chmod(dest, 0o644)


def _wheel_scripts(path: str) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    """(console_scripts, gui_scripts, scripts) of a wheel, read from its zip: what
    `pex_info._resolve_script` needs, without installing it."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        entry_points = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/entry_points.txt")]
        parser = ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        if entry_points:
            try:
                parser.read_string(zf.read(entry_points[0]).decode("utf-8"))
            except Exception as e:  # configparser raises several types for a malformed file
                raise CorruptWheelError(
                    f"Wheel {os.path.basename(path)} has an unreadable entry_points.txt: {e}",
                    wheel=os.path.basename(path),
                    member=entry_points[0],
                )
        groups = []
        for group in ("console_scripts", "gui_scripts"):
            items = parser.items(group) if parser.has_section(group) else []
            groups.append({name.strip(): value.strip() for name, value in sorted(items)})
        scripts = sorted(
            n.split("/", 2)[2]
            for n in names
            if n.count("/") == 2 and n.split("/")[0].endswith(".data") and n.split("/")[1] == "scripts"
            and not n.endswith("/")
        )
    return groups[0], groups[1], scripts


def _build_into(wheel: WheelInput, key: str, out_dir: str) -> None:
    filename = wheel.wheel_filename
    project_name, version = project_and_version(wheel)
    os.chmod(out_dir, 0o755)  # the atomic work dir is created private
    packed = os.path.join(out_dir, PACKED_NAME)
    _copy_verified(wheel, packed)
    verify_wheel_zip(packed, filename)
    console_scripts, gui_scripts, scripts = _wheel_scripts(packed)
    index = write_fragment(
        [SourceEntry(f"{DEPS_DIR}/{filename}", path=packed, compress=False)],
        os.path.join(out_dir, FRAGMENT_NAME),
        0,
    )
    manifest = {
        "console_scripts": console_scripts,
        "compress_level": 0,
        "entry_count": len(index.entries),
        # pex records a wheel file's sha256 as its fingerprint (`resolver._fingerprint_file`).
        "fingerprint": wheel.sha256.lower(),
        "fragment_size": os.path.getsize(os.path.join(out_dir, FRAGMENT_NAME)),
        "gui_scripts": gui_scripts,
        "key": key,
        "kind": "wheel-file",
        "layout_version": WHEEL_FILE_LAYOUT_VERSION,
        "pex_version": pex_version(),
        "project_name": project_name,
        "scripts": scripts,
        "version": version,
        "wheel_filename": filename,
        "wheel_sha256": wheel.sha256.lower(),
    }
    write_manifest(out_dir, manifest)


def build_wheel_file_layer(wheel: WheelInput, *, cache_root: Optional[PathLike] = None) -> Layer:
    """The whole-wheel layer for `wheel`, built and cached on a miss (a hit reads nothing of
    the wheel: a layer is only cached after its copy matched the sha256)."""
    key = wheel_file_layer_key(wheel.sha256, wheel.wheel_filename)
    final = layers_root(cache_root) / key
    layer = read_layer_dir(final)
    if layer is not None:
        return layer
    if final.exists():  # no manifest: left by a crashed non-atomic writer
        shutil.rmtree(final, ignore_errors=True)
    atomic_directory(final, lambda out_dir: _build_into(wheel, key, os.fspath(out_dir)))
    layer = read_layer_dir(final, built=True)
    assert layer is not None
    return layer


def _job(args: Tuple[WheelInput, Optional[str]]) -> Layer:
    return build_wheel_file_layer(args[0], cache_root=args[1])


def build_wheel_file_layers(
    wheels: Iterable[WheelInput], *, cache_root: Optional[PathLike] = None, jobs: Optional[int] = None
) -> List[Layer]:
    """Whole-wheel layers for `wheels` (in order), cache misses built over `jobs` processes."""
    inputs = list(wheels)
    given_root = os.fspath(cache_root) if cache_root is not None else None
    root = layers_root(cache_root)
    results: List[Optional[Layer]] = []
    for wheel in inputs:
        project_and_version(wheel)
        results.append(read_layer_dir(Path(root) / wheel_file_layer_key(wheel.sha256, wheel.wheel_filename)))
    missing = [i for i, layer in enumerate(results) if layer is None]
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    if len(missing) > 1 and jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(missing))) as pool:
            futures = {i: pool.submit(_job, (inputs[i], given_root)) for i in missing}
            for i, future in futures.items():
                results[i] = future.result()
    else:
        for i in missing:
            results[i] = build_wheel_file_layer(inputs[i], cache_root=given_root)
    return [layer for layer in results if layer is not None]
