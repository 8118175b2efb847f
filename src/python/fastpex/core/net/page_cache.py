"""Index project pages kept between runs, for indexes that send HTTP validators: each page
URL's validators, and the raw page bytes they stand for, by their sha256.

Nothing here is ever served without asking the index: `IndexClient` sends the validators it
holds (`If-None-Match`, `If-Modified-Since`) and takes the kept bytes only on a 304, checked
against their sha256 and parsed as a 200's body would be (lazily, see `json_page`). A page
from an index without validators (this machine's PyPI mirror) is parsed from the body it
came with and nothing is kept: parsing lazily costs about what loading a parsed form did.

Layout (`CacheKind.PAGES`): `url/<k[:2]>/<k>.json` (k = sha256 of the credential-free URL and
the Accept header) holds the validators; `bodies/<s[:2]>/<s>` (s = the body's sha256) one JSON
line (the final URL, the media type) and then the body. Entries are written atomically and read
defensively: anything that does not look right is a miss (and is removed), never an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from fastpex.core.net.index import ProjectPage, parse_project_page
from fastpex.core.util.cache import CacheKind, cache_dir, write_bytes_atomically
from fastpex.core.util.urls import strip_credentials

__all__ = ["PageCache", "PageValidators"]

_FORMAT = 2


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
        page = parse_project_page(body, content_type if isinstance(content_type, str) else None, doc["url"], project)
        return replace(page, body_sha256=body_sha256)

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


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
