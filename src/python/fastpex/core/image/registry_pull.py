"""Pull one image from a registry into an OCI image layout, every byte verified by digest.

The manifest is fetched by tag or digest with every manifest media type in `Accept`; an index
(OCI or docker's manifest list) is narrowed to the platform asked for. Blobs stream to disk and
are hashed as they arrive. Everything is written into a work directory beside the layout and
moved in only when all of it verified, so a failed or interrupted pull leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fastpex.core.errors import HashMismatchError, UserError
from fastpex.core.image.oci import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    REF_NAME_ANNOTATION,
    Descriptor,
    OciLayout,
    Platform,
    sha256_digest,
)
from fastpex.core.image.reference import ImageReference
from fastpex.core.image.registry_client import RegistryClient, RegistryOptions, RegistryServerError
from fastpex.core.net.errors import HttpConnectionError
from fastpex.core.net.http import HttpClient
from fastpex.core.net.retry import Backoff
from fastpex.core.util.cache import fsync_dir

__all__ = ["MANIFEST_ACCEPT", "PlatformNotFoundError", "pull_to_layout"]

logger = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join((*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES))
_MANIFEST_CAP = 4 * 1024 * 1024  # the spec lets registries refuse manifests over 4 MiB
_BLOB_ATTEMPTS = 3


class PlatformNotFoundError(UserError):
    """The image has no manifest for the platform asked for."""


def _mismatch(what: str, expected: str, actual: str, where: str) -> HashMismatchError:
    return HashMismatchError(
        f"{what} from `{where}` has digest {actual}, expected {expected}: the registry (or something "
        f"between it and us) served other bytes; nothing was written",
        subject=what,
        expected=expected,
        actual=actual,
    )


def _fetch_manifest(client: RegistryClient, reference: str, scopes: Tuple[str, ...]) -> Tuple[bytes, str, str]:
    """(bytes, media type, digest) of the manifest `reference` (a tag or a digest), verified."""
    response = client.send(
        "GET",
        client.repo_path(f"manifests/{reference}"),
        scopes=scopes,
        headers={"Accept": MANIFEST_ACCEPT},
        max_bytes=_MANIFEST_CAP,
    )
    if not response.ok:
        raise client.failure(response, f"pulling manifest `{reference}`")
    data = response.read()
    actual = sha256_digest(data)
    where = f"{client.reference.registry}/{client.reference.repository}"
    expected = reference if reference.startswith("sha256:") else response.header("Docker-Content-Digest")
    if expected and expected.startswith("sha256:") and expected != actual:
        raise _mismatch(f"manifest `{reference}`", expected, actual, where)
    try:
        document = json.loads(data)
    except ValueError:
        raise RegistryServerError(f"the manifest `{reference}` from `{where}` is not JSON") from None
    if not isinstance(document, dict):
        raise RegistryServerError(f"the manifest `{reference}` from `{where}` is not a JSON object")
    content_type = (response.header("Content-Type") or "").split(";", 1)[0].strip()
    media_type = str(document.get("mediaType") or content_type)
    if media_type not in (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES):
        media_type = content_type if content_type in (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES) else media_type
    if media_type not in (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES):
        raise UserError(
            f"`{where}:{reference}` is a `{media_type or 'unknown'}`, not an OCI/docker image manifest or index"
        )
    return data, media_type, actual


def _pick_platform(index: Dict[str, Any], platform: Optional[Platform], where: str) -> Descriptor:
    entries = [Descriptor.from_json(m) for m in index.get("manifests") or () if isinstance(m, dict)]
    images = [e for e in entries if e.media_type in MANIFEST_MEDIA_TYPES or not e.media_type]
    # buildx's attestation manifests say `unknown/unknown`: never an image to run.
    runnable = [e for e in images if e.platform is None or e.platform.os != "unknown"]
    available = ", ".join(str(e.platform) for e in runnable if e.platform) or "none named"
    if platform is None:
        if len(runnable) == 1:
            return runnable[0]
        raise PlatformNotFoundError(f"`{where}` is an index of {len(runnable)} images ({available}): name a platform")
    for entry in runnable:
        candidate = entry.platform
        if candidate is None or (candidate.os, candidate.architecture) != (platform.os, platform.architecture):
            continue
        if platform.variant and candidate.variant and candidate.variant != platform.variant:
            continue
        return entry
    raise PlatformNotFoundError(f"`{where}` has no image for {platform} (it has: {available})")


def _download_blob(client: RegistryClient, descriptor: Descriptor, layout: OciLayout, scopes: Tuple[str, ...]) -> None:
    """Stream one blob into `layout`, hashed on the way; a broken connection starts it over."""
    where = f"{client.reference.registry}/{client.reference.repository}"
    final = layout.blob_path(descriptor.digest)
    if final.exists():
        return
    backoff = Backoff(initial=client.options.http.backoff_initial, maximum=client.options.http.backoff_max)
    for attempt in range(_BLOB_ATTEMPTS):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            try:
                response = client.send(
                    "GET", client.repo_path(f"blobs/{descriptor.digest}"), scopes=scopes, stream=True
                )
                if not response.ok:
                    raise client.failure(response, f"pulling blob `{descriptor.digest}`")
                hasher = hashlib.sha256()
                size = 0
                with os.fdopen(fd, "wb") as out:
                    fd = -1
                    for chunk in response.iter_chunks():
                        hasher.update(chunk)
                        size += len(chunk)
                        if size > descriptor.size:
                            break
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                response.close()  # streamed: the whole body was read
            except HttpConnectionError:
                if attempt + 1 >= _BLOB_ATTEMPTS:
                    raise
                time.sleep(backoff.delay(attempt))
                continue
            actual = "sha256:" + hasher.hexdigest()
            if size != descriptor.size or actual != descriptor.digest:
                shown = actual if size <= descriptor.size else f"(more than the {descriptor.size} bytes announced)"
                raise _mismatch(f"blob `{descriptor.digest}`", descriptor.digest, shown, where)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, final)
            return
        finally:
            if fd >= 0:
                os.close(fd)
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)


def _manifest_blobs(manifest: Dict[str, Any], where: str) -> List[Descriptor]:
    try:
        config = Descriptor.from_json(manifest["config"])
        layers = [Descriptor.from_json(layer) for layer in manifest.get("layers") or ()]
    except (KeyError, TypeError):
        raise RegistryServerError(f"the manifest from `{where}` has no `config`") from None
    return [config, *layers]


def _check_config_platform(layout: OciLayout, config: Descriptor, platform: Optional[Platform], where: str) -> Optional[Platform]:
    document = layout.read_json_blob(config.digest)
    found = Platform(str(document.get("os", "")), str(document.get("architecture", "")), document.get("variant") or None)
    if platform is not None and (found.os, found.architecture) != (platform.os, platform.architecture):
        raise PlatformNotFoundError(f"`{where}` is an image for {found}, not {platform}")
    return found if found.os and found.architecture else None


def _install(work: Path, layout_dir: Path, entry: Descriptor) -> None:
    """Move the verified work layout into `layout_dir`: a rename when it is new, else its blobs
    one by one (content-addressed, so never partial) and index.json last."""
    if not layout_dir.exists() or (layout_dir.is_dir() and not any(layout_dir.iterdir())):
        OciLayout(work).write_index([entry])
        if layout_dir.exists():
            layout_dir.rmdir()
        os.replace(work, layout_dir)
        fsync_dir(layout_dir.parent)
        return
    target = OciLayout(layout_dir)
    if not target.exists():
        raise UserError(f"`{layout_dir}` exists and is not an OCI image layout: pull into a new or empty directory")
    existing = target.read_index()
    target.blobs_dir.mkdir(parents=True, exist_ok=True)
    for blob in (work / "blobs" / "sha256").iterdir():
        if not blob.name.startswith(".") and not (target.blobs_dir / blob.name).exists():
            os.replace(blob, target.blobs_dir / blob.name)
    fsync_dir(target.blobs_dir)
    name = entry.ref_name
    kept = [e for e in existing if not (name and e.ref_name == name) and e.digest != entry.digest]
    target.write_index([*kept, entry])


def pull_to_layout(
    reference: ImageReference,
    layout_dir: Path,
    *,
    platform: Optional[Platform],
    options: RegistryOptions,
) -> Descriptor:
    """Pull `reference` into the OCI layout `layout_dir` (new, empty, or a layout to add to);
    returns the manifest's descriptor as written to index.json (tagged with the reference's tag,
    with the platform of its config)."""
    layout_dir = Path(layout_dir)
    layout_dir.parent.mkdir(parents=True, exist_ok=True)
    where = f"{reference.registry}/{reference.repository}"
    scopes = (f"repository:{reference.repository}:pull",)
    work = Path(tempfile.mkdtemp(prefix=f".{layout_dir.name}.", suffix=".pull", dir=layout_dir.parent))
    try:
        with HttpClient(options.http, implicit_credentials=False) as http:
            client = RegistryClient(reference, options, http)
            data, media_type, digest = _fetch_manifest(client, reference.reference, scopes)
            staging = OciLayout(work)
            if media_type in INDEX_MEDIA_TYPES:
                chosen = _pick_platform(json.loads(data), platform, where)
                data, media_type, digest = _fetch_manifest(client, chosen.digest, scopes)  # verified
            staging.add_blob_bytes(data, expected_digest=digest)
            blobs = _manifest_blobs(json.loads(data), where)
            unique = list({b.digest: b for b in blobs}.values())
            with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
                for future in [pool.submit(_download_blob, client, b, staging, scopes) for b in unique]:
                    future.result()
            found_platform = _check_config_platform(staging, blobs[0], platform, where)
        annotations = {REF_NAME_ANNOTATION: reference.tag} if reference.tag else {}
        entry = Descriptor(media_type, digest, len(data), annotations, found_platform)
        _install(work, layout_dir, entry)
        return entry
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
