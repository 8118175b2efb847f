"""Image references, `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`, parsed by docker's rules.

The grammar is distribution's `reference` package (github.com/distribution/reference,
`regexp.go`): the first `/`-separated component names a registry host only when it contains a
`.` or a `:` or is `localhost`; otherwise the reference is on Docker Hub (`docker.io`, whose
one-component repositories live under `library/`). Repositories must be lower case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from fastpex.core.errors import UserError

__all__ = ["DOCKER_HUB", "ImageReference", "InvalidReferenceError", "parse_reference"]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API_HOST = "registry-1.docker.io"

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_NAME = 255


class InvalidReferenceError(UserError):
    """A reference that docker's grammar rejects; the message says which part and why."""


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference. `registry` is `host[:port]` as written (`docker.io` for Docker Hub);
    at least one of `tag` and `digest` may be None (then the tag `latest` is meant)."""

    registry: str
    repository: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    @property
    def host(self) -> str:
        """The host name without the port (brackets removed from an IPv6 literal)."""
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def api_host(self) -> str:
        """Where the distribution API is served (`docker.io` answers on another name)."""
        return _DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes in `/v2/<name>/manifests/<reference>`: the digest wins over the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: Optional[str]) -> "ImageReference":
        return ImageReference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> "ImageReference":
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_host(name: str) -> "tuple[str, str]":
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return DOCKER_HUB, name


def parse_reference(text: str) -> ImageReference:
    """Parse `text`, or raise `InvalidReferenceError` naming what is wrong."""
    original = text
    value = text.strip()
    if not value:
        raise InvalidReferenceError("an image reference is empty; expected `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`")
    if "://" in value:
        raise InvalidReferenceError(
            f"`{original}` is a URL, not an image reference: drop the scheme (`HOST[:PORT]/REPO[:TAG]`); "
            f"plain HTTP is chosen for loopback registries and `--insecure-registry` hosts"
        )
    digest: Optional[str] = None
    if "@" in value:
        value, _, digest = value.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise InvalidReferenceError(
                f"`{original}`: the digest `{digest}` is not `sha256:` followed by 64 lower-case hex digits"
            )
    registry, remainder = _split_host(value)
    if registry != DOCKER_HUB and not _HOST.fullmatch(registry):
        raise InvalidReferenceError(f"`{original}`: `{registry}` is not a valid registry host[:port]")
    tag: Optional[str] = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReferenceError(
                f"`{original}`: the tag `{tag}` is invalid (letters, digits, `_`, `.` and `-`, "
                f"at most 128, not starting with `.` or `-`)"
            )
    if not remainder:
        raise InvalidReferenceError(f"`{original}` names no repository; expected `HOST[:PORT]/REPO[:TAG]`")
    components = remainder.split("/")
    for component in components:
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if _PATH_COMPONENT.fullmatch(component.lower()):
            raise InvalidReferenceError(
                f"`{original}`: repository names must be lower case (`{remainder.lower()}`)"
            )
        raise InvalidReferenceError(
            f"`{original}`: `{component}` is not a valid repository path component "
            f"(lower-case letters and digits, separated by `.`, `_`, `__` or `-`)"
        )
    if registry == DOCKER_HUB and len(components) == 1:
        remainder = f"library/{remainder}"
    if len(registry) + 1 + len(remainder) > _MAX_NAME:
        raise InvalidReferenceError(f"`{original}`: the repository name is longer than {_MAX_NAME} characters")
    return ImageReference(registry=registry, repository=remainder, tag=tag, digest=digest)
