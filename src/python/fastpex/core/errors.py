"""One error hierarchy for the whole core.

Every error a stage raises on purpose derives from `FastpexError`, and from exactly one of its
two kinds, which decide the CLI's exit status:

- `UserError` (exit 2): the input is wrong and the user can fix it: a bad flag, requirement,
  platform, lockfile, wheel or index URL, an unsatisfiable resolve, offline with a cold store.
- `OperationalError` (exit 1): the input was fine but the world failed: a server error, a
  dropped connection, a full disk, an artifact whose bytes don't match the lock.

The CLI formats both the same way (`fastpex <cmd>: error: ...`, `cli/run.py`), so a stage never
prints its own errors, and exits with `exit_code_of(error)`. This module imports nothing else of
the core.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple


class FastpexError(Exception):
    """Base of every error the core raises on purpose."""

    exit_code = 1


class UserError(FastpexError):
    """Something the user can fix in what they asked for; exit status 2."""

    exit_code = 2


class OperationalError(FastpexError):
    """The request was fine but a server, the network or the disk failed; exit status 1.

    `keeps_exit_code_when_wrapped` marks a failure no layer above can blame on the input (an
    unreachable proxy): a wrapper that reports it as a `UserError` (an index that "could not be
    used") still exits 1, see `exit_code_of`.
    """

    exit_code = 1
    keeps_exit_code_when_wrapped = False


def error_chain(error: BaseException, *, implicit: bool = False) -> Iterator[BaseException]:
    """`error`, then what it was raised from (`raise ... from`), each once (a cycle ends it).
    With `implicit`, also what it was raised while handling, unless `from None` hid that."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        following = current.__cause__
        if following is None and implicit and not current.__suppress_context__:
            following = current.__context__
        current = following


def exit_code_of(error: FastpexError) -> int:
    """`error`'s exit status: its own, unless it was raised from (`raise ... from`, at any depth)
    an `OperationalError` that keeps its exit code when wrapped."""
    for cause in error_chain(error):
        if isinstance(cause, OperationalError) and cause.keeps_exit_code_when_wrapped:
            return cause.exit_code
    return error.exit_code


class UsageError(UserError):
    """A command-line mistake: a missing, malformed or contradictory flag."""


class HashMismatchError(OperationalError):
    """Bytes whose sha256 is not the one they must have (a download, a stored or given artifact).

    The one type for every hash refusal, so callers catch one thing; `subject` names what was
    checked (a filename or URL, never with credentials), `url` where the bytes came from
    (redacted) when they were downloaded.
    """

    def __init__(
        self,
        message: str,
        *,
        subject: str = "",
        expected: str = "",
        actual: Optional[str] = None,
        url: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.subject = subject
        self.expected = expected
        self.actual = actual
        self.url = url

    def __reduce__(self) -> Tuple[Callable[..., "HashMismatchError"], Tuple[str, str, str, Optional[str], Optional[str]]]:
        """Pickled across fetch worker processes; the constructor takes keywords."""
        return (_rebuild_hash_mismatch, (str(self), self.subject, self.expected, self.actual, self.url))


def _rebuild_hash_mismatch(
    message: str, subject: str, expected: str, actual: Optional[str], url: Optional[str] = None
) -> HashMismatchError:
    return HashMismatchError(message, subject=subject, expected=expected, actual=actual, url=url)
