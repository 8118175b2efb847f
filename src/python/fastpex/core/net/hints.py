"""What to tell the user about an HTTP status an index or file server answered with."""

from __future__ import annotations

__all__ = ["status_hint"]

CREDENTIALS_HINT = (
    "The index wants credentials, or rejected the ones sent: put them in the index URL "
    "(`--index https://user:${TOKEN}@host/simple/`) or add the host to ~/.netrc"
)

PROXY_CREDENTIALS_HINT = (
    "The proxy wants credentials, or rejected the ones sent: put them in the proxy URL "
    "(`HTTPS_PROXY=http://user:password@host:port`, percent-encoded)"
)


def status_hint(status: int, *, gone: str = "The resource does not exist on this server") -> str:
    """A hint that says how to fix a 401/403 (credentials) or a 404 (`gone`, which the caller
    words for what it asked for); "" for other statuses."""
    if status in (401, 403):
        return CREDENTIALS_HINT
    if status == 407:
        return PROXY_CREDENTIALS_HINT
    if status == 404:
        return gone
    return ""
