"""Credentials lookup and challenge parsing (pure); the flows run in registry_auth_test.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from fastpex.core.errors import UserError
from fastpex.core.image.auth import Authenticator, find_credentials, parse_challenges, scrub
from fastpex.core.net.http import HttpClient

SECRET = "s3cr3t-Pa55"


def _config(tmp_path: Path, document: dict) -> Path:
    directory = tmp_path / "docker"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(document))
    return directory


def test_docker_config_auths_base64_and_plain_fields(tmp_path: Path) -> None:
    encoded = base64.b64encode(f"ci:{SECRET}".encode()).decode()
    config = _config(
        tmp_path,
        {
            "auths": {
                "https://reg.example.com:5000/v1/": {"auth": encoded},
                "other.example.com": {"username": "bob", "password": SECRET},
                "https://index.docker.io/v1/": {"auth": encoded},
            }
        },
    )
    found = find_credentials("reg.example.com:5000", docker_config=config, netrc_file=tmp_path / "none")
    assert found.credentials is not None and (found.credentials.username, found.credentials.password) == ("ci", SECRET)
    assert SECRET not in repr(found) and SECRET not in repr(found.credentials) and "config.json" in found.source
    other = find_credentials("other.example.com", docker_config=config, netrc_file=tmp_path / "none")
    assert other.credentials is not None and other.credentials.username == "bob"
    hub = find_credentials("docker.io", docker_config=config, netrc_file=tmp_path / "none")
    assert hub.credentials is not None and hub.credentials.username == "ci"
    assert find_credentials("reg.example.com", docker_config=config, netrc_file=tmp_path / "none").credentials is None


def test_docker_config_env_and_netrc_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, {"auths": {}})
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine reg.example.com login nina password {SECRET}\n")
    found = find_credentials("reg.example.com:5000", netrc_file=netrc)
    assert found.credentials is not None and found.credentials.username == "nina"
    assert "netrc" in found.source and SECRET not in found.source


def test_credential_helpers_are_named_not_run(tmp_path: Path) -> None:
    config = _config(tmp_path, {"credHelpers": {"reg.example.com": "ecr-login"}, "credsStore": "desktop"})
    found = find_credentials("reg.example.com", docker_config=config, netrc_file=tmp_path / "none")
    assert found.credentials is None and found.helper and "docker-credential-ecr-login" in found.helper
    store = find_credentials("elsewhere.example.com", docker_config=config, netrc_file=tmp_path / "none")
    assert store.helper and "docker-credential-desktop" in store.helper


def test_broken_config_is_a_user_error_without_the_secret(tmp_path: Path) -> None:
    config = _config(tmp_path, {"auths": {"reg.example.com": {"auth": base64.b64encode(SECRET.encode()).decode()}}})
    with pytest.raises(UserError) as raised:
        find_credentials("reg.example.com", docker_config=config, netrc_file=tmp_path / "none")
    assert SECRET not in str(raised.value) and "user:password" in str(raised.value)


def test_parse_challenges_with_quoted_commas() -> None:
    header = 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'
    (challenge,) = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:a/b:pull,push",
    }
    (basic,) = parse_challenges('Basic realm="Registry Realm"')
    assert basic.scheme == "basic" and basic.params["realm"] == "Registry Realm"
    assert parse_challenges(None) == []


def test_scrub() -> None:
    assert scrub(f"token {SECRET} refused", [SECRET, ""]) == "token *** refused"


def test_config_json_first_and_the_netrc_it_shadows_is_scrubbed_too(tmp_path: Path) -> None:
    """config.json's entry wins over the netrc's (even a broken netrc does not matter then), and
    the Authenticator scrubs both: every credential known for the registry, sent or not."""
    config = _config(tmp_path, {"auths": {"reg.example.com": {"username": "ci", "password": SECRET}}})
    netrc = tmp_path / "netrc"
    netrc.write_text("machine reg.example.com login other password netrc-Pa55-word\n")
    found = find_credentials("reg.example.com", docker_config=config, netrc_file=netrc)
    assert found.credentials is not None and found.credentials.username == "ci" and "config.json" in found.source
    with HttpClient(implicit_credentials=False) as http:
        auth = Authenticator("reg.example.com", http, lambda: found, lambda realm: None)
        text = scrub(f"ci:{SECRET} other:netrc-Pa55-word", auth.secrets)
    assert text == "ci:*** other:***"
    netrc.write_text("machine reg.example.com login a password b\nfoo bar\n")
    assert find_credentials("reg.example.com", docker_config=config, netrc_file=netrc).credentials == found.credentials
    with pytest.raises(UserError, match="cannot parse the netrc"):
        find_credentials("reg.example.com", docker_config=tmp_path / "none", netrc_file=netrc)
