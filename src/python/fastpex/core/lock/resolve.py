"""LOCK: resolve requirements for every target with pip, then merge the results into one `Lock`.

One `pip install --dry-run --ignore-installed --report` per target, run in parallel. pip cannot
be told the marker environment of a foreign target, so it runs through a tiny launcher that
replaces `pip._vendor.packaging.markers.default_environment` (what `Marker.evaluate` and the
installation report use) and `compatibility_tags.get_supported` (so pip ranks wheels in exactly
the target's tag order) before pip starts. This is the approach of pex's
`pex/pip/foreign_platform/` (credit: the pex project), reduced to what pip >= 25.3 needs:
`--python-version X.Y.Z` already drives pip's Requires-Python checks, and `--platform`/`--abi`/
`--implementation` are passed too so pip treats the run as a foreign-platform run.

pip talks either straight to the configured indexes (`DirectSource`) or to fastpex's loopback
metadata proxy (`ProxySource`), which serves per-target PEP 691 pages that advertise core
metadata. Either way, the `PackageSource` also lists every file of a project (so the lock
records all artifacts of a chosen version, not just the one pip downloaded metadata for),
maps the URLs pip reports back to upstream, credential-free URLs, and fills in missing sha256s.

Merging: distributions are keyed by (name, version). Targets get different versions of a
project only when they must: after the first pass, targets that disagree are re-resolved with
the project pinned, trying the highest chosen version first, and the first version every
target can take wins; what cannot be reconciled is reported in `ResolveResult.divergent`.
A re-lock with `existing_lock` passes the old pins as pip constraints (except `upgrade`d
projects and pins that contradict the new requirements), so unrelated pins stay put.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import (
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
)

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fastpex.core.util.deps import marker_holds, walk
from fastpex.core.util.cache import CacheKind, atomic_directory, cache_dir, write_bytes_atomically
from fastpex.core.model import (
    Artifact,
    Lock,
    LockedDistribution,
    ResolvedPackage,
    Target,
    TargetResolve,
)
from fastpex.core.util.urls import expand_env, redact, strip_credentials

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PIP_VERSION",
    "MIN_PIP_VERSION",
    "DirectSource",
    "IndexUnreachableResolveError",
    "InvalidRequirementError",
    "PackageSource",
    "PipError",
    "PipTool",
    "ProxySource",
    "ReportItem",
    "ResolveError",
    "ResolveOptions",
    "ResolveResult",
    "TargetReport",
    "ensure_pip",
    "parse_report",
    "pip_tool_from_path",
    "proxy_target_name",
    "resolve",
    "validate_requirements",
]

DEFAULT_PIP_VERSION = "26.3"
MIN_PIP_VERSION = Version("25.3")
# pip 26.1+ needs Python >= 3.10; an older interpreter (Pants 2.17 runs on 3.9) gets the last
# pip that supports it.
_PIP_FOR_OLD_PYTHON = {(3, 9): "26.0.1"}
_EXCERPT_LINES = 40


# --------------------------------------------------------------------------------------------
# Errors


class ResolveError(Exception):
    """Resolution failed for a target; the message names it and quotes pip (redacted)."""

    def __init__(self, message: str, *, target: Optional[str] = None, pip_output: str = "") -> None:
        self.target = target
        self.pip_output = pip_output
        super().__init__(message)


class InvalidRequirementError(ResolveError):
    """A requirement string is not PEP 508; raised before pip runs."""


class IndexUnreachableResolveError(ResolveError):
    """pip found nothing because an index could not be reached (not because nothing matched)."""


class PipError(ResolveError):
    """pip itself could not be found, installed or run."""


# --------------------------------------------------------------------------------------------
# The pip tool


@dataclass(frozen=True)
class PipTool:
    """How to run a pip >= 25.3: `python` with `pythonpath` prepended so `import pip` finds it."""

    python: str
    pythonpath: Tuple[str, ...] = ()
    version: str = ""


def _pip_version_of(python: str, pythonpath: Sequence[str]) -> Optional[str]:
    env = _clean_env(pythonpath)
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
        env=_clean_env(()),
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
    proc = subprocess.run(cmd, env=_clean_env(pythonpath), capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipError(
            f"could not install pip {pin} for `{python}` (needed: its pip is "
            f"missing or older than {MIN_PIP_VERSION}): {_excerpt(proc.stderr or proc.stdout)}. "
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
        env=_clean_env(()),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise PipError(f"`{python}` has neither pip nor ensurepip; pass `--pip PATH`")
    return proc.stdout.strip()


def _clean_env(pythonpath: Sequence[str]) -> Dict[str, str]:
    """The environment of every pip run: no PIP_* settings, no config file, loopback unproxied."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHONNOUSERSITE"] = "1"
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


# The launcher: patch what pip reads about "this machine" to be the target, then run pip.
# After pex's pex/pip/foreign_platform/{markers,tags}.py (Apache-2.0, the pex project).
_LAUNCHER = r"""
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


# --------------------------------------------------------------------------------------------
# Where packages come from


class ProjectFileLike(Protocol):
    """The fields of `index.ProjectFile` that locking uses."""

    filename: str
    url: str
    requires_python: Optional[str]
    yanked: bool
    size: Optional[int]
    upload_time: Optional[str]

    @property
    def sha256(self) -> Optional[str]: ...


class PackageSource(Protocol):
    """What `resolve` needs from the place pip gets packages from (proxy or direct)."""

    def pip_index_args(self, target: Target) -> List[str]:
        """pip options that select the index(es) for `target` (may carry credentials)."""

    def project_files(self, project: str, target: Target) -> Sequence[ProjectFileLike]:
        """Every file of `project` that `target` may use (after routing and upload cut-off)."""

    def upstream_url(self, url: str, target: Target) -> str:
        """The credential-free upstream URL of a file pip reported (e.g. a proxy URL)."""

    def ensure_sha256(self, files: Sequence[ProjectFileLike]) -> List[ProjectFileLike]:
        """The files, each with a sha256 (computed by download where the index gave none)."""

    def index_urls(self) -> Tuple[str, ...]:
        """Credential-free URLs of the configured indexes (recorded in the lock)."""

    def check_reachable(self, project: str, target: Target) -> None:
        """Raise `IndexUnreachableResolveError` if `target`'s indexes cannot serve `project`."""


