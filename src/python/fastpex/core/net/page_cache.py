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
"""

from __future__ import annotations

import hashlib
import itertools
import json
import marshal
import operator
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Set

import packaging

from fastpex.core.net.index import ProjectPage, parse_project_page
from fastpex.core.net.json_page import _SAFE_FILENAME, ENTRY_KEYS, FileFacts, PageFiles
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically
from fastpex.core.util.urls import strip_credentials

__all__ = ["PageCache", "PageValidators"]

_FORMAT = 2
# Bump when what `parse_json_page` or `file_facts` make of a page changes, or its layout here.
_VIEW_FORMAT = 1


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

    def load(self, body_sha256: str, project: str) -> Optional[ProjectPage]:
        """The page whose bytes have this sha256, parsed, if they were kept; else None."""
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
        return self.page(body, body_sha256, content_type if isinstance(content_type, str) else None, doc["url"], project)

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
        return page

    def keep(self, body: bytes, body_sha256: str, content_type: Optional[str], final_url: str) -> None:
        """Keep the bytes of a page whose validators were remembered, for its next 304."""
        if not _is_sha256(body_sha256):
            return
        path = self._body_path(body_sha256)
        if path.is_file():
            return
        head = json.dumps({"format": _FORMAT, "url": strip_credentials(final_url), "content_type": content_type})
        # No fsync: the entry is checked against the sha256 it is named by, so a torn one is a miss.
        write_bytes_atomically(path, head.encode("utf-8") + b"\n" + body, durable=False)


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
