"""One registry session: the API's base URL (https, or plain HTTP only where allowed), auth
retries, and errors that carry the HTTP status and the registry's own message.

The registry side of the OCI distribution spec
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md); pull and push build on
`RegistryClient.send`, which adds `Authorization`, answers 401 challenges through `auth.py`, and
hands back any other response.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Tuple
from urllib.parse import urljoin, urlsplit

from fastpex.core.errors import OperationalError, UserError
from fastpex.core.image.auth import Authenticator, RegistryAuthError, find_credentials, scrub
from fastpex.core.image.reference import ImageReference
from fastpex.core.net.http import HttpClient, HttpConfig, RequestBody
from fastpex.core.net.pool import origin_of
from fastpex.core.net.response import Response

__all__ = [
    "ImageNotFoundError",
    "RegistryClient",
    "RegistryOptions",
    "RegistryRefusedError",
    "RegistryServerError",
    "is_loopback_host",
]

_ERROR_MESSAGE_CAP = 400


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. `insecure_registries` (`HOST` or `HOST:PORT`) may be spoken to
    over plain HTTP, as loopback registries always may; `docker_config` (a directory holding
    config.json, or the file) and `netrc` override where credentials are read; `mount_from`
    names repositories on the same registry a push may mount missing blobs from; `jobs` bounds
    concurrent blob transfers."""

    insecure_registries: Tuple[str, ...] = ()
    docker_config: Optional[Path] = None
    netrc: Optional[Path] = None
    mount_from: Tuple[str, ...] = ()
    jobs: int = 4
    http: HttpConfig = field(default_factory=HttpConfig)


class RegistryRefusedError(UserError):
    """The registry refused a request (4xx): the message has the status and its reason."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ImageNotFoundError(RegistryRefusedError):
    """The manifest (tag or digest) or a blob is not in the repository."""


class RegistryServerError(OperationalError):
    """The registry failed (5xx after retries, or an answer that breaks the protocol)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport[1 : hostport.index("]")]
    return hostport.rsplit(":", 1)[0] if ":" in hostport else hostport


def plain_http_allowed(hostport: str, insecure: Tuple[str, ...]) -> bool:
    """Loopback, or named in `insecure` as `HOST` (any port) or exactly `HOST:PORT`."""
    host = _host_of(hostport)
    if is_loopback_host(host):
        return True
    wanted = {entry.strip().lower() for entry in insecure}
    return hostport.lower() in wanted or host.lower() in wanted


def registry_error_message(response: Response, secrets: Tuple[str, ...] = ()) -> str:
    """The registry's words from a JSON `errors` body (`CODE: message`), else the body's first
    line, capped; credentials scrubbed out."""
    try:
        body = response.read()
    except Exception:  # noqa: BLE001 - the status alone still says enough
        body = b""
    text = ""
    try:
        document = json.loads(body) if body else None
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("errors"), list):
        parts = []
        for item in document["errors"]:
            if isinstance(item, dict):
                code, message = item.get("code"), item.get("message")
                parts.append(": ".join(str(p) for p in (code, message) if p))
        text = "; ".join(p for p in parts if p)
    if not text and body:
        text = body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else ""
    if len(text) > _ERROR_MESSAGE_CAP:
        text = text[:_ERROR_MESSAGE_CAP] + "..."
    return scrub(text, secrets)


class RegistryClient:
    """Requests to one repository's registry, authenticated on demand."""

    def __init__(self, reference: ImageReference, options: RegistryOptions, http: HttpClient) -> None:
        if http.implicit_credentials:
            # Every credential this client sends is the Authenticator's (one order, all scrubbed).
            raise ValueError("a RegistryClient needs an HttpClient made with implicit_credentials=False")
        self.reference = reference
        self.options = options
        self.http = http
        host = reference.api_host
        self.scheme = "http" if plain_http_allowed(host, options.insecure_registries) else "https"
        self.base_url = f"{self.scheme}://{host}"
        self.auth = Authenticator(
            reference.registry,
            http,
            lambda: find_credentials(
                reference.registry, docker_config=options.docker_config, netrc_file=options.netrc
            ),
            self._check_realm,
        )

    def _check_realm(self, realm: str) -> None:
        parts = urlsplit(realm)
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and plain_http_allowed(parts.netloc, self.options.insecure_registries):
            return
        raise RegistryAuthError(
            f"`{self.reference.registry}` sends its token requests to `{parts.scheme}://{parts.netloc}`, "
            f"which is neither https nor loopback: credentials are not sent there (name it with "
            f"`--insecure-registry` to allow plain HTTP)"
        )

    def url(self, path: str) -> str:
        return urljoin(self.base_url + "/", path)

    def repo_path(self, suffix: str, repository: Optional[str] = None) -> str:
        return f"/v2/{repository or self.reference.repository}/{suffix}"

    def send(
        self,
        method: str,
        url: str,
        *,
        scopes: Tuple[str, ...],
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[RequestBody] = None,
        stream: bool = False,
        max_bytes: Optional[int] = None,
        retries: Optional[int] = None,
    ) -> Response:
        """`method url` with this registry's auth; any non-401 response is returned as is."""
        target = url if "://" in url else self.url(url)
        same_origin = origin_of(target) == origin_of(self.base_url)
        for _ in range(4):
            authorization = self.auth.authorization(scopes) if same_origin else None
            request_headers = dict(headers or {})
            if authorization:
                request_headers["Authorization"] = authorization
            response = self.http.request(
                method, target, headers=request_headers, body=body, stream=stream, max_bytes=max_bytes, retries=retries
            )
            if response.status != 401 or not same_origin:
                return response
            challenge = response.header("WWW-Authenticate")
            response.close()
            self.auth.handle_challenge(challenge, scopes, authorization)
        raise RegistryAuthError(f"`{self.reference.registry}` kept asking for credentials (HTTP 401)")

    def failure(self, response: Response, action: str) -> Exception:
        """The error for an unexpected answer to `action` ("pushing blob `sha256:...`")."""
        secrets = self.auth.secrets
        message = registry_error_message(response, secrets)
        status = response.status
        reason = scrub(response.reason, secrets)  # a server controls its reason phrase too
        detail = f"HTTP {status} {reason}".rstrip() + (f": {message}" if message else "")
        where = f"`{self.reference.registry}/{self.reference.repository}`"
        if status == 404:
            return ImageNotFoundError(f"{action}: {where} answered {detail}", status=status)
        if status in (401, 403):
            return RegistryRefusedError(
                f"{action}: {where} denied it ({detail}): check the credentials and their access rights",
                status=status,
            )
        if 400 <= status < 500:
            return RegistryRefusedError(f"{action}: {where} refused it ({detail})", status=status)
        return RegistryServerError(f"{action}: {where} failed ({detail})", status=status)
