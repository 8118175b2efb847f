"""Which wheels share a layer.

A wheel whose installed size is over the large-layer threshold (torch, nvidia-*) gets a layer of
its own; every other wheel goes to one of N buckets chosen by a hash of its project name alone,
so adding or removing a wheel changes only its own bucket's layer, and the layer count stays
bounded (large wheels + N + venv + app + the base's) far under the 127-layer limit.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from packaging.utils import canonicalize_name

from fastpex.core.errors import UserError
from fastpex.core.pack.layers import WheelInput

DEFAULT_LARGE_LAYER_MB = 64
DEFAULT_SMALL_LAYER_GROUPS = 8
MAX_LAYERS = 127


@dataclass(frozen=True)
class LayerGroup:
    """`name`: `wheel:<project>` for a large wheel, `group:<i>/<n>` for a bucket."""

    name: str
    wheels: Tuple[WheelInput, ...]


def project_of(wheel: WheelInput) -> str:
    return canonicalize_name(wheel.wheel_filename.split("-", 1)[0])


def installed_size(wheel: WheelInput) -> int:
    try:
        with zipfile.ZipFile(wheel.path) as zf:
            return sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"The wheel `{wheel.wheel_filename}` cannot be read: {e}") from None


def bucket_of(project: str, groups: int) -> int:
    return int.from_bytes(hashlib.sha256(project.encode("utf-8")).digest()[:8], "big") % groups


def group_wheels(wheels: Sequence[WheelInput], *, large_layer_mb: int, small_layer_groups: int) -> List[LayerGroup]:
    """Large wheels first (by project), then the non-empty buckets in bucket order."""
    if small_layer_groups < 1:
        raise UserError(f"--small-layer-groups must be at least 1, got {small_layer_groups}")
    if large_layer_mb < 0:
        raise UserError(f"--large-layer-mb must not be negative, got {large_layer_mb}")
    large: List[LayerGroup] = []
    buckets: Dict[int, List[WheelInput]] = {}
    for wheel in sorted(wheels, key=lambda w: (project_of(w), w.wheel_filename)):
        project = project_of(wheel)
        if installed_size(wheel) > large_layer_mb * 1024 * 1024:
            large.append(LayerGroup(f"wheel:{project}", (wheel,)))
        else:
            buckets.setdefault(bucket_of(project, small_layer_groups), []).append(wheel)
    return large + [
        LayerGroup(f"group:{i}/{small_layer_groups}", tuple(buckets[i])) for i in sorted(buckets)
    ]


def check_layer_count(base_layers: int, own_layers: int, base: str) -> None:
    total = base_layers + own_layers
    if total > MAX_LAYERS:
        raise UserError(
            f"The image would have {total} layers ({base_layers} from the base {base}, {own_layers} of its own), "
            f"more than the {MAX_LAYERS} container runtimes accept: raise --large-layer-mb, lower "
            f"--small-layer-groups, or use a base with fewer layers"
        )
