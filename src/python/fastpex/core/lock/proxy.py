"""A loopback metadata proxy that makes `pip install --dry-run` lock without downloading wheels.

pip reads core metadata from the index only when the index advertises it (PEP 658/714); PyPI
and most private indexes don't, so pip downloads whole wheels to learn a few KB. This proxy
sits between pip and the real indexes and serves, per target,

    http://127.0.0.1:PORT/<target>/simple/<project>/       (PEP 691 JSON, or HTML on request)
    http://127.0.0.1:PORT/<target>/files/<token>/<filename>[.metadata]

Every file on a page advertises `core-metadata` and points at the proxy, so pip asks the proxy
for `<file>.metadata`, which `MetadataFetcher` answers without downloading the artifact
(advertised file, probe, zip range reads; a full download only as the last resort).

Choices, and why:
- `core-metadata: true` (no hash) unless the upstream index advertised a hash. PEP 714 allows
  `true` and pip 26.3 accepts it (`Link.metadata_link()` then carries no hash). Knowing the
  hash at page time would mean fetching metadata for every file of every page (torch has ~1000
  files), while pip only ever reads the few candidates it considers.
- The upstream sha256 hashes are passed through unchanged: pip verifies them if it downloads.
- Routing: the first `Route` whose project glob and target-name glob match decides which
  indexes a project comes from for that target. Among the chosen indexes (or all indexes, in
  order, when no route matches) the first index that has the project wins; later indexes are
  not consulted (uv's default `first-index` strategy), so a public index cannot shadow a
  private project. An unreachable index fails the page (502) instead of falling through.
  find-links directories are merged into every page, like pip's `--find-links`.
- `upload_cutoff`: files uploaded after it are left out. Index files without an upload time
  are kept (with one warning); find-links files never have one and are always kept.
- Errors (unreachable index, metadata that can't be had) are answered with 5xx/404 for pip and
  recorded as typed exceptions that the resolver raises with `raise_for_errors()`.
"""

from __future__ import annotations

import email.parser
import email.policy
import fnmatch
import functools
import hashlib
import html
import json
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from fastpex.core.net.http import HttpClient, HttpConfig, HttpError
from fastpex.core.net.index import (
    IndexClient,
    IndexClientError,
    IndexUnreachableError,
    ProjectFile,
    ProjectPage,
    find_links_files,
    normalize_project_name,
)
from fastpex.core.lock.metadata import (
    MetadataError,
    MetadataFetcher,
    MetadataResult,
    MetadataUnavailableError,
    artifact_store_path,
    download_to_store,
    head_validators,
    read_cached_hash,
)
from fastpex.core.store import sha256_file
from fastpex.core.util.urls import expand_env, redact

logger = logging.getLogger(__name__)

PEP691_JSON = "application/vnd.pypi.simple.v1+json"
_TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ProxyConfigError(Exception):
    """The proxy configuration is inconsistent; the message says which part."""


@dataclass(frozen=True)
class IndexSpec:
    """A configured index. `url` may embed credentials or `${ENV}` references; it is never
    printed unredacted."""

    name: str
    url: str

    def __repr__(self) -> str:
        return f"IndexSpec(name={self.name!r}, url={redact(self.url)!r})"


@dataclass(frozen=True)
class Route:
    """`project` (a glob on normalized names, e.g. `nvidia-*`) comes from `indexes` for targets
    whose name matches one of `platforms` (globs, e.g. `linux_*`; None = every target)."""

    project: str
    indexes: Tuple[str, ...]
    platforms: Optional[Tuple[str, ...]] = None

    def matches(self, target: str, project: str) -> bool:
        if not fnmatch.fnmatchcase(project, _normalize_glob(self.project)):
            return False
        return self.platforms is None or any(fnmatch.fnmatchcase(target, p) for p in self.platforms)


