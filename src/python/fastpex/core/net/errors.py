"""The HTTP client's errors: operational failures (exit 1); messages name only redacted URLs."""

from __future__ import annotations

from fastpex.core.errors import OperationalError
from fastpex.core.net.hints import status_hint
from fastpex.core.util.urls import redact

__all__ = [
    "HttpConnectionError",
    "HttpError",
    "HttpStatusError",
    "ResponseTooLargeError",
    "TooManyRedirectsError",
]


class HttpError(OperationalError):
    """Base of every error this module raises; messages name only redacted URLs."""


class HttpConnectionError(HttpError):
    """The server could not be reached (after retries), or the connection broke."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(
            f"could not reach `{self.url}`: {reason}. Check the URL, your network, and proxy "
            f"settings; the request was retried before giving up"
        )


class HttpStatusError(HttpError):
    """The server answered with an unexpected HTTP status."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.url = redact(url)
        self.status = status
        hint = status_hint(status)
        super().__init__(f"`{self.url}` answered HTTP {status} {reason}".rstrip() + (f". {hint}" if hint else ""))


class ResponseTooLargeError(HttpError):
    """A document exceeded its size cap (a misbehaving or hostile server)."""

    def __init__(self, url: str, limit: int) -> None:
        self.url = redact(url)
        self.limit = limit
        super().__init__(
            f"`{self.url}` sent more than {limit} bytes for a document that should be small; "
            f"refusing to read further. If the server is right, raise the limit "
            f"(`HttpConfig.max_document_bytes`)"
        )


class TooManyRedirectsError(HttpError):
    def __init__(self, url: str, limit: int) -> None:
        self.url = redact(url)
        super().__init__(
            f"`{self.url}` redirected more than {limit} times; the server is misconfigured or "
            f"redirects in a loop"
        )


