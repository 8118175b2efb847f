"""fastpex: a Pants backend that locks, fetches and packs large Python dependency sets fast.

List `fastpex.pants` before `pants.backend.python` in `[GLOBAL].backend_packages`.
"""

from fastpex.pants import lockfiles, subsystem, tool


def rules():
    # The lockfile rules come first: fastpex must see `--resolve=NAME` before the python backend.
    return [*lockfiles.rules(), *subsystem.rules(), *tool.rules()]


def target_types():
    return []
