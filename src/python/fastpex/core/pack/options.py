"""What a PEX is built as: `PexOptions`, and the names of the PEX format the pack modules share.

One frozen value replaces the keyword arguments `build_pex` and `render_pex_metadata` used to
repeat; the CLIs and `build` turn their flags into it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

__all__ = ["DEFAULT_SHEBANG", "DEPS_INSTALLS", "LAYOUTS", "PARTS", "PexOptions", "Sources"]

PathLike = Union[str, "os.PathLike[str]"]
# A sources directory, or `relpath -> bytes`, or no sources.
Sources = Union[PathLike, Mapping[str, bytes], None]

DEFAULT_SHEBANG = "#!/usr/bin/env python3"
LAYOUTS = ("zipapp", "packed", "split")
# A directory layout can be built in two halves that never share a file: `deps` (bootstrap and
# dependency zips: a function of the lock, the same after a source change) and `app` (PEX-INFO,
# __main__.py and the sources). Two Pants processes then cache them apart, so a source-only
# rebuild neither re-runs nor re-captures gigabytes of unchanged dependencies. Merged, the two
# halves are byte for byte the `all` build.
PARTS = ("all", "deps", "app")
# How the dependencies are stored: `preinstalled` (pex's default: each wheel's installed chroot,
# which the runtime extracts on first start) or `wheels` (pex's `--no-pre-install-wheels`: the
# wheel files, which the runtime installs on first start over `max_install_jobs` processes).
DEPS_INSTALLS = ("preinstalled", "wheels")

# The top-level names of a PEX (pex's `PEXBuilder` layout).
BOOTSTRAP_DIR = ".bootstrap"
DEPS_DIR = ".deps"
PEX_INFO = "PEX-INFO"
MAIN = "__main__.py"
IMPORT_HOOK = "__pex__/__init__.py"
RESERVED_TOP_LEVEL = (BOOTSTRAP_DIR, DEPS_DIR, "__pex__", PEX_INFO, MAIN, "PEX-LAYOUT")


@dataclass(frozen=True)
class PexOptions:
    """Everything about a PEX except its dependencies and where it is written.

    `requirements` are what the runtime activates; None means every layer, pinned
    (`name==version`, what `PEXBuilder.add_dist_location` records); a multi-platform PEX needs
    the top-level requirements so markers pick each platform's wheels. `venv=True` makes the PEX
    install itself into a venv on first run (pex `--venv`) and, like pex, implies
    `include_tools`. `part` builds one half of a directory layout (see `PARTS`).
    `deps_install` is how the dependencies are stored (see `DEPS_INSTALLS`); `max_install_jobs`
    is pex's PEX-INFO setting of the same name (1: serial, N: N processes, 0: one per core,
    -1: pex's heuristic), which the runtime uses for either storage; None picks
    `install_jobs`' default (0).
    """

    sources: Sources = None
    layout: str = "zipapp"
    entry_point: Optional[str] = None
    script: Optional[str] = None
    interpreter_constraints: Sequence[str] = ()
    inject_env: Mapping[str, str] = field(default_factory=dict)
    inject_args: Sequence[str] = ()
    inject_python_args: Sequence[str] = ()
    inherit_path: str = "false"
    venv: bool = False
    venv_bin_path: str = "false"
    strip_pex_env: bool = True
    include_tools: bool = False
    requirements: Optional[Sequence[str]] = None
    max_install_jobs: Optional[int] = None
    deps_install: str = "preinstalled"
    shebang: str = DEFAULT_SHEBANG
    compress_level: int = 6
    part: str = "all"

    @property
    def install_jobs(self) -> int:
        """PEX-INFO's `max_install_jobs`: as given, else one job per core (0) for either storage.

        pex's own default is 1 (serial). Measured on the torch + transformers app (2 cores, empty
        PEX_ROOT, docs/benchmarks.md "First start"): the pre-installed packed PEX started in
        63.8 s serially and 38.9 s with 0; the first start of a small app is no slower."""
        if self.max_install_jobs is not None:
            return self.max_install_jobs
        return 0

    @property
    def bootstrap_includes_tools(self) -> bool:
        """Whether `.bootstrap/` must carry the PEX_TOOLS commands (pex's `--venv` needs them)."""
        return self.include_tools or self.venv


def normalized_shebang(shebang: str) -> str:
    """`shebang` with its `#!` (pex accepts the interpreter path alone)."""
    return shebang if shebang.startswith("#!") else "#!" + shebang

