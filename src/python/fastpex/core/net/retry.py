"""When to try a request again: exponential backoff with jitter, capped, and `Retry-After`.

One policy for every caller that retries (the HTTP client for pages and metadata, the fetch
downloader for artifacts), as uv's `retry` module serves all of its clients.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Tuple

from fastpex.core.errors import error_chain

__all__ = [
    "REFUSED_PROXY_RETRIES",
    "RETRY_STATUSES",
    "TRANSIENT_STATUSES",
    "Backoff",
    "connection_refused",
    "parse_retry_after",
]

# What `HttpClient` retries by itself (pages, metadata): the server is busy or rate-limiting.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# What the fetch downloader retries, resuming where it can: also a request timeout (408) and
# "too early" (425); any other 5xx counts as well.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# A proxy that refuses connections (nothing listens at its address) fails every request of a
# run alike: a run retries that cause this many times in all, not per request. (A proxy that
# times out may be overloaded, not gone: that keeps the normal retries.)
REFUSED_PROXY_RETRIES = 1


def connection_refused(error: BaseException) -> bool:
    """Whether `error` was caused by a refused TCP connection (ECONNREFUSED), looking through
    its chain of causes: the proxy's `OSError` sits a layer or two down."""
    return any(isinstance(cause, ConnectionRefusedError) for cause in error_chain(error, implicit=True))


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a `Retry-After` header given in seconds; None when absent or not a finite,
    non-negative number (an HTTP-date counts as absent: the backoff alone then decides)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (0 = the first retry): `initial * 2**attempt` capped at
    `maximum`, times a random factor in `jitter` (clients that failed together must not retry
    in lockstep). A server's `Retry-After` is a floor, itself capped at `maximum`: a hostile
    server can't park a client for an hour."""

    initial: float
    maximum: float
    jitter: Tuple[float, float] = (0.5, 1.5)

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        low, high = self.jitter
        delay = min(self.maximum, self.initial * (2**attempt)) * random.uniform(low, high)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.maximum))
        return delay
