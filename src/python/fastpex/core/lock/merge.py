"""The merge: every target's pip report into one multi-platform `Lock`.

Distributions are keyed by (name, version), each with every file of that version its targets'
indexes list (not only the one pip read), hashed; each target's resolve records its packages
with the extras and dependency edges pip's choices imply, walked with the target's environment
by `util.deps.walk` (the same walk selection uses, so the two cannot disagree).
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fastpex.core.lock.errors import ResolveError
from fastpex.core.lock.parsed import requirement
from fastpex.core.lock.runner import ReportItem, TargetReport
from fastpex.core.lock.sources import PackageSource
from fastpex.core.model import (
    Artifact,
    Lock,
    LockedDistribution,
    ResolvedPackage,
    Target,
    TargetResolve,
)
from fastpex.core.net.index import ProjectFile
from fastpex.core.util.deps import marker_holds, walk
from fastpex.core.util.urls import filename_from_url, strip_credentials

__all__ = ["merge"]

logger = logging.getLogger("fastpex.core.lock.resolve")


def _parsed_requires_dist(item: ReportItem) -> List[Requirement]:
    out = []
    for raw in item.requires_dist:
        req = requirement(raw)
        if req is None:
            logger.warning("ignoring invalid Requires-Dist `%s` of %s", raw, item.name)
        else:
            out.append(req)
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
            req = requirement(raw)
            if req is None:
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



def merge(
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
    # Each file's URL is stripped once, not once per target that lists it and again for its artifact.
    stripped = functools.lru_cache(maxsize=None)(strip_credentials)
    for key in sorted(chosen):
        name, version = key
        items = chosen[key]
        artifacts = _artifacts_for(name, version, items, chosen_by[key], source, stripped)
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


def _artifacts_for(
    name: str,
    version: str,
    items: Sequence[ReportItem],
    targets: Sequence[Target],
    source: PackageSource,
    strip: Callable[[str], str] = strip_credentials,
) -> Tuple[Artifact, ...]:
    """Every file of (name, version) the targets' indexes list, plus what pip picked."""
    picked = {}
    for item, target in zip(items, targets):
        url = source.upstream_url(item.url, target) if item.url else ""
        if url:
            picked[url] = item
    files: Dict[str, ProjectFile] = {}
    direct = all(i.is_direct for i in items)
    if not direct:
        for target in targets:
            for f in source.files_of_version(name, version, target):
                url = strip(f.url)
                if f.yanked and url not in picked:
                    continue
                files.setdefault(url, f)
    for url, item in picked.items():
        if url not in files:
            files[url] = ProjectFile(
                filename=filename_from_url(url),
                url=url,
                hashes={"sha256": item.sha256} if item.sha256 else {},
                requires_python=item.requires_python,
            )
        elif not files[url].sha256 and item.sha256:
            files[url] = files[url].with_sha256(item.sha256)
    hashed = source.ensure_sha256([files[u] for u in sorted(files)])
    artifacts = []
    for f in hashed:
        sha = f.sha256
        if not sha:
            raise ResolveError(f"no sha256 for `{f.filename}` of `{name}=={version}`; the lock needs one")
        artifacts.append(
            Artifact(
                url=strip(f.url),
                filename=f.filename,
                sha256=sha,
                size=f.size,
                upload_time=f.upload_time,
                requires_python=f.requires_python,
            )
        )
    return tuple(sorted(artifacts, key=lambda a: (a.filename, a.url)))
