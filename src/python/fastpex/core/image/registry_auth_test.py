"""Push and pull through an auth front (testing/token_server.py) on the real registry:
Bearer tokens and Basic, credentials from config.json or .netrc, and no secret in any error."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from fastpex.core.image.oci import OciLayout
from fastpex.core.image.registry import (
    RegistryAuthError,
    RegistryOptions,
    parse_reference,
    pull_to_layout,
    push_layout,
)
from fastpex.testing.registry_fixture import DockerRegistry, write_test_image
from fastpex.testing.token_server import AuthFront

USER, PASSWORD = "ci-bot", "pa55-w0rd-not-in-logs"
SRC = str(Path(__file__).resolve().parents[3])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as running:
        yield running


def _docker_config(tmp_path: Path, host: str, password: str = PASSWORD) -> Path:
    directory = tmp_path / "docker-config"
    directory.mkdir(exist_ok=True)
    encoded = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": encoded}}}))
    return directory


def _netrc(tmp_path: Path, password: str = PASSWORD) -> Path:
    path = tmp_path / "netrc"
    path.write_text(f"machine 127.0.0.1 login {USER} password {password}\n")
    path.chmod(0o600)
    return path


def _round_trip(tmp_path: Path, front: AuthFront, options: RegistryOptions) -> None:
    layout = tmp_path / "layout"
    digest, _, _ = write_test_image(layout, "v1", [{"a.txt": b"hello"}])
    ref = parse_reference(f"{front.address}/team/app:v1")
    pushed = push_layout(layout, ref, tag_in_layout="v1", options=options)
    assert pushed.uploaded_blobs == 2 and pushed.manifest_digest == digest
    again = push_layout(layout, ref, tag_in_layout="v1", options=options)
    assert again.uploaded_blobs == 0 and again.skipped_blobs == 2
    pulled = pull_to_layout(ref, tmp_path / "pulled", platform=None, options=options)
    assert pulled.digest == digest and OciLayout(tmp_path / "pulled").find("v1").digest == digest


def test_bearer_tokens_with_docker_config_auths(tmp_path: Path, registry: DockerRegistry) -> None:
    with AuthFront(registry.address, mode="bearer", users={USER: PASSWORD}) as front:
        options = RegistryOptions(docker_config=_docker_config(tmp_path, front.address), netrc=tmp_path / "none")
        _round_trip(tmp_path, front, options)
        schemes = {entry.auth_scheme for entry in front.log if entry.path.startswith("/v2/team/")}
        assert "bearer" in schemes and "basic" not in schemes
        assert ("repository:team/app:pull,push",) in front.token_requests
        # Tokens are cached per scope: one per push scope and per pull scope, not one per request.
        assert len(front.token_requests) <= 3, front.token_requests


def test_bearer_access_token_key_and_netrc(tmp_path: Path, registry: DockerRegistry) -> None:
    with AuthFront(registry.address, mode="bearer", users={USER: PASSWORD}, token_key="access_token") as front:
        options = RegistryOptions(docker_config=tmp_path / "no-config", netrc=_netrc(tmp_path))
        _round_trip(tmp_path, front, options)


def test_basic_with_netrc(tmp_path: Path, registry: DockerRegistry) -> None:
    with AuthFront(registry.address, mode="basic", users={USER: PASSWORD}) as front:
        options = RegistryOptions(docker_config=tmp_path / "no-config", netrc=_netrc(tmp_path))
        _round_trip(tmp_path, front, options)
        assert {e.auth_scheme for e in front.log if e.status < 300 and e.path.startswith("/v2/team/")} == {"basic"}


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_wrong_credentials_are_a_clear_error_without_the_secret(tmp_path: Path, registry: DockerRegistry, mode: str) -> None:
    wrong = "wr0ng-secret-value"
    layout = tmp_path / "layout"
    write_test_image(layout, "v1", [{"a.txt": b"hello"}])
    with AuthFront(registry.address, mode=mode, users={USER: PASSWORD}) as front:
        options = RegistryOptions(docker_config=_docker_config(tmp_path, front.address, wrong), netrc=tmp_path / "none")
        with pytest.raises(RegistryAuthError) as raised:
            push_layout(layout, parse_reference(f"{front.address}/team/app:v1"), tag_in_layout="v1", options=options)
    text = f"{raised.value} {raised.value!r} {raised.value.__dict__!r}"
    encoded = base64.b64encode(f"{USER}:{wrong}".encode()).decode()
    assert wrong not in text and encoded not in text and PASSWORD not in text
    assert "refused the credentials" in str(raised.value) and "config.json" in str(raised.value)
    assert registry.blob_digests() == []


def test_no_credentials_or_only_a_helper(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    write_test_image(layout, "v1", [{"a.txt": b"hello"}])
    with AuthFront(registry.address, mode="bearer", users={USER: PASSWORD}) as front:
        ref = parse_reference(f"{front.address}/team/app:v1")
        bare = RegistryOptions(docker_config=tmp_path / "no-config", netrc=tmp_path / "none")
        with pytest.raises(RegistryAuthError, match="give credentials"):
            push_layout(layout, ref, tag_in_layout="v1", options=bare)
        helper_dir = tmp_path / "helper"
        helper_dir.mkdir()
        (helper_dir / "config.json").write_text(json.dumps({"credsStore": "desktop"}))
        helper = RegistryOptions(docker_config=helper_dir, netrc=tmp_path / "none")
        with pytest.raises(RegistryAuthError, match="credential helpers are not supported"):
            push_layout(layout, ref, tag_in_layout="v1", options=helper)


def test_anonymous_pull_tokens_need_no_credentials(tmp_path: Path, registry: DockerRegistry) -> None:
    layout = tmp_path / "layout"
    digest, _, _ = write_test_image(layout, "v1", [{"a.txt": b"public"}])
    push_layout(layout, parse_reference(f"{registry.address}/pub/app:v1"), tag_in_layout="v1", options=RegistryOptions())
    with AuthFront(registry.address, mode="bearer", users={USER: PASSWORD}, anonymous_pull=True) as front:
        options = RegistryOptions(docker_config=tmp_path / "no-config", netrc=tmp_path / "none")
        pulled = pull_to_layout(parse_reference(f"{front.address}/pub/app:v1"), tmp_path / "out", platform=None, options=options)
        assert pulled.digest == digest
        with pytest.raises(RegistryAuthError, match="needs credentials"):
            push_layout(layout, parse_reference(f"{front.address}/pub/app:v2"), tag_in_layout="v1", options=options)


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_push_netrc_names_the_only_netrc_read(tmp_path: Path, registry: DockerRegistry, mode: str) -> None:
    """`fastpex push --netrc FILE` sends credentials from FILE alone: ~/.netrc (here valid for
    another user of the same registry) is never read, not even for the first, anonymous request."""
    home = tmp_path / "home"
    home.mkdir()
    home_secret = "home-netrc-secret-value"
    (home / ".netrc").write_text(f"machine 127.0.0.1 login home-user password {home_secret}\n")
    (home / ".netrc").chmod(0o600)
    layout = tmp_path / "layout"
    write_test_image(layout, "v1", [{"a.txt": b"hello"}])
    users = {USER: PASSWORD, "home-user": home_secret}
    with AuthFront(registry.address, mode=mode, users=users) as front:
        env = {k: v for k, v in os.environ.items() if k not in ("NETRC", "DOCKER_CONFIG")}
        env.update(HOME=str(home), PYTHONPATH=SRC)
        pushed = subprocess.run(
            [sys.executable, "-m", "fastpex", "push", "--layout", str(layout), "--tag", "v1",
             "--to", f"{front.address}/team/app:v1", "--netrc", str(_netrc(tmp_path))],
            capture_output=True, text=True, env=env, check=False, timeout=120,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        users_seen = {entry.basic_user for entry in front.log} - {""}
    assert users_seen == {USER}, front.log
    for secret in (PASSWORD, home_secret):
        assert secret not in pushed.stdout + pushed.stderr


NETRC_USER, NETRC_PASSWORD = "netrc-bot", "netrc-pa55-not-in-logs"


def _push_cli(tmp_path: Path, front: AuthFront, *options: str) -> "subprocess.CompletedProcess[str]":
    layout = tmp_path / "layout"
    if not layout.exists():
        write_test_image(layout, "v1", [{"a.txt": b"hello"}])
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NETRC", "DOCKER_CONFIG")}
    env.update(HOME=str(home), PYTHONPATH=SRC)
    return subprocess.run(
        [sys.executable, "-m", "fastpex", "push", "--layout", str(layout), "--tag", "v1",
         "--to", f"{front.address}/team/app:v1", *options],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip


def _other_netrc(tmp_path: Path) -> Path:
    path = tmp_path / "other-netrc"
    path.write_text(f"machine 127.0.0.1 login {NETRC_USER} password {NETRC_PASSWORD}\n")
    path.chmod(0o600)
    return path


def _all_secret_forms() -> list:
    return [
        secret
        for user, password in ((USER, PASSWORD), (NETRC_USER, NETRC_PASSWORD))
        for secret in (password, base64.b64encode(f"{user}:{password}".encode()).decode())
    ]


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_docker_config_wins_over_the_netrc_for_every_request(tmp_path: Path, registry: DockerRegistry, mode: str) -> None:
    """config.json's entry for the registry and the netrc name different (both valid) users:
    every request, the first anonymous one included, carries config.json's user or nothing."""
    users = {USER: PASSWORD, NETRC_USER: NETRC_PASSWORD}
    with AuthFront(registry.address, mode=mode, users=users) as front:
        docker_config = _docker_config(tmp_path, front.address)
        pushed = _push_cli(tmp_path, front, "--docker-config", str(docker_config), "--netrc", str(_other_netrc(tmp_path)))
        assert pushed.returncode == 0, pushed.stderr
        users_seen = {entry.basic_user for entry in front.log} - {""}
    assert users_seen == {USER}, front.log
    for secret in _all_secret_forms():
        assert secret not in pushed.stdout + pushed.stderr


@pytest.mark.parametrize("source", ["docker-config", "netrc"])
def test_a_server_echoing_the_credentials_does_not_print_them(tmp_path: Path, registry: DockerRegistry, source: str) -> None:
    """Blob uploads fail with 503 and a reason phrase and body that echo the `Authorization`
    received: the error names the failure, but no password nor Basic token of either source."""
    users = {USER: PASSWORD, NETRC_USER: NETRC_PASSWORD}
    with AuthFront(registry.address, mode="basic", users=users, fail_uploads=100, echo_credentials=True) as front:
        options = ["--netrc", str(_other_netrc(tmp_path))]
        if source == "docker-config":
            options += ["--docker-config", str(_docker_config(tmp_path, front.address))]
        pushed = _push_cli(tmp_path, front, *options)
    output = pushed.stdout + pushed.stderr
    assert pushed.returncode == 1, output
    assert "HTTP 503 Refused Basic ***" in output and "you sent Basic ***" in output, output
    for secret in _all_secret_forms():
        assert secret not in output, output
