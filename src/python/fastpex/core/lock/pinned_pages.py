"""Pages narrowed to a pip run's pins: while a run constrained to `name==version` is in flight
for a target, the proxy lists only that version's files on `name`'s page for the target.

Why: pip parses and evaluates every link of a page (`parse_links`, `evaluate_links`) before it
applies the constraint; with pages already cut to the target's usable files that was still
~20% of a pinned pip run's CPU (docs/benchmarks.md, "Lock CPU: pip's side, second pass"). A
follower (or a minimal re-lock) runs with every project pinned, so nearly all of that is work
on versions pip is not allowed to take.

Why the resolution cannot change: with the constraint `name==V` pip only ever considers the
candidates whose version matches `==V` (`CandidateEvaluator.get_applicable_candidates`, which
yanked-file handling also runs after); a page narrowed to a superset of those offers it the same
candidates in the same order. What is kept is a superset: every file whose version matches
`==V` as PEP 440 defines it (`1.0` matches `1.0.0` and `1.0+local`), and every file whose
version fastpex can't parse (pip decides about those). When no file matches, the full page is
served, so pip's "(from versions: ...)" text and its "none" case stay as they were. Two runs in
flight for the same target at once (not what the resolver does today) get full pages.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping, Optional, Sequence

from packaging.specifiers import InvalidSpecifier, Specifier
from packaging.version import Version

from fastpex.core.lock.project_view import ProjectView
from fastpex.core.util.filenames import parse_dist_filename

__all__ = ["PinnedPages", "narrow"]


class PinnedPages:
    """Per target, the pins of the one pip run in flight (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: Dict[str, Optional[Mapping[str, str]]] = {}  # target -> pins (None: don't narrow)
        self._runs: Dict[str, int] = {}

    @contextmanager
    def pinned(self, target: str, pins: Mapping[str, str]) -> Iterator[None]:
        """Narrow `target`'s pages to `pins` (canonical name -> version) for the block."""
        with self._lock:
            running = self._runs.get(target, 0)
            self._runs[target] = running + 1
            # a second run for the target while one is in flight: both get full pages from now on
            self._pins[target] = dict(pins) if running == 0 and pins else None
        try:
            yield
        finally:
            with self._lock:
                self._runs[target] -= 1
                if not self._runs[target]:
                    del self._runs[target]
                    self._pins.pop(target, None)

    def pin(self, target: str, project: str) -> Optional[str]:
        """The version `project` (normalized name) is pinned to for `target`'s run, if any."""
        with self._lock:
            pins = self._pins.get(target)
            return None if pins is None else pins.get(project)


def narrow(view: ProjectView, usable: Sequence[int], pin: Optional[str]) -> Sequence[int]:
    """The indexes of `usable` (into `view.files`) a run pinned to `==pin` can take (see the
    module); `usable` itself when there is no pin or no usable file matches. Reads only the
    view's filename column: no `ProjectFile` is made."""
    if pin is None:
        return usable
    try:
        spec = Specifier(f"=={pin}")
    except InvalidSpecifier:
        return usable
    filenames = view.files.filenames
    fits: Dict[Version, bool] = {}
    kept = []
    matched = False
    for i in usable:
        parsed = parse_dist_filename(filenames[i])
        version = None if parsed is None else parsed.version
        if version is None:  # no version fastpex can read: pip decides
            kept.append(i)
            continue
        fit = fits.get(version)
        if fit is None:
            fit = fits[version] = spec.contains(version, prereleases=True)
        if fit:
            kept.append(i)
            matched = True
    return kept if matched else usable
