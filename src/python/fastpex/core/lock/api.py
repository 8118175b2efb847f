"""LOCK as a library: `lock(LockRequest) -> LockResult`.

One call does what `fastpex lock` does: find or install pip, write the stored lock again when
its inputs and every index page it read are unchanged (`replay`), else open the package source
(the metadata proxy, warmed), resolve every target, merge, render the lock (and pylock.toml)
and write them, pylock first and the lock last (the lock is what Pants reads: the commit
point). Everything is rendered before anything is written, so an error leaves every output as
it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

# Only what deciding "unchanged" needs is imported here; the resolve path (pip runs, the proxy,
# merge, rendering) imports its modules when it runs, so a replayed lock never loads them.
from fastpex.core.lock.pip import PipTool, ensure_pip
from fastpex.core.lock.page_check import hint_key
from fastpex.core.lock.replay import LockReplay
from fastpex.core.lockfile.header import PantsHeader
from fastpex.core.util.cache import write_text_atomically
from fastpex.core.util.urls import expand_env, strip_credentials

if TYPE_CHECKING:
    from fastpex.core.lock.proxy import Route
    from fastpex.core.lock.zygote import PipZygote
    from fastpex.core.model import Lock, Target

__all__ = ["LockOptions", "LockRequest", "LockResult", "default_pip_jobs", "lock", "without_header"]

logger = logging.getLogger("fastpex.lock")


@dataclass(frozen=True)
class LockOptions:
    """How to lock; none of it but `only_binary`, `prereleases` and `reconcile` changes the lock."""

    only_binary: bool = True  # wheels only; False lets pip build sdists for their metadata
    prereleases: bool = False
    reconcile: bool = True  # re-resolve targets that disagree so they share versions
    pip: Optional[str] = None  # an explicit pip (dir with pip/, pip wheel, or a Python); default: pinned
    pip_jobs: int = 0  # pip processes in parallel; 0: `default_pip_jobs()`
    metadata_jobs: int = 16  # parallel metadata and page requests of the proxy
    use_proxy: bool = True  # False: pip talks to the indexes directly (no routes, no reuse)
    reuse: bool = True  # write the stored lock again when inputs and pages are unchanged


@dataclass(frozen=True)
class LockRequest:
    """Everything one lock depends on, and where it goes."""

    resolve_name: str
    requirements: Tuple[str, ...]  # PEP 508
    targets: Tuple[Target, ...]
    output: Path
    indexes: Tuple[Tuple[str, str], ...] = ()  # (name, URL); URLs may carry credentials or `${VAR}`
    find_links: Tuple[str, ...] = ()  # local directories
    routes: Tuple[Route, ...] = ()
    upload_cutoff: Optional[datetime] = None  # UTC
    interpreter_constraints: Tuple[str, ...] = ()
    options: LockOptions = LockOptions()
    existing_lock: Optional[Path] = None  # keep its pins where the requirements allow
    upgrade: Tuple[str, ...] = ()  # projects whose existing pins may move
    hint_lock: Optional[Path] = None  # its projects' pages are fetched early; default: `output`
    cache_root: Optional[Path] = None
    pylock_output: Optional[Path] = None
    header: Optional[PantsHeader] = field(default_factory=PantsHeader)  # None: no `//` header


@dataclass(frozen=True)
class LockResult:
    lock_text: str
    pylock_text: Optional[str]
    lock: Optional[Lock]  # None when `reused`: the stored text was written again, not parsed
    reused: bool = False
    notes: Tuple[str, ...] = ()
    pip_runs: int = 0
    seconds: float = 0.0


def default_pip_jobs(first_lock: bool = False) -> int:
    """pip runs in parallel by default. A re-lock (with an earlier lock as its hint) reads
    cached metadata and is CPU-bound: one run per usable core, 2 to 4; more only contend (2
    cores, one added: the same wall with 2 as with 4, and the leaders' slowest waits on the
    proxy 13-23 ms instead of 18-67 ms). A first lock waits on the network for metadata, and
    4 runs overlap those waits (2 cores, cold ml-core, medians of 3: 3.70 s with 4, 3.90 s
    with 3, 4.07 s with 2)."""
    if first_lock:
        return 4
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 2
    return max(2, min(4, cores))


def without_header(text: str) -> str:
    """The lock without its `//` lines: byte for byte what stripping Pants' header leaves."""
    data = text.encode("utf-8")
    return b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"//")).decode("utf-8")


