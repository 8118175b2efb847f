"""The PEX runtime, `.bootstrap/`: generated once per pex version by pex's own `PEXBuilder` and
cached as a zip fragment (for zipapps) plus a standalone zip (for the packed layouts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from fastpex.core.pack.assembler import fragment_to_zip
from fastpex.core.pack.fragment import SourceEntry, write_fragment
from fastpex.core.pack.installed_pex import pex_version
from fastpex.core.pack.options import BOOTSTRAP_DIR, DEFAULT_SHEBANG
from fastpex.core.util.cache import CacheKind, atomic_directory, cache_dir

__all__ = ["Bootstrap", "ensure_bootstrap"]

PathLike = Union[str, "os.PathLike[str]"]

# Bump when the bootstrap fragment's bytes change for the same pex version.
BOOTSTRAP_LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Bootstrap:
    """The cached `.bootstrap/` of one pex version (with or without the PEX_TOOLS commands)."""

    directory: str
    bootstrap_hash: str
    includes_tools: bool
    pex_version: str

    @property
    def fragment_path(self) -> str:
        return os.path.join(self.directory, "bootstrap.frag")

    @property
    def packed_path(self) -> str:
        return os.path.join(self.directory, "bootstrap.zip")


class _NoInterpreter(object):
    """Stands in for `PythonInterpreter` so `PEXBuilder` does not probe (and cache into PEX_ROOT)
    the current interpreter: bootstrap generation only needs a shebang, which we discard."""

    class identity(object):  # noqa: N801 - mirrors PythonInterpreter.identity
        @staticmethod
        def hashbang() -> str:
            return DEFAULT_SHEBANG


def _walk_entries(root: str, prefix: str, include_root_dir: bool) -> List[SourceEntry]:
    """Files under `root` (no bytecode) named `prefix/<rel>`, plus their parent dir entries."""
    from pex.common import is_pyc_file

    files: List[SourceEntry] = []
    dirs = {prefix + "/"} if include_root_dir else set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel_root = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for filename in sorted(filenames):
            if is_pyc_file(filename):
                continue
            rel = filename if rel_root == "." else f"{rel_root}/{filename}"
            parts = rel.split("/")
            for i in range(1, len(parts)):
                dirs.add(f"{prefix}/{'/'.join(parts[:i])}/")
            path = os.path.join(dirpath, filename)
            files.append(
                SourceEntry(
                    name=f"{prefix}/{rel}",
                    path=path,
                    executable=bool(os.stat(path).st_mode & stat.S_IXUSR),
                )
            )
    return [SourceEntry(name=d) for d in sorted(dirs)] + files


def ensure_bootstrap(
    *,
    includes_tools: bool = False,
    compress_level: int = 6,
    cache_root: Optional[PathLike] = None,
) -> Bootstrap:
    """The cached bootstrap for the installed pex version, generated with pex's `PEXBuilder`."""
    version = pex_version()
    material = json.dumps(
        {
            "compress_level": compress_level,
            "includes_tools": includes_tools,
            "layout_version": BOOTSTRAP_LAYOUT_VERSION,
            "pex_version": version,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(material.encode("utf-8")).hexdigest()
    root = cache_dir(CacheKind.BOOTSTRAP, Path(cache_root) if cache_root is not None else None)
    final = root / key

    def produce(out: Path) -> None:
        from pex.pex_builder import PEXBuilder

        os.chmod(out, 0o755)  # the atomic work dir is created private
        scratch = tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root)
        try:
            chroot = os.path.join(scratch, "chroot")
            builder = PEXBuilder(path=chroot, interpreter=_NoInterpreter())
            builder.info.includes_tools = includes_tools
            builder.freeze(bytecode_compile=False)
            entries = _walk_entries(
                os.path.join(chroot, BOOTSTRAP_DIR), BOOTSTRAP_DIR, include_root_dir=True
            )
            frag = os.path.join(out, "bootstrap.frag")
            write_fragment(entries, frag, compress_level)
            fragment_to_zip(frag, os.path.join(out, "bootstrap.zip"), strip_prefix=BOOTSTRAP_DIR + "/")
            data = {
                "bootstrap_hash": builder.info.bootstrap_hash,
                "includes_tools": includes_tools,
                "pex_version": version,
            }
            with open(os.path.join(out, "manifest.json"), "w") as fp:
                json.dump(data, fp, sort_keys=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    atomic_directory(final, produce)
    with open(final / "manifest.json") as fp:
        data = json.load(fp)
    return Bootstrap(
        directory=str(final),
        bootstrap_hash=data["bootstrap_hash"],
        includes_tools=data["includes_tools"],
        pex_version=data["pex_version"],
    )
