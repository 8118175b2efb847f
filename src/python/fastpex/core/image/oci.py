"""The OCI image layout on disk: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.

The one reader/writer that the image builder and the registry client share
(https://github.com/opencontainers/image-spec/blob/main/image-layout.md). Blobs are written
through util/cache.py's atomic helpers and verified by digest, so a layout never holds a blob
whose name is not its sha256; JSON is canonical (sorted keys, compact) so digests are stable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from fastpex.core.errors import HashMismatchError, UserError
from fastpex.core.util.cache import fsync_dir, write_bytes_atomically

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
# Docker's media types, which registries and base images still serve; read, never written.
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_MEDIA_TYPES = (MEDIA_TYPE_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_MEDIA_TYPES = (MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST)

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20


def canonical_json(value: Any) -> bytes:
    """The bytes fastpex writes for every JSON document: sorted keys, compact separators."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> Tuple[str, int]:
    """(`sha256:<hex>`, size) of a file, read in chunks."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as fp:
        while True:
            chunk = fp.read(_CHUNK)
            if not chunk:
                break
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _split_digest(digest: str) -> Tuple[str, str]:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise UserError(f"unsupported or malformed digest `{digest}`: expected sha256:<64 hex digits>")
    return algorithm, hexpart


@dataclass(frozen=True)
class Platform:
    """An OCI platform (`os`/`architecture`[/`variant`]), e.g. linux/amd64."""

    os: str
    architecture: str
    variant: Optional[str] = None

    def to_json(self) -> Dict[str, str]:
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Platform":
        return cls(os=str(value.get("os", "")), architecture=str(value.get("architecture", "")), variant=value.get("variant") or None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Optional[Platform] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Descriptor":
        try:
            platform = value.get("platform")
            return cls(
                media_type=str(value["mediaType"]),
                digest=str(value["digest"]),
                size=int(value["size"]),
                annotations=dict(value.get("annotations") or {}),
                platform=Platform.from_json(platform) if platform else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"malformed OCI descriptor {value!r}: {e}") from None

    @property
    def ref_name(self) -> Optional[str]:
        return self.annotations.get(REF_NAME_ANNOTATION)


def _place_blob(final: Path, produce: Callable[[Path], None], verify: Callable[[Path], None]) -> None:
    """A sibling temp file, produced, verified, fsynced, renamed into place.

    Like util/cache.py's `atomic_file` but without its `.lck` file, which would sit in
    `blobs/sha256/` of a layout other tools read; a blob is content-addressed, so two writers
    racing both rename the same bytes and either copy may win.
    """
    if final.exists():
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        produce(tmp)
        verify(tmp)
        if os.stat(tmp).st_nlink == 1:  # a hard link shares its source's mode: leave it
            os.chmod(tmp, 0o644)
        with open(tmp, "rb+") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def descriptor_for_bytes(media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
    return Descriptor(media_type=media_type, digest=sha256_digest(data), size=len(data), **kwargs)


class OciLayout:
    """An OCI image layout directory (created on first write).

    `write_marker=False` writes blobs without the `oci-layout` file: a partial output (the
    dependency layers of `fastpex image --part deps`) that another part completes.
    """

    def __init__(self, path: Path, *, write_marker: bool = True) -> None:
        self.path = Path(path)
        self.write_marker = write_marker

    @property
    def blobs_dir(self) -> Path:
        return self.path / "blobs" / "sha256"

    def exists(self) -> bool:
        return (self.path / "oci-layout").is_file() and (self.path / "index.json").is_file()

    def blob_path(self, digest: str) -> Path:
        _, hexpart = _split_digest(digest)
        return self.blobs_dir / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def _ensure(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        marker = self.path / "oci-layout"
        if self.write_marker and not marker.exists():
            write_bytes_atomically(marker, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))

    def add_blob_bytes(self, data: bytes, *, expected_digest: Optional[str] = None) -> Tuple[str, int]:
        """Store `data`; returns (digest, size). Raises HashMismatchError if it isn't `expected_digest`."""
        digest = sha256_digest(data)
        if expected_digest is not None and expected_digest != digest:
            raise HashMismatchError(
                f"blob has digest {digest}, expected {expected_digest}",
                subject="blob", expected=expected_digest, actual=digest,
            )
        self._ensure()

        def produce(tmp: Path) -> None:
            tmp.write_bytes(data)

        _place_blob(self.blob_path(digest), produce, lambda tmp: None)
        return digest, len(data)

    def add_blob_from_file(self, source: Path, *, expected_digest: Optional[str] = None, link: bool = False) -> Tuple[str, int]:
        """Copy (or hard-link, when `link` and possible) `source` in as a blob, verified.

        The digest is computed from the bytes actually placed in the layout, so a source that
        changes under us cannot produce a misnamed blob.
        """
        self._ensure()
        digest, size = file_digest(source) if expected_digest is None else (expected_digest, -1)
        final = self.blob_path(digest)
        holder: Dict[str, int] = {}

        def produce(tmp: Path) -> None:
            if link:
                try:
                    tmp.unlink()
                    os.link(source, tmp)
                    return
                except OSError:
                    pass
            shutil.copyfile(source, tmp)

        def verify(tmp: Path) -> None:
            actual, actual_size = file_digest(tmp)
            holder["size"] = actual_size
            if actual != digest:
                raise HashMismatchError(
                    f"blob {source.name} has digest {actual}, expected {digest}",
                    subject=str(source.name), expected=digest, actual=actual,
                )

        _place_blob(final, produce, verify)
        return digest, holder.get("size", size if size >= 0 else final.stat().st_size)

    def read_blob(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"OCI layout {self.path} lacks blob {digest}") from None
        actual = sha256_digest(data)
        if actual != digest:
            raise HashMismatchError(
                f"blob {digest} in {self.path} has digest {actual}", subject=digest, expected=digest, actual=actual
            )
        return data

    def read_json_blob(self, digest: str) -> Dict[str, Any]:
        try:
            value = json.loads(self.read_blob(digest))
        except ValueError as e:
            raise UserError(f"blob {digest} in {self.path} is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise UserError(f"blob {digest} in {self.path} is not a JSON object")
        return value

    def read_index(self) -> List[Descriptor]:
        """The descriptors of `index.json` (its `manifests`)."""
        path = self.path / "index.json"
        try:
            value = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise UserError(f"{self.path} is not an OCI image layout: no index.json") from None
        except ValueError as e:
            raise UserError(f"{path} is not JSON: {e}") from None
        return [Descriptor.from_json(m) for m in value.get("manifests") or ()]

    def write_index(self, manifests: Iterable[Descriptor], annotations: Optional[Mapping[str, str]] = None) -> bytes:
        """Write `index.json` atomically (after the blobs it names); returns its bytes."""
        self._ensure()
        document: Dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [m.to_json() for m in manifests],
        }
        if annotations:
            document["annotations"] = dict(annotations)
        data = canonical_json(document)
        write_bytes_atomically(self.path / "index.json", data)
        return data

    def find(self, tag: Optional[str] = None) -> Descriptor:
        """The index entry tagged `tag` (its ref.name), or the only entry when `tag` is None."""
        entries = self.read_index()
        if tag is None:
            if len(entries) != 1:
                names = ", ".join(sorted(e.ref_name or e.digest for e in entries)) or "none"
                raise UserError(f"OCI layout {self.path} holds {len(entries)} images ({names}): name one with `:TAG`")
            return entries[0]
        for entry in entries:
            if entry.ref_name == tag:
                return entry
        names = ", ".join(sorted(e.ref_name for e in entries if e.ref_name)) or "none"
        raise UserError(f"OCI layout {self.path} has no image tagged `{tag}` (tags: {names})")
