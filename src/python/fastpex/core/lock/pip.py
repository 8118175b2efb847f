"""The pip that locking runs: finding or installing a pip >= 25.3, its clean environment, and
the launcher that makes it resolve for a foreign target.

pip cannot be told the marker environment of a foreign target, so it runs through a tiny
launcher that replaces `pip._vendor.packaging.markers.default_environment` (what
`Marker.evaluate` and the installation report use) and `compatibility_tags.get_supported` (so
pip ranks wheels in exactly the target's tag order) before pip starts. This is the approach of
pex's `pex/pip/foreign_platform/` (credit: the pex project), reduced to what pip >= 25.3 needs:
`--python-version X.Y.Z` already drives pip's Requires-Python checks, and `--platform`/`--abi`/
`--implementation` are passed too so pip treats the run as a foreign-platform run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from packaging.version import InvalidVersion, Version

from fastpex.core.lock.errors import PipError
from fastpex.core.util.cache import CacheKind, atomic_directory, cache_dir
from fastpex.core.util.urls import expand_env, redact

__all__ = [
    "DEFAULT_PIP_VERSION",
    "LAUNCHER",
    "MIN_PIP_VERSION",
    "PipTool",
    "clean_env",
    "ensure_pip",
    "excerpt",
    "pip_tool_from_path",
]

DEFAULT_PIP_VERSION = "26.3"
MIN_PIP_VERSION = Version("25.3")
# pip 26.1+ needs Python >= 3.10; an older interpreter (Pants 2.17 runs on 3.9) gets the last
# pip that supports it.
_PIP_FOR_OLD_PYTHON = {(3, 9): "26.0.1"}
_EXCERPT_LINES = 40


@dataclass(frozen=True)
class PipTool:
    """How to run a pip >= 25.3: `python` with `pythonpath` prepended so `import pip` finds it."""

    python: str
    pythonpath: Tuple[str, ...] = ()
    version: str = ""


def _pip_version_of(python: str, pythonpath: Sequence[str]) -> Optional[str]:
    env = clean_env(pythonpath)
    try:
        proc = subprocess.run(
            [python, "-c", "import pip; print(pip.__version__)"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def _importable_pip() -> Optional[Tuple[str, str]]:
    """(version, directory on sys.path) of the pip this process can import (the tool env's,
    even when it comes from PYTHONPATH or a PEX), or None."""
    import importlib.util

    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.origin:
        return None
    try:
        import pip

        version = str(pip.__version__)
    except Exception:  # noqa: BLE001 - a broken pip is no pip
        return None
    return version, str(Path(spec.origin).parent.parent)


def _new_enough(version: Optional[str]) -> bool:
    if not version:
        return False
    try:
        return Version(version) >= MIN_PIP_VERSION
    except InvalidVersion:
        return False


def pip_tool_from_path(path: str, *, python: Optional[str] = None) -> PipTool:
    """An explicit pip: a directory holding `pip/`, a pip wheel/zipapp, or an interpreter with pip."""
    p = Path(path).expanduser().absolute()
    interpreter = python or sys.executable
    if p.is_dir() and (p / "pip" / "__init__.py").is_file():
        tool = PipTool(interpreter, (str(p),))
    elif p.is_file() and p.suffix in (".whl", ".pyz", ".zip"):
        tool = PipTool(interpreter, (str(p),))
    elif p.is_file() and os.access(str(p), os.X_OK):
        tool = PipTool(str(p), ())
    else:
        raise PipError(
            f"`--pip {path}` is neither a directory containing `pip/`, a pip wheel, nor a Python "
            f"interpreter. Point it at one of those, or leave it out to use a pinned pip"
        )
    version = _pip_version_of(tool.python, tool.pythonpath)
    if not _new_enough(version):
        raise PipError(
            f"`--pip {path}` provides pip {version or '(none found)'}; fastpex needs pip >= "
            f"{MIN_PIP_VERSION} (pip {DEFAULT_PIP_VERSION} is tested)"
        )
    return replace(tool, version=version or "")


def ensure_pip(
    cache_root: Optional[Path] = None,
    *,
    python: Optional[str] = None,
    explicit: Optional[str] = None,
    index_url: Optional[str] = None,
) -> PipTool:
    """A pip >= 25.3 to run: `explicit` if given, the interpreter's own pip if new enough, else
    pip==26.3 (26.0.1 on Python 3.9) installed once into `<cache>/tools/v1/pip-<v>-<python>/`
    (atomically, so concurrent runs end with one intact copy)."""
    interpreter = python or sys.executable
    if explicit:
        return pip_tool_from_path(explicit, python=interpreter)
    if interpreter == sys.executable:
        found = _importable_pip()
        if found is not None and _new_enough(found[0]):
            return PipTool(interpreter, (found[1],), found[0])
    own = _pip_version_of(interpreter, ())
    if _new_enough(own):
        return PipTool(interpreter, (), own or "")
    pin = _PIP_FOR_OLD_PYTHON.get(_python_version_of(interpreter), DEFAULT_PIP_VERSION)
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(interpreter).resolve().as_posix().strip("/"))[-80:]
    final = cache_dir(CacheKind.TOOLS, cache_root) / f"pip-{pin}-{tag}"

    def produce(work: Path) -> None:
        _install_pip(interpreter, own is not None, work, index_url, pin)

    atomic_directory(final, produce)
    version = _pip_version_of(interpreter, (str(final),))
    if not _new_enough(version):
        raise PipError(f"the pip installed into `{final}` does not run (version {version}); delete it and retry")
    return PipTool(interpreter, (str(final),), version or "")


def _python_version_of(python: str) -> Tuple[int, int]:
    proc = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        env=clean_env(()),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PipError(f"cannot run the interpreter `{python}`: {proc.stderr.strip()[-500:]}")
    major, minor = proc.stdout.strip().split(".")
    return int(major), int(minor)


def _install_pip(python: str, has_pip: bool, dest: Path, index_url: Optional[str], pin: str) -> None:
    """`pip install --target dest pip==<pin>` with whatever pip is at hand (or ensurepip's)."""
    if has_pip:
        runner = [python, "-m", "pip"]
        pythonpath: Tuple[str, ...] = ()
    else:
        bundled = _ensurepip_wheel(python)
        runner = [python, os.path.join(bundled, "pip")]
        pythonpath = ()
    cmd = runner + [
        "install",
        "--isolated",
        "--no-input",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--quiet",
        "--target",
        str(dest),
    ]
    if index_url:
        cmd += ["--index-url", expand_env(index_url)]
    cmd.append(f"pip=={pin}")
    proc = subprocess.run(cmd, env=clean_env(pythonpath), capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipError(
            f"could not install pip {pin} for `{python}` (needed: its pip is "
            f"missing or older than {MIN_PIP_VERSION}): {excerpt(proc.stderr or proc.stdout)}. "
            f"Pass `--pip PATH` to use a pip you provide"
        )


def _ensurepip_wheel(python: str) -> str:
    proc = subprocess.run(
        [
            python,
            "-c",
            "import ensurepip, os, glob; "
            "print(sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled', 'pip-*.whl')))[-1])",
        ],
        env=clean_env(()),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise PipError(f"`{python}` has neither pip nor ensurepip; pass `--pip PATH`")
    return proc.stdout.strip()


def clean_env(pythonpath: Sequence[str], scratch: Optional[Path] = None) -> Dict[str, str]:
    """The environment of every pip run: no PIP_* settings, no config file, loopback unproxied;
    pip's temporary files in `scratch` when given (`util/scratch.memory_scratch`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHONNOUSERSITE"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = pip_no_proxy(env)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    if scratch is not None:
        env["TMPDIR"] = str(scratch)
    return env


def pip_no_proxy(env: Dict[str, str]) -> str:
    """The user's `NO_PROXY` and `no_proxy` entries, plus loopback: pip reaches fastpex's
    metadata proxy (on 127.0.0.1) directly, and every other host as the user configured it
    (`HTTPS_PROXY`/`HTTP_PROXY` pass through to pip unchanged)."""
    entries: List[str] = []
    for value in (env.get("NO_PROXY", ""), env.get("no_proxy", ""), "127.0.0.1,localhost"):
        for entry in value.split(","):
            entry = entry.strip()
            if entry and entry not in entries:
                entries.append(entry)
    return ",".join(entries)


# The launcher: patch what pip reads about "this machine" to be the target, then run pip.
# After pex's pex/pip/foreign_platform/{markers,tags}.py (Apache-2.0, the pex project).
LAUNCHER = r"""
import json, sys
with open(sys.argv[1]) as fp:
    spec = json.load(fp)
del sys.argv[1]
env = dict(spec["marker_environment"])
from pip._vendor.packaging import markers
def default_environment():
    return dict(env)
markers.default_environment = default_environment
if hasattr(markers, "_cached_default_environment"):
    markers._cached_default_environment = default_environment
from pip._vendor.packaging.tags import Tag
tags = [Tag(*t.split("-", 2)) for t in spec["tags"]]
from pip._internal.utils import compatibility_tags
def get_supported(version=None, platforms=None, impl=None, abis=None):
    return list(tags)
compatibility_tags.get_supported = get_supported
from pip._internal.models import target_python
target_python.get_supported = get_supported
if spec.get("allow_sdists"):
    # pip refuses --platform & co. unless sdists are off; with the patches above an sdist's
    # dependencies are evaluated for the target anyway (its metadata is built on this host).
    from pip._internal.cli import cmdoptions
    _check = cmdoptions.check_dist_restriction
    def check_dist_restriction(options, check_target=False):
        saved = options.ignore_dependencies
        options.ignore_dependencies = True
        try:
            _check(options, check_target)
        finally:
            options.ignore_dependencies = saved
    cmdoptions.check_dist_restriction = check_dist_restriction
from pip._internal.cli.main import main
sys.exit(main(sys.argv[1:]))
"""



_URL_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def _redact_text(text: str) -> str:
    return _URL_RE.sub(lambda m: redact(m.group(0)), text)


def excerpt(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), 0)
    picked = [line for line in lines[start:] if line.strip()]
    if len(picked) > _EXCERPT_LINES:
        picked = picked[: _EXCERPT_LINES - 1] + [f"... ({len(picked) - _EXCERPT_LINES + 1} more lines)"]
    return _redact_text("\n".join(picked))

