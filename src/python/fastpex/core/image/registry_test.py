"""The registry client against Debian's docker-registry, with skopeo and umoci as oracles."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator, List

import pytest

from fastpex.core.errors import HashMismatchError, OperationalError, UserError
from fastpex.core.image.oci import MEDIA_TYPE_INDEX, Descriptor, OciLayout, Platform, canonical_json
from fastpex.core.image.registry import (
    ImageNotFoundError,
    PlatformNotFoundError,
    RegistryOptions,
    RegistryRefusedError,
    parse_reference,
    pull_to_layout,
    push_layout,
)
from fastpex.core.image.registry_client import plain_http_allowed
from fastpex.testing.registry_fixture import DockerRegistry, RegistryRequest, write_test_image
from fastpex.testing.token_server import AuthFront

OPTIONS = RegistryOptions()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as running:
        yield running


def _skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _writes(requests: List[RegistryRequest]) -> List[RegistryRequest]:
    return [r for r in requests if r.method in ("POST", "PUT", "PATCH")]


def _app_layers(app: bytes) -> List[dict]:
    return [{"usr/lib/base.txt": b"base layer\n" * 1000}, {"app/main.py": app}]


def test_push_is_valid_for_skopeo_and_repeat_pushes_send_only_changes(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    digest, _, layers = write_test_image(layout, "v1", _app_layers(b"print('one')\n"))
    ref = parse_reference(f"{registry.address}/team/app:v1")

    first = push_layout(layout, ref, tag_in_layout="v1", options=OPTIONS)
    assert (first.manifest_digest, first.uploaded_blobs, first.skipped_blobs) == (digest, 3, 0)
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry.address}/team/app:v1"))
    assert inspected["Digest"] == digest and inspected["Layers"] == layers
    copied = tmp_path / "copied"
    _skopeo("copy", "--src-tls-verify=false", f"docker://{registry.address}/team/app:v1", f"oci:{copied}:v1")
    assert OciLayout(copied).find("v1").digest == digest

    mark = registry.mark()
    second = push_layout(layout, ref, tag_in_layout="v1", options=OPTIONS)
    assert (second.uploaded_blobs, second.skipped_blobs, second.uploaded_bytes, second.uploaded_manifests) == (0, 3, 0, 0)
    assert _writes(registry.requests_since(mark)) == []

    changed = tmp_path / "changed"
    new_digest, _, new_layers = write_test_image(changed, "v2", _app_layers(b"print('two')\n"))
    assert new_layers[0] == layers[0] and new_layers[1] != layers[1]
    before = registry.stored_blob_bytes()
    mark = registry.mark()
    third = push_layout(changed, ref.with_tag("v2"), tag_in_layout="v2", options=OPTIONS)
    assert (third.uploaded_blobs, third.skipped_blobs, third.uploaded_manifests) == (2, 1, 1)
    writes = _writes(registry.requests_since(mark))
    blob_puts = sorted(r.path.split("digest=")[1].replace("%3A", ":") for r in writes if r.method == "PUT" and "/blobs/" in r.path)
    manifest = json.loads(OciLayout(changed).read_blob(new_digest))
    assert blob_puts == sorted([new_layers[1], manifest["config"]["digest"]])
    assert [r.path for r in writes if "/manifests/" in r.path] == ["/v2/team/app/manifests/v2"]
    config_size = int(manifest["config"]["size"])
    layer_size = int(manifest["layers"][1]["size"])
    manifest_size = len(OciLayout(changed).read_blob(new_digest))
    assert registry.stored_blob_bytes() - before == layer_size + config_size + manifest_size
    assert third.uploaded_bytes == layer_size + config_size + manifest_size


def test_pull_of_a_skopeo_pushed_image_unpacks_with_umoci(tmp_path: Path, registry: DockerRegistry) -> None:
    source = tmp_path / "source"
    write_test_image(source, "v1", [{"etc/hello.txt": b"hello from the layer\n"}])
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{source}:v1", f"docker://{registry.address}/lib/hello:v1")

    pulled = tmp_path / "pulled"
    entry = pull_to_layout(parse_reference(f"{registry.address}/lib/hello:v1"), pulled, platform=None, options=OPTIONS)
    assert entry.ref_name == "v1" and entry.platform == Platform("linux", "amd64")
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{pulled}:v1", str(bundle)], check=True, capture_output=True)
    assert (bundle / "rootfs" / "etc" / "hello.txt").read_bytes() == b"hello from the layer\n"

    by_digest = tmp_path / "by-digest"
    again = pull_to_layout(
        parse_reference(f"{registry.address}/lib/hello@{entry.digest}"), by_digest, platform=None, options=OPTIONS
    )
    assert again.digest == entry.digest and again.ref_name is None
    # Pulling into an existing layout adds the image beside what it holds.
    other = tmp_path / "other"
    write_test_image(other, "mine", [{"x": b"x"}])
    pull_to_layout(parse_reference(f"{registry.address}/lib/hello:v1"), other, platform=None, options=OPTIONS)
    assert sorted(str(e.ref_name) for e in OciLayout(other).read_index()) == ["mine", "v1"]


def test_a_multi_platform_index_pushes_children_first_and_pulls_the_right_platform(
    tmp_path: Path, registry: DockerRegistry
) -> None:
    layout = tmp_path / "layout"
    amd64, amd64_size, _ = write_test_image(layout, None, [{"arch": b"amd64"}], add_to_index=False)
    arm64, arm64_size, _ = write_test_image(layout, None, [{"arch": b"arm64"}], architecture="arm64", add_to_index=False)
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                Descriptor("application/vnd.oci.image.manifest.v1+json", amd64, amd64_size, platform=Platform("linux", "amd64")).to_json(),
                Descriptor("application/vnd.oci.image.manifest.v1+json", arm64, arm64_size, platform=Platform("linux", "arm64", "v8")).to_json(),
            ],
        }
    )
    oci = OciLayout(layout)
    index_digest, index_size = oci.add_blob_bytes(index)
    oci.write_index([Descriptor(MEDIA_TYPE_INDEX, index_digest, index_size, {"org.opencontainers.image.ref.name": "multi"})])

    ref = parse_reference(f"{registry.address}/multi/app:latest")
    mark = registry.mark()
    result = push_layout(layout, ref, tag_in_layout="multi", options=OPTIONS)
    assert result.manifest_digest == index_digest and result.uploaded_manifests == 3
    manifest_puts = [r.path for r in registry.requests_since(mark) if r.method == "PUT" and "/manifests/" in r.path]
    assert manifest_puts[-1] == "/v2/multi/app/manifests/latest"
    assert sorted(manifest_puts[:-1]) == sorted(f"/v2/multi/app/manifests/{d}" for d in (amd64, arm64))
    raw = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.address}/multi/app:latest"))
    assert [m["digest"] for m in raw["manifests"]] == [amd64, arm64]

    pulled = pull_to_layout(ref, tmp_path / "arm", platform=Platform("linux", "arm64"), options=OPTIONS)
    assert pulled.digest == arm64 and pulled.platform == Platform("linux", "arm64")
    assert not OciLayout(tmp_path / "arm").has_blob(index_digest)
    with pytest.raises(PlatformNotFoundError, match="linux/amd64, linux/arm64/v8"):
        pull_to_layout(ref, tmp_path / "none", platform=None, options=OPTIONS)
    with pytest.raises(PlatformNotFoundError, match="no image for linux/s390x"):
        pull_to_layout(ref, tmp_path / "s390x", platform=Platform("linux", "s390x"), options=OPTIONS)
    single = parse_reference(f"{registry.address}/multi/app@{arm64}")
    with pytest.raises(PlatformNotFoundError, match="is an image for linux/arm64, not linux/amd64"):
        pull_to_layout(single, tmp_path / "wrong", platform=Platform("linux", "amd64"), options=OPTIONS)
    assert not (tmp_path / "none").exists() and not (tmp_path / "s390x").exists() and not (tmp_path / "wrong").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_corrupted_blobs_are_a_digest_mismatch_and_leave_nothing(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    _, _, layers = write_test_image(layout, "v1", [{"data.bin": bytes(range(256)) * 64}])
    push_layout(layout, parse_reference(f"{registry.address}/app:v1"), tag_in_layout="v1", options=OPTIONS)
    with AuthFront(registry.address, mode="none", corrupt_blobs=True) as front:
        target = tmp_path / "out" / "pulled"
        with pytest.raises(HashMismatchError) as raised:
            pull_to_layout(parse_reference(f"{front.address}/app:v1"), target, platform=None, options=OPTIONS)
    message = str(raised.value)
    assert "expected sha256:" in message and "has digest sha256:" in message
    assert raised.value.expected in (layers[0], json.loads(OciLayout(layout).read_blob(OciLayout(layout).find("v1").digest))["config"]["digest"])
    assert raised.value.actual and raised.value.actual != raised.value.expected
    assert list((tmp_path / "out").iterdir()) == []


def test_a_readonly_registry_refusal_names_status_and_message(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_test_image(layout, "v1", [{"a": b"a"}])
    with DockerRegistry(tmp_path / "registry", readonly=True) as registry:
        with pytest.raises(RegistryRefusedError) as raised:
            push_layout(layout, parse_reference(f"{registry.address}/app:v1"), tag_in_layout="v1", options=OPTIONS)
    assert raised.value.status == 405
    assert "HTTP 405" in str(raised.value) and "Method not allowed" in str(raised.value)
    assert isinstance(raised.value, UserError)


def test_missing_images_and_unreachable_registries(tmp_path: Path, registry: DockerRegistry) -> None:
    with pytest.raises(ImageNotFoundError) as raised:
        pull_to_layout(parse_reference(f"{registry.address}/nothing:here"), tmp_path / "x", platform=None, options=OPTIONS)
    assert "HTTP 404" in str(raised.value) and "MANIFEST_UNKNOWN" in str(raised.value)
    registry.stop()
    fast = RegistryOptions(http=OPTIONS.http.__class__(max_retries=0, connect_timeout=2))
    with pytest.raises(OperationalError, match="could not reach"):
        pull_to_layout(parse_reference(f"{registry.address}/app:v1"), tmp_path / "y", platform=None, options=fast)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_plain_http_only_for_loopback_and_named_registries() -> None:
    assert plain_http_allowed("127.0.0.1:5000", ())
    assert plain_http_allowed("127.8.9.1", ())
    assert plain_http_allowed("localhost:5000", ())
    assert plain_http_allowed("[::1]:5000", ())
    assert not plain_http_allowed("registry.example.com:5000", ())
    assert plain_http_allowed("registry.example.com:5000", ("registry.example.com:5000",))
    assert plain_http_allowed("registry.example.com:5000", ("registry.example.com",))
    assert not plain_http_allowed("registry.example.com:5000", ("registry.example.com:6000",))
    assert not plain_http_allowed("10.0.0.1", ())


def test_cross_repository_mount_uploads_nothing(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    write_test_image(layout, "v1", _app_layers(b"print('mount')\n"))
    push_layout(layout, parse_reference(f"{registry.address}/team/base:v1"), tag_in_layout="v1", options=OPTIONS)
    mark = registry.mark()
    mounting = RegistryOptions(mount_from=("team/base",))
    result = push_layout(layout, parse_reference(f"{registry.address}/team/other:v1"), tag_in_layout="v1", options=mounting)
    assert (result.mounted_blobs, result.uploaded_blobs, result.skipped_blobs) == (3, 0, 3)
    after = registry.requests_since(mark)
    assert [r.status for r in after if r.method == "POST"] == [201, 201, 201]
    assert all("mount=" in r.path for r in after if r.method == "POST")
    assert not [r for r in after if r.method == "PUT" and "/blobs/" in r.path]
    _skopeo("inspect", "--tls-verify=false", f"docker://{registry.address}/team/other:v1")


def test_transient_upload_failures_are_retried(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    digest, _, _ = write_test_image(layout, "v1", [{"a": b"retry me"}])
    with AuthFront(registry.address, mode="none", fail_uploads=1) as front:
        result = push_layout(layout, parse_reference(f"{front.address}/app:v1"), tag_in_layout="v1", options=OPTIONS)
        puts = [e.status for e in front.log if e.method == "PUT" and "/blobs/uploads/" in e.path]
    assert result.uploaded_blobs == 2 and sorted(puts) == [201, 201, 503]
    assert json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry.address}/app:v1"))["Digest"] == digest


def test_a_connection_broken_mid_blob_is_retried_then_fails_leaving_nothing(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    _, _, layers = write_test_image(layout, "v1", [{"big.bin": bytes(range(256)) * 4096}])
    push_layout(layout, parse_reference(f"{registry.address}/app:v1"), tag_in_layout="v1", options=OPTIONS)
    with AuthFront(registry.address, mode="none", truncate_blobs=True) as front:
        with pytest.raises(OperationalError):
            pull_to_layout(parse_reference(f"{front.address}/app:v1"), tmp_path / "out" / "l", platform=None, options=OPTIONS)
        layer_gets = [e for e in front.log if e.method == "GET" and e.path.endswith(layers[0])]
    assert len(layer_gets) == 3  # _BLOB_ATTEMPTS
    assert not (tmp_path / "out" / "l").exists() and list((tmp_path / "out").iterdir()) == []


def test_pull_of_a_docker_v2_manifest(tmp_path: Path, registry: DockerRegistry) -> None:
    source = tmp_path / "source"
    write_test_image(source, "v1", [{"etc/docker.txt": b"docker media types\n"}])
    _skopeo("copy", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{source}:v1", f"docker://{registry.address}/d/img:v1")
    pulled = tmp_path / "pulled"
    entry = pull_to_layout(parse_reference(f"{registry.address}/d/img:v1"), pulled, platform=Platform("linux", "amd64"), options=OPTIONS)
    assert entry.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    remote = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry.address}/d/img:v1"))["Digest"]
    assert entry.digest == remote
    # umoci reads only OCI media types: check the layer's content directly.
    manifest = json.loads(OciLayout(pulled).read_blob(entry.digest))
    with tarfile.open(OciLayout(pulled).blob_path(manifest["layers"][0]["digest"])) as layer:
        member = layer.extractfile("etc/docker.txt")
        assert member is not None and member.read() == b"docker media types\n"
