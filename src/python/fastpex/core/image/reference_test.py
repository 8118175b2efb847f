from __future__ import annotations

import pytest

from fastpex.core.errors import UserError
from fastpex.core.image.reference import ImageReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:5000/app:v1", ImageReference("127.0.0.1:5000", "app", "v1", None)),
        ("localhost/team/app", ImageReference("localhost", "team/app", None, None)),
        ("localhost:5000/a/b/c:1.0-rc_1", ImageReference("localhost:5000", "a/b/c", "1.0-rc_1", None)),
        ("ghcr.io/org/app@" + DIGEST, ImageReference("ghcr.io", "org/app", None, DIGEST)),
        ("ghcr.io/org/app:v2@" + DIGEST, ImageReference("ghcr.io", "org/app", "v2", DIGEST)),
        ("python:3.11-slim", ImageReference("docker.io", "library/python", "3.11-slim", None)),
        ("team/app", ImageReference("docker.io", "team/app", None, None)),
        ("[::1]:5000/app:x", ImageReference("[::1]:5000", "app", "x", None)),
        ("reg.example.com/a__b/c.d-e", ImageReference("reg.example.com", "a__b/c.d-e", None, None)),
    ],
)
def test_parses_docker_references(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


def test_properties_and_round_trip() -> None:
    ref = parse_reference("127.0.0.1:5000/app:v1")
    assert (ref.host, ref.api_host, ref.reference) == ("127.0.0.1", "127.0.0.1:5000", "v1")
    assert str(ref) == "127.0.0.1:5000/app:v1"
    assert parse_reference("127.0.0.1:5000/app").reference == "latest"
    pinned = parse_reference(f"127.0.0.1:5000/app:v1@{DIGEST}")
    assert pinned.reference == DIGEST and str(pinned) == f"127.0.0.1:5000/app:v1@{DIGEST}"
    assert parse_reference("[::1]:5000/app").host == "::1"
    assert parse_reference("python").api_host == "registry-1.docker.io"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("127.0.0.1:5000/App:v1", "lower case (`app`)"),
        ("127.0.0.1:5000/app:-bad", "the tag `-bad`"),
        ("127.0.0.1:5000/app@sha256:abc", "64 lower-case hex"),
        ("127.0.0.1:5000/app@md5:" + "a" * 32, "not `sha256:`"),
        ("https://127.0.0.1:5000/app", "is a URL"),
        ("127.0.0.1:5000/", "names no repository"),
        ("127.0.0.1:5000/a//b", "not a valid repository path component"),
        ("bad_host.com:5000/app", "not a valid registry host"),
        ("localhost/" + "a" * 300, "longer than 255"),
    ],
)
def test_malformed_references_are_user_errors(text: str, fragment: str) -> None:
    with pytest.raises(UserError) as raised:
        parse_reference(text)
    assert fragment in str(raised.value)
