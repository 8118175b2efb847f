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
- Pages (`proxy_http`) advertise `core-metadata` and pass upstream hashes through.
- Speculation (`speculation`): pages and metadata pip will likely ask for next are fetched
  ahead of it, on their own pool.
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

import fnmatch
import hashlib
import json
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

from fastpex.core.errors import UserError
from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata_store import remote_sha256
from fastpex.core.lock.pinned_pages import PinnedPages, narrow
from fastpex.core.lock.project_view import ProjectView, file_in_views, file_token
from fastpex.core.lock.proxy_http import PEP691_JSON, TARGET_RE, ProxyServer, page_body, python_admitted
from fastpex.core.lock.speculation import Speculator
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.page_cache import PageCache
from fastpex.core.net.index import (
    IndexClient,
    ProjectFile,
    ProjectPage,
    find_links_files,
    normalize_project_name,
)
from fastpex.core.util.urls import expand_env, redact

logger = logging.getLogger(__name__)


class ProxyConfigError(UserError):
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
    # The PEP 508 environment each target resolves in: speculation follows only the
    # dependencies whose markers hold there (torch's CUDA wheels are no guess for macOS).
    target_markers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # pip runs with `--only-binary=:all:`: pages leave sdists off, pip would skip them anyway.
    wheels_only: bool = False
    # pip runs with `--pre`: speculation may guess pre-releases (without it, as pip, only where
    # a requirement's specifier names one).
    prereleases: bool = False
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
        # pages kept between locks: asked for conditionally, never parsed twice (`net.page_cache`)
        self.index_client = IndexClient(self.http, PageCache(config.cache_root))
        self._own_fetcher = fetcher is None
        self.fetcher = fetcher or MetadataFetcher(self.http, config.cache_root, workers=config.workers)
        self._lock = threading.Lock()
        self._pages: Dict[Tuple[str, str], "Future[Optional[ProjectPage]]"] = {}
        # (the indexes a project comes from, project) -> its view: what every target routed
        # the same way sees, parsed and indexed once per lock
        self._views: Dict[Tuple[Tuple[str, ...], str], "Future[Optional[ProjectView]]"] = {}
        self._tokens: Dict[str, ProjectFile] = {}
        self._served: Dict[str, Dict[str, ProjectView]] = {}  # target -> project -> view served
        self._errors: List[Exception] = []
        self._error_keys: set = set()
        self._warned_upload_time = False
        self._artifact_requests = 0
        self._hash_pool: Optional[ThreadPoolExecutor] = None
        self._speculation = Speculator(config, self.fetcher, self.view)
        self._tag_sets: Dict[str, "frozenset[str]"] = {}
        self._rendered: Dict[Tuple[str, str, str, Optional[str]], bytes] = {}
        self.pinned_pages = PinnedPages()  # the pins of each target's pip run in flight
        self._page_requests: Dict[str, Set[str]] = {}
        self._server: Optional[ProxyServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "MetadataProxy":
        if self._server is None:
            self._server = ProxyServer(self)
            self._thread = threading.Thread(
                # `stop` waits for the loop to see its flag: up to one poll (0.1 s was 14-90 ms,
                # ~0.05 s, of every lock's tail); 50 wake-ups a second cost ~1 ms of CPU a second.
                target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fastpex-proxy", daemon=True
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
        pools = [self._speculation.detach()]
        with self._lock:
            pools.append(self._hash_pool)
            self._hash_pool = None
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
        if not TARGET_RE.match(target):
            raise ProxyConfigError(f"`{target}` is not a usable target name (letters, digits, `._+-`)")
        return f"{self.url}/{target}/simple/"

    # -- what the resolver reads back --------------------------------------------------------
    @property
    def artifact_requests(self) -> int:
        """How many artifact downloads pip made through the proxy (locking wants zero)."""
        with self._lock:
            return self._artifact_requests

    def count_artifact_request(self) -> None:
        with self._lock:
            self._artifact_requests += 1

    def file_for_token(self, token: str, filename: Optional[str] = None) -> Optional[ProjectFile]:
        """The upstream file a `/files/<token>/<filename>` URL stands for, if this proxy has it."""
        with self._lock:
            return self._file_of_token(token, filename)

    def _file_of_token(self, token: str, filename: Optional[str], view: Optional[ProjectView] = None) -> Optional[ProjectFile]:
        """(Under `_lock`.) A file hashed since (`ensure_sha256`), else the one `view` (or any
        view built so far) names so: views make their files and tokens only when asked."""
        return self._tokens.get(token) or file_in_views(token, filename, [view] if view else self._views)

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
            tokens: Dict[str, Tuple[str, ProjectView]] = {}
            for t in targets:
                view = self._served.get(t, {}).get(name)
                if view is not None:
                    tokens.update((url, (tok, view)) for url, tok in view.token_by_url.items())
            found = [self._file_of_token(tok, None, view) for _, (tok, view) in sorted(tokens.items())]
        return [f for f in found if f is not None]  # all: a view's own tokens

    def files_of_version(self, target: str, project: str, version: Optional[str]) -> Optional[List[ProjectFile]]:
        """The files of `project` with `version` (normalized; None: without a PEP 440 version)
        on its page for `target`, in URL order, each with a sha256 if one is known since; None
        when no source has the project. What `files_for` gives, filtered, without the scan."""
        view = self.view(target, project)
        if view is None:
            return None
        self._register(target, view)
        with self._lock:
            return [self._tokens.get(view.token(i)) or view.files[i] for i in view.indexes_of_version(version)]

    def upstream_file(self, proxy_url: str) -> ProjectFile:
        """The upstream file behind a proxy file URL (as pip reports it in `download_info`)."""
        parts = unquote(urlsplit(proxy_url).path).strip("/").split("/")
        if len(parts) == 4 and parts[1] == "files":
            with self._lock:
                file = self._file_of_token(parts[2], parts[3])
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
                self._tokens[file_token(f)] = hashed
            out.append(hashed)
        return out

    def _compute_sha256(self, file: ProjectFile) -> str:
        return remote_sha256(self.http, file.url, self.config.cache_root)

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
        view = self.view(target, project)
        return None if view is None else list(view.files)

    def view(self, target: str, project: str) -> Optional[ProjectView]:
        """`project`'s page for `target` as a `ProjectView`, built once per lock for all the
        targets routed to the same indexes; None when no source has the project. Upstream
        errors are sticky, as `_upstream_page`'s."""
        name = normalize_project_name(project)
        specs = self.indexes_for(target, name)
        key = (tuple(spec.name for spec in specs), name)
        with self._lock:
            future = self._views.get(key)
            owner = future is None
            if owner:
                future = self._views[key] = Future()
        assert future is not None
        if owner:
            try:
                future.set_result(self._build_view(target, name, specs))
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                future.set_exception(e)
        return future.result()

    def _build_view(self, target: str, name: str, specs: Sequence[IndexSpec]) -> Optional[ProjectView]:
        files: Optional[Sequence[ProjectFile]] = None
        read: List[Tuple[str, Optional[str]]] = []  # (index, sha256 of the raw page or "absent")
        for spec in specs:
            page = self._upstream_page(spec, name)
            read.append((spec.name, "absent" if page is None else page.body_sha256))
            if page is not None and page.files:
                files = page.files
                logger.debug("%s for %s: from index `%s`", name, target, spec.name)
                break
        local: List[ProjectFile] = []
        for directory in self.config.find_links:
            local.extend(find_links_files(directory, name))
        if files is None and not local:
            return None
        # The raw bytes of the pages read stand for what pip sees (a superset: any change to
        # what it reads changes them), with the cut-off and the find-links files; a page
        # without them (not from `IndexClient`) leaves the view to digest its files one by one.
        cutoff = self.config.upload_cutoff
        source = [name, read, cutoff.isoformat() if cutoff else None, [[f.url, f.sha256, f.size] for f in local]]
        digest = hashlib.sha256(json.dumps(source).encode("utf-8")).hexdigest() if all(d for _, d in read) else None
        kept = self._apply_cutoff(files or ())
        return ProjectView(name, list(kept) + local if local else kept, digest)

    def _apply_cutoff(self, files: Sequence[ProjectFile]) -> Sequence[ProjectFile]:
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

    def _register(self, target: str, view: ProjectView) -> None:
        """Record that `target` was served `view` (what `files_for` lists)."""
        with self._lock:
            self._served.setdefault(target, {})[view.name] = view

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
        view = self.view(target, project)
        if view is None:
            return "absent"
        self._register(target, view)
        return view.digest()  # upstream pages are fetched once per proxy: it holds for its life

    def render_page(self, target: str, project: str, media: str) -> Optional[bytes]:
        """The page pip gets; rendered once per (target, project, media type, pin) per proxy."""
        name = normalize_project_name(project)
        key = (target, name, media, self.pinned_pages.pin(target, name))
        with self._lock:
            cached = self._rendered.get(key)
        if cached is not None:
            return cached
        body = self._render_page(target, name, media, key[3])
        if body is not None:
            with self._lock:
                self._rendered[key] = body
        return body

    def _render_page(self, target: str, name: str, media: str, pin: Optional[str]) -> Optional[bytes]:
        view = self.view(target, name)
        if view is None:
            return None
        self._register(target, view)
        self._speculation.served(target, name)
        self._speculation.prefetch(target, view)
        usable = narrow(view, self._usable_by(target, view), pin)  # only `==pin` files, if pinned
        base = f"{self.url}/{quote(target)}/files"
        if media == PEP691_JSON:
            return view.json_page(usable, base)
        return page_body(name, view.files, [view.files[i] for i in usable], view.token_by_url, base, media)

    def _usable_by(self, target: str, view: ProjectView) -> Sequence[int]:
        """Indexes of the files pip could pick for `target` (all, when its tags are unknown):
        wheels with one of its tags, files whose Requires-Python admits its Python, sdists
        unless wheels only. pip would skip every other link itself, but parsing and evaluating
        thousands of them per page (torch, numpy) is most of its CPU time. `files_for` still
        records every file, so a lock can list all artifacts of a version."""
        tags = self.config.target_tags.get(target)
        if not tags or not self.config.filter_pages:
            return range(len(view.files))
        with self._lock:
            wanted = self._tag_sets.get(target)
            if wanted is None:
                wanted = self._tag_sets[target] = frozenset(tags)
        return view.usable(wanted, self.config.target_pythons.get(target), self.config.wheels_only, python_admitted)

    # -- speculation (`speculation.Speculator`) ----------------------------------------------
    def speculate(self, target: str, metadata: bytes) -> None:
        """Warm the pages (and likely metadata) of `metadata`'s dependencies for `target`."""
        self._speculation.speculate(target, metadata)

    def warm(self, target: str, requirements: Iterable[str]) -> None:
        """Start on the pages (and likely metadata) of top-level requirements (PEP 508
        strings) for `target` before pip asks for them; call it right before starting pip."""
        self._speculation.warm(target, requirements)

    # -- errors ------------------------------------------------------------------------------
    def record_error(self, error: Exception) -> None:
        """Keep `error` for `raise_for_errors` (once per kind and message) and log it."""
        with self._lock:
            key = (type(error), str(error))
            if key not in self._error_keys:
                self._error_keys.add(key)
                self._errors.append(error)
        logger.warning("%s", error)


__all__ = ["IndexSpec", "MetadataProxy", "ProxyConfig", "ProxyConfigError", "Route"]