def lock(request: LockRequest) -> LockResult:
    """Lock `request.requirements` for every target and write the outputs (see the module)."""
    options = request.options
    # The pip probe (a subprocess) runs while the stored lock's pages are checked.
    pip = _started(lambda: ensure_pip(
        request.cache_root, explicit=options.pip, index_url=request.indexes[0][1] if request.indexes else None
    ))
    replay, expanded = _replay(request)
    if replay is not None:
        started = time.monotonic()
        stored = replay.lookup(expanded, jobs=options.metadata_jobs, pip_version=lambda: pip().version)
        if stored is not None:
            _write_outputs(request, stored.lock_text, stored.pylock_text)
            logger.info(
                "inputs and all %d index pages unchanged since %s: wrote that lock again, without "
                "resolving, in %.1f s -> %s (--no-reuse resolves anyway)",
                stored.pages,
                datetime.fromtimestamp(stored.created, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                time.monotonic() - started,
                request.output,
            )
            return LockResult(stored.lock_text, stored.pylock_text, None, reused=True)
    return _lock_afresh(request, pip, replay)


def _lock_afresh(request: LockRequest, pip_tool: Callable[[], PipTool], replay: Optional[LockReplay]) -> LockResult:
    """Resolve, merge, render and write: everything `lock` does when no stored lock is valid."""
    from fastpex.core.lock import zygote
    from fastpex.core.util.scratch import memory_scratch

    pip = pip_tool()
    # pip's temporary files (a directory and a file per metadata file it reads) in memory, for a
    # wheels-only lock: on ext4 their churn cost more system time than fastpex's page work.
    # A lock that may build sdists keeps the default: builds can write large trees.
    scratch = memory_scratch("fastpex-pip-") if request.options.only_binary else contextlib.nullcontext(None)
    with scratch as pip_scratch:
        # The warm pip starts first: its imports (~0.35 s) overlap the resolve machinery's
        # imports, the proxy's start and the first pages, instead of following them.
        warm_pip = zygote.PipZygote(pip, scratch=pip_scratch) if zygote.fork_available() else None
        try:
            return _resolve_and_write(request, pip, replay, warm_pip, pip_scratch)
        finally:
            if warm_pip is not None:
                warm_pip.close()  # `resolve` closes it; this covers a failure before it runs


def _resolve_and_write(
    request: LockRequest,
    pip: PipTool,
    replay: Optional[LockReplay],
    warm_pip: "Optional[PipZygote]",
    pip_scratch: Optional[Path],
) -> LockResult:
    from fastpex.core.lock.build_requirements import record_build_systems
    from fastpex.core.lock.python_range import check_lock, lock_targets
    from fastpex.core.lock.resolve import resolve, validate_requirements
    from fastpex.core.lock.runner import ResolveOptions
    from fastpex.core.lock.sources import open_source
    from fastpex.core.lockfile import dumps_lock, load_lock, pylock_toml

    validate_requirements(request.requirements)
    # Each target resolves at the lowest patch the header admits (`python_range`).
    constraints = _admitted_constraints(request)
    request = dataclasses.replace(request, targets=lock_targets(request.targets, constraints))
    existing: Optional[Lock] = load_lock(request.existing_lock) if request.existing_lock else None
    options = request.options
    hinted = _hinted_projects(request)  # the projects of an earlier lock of this resolve, if any
    resolve_options = ResolveOptions(
        only_binary=options.only_binary,
        prereleases=options.prereleases,
        max_parallel=options.pip_jobs or default_pip_jobs(first_lock=not hinted),
        reconcile=options.reconcile,
        pip=pip,
        cache_root=request.cache_root,
        pip_scratch=pip_scratch,
    )
    cutoff = request.upload_cutoff
    with open_source(
        indexes=request.indexes,
        find_links=request.find_links,
        targets=request.targets,
        routes=request.routes,
        upload_cutoff=cutoff,
        cache_root=request.cache_root,
        wheels_only=options.only_binary,
        prereleases=options.prereleases,
        metadata_jobs=options.metadata_jobs,
        use_proxy=options.use_proxy,
        # the top-level requirements, and every project an earlier lock of this resolve had
        warm=list(request.requirements) + hinted,
    ) as source:
        result = resolve(
            request.requirements,
            request.targets,
            source,
            resolve_name=request.resolve_name,
            interpreter_constraints=request.interpreter_constraints,
            options=resolve_options,
            existing_lock=existing,
            upgrade=request.upgrade,
            upload_cutoff=_iso(cutoff) if cutoff else None,
            reporter=logger.info,
            warm_pip=warm_pip,
        )
        if not options.only_binary:  # the lock records that sdists were allowed, and what building them needs
            result = replace(result, lock=record_build_systems(
                result.lock, source, request.targets, index_urls=[expand_env(u) for _, u in request.indexes],
                options=resolve_options, interpreter_constraints=request.interpreter_constraints,
                upload_cutoff=_iso(cutoff) if cutoff else None, reporter=logger.info,
            ))
        pages = source.upstream_page_digests()
    check_lock(result.lock, constraints)  # before anything is rendered or written
    headered = dumps_lock(result.lock, request.header or PantsHeader())
    lock_text = headered if request.header is not None else without_header(headered)
    pylock_text = pylock_toml(result.lock) if request.pylock_output else None
    _write_outputs(request, lock_text, pylock_text)
    if replay is not None:
        replay.store(pages, lock_text, pylock_text, pip_version=pip.version)
    for note in result.notes:
        logger.info("%s", note)
    logger.info(
        "locked %d distributions for %d target(s) in %.1f s (%d pip runs) -> %s",
        len(result.lock.distributions),
        len(request.targets),
        result.seconds,
        result.pip_runs,
        request.output,
    )
    return LockResult(lock_text, pylock_text, result.lock, notes=result.notes, pip_runs=result.pip_runs, seconds=result.seconds)


def _admitted_constraints(request: LockRequest) -> Tuple[str, ...]:
    """The interpreter constraints the lock must hold for: the header's (what Pants checks)."""
    header = request.header
    if header is not None and header.interpreter_constraints is not None:
        return tuple(header.interpreter_constraints)
    return tuple(request.interpreter_constraints)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hinted_projects(request: LockRequest) -> List[str]:
    from fastpex.core.lockfile import load_lock

    hint = request.hint_lock or (request.output if request.output.is_file() else None)
    if not hint:
        return []
    try:
        return sorted({d.name for d in load_lock(hint).distributions})
    except Exception as e:  # noqa: BLE001 - only a hint: a broken or foreign lock is ignored
        logger.debug("ignoring the hint lock %s: %s", hint, e)
        return []


def _started(produce: Callable[[], PipTool]) -> Callable[[], PipTool]:
    """`produce()` running on a thread from now; the returned call waits for its result (or
    raises its error) and gives the same answer every time."""
    values: List[PipTool] = []
    errors: List[BaseException] = []

    def run() -> None:
        try:
            values.append(produce())
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the value
            errors.append(e)

    thread = threading.Thread(target=run, name="fastpex-pip", daemon=True)
    thread.start()

    def result() -> PipTool:
        thread.join()
        if errors:
            raise errors[0]
        return values[0]

    return result


def _replay(request: LockRequest) -> Tuple[Optional[LockReplay], Dict[str, str]]:
    """The lock store for these inputs and the expanded index URLs to check its pages with;
    (None, {}) when reuse is off or can't be trusted (no proxy: nothing records the pages).

    The key covers every input that can change the lock's bytes: not where things go (other
    than whether a pylock is made), how fast, or how loud. The targets are keyed as given:
    what the resolve derives from them (each at its lowest admitted patch) is a function of
    them, the interpreter constraints and the header, all in the key, and of fastpex's code,
    which the store keys too. The pip version is checked by `lookup` against the entry, so that
    its probe runs while the pages are fetched."""
    options = request.options
    if not options.use_proxy or not options.reuse:
        return None, {}
    try:
        expanded = {name: expand_env(url) for name, url in request.indexes}
    except KeyError:
        return None, {}  # the proxy reports the missing variable
    listings = []
    for directory in request.find_links:
        root = Path(directory).expanduser()
        try:
            listings.append(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(root) if e.is_file()))
        except OSError:
            return None, {}  # the resolve reports the missing directory
    existing = hashlib.sha256(request.existing_lock.read_bytes()).hexdigest() if request.existing_lock else None
    material: Dict[str, Any] = {
        "resolve": request.resolve_name,
        "requirements": list(request.requirements),
        "targets": [
            {"name": t.name, "env": dict(t.marker_environment), "tags": list(t.supported_tags)} for t in request.targets
        ],
        "indexes": [[name, strip_credentials(expanded[name])] for name, _ in request.indexes],
        "find_links": listings,
        "routes": [[r.project, list(r.indexes), list(r.platforms) if r.platforms is not None else None] for r in request.routes],
        "upload_cutoff": _iso(request.upload_cutoff) if request.upload_cutoff else None,
        "interpreter_constraints": list(request.interpreter_constraints),
        "only_binary": options.only_binary,
        "pre": options.prereleases,
        "reconcile": options.reconcile,
        "existing_lock": existing,
        "upgrade": list(request.upgrade),
        "pylock": request.pylock_output is not None,
        "header": asdict(request.header) if request.header is not None else None,
    }
    hint = hint_key(request.resolve_name, request.requirements, [expanded[name] for name, _ in request.indexes])  # what the CLI may have prefetched by
    return LockReplay(material, request.cache_root, hint=hint), expanded


def _write_outputs(request: LockRequest, lock_text: str, pylock_text: Optional[str]) -> None:
    """pylock first, the lock last: the lock is what Pants reads, so it is the commit point."""
    if pylock_text is not None and request.pylock_output is not None:
        _write_unless_same(request.pylock_output, pylock_text)
    _write_unless_same(request.output, lock_text)


def _write_unless_same(path: Path, text: str) -> None:
    """Write `text` atomically, unless the file already holds exactly those bytes (a lock written
    again for unchanged inputs is usually the one on disk: reading it is cheaper than a new file)."""
    data = text.encode("utf-8")
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_text_atomically(path, text)

