"""PEP 691 JSON project pages, parsed lazily: a file becomes a `ProjectFile` only when asked for.

A lock reads pages that list 54k files (numpy alone 4,400) and serves pip the few hundred some
target can use. Making one frozen `ProjectFile` per listed file (its hashes, core metadata,
size, upload time checked and copied) was most of the cost of a page. `PageFiles` keeps what
`json.loads` gave, with the columns every file needs (filename, absolute URL), and builds a
file's hashes and its `ProjectFile` on first access, by the same rules.
Unsafe filenames are still dropped up front, so no index can reach a path through them.

What a lock derives from the filenames alone (each file's version text and tag set, the ordered
versions, the wheels newest first: `FileFacts`) is made once per page too, and `page_cache`
keeps it with the columns, so a page whose bytes were seen before is neither parsed nor indexed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union, overload

from packaging.version import Version

from fastpex.core.net import index as _index
from fastpex.core.net.index import ProjectFile, ProjectPage, normalize_project_name
from fastpex.core.util.filenames import parse_dist_filename, wheel_parts
from fastpex.core.util.urls import redact, strip_credentials

__all__ = ["ENTRY_KEYS", "FileFacts", "PageFiles", "parse_json_page"]

# Every key of a JSON file entry that anything here reads (filename and URL are columns).
ENTRY_KEYS = ("hashes", "yanked", "requires-python", "size", "core-metadata", "dist-info-metadata", "upload-time")


class FileFacts(NamedTuple):
    """What the filenames (and yanked flags) of a page's files say, target-independently."""

    version_of: List[Optional[str]]  # per file: its version's normalized text, None if none
    wheel_tags: "List[Optional[frozenset[str]]]"  # per file: a wheel's tag set, None if not a wheel
    versions: Tuple[str, ...]  # every version's text, oldest first
    wheels_newest_first: "List[List[Tuple[int, frozenset[str]]]]"  # per version with one: its non-yanked wheels


def file_facts(filenames: Sequence[str], yanked: "Callable[[int], bool]") -> FileFacts:
    """`FileFacts` of files so named (`yanked(i)`: is file i yanked), as `parse_dist_filename`
    decides them; wheels from the memoized halves (`wheel_parts`), without a per-file object."""
    versions: Dict[str, Version] = {}
    version_of: List[Optional[str]] = []
    wheel_tags: "List[Optional[frozenset[str]]]" = []
    wheels: "Dict[str, List[Tuple[int, frozenset[str]]]]" = {}  # version text -> non-yanked wheels
    add_tags, add_version = wheel_tags.append, version_of.append
    for i, filename in enumerate(filenames):
        if filename.endswith(".whl"):
            parts = wheel_parts(filename)
            if parts is None:
                add_version(None)
                add_tags(None)
                continue
            (_, version, text), tags = parts
            add_version(text)
            add_tags(tags)
            if text not in versions:
                versions[text] = version
            if not yanked(i):
                wheels.setdefault(text, []).append((i, tags))
            continue
        parsed = parse_dist_filename(filename)
        if parsed is None:
            add_version(None)
            add_tags(None)
            continue
        add_version(parsed.version_text)
        add_tags(parsed.tags)
        if parsed.version_text is not None and parsed.version is not None and parsed.version_text not in versions:
            versions[parsed.version_text] = parsed.version  # an sdist: no wheel to rank
    return FileFacts(
        version_of,
        wheel_tags,
        tuple(sorted(versions, key=versions.__getitem__)),
        [wheels[v] for v in sorted(wheels, key=versions.__getitem__, reverse=True)],
    )


logger = logging.getLogger("fastpex.core.net.index")

# What `unsafe_filename_problem` accepts, as one match: not empty, no leading dot (so neither
# `.` nor `..`), no separator, no control character. A miss goes to the function itself.
_SAFE_FILENAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*\Z")


