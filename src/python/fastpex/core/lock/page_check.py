"""LOCK, warm: today's digests of a stored lock's index pages, fetched from as early as the CLI can.

Checking the pages of an unchanged lock is a network wait (each request waits ~20 ms for its
first byte; ml-core's 81 pages are 24.7 MB) that used to start only after every module the
replay key needs was imported. The CLI knows the pages to ask for much sooner: the lock last
stored for the same resolve, requirements and indexes read them, and a small
pointer in the lock store (`hints/<hint_key>.json`: index names and projects, no URLs, so no
credentials) lists them. So the CLI starts a `PageCheck` for those pages right after parsing
argv (`prefetch`), and `LockReplay.lookup` takes it over (`claim`) once the real key is known.

The pointer is only a guess about which pages to fetch: what decides "unchanged" is still the
stored entry under the real key, compared page by page with digests fetched in this run by the
same `IndexClient.page_digest`, with the same index URLs. A pointer that names other pages
costs a wasted fetch, never a stale lock: pages the entry needs and the prefetch lacks are
fetched then, pages it fetched that the entry does not name are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from fastpex.core.net.errors import HttpConnectionError, HttpError, ResponseTooLargeError
from fastpex.core.net.http import HttpClient, HttpConfig, gunzip_document
from fastpex.core.net.index import SIMPLE_ACCEPT, IndexClient, IndexUnreachableError, project_url
from fastpex.core.net.response import Response
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically
from fastpex.core.util.urls import strip_credentials

if TYPE_CHECKING:
    from fastpex.core.net.page_cache import PageCache

__all__ = ["Page", "PageCheck", "claim", "drop_unclaimed", "hint_key", "prefetch", "remember_pages"]

logger = logging.getLogger(__name__)

Page = Tuple[str, str]  # (index name, project) as the stored entry names them

_HINTS = "hints"


def hint_key(resolve_name: str, requirements: Sequence[str], index_urls: Sequence[str]) -> str:
    """What the CLI can compute from argv alone, before the modules the real key needs load:
    the resolve, its requirements and its (credential-free) index URLs. Not the output path:
    Pants runs each lock in a new sandbox, and the pages depend on what is locked, not where."""
    material = [resolve_name, list(requirements), [strip_credentials(url) for url in index_urls]]
    return hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()


def _hint_path(cache_root: Optional[Path], hint: str) -> Path:
    return cache_dir(CacheKind.LOCKS, cache_root) / _HINTS / f"{hint}.json"


def _read_hint(cache_root: Optional[Path], hint: str) -> Optional[Tuple[List[Page], bool]]:
    """The pages `hint` points at, and whether any of them came with validators last time."""
    try:
        doc = json.loads(_hint_path(cache_root, hint).read_bytes())
        pages = [(str(index), str(project)) for index, project in doc["pages"]]
        validators = doc.get("validators", True) is not False
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (pages, validators) if pages else None


def remember_pages(cache_root: Optional[Path], hint: str, pages: Iterable[Page], *, validators: bool = True) -> None:
    """Point `hint` at these pages (a cache that can't be written only costs the next run time).
    `validators=False`: none of them came with ETag/Last-Modified, so the next early check
    does not look for kept validators (and does not load the page cache to do so)."""
    doc = {"pages": sorted(pages), "validators": validators}
    try:
        path = _hint_path(cache_root, hint)
        path.parent.mkdir(exist_ok=True)
        write_bytes_atomically(path, json.dumps(doc).encode("utf-8"))
    except OSError as e:
        logger.debug("could not write the page hint %s: %s", hint, e)


class PageCheck:
    """`IndexClient.page_digest` of each page, on `jobs` threads from construction on; one
    keep-alive client (one name lookup per host, see `net.addresses`) for all of them.

    `validators=False` sends no conditional requests (the index sent no validators last time):
    that only costs full bodies where a 304 might have come, a digest is a digest either way;
    validators that do come are kept for the next check, as `IndexClient` keeps them."""

    def __init__(
        self,
        pages: Sequence[Page],
        index_urls: Mapping[str, str],
        cache_root: Optional[Path],
        *,
        http_config: Optional[HttpConfig] = None,
        jobs: int = 16,
        validators: bool = True,
    ) -> None:
        self.index_urls = {index: index_urls[index] for index, _ in pages}  # KeyError: an unknown index
        self.http_config = http_config
        self.validators = validators
        self.saw_validators = False  # did any response carry ETag/Last-Modified?
        self._cache_root = cache_root
        self._http = HttpClient(http_config or HttpConfig(max_retries=1), configured_indexes=index_urls.values())
        self._page_cache: Optional[PageCache] = None
        self._client: Optional[IndexClient] = None
        self._cache_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(pages))), thread_name_prefix="fastpex-replay")
        self._futures: Dict[Page, Future] = {
            page: self._pool.submit(self._digest, self.index_urls[page[0]], page[1]) for page in dict.fromkeys(pages)
        }
        self._pool.shutdown(wait=False)  # the workers end when the queue is done
        self._pending = len(self._futures)
        self._lock = threading.Lock()
        if not self._futures:
            self._http.close()
        for future in self._futures.values():
            future.add_done_callback(self._one_done)

    @property
    def pages(self) -> Tuple[Page, ...]:
        return tuple(self._futures)

    def covers(self, page: Page, index_urls: Mapping[str, str]) -> bool:
        """Was `page` asked of the URL `index_urls` names for its index today?"""
        return page in self._futures and self.index_urls.get(page[0]) == index_urls.get(page[0])

    def digests(self, pages: Iterable[Page]) -> Dict[Page, str]:
        """Wait for these pages' digests; the first failure is raised (callers resolve then)."""
        return {page: self._futures[page].result() for page in pages}

    def cancel(self, keep: Iterable[Page] = ()) -> None:
        """Drop the requests not yet sent, but those of `keep`; those in flight finish on their own."""
        kept = set(keep)
        for page, future in self._futures.items():
            if page not in kept:
                future.cancel()

    def _digest(self, index_url: str, project: str) -> str:
        """`IndexClient.page_digest`, minus its per-16-KiB Python work for a page without kept
        validators: the body is read in 1 MiB slices into one buffer and hashed in place (a
        whole-document read joins ~1,500 TLS records per MB in Python; on ml-core's 24.7 MB
        that was ~40 ms of CPU). A page whose validators are kept asks conditionally, as the
        client does; a body that breaks off is asked again once, as a whole-document read is."""
        url = project_url(index_url, project)
        if self.validators and self._pages().validators(url, SIMPLE_ACCEPT) is not None:
            digest = self._index_client().page_digest(index_url, project)  # a 304 is an unchanged page
            if self._pages().validators(url, SIMPLE_ACCEPT) is not None:  # still sent (or a 304)
                self.saw_validators = True
            return digest
        for attempt in (0, 1):
            try:
                return self._fetch_digest(url)
            except HttpConnectionError as e:
                if attempt:
                    raise IndexUnreachableError(url, str(e)) from e
        raise AssertionError("unreachable")

    def _fetch_digest(self, url: str) -> str:
        headers = {"Accept": SIMPLE_ACCEPT, "Accept-Encoding": "gzip"}  # what a whole-document GET sends
        try:
            response = self._http.get(url, headers=headers, stream=True)
        except HttpError as e:
            raise IndexUnreachableError(url, str(e)) from e
        if response.status in (404, 410):
            response.close()
            return "absent"
        if not response.ok:
            response.close()
            raise IndexUnreachableError(url, f"HTTP {response.status} {response.reason}".rstrip())
        limit = self._http.config.max_document_bytes
        raw = _read_body(response, limit)
        gzipped = response.header("Content-Encoding", "").lower() == "gzip"
        body = gunzip_document(raw, limit, url) if gzipped else raw
        sha = hashlib.sha256(body).hexdigest()
        etag, last_modified = response.header("ETag"), response.header("Last-Modified")
        if etag or last_modified:  # as `IndexClient` does: the next ask is conditional
            self.saw_validators = True
            pages = self._pages()
            pages.keep(bytes(body), sha, response.header("Content-Type"), response.url)
            pages.remember(url, SIMPLE_ACCEPT, sha, etag, last_modified)
        return sha

    def _pages(self) -> PageCache:
        with self._cache_lock:
            if self._page_cache is None:
                from fastpex.core.net.page_cache import PageCache

                self._page_cache = PageCache(self._cache_root)
            return self._page_cache

    def _index_client(self) -> IndexClient:
        pages = self._pages()
        with self._cache_lock:
            if self._client is None:
                self._client = IndexClient(self._http, pages)
            return self._client

    def _one_done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1
            last = self._pending == 0
        if last:
            self._http.close()


_SLICE = 1 << 20  # bytes per read: the pace (`HttpConfig.total_timeout`) is checked between reads


def _read_body(response: Response, limit: int) -> bytearray:
    """The raw body (as sent, maybe gzip), at most `limit` bytes, read into one buffer."""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise ResponseTooLargeError(response.url, limit)
    buffer = bytearray((declared if declared is not None else _SLICE) + 1)  # +1: the read that sees the end
    view = memoryview(buffer)
    size = 0
    try:
        while True:
            if size == len(buffer):
                if size > limit:
                    response.close()
                    raise ResponseTooLargeError(response.url, limit)
                view.release()
                buffer.extend(bytes(min(len(buffer), limit + 1)))
                view = memoryview(buffer)
            got = response.readinto(view[size : min(len(buffer), size + _SLICE)])
            if not got:
                break
            size += got
    finally:
        view.release()
    if size > limit:
        raise ResponseTooLargeError(response.url, limit)
    del buffer[size:]
    return buffer


_started: Dict[Tuple[str, str], PageCheck] = {}
_started_lock = threading.Lock()


def prefetch(cache_root: Optional[Path], hint: str, index_urls: Mapping[str, str], *, jobs: int = 16) -> bool:
    """Start checking the pages `hint` points at, for `claim` to take over; False if there is
    no usable pointer (nothing started)."""
    found = _read_hint(cache_root, hint)
    if found is None or any(index not in index_urls for index, _ in found[0]):
        return False
    check = PageCheck(found[0], index_urls, cache_root, jobs=jobs, validators=found[1])
    with _started_lock:
        old = _started.pop((str(cache_root), hint), None)
        _started[(str(cache_root), hint)] = check
    if old is not None:
        old.cancel()
    return True


def claim(cache_root: Optional[Path], hint: str) -> Optional[PageCheck]:
    """The check `prefetch` started for `hint`, once (the caller decides which pages it covers)."""
    with _started_lock:
        return _started.pop((str(cache_root), hint), None)


def drop_unclaimed() -> None:
    """Cancel the early checks nobody took over (the request failed, or reuse was off)."""
    with _started_lock:
        checks = list(_started.values())
        _started.clear()
    for check in checks:
        check.cancel()
