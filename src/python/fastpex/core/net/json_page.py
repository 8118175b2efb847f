"""PEP 691 JSON project pages, parsed lazily: a file becomes a `ProjectFile` only when asked for.

A lock reads pages that list 54k files (numpy alone 4,400) and serves pip the few hundred some
target can use. Making one frozen `ProjectFile` per listed file (its hashes, core metadata,
size, upload time checked and copied) was most of the cost of a page. `PageFiles` keeps what
`json.loads` gave, with the columns every file needs (filename, absolute URL), and builds a
file's hashes and its `ProjectFile` on first access, by the same rules.
Unsafe filenames are still dropped up front, so no index can reach a path through them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union, overload

from fastpex.core.net import index as _index
from fastpex.core.net.index import ProjectFile, ProjectPage, normalize_project_name
from fastpex.core.util.urls import redact, strip_credentials

__all__ = ["PageFiles", "parse_json_page"]

logger = logging.getLogger("fastpex.core.net.index")

# What `unsafe_filename_problem` accepts, as one match: not empty, no leading dot (so neither
# `.` nor `..`), no separator, no control character. A miss goes to the function itself.
_SAFE_FILENAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*\Z")


class PageFiles(Sequence[ProjectFile]):
    """A page's files in page order. `filenames` and `urls` are columns, one entry per file;
    `hashes(i)` and `files[i]` are made on first access and kept. Either from JSON entries
    (`parse_json_page`) or from made files (`PageFiles.of`)."""

    __slots__ = ("filenames", "urls", "_hashes", "_fragment_hashes", "_entries", "_made", "_lock")

    def __init__(
        self,
        filenames: List[str],
        urls: List[str],
        entries: Optional[List[Mapping[str, Any]]],
        fragment_hashes: Optional[Dict[int, Dict[str, str]]] = None,
        made: Optional[List[Optional[ProjectFile]]] = None,
    ) -> None:
        self.filenames = filenames
        self.urls = urls
        self._entries = entries
        self._fragment_hashes = fragment_hashes or {}  # file -> the hash in its URL's fragment
        self._made: List[Optional[ProjectFile]] = made if made is not None else [None] * len(filenames)
        self._hashes: List[Optional[Mapping[str, str]]] = (
            [None] * len(filenames) if made is None else [f.hashes if f is not None else None for f in made]
        )
        self._lock = threading.Lock()

    @classmethod
    def of(cls, files: Sequence[ProjectFile]) -> "PageFiles":
        """Files already made (an HTML page, find-links, a cut-off applied) as a `PageFiles`."""
        if isinstance(files, PageFiles):
            return files
        made: List[Optional[ProjectFile]] = list(files)
        return cls([f.filename for f in files], [f.url for f in files], None, None, made)

    # -- columns that need no ProjectFile ------------------------------------------------------
    def hashes(self, i: int) -> Mapping[str, str]:
        known = self._hashes[i]
        if known is None:
            assert self._entries is not None
            known = _index._clean_hashes(self._entries[i].get("hashes")) or self._fragment_hashes.get(i, {})
            self._hashes[i] = known  # the same value whichever thread gets here first
        return known

    def sha256(self, i: int) -> Optional[str]:
        value = self.hashes(i).get("sha256")
        return value.lower() if value else None

    def yanked(self, i: int) -> bool:
        if self._entries is None:
            return self[i].yanked
        return bool(self._entries[i].get("yanked", False))

    def requires_python(self, i: int) -> Optional[str]:
        if self._entries is None:
            return self[i].requires_python
        value = self._entries[i].get("requires-python")
        return str(value) if value else None

    def all_sized(self) -> bool:
        if self._entries is None:
            return all(f is not None and f.size is not None for f in self._made)
        return all(_size(e.get("size")) is not None for e in self._entries)

    def materialized(self) -> int:
        """How many `ProjectFile`s were made so far (tests: laziness is a feature)."""
        return sum(1 for f in self._made if f is not None)

    # -- Sequence ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.filenames)

    @overload
    def __getitem__(self, i: int) -> ProjectFile: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[ProjectFile]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[ProjectFile, Sequence[ProjectFile]]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        made = self._made[i]
        if made is None:
            assert self._entries is not None
            if i < 0:
                i += len(self)
            made = _file_from_entry(self._entries[i], self.filenames[i], self.urls[i], self.hashes(i))
            with self._lock:  # two threads may make the same file: the first one is kept
                if self._made[i] is None:
                    self._made[i] = made
                made = self._made[i]
        assert made is not None
        return made

    def __iter__(self) -> Iterator[ProjectFile]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PageFiles({list(self)!r})"


def _size(value: object) -> Optional[int]:
    return value if isinstance(value, int) and value >= 0 else None


def _file_from_entry(entry: Mapping[str, Any], filename: str, url: str, hashes: Mapping[str, str]) -> ProjectFile:
    """The `ProjectFile` of one JSON entry (what `parse_json_page` made of every file before)."""
    get = entry.get
    yanked = get("yanked", False)
    requires_python = get("requires-python")
    upload_time = get("upload-time")
    return ProjectFile(
        filename,
        url,
        hashes,
        str(requires_python) if requires_python else None,
        bool(yanked),
        yanked if isinstance(yanked, str) else ("" if yanked else None),
        _index._core_metadata_from_json(entry),
        _size(get("size")),
        str(upload_time) if upload_time else None,
    )


def parse_json_page(body: bytes, page_url: str, project: str) -> ProjectPage:
    """Parse a PEP 691 JSON project page. `page_url` resolves relative file URLs."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise _index.IndexPageError(page_url, f"invalid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise _index.IndexPageError(page_url, "the JSON has no `files` list")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    filenames: List[str] = []
    urls: List[str] = []
    fragment_hashes: Dict[int, Dict[str, str]] = {}
    entries: List[Mapping[str, Any]] = []
    file_url, safe = _index._file_url, _SAFE_FILENAME.match
    for entry in doc["files"]:
        if not isinstance(entry, dict):
            continue
        raw_url, raw_filename = entry.get("url"), entry.get("filename")
        if not raw_url or not raw_filename:
            continue
        filename = str(raw_filename)
        if safe(filename) is None:
            problem = _index.unsafe_filename_problem(filename)
            if problem is not None:
                logger.warning("ignoring the file %r listed on `%s`: %s", filename, redact(page_url), problem)
                continue
        url, in_fragment = file_url(page_url, str(raw_url))
        if in_fragment:
            fragment_hashes[len(urls)] = in_fragment
        filenames.append(filename)
        urls.append(url)
        entries.append(entry)
    if logger.isEnabledFor(logging.DEBUG):
        _log_other_hosts(urls, page_url)
    versions = doc.get("versions")
    return ProjectPage(
        project=normalize_project_name(str(doc.get("name") or project)),
        url=strip_credentials(page_url),
        files=PageFiles(filenames, urls, entries, fragment_hashes),
        api_version=str(meta.get("api-version")) if meta.get("api-version") else None,
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else None,
    )


def _log_other_hosts(urls: Sequence[str], page_url: str) -> None:
    page_host = _index._host_of(page_url)
    hosts: Dict[str, None] = {}
    for url in urls:
        host = _index._host_of(url)
        if host and host != page_host:
            hosts[host] = None
    if hosts:
        logger.debug("`%s` links files on other hosts: %s", redact(page_url), ", ".join(sorted(hosts)))
