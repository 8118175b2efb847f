"""Index project pages kept between runs, for indexes that send HTTP validators: each page
URL's validators, and the raw page bytes they stand for, by their sha256.

Nothing here is ever served without asking the index: `IndexClient` sends the validators it
holds (`If-None-Match`, `If-Modified-Since`) and takes the kept bytes only on a 304, checked
against their sha256 and parsed as a 200's body would be (lazily, see `json_page`). A page
from an index without validators (this machine's PyPI mirror) is parsed from the body it
came with and nothing is kept: parsing lazily costs about what loading a parsed form did.

Parsed JSON pages are kept too, for every index (`page`): a re-lock reads the same bytes for
most pages, and parsing and indexing them again (json.loads, the URLs, every filename's version
and tags) was a third of a warm lock's CPU. The entry holds `PageFiles`' columns and `FileFacts`,
not the JSON entries, in `marshal` form, which loads in about a quarter of that time. Its key is
the body's sha256 with everything else the parsed form depends on (`_view_key`), so it is never
stale: a changed page has other bytes.

Layout (`CacheKind.PAGES`): `url/<k[:2]>/<k>.json` (k = sha256 of the credential-free URL and
the Accept header) holds the validators; `bodies/<s[:2]>/<s>` (s = the body's sha256) one JSON
line (the final URL, the media type) and then the body; `views/<v[:2]>/<v>` (v = `_view_key`)
the sha256 of the rest and then the marshalled parsed page. Entries are written atomically and
read defensively: anything that does not look right is a miss (and is removed), never an error.

Bounded per page (`_note`): `slots/<q[:2]>/<q>.json` (q = sha256 of the credential-free final
URL and the media type) lists the bodies that page was last seen with, newest first, each with
its views and whether its body is kept; when a new body arrives, all but the newest
`KEPT_PER_PAGE` lose their entries (changed under the slot's file lock). A view's key holds the
slot's URL and media type, so only its slot names it. A body is shared by every page with those
bytes: each slot that keeps it leaves a marker `bodies/<s[:2]>/<s>.by/<q>`, and the body goes
with its last marker (under its shard's lock). A reader racing a removal finds nothing: a miss.
Format 1's `parsed/` directory is removed when a cache opens.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import marshal
import operator
import os
import secrets
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, List, Optional, Set, Tuple

import packaging

from fastpex.core.net.index import ProjectPage, parse_project_page
from fastpex.core.net.json_page import _SAFE_FILENAME, ENTRY_KEYS, FileFacts, PageFiles
from fastpex.core.util.cache import CacheKind, cache_dir, file_lock, lock_path_for, write_bytes_atomically
from fastpex.core.util.urls import strip_credentials

__all__ = ["PageCache", "PageValidators"]

_FORMAT = 2
# Bump when what `parse_json_page` or `file_facts` make of a page changes, or its layout here.
_VIEW_FORMAT = 1
# Bodies kept per page URL and media type: the newest, and one older (a lock alternating
# between two states of an index, or a rollback, still hits).
KEPT_PER_PAGE = 2


@dataclass(frozen=True)
class PageValidators:
    """What the index said about a page the last time it sent it in full."""

    body_sha256: str
    etag: Optional[str] = None
    last_modified: Optional[str] = None

    def request_headers(self) -> dict:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class PageCache:
    def __init__(self, cache_root: Optional[Path] = None) -> None:
        self.dir = cache_dir(CacheKind.PAGES, cache_root)
        self.views_loaded = 0  # parsed pages taken from the cache (tests, the bench)
        self.views_stored = 0
        self._count_lock = threading.Lock()
        _remove_format_1(self.dir)

    # -- validators, per page URL -------------------------------------------------------------
    def _validators_path(self, url: str, accept: str) -> Path:
        key = hashlib.sha256(f"{strip_credentials(url)}\0{accept}".encode("utf-8")).hexdigest()
        return self.dir / "url" / key[:2] / f"{key}.json"

    def validators(self, url: str, accept: str) -> Optional[PageValidators]:
        path = self._validators_path(url, accept)
        try:
            doc = json.loads(path.read_bytes())
            found = PageValidators(str(doc["sha256"]), doc.get("etag"), doc.get("last_modified"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return None
        if not _is_sha256(found.body_sha256) or not (found.etag or found.last_modified):
            return None
        return found

    def remember(self, url: str, accept: str, body_sha256: str, etag: Optional[str], last_modified: Optional[str]) -> None:
        """Keep the validators the index sent with the body of `url` (none: forget old ones)."""
        path = self._validators_path(url, accept)
        if not (etag or last_modified):
            path.unlink(missing_ok=True)
            return
        doc = {"sha256": body_sha256, "etag": etag, "last_modified": last_modified}
        write_bytes_atomically(path, json.dumps(doc).encode("utf-8"))

    # -- page bodies, per sha256 ---------------------------------------------------------------
    def _body_path(self, body_sha256: str) -> Path:
        return self.dir / "bodies" / body_sha256[:2] / body_sha256

    def load(self, body_sha256: str, project: str, final_url: Optional[str] = None) -> Optional[ProjectPage]:
        """The page whose bytes have this sha256, parsed, if they were kept; else None.

        `final_url` is the URL the 304 answered for: the same bytes can be kept for two URLs
        (a mirror), and relative file links must resolve against this one, not the first
        URL that kept them."""
        if not _is_sha256(body_sha256):
            return None
        path = self._body_path(body_sha256)
        try:
            data = path.read_bytes()
            head, sep, body = data.partition(b"\n")
            doc = json.loads(head)
            if (
                not sep
                or not isinstance(doc, dict)
                or doc.get("format") != _FORMAT
                or not isinstance(doc.get("url"), str)
                or hashlib.sha256(body).hexdigest() != body_sha256
            ):
                raise ValueError("not a page body entry")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            return None
        content_type = doc.get("content_type")
        return self.page(
            body, body_sha256, content_type if isinstance(content_type, str) else None, final_url or doc["url"], project
        )

    # -- parsed pages, per body sha256 and everything else they depend on -----------------------
    def page(self, body: bytes, body_sha256: str, content_type: Optional[str], final_url: str, project: str) -> ProjectPage:
        """`parse_project_page` of a body whose sha256 is `body_sha256`: the kept parsed form
        when this body was parsed before (with the same URL, media type and project), else
        parsed now and, for a JSON page, its columns and facts kept for the next lock."""
        key = _view_key(body_sha256, content_type, final_url, project)
        path = self.dir / "views" / key[:2] / key
        loaded = _load_view(path)
        if loaded is not None:
            with self._count_lock:
                self.views_loaded += 1
            self._note(final_url, content_type, body_sha256, view=key)
            return replace(loaded, body_sha256=body_sha256)
        page = replace(parse_project_page(body, content_type, final_url, project), body_sha256=body_sha256)
        files = page.files
        if isinstance(files, PageFiles):
            columns = files.columns()
            if columns is not None:
                facts = files.facts()  # made now for the view, which takes them from here
                payload = marshal.dumps(
                    (
                        _VIEW_FORMAT, page.project, page.url, page.api_version, page.versions,
                        files.filenames, files.urls, columns, files.fragment_hashes(), tuple(facts),
                    )
                )
                # No fsync: a torn entry fails its checksum and is a miss.
                write_bytes_atomically(path, hashlib.sha256(payload).digest() + payload, durable=False)
                with self._count_lock:
                    self.views_stored += 1
                self._note(final_url, content_type, body_sha256, view=key)  # after the write: nothing unlisted
        return page

    def keep(self, body: bytes, body_sha256: str, content_type: Optional[str], final_url: str) -> None:
        """Keep the bytes of a page whose validators were remembered, for its next 304."""
        if not _is_sha256(body_sha256):
            return
        path = self._body_path(body_sha256)
        slot = _slot_key(final_url, content_type)
        marker = path.with_name(f"{path.name}.by") / slot
        if marker.exists() and path.is_file():  # kept for this page: only its own slot removes it
            self._note(final_url, content_type, body_sha256, body=True)
            return
        with file_lock(self._body_shard_lock(body_sha256)):  # ordered with the last marker's removal
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            if not path.is_file():
                head = json.dumps({"format": _FORMAT, "url": strip_credentials(final_url), "content_type": content_type})
                # No fsync: the entry is checked against the sha256 it is named by, so a torn one is a miss.
                write_bytes_atomically(path, head.encode("utf-8") + b"\n" + body, durable=False)
        self._note(final_url, content_type, body_sha256, body=True)

    # -- bounds: the bodies each page was last seen with ------------------------------------------
    def _body_shard_lock(self, body_sha256: str) -> Path:
        """One lock per `bodies/<s[:2]>` shard (256 in all): a lock per body would outlive it."""
        return lock_path_for(self.dir / "bodies" / body_sha256[:2])

    def _slot_path(self, slot: str) -> Path:
        return self.dir / "slots" / slot[:2] / f"{slot}.json"

    def _note(self, final_url: str, content_type: Optional[str], body_sha256: str, *, view: Optional[str] = None, body: bool = False) -> None:
        """Record that the page at `final_url` (this media type) now has this body (and its
        `view`, or its kept `body`), and remove the entries of all but its `KEPT_PER_PAGE`
        newest bodies. A page seen again as it was costs one small read and no lock."""
        slot = _slot_key(final_url, content_type)
        path = self._slot_path(slot)
        seen = _read_slot(path)
        if seen and seen[0][0] == body_sha256 and (view is None or view in seen[0][1]) and (not body or seen[0][2]):
            return
        with file_lock(lock_path_for(path)):
            seen = _read_slot(path)
            mine = next((e for e in seen if e[0] == body_sha256), (body_sha256, [], False))
            views = mine[1] + ([view] if view is not None and view not in mine[1] else [])
            entries = [(body_sha256, views, mine[2] or body)] + [e for e in seen if e[0] != body_sha256]
            # Removed before the record stops naming them: a crash in between leaks nothing.
            for old_sha, old_views, old_body in entries[KEPT_PER_PAGE:]:
                for old_view in old_views:
                    (self.dir / "views" / old_view[:2] / old_view).unlink(missing_ok=True)
                if old_body:
                    self._unname_body(old_sha, slot)
            record = [[sha, list(vs), kept] for sha, vs, kept in entries[:KEPT_PER_PAGE]]
            # No fsync: a torn record reads as empty, which only forgets what to remove.
            write_bytes_atomically(path, json.dumps(record).encode("utf-8"), durable=False)

    def _unname_body(self, body_sha256: str, slot: str) -> None:
        """Drop `slot`'s marker on a kept body; remove the body if no other page names it."""
        path = self._body_path(body_sha256)
        markers = path.with_name(f"{path.name}.by")
        with file_lock(self._body_shard_lock(body_sha256)):
            (markers / slot).unlink(missing_ok=True)
            try:
                markers.rmdir()  # fails while another page's marker is in it
            except FileNotFoundError:
                pass
            except OSError:
                return
            path.unlink(missing_ok=True)


