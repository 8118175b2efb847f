"""Deterministic factory for valid wheels and sdists used by fastpex tests.

Tests need real distributions (installable by pip, parseable by pex) with
controllable metadata, tags and sizes, without touching the network or running
a build backend. Every artifact is byte-for-byte reproducible from its inputs so
tests can assert on hashes.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import random
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = [
    "GENERATOR",
    "WheelFactory",
    "WheelSpec",
    "build_sdist",
    "build_sdist_with_inline_backend",
    "build_wheel",
    "build_wheels",
    "escape_name",
    "record_digest",
    "sdist_filename",
    "sha256_file",
    "wheel_filename",
    "wheel_metadata_bytes",
]

GENERATOR = "fastpex.testing.wheels (1.0)"
# The earliest timestamp a zip entry can carry; fixed so bytes are reproducible.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_EXTRA_MARKER_RE = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")

EntryPoints = Mapping[str, Mapping[str, str]]


def escape_name(name: str) -> str:
    """Filename form of a project name (PEP 427/625): canonical, `-` → `_`."""
    return canonicalize_name(name).replace("-", "_")


def _escape_version(version: str) -> str:
    return str(Version(version)).replace("-", "_")


def wheel_filename(name: str, version: str, tag: str = "py3-none-any", build: Optional[str] = None) -> str:
    """The normalized wheel filename the factory produces for these inputs."""
    parts = [escape_name(name), _escape_version(version)]
    if build:
        parts.append(build)
    parts.append(tag)
    return "-".join(parts) + ".whl"


def sdist_filename(name: str, version: str) -> str:
    """The PEP 625 sdist filename the factory produces for these inputs."""
    return f"{escape_name(name)}-{_escape_version(version)}.tar.gz"


def record_digest(data: bytes) -> str:
    """RECORD-style hash: `sha256=` + urlsafe base64 without padding (PEP 376/427)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so big padded wheels stay cheap."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_metadata_bytes(path: Path) -> bytes:
    """The raw `<name>-<ver>.dist-info/METADATA` member (what PEP 658 serves)."""
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            parts = member.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                return zf.read(member)
    raise ValueError(f"{path} has no top-level *.dist-info/METADATA")


def _expand_extras(requires_dist: Sequence[str], extras_map: Optional[Mapping[str, Sequence[str]]]) -> List[str]:
    """Requires-Dist lines, with `extras_map` entries gated on `extra == "<name>"`."""
    lines = [str(Requirement(r)) for r in requires_dist]
    for extra, reqs in sorted((extras_map or {}).items()):
        extra_name = canonicalize_name(extra)
        for raw in reqs:
            req = Requirement(raw)
            guard = f'extra == "{extra_name}"'
            marker = f"({req.marker}) and {guard}" if req.marker else guard
            req.marker = None
            lines.append(f"{req}; {marker}")
    return lines


def _provided_extras(requirement_lines: Sequence[str]) -> List[str]:
    """Extras named in requirement markers, so Provides-Extra stays consistent."""
    found = {canonicalize_name(m) for line in requirement_lines for m in _EXTRA_MARKER_RE.findall(line)}
    return sorted(found)


def _core_metadata(
    name: str,
    version: str,
    requires_dist: Sequence[str],
    requires_python: Optional[str],
    summary: Optional[str],
) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if summary:
        lines.append(f"Summary: {summary}")
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {r}" for r in requires_dist)
    lines.extend(f"Provides-Extra: {e}" for e in _provided_extras(requires_dist))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _is_purelib(tag: str) -> bool:
    """Root-Is-Purelib is true only for pure-python `py*-none-any` tags."""
    return all(t.interpreter.startswith("py") and t.abi == "none" and t.platform == "any" for t in parse_tag(tag))


