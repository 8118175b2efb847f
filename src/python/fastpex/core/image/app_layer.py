"""The image's own small layers: the venv layer and the application layer.

- The **venv layer** (annotated `io.fastpex.layer: venv`) holds `<prefix>/venv/pyvenv.cfg`
  (`home` = the base's interpreter directory) and `bin/python`, `bin/python3`,
  `bin/pythonX.Y`: relative links that resolve to the base's interpreter inside the image's
  root filesystem. It depends only on the base's Python and the prefix.
- The **application layer** (last) holds the sources under `<prefix>/src` with their byte code,
  a `.pth` in site-packages that puts `<prefix>/src` on `sys.path`, and, for `--entry-point`, the
  script `<prefix>/entrypoint` that calls it.
"""

from __future__ import annotations

import io
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fastpex.core.errors import UserError
from fastpex.core.image.base import BasePython
from fastpex.core.image.bytecode import Compiler
from fastpex.core.image.install import VenvScheme, console_script
from fastpex.core.image.tarball import DIRECTORY, FILE, SYMLINK, LayerDigests, TarEntry, write_layer

APP_PTH = "fastpex-app.pth"


@dataclass(frozen=True)
class BuiltBlob:
    """A small layer built in memory."""

    data: bytes
    digests: LayerDigests


def _with_parents(entries: List[TarEntry]) -> List[TarEntry]:
    paths = {e.path for e in entries}
    extra = []
    for entry in list(entries):
        parent = posixpath.dirname(entry.path)
        while parent and parent not in paths:
            paths.add(parent)
            extra.append(TarEntry(parent, DIRECTORY, 0o755))
            parent = posixpath.dirname(parent)
    return sorted(entries + extra, key=lambda e: e.path)


def _file(path: str, data: bytes, mode: int = 0o644) -> TarEntry:
    return TarEntry(path.lstrip("/"), FILE, mode, len(data), write_data=lambda sink: sink(data))


def _compress(entries: List[TarEntry], level: int) -> BuiltBlob:
    out = io.BytesIO()
    digests = write_layer(_with_parents(entries), out, level)
    return BuiltBlob(out.getvalue(), digests)


def venv_layer(scheme: VenvScheme, python: BasePython, level: int) -> BuiltBlob:
    home = posixpath.dirname(python.interpreter)
    cfg = f"home = {home}\ninclude-system-site-packages = false\nversion = {python.version}\nexecutable = {python.interpreter}\n"
    link_to_base = posixpath.relpath(python.interpreter, scheme.bin)
    name = posixpath.basename(scheme.python)
    entries = [
        _file(posixpath.join(scheme.venv, "pyvenv.cfg"), cfg.encode()),
        TarEntry(scheme.python.lstrip("/"), SYMLINK, 0o777, link_target=link_to_base),
        TarEntry(posixpath.join(scheme.bin, "python").lstrip("/"), SYMLINK, 0o777, link_target=name),
        TarEntry(posixpath.join(scheme.bin, "python3").lstrip("/"), SYMLINK, 0o777, link_target=name),
        TarEntry(posixpath.join(scheme.site_packages).lstrip("/"), DIRECTORY, 0o755),
    ]
    return _compress(entries, level)


def _source_files(sources: Path) -> List[Tuple[str, Path]]:
    """(relative posix path, file) for every file under `sources`; links must stay inside."""
    root = sources.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(sources):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if filename.endswith(".pyc"):
                continue
            resolved = path.resolve()
            if resolved != root and root not in resolved.parents:
                raise UserError(f"The source `{path}` is a link to `{resolved}`, outside the sources {sources}: refused")
            if not resolved.is_file():
                continue
            found.append((path.relative_to(sources).as_posix(), resolved))
    return found


def entry_point_script(scheme: VenvScheme, entry_point: str) -> bytes:
    return console_script(scheme.shebang, entry_point)


def app_layer(
    scheme: VenvScheme,
    sources: Optional[Path],
    entry_point: Optional[str],
    compiler: Compiler,
    level: int,
) -> Tuple[BuiltBlob, Dict[str, str]]:
    """The application layer, and the paths it installs (image path -> kind) for checks."""
    src_root = posixpath.join(scheme.prefix, "src")
    entries: List[TarEntry] = []
    files: Dict[str, str] = {}
    if sources is not None:
        if not sources.is_dir():
            raise UserError(f"The sources directory {sources} does not exist")
        listed = _source_files(sources)
        to_compile = [(str(p), posixpath.join(src_root, rel)) for rel, p in listed if rel.endswith(".py")]
        compiled = compiler.compile_members(None, to_compile)
        for rel, path in listed:
            data = path.read_bytes()
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            entries.append(_file(posixpath.join(src_root, rel), data, mode))
            files[posixpath.join(src_root, rel)] = "f"
        for i, (_, dest) in enumerate(to_compile):
            pyc = compiled.get(i)
            if pyc is not None:
                target = posixpath.join(
                    posixpath.dirname(dest), "__pycache__", posixpath.basename(dest)[:-3] + f".{scheme.cache_tag}.pyc"
                )
                entries.append(_file(target, pyc))
        entries.append(_file(posixpath.join(scheme.site_packages, APP_PTH), (src_root + "\n").encode()))
    if entry_point:
        entries.append(_file(posixpath.join(scheme.prefix, "entrypoint"), entry_point_script(scheme, entry_point), 0o755))
    if not entries:
        entries.append(TarEntry(scheme.prefix.lstrip("/"), DIRECTORY, 0o755))
    return _compress(entries, level), files