class DirectSource:
    """pip talks straight to the indexes / find-links (no proxy). Used in tests and as fallback.

    `upload_cutoff` is passed to pip as `--uploaded-prior-to` and applied to listed files.
    """

    def __init__(
        self,
        indexes: Sequence[str],
        find_links: Sequence[str] = (),
        *,
        upload_cutoff: Optional[datetime] = None,
        http: object = None,
    ) -> None:
        from fastpex.core.net.http import HttpClient

        self.indexes = tuple(indexes)
        self.find_links = tuple(find_links)
        self.upload_cutoff = upload_cutoff
        self._http = http if http is not None else HttpClient(configured_indexes=self.indexes)
        self._pages: Dict[str, List[ProjectFileLike]] = {}

    def pip_index_args(self, target: Target) -> List[str]:
        args: List[str] = []
        if self.indexes:
            # pip does not expand `${VAR}` on its command line: expand here, in the core process
            # (the argv Pants caches by keeps the reference, never the secret).
            args += ["--index-url", expand_env(self.indexes[0])]
            for extra in self.indexes[1:]:
                args += ["--extra-index-url", expand_env(extra)]
        else:
            args.append("--no-index")
        for link in self.find_links:
            args += ["--find-links", link]
        if self.upload_cutoff is not None:
            args += ["--uploaded-prior-to", self.upload_cutoff.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
        return args

    def _files(self, project: str) -> List[ProjectFileLike]:
        from fastpex.core.net.index import IndexClient, find_links_files

        key = canonicalize_name(project)
        if key not in self._pages:
            files: List[ProjectFileLike] = []
            client = IndexClient(self._http)  # type: ignore[arg-type]
            for index in self.indexes:
                page = client.project_page(index, key)
                if page is not None:
                    files.extend(page.files)
            for link in self.find_links:
                files.extend(find_links_files(_local_path(link), key))
            if self.upload_cutoff is not None:
                files = [f for f in files if _uploaded_before(f, self.upload_cutoff)]
            self._pages[key] = files
        return self._pages[key]

    def project_files(self, project: str, target: Target) -> Sequence[ProjectFileLike]:
        return self._files(project)

    def upstream_url(self, url: str, target: Target) -> str:
        return strip_credentials(url)

    def ensure_sha256(self, files: Sequence[ProjectFileLike]) -> List[ProjectFileLike]:
        out = []
        for f in files:
            if f.sha256:
                out.append(f)
            else:
                out.append(f.with_sha256(self._download_sha256(f.url)))  # type: ignore[attr-defined]
        return out

    def _download_sha256(self, url: str) -> str:
        import hashlib

        digest = hashlib.sha256()
        response = self._http.get(url, stream=True)  # type: ignore[attr-defined]
        with response:
            response.raise_for_status()
            for chunk in response.iter_chunks():
                digest.update(chunk)
        return digest.hexdigest()

    def index_urls(self) -> Tuple[str, ...]:
        return tuple(strip_credentials(i) for i in self.indexes) + tuple(
            strip_credentials(link) for link in self.find_links
        )

    def check_reachable(self, project: str, target: Target) -> None:
        from fastpex.core.net.index import IndexClientError

        try:
            self._pages.pop(canonicalize_name(project), None)
            self._files(project)
        except IndexClientError as e:
            raise IndexUnreachableResolveError(
                f"Resolving for target `{target.name}` failed: {e}", target=target.name
            ) from e


def proxy_target_name(name: str) -> str:
    """The target's name as a proxy URL path segment (`@`/`,` of option suffixes -> `+`)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "+", name)


class ProxySource:
    """pip talks to fastpex's loopback metadata proxy (`core/proxy.py`) at `/<target>/simple/`.

    The proxy owns routing, find-links, the upload cut-off, metadata and hashing; this maps
    its API onto `PackageSource`. `indexes` are the configured index URLs, for the lock.
    """

    def __init__(self, proxy: object, indexes: Sequence[str] = ()) -> None:
        self.proxy = proxy
        self._indexes = tuple(indexes)

    def pip_index_args(self, target: Target) -> List[str]:
        # The proxy retries upstream itself; pip retrying the loopback only repeats failures.
        url = self.proxy.index_url(proxy_target_name(target.name))  # type: ignore[attr-defined]
        return ["--index-url", url, "--retries", "0"]

    def project_files(self, project: str, target: Target) -> Sequence[ProjectFileLike]:
        name = proxy_target_name(target.name)
        served = self.proxy.files_for(project, name)  # type: ignore[attr-defined]
        if served:
            return served  # type: ignore[no-any-return]
        # Not served to this target yet (asked before its pip run): the same page, unserved.
        return self.proxy.page_files(name, project) or []  # type: ignore[attr-defined]

    def upstream_url(self, url: str, target: Target) -> str:
        try:
            return strip_credentials(self.proxy.upstream_file(url).url)  # type: ignore[attr-defined]
        except KeyError:
            return strip_credentials(url)  # not a proxy URL (a direct `name @ URL` requirement)

    def ensure_sha256(self, files: Sequence[ProjectFileLike]) -> List[ProjectFileLike]:
        try:
            return list(self.proxy.ensure_sha256(list(files)))  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - the proxy's typed errors, re-raised with context
            raise ResolveError(f"could not compute a sha256 the index did not give: {e}") from e

    def index_urls(self) -> Tuple[str, ...]:
        return tuple(strip_credentials(i) for i in self._indexes)

    def cache_token(self) -> Optional[str]:
        """What varies between runs in pip's command line (the proxy's URL) and means nothing."""
        return str(self.proxy.url)  # type: ignore[attr-defined]

    def take_page_requests(self, target: Target) -> List[str]:
        return list(self.proxy.take_page_requests(proxy_target_name(target.name)))  # type: ignore[attr-defined]

    def page_digests(self, target: Target, projects: Sequence[str]) -> Optional[Dict[str, str]]:
        """Today's digest of each project's page for `target`; None if any page fails."""
        name = proxy_target_name(target.name)
        try:
            with ThreadPoolExecutor(max_workers=16, thread_name_prefix="fastpex-pages") as pool:
                digests = list(pool.map(lambda p: self.proxy.page_digest(name, p), projects))  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - any failure only means "run pip"
            logger.debug("page check for %s failed (%s): running pip", target.name, e)
            return None
        return dict(zip(projects, digests))

    def check_reachable(self, project: str, target: Target) -> None:
        try:
            self.proxy.raise_for_errors()  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - IndexClientError, MetadataError, ...
            from fastpex.core.net.index import IndexClientError

            cls = IndexUnreachableResolveError if isinstance(e, IndexClientError) else ResolveError
            raise cls(f"Resolving for target `{target.name}` failed: {e}", target=target.name) from e


def _local_path(link: str) -> str:
    if link.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(link).path)
    return link


def _uploaded_before(f: ProjectFileLike, cutoff: datetime) -> bool:
    from fastpex.core.net.index import parse_upload_time

    when = parse_upload_time(f.upload_time)
    return when is None or when < cutoff


# --------------------------------------------------------------------------------------------
# Options and results


@dataclass(frozen=True)
class ResolveOptions:
    only_binary: bool = True  # `--only-binary=:all:`; False lets pip build sdists for metadata
    prereleases: bool = False
    max_parallel: int = 4  # concurrent pip processes (one per target)
    reconcile: bool = True  # re-resolve disagreeing targets to share versions where possible
    max_reconcile_rounds: int = 3
    timeout: Optional[float] = 1800.0  # per pip run
    pip: Optional[PipTool] = None  # default: `ensure_pip(cache_root)`
    cache_root: Optional[Path] = None
    extra_pip_args: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportItem:
    """One entry of pip's installation report (v1)."""

    name: str
    version: str
    requires_dist: Tuple[str, ...]
    requires_python: Optional[str]
    url: str
    sha256: Optional[str]
    requested: bool
    requested_extras: Tuple[str, ...]
    is_direct: bool
    is_yanked: bool = False


