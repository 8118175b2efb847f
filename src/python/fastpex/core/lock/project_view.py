"""One project's files as the proxy's pages list them, indexed once per lock.

A lock reads each project page once but looks at its files many times: every target's page,
its prefetch choice, the digest the resolution cache checks, the merge's files of each locked
version. Done per target, that per-file work (tokens, wheel tags, versions, JSON entries) was
most of fastpex's own CPU for a big lock (torch and numpy list thousands of files). A
`ProjectView` does it once, target-independently; what a target adds (which of its tag sets
are usable, which wheel it ranks best) is memoized per target, over the few hundred distinct
tag sets rather than the files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import threading
from concurrent.futures import Future
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from fastpex.core.net.index import ProjectFile
from fastpex.core.net.json_page import PageFiles
from fastpex.core.util.filenames import parse_dist_filename

__all__ = ["ProjectView", "file_in_views", "file_token"]

def file_token(file: ProjectFile) -> str:
    """The proxy's name for an upstream file in its `/files/<token>/` URLs."""
    return _token(file.url, file.sha256)


def _token(url: str, sha256: Optional[str]) -> str:
    return hashlib.sha256(f"{url}\0{sha256 or ''}".encode("utf-8")).hexdigest()[:32]


def file_in_views(
    token: str,
    filename: Optional[str],
    views: Union[Sequence["ProjectView"], Mapping[Tuple[Tuple[str, ...], str], "Future[Optional[ProjectView]]"]],
) -> Optional[ProjectFile]:
    """The file that `views` (a proxy's futures by (indexes, project), or views) name `token`
    (see `ProjectView.file_of_token`): first among those of the project `filename` names (a
    lookup then costs a few files, not a pass over every page), then any other."""
    if not isinstance(views, Mapping):
        ordered: Iterable[ProjectView] = views
    else:
        name = filename[: -len(".metadata")] if filename and filename.endswith(".metadata") else filename
        parsed = parse_dist_filename(name) if name else None
        # Generators, not lists: the own project's view almost always has it, so the other
        # views are never listed (a list of each, per metadata request and per merged file,
        # was a pass over every view twice). Callers hold the proxy's lock: `views` is still.
        own = (future for key, future in views.items() if parsed is not None and key[1] == parsed.name)
        rest = (future for key, future in views.items() if parsed is None or key[1] != parsed.name)
        ordered = _built(itertools.chain(own, rest))
    for view in ordered:
        found = view.file_of_token(token, filename)
        if found is not None:
            return found
    return None


def _built(futures: Iterable["Future[Optional[ProjectView]]"]) -> Iterator["ProjectView"]:
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            view = future.result()
            if view is not None:
                yield view


