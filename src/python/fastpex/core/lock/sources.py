"""Where pip gets packages from: the `PackageSource` protocol, pip straight to the indexes
(`DirectSource`) or through the loopback metadata proxy (`ProxySource`), and `open_source`,
which sets up the one a lock asks for.

Either way the source also lists every file of a project (so the lock records all artifacts of
a chosen version, not just the one pip read metadata for), maps the URLs pip reports back to
upstream, credential-free URLs, and fills in missing sha256s.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import ContextManager, Dict, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from fastpex.core.errors import UsageError
from fastpex.core.lock.errors import IndexUnreachableResolveError, ResolveError
from fastpex.core.lock.metadata_store import remote_sha256
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig, Route
from fastpex.core.model import Target
from fastpex.core.net.http import HttpClient
from fastpex.core.net.index import (
    IndexClient,
    IndexClientError,
    ProjectFile,
    find_links_files,
    parse_upload_time,
)
from fastpex.core.util.filenames import dist_name_version
from fastpex.core.util.urls import expand_env, strip_credentials

__all__ = ["DirectSource", "PackageSource", "ProxySource", "file_version", "open_source", "proxy_target_name"]

logger = logging.getLogger(__name__)


class PackageSource(Protocol):
    """What `resolve` needs from the place pip gets packages from (proxy or direct)."""

    def pip_index_args(self, target: Target) -> List[str]:
        """pip options that select the index(es) for `target` (may carry credentials)."""

    def project_files(self, project: str, target: Target) -> Sequence[ProjectFile]:
        """Every file of `project` that `target` may use (after routing and upload cut-off)."""

    def files_of_version(self, project: str, version: Optional[str], target: Target) -> Sequence[ProjectFile]:
        """The files of `project` with `version` (normalized, as `file_version` gives it) that
        `target` may use, in URL order: `project_files` filtered, from an index by version."""

    def upstream_url(self, url: str, target: Target) -> str:
        """The credential-free upstream URL of a file pip reported (e.g. a proxy URL)."""

    def ensure_sha256(self, files: Sequence[ProjectFile]) -> List[ProjectFile]:
        """The files, each with a sha256 (computed by download where the index gave none)."""

    def index_urls(self) -> Tuple[str, ...]:
        """Credential-free URLs of the configured indexes (recorded in the lock)."""

    def check_reachable(self, project: str, target: Target) -> None:
        """Raise `IndexUnreachableResolveError` if `target`'s indexes cannot serve `project`."""

    def sources_without(self, project: str, target: Target) -> Optional[Tuple[str, ...]]:
        """When no index (nor find-links directory) has `project` for `target` at all (a 404,
        an empty page): the ones asked, credential-free. None when one has the project."""

    def cache_token(self) -> Optional[str]:
        """What varies between runs in pip's command line and means nothing (the proxy's URL);
        None when pip's runs can't be reused (nothing records the pages pip reads)."""

    def take_page_requests(self, target: Target) -> List[str]:
        """The projects whose pages pip asked for for `target` since the last call."""

    def pinned(self, target: Target, pins: Mapping[str, str]) -> ContextManager[None]:
        """Around a pip run for `target` constrained to `pins` (name -> version): pages may list
        only the pinned versions' files (`pinned_pages`), which changes nothing pip can pick."""

    def page_digests(self, target: Target, projects: Sequence[str]) -> Optional[Dict[str, str]]:
        """Today's digest of each project's page as pip sees it for `target`; None if unknown."""

    def upstream_page_digests(self) -> Dict[str, Dict[str, str]]:
        """index name -> project -> digest of every upstream page read (what a lock depends on)."""


