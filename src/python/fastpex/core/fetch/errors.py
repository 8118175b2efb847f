"""The errors of the fetch stage, each of one kind of `fastpex.core.errors`.

`FetchError` catches every one of them; the kind decides the exit status: a download that failed
is operational (1), offline with a cold store is the user's to fix (2). A download whose bytes
aren't the locked artifact raises the core's one `HashMismatchError` (see `download_mismatch`).
The errors cross from worker processes to the parent by pickle (`__reduce__` below).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Type

from fastpex.core.errors import FastpexError, HashMismatchError, OperationalError, UserError
from fastpex.core.model import Artifact
from fastpex.core.net.errors import ProxyError
from fastpex.core.util.urls import redact, strip_credentials

__all__ = ["DownloadError", "FetchError", "OfflineError", "download_mismatch", "proxy_failure"]


class FetchError(FastpexError):
    """Base of the errors `fetch` raises itself (a hash mismatch is the core's `HashMismatchError`)."""

    def __reduce__(self) -> Tuple[Callable[..., BaseException], Tuple[type, str, Dict[str, object]]]:
        """Pickled as its message and attributes: the constructors take other arguments."""
        return (_restore, (type(self), str(self), dict(self.__dict__)))


def _restore(cls: Type[BaseException], message: str, state: Dict[str, object]) -> BaseException:
    error: BaseException = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class DownloadError(FetchError, OperationalError):
    """A download failed for good: a permanent HTTP error, or transient errors past the retries."""

    def __init__(self, url: str, filename: str, reason: str, *, attempts: int = 1, hint: str = "") -> None:
        self.url = redact(url)
        self.filename = filename
        self.reason = reason
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f"Could not download `{filename}` from {self.url}{tries}: {reason}. "
            + (hint or "Check that the index is reachable, then run the fetch again: completed "
               "downloads are kept and partial ones resume")
        )


class OfflineError(FetchError, UserError):
    """`offline=True` and the store lacks artifacts that would need the network."""

    def __init__(self, missing: Sequence[Artifact]) -> None:
        self.missing = tuple(missing)
        names = ", ".join(f"`{a.filename}`" for a in self.missing)
        super().__init__(
            f"Offline mode: {len(self.missing)} artifact(s) are not in the artifact store and "
            f"would need the network: {names}. Run the same fetch once without `--offline` "
            f"(or point `--cache-dir` at a store that has them)"
        )


def download_mismatch(
    url: str,
    filename: str,
    expected: str,
    actual: str,
    *,
    expected_size: Optional[int] = None,
    actual_size: Optional[int] = None,
) -> HashMismatchError:
    """The downloaded bytes aren't the locked artifact. Not retried: it isn't transient."""
    url = redact(url)
    size_note = ""
    if expected_size is not None and actual_size is not None and expected_size != actual_size:
        size_note = f" ({actual_size} bytes where the lock says {expected_size})"
    return HashMismatchError(
        f"`{filename}` downloaded from {url} has sha256 {actual}{size_note}, but the "
        f"lock expects {expected}. The partial download was deleted and nothing was stored. "
        f"The file on the index changed since the lock was made (or something between you "
        f"and the index altered it): check the index, then regenerate the lock",
        subject=filename,
        expected=expected,
        actual=actual,
        url=url,
    )


def proxy_failure(error: ProxyError) -> Tuple[str, str]:
    """The reason and hint of a download that failed at the proxy (unreachable, or refusing the
    tunnel), naming it as `scheme://host:port` (no user name, no password) and its variable."""
    proxy = strip_credentials(error.proxy)
    if error.keeps_exit_code_when_wrapped:  # unreachable
        reason = f"could not reach the proxy `{proxy}` (from `{error.variable}`): {error.reason}"
        hint = (
            f"Check `{error.variable}` (is the proxy running, is the address right?), or add the "
            f"index's host to `NO_PROXY` to connect to it directly"
        )
    else:
        reason = f"the proxy `{proxy}` (from `{error.variable}`) refused the connection: {error.reason}"
        hint = (
            "The proxy could not (or may not) connect to the index: check that it can reach the "
            f"index and allows its port (and the credentials in `{error.variable}`), or add the "
            "host to `NO_PROXY`"
        )
    return reason, hint