class ProjectView:
    """`files` (routing, cut-off and find-links already applied) with everything derived from
    them that does not depend on the target. Immutable after construction except for memos,
    which only ever fill in. Works from `PageFiles`' columns: a `ProjectFile` is made only for
    a file that is served, chosen or asked for by token (see `json_page`)."""

    def __init__(self, name: str, files: Sequence[ProjectFile], source_digest: Optional[str] = None) -> None:
        """`source_digest`, when given, stands for everything `files` were made from (the raw
        page bytes, the index, the cut-off, the find-links files): then it is the digest."""
        self.name = name
        self.files: PageFiles = PageFiles.of(files)
        columns = self.files
        n = len(columns)
        self._tokens: List[Optional[str]] = [None] * n  # made when a file is served or looked up
        self._all_tokens: Optional[Dict[str, int]] = None
        self._by_filename: Optional[Dict[str, List[int]]] = None
        # What the filenames say, made once per page (and kept between locks by `page_cache`).
        facts = columns.facts()
        self._wheel_tags: List[Optional["frozenset[str]"]] = facts.wheel_tags
        self._version_of: List[Optional[str]] = facts.version_of  # per file: its version's text
        self.versions: Tuple[str, ...] = facts.versions
        self._wheels_newest_first = facts.wheels_newest_first
        self._lock = threading.Lock()
        self._by_version: Optional[Dict[Optional[str], List[int]]] = None
        self._of_version: Dict[Optional[str], Sequence[int]] = {}
        self._last_of_url: Optional[Dict[str, int]] = None
        self._all_sized: Optional[bool] = None
        self._usable: Dict[Tuple[object, ...], Tuple[int, ...]] = {}
        self._json_parts: List[Optional[Tuple[str, str]]] = [None] * n
        self._digest: Optional[str] = source_digest

    # -- tokens, made lazily ------------------------------------------------------------------
    def token(self, i: int) -> str:
        """The proxy's name for `files[i]` (`file_token`), from its URL and sha256 only."""
        known = self._tokens[i]
        if known is None:
            known = self._tokens[i] = _token(self.files.urls[i], self.files.sha256(i))
        return known

    def tokens_made(self) -> int:
        """How many tokens were made so far (tests: laziness is a feature)."""
        return sum(1 for t in self._tokens if t is not None)

    @property
    def tokens(self) -> Tuple[str, ...]:
        return tuple(self.token(i) for i in range(len(self.files)))

    @property
    def token_by_url(self) -> Dict[str, str]:
        """url -> token; a later file with the same URL wins (as registering them in order did)."""
        return dict(zip(self.files.urls, self.tokens))

    def file_of_token(self, token: str, filename: Optional[str] = None) -> Optional[ProjectFile]:
        """The first file this view names `token`, else None. With the `filename` of its URL
        (`<name>` or `<name>.metadata`) only the files so named get a token made."""
        if filename is None:
            if self._all_tokens is None:  # token -> the first file with it
                tokens = self.tokens
                self._all_tokens = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1)))
            i = self._all_tokens.get(token)
            return None if i is None else self.files[i]
        by_filename = self._by_filename
        if by_filename is None:
            by_filename = {}
            for j, name in enumerate(self.files.filenames):
                by_filename.setdefault(name, []).append(j)
            self._by_filename = by_filename
        names = (filename, filename[: -len(".metadata")]) if filename.endswith(".metadata") else (filename,)
        for j in sorted(j for name in names for j in by_filename.get(name, ())):
            if self.token(j) == token:
                return self.files[j]
        return None

    # -- what every target shares -------------------------------------------------------------

    def tokens_of_version(self, version: Optional[str]) -> Tuple[str, ...]:
        return tuple(self.token(i) for i in self.indexes_of_version(version))

    def indexes_of_version(self, version: Optional[str]) -> Sequence[int]:
        """The files of `version` (the normalized text of a filename's version; None: files
        without a PEP 440 version), unique by URL and in URL order: the `_versions_index`
        entry, made for this version alone (the merge asks each page for one or two versions;
        sorting every URL of a 15,000-file page for them was most of the merge's CPU)."""
        known = self._of_version.get(version)
        if known is None:
            if self._by_version is not None:
                known = self._by_version.get(version, ())
            else:
                urls = self.files.urls
                last = self._last_of_url
                if last is None:
                    last = self._last_of_url = dict(zip(urls, range(len(urls))))  # a later file wins
                ofs = itertools.compress(range(len(urls)), map(operator.eq, self._version_of, itertools.repeat(version)))
                known = sorted((i for i in ofs if last[urls[i]] == i), key=urls.__getitem__)
            self._of_version[version] = known  # the same value in any thread
        return known

    def version_texts(self) -> Sequence[Optional[str]]:
        return list(self._versions_index())

    def _versions_index(self) -> Dict[Optional[str], List[int]]:
        """version text -> files, by URL; built on first use (the merge asks for a few projects)."""
        by_version = self._by_version
        if by_version is None:
            index_of_url = dict(zip(self.files.urls, range(len(self.files))))  # a later file wins
            by_version = {}
            for url in sorted(index_of_url):
                i = index_of_url[url]
                by_version.setdefault(self._version_of[i], []).append(i)
            self._by_version = by_version
        return by_version

    @property
    def all_sized(self) -> bool:
        if self._all_sized is None:
            self._all_sized = self.files.all_sized()
        return self._all_sized

    def digest(self) -> str:
        """What the page tells pip (see `MetadataProxy.page_digest`): the source digest, else
        every file with everything pip reads of it."""
        if self._digest is None:
            h = hashlib.sha256()
            for f in self.files:
                advertised = f.is_wheel or f.core_metadata not in (None, False)
                row = (
                    f.filename, f.url, repr(sorted(f.hashes.items())), f.requires_python, f.yanked,
                    f.yanked_reason, f.upload_time, f.size, advertised,
                )
                h.update(repr(row).encode("utf-8"))
                h.update(b"\n")
            self._digest = h.hexdigest()
        return self._digest

    # -- per target ---------------------------------------------------------------------------
    def usable(
        self,
        tags: "Optional[frozenset[str]]",
        python: Optional[str],
        wheels_only: bool,
        admits: Callable[[str, str], bool],
    ) -> Tuple[int, ...]:
        """Indexes of the files a target with these `tags` (all files, when None) could pick:
        wheels with one of them, files whose Requires-Python `admits` its Python, sdists unless
        `wheels_only`; as `proxy_http.usable_files` decides, per tag set instead of per file."""
        if tags is None:
            return tuple(range(len(self.files)))
        key = (tags, python, wheels_only)
        with self._lock:
            known = self._usable.get(key)
        if known is not None:
            return known
        fits: Dict["frozenset[str]", bool] = {}
        out = []
        requires_python = self.files.requires_python
        for i, filename in enumerate(self.files.filenames):
            wheel_tags = self._wheel_tags[i]
            if wheel_tags is not None:
                fit = fits.get(wheel_tags)
                if fit is None:
                    fit = fits[wheel_tags] = not wheel_tags.isdisjoint(tags)
                if not fit:
                    continue
            elif wheels_only or filename.endswith(".whl"):  # an invalid wheel name pip skips as well
                continue
            if python:
                wanted = requires_python(i)
                if wanted and not admits(wanted, python):
                    continue
            out.append(i)
        result = tuple(out)
        with self._lock:
            self._usable[key] = result
        return result

    def best_wheels(
        self, priority: Mapping[str, int], versions: int, admits: Optional[Callable[[str], bool]] = None
    ) -> List[ProjectFile]:
        """For each of the newest `versions` versions (of those `admits`, given a version's
        text, when given) that has a wheel with one of the tags in `priority` (tag -> rank,
        lower is better), that version's best-ranked wheel."""
        chosen: List[ProjectFile] = []
        ranks: Dict["frozenset[str]", Optional[int]] = {}
        for wheels in self._wheels_newest_first:
            if admits is not None:
                version = self._version_of[wheels[0][0]]
                if version is None or not admits(version):
                    continue
            best: Optional[Tuple[int, int]] = None
            for i, tags in wheels:
                rank = ranks.get(tags, -1)
                if rank == -1:
                    found = [priority[t] for t in tags if t in priority]
                    rank = ranks[tags] = min(found) if found else None
                if rank is not None and (best is None or rank < best[0]):
                    best = (rank, i)
            if best is not None:
                chosen.append(self.files[best[1]])
                if len(chosen) >= versions:
                    break
        return chosen

    def json_page(self, indexes: Sequence[int], base: str) -> bytes:
        """The PEP 691 page listing `files[i] for i in indexes`, its file URLs under `base`:
        byte for byte what `proxy_http.page_body` renders, from entries serialized once."""
        parts = self._json_parts
        entries = []
        for i in indexes:
            part = parts[i]
            if part is None:  # only the files some target can use are ever serialized
                part = parts[i] = _json_entry_parts(self.files[i], self.token(i))
            entries.append(part[0] + base + part[1])
        joined = ", ".join(entries)
        meta = json.dumps({"api-version": "1.1" if self.all_sized else "1.0"})
        return (
            f'{{"meta": {meta}, "name": {json.dumps(self.name)}, "files": [{joined}], '
            f'"versions": {json.dumps(list(self.versions))}}}'
        ).encode("utf-8")


def _json_entry_parts(f: ProjectFile, token: str) -> Tuple[str, str]:
    """`json.dumps` of the file's page entry, split around the base of its URL."""
    rest: Dict[str, object] = {"hashes": dict(f.hashes)}
    # Advertise only metadata the proxy can serve (see `proxy_http.page_body`).
    if f.is_wheel or f.core_metadata not in (None, False):
        rest["core-metadata"] = dict(f.core_metadata) if isinstance(f.core_metadata, Mapping) else True
    if f.requires_python:
        rest["requires-python"] = f.requires_python
    if f.yanked:
        rest["yanked"] = f.yanked_reason or True
    if f.size is not None:
        rest["size"] = f.size
    if f.upload_time:
        rest["upload-time"] = f.upload_time
    # quote() leaves no `"` or `\\` in the path, and the base is ASCII: the URL is its own JSON.
    head = '{"filename": ' + json.dumps(f.filename) + ', "url": "'
    tail = "/" + token + "/" + quote(f.filename) + '", ' + json.dumps(rest)[1:]
    return head, tail
