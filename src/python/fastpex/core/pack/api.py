"""The pack stage's API: wheels + `PexOptions` -> cached layers -> a PEX.

`pack(PackRequest) -> PexBuildResult` is what `fastpex pack` and `build` call; the modules
beside it (`layers`, `assemble`, ...) are its steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

from fastpex.core.errors import HashMismatchError
from fastpex.core.pack.assemble import PexBuildResult, build_pex
from fastpex.core.pack.errors import PexBuildError, WheelHashMismatchError, WheelNotFoundError
from fastpex.core.pack.layers import WheelInput, build_layers
from fastpex.core.pack.options import DEPS_INSTALLS, PexOptions
from fastpex.core.pack.wheel_files import build_wheel_file_layers

__all__ = ["PackRequest", "pack"]


@dataclass(frozen=True)
class PackRequest:
    """A PEX to build at `output` from `wheels` (each with the sha256 it must have).

    `cache_root` holds the layer and bootstrap caches (default: `util.cache`'s root);
    `layer_jobs` is how many processes build missing layers (default: the CPU count).
    """

    wheels: Tuple[WheelInput, ...]
    output: str
    options: PexOptions = field(default_factory=PexOptions)
    cache_root: Optional[str] = None
    layer_jobs: Optional[int] = None


def pack(request: PackRequest) -> PexBuildResult:
    """Layers for the request's wheels (cached by sha256), then the PEX its options describe.

    The layers are installed chroots, or whole wheels when `options.deps_install` is `wheels`.

    A wheel whose bytes don't match the sha256 it came with raises `WheelHashMismatchError`
    (a `UserError`): the caller vouched for that sha256.
    """
    if request.options.deps_install not in DEPS_INSTALLS:
        raise PexBuildError(
            f"Unknown deps_install {request.options.deps_install!r}; choose one of "
            f"{', '.join(DEPS_INSTALLS)}."
        )
    for wheel in request.wheels:
        if not os.path.isfile(wheel.path):
            raise WheelNotFoundError(f"The wheel {wheel.path} does not exist.", wheel=wheel.wheel_filename)
    try:
        if request.options.deps_install == "wheels":
            layers = build_wheel_file_layers(
                request.wheels, cache_root=request.cache_root, jobs=request.layer_jobs
            )
        else:
            layers = build_layers(
                request.wheels,
                cache_root=request.cache_root,
                compress_level=request.options.compress_level,
                jobs=request.layer_jobs,
            )
    except HashMismatchError as e:
        raise WheelHashMismatchError(e) from e
    return build_pex(layers, request.output, request.options, cache_root=request.cache_root)
