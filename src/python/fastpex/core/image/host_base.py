"""A minimal base image made from a CPython install on this machine (no Docker, no registry).

One layer holding: the interpreter (at its own path), its standard library (without `test/`,
`idlelib`, `tkinter`, `turtledemo`, `config-*`, `__pycache__` and site-packages' contents),
libpython, every shared library `ldd` lists for the interpreter and `lib-dynload/*.so`, the
dynamic loader, the directory links on the way (`/lib -> usr/lib` on merged-/usr systems) as
relative links, `/tmp`, and a minimal `/etc/passwd` and `/etc/group`. The same input files
give the same bytes: the entries are sorted, owners and times zeroed, modes fixed.

For tests and the example; production images use a real base (docs/images.md).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Set

from fastpex.core.errors import UserError
from fastpex.core.image.api import EPOCH, swap_in
from fastpex.core.image.oci import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    REF_NAME_ANNOTATION,
    Descriptor,
    OciLayout,
    Platform,
    canonical_json,
    descriptor_for_bytes,
)
from fastpex.core.image.tarball import DIRECTORY, FILE, SYMLINK, TarEntry, write_layer

_SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "__pycache__", "site-packages"}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
# Libraries manylinux wheels may assume the system provides (PEP 599/600's policy) that the
# interpreter itself may not link (numpy's extensions need libstdc++ and libpthread); the
# graphics ones (libX11, libGL, glib) are left out. Those missing on the host are skipped.
_MANYLINUX_SYSTEM_LIBRARIES = (
    "libc.so.6", "libcrypt.so.1", "libdl.so.2", "libgcc_s.so.1", "libm.so.6", "libnsl.so.1",
    "libpthread.so.0", "libresolv.so.2", "librt.so.1", "libstdc++.so.6", "libutil.so.1",
)  # fmt: skip
_INSPECT = (
    "import json, os, platform, sys, sysconfig; print(json.dumps({"
    "'executable': sys.executable, 'version': '%d.%d' % sys.version_info[:2],"
    "'implementation': sys.implementation.name, 'stdlib': sysconfig.get_paths()['stdlib'],"
    "'dynload': os.path.dirname(__import__('_struct').__file__) if hasattr(__import__('_struct'), '__file__') else '',"
    "'libdir': sysconfig.get_config_var('LIBDIR') or '', 'ldlibrary': sysconfig.get_config_var('LDLIBRARY') or '',"
    "'machine': platform.machine()}))"
)


@dataclass(frozen=True)
class HostBaseResult:
    output: Path
    manifest: Descriptor
    python: str  # the interpreter's path in the image
    files: int


class _Tree:
    """Host paths -> layer entries, following directory links the way the host does."""

    def __init__(self) -> None:
        self.entries: Dict[str, TarEntry] = {}

    def _dirs(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent not in ("/", ""):
            name = parent.lstrip("/")
            if name not in self.entries:
                self.entries[name] = TarEntry(name, DIRECTORY, 0o755)
            parent = posixpath.dirname(parent)

    def _real_prefix(self, path: str) -> str:
        """`path` with every directory link on the way recorded and replaced by its target."""
        parts = [p for p in path.split("/") if p]
        current = "/"
        for i, part in enumerate(parts):
            candidate = posixpath.join(current, part)
            if os.path.islink(candidate) and i < len(parts) - 1:
                self.add_link(candidate)
                candidate = os.path.realpath(candidate)
            current = candidate
        return current

    def add_link(self, link: str) -> None:
        target = os.readlink(link)
        name = link.lstrip("/")
        if name in self.entries:
            return
        absolute = os.path.normpath(os.path.join(os.path.dirname(link), target))
        relative = posixpath.relpath(absolute, posixpath.dirname(link))
        self._dirs(link)
        self.entries[name] = TarEntry(name, SYMLINK, 0o777, link_target=relative)
        self.add(absolute)

    def add(self, path: str) -> None:
        real = self._real_prefix(os.path.abspath(path))
        name = real.lstrip("/")
        if name in self.entries:
            return
        if os.path.islink(real):
            self.add_link(real)
            return
        if os.path.isdir(real):
            self._dirs(real)
            self.entries[name] = TarEntry(name, DIRECTORY, 0o755)
            return
        if not os.path.isfile(real):
            raise UserError(f"`{real}` is not a regular file, link or directory: it cannot go into the base image")
        self._dirs(real)
        size = os.path.getsize(real)
        mode = 0o755 if os.access(real, os.X_OK) else 0o644

        def write(sink: Callable[[bytes], None], source: str = real) -> None:
            with open(source, "rb") as fp:
                for chunk in iter(lambda: fp.read(1 << 20), b""):
                    sink(chunk)

        self.entries[name] = TarEntry(name, FILE, mode, size, write_data=write)

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._dirs(path)
        self.entries[path.lstrip("/")] = TarEntry(path.lstrip("/"), FILE, mode, len(data), write_data=lambda sink: sink(data))


def _ldd(paths: Iterable[str]) -> Set[str]:
    libraries: Set[str] = set()
    for path in paths:
        proc = subprocess.run(["ldd", path], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            match = re.search(r"=>\s*(/\S+)", line) or re.match(r"^\s*(/\S+)\s+\(", line)
            if match:
                libraries.add(match.group(1))
    return libraries


def _manylinux_system_libraries(linked: Set[str]) -> Set[str]:
    """The policy libraries found beside the interpreter's libc (the same multiarch directory)."""
    directories = sorted({os.path.dirname(p) for p in linked if os.path.basename(p).startswith("libc.so")})
    found: Set[str] = set()
    for name in _MANYLINUX_SYSTEM_LIBRARIES:
        for directory in directories:
            if os.path.exists(os.path.join(directory, name)):
                found.add(os.path.join(directory, name))
                break
    return found | _ldd(found) if found else found


