"""Push an image from an OCI layout: only the blobs the registry lacks, then the manifests.

For each blob: `HEAD`; when missing, optionally a cross-repository mount (`POST
?mount=&from=`), else a monolithic upload (`POST` for a session, then `PUT <location>?digest=`
with the file streamed from disk). Then the manifests, an index's children (by digest) before
the index, and the tag last, each skipped when the registry already has it (a `HEAD` naming the
same digest), so that a repeated push sends nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from fastpex.core.errors import UserError
from fastpex.core.image.oci import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, Descriptor, OciLayout
from fastpex.core.image.reference import ImageReference
from fastpex.core.image.registry_client import (
    RegistryClient,
    RegistryOptions,
    RegistryServerError,
)
from fastpex.core.net.errors import HttpConnectionError
from fastpex.core.net.http import HttpClient
from fastpex.core.net.retry import RETRY_STATUSES, Backoff

__all__ = ["PushResult", "push_layout"]

logger = logging.getLogger(__name__)

_UPLOAD_ATTEMPTS = 3


@dataclass(frozen=True)
class PushResult:
    """What a push sent. Blobs are configs and layers; `uploaded_bytes` counts every byte of
    content sent (blobs and manifests), so a push that changes nothing reports 0."""

    reference: str
    manifest_digest: str
    uploaded_blobs: int
    skipped_blobs: int
    mounted_blobs: int
    uploaded_bytes: int
    uploaded_manifests: int
    skipped_manifests: int

    def summary(self) -> Dict[str, Any]:
        return {
            "manifest_digest": self.manifest_digest,
            "uploaded_blobs": self.uploaded_blobs,
            "skipped_blobs": self.skipped_blobs,
            "uploaded_bytes": self.uploaded_bytes,
            "mounted_blobs": self.mounted_blobs,
            "uploaded_manifests": self.uploaded_manifests,
            "skipped_manifests": self.skipped_manifests,
            "reference": self.reference,
        }


@dataclass
class _Counts:
    uploaded: int = 0
    skipped: int = 0
    mounted: int = 0
    bytes: int = 0
    manifests_uploaded: int = 0
    manifests_skipped: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass(frozen=True)
class _Manifest:
    descriptor: Descriptor
    data: bytes


def _collect(layout: OciLayout, top: Descriptor) -> Tuple[List[_Manifest], List[Descriptor]]:
    """Manifests in push order (children before their index) and the unique blobs they name."""
    manifests: List[_Manifest] = []
    blobs: Dict[str, Descriptor] = {}

    def visit(descriptor: Descriptor) -> None:
        data = layout.read_blob(descriptor.digest)
        document = json.loads(data)
        media_type = str(document.get("mediaType") or descriptor.media_type)
        if media_type in INDEX_MEDIA_TYPES:
            for child in document.get("manifests") or ():
                visit(Descriptor.from_json(child))
        elif media_type in MANIFEST_MEDIA_TYPES:
            for blob in (document.get("config"), *(document.get("layers") or ())):
                if not isinstance(blob, dict):
                    raise UserError(f"the manifest {descriptor.digest} in {layout.path} has no `config`")
                found = Descriptor.from_json(blob)
                blobs.setdefault(found.digest, found)
        else:
            raise UserError(f"{descriptor.digest} in {layout.path} is a `{media_type}`, not an image manifest or index")
        manifests.append(_Manifest(Descriptor(media_type, descriptor.digest, len(data)), data))

    visit(top)
    return manifests, list(blobs.values())


class _Pusher:
    def __init__(self, client: RegistryClient, layout: OciLayout, counts: _Counts) -> None:
        self.client = client
        self.layout = layout
        self.counts = counts
        repo = client.reference.repository
        mounts = tuple(m for m in client.options.mount_from if m != repo)
        self.scopes = (f"repository:{repo}:pull,push", *(f"repository:{m}:pull" for m in mounts))
        self.mounts = mounts
        http = client.options.http
        self.backoff = Backoff(initial=http.backoff_initial, maximum=http.backoff_max)

    def _exists(self, path: str, digest: str, accept: Optional[str] = None) -> bool:
        headers = {"Accept": accept} if accept else None
        response = self.client.send("HEAD", path, scopes=self.scopes, headers=headers)
        if response.status == 200:
            remote = response.header("Docker-Content-Digest")
            return remote is None or remote == digest
        if response.status == 404:
            return False
        raise self.client.failure(response, f"checking for `{digest}`")

    def push_blob(self, blob: Descriptor) -> None:
        if self._exists(self.client.repo_path(f"blobs/{blob.digest}"), blob.digest):
            self.counts.add(skipped=1)
            return
        path = self.layout.blob_path(blob.digest)
        if not path.is_file():
            raise UserError(f"the OCI layout {self.layout.path} lacks blob {blob.digest}, and the registry has none")
        size = path.stat().st_size
        if size != blob.size:
            raise UserError(f"blob {blob.digest} in {self.layout.path} has {size} bytes, its descriptor says {blob.size}")
        for source in self.mounts:
            if self._mount(blob, source):
                self.counts.add(mounted=1, skipped=1)
                return
        for attempt in range(_UPLOAD_ATTEMPTS):
            try:
                self._upload(blob, path)
            except _Transient as failure:
                if attempt + 1 >= _UPLOAD_ATTEMPTS:
                    raise failure.error from None
                logger.debug("retrying the upload of %s: %s", blob.digest, failure.error)
                time.sleep(self.backoff.delay(attempt))
                continue
            self.counts.add(uploaded=1, bytes=size)
            return

    def _mount(self, blob: Descriptor, source: str) -> bool:
        query = f"mount={quote(blob.digest)}&from={quote(source, safe='/')}"
        response = self.client.send("POST", self.client.repo_path(f"blobs/uploads/?{query}"), scopes=self.scopes)
        if response.status == 201:
            return True
        if response.status == 202:  # not mountable: the registry opened an upload session instead
            location = response.header("Location")
            if location:
                self.client.send("DELETE", location, scopes=self.scopes).close()
            return False
        raise self.client.failure(response, f"mounting blob `{blob.digest}` from `{source}`")

    def _upload(self, blob: Descriptor, path: Path) -> None:
        action = f"pushing blob `{blob.digest}`"
        try:
            started = self.client.send("POST", self.client.repo_path("blobs/uploads/"), scopes=self.scopes)
            if started.status != 202:
                raise self._fail(started, action)
            location = started.header("Location")
            if not location:
                raise RegistryServerError(f"{action}: the registry opened an upload without a `Location`")
            target = location + ("&" if "?" in location else "?") + f"digest={quote(blob.digest)}"
            finished = self.client.send(
                "PUT",
                target,
                scopes=self.scopes,
                headers={"Content-Type": "application/octet-stream"},
                body=path,
                retries=0,
            )
        except HttpConnectionError as e:
            raise _Transient(e) from e
        if finished.status != 201:
            raise self._fail(finished, action)
        remote = finished.header("Docker-Content-Digest")
        if remote and remote != blob.digest:
            raise RegistryServerError(f"{action}: the registry stored it as {remote}")

    def _fail(self, response: Any, action: str) -> Exception:
        error = self.client.failure(response, action)
        if response.status in RETRY_STATUSES:
            return _Transient(error)
        return error

    def push_manifest(self, manifest: _Manifest, reference: str) -> None:
        path = self.client.repo_path(f"manifests/{reference}")
        media_type = manifest.descriptor.media_type
        if self._exists(path, manifest.descriptor.digest, accept=media_type):
            self.counts.add(manifests_skipped=1)
            return
        response = self.client.send(
            "PUT", path, scopes=self.scopes, headers={"Content-Type": media_type}, body=manifest.data
        )
        if response.status not in (200, 201):
            raise self.client.failure(response, f"pushing manifest `{reference}`")
        remote = response.header("Docker-Content-Digest")
        if remote and remote != manifest.descriptor.digest:
            raise RegistryServerError(
                f"pushing manifest `{reference}`: the registry stored it as {remote}, not {manifest.descriptor.digest}"
            )
        self.counts.add(manifests_uploaded=1, bytes=len(manifest.data))


class _Transient(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def push_layout(
    layout_dir: Path,
    reference: ImageReference,
    *,
    tag_in_layout: Optional[str],
    options: RegistryOptions,
) -> PushResult:
    """Push the image tagged `tag_in_layout` in the layout (its only one when None) to
    `reference` (its tag, `latest` when it has none; a digest in it must be the image's)."""
    layout = OciLayout(Path(layout_dir))
    if not layout.exists():
        raise UserError(f"`{layout_dir}` is not an OCI image layout (no oci-layout / index.json)")
    top = layout.find(tag_in_layout)
    if reference.digest and reference.digest != top.digest:
        raise UserError(f"`{reference}` names digest {reference.digest}, but the image in the layout is {top.digest}")
    manifests, blobs = _collect(layout, top)
    counts = _Counts()
    with HttpClient(options.http, implicit_credentials=False) as http:
        pusher = _Pusher(RegistryClient(reference, options, http), layout, counts)
        ordered = sorted(blobs, key=lambda b: -b.size)  # big ones first: the tail is short
        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
            for future in [pool.submit(pusher.push_blob, blob) for blob in ordered]:
                future.result()
        for manifest in manifests[:-1]:
            pusher.push_manifest(manifest, manifest.descriptor.digest)
        pusher.push_manifest(manifests[-1], reference.tag or reference.digest or "latest")
    return PushResult(
        reference=str(reference),
        manifest_digest=top.digest,
        uploaded_blobs=counts.uploaded,
        skipped_blobs=counts.skipped,
        mounted_blobs=counts.mounted,
        uploaded_bytes=counts.bytes,
        uploaded_manifests=counts.manifests_uploaded,
        skipped_manifests=counts.manifests_skipped,
    )