def _wheel_file(tag: str, build: Optional[str]) -> bytes:
    lines = [
        "Wheel-Version: 1.0",
        f"Generator: {GENERATOR}",
        f"Root-Is-Purelib: {'true' if _is_purelib(tag) else 'false'}",
    ]
    if build:
        lines.append(f"Build: {build}")
    lines.extend(f"Tag: {t}" for t in sorted(str(t) for t in parse_tag(tag)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _entry_points_file(entry_points: Optional[EntryPoints], console_scripts: Optional[Mapping[str, str]]) -> bytes:
    groups = {k: dict(v) for k, v in (entry_points or {}).items()}
    if console_scripts:
        groups.setdefault("console_scripts", {}).update(console_scripts)
    out = []
    for group in sorted(groups):
        out.append(f"[{group}]")
        out.extend(f"{k} = {v}" for k, v in sorted(groups[group].items()))
        out.append("")
    return "\n".join(out).encode("utf-8")


def _padding_bytes(size: int, seed: str) -> bytes:
    """Incompressible but reproducible bytes, so padded wheels really are big."""
    return random.Random(seed).randbytes(size) if size else b""


def _default_files(pkg: str, version: str) -> dict:
    return {f"{pkg}/__init__.py": f'__version__ = "{version}"\n'.encode("utf-8")}


def _zip_info(arcname: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
    info.create_system = 3  # unix, so external_attr permissions are honoured
    info.external_attr = (0o100000 | _FILE_MODE) << 16
    info.compress_type = compress
    return info


def _record_file(entries: Sequence[Tuple[str, bytes]], record_path: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for arcname, data in entries:
        writer.writerow([arcname, record_digest(data), str(len(data))])
    writer.writerow([record_path, "", ""])
    return buf.getvalue().encode("utf-8")


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: Optional[str] = None,
    extras_map: Optional[Mapping[str, Sequence[str]]] = None,
    tag: str = "py3-none-any",
    build: Optional[str] = None,
    files: Optional[Mapping[str, bytes]] = None,
    file_size_padding: int = 0,
    entry_points: Optional[EntryPoints] = None,
    console_scripts: Optional[Mapping[str, str]] = None,
    summary: Optional[str] = None,
) -> Path:
    """Write a valid PEP 427 wheel into `dest_dir` and return its path.

    `files` are added to (and may override) the default `<pkg>/__init__.py`.

    Package files come first (sorted) and dist-info last with RECORD at the end,
    mirroring real build backends so range-based metadata readers are exercised
    realistically.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    pkg = escape_name(name)
    norm_version = str(Version(version))
    dist_info = f"{pkg}-{_escape_version(version)}.dist-info"
    payload = {**_default_files(pkg, norm_version), **(files or {})}
    stored = set()
    if file_size_padding:
        pad_name = f"{pkg}/_padding.bin"
        payload[pad_name] = _padding_bytes(file_size_padding, f"{name}=={version}:{file_size_padding}")
        stored.add(pad_name)

    requirement_lines = _expand_extras(requires_dist, extras_map)
    entries: List[Tuple[str, bytes]] = sorted(payload.items())
    entries.append((f"{dist_info}/METADATA", _core_metadata(name, norm_version, requirement_lines, requires_python, summary)))
    entries.append((f"{dist_info}/WHEEL", _wheel_file(tag, build)))
    if entry_points or console_scripts:
        entries.append((f"{dist_info}/entry_points.txt", _entry_points_file(entry_points, console_scripts)))
    record_path = f"{dist_info}/RECORD"
    entries.append((record_path, _record_file(entries, record_path)))

    out = dest_dir / wheel_filename(name, version, tag, build)
    with zipfile.ZipFile(out, "w") as zf:
        for arcname, data in entries:
            compress = zipfile.ZIP_STORED if arcname in stored else zipfile.ZIP_DEFLATED
            zf.writestr(_zip_info(arcname, compress), data)
    return out


def _pkg_info(name: str, version: str, requires_dist: Sequence[str], requires_python: Optional[str]) -> bytes:
    return _core_metadata(name, version, requires_dist, requires_python, summary=None)


def _setup_py(name: str, version: str, pkg: str, requires_dist: Sequence[str], requires_python: Optional[str]) -> bytes:
    """A plain setuptools `setup.py`, buildable by any setuptools version."""
    lines = [
        "from setuptools import setup",
        "",
        "setup(",
        f"    name={name!r},",
        f"    version={version!r},",
        f"    packages=[{pkg!r}],",
        f"    install_requires={list(requires_dist)!r},",
    ]
    if requires_python:
        lines.append(f"    python_requires={requires_python!r},")
    lines.append(")")
    return ("\n".join(lines) + "\n").encode("utf-8")


_PYPROJECT = b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'


def _tar_member(tar: tarfile.TarFile, arcname: str, data: Optional[bytes]) -> None:
    """Add a file (or directory when `data` is None) with fixed owner/mtime/mode."""
    info = tarfile.TarInfo(arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = _DIR_MODE
        tar.addfile(info)
    else:
        info.mode = _FILE_MODE
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


_INLINE_BACKEND = """\
import os

METADATA = {metadata!r}


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    path = os.path.join(metadata_directory, {dist_info!r})
    os.makedirs(path)
    with open(os.path.join(path, "METADATA"), "w") as fp:
        fp.write(METADATA)
    return {dist_info!r}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("not needed for locking")
"""


def build_sdist_with_inline_backend(
    dest_dir: Path, name: str, version: str, *, requires_dist: Sequence[str] = ()
) -> Path:
    """An sdist whose dependencies only its build backend knows: PKG-INFO (Metadata-Version
    2.1, so not authoritative) lists none, and the backend, shipped inside the sdist (no build
    requirements from an index), writes METADATA with `requires_dist`. A locker must build its
    metadata to see them."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = f"{escape_name(name)}-{_escape_version(version)}"
    header = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata = header + "".join(f"Requires-Dist: {r}\n" for r in requires_dist)
    members = {
        f"{root}/PKG-INFO": header.encode("utf-8"),
        f"{root}/pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        f"{root}/backend.py": _INLINE_BACKEND.format(metadata=metadata, dist_info=f"{root}.dist-info").encode("utf-8"),
    }
    path = dest_dir / f"{root}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def build_sdist(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: Optional[str] = None,
    files: Optional[Mapping[str, bytes]] = None,
) -> Path:
    """Write a deterministic `.tar.gz` sdist (PKG-INFO, pyproject.toml, setup.py)."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    pkg = escape_name(name)
    norm_version = str(Version(version))
    reqs = [str(Requirement(r)) for r in requires_dist]
    root = f"{pkg}-{_escape_version(version)}"
    members = {**_default_files(pkg, norm_version), **(files or {})}
    members["PKG-INFO"] = _pkg_info(name, norm_version, reqs, requires_python)
    members["pyproject.toml"] = _PYPROJECT
    members["setup.py"] = _setup_py(name, norm_version, pkg, reqs, requires_python)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_member(tar, root, None)
        for dirname in sorted({str(Path(p).parent) for p in members} - {"."}):
            _tar_member(tar, f"{root}/{dirname}", None)
        for arcname in sorted(members):
            _tar_member(tar, f"{root}/{arcname}", members[arcname])
    out = dest_dir / sdist_filename(name, version)
    with open(out, "wb") as fp:
        # filename="" and mtime=0 keep the gzip header free of varying data.
        with gzip.GzipFile(filename="", mode="wb", fileobj=fp, mtime=0) as gz:
            gz.write(raw.getvalue())
    return out


@dataclass(frozen=True)
class WheelSpec:
    """Declarative `build_wheel` arguments, for building many wheels at once."""

    name: str
    version: str
    requires_dist: Tuple[str, ...] = ()
    requires_python: Optional[str] = None
    extras_map: Optional[Mapping[str, Sequence[str]]] = None
    tag: str = "py3-none-any"
    build: Optional[str] = None
    files: Optional[Mapping[str, bytes]] = None
    file_size_padding: int = 0
    entry_points: Optional[EntryPoints] = None
    console_scripts: Optional[Mapping[str, str]] = None
    summary: Optional[str] = None

    def build_into(self, dest_dir: Path) -> Path:
        return build_wheel(
            dest_dir,
            self.name,
            self.version,
            requires_dist=self.requires_dist,
            requires_python=self.requires_python,
            extras_map=self.extras_map,
            tag=self.tag,
            build=self.build,
            files=self.files,
            file_size_padding=self.file_size_padding,
            entry_points=self.entry_points,
            console_scripts=self.console_scripts,
            summary=self.summary,
        )


def build_wheels(dest_dir: Path, specs: Iterable[WheelSpec]) -> List[Path]:
    """Build every spec into `dest_dir`; returns paths in spec order."""
    return [spec.build_into(dest_dir) for spec in specs]


@dataclass
class WheelFactory:
    """Builds distributions into one directory (handy as an index's dist dir)."""

    dist_dir: Path
    built: List[Path] = field(default_factory=list)

    def wheel(self, name: str, version: str, **kwargs: object) -> Path:
        """`build_wheel` into `dist_dir`; kwargs as for `build_wheel`."""
        path = build_wheel(self.dist_dir, name, version, **kwargs)  # type: ignore[arg-type]  # keyword options forwarded as-is; build_wheel checks them
        self.built.append(path)
        return path

    __call__ = wheel

    def sdist(self, name: str, version: str, **kwargs: object) -> Path:
        """`build_sdist` into `dist_dir`; kwargs as for `build_sdist`."""
        path = build_sdist(self.dist_dir, name, version, **kwargs)  # type: ignore[arg-type]  # keyword options forwarded as-is; build_sdist checks them
        self.built.append(path)
        return path

    def specs(self, specs: Iterable[WheelSpec]) -> List[Path]:
        paths = build_wheels(self.dist_dir, specs)
        self.built.extend(paths)
        return paths


def download_build_backend(dest: Path, projects: Sequence[str] = ("setuptools", "wheel")) -> None:
    """A real PEP 517 backend's wheels from PyPI into `dest`, for a test index to serve (so sdist
    builds use setuptools as users get it, not an inline stand-in); no user pip configuration."""
    import os
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--only-binary", ":all:", "--dest", str(dest), *projects],
        check=True, capture_output=True, env=dict(os.environ, PIP_CONFIG_FILE=os.devnull),
    )
