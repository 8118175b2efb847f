"""LOCK: resolve requirements for every target with pip, then merge the results into one `Lock`.

One `pip install --dry-run --ignore-installed --report` per target, run in parallel (`runner`),
through a launcher that makes pip resolve for the foreign target (`pip`).

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

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from fastpex.core.lock.errors import InvalidRequirementError, ResolveError
from fastpex.core.lock.merge import merge
from fastpex.core.lock.pip import ensure_pip
from fastpex.core.lock.reconcile import divergences, first_pass, reconcile
from fastpex.core.lock.runner import ResolveOptions, Runner, TargetReport
from fastpex.core.lock.sources import PackageSource
from fastpex.core.lock.zygote import PipZygote
from fastpex.core.model import Lock, Target

__all__ = ["ResolveResult", "resolve", "validate_requirements"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolveResult:
    lock: Lock
    divergent: Mapping[str, Mapping[str, str]]  # project -> target name -> version
    notes: Tuple[str, ...] = ()
    pip_runs: int = 0
    seconds: float = 0.0
    reports: Mapping[str, TargetReport] = field(default_factory=dict)  # final pip report per target



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
    warm_pip: Optional[PipZygote] = None,
) -> ResolveResult:
    """Resolve `requirements` for every target and merge the results into one `Lock`.
    `warm_pip`: a zygote for `options.pip` started by the caller (closed here, as the one the
    runner would start)."""
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
    runner = Runner(source, options, pip, req_strings, warm_pip=warm_pip)
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
    try:
        results = first_pass(runner, targets, base_pins, notes)
        divergent: Dict[str, Dict[str, str]] = {}
        if options.reconcile and len(targets) > 1:
            results, divergent = reconcile(runner, targets, results, base_pins, options, notes)
        else:
            divergent = divergences(results)
    finally:
        runner.close()  # the warm pip, if one was started

    lock = merge(
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

