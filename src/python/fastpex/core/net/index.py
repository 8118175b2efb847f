"""Package index client: PEP 503 HTML and PEP 691 JSON project pages, and find-links dirs.

Both page formats become the same `ProjectFile` values, with URLs made absolute against the
page's final URL and stripped of credentials (they go into lockfiles and proxy pages;
credentials are re-attached on the wire by `HttpClient` from the configured index URLs).
PEP 592 (yanked), PEP 658/714 (core metadata, incl. the legacy `dist-info-metadata` name) and
PEP 700 (size, upload-time, versions) fields are kept because locking uses every one of them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urldefrag, urljoin, urlsplit

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from fastpex.core.errors import UserError
from fastpex.core.net.errors import HttpError, HttpStatusError
from fastpex.core.util.filenames import SDIST_SUFFIXES, dist_name_version
from fastpex.core.net.http import HttpClient
from fastpex.core.util.hashing import sha256_file
from fastpex.core.util.urls import filename_from_url, redact, strip_credentials

# `html.parser` and `model` load where they are used: the replay's page check (which only
# hashes JSON bodies) imports this module before its first request.
if TYPE_CHECKING:
    from fastpex.core.model import Artifact
    from fastpex.core.net.page_cache import PageCache

logger = logging.getLogger(__name__)

SIMPLE_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
PEP691_JSON = "application/vnd.pypi.simple.v1+json"
PEP691_HTML = "application/vnd.pypi.simple.v1+html"

CoreMetadata = Union[None, bool, Mapping[str, str]]


class IndexClientError(UserError):
    """Base of the index client's errors (the configured index is wrong or unusable: exit 2);
    messages carry only redacted URLs."""


class IndexUnreachableError(IndexClientError):
    """An index could not be reached or answered with an error the user must fix."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(
            f"the package index `{self.url}` could not be used: {reason}. Check that the index "
            f"URL is right and reachable from here, and its credentials if it needs any"
        )


class IndexPageError(IndexClientError):
    """An index page could not be parsed."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        super().__init__(
            f"the index page `{self.url}` is not a valid PEP 503/691 project page: {reason}. "
            f"Check that the configured URL is the index's `/simple/` root"
        )


def normalize_project_name(name: str) -> NormalizedName:
    """PEP 503 normalization (`Foo.Bar_baz` -> `foo-bar-baz`)."""
    return canonicalize_name(name)


def parse_upload_time(value: Optional[str]) -> Optional[datetime]:
    """PEP 700 `upload-time` (ISO 8601, `Z` suffix) -> aware UTC datetime; None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


@dataclass(frozen=True)
class ProjectFile:
    """One file on a project page (PEP 503/691 + 592/658/700/714), credential-free.

    `core_metadata` is None (not advertised), True (advertised without hash) or the advertised
    hashes of the `.metadata` file. `yanked_reason` is only meaningful when `yanked`.
    """

    filename: str
    url: str
    hashes: Mapping[str, str] = field(default_factory=dict, hash=False)
    requires_python: Optional[str] = None
    yanked: bool = False
    yanked_reason: Optional[str] = None
    core_metadata: CoreMetadata = field(default=None, hash=False)
    size: Optional[int] = None
    upload_time: Optional[str] = None

    @property
    def sha256(self) -> Optional[str]:
        value = self.hashes.get("sha256")
        return value.lower() if value else None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith(SDIST_SUFFIXES)

    @property
    def project(self) -> Optional[NormalizedName]:
        parsed = dist_name_version(self.filename)
        return parsed[0] if parsed else None

    @property
    def version(self) -> Optional[Version]:
        parsed = dist_name_version(self.filename)
        return parsed[1] if parsed else None

    @property
    def upload_datetime(self) -> Optional[datetime]:
        return parse_upload_time(self.upload_time)

    @property
    def metadata_url(self) -> str:
        """PEP 658: the core metadata file lives at the artifact URL + `.metadata`."""
        return self.url + ".metadata"

    def with_sha256(self, sha256: str) -> "ProjectFile":
        return replace(self, hashes={**dict(self.hashes), "sha256": sha256.lower()})

    def to_artifact(self) -> Artifact:
        """The lock's view of this file; requires a known sha256 (see `proxy.ensure_sha256`)."""
        from fastpex.core.model import Artifact

        if not self.sha256:
            raise ValueError(f"`{self.filename}` has no sha256 yet; compute it before locking")
        return Artifact(
            url=self.url,
            filename=self.filename,
            sha256=self.sha256,
            size=self.size,
            upload_time=self.upload_time,
            requires_python=self.requires_python,
        )


