"""The resolve's errors: all of them the user's to fix (exit status 2), each naming the target."""

from __future__ import annotations

from typing import Optional

from fastpex.core.errors import UserError

__all__ = ["IndexUnreachableResolveError", "InvalidRequirementError", "PipError", "ResolveError"]


class ResolveError(UserError):
    """Resolution failed for a target; the message names it and quotes pip (redacted)."""

    def __init__(self, message: str, *, target: Optional[str] = None, pip_output: str = "") -> None:
        self.target = target
        self.pip_output = pip_output
        super().__init__(message)


class InvalidRequirementError(ResolveError):
    """A requirement string is not PEP 508; raised before pip runs."""


class IndexUnreachableResolveError(ResolveError):
    """pip found nothing because an index could not be reached (not because nothing matched)."""


class PipError(ResolveError):
    """pip itself could not be found, installed or run."""

