"""LOCK, warm: write a stored lock again when its inputs and every index page it read are unchanged.

A lock is a function of its inputs (requirements, targets, indexes, routes, options, the pip
and fastpex code that made it) and of the upstream pages it read: metadata is keyed by artifact
hash, which the pages carry. So a finished lock is stored under a digest of its inputs, with the
sha256 of every raw page body the metadata proxy fetched (or "absent" for a 404). A later run
with the same inputs fetches those pages again in parallel, hashes the bytes without parsing
them and, when every one matches, writes the stored lock: no pip, no metadata, no page parsing.
The check asks the index, so a new upload changes a page and the lock is resolved afresh (uv's
warm `pip compile` is the bar here: it is HTTP-cache driven, ~2 s for ml-core on this machine).

Files whose index gives no sha256 are hashed once by download and then trusted by URL, as the
resolution cache does; an index that rewrites bytes under an unchanged URL and page is caught
later by fetch's sha256 verification, never silently built.

`PageBoundEntries` is the one mechanism behind both reuses: this whole-lock replay and the
per-pip-run resolution cache (`runner`). Each stores an entry under a digest of its inputs with
the digests of the pages it read; they differ only in which pages they check (raw upstream
bodies here, the proxy's per-target view there) and so in how they ask for today's digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from fastpex.core.lock import page_check
from fastpex.core.lock.page_check import Page, PageCheck
from fastpex.core.net.http import HttpConfig
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically

__all__ = ["LockReplay", "PageBoundEntries", "StoredLock", "code_digest"]

logger = logging.getLogger(__name__)

_FORMAT = 2  # 2: the pip version is in the entry, not the key


class PageBoundEntries:
    """JSON entries keyed by a digest of their inputs, each recording the page digests it is
    valid for (`{"pages": ..., **payload}`); whoever reads one checks those pages itself."""

    def __init__(self, kind: CacheKind, cache_root: Optional[Path]) -> None:
        self.dir = cache_dir(kind, cache_root)

    @staticmethod
    def key(material: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str) -> Optional[Dict[str, Any]]:
        """The entry stored under `key` (with a dict of `pages`), or None if none is readable."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("pages"), dict):
            return None
        return entry

    def save(self, key: str, pages: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        entry = {**payload, "pages": pages}
        write_bytes_atomically(self.path(key), json.dumps(entry, sort_keys=True).encode("utf-8"))


def code_digest() -> str:
    """sha256 over fastpex's core sources: a code change must never replay an older lock."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        if not path.name.endswith("_test.py") and path.name != "conftest.py":
            h.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class StoredLock:
    lock_text: str
    pylock_text: Optional[str]
    created: float  # time.time() when stored
    pages: int


class LockReplay:
    """One resolve's inputs (as JSON-able `material`) -> its stored lock, if still valid."""

    def __init__(self, material: Mapping[str, object], cache_root: Optional[Path], *, hint: Optional[str] = None) -> None:
        """`hint`: `page_check.hint_key` of the request, under which the CLI may have started
        this lock's page check early (`page_check.prefetch`); the pages are pointed at it."""
        self.entries = PageBoundEntries(CacheKind.LOCKS, cache_root)
        self.cache_root = cache_root
        self.hint = hint
        self.key = self.entries.key({"format": _FORMAT, "code": code_digest(), "inputs": material})
        self.path = self.entries.path(self.key)

    def lookup(
        self,
        index_urls: Mapping[str, str],
        *,
        http_config: Optional[HttpConfig] = None,
        jobs: int = 16,
        pip_version: Optional[Callable[[], str]] = None,
    ) -> Optional[StoredLock]:
        """The stored lock, if every page it read is unchanged today and it was made by the pip
        `pip_version()` names (asked after the pages, so a slow probe overlaps their fetches);
        None otherwise (also on any error: the full resolve will meet and report it properly)."""
        early = page_check.claim(self.cache_root, self.hint) if self.hint is not None else None
        entry = self.entries.load(self.key)
        if entry is None:
            if early is not None:
                early.cancel()
            return None
        try:
            pages: Dict[str, Dict[str, str]] = entry["pages"]
            stored = StoredLock(
                lock_text=entry["lock"],
                pylock_text=entry.get("pylock"),
                created=float(entry["created"]),
                pages=sum(len(p) for p in pages.values()),
            )
        except (OSError, ValueError, KeyError, TypeError):
            stored = None
        if stored is None or not pages or any(index not in index_urls for index in pages):
            if early is not None:
                early.cancel()
            return None
        checks = [(index, project, digest) for index, projects in pages.items() for project, digest in projects.items()]
        wanted: List[Page] = [(index, project) for index, project, _ in checks]
        started = time.monotonic()
        try:
            fetched = self._todays_digests(wanted, index_urls, http_config, jobs, early)
        except Exception as e:  # noqa: BLE001 - any failure means "resolve afresh"
            logger.debug("page check for the stored lock failed (%s): resolving", e)
            return None
        now = [fetched[page] for page in wanted]
        if pip_version is not None:
            try:
                pip_now = pip_version()
            except Exception as e:  # noqa: BLE001 - the resolve asks again and reports it
                logger.debug("no pip version for the stored lock (%s): resolving", e)
                return None
            if entry.get("pip") != pip_now:
                logger.info("the stored lock was made with pip %s, this is pip %s: resolving", entry.get("pip"), pip_now)
                return None
        changed = [f"{index}:{project}" for (index, project, digest), today in zip(checks, now) if digest != today]
        logger.debug("checked %d pages for the stored lock in %.2f s", len(checks), time.monotonic() - started)
        if changed:
            logger.info(
                "%d of %d index page(s) changed since the last lock (%s%s): resolving",
                len(changed), len(checks), ", ".join(changed[:5]), " ..." if len(changed) > 5 else "",
            )
            return None
        return stored

    def _todays_digests(
        self,
        wanted: List[Page],
        index_urls: Mapping[str, str],
        http_config: Optional[HttpConfig],
        jobs: int,
        early: Optional[PageCheck],
    ) -> Dict[Page, str]:
        """Each wanted page's digest fetched in this run: from the check the CLI started early
        (`early`) where it asked the same index URL with the same config, the rest fetched now."""
        if early is not None and early.http_config != http_config:
            early.cancel()
            early = None
        covered = [page for page in wanted if early is not None and early.covers(page, index_urls)]
        covered_set = set(covered)
        rest = [page for page in wanted if page not in covered_set]
        late = PageCheck(rest, index_urls, self.cache_root, http_config=http_config, jobs=jobs) if rest else None
        logger.debug(
            "page check: %d of %d pages from the early check (which asked for %d)",
            len(covered), len(wanted), len(early.pages) if early is not None else 0,
        )
        if early is not None and (rest or len(covered) != len(early.pages)):
            early.cancel(keep=covered_set)
        today = early.digests(covered) if early is not None else {}
        if late is not None:
            today.update(late.digests(rest))
        if self.hint is not None:
            saw = any(c.saw_validators for c in (early, late) if c is not None)
            if early is None or set(early.pages) != set(wanted) or early.validators != saw:
                page_check.remember_pages(self.cache_root, self.hint, wanted, validators=saw)
        return today

    def store(
        self,
        pages: Mapping[str, Mapping[str, str]],
        lock_text: str,
        pylock_text: Optional[str],
        *,
        pip_version: Optional[str] = None,
    ) -> None:
        if not any(pages.values()):
            return
        payload = {"created": time.time(), "lock": lock_text, "pylock": pylock_text, "pip": pip_version}
        try:
            self.entries.save(self.key, {index: dict(projects) for index, projects in pages.items()}, payload)
        except OSError as e:  # a cache that can't be written only costs the next run time
            logger.warning("could not store the lock for reuse at %s: %s", self.path, e)
            return
        if self.hint is not None:
            page_check.remember_pages(self.cache_root, self.hint, [(i, p) for i, projects in pages.items() for p in projects])
