"""What the pex installed beside the core provides: its version decides the bytes of every
layer and bootstrap (pex's installer and runtime produce them), so it is part of their cache keys.
"""

from __future__ import annotations

__all__ = ["pex_version", "script_dir"]


def pex_version() -> str:
    """The version of the importable `pex` (not the pinned one in `fastpex.versions`)."""
    from pex.version import __version__

    return __version__


def script_dir() -> str:
    """Where pex's wheel installer stashes a wheel's scripts inside an installed chroot."""
    from pex.sysconfig import SCRIPT_DIR

    return SCRIPT_DIR