@dataclass(frozen=True)
class TargetReport:
    target: Target
    items: Tuple[ReportItem, ...]
    pip_version: str = ""

    def versions(self) -> Dict[str, str]:
        return {i.name: i.version for i in self.items}


@dataclass(frozen=True)
class ResolveResult:
    lock: Lock
    divergent: Mapping[str, Mapping[str, str]]  # project -> target name -> version
    notes: Tuple[str, ...] = ()
    pip_runs: int = 0
    seconds: float = 0.0
    reports: Mapping[str, TargetReport] = field(default_factory=dict)  # final pip report per target


# --------------------------------------------------------------------------------------------
# Requirements


def validate_requirements(requirements: Iterable[str]) -> List[Requirement]:
    """Parse each requirement (PEP 508); anything else raises `InvalidRequirementError`."""
    parsed = []
    for raw in requirements:
        text = raw.strip()
        if not text:
            continue
        if text.startswith("-"):
            raise InvalidRequirementError(
                f"`{raw}` is a pip option, not a requirement. Give PEP 508 requirements such "
                f"as `requests>=2` (index and find-links settings have their own options)"
            )
        try:
            parsed.append(Requirement(text))
        except InvalidRequirement as e:
            raise InvalidRequirementError(
                f"`{raw}` is not a valid requirement: {e}. Use PEP 508 syntax, e.g. "
                f"`name[extra]>=1.0; python_version >= \"3.9\"` or `name @ https://...`"
            ) from e
    return parsed


def _version_key(version: str) -> Tuple[int, object]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _normal_version(raw: str) -> str:
    try:
        return str(Version(raw))
    except InvalidVersion:
        return raw


# --------------------------------------------------------------------------------------------
# Running pip


def parse_report(data: Mapping[str, object], target: Target) -> TargetReport:
    """pip's `--report` JSON (version 1) -> `TargetReport`."""
    if str(data.get("version")) != "1":
        raise ResolveError(
            f"pip wrote an installation report of version {data.get('version')!r} for target "
            f"`{target.name}`; fastpex reads version 1 (pip >= 23.0)",
            target=target.name,
        )
    items = []
    for entry in data.get("install") or []:  # type: ignore[union-attr]
        meta = entry.get("metadata") or {}
        download = entry.get("download_info") or {}
        archive = download.get("archive_info") or {}
        hashes = dict(archive.get("hashes") or {})
        if not hashes.get("sha256") and str(archive.get("hash", "")).startswith("sha256="):
            hashes["sha256"] = archive["hash"].split("=", 1)[1]
        items.append(
            ReportItem(
                name=canonicalize_name(meta["name"]),
                version=_normal_version(str(meta["version"])),
                requires_dist=tuple(meta.get("requires_dist") or ()),
                requires_python=meta.get("requires_python") or None,
                url=str(download.get("url", "")),
                sha256=(hashes.get("sha256") or "").lower() or None,
                requested=bool(entry.get("requested")),
                requested_extras=tuple(sorted(canonicalize_name(e) for e in entry.get("requested_extras") or ())),
                is_direct=bool(entry.get("is_direct")),
                is_yanked=bool(entry.get("is_yanked")),
            )
        )
    items.sort(key=lambda i: i.name)
    return TargetReport(target=target, items=tuple(items), pip_version=str(data.get("pip_version", "")))


_URL_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def _redact_text(text: str) -> str:
    return _URL_RE.sub(lambda m: redact(m.group(0)), text)