class DirectSource:
    """pip talks straight to the indexes / find-links (no proxy). Used in tests and as fallback.

    `upload_cutoff` is passed to pip as `--uploaded-prior-to` and applied to listed files.
    """

    def __init__(
        self,
        indexes: Sequence[str],
        find_links: Sequence[str] = (),
        *,
        upload_cutoff: Optional[datetime] = None,
        http: Optional[HttpClient] = None,
        cache_root: Optional[Path] = None,
    ) -> None:
        self.indexes = tuple(indexes)
        self.find_links = tuple(find_links)
        self.upload_cutoff = upload_cutoff
        self.cache_root = cache_root
        self._http = http if http is not None else HttpClient(configured_indexes=self.indexes)
        self._pages: Dict[str, List[ProjectFile]] = {}

    def pip_index_args(self, target: Target) -> List[str]:
        args: List[str] = []
        if self.indexes:
            # pip does not expand `${VAR}` on its command line: expand here, in the core process
            # (the argv Pants caches by keeps the reference, never the secret).
            args += ["--index-url", expand_env(self.indexes[0])]
            for extra in self.indexes[1:]:
                args += ["--extra-index-url", expand_env(extra)]
        else:
            args.append("--no-index")
        for link in self.find_links:
            args += ["--find-links", link]
        if self.upload_cutoff is not None:
            args += ["--uploaded-prior-to", self.upload_cutoff.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
        return args

    def _files(self, project: str) -> List[ProjectFile]:
        key = canonicalize_name(project)
        if key not in self._pages:
            files: List[ProjectFile] = []
            client = IndexClient(self._http)
            for index in self.indexes:
                page = client.project_page(index, key)
                if page is not None:
                    files.extend(page.files)
            for link in self.find_links:
                files.extend(find_links_files(_local_path(link), key))
            if self.upload_cutoff is not None:
                files = [f for f in files if _uploaded_before(f, self.upload_cutoff)]
            self._pages[key] = files
        return self._pages[key]

    def project_files(self, project: str, target: Target) -> Sequence[ProjectFile]:
        return self._files(project)

    def files_of_version(self, project: str, version: Optional[str], target: Target) -> Sequence[ProjectFile]:
        return [f for f in self._files(project) if file_version(f.filename) == version]

    def upstream_url(self, url: str, target: Target) -> str:
        return strip_credentials(url)

    def ensure_sha256(self, files: Sequence[ProjectFile]) -> List[ProjectFile]:
        return [f if f.sha256 else f.with_sha256(remote_sha256(self._http, f.url, self.cache_root)) for f in files]

    def index_urls(self) -> Tuple[str, ...]:
        return tuple(strip_credentials(i) for i in self.indexes) + tuple(
            strip_credentials(link) for link in self.find_links
        )

    def check_reachable(self, project: str, target: Target) -> None:
        try:
            self._pages.pop(canonicalize_name(project), None)
            self._files(project)
        except IndexClientError as e:
            raise IndexUnreachableResolveError(
                f"Resolving for target `{target.name}` failed: {e}", target=target.name
            ) from e

    def sources_without(self, project: str, target: Target) -> Optional[Tuple[str, ...]]:
        key = canonicalize_name(project)
        client = IndexClient(self._http)
        for index in self.indexes:
            page = client.project_page(index, key)
            if page is not None and page.files:
                return None
        if any(find_links_files(_local_path(link), key) for link in self.find_links):
            return None
        return self.index_urls()

    # Nothing records the pages pip reads straight from an index: no run is reused.
    def cache_token(self) -> Optional[str]:
        return None

    def take_page_requests(self, target: Target) -> List[str]:
        return []

    def pinned(self, target: Target, pins: Mapping[str, str]) -> ContextManager[None]:
        return contextlib.nullcontext()

    def page_digests(self, target: Target, projects: Sequence[str]) -> Optional[Dict[str, str]]:
        return None

    def upstream_page_digests(self) -> Dict[str, Dict[str, str]]:
        return {}


def proxy_target_name(name: str) -> str:
    """The target's name as a proxy URL path segment (`@`/`,` of option suffixes -> `+`)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "+", name)


class ProxySource:
    """pip talks to fastpex's loopback metadata proxy (`lock/proxy.py`) at `/<target>/simple/`.

    The proxy owns routing, find-links, the upload cut-off, metadata and hashing; this maps
    its API onto `PackageSource`. `indexes` are the configured index URLs, for the lock.
    """

    def __init__(self, proxy: MetadataProxy, indexes: Sequence[str] = ()) -> None:
        self.proxy = proxy
        self._indexes = tuple(indexes)

    def pip_index_args(self, target: Target) -> List[str]:
        # The proxy retries upstream itself; pip retrying the loopback only repeats failures.
        url = self.proxy.index_url(proxy_target_name(target.name))
        return ["--index-url", url, "--retries", "0"]

    def project_files(self, project: str, target: Target) -> Sequence[ProjectFile]:
        name = proxy_target_name(target.name)
        served = self.proxy.files_for(project, name)
        if served:
            return served
        # Not served to this target yet (asked before its pip run): the same page, unserved.
        return self.proxy.page_files(name, project) or []

    def files_of_version(self, project: str, version: Optional[str], target: Target) -> Sequence[ProjectFile]:
        return self.proxy.files_of_version(proxy_target_name(target.name), project, version) or []

    def upstream_url(self, url: str, target: Target) -> str:
        try:
            return strip_credentials(self.proxy.upstream_file(url).url)
        except KeyError:
            return strip_credentials(url)  # not a proxy URL (a direct `name @ URL` requirement)

    def ensure_sha256(self, files: Sequence[ProjectFile]) -> List[ProjectFile]:
        try:
            return self.proxy.ensure_sha256(list(files))
        except Exception as e:  # noqa: BLE001 - the proxy's typed errors, re-raised with context
            raise ResolveError(f"could not compute a sha256 the index did not give: {e}") from e

    def index_urls(self) -> Tuple[str, ...]:
        return tuple(strip_credentials(i) for i in self._indexes)

    def cache_token(self) -> Optional[str]:
        """What varies between runs in pip's command line (the proxy's URL) and means nothing."""
        return str(self.proxy.url)

    def take_page_requests(self, target: Target) -> List[str]:
        return list(self.proxy.take_page_requests(proxy_target_name(target.name)))

    def pinned(self, target: Target, pins: Mapping[str, str]) -> ContextManager[None]:
        return self.proxy.pinned_pages.pinned(proxy_target_name(target.name), pins)

    def page_digests(self, target: Target, projects: Sequence[str]) -> Optional[Dict[str, str]]:
        """Today's digest of each project's page for `target`; None if any page fails."""
        name = proxy_target_name(target.name)
        try:
            with ThreadPoolExecutor(max_workers=16, thread_name_prefix="fastpex-pages") as pool:
                digests = list(pool.map(lambda p: self.proxy.page_digest(name, p), projects))
        except Exception as e:  # noqa: BLE001 - any failure only means "run pip"
            logger.debug("page check for %s failed (%s): running pip", target.name, e)
            return None
        return dict(zip(projects, digests))

    def upstream_page_digests(self) -> Dict[str, Dict[str, str]]:
        return self.proxy.upstream_page_digests()

    def sources_without(self, project: str, target: Target) -> Optional[Tuple[str, ...]]:
        name = proxy_target_name(target.name)
        if self.proxy.files_for(project, name) or self.proxy.page_files(name, project) is not None:
            return None
        asked = self.proxy.indexes_for(name, project)
        return tuple(strip_credentials(spec.url) for spec in asked) + tuple(str(d) for d in self.proxy.config.find_links)

    def check_reachable(self, project: str, target: Target) -> None:
        try:
            self.proxy.raise_for_errors()
        except Exception as e:  # noqa: BLE001 - IndexClientError, MetadataError, ...
            cls = IndexUnreachableResolveError if isinstance(e, IndexClientError) else ResolveError
            raise cls(f"Resolving for target `{target.name}` failed: {e}", target=target.name) from e


def _local_path(link: str) -> str:
    if link.startswith("file://"):
        return unquote(urlsplit(link).path)
    return link


def _uploaded_before(f: ProjectFile, cutoff: datetime) -> bool:
    when = parse_upload_time(f.upload_time)
    return when is None or when < cutoff


@functools.lru_cache(maxsize=None)
def file_version(filename: str) -> Optional[str]:
    """The version in a distribution's filename, normalized; None if it has none."""
    parsed = dist_name_version(filename)
    if parsed is None or parsed[1] is None:
        return None
    return str(parsed[1])