@dataclass(frozen=True)
class ProjectPage:
    """A project's page on one index. `url` is the final (post-redirect), credential-free URL."""

    project: NormalizedName
    url: str
    files: Sequence[ProjectFile]  # a tuple, or `json_page.PageFiles`
    api_version: Optional[str] = None
    versions: Optional[Tuple[str, ...]] = None  # PEP 700, JSON pages only
    body_sha256: Optional[str] = None  # of the raw response body: "is the page unchanged?"


def project_url(index_url: str, project: str) -> str:
    """`<index>/<normalized-name>/`, as PEP 503 defines it."""
    base = index_url if index_url.endswith("/") else index_url + "/"
    return f"{base}{quote(normalize_project_name(project))}/"


def valid_digest(algorithm: str, value: str) -> bool:
    """Is `value` a hex digest of `algorithm`'s length (what may name a cache entry)?"""
    if algorithm not in hashlib.algorithms_guaranteed or algorithm.startswith("shake_"):
        return False
    size = hashlib.new(algorithm).digest_size * 2
    return len(value) == size and all(c in "0123456789abcdef" for c in value)


def _plausible_digest(algorithm: str, value: str) -> bool:
    """Index text that may be kept as a hash: a known algorithm and only letters and digits.
    Hashes end up in cache paths and pages we render, so `../../x` or `"><a` is dropped as if
    the index gave no hash (a wrong but harmless value is caught when the file is checked)."""
    return (
        algorithm in hashlib.algorithms_guaranteed
        and not algorithm.startswith("shake_")
        and bool(value)
        and value.isascii()
        and value.isalnum()
    )


def _hash_from_fragment(url: str) -> Tuple[str, Dict[str, str]]:
    """Split `...#sha256=abc` into the bare URL and its hash (PEP 503)."""
    bare, fragment = urldefrag(url)
    hashes: Dict[str, str] = {}
    if fragment:
        name, sep, value = fragment.partition("=")
        if sep and _plausible_digest(name.lower(), value.lower()):
            hashes[name.lower()] = value.lower()
    return bare, hashes


def _file_url(page_url: str, href: str) -> Tuple[str, Dict[str, str]]:
    """Absolute, credential-free URL of a file link, and the hash in its fragment.

    Pages of big projects list thousands of files (numpy: 4,400), and urljoin + re-splitting
    cost more than the JSON parsing; the common case (absolute, no fragment, no userinfo)
    takes a fast path.
    """
    if href.startswith(("https://", "http://")) and "#" not in href and "@" not in href.split("/", 3)[2]:
        return href, {}
    url, hashes = _hash_from_fragment(urljoin(page_url, href))
    return strip_credentials(url), hashes


def _clean_hashes(value: object) -> Dict[str, str]:
    if not isinstance(value, dict):
        return {}
    if len(value) == 1:  # the common case, `{"sha256": "<hex>"}`, without the comprehension
        ((key, digest),) = value.items()
        if key == "sha256" and isinstance(digest, str) and len(digest) == 64 and digest.isascii() and digest.isalnum():
            return {key: digest.lower()}
    return {
        str(k).lower(): v.lower()
        for k, v in value.items()
        if isinstance(v, str) and _plausible_digest(str(k).lower(), v.lower())
    }


def _core_metadata_from_json(entry: Mapping[str, object]) -> CoreMetadata:
    value = entry.get("core-metadata")
    if value is None:
        value = entry.get("dist-info-metadata")  # PEP 714: the legacy key, as a fallback
    if isinstance(value, dict):
        return _clean_hashes(value) or True
    return True if value is True else None


def _core_metadata_from_html(value: Optional[str]) -> CoreMetadata:
    if value is None:
        return None
    if value.strip().lower() == "true":
        return True
    name, sep, digest = value.partition("=")
    if sep and _plausible_digest(name.strip().lower(), digest.strip().lower()):
        return {name.strip().lower(): digest.strip().lower()}
    return True  # malformed hash: the file exists, its hash is unknown (as pip treats it)


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN_HOST = re.compile(r"https?://([^/?#\s]*)(?:[/?#]|$)")


def _host_of(url: str) -> str:
    """`urlsplit(url).netloc` without credentials, lower-cased; a regex for the plain
    `http(s)://host/...` URLs pages are made of (urlsplit costs more than the page's JSON)."""
    match = _PLAIN_HOST.match(url)
    netloc = match.group(1) if match is not None else urlsplit(url).netloc
    return netloc.rpartition("@")[2].lower()


def unsafe_filename_problem(filename: str) -> Optional[str]:
    """Why `filename` must never become a path (or a line of a file), else None.

    Index pages are untrusted input: a name with a separator (`../../x.whl`, `a%2Fb.whl`), a
    NUL or a control character is dropped from the page, so it never reaches `--dest`, the
    lockfile or a PEX's `.deps/`. The artifact store itself names files by sha256 only.
    """
    if not filename or filename in (".", ".."):
        return "it is empty or a relative directory name"
    if "/" in filename or "\\" in filename:
        return "it contains a path separator"
    if _CONTROL_CHARACTER.search(filename):
        return "it contains a control character"
    if filename.startswith("."):
        return "it starts with a dot"
    return None


