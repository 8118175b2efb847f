"""Rendering of the index's pages: PEP 691 negotiation, PEP 503 HTML and PEP 691 JSON documents.

Pure functions of the catalog and the config, split out of index_server.py so the request
handler only routes and applies faults.
"""

from __future__ import annotations

import hashlib
import html
import json
from datetime import datetime, timezone
from typing import Iterable, List, Optional

from packaging.version import Version

from fastpex.testing.index_server_catalog import DistFile
from fastpex.testing.index_server_config import (
    API_VERSION,
    HTML_TYPES,
    JSON_TYPES,
    PEP691_JSON,
    IndexConfig,
)

__all__ = ["corrupt_metadata", "file_entry", "iso", "negotiate", "project_page", "root_page", "wrong_digest"]

_WRONG_METADATA_LINE = b"Requires-Dist: fastpex-injected-wrong-metadata\n"


def negotiate(accept: Optional[str]) -> Optional[str]:
    """Pick the response media type per PEP 691; None means 406."""
    if not accept or not accept.strip():
        return "text/html"
    entries = []
    for index, part in enumerate(accept.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        entries.append((-quality, index, pieces[0].lower()))
    for neg_q, _, media in sorted(entries):
        if neg_q >= 0:
            break
        if media in JSON_TYPES:
            return PEP691_JSON
        if media in HTML_TYPES:
            return media
        if media in ("*/*", "application/*", "text/*"):
            return "text/html"
    return None


def iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wrong_digest(digest: str) -> str:
    return hashlib.sha256(b"fastpex-wrong-hash:" + digest.encode("ascii")).hexdigest()


def corrupt_metadata(metadata: bytes) -> bytes:
    """Still-parseable METADATA that differs from the wheel's (an extra dependency)."""
    head, sep, rest = metadata.partition(b"\n")
    return head + sep + _WRONG_METADATA_LINE + rest


def _version_key(version: str) -> Version:
    return Version(version)


def _html_doc(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}  </body>\n</html>\n"
    ).encode("utf-8")


def _html_link(entry: dict) -> str:
    """PEP 503 anchor (+ PEP 592/658/714 data attributes) for one file entry."""
    href = entry["url"]
    if entry["hashes"]:
        href += f"#sha256={entry['hashes']['sha256']}"
    attrs = [f'href="{html.escape(href)}"']
    if "requires-python" in entry:
        attrs.append(f'data-requires-python="{html.escape(entry["requires-python"])}"')
    if "core-metadata" in entry:
        meta = entry["core-metadata"]
        value = f"sha256={meta['sha256']}" if isinstance(meta, dict) else "true"
        attrs.append(f'data-dist-info-metadata="{value}"')
        attrs.append(f'data-core-metadata="{value}"')
    if entry["yanked"] is not False:
        reason = entry["yanked"] if isinstance(entry["yanked"], str) else ""
        attrs.append(f'data-yanked="{html.escape(reason)}"')
    return f"    <a {' '.join(attrs)}>{html.escape(entry['filename'])}</a><br/>\n"


def root_page(projects: Iterable[str], media: str) -> bytes:
    """The `/simple/` page listing `projects` (sorted here) in `media`."""
    names = sorted(projects)
    if media == PEP691_JSON:
        doc = {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in names]}
        return json.dumps(doc, indent=1).encode("utf-8")
    links = "".join(f'    <a href="/simple/{p}/">{p}</a><br/>\n' for p in names)
    return _html_doc("Simple index", links)


def project_page(project: str, dists: List[DistFile], entries: List[dict], media: str) -> bytes:
    """A project's page from its file entries (see `file_entry`) in `media`."""
    if media == PEP691_JSON:
        versions = sorted({d.version for d in dists}, key=_version_key)
        doc = {"meta": {"api-version": API_VERSION}, "name": project, "versions": versions, "files": entries}
        return json.dumps(doc, indent=1).encode("utf-8")
    return _html_doc(f"Links for {project}", "".join(_html_link(e) for e in entries))


def file_entry(config: IndexConfig, dist: DistFile, url: str, sha256: str) -> dict:
    """The PEP 691 file dict; HTML rendering is derived from it. `sha256` is the digest to
    advertise (the handler passes a wrong one when a `wrong_hash` fault fires)."""
    entry: dict = {
        "filename": dist.filename,
        "url": url,
        "hashes": {"sha256": sha256} if config.include_hashes else {},
        **({"size": dist.size} if config.include_sizes else {}),
        "upload-time": iso(config.upload_times.get(dist.filename, config.default_upload_time)),
        "yanked": config.yanked[dist.filename] or True if dist.filename in config.yanked else False,
    }
    if dist.requires_python:
        entry["requires-python"] = dist.requires_python
    if config.advertise_metadata and dist.metadata is not None:
        meta_hash = hashlib.sha256(dist.metadata).hexdigest()
        value = {"sha256": meta_hash} if config.include_hashes else True
        entry["core-metadata"] = value
        entry["dist-info-metadata"] = value
    return entry