@dataclass(frozen=True)
class ProxyConfig:
    indexes: Tuple[IndexSpec, ...]
    find_links: Tuple[Path, ...] = ()
    routes: Tuple[Route, ...] = ()
    upload_cutoff: Optional[datetime] = None
    cache_root: Optional[Path] = None
    workers: int = 16
    # PEP 425 tags per target name, most preferred first: exactly the tags pip runs with for
    # that target. Optional; when given, pages for the target list only the wheels pip can use
    # (`filter_pages`: pip's link evaluation over torch's ~1000 files costs seconds), and
    # serving a page prefetches the metadata of the file pip will most likely ask for next.
    target_tags: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    # The Python version (`python_full_version`) each target resolves for: with
    # `filter_pages`, files whose Requires-Python excludes it are left off its pages too.
    target_pythons: Mapping[str, str] = field(default_factory=dict)
    # pip runs with `--only-binary=:all:`: pages leave sdists off, pip would skip them anyway.
    wheels_only: bool = False
    filter_pages: bool = True
    prefetch_versions: int = 1
    # Follow the dependencies of every metadata file served or prefetched: fetch their pages
    # (and, with `target_tags`, their likely metadata) before pip, which works serially, asks.
    speculate: bool = True
    http: HttpConfig = field(default_factory=HttpConfig)

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.indexes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ProxyConfigError(f"index names must be unique; repeated: {', '.join(duplicates)}")
        for route in self.routes:
            unknown = [n for n in route.indexes if n not in names]
            if unknown or not route.indexes:
                raise ProxyConfigError(
                    f"the route for `{route.project}` names unknown index(es) "
                    f"`{', '.join(unknown) or '(none)'}`; configured indexes: {', '.join(names) or 'none'}"
                )
        if self.upload_cutoff is not None and self.upload_cutoff.tzinfo is None:
            object.__setattr__(self, "upload_cutoff", self.upload_cutoff.replace(tzinfo=timezone.utc))


def _normalize_glob(glob: str) -> str:
    return re.sub(r"[-_.]+", "-", glob).lower()


def _token(file: ProjectFile) -> str:
    return hashlib.sha256(f"{file.url}\0{file.sha256 or ''}".encode("utf-8")).hexdigest()[:32]


