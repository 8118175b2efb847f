"""The metadata proxy's speculation: start on what pip will ask for before it asks.

pip works serially: a page, then the metadata of the file it picks, then its dependencies'
pages. `Speculator` runs ahead of it on a thread pool: serving a page prefetches the metadata
of the wheel pip will most likely pick (`prefetch`), every metadata file served or prefetched
starts on its dependencies' pages (`speculate`), and `warm` starts on the top-level
requirements. A guess follows what pip will do: a dependency is followed where its marker
holds in the target's environment, for no extra or for an extra some requirement asked of
the project (`dask[complete]`: dask's `extra == "complete"` dependencies, and on through
`uvicorn[standard]`), and the version guessed is the newest one the requirements seen so far
admit (torch pins its CUDA wheels `==`; guessing each one's newest release left pip to wait
~150 ms per CUDA wheel, one after another, in a cold lock; not following extras did the same
for the scale set's ~60 extras-only dependencies).
A wrong guess costs only bandwidth; failures are left for pip's own request.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion

from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata import MetadataResult, declared_requirements
from fastpex.core.lock.project_view import ProjectView
from fastpex.core.net.index import normalize_project_name

if TYPE_CHECKING:
    from fastpex.core.lock.proxy import ProxyConfig

__all__ = ["Speculator"]

logger = logging.getLogger("fastpex.core.lock.proxy")  # the proxy's log, as proxy_http's


def _admitted_by(wanted: SpecifierSet, prereleases: bool) -> Callable[[str], bool]:
    """Would pip take this version text for `wanted`? As pip: a pre-release only with `--pre`
    or where the specifier names one (`SpecifierSet.contains`). False for a text it can't
    compare (serving a page calls this: a guess must never fail pip's request)."""
    allow = prereleases or bool(wanted.prereleases)  # explicit: packaging 26's default admits them

    def admits(version: str) -> bool:
        try:
            return wanted.contains(version, prereleases=allow)
        except InvalidVersion:
            return False

    return admits


class Speculator:
    """Speculation for one `MetadataProxy`: `view(target, project)` is the proxy's page lookup
    (built once per lock, so a page speculated on is the page pip gets)."""

    def __init__(
        self,
        config: "ProxyConfig",
        fetcher: MetadataFetcher,
        view: Callable[[str, str], Optional[ProjectView]],
    ) -> None:
        self.config = config
        self.fetcher = fetcher
        self._view = view
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._stopping = False
        self._speculated: Set[Tuple[str, str]] = set()
        self._prefetched: Set[Tuple[str, str]] = set()
        self._priorities: Dict[str, Dict[str, int]] = {}
        self._declared: Dict[bytes, Tuple[Optional[str], List[Requirement]]] = {}  # metadata -> its name, deps
        self._extras: Dict[Tuple[str, str], Set[str]] = {}  # (target, project) -> extras asked of it
        self._metadata_of: Dict[Tuple[str, str], List[bytes]] = {}  # (target, project) -> metadata speculated on
        self._wanted: Dict[Tuple[str, str], SpecifierSet] = {}  # (target, project) -> what was asked of it
        self._marker_holds: Dict[Tuple[str, str, str], bool] = {}  # (target, marker text, extra) -> holds

    def served(self, target: str, name: str) -> None:
        """`name`'s page was served for `target`: pip has it, nothing left to speculate on."""
        with self._lock:
            self._speculated.add((target, name))

    def detach(self) -> Optional[ThreadPoolExecutor]:
        """Stop starting work; the pool (if any) for the caller to shut down."""
        with self._lock:
            self._stopping = True
            pool, self._pool = self._pool, None
        return pool

    def prefetch(self, target: str, view: ProjectView) -> None:
        """Warm the metadata pip will most likely ask for next: the best wheel for the target
        among the newest versions that the requirements seen for the project admit, once per
        (target, project). Needs the target's tags; a miss costs only bandwidth."""
        tags = self.config.target_tags.get(target)
        if not tags or self.config.prefetch_versions <= 0:
            return
        with self._lock:
            if (target, view.name) in self._prefetched:
                return
            self._prefetched.add((target, view.name))
            priority = self._priorities.get(target)
            if priority is None:
                priority = self._priorities[target] = {tag: i for i, tag in enumerate(tags)}
            wanted = self._wanted.get((target, view.name))
        admits = _admitted_by(wanted or SpecifierSet(), self.config.prereleases)
        chosen = view.best_wheels(priority, self.config.prefetch_versions, admits)
        for future in self.fetcher.prefetch(chosen) if chosen else ():
            future.add_done_callback(functools.partial(self._after_prefetch, target))

    def _after_prefetch(self, target: str, future: "Future[MetadataResult]") -> None:
        if not future.cancelled() and future.exception() is None:
            self.speculate(target, future.result().data)

    def speculate(self, target: str, metadata: bytes) -> None:
        """Warm the pages (and likely metadata) of `metadata`'s dependencies for `target`: those
        whose marker holds there for no extra or an extra asked of the project so far (one
        asked later follows its dependencies then). Failures are not recorded here: pip's own
        request will meet them."""
        with self._lock:
            declared = self._declared.get(metadata)
        if declared is None:
            declared = declared_requirements(metadata)
            with self._lock:
                self._declared[metadata] = declared
        name, requirements = declared
        with self._lock:
            extras: Set[str] = set()
            if name is not None:
                seen = self._metadata_of.setdefault((target, name), [])
                if metadata not in seen:
                    seen.append(metadata)
                extras = set(self._extras.get((target, name), ()))
        self._speculate_requirements(target, requirements, extras)

    def warm(self, target: str, requirements: Iterable[str]) -> None:
        """Start on the pages (and likely metadata) of top-level requirements (PEP 508
        strings) for `target` before pip asks for them; call it right before starting pip."""
        parsed = []
        for text in requirements:
            try:
                parsed.append(Requirement(text))
            except InvalidRequirement:
                continue
        self._speculate_requirements(target, parsed, set())

    def _speculate_requirements(self, target: str, requirements: Iterable[Requirement], extras: Set[str]) -> None:
        """Follow those of `requirements` (of a project asked for with `extras`) that pip will."""
        environment = self.config.target_markers.get(target)
        names = []
        again: List[Tuple[List[bytes], Set[str]]] = []  # metadata already seen, for extras asked only now
        with self._lock:
            for req in requirements:
                if req.marker is not None and not self._holds(target, req, environment, extras):
                    continue
                name = normalize_project_name(req.name)
                names.append(name)
                if req.specifier:
                    known = self._wanted.get((target, name))
                    self._wanted[(target, name)] = req.specifier if known is None else known & req.specifier
                if req.extras:
                    asked = self._extras.setdefault((target, name), set())
                    new = {str(normalize_project_name(e)) for e in req.extras} - asked
                    if new:
                        asked.update(new)
                        seen = self._metadata_of.get((target, name))
                        if seen:
                            again.append((list(seen), set(asked)))
        self._speculate_names(target, names)
        for seen, asked in again:
            for metadata in seen:
                declared = self._declared.get(metadata)
                if declared is not None:
                    self._speculate_requirements(target, declared[1], asked)

    def _holds(
        self, target: str, req: Requirement, environment: "Optional[Mapping[str, str]]", extras: Set[str]
    ) -> bool:
        """Does `req`'s marker hold for `target`, for no extra or one of `extras`? Without the
        target's environment only extra-free requirements are followed. Memoized; call under
        the lock."""
        assert req.marker is not None
        text = str(req.marker)
        if environment is None:
            return "extra" not in text
        for extra in ("", *sorted(extras)) if "extra" in text else ("",):
            key = (target, text, extra)
            known = self._marker_holds.get(key)
            if known is None:
                try:
                    known = req.marker.evaluate({**environment, "extra": extra})
                except Exception:  # noqa: BLE001 - a marker packaging can't evaluate: follow it
                    known = True
                self._marker_holds[key] = known
            if known:
                return True
        return False

    def _speculate_names(self, target: str, names: Iterable[str]) -> None:
        if not self.config.speculate:
            return
        with self._lock:  # one pass under the lock: most names were seen before
            if self._stopping:
                return
            new = [name for name in dict.fromkeys(names) if (target, name) not in self._speculated]
            if not new:
                return
            self._speculated.update((target, name) for name in new)
            if self._pool is None:
                # Half the fetchers' threads: a speculated page is mostly parsing, under the GIL,
                # and more threads only contend (2 cores, cold, alternating, 8 of 8 pairs:
                # scale 6.81-7.40 s against 7.03-8.01 s with 16, ml-core 3.79-4.34 against
                # 3.87-4.69 s; one added alike); metadata fetches keep `workers`.
                self._pool = ThreadPoolExecutor(max(4, self.config.workers // 2), thread_name_prefix="fastpex-speculate")
            pool = self._pool
        for name in new:
            try:
                pool.submit(self._speculate_project, target, name)
            except RuntimeError:  # shutting down
                return

    def _speculate_project(self, target: str, name: str) -> None:
        try:
            view = self._view(target, name)
        except Exception as e:  # noqa: BLE001 - pip's request for this page will report it
            logger.debug("speculative page fetch for %s failed: %s", name, e)
            return
        if view is not None and view.files:
            self.prefetch(target, view)
