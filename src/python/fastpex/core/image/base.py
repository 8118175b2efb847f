"""The base image: read from an OCI layout, and inspected (never run) for its Python.

A base cannot be run at build time (it may be for another architecture, and we have no
container runtime), so its Python is found in its files: `<home>/lib/pythonX.Y/os.py` next to an
interpreter `<home>/bin/pythonX.Y` (`/usr/local` first, then `/usr`, then any other home).
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from fastpex.core.errors import UserError
from fastpex.core.image.oci import (
    DOCKER_LAYER_GZIP,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    Descriptor,
    OciLayout,
    Platform,
)

_OS_PY = re.compile(r"^(?P<home>.*?)/?lib/python(?P<version>3\.\d+)/os\.py$")
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "i686": "386"}


class BaseImageError(UserError):
    """The base image is unusable for this target (missing, wrong Python, wrong platform)."""


def platform_for_target(target_name: str, target_platform: str) -> Platform:
    """The OCI platform of a lock target's platform (`linux_x86_64` -> linux/amd64)."""
    os_name, _, machine = target_platform.partition("_")
    if os_name not in ("linux", "manylinux", "musllinux") or machine not in _ARCHITECTURES:
        raise UserError(
            f"The target `{target_name}` ({target_platform}) is not a Linux platform an OCI image can hold: "
            f"images are built for Linux targets ({', '.join('linux_' + m for m in _ARCHITECTURES)})"
        )
    return Platform("linux", _ARCHITECTURES[machine], "v7" if machine == "armv7l" else None)


@dataclass(frozen=True)
class BasePython:
    version: str  # X.Y
    interpreter: str  # absolute path in the image, e.g. /usr/local/bin/python3.11
    stdlib: str  # e.g. /usr/local/lib/python3.11


@dataclass(frozen=True)
class BaseImage:
    """One platform's manifest of a base image and what fastpex needs from it."""

    layout: OciLayout
    manifest: Dict[str, Any]
    config: Dict[str, Any]
    layers: Tuple[Descriptor, ...]  # with OCI media types
    platform: Platform
    python: BasePython
    name: str  # for messages: `oci:DIR:TAG`

    @property
    def config_env(self) -> List[str]:
        return list((self.config.get("config") or {}).get("Env") or [])


def _oci_layer(descriptor: Descriptor) -> Descriptor:
    if descriptor.media_type == DOCKER_LAYER_GZIP:
        return Descriptor(MEDIA_TYPE_LAYER_GZIP, descriptor.digest, descriptor.size, descriptor.annotations)
    if descriptor.media_type not in (MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR):
        raise UserError(f"The base image has a layer of media type `{descriptor.media_type}`; fastpex handles tar and tar+gzip layers")
    return descriptor


def _pick_manifest(layout: OciLayout, entry: Descriptor, platform: Platform, name: str) -> Descriptor:
    if entry.media_type in MANIFEST_MEDIA_TYPES:
        return entry
    if entry.media_type not in INDEX_MEDIA_TYPES:
        raise BaseImageError(f"The base image {name} is a `{entry.media_type}`, not an image manifest or index")
    children = [Descriptor.from_json(m) for m in layout.read_json_blob(entry.digest).get("manifests") or ()]
    for child in children:
        p = child.platform
        if p is not None and (p.os, p.architecture) == (platform.os, platform.architecture):
            if platform.variant is None or p.variant in (None, platform.variant):
                return child
    have = ", ".join(str(c.platform) for c in children if c.platform) or "none"
    raise BaseImageError(f"The base image {name} has no manifest for {platform} (it has: {have})")


def _layer_paths(layout: OciLayout, layers: Tuple[Descriptor, ...]) -> Dict[str, str]:
    """Every path of the base's root filesystem (whiteouts applied) -> `f` file, `l` link, `d` dir."""
    paths: Dict[str, str] = {}
    for layer in layers:
        with tarfile.open(layout.blob_path(layer.digest), "r:*") as tar:
            for member in tar:
                name = posixpath.normpath("/" + member.name.lstrip("./"))
                base, leaf = posixpath.split(name)
                if leaf == ".wh..wh..opq":
                    prefix = base.rstrip("/") + "/"
                    for p in [p for p in paths if p.startswith(prefix)]:
                        del paths[p]
                    continue
                if leaf.startswith(".wh."):
                    gone = posixpath.join(base, leaf[4:])
                    for p in [p for p in paths if p == gone or p.startswith(gone + "/")]:
                        del paths[p]
                    continue
                paths[name] = "d" if member.isdir() else "l" if member.issym() or member.islnk() else "f"
    return paths


def find_python(paths: Dict[str, str]) -> List[BasePython]:
    """Every CPython install in the file system, most conventional home first."""
    found: List[Tuple[int, str, BasePython]] = []
    seen: Set[str] = set()
    for path in paths:
        match = _OS_PY.match(path)
        if not match:
            continue
        home, version = match.group("home") or "/", match.group("version")
        interpreter = posixpath.join(home, "bin", f"python{version}")
        if interpreter in seen or paths.get(interpreter) not in ("f", "l"):
            continue
        seen.add(interpreter)
        rank = {"/usr/local": 0, "/usr": 1}.get(home, 2)
        found.append((rank, home, BasePython(version, interpreter, posixpath.join(home, "lib", f"python{version}"))))
    return [p for _, _, p in sorted(found, key=lambda f: (f[0], f[1]))]


def load_base(layout_dir: Path, tag: Optional[str], platform: Platform, python_version: str, target: str) -> BaseImage:
    """The base's manifest for `platform`, checked to hold CPython `python_version`."""
    layout = OciLayout(layout_dir)
    name = f"oci:{layout_dir}" + (f":{tag}" if tag else "")
    if not layout.exists():
        raise BaseImageError(f"The base image {name} does not exist: {layout_dir} is not an OCI image layout (no oci-layout and index.json)")
    manifest_descriptor = _pick_manifest(layout, layout.find(tag), platform, name)
    manifest = layout.read_json_blob(manifest_descriptor.digest)
    config = layout.read_json_blob(Descriptor.from_json(manifest["config"]).digest)
    base_platform = Platform(str(config.get("os", "")), str(config.get("architecture", "")), config.get("variant") or None)
    if (base_platform.os, base_platform.architecture) != (platform.os, platform.architecture):
        raise BaseImageError(
            f"The base image {name} is for {base_platform}, and the target `{target}` is {platform}: use a base for {platform}"
        )
    layers = tuple(_oci_layer(Descriptor.from_json(d)) for d in manifest.get("layers") or ())
    for layer in layers:
        if not layout.has_blob(layer.digest):
            raise BaseImageError(f"The base image {name} lacks its layer {layer.digest}")
    pythons = find_python(_layer_paths(layout, layers))
    matching = [p for p in pythons if p.version == python_version]
    if not matching:
        have = (
            ", ".join(f"Python {p.version} ({p.interpreter}, {p.stdlib}/os.py)" for p in pythons)
            or "no Python (no <home>/lib/python3.X/os.py beside <home>/bin/python3.X)"
        )
        raise BaseImageError(
            f"The base image {name} has {have}, and the target `{target}` needs Python {python_version}: "
            f"use a base image with CPython {python_version}"
        )
    return BaseImage(
        layout=layout, manifest=manifest, config=config, layers=layers, platform=base_platform,
        python=matching[0], name=name,
    )