class MetadataProxy:
    """The proxy; use as a context manager (`with MetadataProxy(cfg) as proxy: ...`)."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        http: Optional[HttpClient] = None,
        fetcher: Optional[MetadataFetcher] = None,
    ) -> None:
        self.config = config
        try:
            self._index_urls = {spec.name: expand_env(spec.url) for spec in config.indexes}
        except KeyError as e:
            raise ProxyConfigError(f"{e.args[0]}; set it or fix the index URL") from None
        self._own_http = http is None
        self.http = http or HttpClient(config.http, configured_indexes=self._index_urls.values())
        self.index_client = IndexClient(self.http)
        self._own_fetcher = fetcher is None
        self.fetcher = fetcher or MetadataFetcher(self.http, config.cache_root, workers=config.workers)
        self._lock = threading.Lock()
        self._pages: Dict[Tuple[str, str], "Future[Optional[ProjectPage]]"] = {}
        self._tokens: Dict[str, ProjectFile] = {}
        self._served: Dict[str, Dict[str, Dict[str, str]]] = {}  # target -> project -> url -> token
        self._errors: List[Exception] = []
        self._error_keys: set = set()
        self._warned_upload_time = False
        self._artifact_requests = 0
        self._hash_pool: Optional[ThreadPoolExecutor] = None
        self._speculation_pool: Optional[ThreadPoolExecutor] = None
        self._speculated: Set[Tuple[str, str]] = set()
        self._tag_sets: Dict[str, "frozenset[str]"] = {}
        self._rendered: Dict[Tuple[str, str, str], bytes] = {}
        self._page_requests: Dict[str, Set[str]] = {}
        self._digests: Dict[Tuple[Tuple[str, ...], str], str] = {}
        self._stopping = False
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "MetadataProxy":
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fastpex-proxy", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._stopping = True
            pools = [self._speculation_pool, self._hash_pool]
            self._speculation_pool = self._hash_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if self._own_fetcher:
            self.fetcher.close()
        if self._own_http:
            self.http.close()

    def __enter__(self) -> "MetadataProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the metadata proxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def index_url(self, target: str) -> str:
        """The `--index-url` to give pip for `target`."""
        if not _TARGET_RE.match(target):
            raise ProxyConfigError(f"`{target}` is not a usable target name (letters, digits, `._+-`)")
        return f"{self.url}/{target}/simple/"

    # -- what the resolver reads back --------------------------------------------------------
    @property
    def artifact_requests(self) -> int:
        """How many artifact downloads pip made through the proxy (locking wants zero)."""
        with self._lock:
            return self._artifact_requests

    @property
    def errors(self) -> List[Exception]:
        with self._lock:
            return list(self._errors)

    def raise_for_errors(self) -> None:
        """Raise the first recorded upstream error (pip's own message is less precise)."""
        errors = self.errors
        if errors:
            raise errors[0]

    def files_for(self, project: str, target: Optional[str] = None) -> List[ProjectFile]:
        """Upstream files (credential-free) the proxy served for `project`, for one target or
        all; each appears once, with a sha256 if one is known."""
        name = normalize_project_name(project)
        with self._lock:
            targets = [target] if target is not None else sorted(self._served)
            tokens: Dict[str, str] = {}
            for t in targets:
                tokens.update(self._served.get(t, {}).get(name, {}))
            return [self._tokens[tok] for _, tok in sorted(tokens.items())]

    def upstream_file(self, proxy_url: str) -> ProjectFile:
        """The upstream file behind a proxy file URL (as pip reports it in `download_info`)."""
        parts = unquote(urlsplit(proxy_url).path).strip("/").split("/")
        if len(parts) == 4 and parts[1] == "files":
            with self._lock:
                file = self._tokens.get(parts[2])
            if file is not None and parts[3] in (file.filename, file.filename + ".metadata"):
                return file
        raise KeyError(f"`{proxy_url}` is not a file URL this proxy served")

    def ensure_sha256(self, files: Iterable[ProjectFile]) -> List[ProjectFile]:
        """The files, each with a sha256: computed (streamed, in parallel, into the artifact
        store, cached by URL + validators) for the ones whose index gave none."""
        files = list(files)
        todo = [f for f in files if not f.sha256]
        if not todo:
            return files
        with self._lock:
            if self._hash_pool is None:
                self._hash_pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="fastpex-hash")
            pool = self._hash_pool
        futures = {f.url: pool.submit(self._compute_sha256, f) for f in todo}
        out = []
        for f in files:
            if f.sha256:
                out.append(f)
                continue
            hashed = f.with_sha256(futures[f.url].result())
            with self._lock:  # later `files_for` calls see the hash too
                self._tokens[_token(f)] = hashed
            out.append(hashed)
        return out

    def _compute_sha256(self, file: ProjectFile) -> str:
        if urlsplit(file.url).scheme == "file":
            return sha256_file(unquote(urlsplit(file.url).path))
        validators = head_validators(self.http, file.url)
        if validators is not None:
            cached = read_cached_hash(file.url, validators, self.config.cache_root)
            if cached is not None:
                return cached
        try:
            return download_to_store(self.http, file.url, None, self.config.cache_root).sha256
        except HttpError as e:
            raise MetadataUnavailableError(file.url, f"downloading it to compute its sha256 failed ({e})") from e

    # -- pages -------------------------------------------------------------------------------
    def indexes_for(self, target: str, project: str) -> Tuple[IndexSpec, ...]:
        """The indexes `project` may come from for `target`, in priority order."""
        name = normalize_project_name(project)
        by_name = {spec.name: spec for spec in self.config.indexes}
        for route in self.config.routes:
            if route.matches(target, name):
                return tuple(by_name[n] for n in route.indexes)
        return self.config.indexes

    def _upstream_page(self, spec: IndexSpec, project: str) -> Optional[ProjectPage]:
        key = (spec.name, project)
        with self._lock:
            future = self._pages.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._pages[key] = future
        assert future is not None
        if owner:
            try:
                future.set_result(self.index_client.project_page(self._index_urls[spec.name], project))
            except BaseException as e:  # noqa: BLE001
                # Sticky: the client already retried, and pip retries 502s with backoff; asking
                # the broken index again for each of those would only multiply the wait.
                future.set_exception(e)
        return future.result()

    def upstream_page_digests(self) -> Dict[str, Dict[str, str]]:
        """index name -> project -> `IndexClient.page_digest` of every upstream page this proxy
        has read so far: a superset of what a finished lock depends on (speculative reads
        included; ones still in flight or failed were not used, so they are left out)."""
        with self._lock:
            pages = list(self._pages.items())
        out: Dict[str, Dict[str, str]] = {}
        for (index, project), future in pages:
            if not future.done() or future.cancelled() or future.exception() is not None:
                continue
            page = future.result()
            digest = "absent" if page is None else page.body_sha256
            if digest:
                out.setdefault(index, {})[project] = digest
        return {index: dict(sorted(projects.items())) for index, projects in sorted(out.items())}

    def page_files(self, target: str, project: str) -> Optional[List[ProjectFile]]:
        """The files of `project`'s page for `target` (routing, find-links, cut-off applied),
        or None when no source has the project."""
        name = normalize_project_name(project)
        files: Optional[List[ProjectFile]] = None
        for spec in self.indexes_for(target, name):
            page = self._upstream_page(spec, name)
            if page is not None and page.files:
                files = list(page.files)
                logger.debug("%s for %s: from index `%s`", name, target, spec.name)
                break
        local: List[ProjectFile] = []
        for directory in self.config.find_links:
            local.extend(find_links_files(directory, name))
        if files is None and not local:
            return None
        return self._apply_cutoff(files or []) + local

    def _apply_cutoff(self, files: List[ProjectFile]) -> List[ProjectFile]:
        cutoff = self.config.upload_cutoff
        if cutoff is None:
            return files
        kept = []
        for f in files:
            uploaded = f.upload_datetime
            if uploaded is None:
                with self._lock:
                    warn, self._warned_upload_time = not self._warned_upload_time, True
                if warn:
                    logger.warning(
                        "the index gives no upload time for `%s` (and maybe others), so the upload "
                        "cut-off can't apply to it; such files are kept",
                        f.filename,
                    )
                kept.append(f)
            elif uploaded <= cutoff:
                kept.append(f)
        return kept

    def _register(self, target: str, project: str, files: Sequence[ProjectFile]) -> Dict[str, str]:
        tokens = {}
        with self._lock:
            served = self._served.setdefault(target, {}).setdefault(project, {})
            for f in files:
                token = _token(f)
                known = self._tokens.get(token)
                if known is None or (f.sha256 and not known.sha256):
                    self._tokens[token] = f
                served[f.url] = token
                tokens[f.url] = token
        return tokens

    def note_page_request(self, target: str, project: str) -> None:
        with self._lock:
            self._page_requests.setdefault(target, set()).add(normalize_project_name(project))

    def take_page_requests(self, target: str) -> List[str]:
        """The projects whose pages pip asked for for `target` since the last call."""
        with self._lock:
            return sorted(self._page_requests.pop(target, set()))

    def page_digest(self, target: str, project: str) -> str:
        """A digest of what `project`'s page tells pip for `target`: every file with everything
        pip reads of it, and which index served it. The target's own filtering (tags) is a
        function of this and of the target, which the resolver keys on separately. Equal
        digests mean pip sees the same page, which lets the resolver reuse an earlier pip run."""
        name = normalize_project_name(project)
        files = self.page_files(target, name)
        if files is None:
            return "absent"
        self._register(target, name, files)
        key = (tuple(spec.name for spec in self.indexes_for(target, name)), name)
        with self._lock:
            known = self._digests.get(key)
        if known is not None:
            return known
        h = hashlib.sha256()
        for f in files:
            advertised = f.is_wheel or f.core_metadata not in (None, False)
            row = (
                f.filename, f.url, repr(sorted(f.hashes.items())), f.requires_python, f.yanked,
                f.yanked_reason, f.upload_time, f.size, advertised,
            )
            h.update(repr(row).encode("utf-8"))
            h.update(b"\n")
        digest = h.hexdigest()
        with self._lock:  # upstream pages are fetched once per proxy, so this holds for its life
            self._digests[key] = digest
        return digest

    def render_page(self, target: str, project: str, media: str) -> Optional[bytes]:
        """The page pip gets; rendered once per (target, project, media type) per proxy."""
        name = normalize_project_name(project)
        key = (target, name, media)
        with self._lock:
            cached = self._rendered.get(key)
        if cached is not None:
            return cached
        body = self._render_page(target, name, media)
        if body is not None:
            with self._lock:
                self._rendered[key] = body
        return body

    def _render_page(self, target: str, name: str, media: str) -> Optional[bytes]:
        files = self.page_files(target, name)
        if files is None:
            return None
        tokens = self._register(target, name, files)
        with self._lock:
            self._speculated.add((target, name))
        self._maybe_prefetch(target, files)
        base = f"{self.url}/{quote(target)}/files"
        entries = []
        for f in self._usable_by(target, files):
            entry: Dict[str, object] = {
                "filename": f.filename,
                "url": f"{base}/{tokens[f.url]}/{quote(f.filename)}",
                "hashes": dict(f.hashes),
            }
            # Advertise only metadata the proxy can serve: a wheel's always (range reads, else
            # a download); an sdist's only when its index has it. pip takes an advertised
            # `.metadata` that then 404s as a hard failure, while without it pip builds the sdist.
            if f.is_wheel or f.core_metadata not in (None, False):
                entry["core-metadata"] = dict(f.core_metadata) if isinstance(f.core_metadata, Mapping) else True
            if f.requires_python:
                entry["requires-python"] = f.requires_python
            if f.yanked:
                entry["yanked"] = f.yanked_reason or True
            if f.size is not None:
                entry["size"] = f.size
            if f.upload_time:
                entry["upload-time"] = f.upload_time
            entries.append(entry)
        if media == PEP691_JSON:
            versions = sorted({str(f.version) for f in files if f.version is not None}, key=Version)
            all_sized = all(f.size is not None for f in files)
            doc = {
                "meta": {"api-version": "1.1" if all_sized else "1.0"},
                "name": name,
                "files": entries,
                "versions": versions,
            }
            return json.dumps(doc).encode("utf-8")
        return _html_page(name, entries)

    def _usable_by(self, target: str, files: Sequence[ProjectFile]) -> List[ProjectFile]:
        """The files pip could pick for `target` (all, when its tags are unknown): wheels with
        one of its tags, files whose Requires-Python admits its Python, sdists unless wheels
        only. pip would skip every other link itself, but parsing and evaluating thousands of
        them per page (torch, numpy) is most of its CPU time. `files_for` still records every
        file, so a lock can list all artifacts of a version."""
        tags = self.config.target_tags.get(target)
        if not tags or not self.config.filter_pages:
            return list(files)
        with self._lock:
            wanted = self._tag_sets.get(target)
            if wanted is None:
                wanted = self._tag_sets[target] = frozenset(tags)
        python = self.config.target_pythons.get(target)
        usable = []
        for f in files:
            if f.is_wheel:
                wheel_tags = _wheel_tags(f.filename)  # None: invalid name, which pip skips as well
                if wheel_tags is None or wheel_tags.isdisjoint(wanted):
                    continue
            elif self.config.wheels_only:
                continue
            if python and f.requires_python and not _python_admitted(f.requires_python, python):
                continue
            usable.append(f)
        return usable

    def _maybe_prefetch(self, target: str, files: Sequence[ProjectFile]) -> None:
        """Warm the metadata pip will most likely ask for next: the best wheel for the target
        among the newest versions. Needs the target's tags; a miss costs only bandwidth."""
        tags = self.config.target_tags.get(target)
        if not tags or self.config.prefetch_versions <= 0:
            return
        priority = {tag: i for i, tag in enumerate(tags)}
        by_version: Dict[Version, List[Tuple[int, ProjectFile]]] = {}
        for f in files:
            if not f.is_wheel or f.yanked or f.version is None:
                continue
            ranks = [priority[t] for t in _wheel_tags(f.filename) or () if t in priority]
            if ranks:
                by_version.setdefault(f.version, []).append((min(ranks), f))
        chosen = []
        for version in sorted(by_version, reverse=True)[: self.config.prefetch_versions]:
            chosen.append(min(by_version[version], key=lambda rf: rf[0])[1])
        for future in self.fetcher.prefetch(chosen) if chosen else ():
            future.add_done_callback(lambda f, t=target: self._after_prefetch(t, f))

    def _after_prefetch(self, target: str, future: "Future[MetadataResult]") -> None:
        if not future.cancelled() and future.exception() is None:
            self.speculate(target, future.result().data)

    def speculate(self, target: str, metadata: bytes) -> None:
        """Warm the pages (and likely metadata) of `metadata`'s dependencies for `target`.

        Only requirements without an `extra` marker are followed (others are evaluated by pip
        against the target's environment, which the proxy doesn't know: an unneeded page costs
        one request). Failures are not recorded here: pip's own request will meet them.
        """
        self._speculate_names(target, _unconditional_dependencies(metadata))

    def warm(self, target: str, requirements: Iterable[str]) -> None:
        """Start on the pages (and likely metadata) of top-level requirements (PEP 508
        strings) for `target` before pip asks for them; call it right before starting pip."""
        names = []
        for text in requirements:
            try:
                names.append(normalize_project_name(Requirement(text).name))
            except InvalidRequirement:
                continue
        self._speculate_names(target, names)

    def _speculate_names(self, target: str, names: Iterable[str]) -> None:
        if not self.config.speculate:
            return
        for name in names:
            with self._lock:
                if self._stopping or (target, name) in self._speculated:
                    continue
                self._speculated.add((target, name))
                if self._speculation_pool is None:
                    self._speculation_pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="fastpex-speculate")
                pool = self._speculation_pool
            try:
                pool.submit(self._speculate_project, target, name)
            except RuntimeError:  # shutting down
                return

    def _speculate_project(self, target: str, name: str) -> None:
        try:
            files = self.page_files(target, name)
        except Exception as e:  # noqa: BLE001 - pip's request for this page will report it
            logger.debug("speculative page fetch for %s failed: %s", name, e)
            return
        if files:
            self._maybe_prefetch(target, files)

    # -- errors ------------------------------------------------------------------------------
    def _record(self, error: Exception) -> None:
        with self._lock:
            key = (type(error), str(error))
            if key not in self._error_keys:
                self._error_keys.add(key)
                self._errors.append(error)
        logger.warning("%s", error)


