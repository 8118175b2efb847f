"""An sdist becomes a wheel once: a PEP 517 build in an isolated environment, cached.

`build_wheel_from_sdist` runs the sdist's build backend (`[build-system].build-backend`, default
`setuptools.build_meta:__legacy__`) in a fresh venv of the target's interpreter, holding exactly
the build requirements the lock pinned (sha256-verified wheels, installed with
`pip install --isolated --no-index --no-deps`). The build is isolated from the user's
configuration (`PIP_CONFIG_FILE=/dev/null`, no user site, a scratch HOME, a fixed
`SOURCE_DATE_EPOCH` and umask), so two builds from empty caches give the same wheel.

The wheel is cached in `CacheKind.BUILT_WHEELS` under a key of the sdist's sha256, the build
wheels' sha256s, the build settings and the interpreter (implementation, full version,
platform). The caller puts it through the same layer/RECORD/safety checks as any wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion

from fastpex.core.errors import UserError
from fastpex.core.pack.layers import WheelInput
from fastpex.core.util.cache import CacheKind, atomic_directory, cache_dir
from fastpex.core.util.hashing import sha256_file

__all__ = [
    "BUILDER_VERSION",
    "SOURCE_DATE_EPOCH",
    "BuiltWheel",
    "Interpreter",
    "SdistBuildError",
    "SdistBuildRequest",
    "build_wheel_from_sdist",
    "inspect_interpreter",
    "wheel_tags",
]

BUILDER_VERSION = 1  # bump when how a wheel is built changes (the cache key has it)
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
BUILD_TIMEOUT = 1800.0


class SdistBuildError(UserError):
    """An sdist could not be built into a wheel, or the wheel does not serve a target."""


@dataclass(frozen=True)
class Interpreter:
    """A Python that builds sdists: its path and what it is (the cache key has all of it)."""

    path: str
    implementation: str  # sys.implementation.name, e.g. cpython
    version: str  # full, e.g. 3.11.7
    platform: str  # sysconfig.get_platform(), e.g. linux-x86_64

    @property
    def python_version(self) -> str:
        return ".".join(self.version.split(".")[:2])


_INSPECT = (
    "import json, sys, sysconfig; print(json.dumps([sys.implementation.name, "
    "'.'.join(map(str, sys.version_info[:3])), sysconfig.get_platform()]))"
)


def inspect_interpreter(path: str) -> Interpreter:
    """Run `path` once to learn its implementation, version and platform."""
    try:
        out = subprocess.run(
            [path, "-I", "-c", _INSPECT], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        implementation, version, platform = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise SdistBuildError(f"Cannot run the Python interpreter `{path}` to build sdists: {e}") from e
    return Interpreter(path=path, implementation=implementation, version=version, platform=platform)


@dataclass(frozen=True)
class SdistBuildRequest:
    """Build `sdist` (a verified file; `filename` its real name) with `build_wheels` installed."""

    sdist: WheelInput
    project: str  # `name==version`, for messages
    build_wheels: Tuple[WheelInput, ...]
    interpreter: Interpreter
    cache_root: Optional[Path] = None


@dataclass(frozen=True)
class BuiltWheel:
    """The wheel built from an sdist, in the cache; `built` False when the cache had it."""

    wheel: WheelInput
    sdist_sha256: str
    built: bool


def wheel_tags(filename: str) -> Tuple[str, ...]:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion) as e:
        raise SdistBuildError(f"The build produced `{filename}`, which is not a valid wheel name: {e}") from e
    return tuple(sorted(str(t) for t in tags))


def _cache_key(request: SdistBuildRequest) -> str:
    material = {
        "builder": BUILDER_VERSION,
        "sdist": request.sdist.sha256.lower(),
        "build_wheels": sorted(w.sha256.lower() for w in request.build_wheels),
        "settings": {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "config_settings": {}},
        "interpreter": [request.interpreter.implementation, request.interpreter.version, request.interpreter.platform],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def build_wheel_from_sdist(request: SdistBuildRequest) -> BuiltWheel:
    """The cached wheel for this sdist + build requirements + interpreter; built if missing."""
    final = cache_dir(CacheKind.BUILT_WHEELS, request.cache_root) / _cache_key(request)
    built = False

    def produce(work: Path) -> None:
        nonlocal built
        _build_into(request, work)
        built = True

    atomic_directory(final, produce)
    wheels = sorted(p for p in final.iterdir() if p.name.endswith(".whl"))
    if len(wheels) != 1:
        raise SdistBuildError(f"The built-wheel cache entry {final} is damaged: delete it and build again")
    wheel = wheels[0]
    return BuiltWheel(
        wheel=WheelInput(path=str(wheel), sha256=sha256_file(wheel), filename=wheel.name),
        sdist_sha256=request.sdist.sha256,
        built=built,
    )


# --------------------------------------------------------------------------------------------
# The build itself


def _build_into(request: SdistBuildRequest, out: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=".build.", dir=out.parent))
    try:
        source = _unpack(Path(request.sdist.path), request.sdist.wheel_filename, scratch / "src")
        backend, backend_path = _backend_of(source, request.sdist.wheel_filename)
        env = _clean_env(scratch)
        venv = scratch / "env"
        _run([request.interpreter.path, "-I", "-m", "venv", str(venv)], env, scratch, request, "create the build venv")
        python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
        if request.build_wheels:
            links = scratch / "wheels"
            links.mkdir()
            paths = []
            for wheel in request.build_wheels:  # pip reads tags from the file name: use the real one
                dest = links / wheel.wheel_filename
                shutil.copyfile(wheel.path, dest)
                paths.append(str(dest))
            _run(
                [python, "-I", "-m", "pip", "install", "--isolated", "--no-index", "--no-deps", "--no-compile",
                 "--disable-pip-version-check", "--no-warn-script-location", *paths],
                env, scratch, request, "install the build requirements",
            )
        dist_dir = scratch / "dist"
        dist_dir.mkdir()
        result = scratch / "result.json"
        _run(
            [python, "-I", "-c", _HOOK, json.dumps([backend, backend_path, str(dist_dir), str(result)])],
            env, source, request, "build a wheel",
        )
        outcome = json.loads(result.read_text(encoding="utf-8"))
        names = {canonical for canonical in (_project(w.wheel_filename) for w in request.build_wheels)}
        missing = [r for r in outcome["requires"] if _project_of_requirement(r) not in names]
        name = outcome["wheel"]
        wheel = dist_dir / name
        if not wheel.is_file() or not zipfile.is_zipfile(wheel):
            raise SdistBuildError(
                f"Building `{request.sdist.wheel_filename}` ({request.project}) did not produce the wheel "
                f"`{name}` its backend `{backend}` named"
                + (f"; the backend also asked for build requirements the lock has none of: {', '.join(missing)}" if missing else "")
            )
        wheel_tags(name)
        os.replace(wheel, out / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _project(filename: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(filename.split("-", 1)[0])


def _project_of_requirement(raw: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        return canonicalize_name(Requirement(raw).name)
    except InvalidRequirement:
        return raw


_HOOK = r"""
import importlib, json, os, sys
backend_name, backend_path, out, result = json.loads(sys.argv[1])
for entry in reversed(backend_path):
    sys.path.insert(0, os.path.abspath(entry))
