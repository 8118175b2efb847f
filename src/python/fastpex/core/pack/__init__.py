"""The pack stage: wheels -> cached, pre-compressed layers -> a PEX assembled by copying bytes.

The public surface is below; the modules are its steps: `fragment` and `assembler` (zip
fragments and the zips built from them), `wheel_checks` and `layers` (wheel -> layer),
`bootstrap`, `sources` and `pex_info` (the rest of a PEX), `assemble` (layouts), `api`.
"""

from fastpex.core.pack.api import PackRequest, pack
from fastpex.core.pack.assemble import PexBuildResult, build_pex
from fastpex.core.pack.errors import (
    CorruptWheelError,
    DuplicateEntryError,
    FragmentError,
    InvalidSourceError,
    LayerError,
    PexBuildError,
    ScriptNotFoundError,
    UnsafeWheelError,
    WheelHashMismatchError,
    WheelNotFoundError,
    Zip64RequiredError,
)
from fastpex.core.pack.layers import Layer, WheelInput, build_layers
from fastpex.core.pack.options import LAYOUTS, PARTS, PexOptions

__all__ = [
    "LAYOUTS",
    "PARTS",
    "CorruptWheelError",
    "DuplicateEntryError",
    "FragmentError",
    "InvalidSourceError",
    "Layer",
    "LayerError",
    "PackRequest",
    "PexBuildError",
    "PexBuildResult",
    "PexOptions",
    "ScriptNotFoundError",
    "UnsafeWheelError",
    "WheelHashMismatchError",
    "WheelInput",
    "WheelNotFoundError",
    "Zip64RequiredError",
    "build_layers",
    "build_pex",
    "pack",
]