@functools.lru_cache(maxsize=1 << 12)
def _python_admitted(requires_python: str, python: str) -> bool:
    """pip's own test (`check_requires_python`): an unparseable specifier admits everything."""
    try:
        return Version(python) in SpecifierSet(requires_python)
    except (InvalidSpecifier, InvalidVersion):
        return True


@functools.lru_cache(maxsize=1 << 16)
def _wheel_tags(filename: str) -> "Optional[frozenset[str]]":
    try:
        return frozenset(str(t) for t in parse_wheel_filename(filename)[3])
    except InvalidWheelFilename:
        return None


def _unconditional_dependencies(metadata: bytes) -> List[str]:
    """Normalized names of the Requires-Dist entries that don't depend on an extra."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(metadata)
    except Exception:  # noqa: BLE001 - speculation must never fail a request
        return []
    names = []
    for raw in headers.get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(str(raw))
        except InvalidRequirement:
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        names.append(normalize_project_name(requirement.name))
    return names


def _html_page(project: str, entries: Sequence[Mapping[str, object]]) -> bytes:
    links = []
    for e in entries:
        href = str(e["url"])
        hashes = e.get("hashes") or {}
        if isinstance(hashes, dict) and hashes.get("sha256"):
            href += f"#sha256={hashes['sha256']}"
        attrs = [f'href="{html.escape(href)}"']
        if e.get("requires-python"):
            attrs.append(f'data-requires-python="{html.escape(str(e["requires-python"]))}"')
        if "core-metadata" in e:
            meta = e.get("core-metadata")
            value = "true"
            if isinstance(meta, dict) and meta.get("sha256"):
                value = html.escape(f"sha256={meta['sha256']}")  # upstream text: escape it
            attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
        if "yanked" in e:
            reason = e["yanked"] if isinstance(e["yanked"], str) else ""
            attrs.append(f'data-yanked="{html.escape(reason)}"')
        links.append(f"<a {' '.join(attrs)}>{html.escape(str(e['filename']))}</a><br/>")
    body = "\n".join(links)
    return (
        "<!DOCTYPE html>\n<html><head>"
        '<meta name="pypi:repository-version" content="1.0">'
        f"<title>Links for {html.escape(project)}</title></head>\n<body>\n{body}\n</body></html>\n"
    ).encode("utf-8")


def _wants_json(accept: Optional[str]) -> bool:
    """PEP 691 negotiation, enough for pip/uv: JSON when it is acceptable and not q=0."""
    if not accept:
        return False
    best_json, best_html = -1.0, -1.0
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = pieces[0].lower()
        if media in (PEP691_JSON, "application/vnd.pypi.simple.latest+json"):
            best_json = max(best_json, quality)
        elif media in ("text/html", "application/vnd.pypi.simple.v1+html", "*/*"):
            best_html = max(best_html, quality)
    return best_json > 0 and best_json >= best_html


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: MetadataProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fastpex-proxy"
    timeout = 60
    # pip waits for every answer before its next question. Headers and body go out in separate
    # writes, and with Nagle's algorithm the body's last segment waits for the client's delayed
    # ACK of the headers: ~40 ms per request on loopback, ~5 s per pip run for ml-core.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # Paths hold only target names, project names and tokens: never credentials.
        logger.debug("proxy: " + format, *args)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        proxy = self.server.proxy
        parts = unquote(urlsplit(self.path).path).strip("/").split("/")
        try:
            if len(parts) >= 2 and _TARGET_RE.match(parts[0]) and parts[1] == "simple":
                if len(parts) == 2:
                    self._send(200, b"<!DOCTYPE html><html><body></body></html>", "text/html", head)
                elif len(parts) == 3:
                    self._page(proxy, parts[0], parts[2], head)
                else:
                    self._send(404, b"not found\n", "text/plain", head)
            elif len(parts) == 4 and _TARGET_RE.match(parts[0]) and parts[1] == "files":
                self._file(proxy, parts[0], parts[2], parts[3], head)
            else:
                self._send(404, b"not found\n", "text/plain", head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug must still answer pip, and be reported
            logger.exception("the metadata proxy failed on %s", self.path)
            proxy._record(e)  # noqa: SLF001
            self.close_connection = True
            try:
                self._send(500, b"internal error in the fastpex metadata proxy\n", "text/plain", head)
            except OSError:
                pass

    def _send(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _page(self, proxy: MetadataProxy, target: str, project: str, head: bool) -> None:
        proxy.note_page_request(target, project)
        media = PEP691_JSON if _wants_json(self.headers.get("Accept")) else "text/html"
        try:
            body = proxy.render_page(target, project, media)
        except IndexClientError as e:
            proxy._record(e)  # noqa: SLF001
            self._send(502, f"{e}\n".encode("utf-8"), "text/plain", head)
            return
        if body is None:
            self._send(404, b"no such project\n", "text/plain", head)
            return
        self._send(200, body, media, head)

    def _file(self, proxy: MetadataProxy, target: str, token: str, filename: str, head: bool) -> None:
        with proxy._lock:  # noqa: SLF001
            file = proxy._tokens.get(token)  # noqa: SLF001
        if file is None:
            self._send(404, b"unknown file\n", "text/plain", head)
            return
        if filename == file.filename + ".metadata":
            try:
                data = proxy.fetcher.get(file)
            except MetadataUnavailableError as e:
                proxy._record(e)  # noqa: SLF001
                self._send(502, f"{e}\n".encode("utf-8"), "text/plain", head)
                return
            except MetadataError as e:
                proxy._record(e)  # noqa: SLF001
                self._send(404, f"{e}\n".encode("utf-8"), "text/plain", head)
                return
            self._send(200, data, "application/octet-stream", head)
            proxy.speculate(target, data)
            return
        if filename != file.filename:
            self._send(404, b"unknown file\n", "text/plain", head)
            return
        self._artifact(proxy, file, head)

    def _artifact(self, proxy: MetadataProxy, file: ProjectFile, head: bool) -> None:
        """Stream an artifact (pip only asks when metadata did not suffice); counted."""
        with proxy._lock:  # noqa: SLF001
            proxy._artifact_requests += 1  # noqa: SLF001
        logger.warning("pip downloads `%s` through the metadata proxy", file.filename)
        if file.sha256 and artifact_store_path(file.sha256, proxy.config.cache_root).is_file():
            path = artifact_store_path(file.sha256, proxy.config.cache_root)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            if not head:
                with open(path, "rb") as fp:
                    for chunk in iter(lambda: fp.read(1 << 20), b""):
                        self.wfile.write(chunk)
            return
        try:
            response = proxy.http.get(file.url, stream=True)
        except HttpError as e:
            proxy._record(MetadataUnavailableError(file.url, str(e)))  # noqa: SLF001
            self._send(502, b"upstream unreachable\n", "text/plain", head)
            return
        try:
            if response.status != 200:
                self._send(502, f"upstream answered HTTP {response.status}\n".encode(), "text/plain", head)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            length = response.content_length
            if length is not None:
                self.send_header("Content-Length", str(length))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if not head:
                try:
                    for chunk in response.iter_chunks():
                        self.wfile.write(chunk)
                except HttpError:
                    self.close_connection = True
        finally:
            response.close()


__all__ = [
    "IndexSpec",
    "IndexUnreachableError",
    "MetadataProxy",
    "ProxyConfig",
    "ProxyConfigError",
    "Route",
]
