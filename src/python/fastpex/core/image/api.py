"""`image(ImageRequest) -> ImageResult`: wheels + sources + a base OCI layout -> an OCI layout.

Per platform the manifest's layers are: the base's, the venv layer (`io.fastpex.layer: venv`,
holding pyvenv.cfg), the dependency layers (`wheel:<project>` / `group:<i>/<n>`), and the
application layer last. Several platforms -> an OCI image index, one manifest each. Config and
history are fixed (created at the epoch), so the same inputs give the same digests anywhere.

`part` splits the output into two that never overlap: `deps` writes only the base's and the
dependency layers' blobs (the venv layer included); `app` writes the application layer, the
configs, the manifests, the index and `index.json`/`oci-layout`, taking the dependency layers'
digests from the layer cache (rebuilding a missing one there, never copying it out). The output
is written in a sibling directory and swapped in when complete: a failed build leaves it as it was.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fastpex.core.errors import UserError
from fastpex.core.image.app_layer import app_layer, venv_layer
from fastpex.core.image.base import BaseImage
from fastpex.core.image.bytecode import find_compiler
from fastpex.core.image.grouping import (
    DEFAULT_LARGE_LAYER_MB,
    DEFAULT_SMALL_LAYER_GROUPS,
    check_layer_count,
    group_wheels,
)
from fastpex.core.image.install import VenvScheme
from fastpex.core.image.layers import DEFAULT_COMPRESS_LEVEL, CachedLayer, LayerSettings, build_layers
from fastpex.core.image.oci import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    REF_NAME_ANNOTATION,
    Descriptor,
    OciLayout,
    Platform,
    canonical_json,
    descriptor_for_bytes,
)
from fastpex.core.pack.layers import WheelInput

PARTS = ("all", "deps", "app")
LAYER_ANNOTATION = "io.fastpex.layer"
WHEELS_ANNOTATION = "io.fastpex.wheels"
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class ImageConfig:
    """What the container runs and with what (the OCI config's `config` object)."""

    entry_point: Optional[str] = None  # MOD[:FN], run by <prefix>/entrypoint
    script: Optional[str] = None  # a console script of the venv
    args: Tuple[str, ...] = ()  # Cmd
    env: Tuple[Tuple[str, str], ...] = ()
    workdir: Optional[str] = None
    user: Optional[str] = None
    labels: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PlatformImage:
    """One platform's inputs: its target, its wheels and its base."""

    target: str  # lock target name, for messages
    python_version: str  # X.Y
    wheels: Tuple[WheelInput, ...]
    base: BaseImage


@dataclass(frozen=True)
class ImageRequest:
    images: Tuple[PlatformImage, ...]
    output: Path
    sources: Optional[Path] = None
    config: ImageConfig = field(default_factory=ImageConfig)
    prefix: str = "/app"
    compress_level: int = DEFAULT_COMPRESS_LEVEL
    large_layer_mb: int = DEFAULT_LARGE_LAYER_MB
    small_layer_groups: int = DEFAULT_SMALL_LAYER_GROUPS
    part: str = "all"
    tag: str = DEFAULT_TAG
    pythons: Tuple[str, ...] = ()  # interpreters that compile byte code, by X.Y
    cache_root: Optional[Path] = None
    layer_jobs: Optional[int] = None


@dataclass(frozen=True)
class ImageLayer:
    name: str  # base, venv, wheel:<project>, group:<i>/<n>, app
    descriptor: Descriptor
    built: bool = False


@dataclass(frozen=True)
class ManifestResult:
    platform: Platform
    descriptor: Descriptor
    layers: Tuple[ImageLayer, ...]


@dataclass(frozen=True)
class ImageResult:
    output: Path
    index: Descriptor  # what index.json names: the manifest, or the image index
    manifests: Tuple[ManifestResult, ...]


def _check_prefix(prefix: str) -> str:
    normalized = posixpath.normpath(prefix)
    if not prefix.startswith("/") or normalized == "/" or ".." in normalized.split("/"):
        raise UserError(f"--prefix must be an absolute directory other than `/`, without `..`; got `{prefix}`")
    return normalized


def _config_json(image: PlatformImage, request: ImageRequest, scheme: VenvScheme, diff_ids: List[str], history: List[Dict[str, Any]]) -> bytes:
    base = image.base
    base_config = dict(base.config.get("config") or {})
    env: Dict[str, str] = {}
    for item in base.config_env:
        key, _, value = item.partition("=")
        env[key] = value
    env["PATH"] = scheme.bin + ":" + env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for key, value in request.config.env:
        env[key] = value
    config: Dict[str, Any] = {k: v for k, v in base_config.items() if k in ("ExposedPorts", "StopSignal", "Volumes")}
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    if request.config.entry_point:
        config["Entrypoint"] = [posixpath.join(scheme.prefix, "entrypoint")]
    elif request.config.script:
        config["Entrypoint"] = [posixpath.join(scheme.bin, request.config.script)]
    else:
        config["Entrypoint"] = [scheme.python]
    if request.config.args:
        config["Cmd"] = list(request.config.args)
    workdir = request.config.workdir or (posixpath.join(scheme.prefix, "src") if request.sources else base_config.get("WorkingDir"))
    if workdir:
        config["WorkingDir"] = workdir
    user = request.config.user or base_config.get("User")
    if user:
        config["User"] = user
    labels = dict(base_config.get("Labels") or {})
    labels.update(dict(request.config.labels))
    if labels:
        config["Labels"] = labels
    document = {
        "architecture": base.platform.architecture,
        "os": base.platform.os,
        "created": EPOCH,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if base.platform.variant:
        document["variant"] = base.platform.variant
    return canonical_json(document)


def _check_runnable(request: ImageRequest, scheme: VenvScheme, layers: Sequence[CachedLayer], app_files: Mapping[str, str], target: str) -> None:
    installed = set(app_files)
    for layer in layers:
        installed.update(layer.files)
    if request.config.script:
        script = posixpath.join(scheme.bin, request.config.script)
        if script not in installed:
            scripts = sorted(posixpath.basename(p) for p in installed if posixpath.dirname(p) == scheme.bin)
            raise UserError(
                f"--script `{request.config.script}` is not a script of the image's venv for `{target}` "
                f"(its scripts: {', '.join(scripts) or 'none'})"
            )
    if request.config.entry_point:
        module = request.config.entry_point.split(":", 1)[0].strip().replace(".", "/")
        roots = [scheme.site_packages, posixpath.join(scheme.prefix, "src")]
        candidates = {posixpath.join(r, module + suffix) for r in roots for suffix in (".py", "/__init__.py")}
        if not candidates & installed and not any(p.startswith(posixpath.join(scheme.site_packages, module) + ".") for p in installed):
            raise UserError(
                f"The entry point `{request.config.entry_point}` names a module that is neither in the sources nor in "
                f"any wheel of the image for `{target}`: check the spelling, or add the source or requirement"
            )


def _platform_manifest(image: PlatformImage, request: ImageRequest, scheme: VenvScheme, out: OciLayout) -> ManifestResult:
    compiler = find_compiler(request.pythons, image.python_version, what=f"the byte code of the image for `{image.target}`")
    settings = LayerSettings(scheme=scheme, compiler=compiler, compress_level=request.compress_level)
    groups = group_wheels(image.wheels, large_layer_mb=request.large_layer_mb, small_layer_groups=request.small_layer_groups)
    base = image.base
    check_layer_count(len(base.layers), len(groups) + 2, base.name)
    dep_layers = build_layers([g.wheels for g in groups], settings, cache_root=request.cache_root, jobs=request.layer_jobs)
    venv = venv_layer(scheme, base.python, request.compress_level)
    app, app_files = app_layer(scheme, request.sources, request.config.entry_point, compiler, request.compress_level)
    _check_runnable(request, scheme, dep_layers, app_files, image.target)
    writes_deps = request.part in ("all", "deps")
    writes_app = request.part in ("all", "app")

    layers: List[ImageLayer] = [ImageLayer("base", d) for d in base.layers]
    if writes_deps:
        for descriptor in base.layers:
            out.add_blob_from_file(base.layout.blob_path(descriptor.digest), expected_digest=descriptor.digest, link=True)
        out.add_blob_bytes(venv.data, expected_digest=venv.digests.digest)
    layers.append(ImageLayer("venv", Descriptor(MEDIA_TYPE_LAYER_GZIP, venv.digests.digest, venv.digests.size, {LAYER_ANNOTATION: "venv"})))
    for group, cached in zip(groups, dep_layers):
        if writes_deps:
            out.add_blob_from_file(cached.path, expected_digest=cached.digest, link=True)
        annotations = {LAYER_ANNOTATION: group.name, WHEELS_ANNOTATION: ",".join(sorted(w.wheel_filename for w in group.wheels))}
        layers.append(ImageLayer(group.name, Descriptor(MEDIA_TYPE_LAYER_GZIP, cached.digest, cached.size, annotations), cached.built))
    app_descriptor = Descriptor(MEDIA_TYPE_LAYER_GZIP, app.digests.digest, app.digests.size, {LAYER_ANNOTATION: "app"})
    layers.append(ImageLayer("app", app_descriptor))

    diff_ids = list((base.config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(base.layers):
        raise UserError(f"The base image {base.name} has {len(base.layers)} layers but {len(diff_ids)} diff_ids in its config")
    diff_ids += [venv.digests.diff_id, *(c.diff_id for c in dep_layers), app.digests.diff_id]
    history = [h for h in base.config.get("history") or []]
    history += [{"created": EPOCH, "created_by": f"fastpex image: {layer.name}"} for layer in layers[len(base.layers):]]
    config = _config_json(image, request, scheme, diff_ids, history)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": descriptor_for_bytes(MEDIA_TYPE_CONFIG, config).to_json(),
        "layers": [layer.descriptor.to_json() for layer in layers],
    })
    if writes_app:
        out.add_blob_bytes(app.data, expected_digest=app.digests.digest)
        out.add_blob_bytes(config)
        out.add_blob_bytes(manifest)
    descriptor = descriptor_for_bytes(MEDIA_TYPE_MANIFEST, manifest, platform=base.platform)
    return ManifestResult(platform=base.platform, descriptor=descriptor, layers=tuple(layers))


def image(request: ImageRequest) -> ImageResult:
    """Build the OCI layout `request.output` (replacing it only when everything succeeded)."""
    if request.part not in PARTS:
        raise UserError(f"--part must be one of {', '.join(PARTS)}; got `{request.part}`")
    if not request.images:
        raise UserError("An image needs at least one target")
    if request.config.entry_point and request.config.script:
        raise UserError("Give --entry-point or --script, not both")
    if not 0 <= request.compress_level <= 9:
        raise UserError(f"--compress-level must be in 0..9, got {request.compress_level}")
    platforms = [i.base.platform for i in request.images]
    if len(set(platforms)) != len(platforms):
        raise UserError(f"Two targets of the image are for the same platform ({', '.join(map(str, platforms))}): give one per platform")
    output = Path(request.output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".building", dir=output.parent))
    try:
        out = OciLayout(staging, write_marker=request.part != "deps")
        out.blobs_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for platform_image in request.images:
            scheme = VenvScheme(_check_prefix(request.prefix), platform_image.python_version)
            results.append(_platform_manifest(platform_image, request, scheme, out))
        if len(results) == 1:
            top = Descriptor(MEDIA_TYPE_MANIFEST, results[0].descriptor.digest, results[0].descriptor.size,
                             {REF_NAME_ANNOTATION: request.tag}, results[0].platform)
        else:
            index = canonical_json({
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_INDEX,
                "manifests": [r.descriptor.to_json() for r in results],
            })
            if request.part != "deps":
                out.add_blob_bytes(index)
            top = descriptor_for_bytes(MEDIA_TYPE_INDEX, index, annotations={REF_NAME_ANNOTATION: request.tag})
        if request.part != "deps":
            out.write_index([top])
        swap_in(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ImageResult(output=output, index=top, manifests=tuple(results))


def swap_in(staging: Path, output: Path) -> None:
    """Replace `output` by `staging`: the old one moves aside first, then goes."""
    trash: Optional[Path] = None
    if output.exists() or output.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        os.replace(output, trash / "old")
    os.replace(staging, output)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
