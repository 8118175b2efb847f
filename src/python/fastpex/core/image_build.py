"""`build_image(ImageBuildRequest) -> ImageBuildResult`: lock file -> wheels -> OCI image.

The wheels come from `build.prepare_wheels`, the same preparation a PEX build does (subset,
select, fetch, build sdists), once per target: each Linux target is one platform of the image.
The base is `oci:DIR[:TAG]` (an OCI layout) or a registry reference, pulled into a scratch
layout per platform (every blob verified by digest) and inspected there.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from fastpex.core.build import BuildRequest, prepare_wheels
from fastpex.core.errors import UserError
from fastpex.core.fetch import downloader
from fastpex.core.fetch.progress import Reporter
from fastpex.core.image.api import ImageConfig, ImageRequest, ImageResult, PlatformImage, image
from fastpex.core.image.base import load_base, platform_for_target
from fastpex.core.image.grouping import DEFAULT_LARGE_LAYER_MB, DEFAULT_SMALL_LAYER_GROUPS
from fastpex.core.image.layers import DEFAULT_COMPRESS_LEVEL
from fastpex.core.image.oci import Platform
from fastpex.core.model import Target
from fastpex.core.pack.options import PexOptions

__all__ = ["ImageBuildRequest", "ImageBuildResult", "build_image", "parse_base"]


@dataclass(frozen=True)
class BaseSpec:
    """`oci:DIR[:TAG]` (`layout` set) or a registry reference (`reference` set)."""

    layout: Optional[Path] = None
    tag: Optional[str] = None
    reference: Optional[str] = None


def parse_base(text: str) -> BaseSpec:
    if text.startswith("oci:"):
        rest = text[len("oci:"):]
        directory, sep, tag = rest.rpartition(":")
        if sep and "/" not in tag and directory:
            return BaseSpec(layout=Path(directory), tag=tag or None)
        return BaseSpec(layout=Path(rest))
    if not text:
        raise UserError("--base is empty: give `oci:DIR[:TAG]` or `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`")
    return BaseSpec(reference=text)


@dataclass(frozen=True)
class ImageBuildRequest:
    lock_path: str
    base: str
    output: str
    targets: Tuple[str, ...] = ()
    requirements: Tuple[str, ...] = ()
    interpreter_constraints: Tuple[str, ...] = ()
    sources: Optional[str] = None
    config: ImageConfig = field(default_factory=ImageConfig)
    prefix: str = "/app"
    compress_level: int = DEFAULT_COMPRESS_LEVEL
    large_layer_mb: int = DEFAULT_LARGE_LAYER_MB
    small_layer_groups: int = DEFAULT_SMALL_LAYER_GROUPS
    part: str = "all"
    tag: str = "latest"
    insecure_registries: Tuple[str, ...] = ()
    cache_root: Optional[str] = None
    offline: bool = False
    fetch_jobs: int = downloader.DEFAULT_JOBS
    indexes: Tuple[str, ...] = ()
    pythons: Tuple[str, ...] = ()
    layer_jobs: Optional[int] = None
    progress: Optional[Reporter] = None


@dataclass(frozen=True)
class ImageBuildResult:
    image: ImageResult
    targets: Tuple[Target, ...]


def _pull_base(reference: str, platform: Platform, into: Path, insecure: Tuple[str, ...]) -> Path:
    from fastpex.core.image.registry import RegistryOptions, parse_reference, pull_to_layout

    pull_to_layout(parse_reference(reference), into, platform=platform, options=RegistryOptions(insecure_registries=insecure))
    return into


def build_image(request: ImageBuildRequest) -> ImageBuildResult:
    """Prepare each target's wheels, find its base, build the image."""
    spec = parse_base(request.base)
    target_names: List[Optional[str]] = list(request.targets) or [None]
    scratch = Path(tempfile.mkdtemp(prefix=".fastpex-image-base.", dir=Path(request.output).absolute().parent))
    try:
        platform_images: List[PlatformImage] = []
        targets: List[Target] = []
        for i, name in enumerate(target_names):
            prepared = prepare_wheels(
                BuildRequest(
                    lock_path=request.lock_path,
                    output=request.output,
                    options=PexOptions(interpreter_constraints=request.interpreter_constraints),
                    targets=(name,) if name else (),
                    requirements=request.requirements,
                    cache_root=request.cache_root,
                    fetch_jobs=request.fetch_jobs,
                    offline=request.offline,
                    indexes=request.indexes,
                    progress=request.progress,
                    pythons=request.pythons,
                )
            )
            target = prepared.targets[0]
            platform = platform_for_target(target.name, target.platform)
            if spec.layout is not None:
                layout, tag = spec.layout, spec.tag
            else:
                assert spec.reference is not None
                layout, tag = _pull_base(spec.reference, platform, scratch / str(i), request.insecure_registries), None
            base = load_base(layout, tag, platform, target.python_version, target.name)
            platform_images.append(PlatformImage(target.name, target.python_version, prepared.wheels, base))
            targets.append(target)
        result = image(
            ImageRequest(
                images=tuple(platform_images),
                output=Path(request.output),
                sources=Path(request.sources) if request.sources else None,
                config=request.config,
                prefix=request.prefix,
                compress_level=request.compress_level,
                large_layer_mb=request.large_layer_mb,
                small_layer_groups=request.small_layer_groups,
                part=request.part,
                tag=request.tag,
                pythons=request.pythons,
                cache_root=Path(request.cache_root) if request.cache_root else None,
                layer_jobs=request.layer_jobs,
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ImageBuildResult(image=result, targets=tuple(targets))