def _slot_key(final_url: str, content_type: Optional[str]) -> str:
    """Names a page for its bounds: the credential-free final URL and the media type (both in
    every `_view_key` of it, so no other slot names its views)."""
    return hashlib.sha256(json.dumps([strip_credentials(final_url), content_type]).encode("utf-8")).hexdigest()


_Entry = Tuple[str, List[str], bool]


def _read_slot(path: Path) -> List[_Entry]:
    """The bodies a page was last seen with, newest first; [] if none or not readable. Only
    sha256-shaped names are taken: a tampered record cannot point a removal elsewhere."""
    try:
        record = json.loads(path.read_bytes())
        entries: List[_Entry] = []
        for sha, views, kept in record:
            if isinstance(sha, str) and _is_sha256(sha) and isinstance(views, list) and all(isinstance(v, str) and _is_sha256(v) for v in views):
                entries.append((sha, views, kept is True))
        return entries
    except (OSError, ValueError, TypeError):
        return []


def _remove_format_1(kind_dir: Path) -> None:
    """Format 1 kept parsed pages in `parsed/`, which nothing reads now: renamed to a work dir's
    name (so the temp sweep finishes what a killed remover leaves) and removed. Costs a stat
    once gone."""
    old = kind_dir / "parsed"
    if not old.is_dir():
        return
    doomed = kind_dir / f".parsed.{secrets.token_hex(4)}.work"
    try:
        os.rename(old, doomed)
    except OSError:
        return  # another process took it first
    shutil.rmtree(doomed, ignore_errors=True)


