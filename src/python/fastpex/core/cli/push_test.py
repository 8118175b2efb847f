"""`python -m fastpex push` end to end: the JSON summary, exit codes, no secret in the output."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from fastpex.testing.registry_fixture import DockerRegistry, write_test_image
from fastpex.testing.token_server import AuthFront

SRC = str(Path(__file__).resolve().parents[3])


def _push(*args: str) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "fastpex", "push", *args], capture_output=True, text=True, env=env, check=False)


def test_push_prints_the_summary_and_a_second_push_uploads_nothing(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    digest, _, _ = write_test_image(layout, "app", [{"a.txt": b"a" * 1000}, {"b.txt": b"b"}])
    with DockerRegistry(tmp_path / "registry") as registry:
        first = _push("--layout", str(layout), "--tag", "app", "--to", f"{registry.address}/team/app:1.0")
        assert first.returncode == 0, first.stderr
        summary = json.loads(first.stdout.strip().splitlines()[-1])
        assert summary["manifest_digest"] == digest
        assert (summary["uploaded_blobs"], summary["skipped_blobs"]) == (3, 0) and summary["uploaded_bytes"] > 0
        second = _push("--layout", str(layout), "--to", f"{registry.address}/team/app:1.0")
        again = json.loads(second.stdout.strip().splitlines()[-1])
        assert (again["uploaded_blobs"], again["skipped_blobs"], again["uploaded_bytes"]) == (0, 3, 0)


def test_push_errors_exit_codes_and_no_secret(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_test_image(layout, "app", [{"a.txt": b"a"}])
    bad = _push("--layout", str(layout), "--to", "127.0.0.1:1/Team/App")
    assert bad.returncode == 2 and "lower case" in bad.stderr
    missing = _push("--layout", str(tmp_path / "nope"), "--to", "127.0.0.1:1/app")
    assert missing.returncode == 2 and "not an OCI image layout" in missing.stderr
    secret = "cli-wrong-secret"
    config = tmp_path / "docker"
    config.mkdir()
    encoded = base64.b64encode(f"someone:{secret}".encode()).decode()
    with DockerRegistry(tmp_path / "registry") as registry, AuthFront(registry.address, users={"ci": "right"}) as front:
        (config / "config.json").write_text(json.dumps({"auths": {front.address: {"auth": encoded}}}))
        refused = _push("--layout", str(layout), "--to", f"{front.address}/app:1", "--docker-config", str(config))
    assert refused.returncode == 2, refused.stderr
    assert "fastpex push: error:" in refused.stderr and "refused the credentials" in refused.stderr
    assert secret not in refused.stderr + refused.stdout and encoded not in refused.stderr + refused.stdout
    with DockerRegistry(tmp_path / "ro", readonly=True) as readonly:
        denied = _push("--layout", str(layout), "--to", f"{readonly.address}/app:1")
    assert denied.returncode == 2 and "HTTP 405" in denied.stderr and "Method not allowed" in denied.stderr
