"""Running pip: one `pip install --dry-run --report` per target (through the launcher of
`pip`), in parallel, its report parsed; a run whose inputs and pages are unchanged is reused.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fastpex.core.lock.errors import PipError, ResolveError
from fastpex.core.lock.pip import LAUNCHER, PipTool, clean_env, excerpt
from fastpex.core.lock.replay import PageBoundEntries
from fastpex.core.lock.sources import PackageSource
from fastpex.core.lock.zygote import PipZygote, fork_available
from fastpex.core.model import Target
from fastpex.core.util.cache import CacheKind

__all__ = ["ReportItem", "ResolutionCache", "ResolveOptions", "Runner", "TargetReport", "parse_report"]

logger = logging.getLogger("fastpex.core.lock.resolve")


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
    zygote: bool = True  # fork pip runs from one warm pip process (`zygote`) where fork exists
    pip_scratch: Optional[Path] = None  # pip's TMPDIR (`util/scratch.memory_scratch`); None: the default



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



def _normal_version(raw: str) -> str:
    try:
        return str(Version(raw))
    except InvalidVersion:
        return raw



def parse_report(data: Mapping[str, Any], target: Target) -> TargetReport:
    """pip's `--report` JSON (version 1) -> `TargetReport`."""
    if str(data.get("version")) != "1":
        raise ResolveError(
            f"pip wrote an installation report of version {data.get('version')!r} for target "
            f"`{target.name}`; fastpex reads version 1 (pip >= 23.0)",
            target=target.name,
        )
    items = []
    for entry in data.get("install") or []:
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



@dataclass(frozen=True)
class PipRun:
    target: Target
    ok: bool
    report: Optional[TargetReport]
    output: str  # redacted excerpt when failed
    missing: Tuple[str, ...] = ()  # projects pip found no versions of at all
    # project -> the project whose requirement made pip collect it (from pip's "Collecting X
    # (from Y)" lines), so an error can name the chain from a root to a missing project
    collected_from: Mapping[str, str] = field(default_factory=dict)
    raw_report: Optional[Mapping[str, Any]] = None  # pip's report JSON, as it wrote it

    def chain_to(self, project: str) -> Tuple[str, ...]:
        """(root, ..., project) as pip collected it; just (project,) for a root or when unknown."""
        chain = [project]
        while chain[-1] in self.collected_from and self.collected_from[chain[-1]] not in chain:
            chain.append(self.collected_from[chain[-1]])
        return tuple(reversed(chain))


_NO_VERSIONS_RE = re.compile(r"requirement (\S+?)(?:\[[^\]]*\])?(?:[<>=!~;@ ].*)? \(from versions: none\)")
_COLLECTING_RE = re.compile(r"^\s*Collecting ([A-Za-z0-9][A-Za-z0-9._-]*)[^(]*\(from ([A-Za-z0-9][A-Za-z0-9._-]*)", re.M)


_UNSATISFIED_FROM_RE = re.compile(
    r"satisfies the requirement ([A-Za-z0-9][A-Za-z0-9._-]*)[^(\n]*\(from ([A-Za-z0-9][A-Za-z0-9._-]*)\)"
)


def collected_from(output: str) -> Dict[str, str]:
    """pip's "Collecting X (from Y)" lines, and its "no version satisfies X (from Y)" error, as
    X -> Y (canonical names, first parent wins)."""
    parents: Dict[str, str] = {}
    for regex in (_COLLECTING_RE, _UNSATISFIED_FROM_RE):
        for m in regex.finditer(output):
            parents.setdefault(canonicalize_name(m.group(1)), canonicalize_name(m.group(2)))
    return parents



class ResolutionCache:
    """Reuse a pip run whose inputs are unchanged.

    pip is deterministic: the same command line (requirements, constraints, target tags and
    marker environment, pip version) against the same pages gives the same report. So a
    successful run is stored with the digest of every page pip asked the proxy for; a later
    run with the same command line re-checks those pages (a few parallel GETs, no pip) and
    reuses the report only if every page is unchanged. Metadata needs no check: the proxy keys
    it by artifact hash, and the page digests cover the hashes. Off when the source has no
    `cache_token` (nothing records the pages pip reads).
    """

    def __init__(self, source: PackageSource, cache_root: Optional[Path]) -> None:
        self.source = source
        self.token = source.cache_token()
        self.entries = PageBoundEntries(CacheKind.RESOLUTIONS, cache_root) if self.token else None

    def key(self, cmd: Sequence[str], workdir: Path, target: Target, constraints: Mapping[str, str]) -> Optional[str]:
        if self.entries is None or self.token is None:
            return None
        normalized = [arg.replace(str(workdir), "<work>").replace(self.token, "<proxy>") for arg in cmd]
        material = {
            "cmd": normalized,
            "target": target.name,
            "marker_environment": dict(target.marker_environment),
            "tags": list(target.supported_tags),
            "constraints": sorted(constraints.items()),
        }
        return self.entries.key(material)

    def lookup(self, key: Optional[str], target: Target) -> Optional[Mapping[str, Any]]:
        if key is None or self.entries is None:
            return None
        entry = self.entries.load(key)
        if entry is None or not isinstance(entry.get("report"), dict):
            return None
        pages = {str(project): str(digest) for project, digest in entry["pages"].items()}
        if self.source.page_digests(target, sorted(pages)) != pages:
            return None
        report: Mapping[str, Any] = entry["report"]
        return report

    def begin(self, target: Target) -> None:
        if self.entries is not None:
            self.source.take_page_requests(target)

    def store(self, key: Optional[str], target: Target, report: Mapping[str, Any]) -> None:
        if key is None or self.entries is None:
            return
        projects = self.source.take_page_requests(target)
        digests = self.source.page_digests(target, projects)
        if not digests:
            return
        self.entries.save(key, digests, {"report": report})