def _view_key(body_sha256: str, content_type: Optional[str], final_url: str, project: str) -> str:
    """Names a parsed page: the body's bytes, what resolves and labels them (the final URL, the
    media type, the project asked for), and what makes and stores the parsed form (this
    module's format, packaging's version rules, marshal's format)."""
    parts = [_VIEW_FORMAT, marshal.version, packaging.__version__, body_sha256, content_type, strip_credentials(final_url), project]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def _load_view(path: Path) -> Optional[ProjectPage]:
    """The page kept at `path`, or None: missing, or damaged (then removed), never an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        if len(data) < 32 or hashlib.sha256(data[32:]).digest() != data[:32]:
            raise ValueError("checksum")
        fmt, project, url, api_version, versions, filenames, urls, columns, fragments, facts = marshal.loads(data[32:])
        n = len(filenames)
        if not (
            fmt == _VIEW_FORMAT
            and isinstance(project, str)
            and isinstance(url, str)
            and (api_version is None or isinstance(api_version, str))
            and (versions is None or (isinstance(versions, tuple) and _types(versions) <= {str}))
            and isinstance(urls, list)
            and len(urls) == n
            and _types(urls) <= {str}
            and isinstance(columns, list)
            and len(columns) == len(ENTRY_KEYS)
            and all(isinstance(c, list) and len(c) == n for c in columns)
            and isinstance(fragments, dict)
            and _valid_facts(facts, n)
            # what parsing guarantees, checked again: no cache entry reaches a path either
            and all(map(_SAFE_FILENAME.match, filenames))
        ):
            raise ValueError("not a parsed page")
        files = PageFiles(filenames, urls, None, fragments, columns=columns, facts=FileFacts(*facts))
    except (ValueError, TypeError, EOFError, IndexError):
        path.unlink(missing_ok=True)
        return None
    return ProjectPage(project=project, url=url, files=files, api_version=api_version, versions=versions)  # type: ignore[arg-type]


def _types(values: Iterable[object]) -> Set[type]:
    return set(map(type, values))


def _valid_facts(facts: Any, n: int) -> bool:
    """Checks in C-level passes (a per-element Python check would cost a third of a load)."""
    if not (isinstance(facts, tuple) and len(facts) == len(FileFacts._fields)):
        return False
    version_of, wheel_tags, versions, wheels = facts
    if not (
        isinstance(version_of, list)
        and len(version_of) == n
        and _types(version_of) <= {str, type(None)}
        and isinstance(wheel_tags, list)
        and len(wheel_tags) == n
        and _types(wheel_tags) <= {frozenset, type(None)}
        and isinstance(versions, tuple)
        and _types(versions) <= {str}
        and isinstance(wheels, list)
        and _types(wheels) <= {list}
    ):
        return False
    ranked = list(itertools.chain.from_iterable(wheels))
    if not _types(ranked) <= {tuple} or not set(map(len, ranked)) <= {2}:
        return False
    indexes = list(map(operator.itemgetter(0), ranked))
    return not indexes or (_types(indexes) <= {int} and 0 <= min(indexes) and max(indexes) < n)


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
