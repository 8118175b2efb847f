"""The lock on disk: pex's lock JSON behind Pants' `//` header, and a PEP 751 export.

The public surface; `codec` (JSON <-> `Lock`), `header` (what Pants validates), `pylock`
(pylock.toml) and `subset` (a lock cut down to some requirements) are its modules.
"""

from fastpex.core.lockfile.codec import LockfileError, canonical_lock, dumps_lock, load_lock, loads_lock, write_lock
from fastpex.core.lockfile.header import PantsHeader, pants_interpreter_constraint, pants_requirement, strip_header
from fastpex.core.lockfile.pylock import export_pylock_toml, pylock_toml

__all__ = [
    "LockfileError",
    "PantsHeader",
    "canonical_lock",
    "dumps_lock",
    "export_pylock_toml",
    "load_lock",
    "loads_lock",
    "pants_interpreter_constraint",
    "pants_requirement",
    "pylock_toml",
    "strip_header",
    "write_lock",
]
