"""The pack stage's errors, on the core's one hierarchy (`fastpex.core.errors`).

Everything here is a `UserError` (exit 2): the wheels, sources and options a PEX is built from
are the caller's input, and `pack`/`build` have always refused bad ones with status 2. A wheel
whose bytes don't match its sha256 raises the core's `HashMismatchError` from `layers`; the
`pack` API wraps it in `WheelHashMismatchError`, because there the sha256 is the caller's claim.
"""

from __future__ import annotations

from typing import Optional, Tuple

from fastpex.core.errors import HashMismatchError, UserError

__all__ = [
    "CorruptWheelError",
    "DuplicateEntryError",
    "FragmentError",
    "InvalidSourceError",
    "LayerError",
    "PexBuildError",
    "ScriptNotFoundError",
    "UnsafeWheelError",
    "WheelHashMismatchError",
    "WheelNotFoundError",
    "Zip64RequiredError",
]


class FragmentError(UserError):
    """A fragment is malformed or cannot be assembled as requested."""


class DuplicateEntryError(FragmentError):
    """Two entries of one zip would have the same name (zip readers would silently pick one)."""

    def __init__(self, name: str, first: str, second: str) -> None:
        super().__init__(
            f"Duplicate zip entry {name!r}: it is provided by both {first} and {second}."
        )
        self.name = name
        self.first = first
        self.second = second

    def __reduce__(self) -> Tuple[type, Tuple[str, str, str]]:  # picklable across process pools
        return (type(self), (self.name, self.first, self.second))


class LayerError(UserError):
    """A wheel could not be turned into a layer; names the wheel (and member when relevant)."""

    def __init__(self, message: str, wheel: str, member: Optional[str] = None) -> None:
        super().__init__(message, wheel, member)
        self.message = message
        self.wheel = wheel
        self.member = member

    def __str__(self) -> str:
        return self.message


class CorruptWheelError(LayerError):
    """The wheel is not a readable zip / not a valid wheel."""


class UnsafeWheelError(LayerError):
    """A wheel member would be written outside the install dir (or is ambiguous)."""


class WheelNotFoundError(LayerError):
    """A wheel to pack is not a file."""


class WheelHashMismatchError(LayerError):
    """A wheel's bytes don't match the sha256 the caller gave for it: the caller's input is wrong
    (or points at the wrong file), so unlike a corrupt download this is a user error."""

    def __init__(self, mismatch: HashMismatchError) -> None:
        super().__init__(str(mismatch), wheel=mismatch.subject)
        self.mismatch = mismatch

    def __reduce__(self) -> Tuple[type, Tuple[HashMismatchError]]:  # picklable like its cause
        return (type(self), (self.mismatch,))


class PexBuildError(UserError):
    """A PEX cannot be built from the given inputs (a user error; the message says why)."""


class Zip64RequiredError(PexBuildError):
    """The zipapp needs ZIP64, which `zipimport` only reads from Python 3.13 on."""


class InvalidSourceError(PexBuildError):
    """A source path is unusable (escapes the PEX root or collides with PEX internals)."""


class ScriptNotFoundError(PexBuildError):
    """`script` names no console script / script of any dependency (or is ambiguous)."""
