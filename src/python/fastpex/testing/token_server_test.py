"""The auth front itself, spoken to with the standard library: challenges, tokens, forwarding."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fastpex.testing.registry_fixture import DockerRegistry
from fastpex.testing.token_server import AuthFront


def _get(url: str, authorization: str = "") -> "tuple[int, dict, bytes]":
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_bearer_challenge_token_and_forwarding(tmp_path: Path) -> None:
    with DockerRegistry(tmp_path / "registry") as registry, AuthFront(registry.address, users={"u": "p"}) as front:
        status, headers, _ = _get(f"http://{front.address}/v2/team/app/tags/list")
        assert status == 401
        challenge = headers["WWW-Authenticate"]
        assert challenge.startswith(f'Bearer realm="http://{front.address}/token"')
        assert 'scope="repository:team/app:pull"' in challenge
        basic = "Basic " + base64.b64encode(b"u:p").decode()
        status, _, body = _get(f"http://{front.address}/token?service=x&scope=repository:team/app:pull", basic)
        token = json.loads(body)["token"]
        assert status == 200 and token
        status, _, body = _get(f"http://{front.address}/v2/team/app/tags/list", f"Bearer {token}")
        assert status == 404 and b"NAME_UNKNOWN" in body  # the real registry answered
        wrong = "Basic " + base64.b64encode(b"u:nope").decode()
        assert _get(f"http://{front.address}/token?scope=repository:team/app:pull", wrong)[0] == 401


@pytest.mark.parametrize("mode", ["basic"])
def test_basic_mode(tmp_path: Path, mode: str) -> None:
    with DockerRegistry(tmp_path / "registry") as registry, AuthFront(registry.address, mode=mode, users={"u": "p"}) as front:
        status, headers, _ = _get(f"http://{front.address}/v2/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert _get(f"http://{front.address}/v2/", "Basic " + base64.b64encode(b"u:p").decode())[0] == 200