@contextlib.contextmanager
def _fewer_gc_passes(first_generation: int = 50_000) -> Iterator[None]:
    """Collect the youngest generation every `first_generation` allocations instead of 700 for
    the block: a lock allocates millions of short-lived objects (page files, JSON) next to a
    large live set, and the default thresholds spent ~20% of page parsing in the collector.
    Nothing a lock makes is cyclic garbage that must go early; the old thresholds come back."""
    before = gc.get_threshold()
    gc.set_threshold(max(first_generation, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.contextmanager
def open_source(
    *,
    indexes: Sequence[Tuple[str, str]],
    find_links: Sequence[str],
    targets: Sequence[Target],
    routes: Sequence[Route] = (),
    upload_cutoff: Optional[datetime] = None,
    cache_root: Optional[Path] = None,
    wheels_only: bool = True,
    metadata_jobs: int = 16,
    use_proxy: bool = True,
    warm: Sequence[str] = (),
    prereleases: bool = False,
) -> Iterator[PackageSource]:
    """The package source for one lock, open for the block: the metadata proxy (started, and
    already fetching the pages and metadata of `warm`, PEP 508 requirements or project names,
    for every target), or with `use_proxy=False` pip straight to the indexes."""
    index_urls = [url for _, url in indexes]
    if not use_proxy:
        if routes:
            raise UsageError("--route needs the metadata proxy; drop --no-proxy")
        yield DirectSource(index_urls, find_links, upload_cutoff=upload_cutoff, cache_root=cache_root)
        return
    local = [Path(d).expanduser().absolute() for d in find_links]
    config = ProxyConfig(
        indexes=tuple(IndexSpec(name, url) for name, url in indexes),
        find_links=tuple(local),
        routes=tuple(routes),
        upload_cutoff=upload_cutoff,
        cache_root=cache_root,
        target_tags={proxy_target_name(t.name): tuple(t.supported_tags) for t in targets},
        target_pythons={
            proxy_target_name(t.name): t.marker_environment.get("python_full_version") or t.python_version
            for t in targets
        },
        target_markers={proxy_target_name(t.name): dict(t.marker_environment) for t in targets},
        wheels_only=wheels_only,
        prereleases=prereleases,
        workers=metadata_jobs,
    )
    with _fewer_gc_passes(), MetadataProxy(config) as proxy:
        # Start on what pip will ask for while it is still starting up (pip asks for pages one
        # at a time, so fetching them ahead saves a round trip each).
        for target in targets:
            proxy.warm(proxy_target_name(target.name), warm)
        yield ProxySource(proxy, index_urls + [d.as_uri() for d in local])
        if proxy.artifact_requests:
            logger.info("pip downloaded %d artifact(s) through the proxy", proxy.artifact_requests)
