"""The HTTP client's errors: operational failures (exit 1); messages name only redacted URLs."""

from __future__ import annotations

from typing import Tuple

from fastpex.core.errors import OperationalError
from fastpex.core.net.hints import status_hint
from fastpex.core.util.urls import redact

__all__ = [
    "HttpConnectionError",
    "HttpError",
    "HttpStatusError",
    "ProxyError",
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
            f"settings (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`); the request was retried before giving up"
        )


class ProxyError(HttpConnectionError):
    """The proxy a request goes through could not be reached, or refused the request.

    `proxy` and `variable` name it (redacted) and the environment variable it came from."""

    def __init__(
        self,
        url: str,
        proxy: str,
        variable: str,
        reason: str,
        *,
        unreachable: bool,
        status: int = 0,
        secrets: Tuple[str, ...] = (),
    ) -> None:
        self.url = redact(url)
        self.proxy = redact(proxy)
        self.variable = variable
        self.status = status
        for secret in secrets:  # belt and braces: a reason never echoes the proxy's password
            if secret:
                reason = reason.replace(secret, "***")
        self.reason = reason
        # The proxy is down or misaddressed: the world failed, whatever layer reports it (an index
        # that "could not be used" is otherwise the user's to fix).
        self.keeps_exit_code_when_wrapped = unreachable
        if status in (401, 407):  # 407; tinyproxy, for one, answers 401
            hint = (
                f"The proxy wants credentials, or rejected the ones sent: put them in `{variable}` "
                f"(`http://user:password@host:port`, percent-encoded)"
            )
        elif unreachable:
            hint = (
                f"Check `{variable}` (is the proxy running, is the address right?), or add the "
                f"index's host to `NO_PROXY` to connect to it directly; the request was retried "
                f"before giving up"
            )
        else:
            hint = (
                "The proxy could not (or may not) connect to the index: check that it can reach "
                "the index and allows its port, or add the host to `NO_PROXY`"
            )
        what = "could not reach the proxy" if unreachable else "the proxy"
        verb = "for" if unreachable else "refused"
        OperationalError.__init__(
            self, f"{what} `{self.proxy}` (from `{variable}`) {verb} `{self.url}`: {reason}. {hint}"
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