def _stdlib_files(stdlib: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        relative = os.path.relpath(dirpath, stdlib)
        if relative == ".":
            dirnames[:] = [d for d in dirnames if d not in _SKIP_STDLIB and not d.startswith("config-")]
        else:
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        dirnames.sort()
        for filename in sorted(filenames):
            if relative == "lib-dynload" and filename.startswith("_tkinter"):
                continue
            found.append(os.path.join(dirpath, filename))
    return found


def inspect_python(python: str) -> Dict[str, str]:
    try:
        out = subprocess.run([python, "-I", "-c", _INSPECT], capture_output=True, text=True, check=True, timeout=60).stdout
        return dict(json.loads(out))
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise UserError(f"Cannot run the Python interpreter `{python}`: {e}") from None


def build_host_base(python: str, output: Path, tag: str = "base", compress_level: int = 6) -> HostBaseResult:
    """Write an OCI layout at `output` holding a base image with `python` and what it needs."""
    info = inspect_python(python)
    if info["implementation"] != "cpython":
        raise UserError(f"`{python}` is {info['implementation']}; the base image is made from a CPython install")
    machine = info["machine"]
    if machine not in _ARCH:
        raise UserError(f"`{python}` runs on {machine}; a base image is made for {', '.join(_ARCH)}")
    interpreter = os.path.abspath(python)
    tree = _Tree()
    tree.add(interpreter)
    stdlib = info["stdlib"]
    files = _stdlib_files(stdlib)
    for path in files:
        tree.add(path)
    tree.add(os.path.join(stdlib, "site-packages"))
    shared = [p for p in files if p.endswith(".so")]
    libpython = os.path.join(info["libdir"], info["ldlibrary"]) if info["ldlibrary"].endswith(".so") or ".so." in info["ldlibrary"] else ""
    if libpython and os.path.exists(libpython):
        tree.add(libpython)
    linked = _ldd([interpreter, *shared])
    for library in sorted(linked | _manylinux_system_libraries(linked)):
        tree.add(library)
    tree.entries["tmp"] = TarEntry("tmp", DIRECTORY, 0o1777)
    tree.entries["root"] = TarEntry("root", DIRECTORY, 0o700)
    tree.add_bytes("/etc/passwd", _PASSWD)
    tree.add_bytes("/etc/group", _GROUP)
    entries = [tree.entries[k] for k in sorted(tree.entries)]

    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".building", dir=output.parent))
    try:
        descriptor = _write_layout(OciLayout(staging), entries, info, interpreter, machine, tag, compress_level)
        swap_in(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return HostBaseResult(output=output, manifest=descriptor, python=interpreter, files=len(entries))


def _write_layout(
    layout: OciLayout, entries: List[TarEntry], info: Dict[str, str], interpreter: str, machine: str, tag: str, compress_level: int
) -> Descriptor:
    buffer = io.BytesIO()
    digests = write_layer(entries, buffer, compress_level)
    layout.add_blob_bytes(buffer.getvalue(), expected_digest=digests.digest)
    home = os.path.dirname(interpreter)
    config = canonical_json({
        "architecture": _ARCH[machine],
        "os": "linux",
        "created": EPOCH,
        "config": {
            "Env": [f"PATH={home}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": [interpreter],
        },
        "rootfs": {"type": "layers", "diff_ids": [digests.diff_id]},
        "history": [{"created": EPOCH, "created_by": f"fastpex image-base: CPython {info['version']} from {interpreter}"}],
    })
    layout.add_blob_bytes(config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": descriptor_for_bytes(MEDIA_TYPE_CONFIG, config).to_json(),
        "layers": [Descriptor(MEDIA_TYPE_LAYER_GZIP, digests.digest, digests.size).to_json()],
    })
    layout.add_blob_bytes(manifest)
    platform = Platform("linux", _ARCH[machine])
    descriptor = descriptor_for_bytes(MEDIA_TYPE_MANIFEST, manifest, annotations={REF_NAME_ANNOTATION: tag}, platform=platform)
    layout.write_index([descriptor])
    return descriptor
