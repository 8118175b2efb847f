"""The registry client's public surface: pull an image into an OCI layout, push one from it.

    parse_reference(text) -> ImageReference
    pull_to_layout(reference, layout_dir, *, platform, options) -> Descriptor
    push_layout(layout_dir, reference, *, tag_in_layout, options) -> PushResult

An OCI image layout on disk is the whole interface with the image builder. The parts live in
`reference.py` (parsing), `auth.py` (credentials, Basic and Bearer), `registry_client.py` (one
session: scheme, auth retries, errors), `registry_pull.py` and `registry_push.py`.
"""

from __future__ import annotations

from fastpex.core.image.auth import RegistryAuthError
from fastpex.core.image.reference import ImageReference, InvalidReferenceError, parse_reference
from fastpex.core.image.registry_client import (
    ImageNotFoundError,
    RegistryOptions,
    RegistryRefusedError,
    RegistryServerError,
)
from fastpex.core.image.registry_pull import PlatformNotFoundError, pull_to_layout
from fastpex.core.image.registry_push import PushResult, push_layout

__all__ = [
    "ImageNotFoundError",
    "ImageReference",
    "InvalidReferenceError",
    "PlatformNotFoundError",
    "PushResult",
    "RegistryAuthError",
    "RegistryOptions",
    "RegistryRefusedError",
    "RegistryServerError",
    "parse_reference",
    "pull_to_layout",
    "push_layout",
]
