"""The registry fixture against an independent client (skopeo): it serves, logs, refuses when
read-only."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fastpex.testing.registry_fixture import DockerRegistry


def _umoci_layout(path: Path, tag: str) -> None:
    subprocess.run(["umoci", "init", "--layout", str(path)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{path}:{tag}"], check=True)


def _skopeo_push(layout: Path, tag: str, registry: DockerRegistry, ref: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{registry.address}/{ref}"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_serves_and_logs_requests(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    _umoci_layout(layout, "t")
    with DockerRegistry(tmp_path / "registry") as registry:
        assert registry.address.startswith("127.0.0.1:")
        before = registry.stored_blob_bytes()
        mark = registry.mark()
        pushed = _skopeo_push(layout, "t", registry, "demo/app:v1")
        assert pushed.returncode == 0, pushed.stderr
        after = registry.requests_since(mark)
        assert any(r.method == "PUT" and r.path_only == "/v2/demo/app/manifests/v1" and r.status == 201 for r in after)
        assert any(r.method in ("HEAD", "GET") and "/blobs/sha256:" in r.path for r in after)
        assert registry.stored_blob_bytes() > before
        assert registry.blob_digests()


def test_readonly_refuses_pushes_and_restart_switches_mode(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    _umoci_layout(layout, "t")
    with DockerRegistry(tmp_path / "registry", readonly=True) as registry:
        refused = _skopeo_push(layout, "t", registry, "demo/app:v1")
        assert refused.returncode != 0
        assert any(r.method == "POST" and r.status == 405 for r in registry.requests())
        port = registry.port
        registry.restart(readonly=False)
        assert registry.port == port
        pushed = _skopeo_push(layout, "t", registry, "demo/app:v1")
        assert pushed.returncode == 0, pushed.stderr