class Runner:
    def __init__(
        self,
        source: PackageSource,
        options: ResolveOptions,
        pip: PipTool,
        requirements: Sequence[str],
        warm_pip: Optional[PipZygote] = None,
    ) -> None:
        """`warm_pip`: a zygote the caller started early (its imports overlap the caller's
        work); the runner closes it with its own."""
        self.source = source
        self.options = options
        self.pip = pip
        self.requirements = list(requirements)
        self.runs = 0
        self.reused = 0
        self._count_lock = threading.Lock()
        self.cache = ResolutionCache(source, options.cache_root)
        self._zygote: Optional[PipZygote] = warm_pip
        self._zygote_lock = threading.Lock()
        # At most `max_parallel` pip processes at once, however many callers run targets.
        self._slots = threading.BoundedSemaphore(max(1, options.max_parallel))

    def _warm_pip(self) -> Optional[PipZygote]:
        """The zygote, started on the first pip run that needs one (not for a reused run)."""
        if not self.options.zygote or not fork_available():
            return None
        with self._zygote_lock:
            if self._zygote is None:
                self._zygote = PipZygote(self.pip, scratch=self.options.pip_scratch)
            return self._zygote

    def close(self) -> None:
        with self._zygote_lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None

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
            LAUNCHER,
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

    def run(self, target: Target, constraints: Mapping[str, str]) -> PipRun:
        workdir = Path(tempfile.mkdtemp(prefix="fastpex-resolve-"))
        try:
            cmd = self.command(target, workdir, constraints)
            key = self.cache.key(cmd, workdir, target, constraints)
            cached = self.cache.lookup(key, target)
            if cached is not None:
                with self._count_lock:
                    self.reused += 1
                logger.debug("pip for %s: unchanged inputs and pages, reusing its report", target.name)
                return PipRun(target, True, parse_report(cached, target), "")
            self.cache.begin(target)
            with self._count_lock:
                self.runs += 1
            started = time.monotonic()
            try:
                with self._slots, self.source.pinned(target, constraints):  # smaller pages, same candidates
                    returncode, output = self._pip(cmd, workdir)
            except (subprocess.TimeoutExpired, TimeoutError):
                return PipRun(target, False, None, f"pip did not finish within {self.options.timeout:.0f} s")
            except OSError as e:
                raise PipError(f"could not run pip with `{self.pip.python}`: {e}", target=target.name) from e
            logger.debug("pip for %s took %.2fs", target.name, time.monotonic() - started)
            if returncode != 0:
                missing = tuple(
                    sorted({canonicalize_name(m.group(1)) for m in _NO_VERSIONS_RE.finditer(output)})
                )
                return PipRun(target, False, None, excerpt(output), missing, collected_from(output))
            try:
                data = json.loads((workdir / "report.json").read_text())
            except (OSError, ValueError) as e:
                raise PipError(
                    f"pip succeeded for target `{target.name}` but wrote no readable report: {e}",
                    target=target.name,
                ) from e
            run = PipRun(target, True, parse_report(data, target), "", raw_report=data)
            self.cache.store(key, target, data)
            return run
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _pip(self, cmd: Sequence[str], workdir: Path) -> Tuple[int, str]:
        """Run `cmd` (python -c LAUNCHER target.json ARGS...): forked from the warm pip when
        there is one, else as its own process. (exit code, stdout+stderr)."""
        zygote = self._warm_pip()
        if zygote is not None:
            spec = json.loads(Path(cmd[3]).read_text())
            done = zygote.run(spec, cmd[4:], workdir, self.options.timeout)
            if done is not None:
                logger.debug("pip (forked) used %.2f CPU-s", done.cpu_seconds)
                return done.returncode, done.output
        proc = subprocess.run(
            cmd,
            env=clean_env(self.pip.pythonpath, self.options.pip_scratch),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream: pip's explanation follows its ERROR line
            text=True,
            timeout=self.options.timeout,
            cwd=str(workdir),
        )
        return proc.returncode, proc.stdout or ""

    def run_many(self, jobs: Sequence[Tuple[Target, Mapping[str, str]]]) -> List[PipRun]:
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