def _safe_files(files: List["ProjectFile"], page_url: str) -> List["ProjectFile"]:
    """`files` without unsafe names (warned, naming the page); reports files on other hosts."""
    kept = []
    page_host = _host_of(page_url)
    other_hosts = set()
    for f in files:
        problem = unsafe_filename_problem(f.filename)
        if problem is not None:
            logger.warning("ignoring the file %r listed on `%s`: %s", f.filename, redact(page_url), problem)
            continue
        host = _host_of(f.url)
        if host and host != page_host:
            other_hosts.add(host)
        kept.append(f)
    if other_hosts:
        # PEP 503 allows it (PyPI serves files from files.pythonhosted.org); credentials
        # configured for the index are never sent there (see `urls.authorization_for`).
        logger.debug("`%s` links files on other hosts: %s", redact(page_url), ", ".join(sorted(other_hosts)))
    return kept


def parse_json_page(body: bytes, page_url: str, project: str) -> ProjectPage:
    """Parse a PEP 691 JSON project page. `page_url` resolves relative file URLs. Its files
    are made lazily (see `json_page.PageFiles`)."""
    from fastpex.core.net.json_page import parse_json_page as parse

    return parse(body, page_url, project)


@functools.lru_cache(maxsize=None)
def _anchor_parser_class() -> type:
    """`_AnchorParser`, defined on first use (it needs `html.parser`)."""
    from html.parser import HTMLParser

    class _AnchorParser(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.base: Optional[str] = None
            self.anchors: List[Dict[str, Optional[str]]] = []
            self.api_version: Optional[str] = None

        def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
            attributes = {k.lower(): v for k, v in attrs}
            if tag == "base" and self.base is None and attributes.get("href"):
                self.base = attributes["href"]
            elif tag == "a" and attributes.get("href"):
                self.anchors.append(attributes)
            elif tag == "meta" and attributes.get("name") == "pypi:repository-version":
                self.api_version = attributes.get("content")

    return _AnchorParser


def parse_html_page(body: bytes, page_url: str, project: str) -> ProjectPage:
    """Parse a PEP 503 HTML project page (with PEP 592/658/714 `data-*` attributes)."""
    parser = _anchor_parser_class()()
    try:
        parser.feed(body.decode("utf-8", errors="replace"))
        parser.close()
    except Exception as e:  # html.parser is lenient; anything it raises means garbage
        raise IndexPageError(page_url, f"unparseable HTML ({e})") from e
    base = urljoin(page_url, parser.base) if parser.base else page_url
    files: List[ProjectFile] = []
    for anchor in parser.anchors:
        url, hashes = _file_url(base, anchor["href"] or "")
        filename = filename_from_url(url)
        if not filename:
            continue
        yanked = "data-yanked" in anchor
        metadata = anchor.get("data-core-metadata")
        if metadata is None:
            metadata = anchor.get("data-dist-info-metadata")
        files.append(
            ProjectFile(
                filename=filename,
                url=url,
                hashes=hashes,
                requires_python=(anchor.get("data-requires-python") or None),
                yanked=yanked,
                yanked_reason=(anchor.get("data-yanked") or "") if yanked else None,
                core_metadata=_core_metadata_from_html(metadata),
            )
        )
    return ProjectPage(
        project=normalize_project_name(project),
        url=strip_credentials(page_url),
        files=tuple(_safe_files(files, page_url)),
        api_version=parser.api_version,
    )


def parse_project_page(body: bytes, content_type: Optional[str], page_url: str, project: str) -> ProjectPage:
    """Dispatch on the response's media type (sniffing when a server mislabels JSON)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == PEP691_JSON or media.endswith("+json") or media == "application/json":
        return parse_json_page(body, page_url, project)
    if not media and body.lstrip().startswith(b"{"):
        return parse_json_page(body, page_url, project)
    return parse_html_page(body, page_url, project)


@dataclass
class PageStats:
    """What an `IndexClient` did per page (tests assert on it; the bench prints it)."""

    fetched: int = 0  # 200s
    not_modified: int = 0  # 304s answered from the page cache
    parsed: int = 0  # bodies parsed (a 304's kept body included)


class IndexClient:
    """Fetches project pages from PEP 503/691 indexes through a shared `HttpClient`; with a
    `PageCache`, asks conditionally where the index gave validators (see `page_cache`)."""

    def __init__(self, http: HttpClient, pages: Optional["PageCache"] = None) -> None:
        self.http = http
        self.pages = pages
        self.stats = PageStats()
        self._stats_lock = threading.Lock()

    def project_page(self, index_url: str, project: str) -> Optional[ProjectPage]:
        """The project's page, or None if the index does not have the project (404/410).

        `index_url` may carry credentials; they are used on the wire only. Any other failure
        raises `IndexUnreachableError` naming the redacted URL.
        """
        fetched = self._body(index_url, project)
        if fetched is None:
            return None
        if isinstance(fetched, ProjectPage):
            return fetched
        body, content_type, final_url, sha = fetched
        if self.pages is not None:  # bytes parsed before are not parsed again (`PageCache.page`)
            page = self.pages.page(body, sha, content_type, final_url, project)
        else:
            page = replace(parse_project_page(body, content_type, final_url, project), body_sha256=sha)
        self._count("parsed")
        logger.debug("%s: %d files", redact(project_url(index_url, project)), len(page.files))
        return page

    def page_digest(self, index_url: str, project: str) -> str:
        """sha256 of the project's raw page (`ProjectPage.body_sha256`), or "absent" (404/410):
        tells whether a page changed without parsing it. Errors as `project_page`."""
        fetched = self._body(index_url, project)
        if fetched is None:
            return "absent"
        if isinstance(fetched, ProjectPage):
            return fetched.body_sha256 or ""
        return fetched[3]

    def _count(self, what: str) -> None:
        with self._stats_lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)

    def _body(self, index_url: str, project: str) -> Union[None, ProjectPage, Tuple[bytes, Optional[str], str, str]]:
        """None (no such project), the cached page (the index answered 304 to our validators),
        or (body, content type, final URL, sha256 of the body)."""
        url = project_url(index_url, project)
        known = self.pages.validators(url, SIMPLE_ACCEPT) if self.pages is not None else None
        headers = {"Accept": SIMPLE_ACCEPT, **(known.request_headers() if known is not None else {})}
        try:
            response = self.http.get(url, headers=headers)
        except HttpError as e:
            raise IndexUnreachableError(url, str(e)) from e
        if response.status == 304 and known is not None and self.pages is not None:
            response.close()
            page = self.pages.load(known.body_sha256, project, response.url)
            if page is not None:
                self._count("not_modified")
                self._count("parsed")
                return page
            self.pages.remember(url, SIMPLE_ACCEPT, known.body_sha256, None, None)  # its parsed form is gone: ask again
            return self._body(index_url, project)
        if response.status in (404, 410):
            response.close()
            return None
        if not response.ok:
            response.close()
            raise IndexUnreachableError(url, str(HttpStatusError(url, response.status, response.reason)))
        try:
            body = response.read()
        except HttpError as e:
            raise IndexUnreachableError(url, str(e)) from e
        self._count("fetched")
        sha = hashlib.sha256(body).hexdigest()
        content_type = response.header("Content-Type")
        if self.pages is not None:
            etag, last_modified = response.header("ETag"), response.header("Last-Modified")
            if etag or last_modified:  # the next ask is conditional: its 304 needs these bytes
                self.pages.keep(body, sha, content_type, response.url)
            self.pages.remember(url, SIMPLE_ACCEPT, sha, etag, last_modified)
        return body, content_type, response.url, sha


# -- find-links ------------------------------------------------------------------------------

_sha_cache: Dict[Tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def _file_sha256(path: Path) -> str:
    """sha256 of a local file, memoized by (path, size, mtime) for the process's lifetime."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        known = _sha_cache.get(key)
    if known is not None:
        return known
    value = sha256_file(path)
    with _sha_lock:
        _sha_cache[key] = value
    return value


def find_links_files(directory: Union[str, Path], project: Optional[str] = None) -> List[ProjectFile]:
    """Distributions in a local find-links directory as `file://` ProjectFiles (sha256 computed).

    Only files that parse as wheels or sdists are listed; `project` filters by normalized name.
    A missing directory is an error: a typo there would otherwise silently change the lock.
    """
    root = Path(directory).expanduser().absolute()
    if not root.is_dir():
        raise IndexUnreachableError(
            root.as_uri() if root.is_absolute() else str(root), "the find-links directory does not exist"
        )
    wanted = normalize_project_name(project) if project else None
    out: List[ProjectFile] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_file():
            continue
        parsed = dist_name_version(entry.name)
        if parsed is None or (wanted is not None and parsed[0] != wanted):
            continue
        path = Path(entry.path)
        out.append(
            ProjectFile(
                filename=entry.name,
                url=path.as_uri(),
                hashes={"sha256": _file_sha256(path)},
                size=entry.stat().st_size,
            )
        )
    return out


__all__ = [
    "SIMPLE_ACCEPT",
    "IndexClient",
    "IndexClientError",
    "IndexPageError",
    "IndexUnreachableError",
    "PageStats",
    "ProjectFile",
    "ProjectPage",
    "find_links_files",
    "normalize_project_name",
    "parse_html_page",
    "parse_json_page",
    "parse_project_page",
    "parse_upload_time",
    "project_url",
]
