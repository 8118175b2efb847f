"""Index project pages kept between runs: each page URL's HTTP validators, and each parsed page
by the sha256 of the bytes it was parsed from.

Nothing here is ever served without asking the index: `IndexClient` sends the validators it
holds (`If-None-Match`, `If-Modified-Since`) and takes the cached page only on a 304; on a 200
it hashes the body and, when those bytes were parsed before, loads the parsed form instead of
parsing again. So an index without validators (this machine's PyPI mirror) still costs one
download per page and run, but no parse; one with them (real PyPI) costs a 304.

Layout (`CacheKind.PAGES`): `url/<k[:2]>/<k>.json` (k = sha256 of the credential-free URL and
the Accept header) holds the validators; `parsed/<s[:2]>/<s>.json` (s = the body's sha256) the
page's files as rows. Entries are written atomically and read defensively: anything that does
not look right is a miss (and is removed), never an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from fastpex.core.net.index import ProjectFile, ProjectPage, unsafe_filename_problem
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically
from fastpex.core.util.urls import strip_credentials

__all__ = ["PageCache", "PageValidators"]

_FORMAT = 1


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

    # -- parsed pages, per body sha256 --------------------------------------------------------
    def _parsed_path(self, body_sha256: str) -> Path:
        return self.dir / "parsed" / body_sha256[:2] / f"{body_sha256}.json"

    def load(self, body_sha256: str) -> Optional[ProjectPage]:
        """The page parsed from the bytes with this sha256, if it was stored; else None."""
        if not _is_sha256(body_sha256):
            return None
        path = self._parsed_path(body_sha256)
        try:
            doc = json.loads(path.read_bytes())
            page = _page_from_doc(doc, body_sha256)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            page = None
        if page is None:
            path.unlink(missing_ok=True)
        return page

    def store(self, page: ProjectPage) -> None:
        """Keep `page` (its `body_sha256` set) for the next time the same bytes arrive."""
        if page.body_sha256 is None or not _is_sha256(page.body_sha256):
            return
        path = self._parsed_path(page.body_sha256)
        if path.is_file():
            return
        rows = [
            [f.filename, f.url, dict(f.hashes), f.requires_python, f.yanked, f.yanked_reason,
             f.core_metadata if not isinstance(f.core_metadata, dict) else dict(f.core_metadata), f.size, f.upload_time]
            for f in page.files
        ]
        doc = {
            "format": _FORMAT,
            "sha256": page.body_sha256,
            "project": page.project,
            "url": page.url,
            "api_version": page.api_version,
            "versions": list(page.versions) if page.versions is not None else None,
            "files": rows,
        }
        # No fsync: the entry is named by the sha256 it records and checked when read, so a torn
        # one is a miss; syncing 20 MB of pages per cold lock costs more than a parse.
        write_bytes_atomically(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"), durable=False)


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _page_from_doc(doc: Any, body_sha256: str) -> Optional[ProjectPage]:
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("sha256") != body_sha256:
        return None
    files: List[ProjectFile] = []
    for row in doc["files"]:
        # The same checks parsing made: a tampered entry must not smuggle a path into a lock.
        if (
            not isinstance(row, list)
            or len(row) != 9
            or not isinstance(row[0], str)
            or not isinstance(row[1], str)
            or not isinstance(row[2], dict)
            or unsafe_filename_problem(row[0]) is not None
        ):
            return None
        files.append(ProjectFile(*row))
    versions = doc.get("versions")
    return ProjectPage(
        project=str(doc["project"]),  # type: ignore[arg-type]  # stored normalized
        url=str(doc["url"]),
        files=tuple(files),
        api_version=doc.get("api_version"),
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else None,
        body_sha256=body_sha256,
    )
