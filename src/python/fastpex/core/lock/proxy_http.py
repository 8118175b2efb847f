"""The metadata proxy's HTTP face: PEP 691 negotiation, rendering pages, and the handler.

pip sees only this: `/<target>/simple/<project>/` pages (JSON or HTML) whose files point at
`/<target>/files/<token>/<filename>[.metadata]`. What a page lists and where metadata comes
from is the proxy's state (`proxy.MetadataProxy`); this module only turns it into bytes.

- `core-metadata: true` (no hash) unless the upstream index advertised a hash. PEP 714 allows
  `true` and pip 26.3 accepts it (`Link.metadata_link()` then carries no hash). Knowing the
  hash at page time would mean fetching metadata for every file of every page (torch has ~1000
  files), while pip only ever reads the few candidates it considers.
- The upstream sha256 hashes are passed through unchanged: pip verifies them if it downloads.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence
from urllib.parse import quote, unquote, urlsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from fastpex.core.lock.metadata import MetadataError, MetadataUnavailableError
from fastpex.core.lock.metadata_store import artifact_store_path
from fastpex.core.net.errors import HttpError
from fastpex.core.net.index import IndexClientError, ProjectFile

if TYPE_CHECKING:
    from fastpex.core.lock.proxy import MetadataProxy

__all__ = ["PEP691_JSON", "TARGET_RE", "ProxyServer", "page_body", "usable_files", "wants_json", "wheel_tags"]

logger = logging.getLogger("fastpex.core.lock.proxy")

PEP691_JSON = "application/vnd.pypi.simple.v1+json"
TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@functools.lru_cache(maxsize=1 << 12)
def python_admitted(requires_python: str, python: str) -> bool:
    """pip's own test (`check_requires_python`): an unparseable specifier admits everything."""
    try:
        return Version(python) in SpecifierSet(requires_python)
    except (InvalidSpecifier, InvalidVersion):
        return True


@functools.lru_cache(maxsize=1 << 16)
def wheel_tags(filename: str) -> "Optional[frozenset[str]]":
    try:
        return frozenset(str(t) for t in parse_wheel_filename(filename)[3])
    except InvalidWheelFilename:
        return None



def usable_files(
    files: Sequence[ProjectFile], tags: "Optional[frozenset[str]]", python: Optional[str], wheels_only: bool
) -> List[ProjectFile]:
    """The files pip could pick for a target with these `tags` (all, when None): wheels with
    one of them, files whose Requires-Python admits `python`, sdists unless `wheels_only`."""
    if tags is None:
        return list(files)
    usable = []
    for f in files:
        if f.is_wheel:
            found = wheel_tags(f.filename)  # None: invalid name, which pip skips as well
            if found is None or found.isdisjoint(tags):
                continue
        elif wheels_only:
            continue
        if python and f.requires_python and not python_admitted(f.requires_python, python):
            continue
        usable.append(f)
    return usable


def page_body(
    name: str,
    files: Sequence[ProjectFile],
    usable: Sequence[ProjectFile],
    tokens: Mapping[str, str],
    base: str,
    media: str,
) -> bytes:
    """The page body for `usable` (of `files`, which decide the versions and api-version);
    file URLs are `<base>/<token>/<filename>`."""
    entries = []
    for f in usable:
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


def wants_json(accept: Optional[str]) -> bool:
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




class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: "MetadataProxy") -> None:
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
    server: ProxyServer

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
            if len(parts) >= 2 and TARGET_RE.match(parts[0]) and parts[1] == "simple":
                if len(parts) == 2:
                    self._send(200, b"<!DOCTYPE html><html><body></body></html>", "text/html", head)
                elif len(parts) == 3:
                    self._page(proxy, parts[0], parts[2], head)
                else:
                    self._send(404, b"not found\n", "text/plain", head)
            elif len(parts) == 4 and TARGET_RE.match(parts[0]) and parts[1] == "files":
                self._file(proxy, parts[0], parts[2], parts[3], head)
            else:
                self._send(404, b"not found\n", "text/plain", head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug must still answer pip, and be reported
            logger.exception("the metadata proxy failed on %s", self.path)
            proxy.record_error(e)
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

    def _page(self, proxy: "MetadataProxy", target: str, project: str, head: bool) -> None:
        proxy.note_page_request(target, project)
        media = PEP691_JSON if wants_json(self.headers.get("Accept")) else "text/html"
        try:
            body = proxy.render_page(target, project, media)
        except IndexClientError as e:
            proxy.record_error(e)
            self._send(502, f"{e}\n".encode("utf-8"), "text/plain", head)
            return
        if body is None:
            self._send(404, b"no such project\n", "text/plain", head)
            return
        self._send(200, body, media, head)

    def _file(self, proxy: "MetadataProxy", target: str, token: str, filename: str, head: bool) -> None:
        file = proxy.file_for_token(token, filename)
        if file is None:
            self._send(404, b"unknown file\n", "text/plain", head)
            return
        if filename == file.filename + ".metadata":
            try:
                data = proxy.fetcher.get(file)
            except MetadataUnavailableError as e:
                proxy.record_error(e)
                self._send(502, f"{e}\n".encode("utf-8"), "text/plain", head)
                return
            except MetadataError as e:
                proxy.record_error(e)
                self._send(404, f"{e}\n".encode("utf-8"), "text/plain", head)
                return
            self._send(200, data, "application/octet-stream", head)
            proxy.speculate(target, data)
            return
        if filename != file.filename:
            self._send(404, b"unknown file\n", "text/plain", head)
            return
        self._artifact(proxy, file, head)

    def _artifact(self, proxy: "MetadataProxy", file: ProjectFile, head: bool) -> None:
        """Stream an artifact (pip only asks when metadata did not suffice); counted."""
        proxy.count_artifact_request()
        logger.warning("pip downloads `%s` through the metadata proxy", file.filename)
        path = artifact_store_path(file.sha256, proxy.config.cache_root) if file.sha256 else None
        if path is not None and path.is_file():
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
            proxy.record_error(MetadataUnavailableError(file.url, str(e)))
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