def _excerpt(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), 0)
    picked = [line for line in lines[start:] if line.strip()]
    if len(picked) > _EXCERPT_LINES:
        picked = picked[: _EXCERPT_LINES - 1] + [f"... ({len(picked) - _EXCERPT_LINES + 1} more lines)"]
    return _redact_text("\n".join(picked))


@dataclass(frozen=True)
class _PipRun:
    target: Target
    ok: bool
    report: Optional[TargetReport]
    output: str  # redacted excerpt when failed
    missing: Tuple[str, ...] = ()  # projects pip found no versions of at all


_NO_VERSIONS_RE = re.compile(r"requirement (\S+?)(?:\[[^\]]*\])?(?:[<>=!~;@ ].*)? \(from versions: none\)")


class _ResolutionCache:
    """Reuse a pip run whose inputs are unchanged.

    pip is deterministic: the same command line (requirements, constraints, target tags and
    marker environment, pip version) against the same pages gives the same report. So a
    successful run is stored with the digest of every page pip asked the proxy for; a later
    run with the same command line re-checks those pages (a few parallel GETs, no pip) and
    reuses the report only if every page is unchanged. Metadata needs no check: the proxy keys
    it by artifact hash, and the page digests cover the hashes.
    """

    def __init__(self, source: PackageSource, cache_root: Optional[Path]) -> None:
        self.source = source
        self.token: Optional[str] = getattr(source, "cache_token", lambda: None)()
        self.dir = cache_dir(CacheKind.RESOLUTIONS, cache_root) if self.token else None

    def key(self, cmd: Sequence[str], workdir: Path, target: Target, constraints: Mapping[str, str]) -> Optional[str]:
        if self.dir is None or self.token is None:
            return None
        normalized = [arg.replace(str(workdir), "<work>").replace(self.token, "<proxy>") for arg in cmd]
        material = {
            "cmd": normalized,
            "target": target.name,
            "marker_environment": dict(target.marker_environment),
            "tags": list(target.supported_tags),
            "constraints": sorted(constraints.items()),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()

    def lookup(self, key: Optional[str], target: Target) -> Optional[Mapping[str, object]]:
        if key is None or self.dir is None:
            return None
        path = self.dir / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
            pages: Dict[str, str] = dict(entry["pages"])
            report = entry["report"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        now = self.source.page_digests(target, sorted(pages))  # type: ignore[attr-defined]
        if now != pages:
            return None
        return report  # type: ignore[no-any-return]

    def begin(self, target: Target) -> None:
        if self.dir is not None:
            self.source.take_page_requests(target)  # type: ignore[attr-defined]

    def store(self, key: Optional[str], target: Target, report: Mapping[str, object]) -> None:
        if key is None or self.dir is None:
            return
        projects = self.source.take_page_requests(target)  # type: ignore[attr-defined]
        digests = self.source.page_digests(target, projects)  # type: ignore[attr-defined]
        if not digests:
            return
        entry = {"pages": digests, "report": report}
        write_bytes_atomically(self.dir / f"{key}.json", json.dumps(entry, sort_keys=True).encode("utf-8"))


class _Runner:
    def __init__(
        self,
        source: PackageSource,
        options: ResolveOptions,
        pip: PipTool,
        requirements: Sequence[str],
    ) -> None:
        self.source = source
        self.options = options
        self.pip = pip
        self.requirements = list(requirements)
        self.runs = 0
        self.reused = 0
        self._count_lock = threading.Lock()
        self.cache = _ResolutionCache(source, options.cache_root)

    def command(self, target: Target, workdir: Path, constraints: Mapping[str, str]) -> List[str]:
        env = target.marker_environment
        spec = {
            "marker_environment": dict(env),
            "tags": list(target.supported_tags),
            "allow_sdists": not self.options.only_binary,
        }
        spec_path = workdir / "target.json"
        spec_path.write_text(json.dumps(spec, sort_keys=True))
        args = [
            self.pip.python,
            "-c",
            _LAUNCHER,
            str(spec_path),
            "install",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(workdir / "report.json"),
            # Not --quiet: it hides pip's "The conflict is caused by" explanation.
            "--isolated",
            "--no-input",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--progress-bar",
            "off",
        ]
        args += self.source.pip_index_args(target)
        if self.options.only_binary:
            args.append("--only-binary=:all:")
        if self.options.prereleases:
            args.append("--pre")
        abi = _target_abi(target)
        args += [
            "--python-version",
            env.get("python_full_version") or target.python_version,
            "--implementation",
            "cp",
            "--abi",
            abi,
        ]
        for platform in _platform_tags(target):
            args += ["--platform", platform]
        if constraints:
            path = workdir / "constraints.txt"
            path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
            args += ["--constraint", str(path)]
        args += list(self.options.extra_pip_args)
        args += self.requirements
        return args

    def run(self, target: Target, constraints: Mapping[str, str]) -> _PipRun:
        workdir = Path(tempfile.mkdtemp(prefix="fastpex-resolve-"))
        try:
            cmd = self.command(target, workdir, constraints)
            key = self.cache.key(cmd, workdir, target, constraints)
            cached = self.cache.lookup(key, target)
            if cached is not None:
                with self._count_lock:
                    self.reused += 1
                logger.debug("pip for %s: unchanged inputs and pages, reusing its report", target.name)
                return _PipRun(target, True, parse_report(cached, target), "")
            self.cache.begin(target)
            with self._count_lock:
                self.runs += 1
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    cmd,
                    env=_clean_env(self.pip.pythonpath),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,  # one stream: pip's explanation follows its ERROR line
                    text=True,
                    timeout=self.options.timeout,
                    cwd=str(workdir),
                )
            except subprocess.TimeoutExpired:
                return _PipRun(target, False, None, f"pip did not finish within {self.options.timeout:.0f} s")
            except OSError as e:
                raise PipError(f"could not run pip with `{self.pip.python}`: {e}", target=target.name) from e
            logger.debug("pip for %s took %.2fs", target.name, time.monotonic() - started)
            if proc.returncode != 0:
                output = proc.stdout or ""
                missing = tuple(
                    sorted({canonicalize_name(m.group(1)) for m in _NO_VERSIONS_RE.finditer(output)})
                )
                return _PipRun(target, False, None, _excerpt(output), missing)
            try:
                data = json.loads((workdir / "report.json").read_text())
            except (OSError, ValueError) as e:
                raise PipError(
                    f"pip succeeded for target `{target.name}` but wrote no readable report: {e}",
                    target=target.name,
                ) from e
            run = _PipRun(target, True, parse_report(data, target), "")
            self.cache.store(key, target, data)
            return run
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def run_many(self, jobs: Sequence[Tuple[Target, Mapping[str, str]]]) -> List[_PipRun]:
        if not jobs:
            return []
        workers = max(1, min(len(jobs), self.options.max_parallel))
        if workers == 1:
            return [self.run(t, c) for t, c in jobs]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastpex-pip") as pool:
            return list(pool.map(lambda job: self.run(job[0], job[1]), jobs))


def _target_abi(target: Target) -> str:
    for tag in target.supported_tags:
        interpreter, abi, _ = tag.split("-", 2)
        if interpreter.startswith("cp") and abi.startswith("cp"):
            return abi
    return "cp" + target.python_version.replace(".", "")


def _platform_tags(target: Target) -> List[str]:
    out: List[str] = []
    for tag in target.supported_tags:
        platform = tag.split("-", 2)[2]
        if platform != "any" and platform not in out:
            out.append(platform)
    return out


# --------------------------------------------------------------------------------------------
# Pins


def _pins_from_lock(lock: Lock, target: Target) -> Dict[str, str]:
    """The versions the old lock chose for `target` (or, for a new target, the shared ones)."""
    for resolve in lock.resolves:
        if resolve.target.name == target.name:
            return {canonicalize_name(p.name): p.version for p in resolve.packages}
    by_name: Dict[str, Set[str]] = {}
    for resolve in lock.resolves:
        for p in resolve.packages:
            by_name.setdefault(canonicalize_name(p.name), set()).add(p.version)
    return {n: next(iter(vs)) for n, vs in by_name.items() if len(vs) == 1}


def _compatible_pins(
    pins: Mapping[str, str], requirements: Sequence[Requirement], target: Target
) -> Tuple[Dict[str, str], List[str]]:
    """Drop pins that contradict a top-level requirement that applies to the target."""
    kept = dict(pins)
    dropped = []
    env = dict(target.marker_environment)
    env["extra"] = ""
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name in kept:
            if req.url or (str(req.specifier) and not req.specifier.contains(kept[name], prereleases=True)):
                dropped.append(f"{name}=={kept.pop(name)}")
    return kept, dropped


# --------------------------------------------------------------------------------------------
# Dependency edges and extras, per target


def _parsed_requires_dist(item: "ReportItem") -> List[Requirement]:
    out = []
    for raw in item.requires_dist:
        try:
            out.append(Requirement(raw))
        except InvalidRequirement:
            logger.warning("ignoring invalid Requires-Dist `%s` of %s", raw, item.name)
    return out


def _packages_for(report: TargetReport, requirements: Sequence[Requirement]) -> Tuple[ResolvedPackage, ...]:
    """Walk the edges from the requirements with the target's environment: extras + edges."""
    env = report.target.marker_environment
    items = {i.name: i for i in report.items}
    requested = {i.name: i.requested_extras for i in report.items if i.requested and i.requested_extras}

    def edges(req: Requirement, origin: Optional[str]) -> Optional[List[Requirement]]:
        item = items.get(canonicalize_name(req.name))
        return None if item is None else _parsed_requires_dist(item)

    visited = walk(requirements, env, edges, root_extras=requested)
    packages = []
    for item in report.items:
        active = visited.get(item.name, frozenset(item.requested_extras))
        deps = set()
        for raw in item.requires_dist:
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                continue
            dep = canonicalize_name(req.name)
            if dep in items and marker_holds(req.marker, env, active):
                deps.add(dep)
        packages.append(
            ResolvedPackage(
                name=item.name,
                version=item.version,
                extras=tuple(sorted(active)),
                dependencies=tuple(sorted(deps)),
            )
        )
    return tuple(sorted(packages, key=lambda p: p.name))


# --------------------------------------------------------------------------------------------
# The resolve


def resolve(
    requirements: Sequence[str],
    targets: Sequence[Target],
    source: PackageSource,
    *,
    resolve_name: str = "default",
    interpreter_constraints: Sequence[str] = (),
    options: ResolveOptions = ResolveOptions(),
    existing_lock: Optional[Lock] = None,
    upgrade: Iterable[str] = (),
    upload_cutoff: Optional[str] = None,
    reporter: Optional[Callable[[str], None]] = None,
) -> ResolveResult:
    """Resolve `requirements` for every target and merge the results into one `Lock`."""
    started = time.monotonic()
    parsed = validate_requirements(requirements)
    if not parsed:
        raise InvalidRequirementError("there are no requirements to lock; give at least one")
    if not targets:
        raise ResolveError("there are no targets to lock for; give at least one `--target`")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ResolveError(f"targets are listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    say = reporter or (lambda message: logger.info("%s", message))
    pip = options.pip or ensure_pip(options.cache_root)
    req_strings = [str(r) for r in parsed]
    runner = _Runner(source, options, pip, req_strings)
    notes: List[str] = []

    upgraded = {canonicalize_name(u) for u in upgrade}
    base_pins: Dict[str, Dict[str, str]] = {}
    for target in targets:
        pins: Dict[str, str] = {}
        if existing_lock is not None:
            pins = {n: v for n, v in _pins_from_lock(existing_lock, target).items() if n not in upgraded}
            pins, dropped = _compatible_pins(pins, parsed, target)
            if dropped:
                notes.append(f"{target.name}: dropped pins that contradict the requirements: {', '.join(dropped)}")
        base_pins[target.name] = pins

    say(f"resolving for {len(targets)} target(s) with pip {pip.version or '?'}")
    results = _first_pass(runner, targets, base_pins, notes)
    divergent: Dict[str, Dict[str, str]] = {}
    if options.reconcile and len(targets) > 1:
        results, divergent = _reconcile(runner, targets, results, base_pins, options, notes)
    else:
        divergent = _divergences(results)

    lock = _merge(
        results,
        parsed,
        source,
        resolve_name=resolve_name,
        interpreter_constraints=tuple(interpreter_constraints),
        upload_cutoff=upload_cutoff,
        notes=notes,
    )
    return ResolveResult(
        lock=lock,
        divergent=divergent,
        notes=tuple(notes),
        pip_runs=runner.runs,
        seconds=time.monotonic() - started,
        reports=dict(results),
    )


def _raise_for(run: _PipRun, runner: _Runner, constraints: Mapping[str, str]) -> None:
    hints = []
    for project in run.missing:
        runner.source.check_reachable(project, run.target)
        hint = _no_fit_hint(runner, project, run.target)
        if hint:
            hints.append(hint)
    pinned = f" (with {len(constraints)} pins from the existing lock or other targets)" if constraints else ""
    raise ResolveError(
        f"Could not resolve the requirements for target `{run.target.name}`{pinned}. "
        + (" ".join(hints) + " " if hints else "")
        + f"pip says:\n{run.output}",
        target=run.target.name,
        pip_output=run.output,
    )


def _no_fit_hint(runner: _Runner, project: str, target: Target) -> str:
    """Why pip saw "versions: none" although the index has the project (tags, Python, sdists)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        files = [f for f in runner.source.project_files(project, target) if _file_version(f.filename)]
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    if not files:
        return ""
    newest = max({_file_version(f.filename) or "" for f in files}, key=_version_key)
    latest = [f for f in files if _file_version(f.filename) == newest]
    platforms: Set[str] = set()
    for f in latest:
        if f.filename.endswith(".whl"):
            try:
                platforms.update(t.platform for t in parse_wheel_filename(f.filename)[3])
            except (InvalidWheelFilename, InvalidVersion):
                continue
    python = sorted({f.requires_python for f in latest if f.requires_python})
    shown = ", ".join(sorted(platforms)[:8]) + (" ..." if len(platforms) > 8 else "")
    return (
        f"The index has {len(files)} files of `{project}` but none fits `{target.name}` "
        f"({target.platform}, Python {target.marker_environment.get('python_full_version', target.python_version)}): "
        f"its newest version, {newest}, has "
        + (f"wheels for {shown}" if platforms else "no wheels")
        + (f" and requires Python {python[0]}" if python else "")
        + ". If the target can run those, widen it (e.g. `@macos14.0`, `@glibc2.34`)"
        + (", or allow sdists (`--allow-sdists`)." if runner.options.only_binary else ".")
    )


def _first_pass(
    runner: _Runner,
    targets: Sequence[Target],
    base_pins: Mapping[str, Mapping[str, str]],
    notes: List[str],
) -> Dict[str, TargetReport]:
    """Resolve every target, leaders first: per platform, the target with the oldest Python
    resolves freely, and the platform's other targets then resolve with the leader's versions
    as constraints wherever a usable file exists (`_version_possible`). Newer Pythons can
    usually take what older ones chose, and alignment would pin them there anyway; doing it up
    front saves the re-resolves (ml-core on 6 targets: 6 pip runs instead of 9), and a pinned
    pip run resolves faster. A follower whose pinned run fails resolves freely; `_reconcile`
    then aligns what still differs (across platforms, or where a pin could not hold)."""
    if not runner.options.reconcile:
        return _resolve_each(runner, targets, base_pins, notes)
    leader_of = _platform_leaders(targets)
    leaders = [t for t in targets if leader_of[t.name] is t]
    results = _resolve_each(runner, leaders, base_pins, notes)
    followers = [t for t in targets if leader_of[t.name] is not t]
    jobs = []
    for target in followers:
        lead = leader_of[target.name]
        pins = {
            item.name: item.version
            for item in results[lead.name].items
            if _version_possible(runner, item.name, item.version, target)
        }
        pins.update(base_pins[target.name])
        jobs.append((target, pins))
    unpinned = []
    for run in runner.run_many(jobs):
        if run.ok and run.report is not None:
            results[run.target.name] = run.report
            notes.append(f"{run.target.name}: resolved with the versions {leader_of[run.target.name].name} chose, where they fit")
        else:
            unpinned.append(run.target)
    results.update(_resolve_each(runner, unpinned, base_pins, notes))
    return {t.name: results[t.name] for t in targets}


def _platform_leaders(targets: Sequence[Target]) -> Dict[str, Target]:
    """target name -> the target with the oldest Python on its platform (itself, if that)."""
    oldest: Dict[str, Target] = {}
    for target in targets:
        known = oldest.get(target.platform)
        if known is None or _python_key(target) < _python_key(known):
            oldest[target.platform] = target
    return {t.name: oldest[t.platform] for t in targets}


def _python_key(target: Target) -> Tuple[int, ...]:
    return tuple(int(p) for p in target.python_version.split(".") if p.isdigit())


def _resolve_each(
    runner: _Runner,
    targets: Sequence[Target],
    base_pins: Mapping[str, Mapping[str, str]],
    notes: List[str],
) -> Dict[str, TargetReport]:
    """One pip run per target with its base pins; a minimal re-lock whose old pins no longer
    resolve frees the pins pip names, then all of them."""
    runs = runner.run_many([(t, base_pins[t.name]) for t in targets])
    results: Dict[str, TargetReport] = {}
    retry: List[Tuple[_PipRun, Mapping[str, str]]] = []
    for run in runs:
        if run.ok:
            assert run.report is not None
            results[run.target.name] = run.report
        elif base_pins[run.target.name]:
            retry.append((run, base_pins[run.target.name]))
        else:
            _raise_for(run, runner, {})
    # Minimal re-lock fallback: first free the pins pip names in its explanation, then all.
    for run, pins in retry:
        target = run.target
        mentioned = {canonicalize_name(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", run.output)}
        relaxed = {n: v for n, v in pins.items() if n not in mentioned}
        attempts = [relaxed] if relaxed != dict(pins) else []
        attempts.append({})
        for attempt in attempts:
            again = runner.run(target, attempt)
            if again.ok:
                assert again.report is not None
                results[target.name] = again.report
                freed = sorted(set(pins) - set(attempt))
                notes.append(
                    f"{target.name}: the existing pins did not resolve with the new requirements; "
                    f"released {len(freed)} pin(s): {', '.join(freed[:20])}{' ...' if len(freed) > 20 else ''}"
                )
                break
        else:
            _raise_for(again, runner, {})
    return {t.name: results[t.name] for t in targets}


def _divergences(results: Mapping[str, TargetReport]) -> Dict[str, Dict[str, str]]:
    by_project: Dict[str, Dict[str, str]] = {}
    for name, report in results.items():
        for item in report.items:
            by_project.setdefault(item.name, {})[name] = item.version
    return {
        project: dict(sorted(per_target.items()))
        for project, per_target in sorted(by_project.items())
        if len(set(per_target.values())) > 1
    }


def _reconcile(
    runner: _Runner,
    targets: Sequence[Target],
    results: Dict[str, TargetReport],
    base_pins: Mapping[str, Mapping[str, str]],
    options: ResolveOptions,
    notes: List[str],
) -> Tuple[Dict[str, TargetReport], Dict[str, Dict[str, str]]]:
    """Re-resolve disagreeing targets with a pin until every project has one version, if it can.

    For each divergent project, try its chosen versions from the highest down: pin it in every
    target that chose otherwise; the first version all of them resolve with wins. Agreed pins
    are kept for later rounds so a later re-resolve cannot undo an earlier agreement.
    """
    by_name = {t.name: t for t in targets}
    agreed: Dict[str, Dict[str, str]] = {t.name: {} for t in targets}
    _reconcile_at_once(runner, by_name, results, base_pins, agreed, notes)
    unresolvable: Set[str] = set()
    for _ in range(max(1, options.max_reconcile_rounds)):
        divergent = {p: v for p, v in _divergences(results).items() if p not in unresolvable}
        if not divergent:
            break
        progressed = False
        for project, per_target in divergent.items():
            current = _divergences(results).get(project)
            if not current:
                continue  # an earlier agreement in this round fixed it
            for version in sorted(set(current.values()), key=_version_key, reverse=True):
                movers = [by_name[n] for n, v in current.items() if v != version]
                if not all(_version_possible(runner, project, version, t) for t in movers):
                    continue  # some target has no usable file of it: don't ask pip
                jobs = []
                for target in movers:
                    pins = dict(base_pins[target.name])
                    pins.update(agreed[target.name])
                    pins[project] = version
                    jobs.append((target, pins))
                runs = runner.run_many(jobs)
                if all(r.ok and r.report is not None and r.report.versions().get(project) == version for r in runs):
                    for r in runs:
                        results[r.target.name] = r.report  # type: ignore[assignment]
                    for name in current:
                        agreed[name][project] = version
                    notes.append(
                        f"{project}: all targets use {version} (re-resolved {', '.join(t.name for t in movers)})"
                    )
                    progressed = True
                    break
            else:
                unresolvable.add(project)
        if not progressed:
            break
    remaining = _divergences(results)
    for project, per_target in remaining.items():
        pairs = ", ".join(f"{t}: {v}" for t, v in per_target.items())
        notes.append(f"{project}: versions differ across targets because no single version resolves for all ({pairs})")
    return results, remaining


def _reconcile_at_once(
    runner: _Runner,
    by_name: Mapping[str, Target],
    results: Dict[str, TargetReport],
    base_pins: Mapping[str, Mapping[str, str]],
    agreed: Dict[str, Dict[str, str]],
    notes: List[str],
) -> None:
    """One combined round before the project-by-project one: pick, for every divergent
    project, the highest chosen version that has a usable file for every target, and re-resolve
    each disagreeing target once with all those pins. Divergences usually share one cause (an
    older Python that newer releases dropped), so this typically settles every project with one
    pip run per mover instead of one per (project, mover). A target whose run fails or moves
    some other project is left as it was; the project-by-project round takes over from there.
    """
    divergent = _divergences(results)
    if len(divergent) < 2:
        return  # nothing to batch: the per-project round costs the same
    chosen: Dict[str, str] = {}
    for project, per_target in divergent.items():
        for version in sorted(set(per_target.values()), key=_version_key, reverse=True):
            movers = [by_name[n] for n, v in per_target.items() if v != version]
            if all(_version_possible(runner, project, version, t) for t in movers):
                chosen[project] = version
                break
    if len(chosen) < 2:
        return
    pins_by_target: Dict[str, Dict[str, str]] = {}
    for project, version in chosen.items():
        for name, v in divergent[project].items():
            if v != version:
                pins_by_target.setdefault(name, {})[project] = version
    jobs = []
    for name in sorted(pins_by_target):
        pins = dict(base_pins[name])
        pins.update(pins_by_target[name])
        jobs.append((by_name[name], pins))
    accepted: Dict[str, TargetReport] = {}
    for run in runner.run_many(jobs):
        if not run.ok or run.report is None:
            continue
        versions = run.report.versions()
        if all(versions.get(p) == v for p, v in pins_by_target[run.target.name].items()):
            accepted[run.target.name] = run.report
    settled = []
    for project, version in sorted(chosen.items()):
        movers = sorted(n for n, v in divergent[project].items() if v != version)
        if all(n in accepted for n in movers):
            settled.append((project, version, movers))
    if not settled:
        return
    results.update(accepted)
    for project, version, movers in settled:
        for name in divergent[project]:
            agreed[name][project] = version
        notes.append(f"{project}: all targets use {version} (re-resolved {', '.join(movers)})")


def _version_possible(runner: _Runner, project: str, version: str, target: Target) -> bool:
    """False when no file of project==version can serve `target` (tags, Requires-Python)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        files = [f for f in runner.source.project_files(project, target) if _file_version(f.filename) == version]
    except Exception:  # noqa: BLE001 - a prefilter only; pip has the last word
        return True
    if not files:
        return True
    tags = set(target.supported_tags)
    python = Version(target.marker_environment.get("python_full_version") or target.python_version)
    for f in files:
        if f.yanked:
            continue
        if f.requires_python:
            try:
                if not SpecifierSet(f.requires_python).contains(python, prereleases=True):
                    continue
            except InvalidSpecifier:
                pass
        if f.filename.endswith(".whl"):
            try:
                wheel_tags = parse_wheel_filename(f.filename)[3]
            except (InvalidWheelFilename, InvalidVersion):
                return True
            if any(str(t) in tags for t in wheel_tags):
                return True
        elif not runner.options.only_binary:
            return True
    return False


# --------------------------------------------------------------------------------------------
# Merging into a Lock


@functools.lru_cache(maxsize=None)
def _file_version(filename: str) -> Optional[str]:
    from fastpex.core.net.index import dist_name_version

    parsed = dist_name_version(filename)
    if parsed is None or parsed[1] is None:
        return None
    return str(parsed[1])


def _filename_of(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _merge(
    results: Mapping[str, TargetReport],
    requirements: Sequence[Requirement],
    source: PackageSource,
    *,
    resolve_name: str,
    interpreter_constraints: Tuple[str, ...],
    upload_cutoff: Optional[str],
    notes: List[str],
) -> Lock:
    # (name, version) -> the report items (one per target that chose it)
    chosen: Dict[Tuple[str, str], List[ReportItem]] = {}
    chosen_by: Dict[Tuple[str, str], List[Target]] = {}
    for report in results.values():
        for item in report.items:
            chosen.setdefault((item.name, item.version), []).append(item)
            chosen_by.setdefault((item.name, item.version), []).append(report.target)

    distributions = []
    for key in sorted(chosen):
        name, version = key
        items = chosen[key]
        artifacts = _artifacts_for(name, version, items, chosen_by[key], source)
        requires_dist: List[str] = []
        for item in items:
            for raw in item.requires_dist:
                if raw not in requires_dist:
                    requires_dist.append(raw)
        if any(tuple(i.requires_dist) != tuple(items[0].requires_dist) for i in items):
            notes.append(f"{name}=={version}: targets saw different Requires-Dist; the lock records their union")
        distributions.append(
            LockedDistribution(
                name=name,
                version=version,
                requires_python=items[0].requires_python,
                requires_dist=tuple(requires_dist),
                artifacts=artifacts,
            )
        )
    resolves = []
    for report in results.values():
        resolves.append(TargetResolve(target=report.target, packages=_packages_for(report, requirements)))
    return Lock(
        resolve_name=resolve_name,
        requirements=tuple(sorted({str(r) for r in requirements})),
        requires_python=tuple(interpreter_constraints),
        distributions=tuple(distributions),
        resolves=tuple(resolves),
        indexes=source.index_urls(),
        upload_cutoff=upload_cutoff,
    )


_FilesByVersion = Dict[Optional[str], List[ProjectFileLike]]


def _files_by_version(source: PackageSource, name: str, target: Target) -> _FilesByVersion:
    """A project's files for a target grouped by version (pages list thousands of files, and
    every locked version of the project looks at them). Memoized on the source: its pages do
    not change while it lives."""
    memo: Dict[Tuple[str, str], _FilesByVersion] = source.__dict__.setdefault("_files_by_version", {})
    key = (name, target.name)
    grouped = memo.get(key)
    if grouped is None:
        grouped = {}
        for f in source.project_files(name, target):
            grouped.setdefault(_file_version(f.filename), []).append(f)
        memo[key] = grouped
    return grouped


def _artifacts_for(
    name: str,
    version: str,
    items: Sequence[ReportItem],
    targets: Sequence[Target],
    source: PackageSource,
) -> Tuple[Artifact, ...]:
    """Every file of (name, version) the targets' indexes list, plus what pip picked."""
    from fastpex.core.net.index import ProjectFile

    picked = {}
    for item, target in zip(items, targets):
        url = source.upstream_url(item.url, target) if item.url else ""
        if url:
            picked[url] = item
    files: Dict[str, ProjectFileLike] = {}
    direct = all(i.is_direct for i in items)
    if not direct:
        for target in targets:
            for f in _files_by_version(source, name, target).get(version, ()):
                url = strip_credentials(f.url)
                if f.yanked and url not in picked:
                    continue
                files.setdefault(url, f)
    for url, item in picked.items():
        if url not in files:
            files[url] = ProjectFile(
                filename=_filename_of(url),
                url=url,
                hashes={"sha256": item.sha256} if item.sha256 else {},
                requires_python=item.requires_python,
            )
        elif not files[url].sha256 and item.sha256:
            files[url] = files[url].with_sha256(item.sha256)  # type: ignore[attr-defined]
    hashed = source.ensure_sha256([files[u] for u in sorted(files)])
    artifacts = []
    for f in hashed:
        sha = f.sha256
        if not sha:
            raise ResolveError(f"no sha256 for `{f.filename}` of `{name}=={version}`; the lock needs one")
        artifacts.append(
            Artifact(
                url=strip_credentials(f.url),
                filename=f.filename,
                sha256=sha,
                size=f.size,
                upload_time=f.upload_time,
                requires_python=f.requires_python,
            )
        )
    return tuple(sorted(artifacts, key=lambda a: (a.filename, a.url)))
