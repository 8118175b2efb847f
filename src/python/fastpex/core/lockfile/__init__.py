"""The lock on disk: pex's lock JSON behind Pants' `//` header, and a PEP 751 export.

The public surface; `codec` (JSON <-> `Lock`), `header` (what Pants validates), `pylock`
(pylock.toml) and `subset` (a lock cut down to some requirements) are its modules.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastpex.core.lockfile.codec import LockfileError, canonical_lock, dumps_lock, load_lock, loads_lock, write_lock
    from fastpex.core.lockfile.header import PantsHeader, pants_interpreter_constraint, pants_requirement, strip_header
    from fastpex.core.lockfile.pylock import export_pylock_toml, pylock_toml

# Loaded on first use (PEP 562): the header alone, which deciding "the lock is unchanged" needs,
# must not pay for the codec and pylock modules.
_MODULE_OF = {
    "LockfileError": "fastpex.core.lockfile.codec",
    "canonical_lock": "fastpex.core.lockfile.codec",
    "dumps_lock": "fastpex.core.lockfile.codec",
    "load_lock": "fastpex.core.lockfile.codec",
    "loads_lock": "fastpex.core.lockfile.codec",
    "write_lock": "fastpex.core.lockfile.codec",
    "PantsHeader": "fastpex.core.lockfile.header",
    "pants_interpreter_constraint": "fastpex.core.lockfile.header",
    "pants_requirement": "fastpex.core.lockfile.header",
    "strip_header": "fastpex.core.lockfile.header",
    "export_pylock_toml": "fastpex.core.lockfile.pylock",
    "pylock_toml": "fastpex.core.lockfile.pylock",
}


def __getattr__(name: str) -> Any:
    import importlib

    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