class PageFiles(Sequence[ProjectFile]):
    """A page's files in page order. `filenames` and `urls` are columns, one entry per file;
    `hashes(i)` and `files[i]` are made on first access and kept. Either from JSON entries
    (`parse_json_page`), from the columns of `ENTRY_KEYS` a page cache kept (`columns`), or
    from made files (`PageFiles.of`)."""

    __slots__ = ("filenames", "urls", "_hashes", "_fragment_hashes", "_entries", "_columns", "_made", "_facts", "_lock")

    def __init__(
        self,
        filenames: List[str],
        urls: List[str],
        entries: Optional[List[Mapping[str, Any]]],
        fragment_hashes: Optional[Dict[int, Dict[str, str]]] = None,
        made: Optional[List[Optional[ProjectFile]]] = None,
        *,
        columns: Optional[Sequence[List[Any]]] = None,
        facts: Optional[FileFacts] = None,
    ) -> None:
        """`columns`: one list per `ENTRY_KEYS` key, None where an entry has no such key (which
        every reader here takes as JSON's null); then `entries` is None."""
        self.filenames = filenames
        self.urls = urls
        self._columns = dict(zip(ENTRY_KEYS, columns)) if columns is not None else None
        self._entries: Optional[Sequence[Mapping[str, Any]]] = entries
        if columns is not None:
            self._entries = _ColumnEntries(self._columns or {}, len(filenames))
        self._facts = facts
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

    # -- what the filenames say, once per page ------------------------------------------------
    def facts(self) -> FileFacts:
        """`FileFacts` of these files, made on first use (or given by the page cache)."""
        facts = self._facts
        if facts is None:
            facts = self._facts = file_facts(self.filenames, self.yanked)  # the same value in any thread
        return facts

    def columns(self) -> Optional[List[List[Any]]]:
        """The `ENTRY_KEYS` columns of JSON entries (for the page cache), None for made files."""
        if self._columns is not None:
            return [self._columns[key] for key in ENTRY_KEYS]
        if self._entries is None:
            return None
        entries = self._entries
        return [[e.get(key) for e in entries] for key in ENTRY_KEYS]

    def fragment_hashes(self) -> Dict[int, Dict[str, str]]:
        return self._fragment_hashes

    # -- columns that need no ProjectFile ------------------------------------------------------
    def hashes(self, i: int) -> Mapping[str, str]:
        known = self._hashes[i]
        if known is None:
            if self._columns is not None:
                raw = self._columns["hashes"][i]
            else:
                assert self._entries is not None
                raw = self._entries[i].get("hashes")
            known = _index._clean_hashes(raw) or self._fragment_hashes.get(i, {})
            self._hashes[i] = known  # the same value whichever thread gets here first
        return known

    def sha256(self, i: int) -> Optional[str]:
        value = self.hashes(i).get("sha256")
        return value.lower() if value else None

    def yanked(self, i: int) -> bool:
        if self._columns is not None:
            return bool(self._columns["yanked"][i])
        if self._entries is None:
            return self[i].yanked
        return bool(self._entries[i].get("yanked", False))

    def requires_python(self, i: int) -> Optional[str]:
        if self._columns is not None:
            value = self._columns["requires-python"][i]
        elif self._entries is None:
            return self[i].requires_python
        else:
            value = self._entries[i].get("requires-python")
        return str(value) if value else None

    def all_sized(self) -> bool:
        if self._columns is not None:
            return all(_size(size) is not None for size in self._columns["size"])
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


class _ColumnEntries(Sequence[Mapping[str, Any]]):
    """A page cache's columns read as JSON entries: entry i has the keys whose value is not None."""

    __slots__ = ("_columns", "_n")

    def __init__(self, columns: Mapping[str, List[Any]], n: int) -> None:
        self._columns, self._n = columns, n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Mapping[str, Any]]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        return {key: column[i] for key, column in self._columns.items() if column[i] is not None}


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
