"""End to end through real Pants 2.17.1: `fastpex_image` on a `fastpex_python_base`, packaged,
run (umoci unpack + chroot), rebuilt after a source-only change, and published twice to a real
loopback registry (Debian's docker-registry).

One scratch repo (this checkout's backend on `pythonpath`, a loopback index of factory wheels),
one test that walks the whole life of an image, so Pants' start-up and the lock are paid once:
- package: the entry point runs in the image and imports its dependency;
- a source-only change: only the application process runs again (the dependency process is a
  Pants cache hit), the manifest digest changes, the dependency layers' digests don't;
- publish, change, publish: the second push uploads only the new blobs (the registry's log);
- the same app on a base pulled from the registry by digest.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from e2e.scratch_repo import LAUNCHER, build_dists, pants_env, pants_toml, python311, snapshot_plugin, write_files
from fastpex.testing.base_image import python_base_layout, run_in_image
from fastpex.testing.index_server import IndexServer
from fastpex.testing.registry_fixture import DockerRegistry

pytestmark = pytest.mark.slow

IMAGE = "src/app:img"
LAYOUT = Path("dist/src.app/img")
TAG = "1.0"
DEPS_PROCESS = "Build the dependency layers of src.app/img with fastpex"
APP_PROCESS = "Build the image src.app/img with fastpex (application layer)"
BASE_PROCESS = "Build the base image src/app:py"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    dists = tmp_path_factory.mktemp("dists")
    build_dists(dists)
    with IndexServer(dists) as server:
        yield server


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as server:
        yield server


def main_py(greeting: str) -> str:
    return f"""
        import greet


        def main():
            print(greet.hello("{greeting}"))
    """


def write_repo(root: Path, index: IndexServer, registry: DockerRegistry, plugin: Path) -> None:
    write_files(
        root,
        {
            "pants.toml": pants_toml(index, plugin_path=plugin),
            "3rdparty/BUILD": 'python_requirement(name="greet", requirements=["greet>=1"], resolve="app")\n',
            "src/app/__init__.py": "",
            "src/app/main.py": main_py("image"),
            "src/app/BUILD": f"""
                python_sources(name="lib")
                fastpex_binary(name="app", entry_point="app.main:main")
                fastpex_python_base(name="py", interpreter_constraints=["CPython==3.11.*"])
                fastpex_image(
                    name="img",
                    binary=":app",
                    base=":py",
                    repository="{registry.address}/team/app",
                    image_tags=["{TAG}"],
                    image_env={{"APP_MODE": "e2e"}},
                    labels={{"org.opencontainers.image.source": "scratch"}},
                )
            """,
        },
    )


def pants(root: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    proc = subprocess.run(
        [str(LAUNCHER), "--no-pantsd", "--no-dynamic-ui", *args],
        cwd=root,
        env=pants_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise AssertionError(f"pants {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-20000:]}")
    return proc


def ran(stderr: str, description: str) -> bool:
    """Whether the process with this description ran in this Pants run (a process-cache hit logs
    no `Starting:` line)."""
    return re.search(rf"\[INFO\] Starting: {re.escape(description)}", stderr) is not None


def manifest(layout: Path) -> Dict:
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == TAG, entry
    blob = layout / "blobs" / "sha256" / entry["digest"].split(":", 1)[1]
    return {"digest": entry["digest"], **json.loads(blob.read_text())}


def skopeo_digest(reference: str) -> str:
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return str(json.loads(inspected.stdout)["Digest"])


def layer_digests(layout: Path) -> List[str]:
    return [layer["digest"] for layer in manifest(layout)["layers"]]


def run_image(layout: Path, tmp_path: Path) -> str:
    config_digest = manifest(layout)["config"]["digest"].split(":", 1)[1]
    config = json.loads((layout / "blobs" / "sha256" / config_digest).read_text())["config"]
    argv = [*config.get("Entrypoint", []), *config.get("Cmd", [])]
    assert argv, config
    assert "APP_MODE=e2e" in config["Env"], config  # the target's image_env
    proc = run_in_image(layout, TAG, argv, tmp_path / f"bundle-{time.monotonic_ns()}")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc.stdout


def uploads(registry: DockerRegistry, mark: int) -> List[str]:
    """The blob uploads (the final PUT of each) and manifest PUTs since `mark`."""
    return [
        r.path_only
        for r in registry.requests_since(mark)
        if r.method == "PUT" and r.status in (201, 202) and ("/blobs/uploads/" in r.path or "/manifests/" in r.path)
    ]


def pushed_summary(stdout: str) -> Dict:
    """The JSON line `fastpex push` ends with (Pants passes the interactive process's output on)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{") and "manifest_digest" in line]
    assert lines, stdout
    return json.loads(lines[-1])


def test_package_run_rebuild_and_publish(tmp_path: Path, index: IndexServer, registry: DockerRegistry) -> None:
    repo = tmp_path / "repo"
    # A private copy of the backend: the core's files are in every fastpex process's key, so the
    # cache hits asserted below must not depend on this checkout staying unchanged meanwhile.
    write_repo(repo, index, registry, snapshot_plugin(tmp_path / "plugin"))
    pants(repo, "generate-lockfiles", "--resolve=app")

    first = pants(repo, "package", IMAGE)
    layout = repo / LAYOUT
    assert (layout / "oci-layout").is_file()
    assert ran(first.stderr, DEPS_PROCESS) and ran(first.stderr, APP_PROCESS), first.stderr[-5000:]
    first_manifest = manifest(layout)
    first_layers = layer_digests(layout)
    assert len(first_layers) >= 3, first_layers  # base, the dependencies, the application
    assert run_image(layout, tmp_path) == "*hello image*\n"

    # Publish the first build: every blob is new to the registry.
    mark = registry.mark()
    published = pants(repo, "publish", IMAGE)
    first_push = pushed_summary(published.stdout)
    assert first_push["manifest_digest"] == first_manifest["digest"]
    assert first_push["uploaded_blobs"] == len(first_layers) + 1, first_push  # layers + config
    first_uploads = uploads(registry, mark)
    assert sum("/blobs/uploads/" in p for p in first_uploads) == len(first_layers) + 1, first_uploads
    assert skopeo_digest(f"{registry.address}/team/app:{TAG}") == first_manifest["digest"]

    # A source-only change: only the application process runs again.
    write_files(repo, {"src/app/main.py": main_py("again")})
    started = time.monotonic()
    second = pants(repo, "package", IMAGE)
    second_seconds = time.monotonic() - started
    assert ran(second.stderr, APP_PROCESS), second.stderr[-5000:]
    assert not ran(second.stderr, DEPS_PROCESS), second.stderr[-5000:]
    assert not ran(second.stderr, BASE_PROCESS), second.stderr[-5000:]
    second_manifest = manifest(layout)
    second_layers = layer_digests(layout)
    assert second_manifest["digest"] != first_manifest["digest"]
    assert second_layers[:-1] == first_layers[:-1]  # the base's and the dependencies' layers
    assert second_layers[-1] != first_layers[-1]  # the application layer
    assert run_image(layout, tmp_path) == "*hello again*\n"

    # The second publish uploads the application layer and the config, then the manifest.
    mark = registry.mark()
    published = pants(repo, "publish", IMAGE)
    second_push = pushed_summary(published.stdout)
    assert second_push["manifest_digest"] == second_manifest["digest"]
    assert (second_push["uploaded_blobs"], second_push["skipped_blobs"]) == (2, len(first_layers) - 1), second_push
    second_uploads = uploads(registry, mark)
    assert sum("/blobs/uploads/" in p for p in second_uploads) == 2, second_uploads
    assert sum("/manifests/" in p for p in second_uploads) == 1, second_uploads
    assert skopeo_digest(f"{registry.address}/team/app:{TAG}") == second_manifest["digest"]

    # The registry-pull path: the same app on a base pushed to the registry (by skopeo, another
    # client) and named by digest.
    base = python_base_layout(tmp_path / "base", python311())
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{base}:base", f"docker://{registry.address}/base/python:3.11"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    base_digest = skopeo_digest(f"{registry.address}/base/python:3.11")
    with open(repo / "src" / "app" / "BUILD", "a") as build:
        pinned = f"{registry.address}/base/python:3.11@{base_digest}"
        build.write(f'fastpex_image(name="pulled", binary=":app", base="{pinned}", image_tags=["{TAG}"], image_env={{"APP_MODE": "e2e"}})\n')
    pants(repo, "package", "src/app:pulled")
    pulled = repo / "dist" / "src.app" / "pulled"
    (base_manifest,) = json.loads((base / "index.json").read_text())["manifests"]
    base_layers = json.loads((base / "blobs" / "sha256" / base_manifest["digest"].split(":", 1)[1]).read_text())["layers"]
    assert layer_digests(pulled)[: len(base_layers)] == [layer["digest"] for layer in base_layers]
    assert run_image(pulled, tmp_path) == "*hello again*\n"

    started_lines = re.findall(r"^(\S+) \[INFO\] Starting: (.*)$", second.stderr, re.M)
    print(f"image e2e: source-only `pants package` {second_seconds:.1f} s; processes run: {started_lines}")