module, _, attrs = backend_name.partition(":")
backend = importlib.import_module(module.strip())
for attr in filter(None, attrs.strip().split(".")):
    backend = getattr(backend, attr)
requires = list(getattr(backend, "get_requires_for_build_wheel", lambda config_settings=None: [])({}))
name = backend.build_wheel(out, {}, None)
with open(result, "w") as fp:
    json.dump({"wheel": name, "requires": requires}, fp)
"""


def _clean_env(scratch: Path) -> Dict[str, str]:
    """Only what a build needs; nothing of the user's pip or Python configuration."""
    home = scratch / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return env


def _child_umask() -> None:
    """Run in the build subprocess before exec: files it writes get 0644/0755, whatever ours is."""
    os.umask(0o022)


def _run(argv: List[str], env: Dict[str, str], cwd: Path, request: SdistBuildRequest, what: str) -> None:
    try:
        proc = subprocess.run(
            argv, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=BUILD_TIMEOUT,
            preexec_fn=_child_umask if os.name == "posix" else None,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise SdistBuildError(
            f"Could not {what} for the sdist `{request.sdist.wheel_filename}` ({request.project}) with "
            f"`{request.interpreter.path}`: {e}"
        ) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        hint = ""
        if what == "create the build venv":
            hint = " The interpreter needs the `venv` and `ensurepip` modules (on Debian: the python3-venv package)."
        raise SdistBuildError(
            f"Could not {what} for the sdist `{request.sdist.wheel_filename}` ({request.project}) with Python "
            f"{request.interpreter.version} at `{request.interpreter.path}` (exit {proc.returncode}).{hint} "
            f"Its output ends with:\n{tail}"
        )


def _safe_members(tar: tarfile.TarFile, filename: str) -> List[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        name = member.name
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
            if member.issym() or member.islnk():
                continue  # links are never needed to build; skip rather than follow them
            raise SdistBuildError(f"The sdist `{filename}` has an unsafe member `{name}`: refusing to unpack it")
        members.append(member)
    return members


def _unpack(path: Path, filename: str, dest: Path) -> Path:
    """Unpack the sdist into `dest` and return its one top-level directory."""
    dest.mkdir()
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if name.startswith("/") or ".." in Path(name).parts:
                        raise SdistBuildError(f"The sdist `{filename}` has an unsafe member `{name}`")
                zf.extractall(dest)
        else:
            with tarfile.open(path, "r:*") as tar:
                members = _safe_members(tar, filename)
                kwargs: Dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(dest, members=members, **kwargs)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise SdistBuildError(f"Cannot unpack the sdist `{filename}`: {e}") from e
    roots = [p for p in dest.iterdir()]
    if len(roots) != 1 or not roots[0].is_dir():
        raise SdistBuildError(f"The sdist `{filename}` does not hold exactly one top-level directory")
    return roots[0]


def _backend_of(source: Path, filename: str) -> Tuple[str, Sequence[str]]:
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        return DEFAULT_BACKEND, ()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, vendored by pip (a runtime dependency)
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]  # pip vendors tomli for Python 3.10, which has no tomllib
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SdistBuildError(f"The sdist `{filename}` has a malformed pyproject.toml: {e}") from e
    system = data.get("build-system") or {}
    backend = system.get("build-backend") or DEFAULT_BACKEND
    backend_path = system.get("backend-path") or []
    for entry in backend_path:
        resolved = (source / entry).resolve()
        if source.resolve() not in (resolved, *resolved.parents):
            raise SdistBuildError(f"The sdist `{filename}` has a backend-path `{entry}` outside its source tree")
    return str(backend), tuple(str(e) for e in backend_path)
