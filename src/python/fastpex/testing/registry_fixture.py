"""A real OCI registry on loopback for the image tests: Debian's `docker-registry` (distribution).

Our registry client could share blind spots with a registry we wrote ourselves; the reference
implementation catches them. Each `DockerRegistry` gets its own config file, its own filesystem
storage and a free 127.0.0.1 port; its access log is parsed into `RegistryRequest`s so tests can
assert on what a client actually sent (which blobs were HEADed, PUT, mounted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, List, Optional, Type

__all__ = ["DockerRegistry", "RegistryRequest", "RegistryStartError", "docker_registry_binary"]

_BINARY_CANDIDATES = ("/usr/bin/docker-registry", "docker-registry", "registry")
# The combined-format access log wraps the whole server, so it also records what middleware
# answers before the app logs anything (read-only mode's 405s).
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<size>\d+|-)'
)


class RegistryStartError(RuntimeError):
    """`docker-registry` is missing, exited, or did not answer `/v2/` in time."""


@dataclass(frozen=True)
class RegistryRequest:
    """One request as the registry logged it once it had answered."""

    method: str
    path: str  # the request URI, query string included
    status: int
    bytes_written: int = 0  # response body bytes

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]


def docker_registry_binary() -> str:
    for candidate in _BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RegistryStartError("docker-registry is not installed (`apt-get install docker-registry`)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DockerRegistry:
    """`with DockerRegistry(tmp_path) as registry:` serves on `registry.address`.

    `readonly=True` starts it in maintenance read-only mode (writes are refused with 405), for
    the refusal tests; `restart(readonly=...)` switches mode keeping the storage and the port.
    """

    def __init__(self, workdir: Path, *, readonly: bool = False, startup_timeout: float = 15.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.readonly = readonly
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        self._process: Optional["subprocess.Popen[bytes]"] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # -- lifecycle ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        config = {  # JSON is YAML: no quoting surprises for paths
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {
                    "uploadpurging": {"enabled": False},
                    "readonly": {"enabled": self.readonly},
                },
            },
            "http": {"addr": self.address, "secret": "fastpex-test-secret"},
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def start(self) -> "DockerRegistry":
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self._process = subprocess.Popen(
            [docker_registry_binary(), "serve", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RegistryStartError(f"docker-registry exited ({code}):\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RegistryStartError(f"docker-registry did not answer on {self.address}:\n{self.log_text()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, *, readonly: Optional[bool] = None) -> None:
        """Stop and start again on the same port and storage (optionally switching read-only)."""
        self.stop()
        if readonly is not None:
            self.readonly = readonly
        self.start()

    def __enter__(self) -> "DockerRegistry":
        return self.start()

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()

    # -- observations ------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def requests(self) -> List[RegistryRequest]:
        """Every answered request so far, oldest first, from the registry's access log (the
        `/v2/` health probes of `start` included)."""
        found: List[RegistryRequest] = []
        for line in self.log_text().splitlines():
            match = _ACCESS_LINE.match(line)
            if match is None:
                continue
            found.append(
                RegistryRequest(
                    method=match["method"],
                    path=match["path"],
                    status=int(match["status"]),
                    bytes_written=int(match["size"]) if match["size"].isdigit() else 0,
                )
            )
        return found

    def mark(self) -> int:
        """The number of requests logged so far: `requests_since(mark)` are the ones after it."""
        return len(self.requests())

    def requests_since(self, mark: int) -> List[RegistryRequest]:
        time.sleep(0.05)  # the log line is written as a response completes: give it a moment
        return self.requests()[mark:]

    def blob_digests(self) -> List[str]:
        """`sha256:<hex>` of every blob in the storage (configs and manifests included)."""
        root = self.storage_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
        if not root.is_dir():
            return []
        return sorted(f"sha256:{data.parent.name}" for data in root.glob("*/*/data"))

    def stored_blob_bytes(self) -> int:
        """Bytes of every blob in the storage: its growth is what a push uploaded."""
        root = self.storage_dir / "docker" / "registry" / "v2" / "blobs"
        if not root.is_dir():
            return 0
        return sum(path.stat().st_size for path in root.rglob("data") if path.is_file())


# -- small images to push ----------------------------------------------------------------------
def _layer_bytes(files: "dict[str, bytes]") -> bytes:
    """A reproducible gzipped tar of `files` (path -> content; mtime 0, root-owned, 0644)."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def write_test_image(
    layout_dir: Path,
    tag: Optional[str],
    layers: "list[dict[str, bytes]]",
    *,
    os_name: str = "linux",
    architecture: str = "amd64",
    add_to_index: bool = True,
) -> "tuple[str, int, list[str]]":
    """Write an image (config + manifest + gzipped layers) into an OCI layout with
    `fastpex.core.image.oci.OciLayout`; tag it in index.json when `add_to_index`. Returns the
    manifest's (digest, size) and the layer digests. Same input, same digests."""
    import gzip
    import hashlib

    from fastpex.core.image.oci import (
        MEDIA_TYPE_CONFIG,
        MEDIA_TYPE_LAYER_GZIP,
        MEDIA_TYPE_MANIFEST,
        REF_NAME_ANNOTATION,
        Descriptor,
        OciLayout,
        Platform,
        canonical_json,
    )

    layout = OciLayout(layout_dir)
    layer_descriptors = []
    diff_ids = []
    for files in layers:
        blob = _layer_bytes(files)
        digest, size = layout.add_blob_bytes(blob)
        layer_descriptors.append({"mediaType": MEDIA_TYPE_LAYER_GZIP, "digest": digest, "size": size})
        diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest())
    config = canonical_json(
        {
            "architecture": architecture,
            "os": os_name,
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    config_digest, config_size = layout.add_blob_bytes(config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layer_descriptors,
        }
    )
    digest, size = layout.add_blob_bytes(manifest)
    if add_to_index:
        existing = layout.read_index() if layout.exists() else []
        entry = Descriptor(
            MEDIA_TYPE_MANIFEST,
            digest,
            size,
            {REF_NAME_ANNOTATION: tag} if tag else {},
            Platform(os_name, architecture),
        )
        layout.write_index([e for e in existing if not tag or e.ref_name != tag] + [entry])
    return digest, size, [str(d["digest"]) for d in layer_descriptors]
