"""util/urls.py: what is printed has no credentials, what goes on the wire has the right ones
(the URL's own, a configured index's on the same origin, else the netrc's for the host)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpex.core.util.urls import (
    Credentials,
    authorization_for,
    credentials_in,
    default_netrc_path,
    expand_env,
    filename_from_url,
    redact,
    strip_credentials,
)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "url, redacted, stripped",
    [
        ("https://bob:s3cret@pypi.example.com:8443/simple/?x=1#f", "https://bob:***@pypi.example.com:8443/simple/?x=1#f",
         "https://pypi.example.com:8443/simple/?x=1#f"),
        # A lone user part is usually a token: hidden whole.
        ("https://ghp_T0KEN@example.com/simple", "https://***@example.com/simple", "https://example.com/simple"),
        # A password holding `@` (not percent-encoded): the host is after the last one.
        ("https://u:p@ss@example.com/", "https://u:***@example.com/", "https://example.com/"),
        ("https://example.com/simple", "https://example.com/simple", "https://example.com/simple"),
        ("file:///srv/wheels/a.whl", "file:///srv/wheels/a.whl", "file:///srv/wheels/a.whl"),
    ],
)  # fmt: skip
def test_redact_and_strip(url: str, redacted: str, stripped: str) -> None:
    assert redact(url) == redacted
    assert strip_credentials(url) == stripped


_USERINFO = st.text(alphabet="abcXYZ019-._~%!$&'()*+,;=:@", min_size=1, max_size=16)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcXYZ019-._~!$&'()*+,;=", min_size=1, max_size=10), _USERINFO)
def test_no_password_survives_redaction(user: str, password: str) -> None:
    secret = "SECRET" + password  # marked, so that it cannot be part of the host or path by chance
    url = f"https://{user}:{secret}@index.example.com:8080/simple/pkg/"
    assert secret not in redact(url) and "SECRET" not in strip_credentials(url)
    assert redact(url).endswith("@index.example.com:8080/simple/pkg/")
    assert strip_credentials(url) == "https://index.example.com:8080/simple/pkg/"


def test_credentials_in_decodes_percent_escapes_and_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials_in("https://us%40er:p%3Ass%2Fw@h/") == Credentials("us@er", "p:ss/w")
    assert credentials_in("https://token@h/") == Credentials("token", "")
    assert credentials_in("https://h/") is None
    monkeypatch.setenv("INDEX_TOKEN", "t0k3n")
    assert credentials_in("https://ci:${INDEX_TOKEN}@h/") == Credentials("ci", "t0k3n")
    assert expand_env("https://${INDEX_TOKEN}@h/${INDEX_TOKEN}") == "https://t0k3n@h/t0k3n"
    monkeypatch.delenv("INDEX_TOKEN")
    with pytest.raises(KeyError, match="INDEX_TOKEN"):
        expand_env("https://ci:${INDEX_TOKEN}@h/")
    assert "t0k3n" not in repr(Credentials("ci", "t0k3n"))  # not even in a traceback


def test_configured_index_credentials_go_to_its_origin_only() -> None:
    # Same scheme, host and port: any path (PyPI serves files from /packages, pages from /simple).
    assert authorization_for("https://pypi.example.com/packages/a.whl", ["https://ci:pw1@pypi.example.com/simple"]) == _basic(
        "ci", "pw1"
    )
    # Two indexes on one host: the longest common path prefix wins.
    configured = ["https://ci:pw1@pypi.example.com/simple", "https://ci:pw2@pypi.example.com/private/simple"]
    assert authorization_for("https://pypi.example.com/simple/a/a.whl", configured, Path("/none")) == _basic("ci", "pw1")
    assert authorization_for("https://pypi.example.com/private/simple/a/", configured, Path("/none")) == _basic("ci", "pw2")
    for other in ("http://pypi.example.com/simple", "https://pypi.example.com:444/simple", "https://cdn.example.com/a.whl"):
        assert authorization_for(other, configured, Path("/none")) is None, other
    # The URL's own credentials beat everything.
    assert authorization_for("https://me:mine@pypi.example.com/x", configured) == _basic("me", "mine")


def _netrc(path: Path, host: str, login: str, password: str) -> Path:
    path.write_text(f"machine {host} login {login} password {password}\n")
    path.chmod(0o600)
    return path


def test_netrc_lookup_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    assert default_netrc_path() == home / ".netrc"
    assert authorization_for("https://files.example.com/a.whl") is None  # no netrc at all
    _netrc(home / ".netrc", "files.example.com", "home-user", "home-pw")
    # The netrc is looked up by host alone: any port, any scheme.
    assert authorization_for("https://files.example.com:8443/a.whl") == _basic("home-user", "home-pw")
    assert authorization_for("http://files.example.com/a.whl") == _basic("home-user", "home-pw")
    assert authorization_for("https://other.example.com/a.whl") is None
    # $NETRC moves the default; a named netrc file is the only one read.
    named = _netrc(tmp_path / "named", "files.example.com", "named-user", "named-pw")
    monkeypatch.setenv("NETRC", str(tmp_path / "env-netrc"))
    assert default_netrc_path() == tmp_path / "env-netrc"
    assert authorization_for("https://files.example.com/a.whl") is None  # $NETRC has no such file
    _netrc(tmp_path / "env-netrc", "files.example.com", "env-user", "env-pw")
    assert authorization_for("https://files.example.com/a.whl") == _basic("env-user", "env-pw")
    assert authorization_for("https://files.example.com/a.whl", (), named) == _basic("named-user", "named-pw")
    assert authorization_for("https://other.example.com/a.whl", (), named) is None  # no fallback to $NETRC
    assert authorization_for("https://files.example.com/a.whl", (), tmp_path / "missing") is None
    # A broken netrc gives no credentials rather than failing the download.
    broken = tmp_path / "broken"
    broken.write_text("machine files.example.com login u password p\nnonsense here\n")
    assert authorization_for("https://files.example.com/a.whl", (), broken) is None


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://h/packages/ab/torch-2.9.1%2Bcu128-cp311-cp311-linux_x86_64.whl#sha256=00",
         "torch-2.9.1+cu128-cp311-cp311-linux_x86_64.whl"),
        ("https://h/a/b/pkg-1.0.tar.gz?token=x", "pkg-1.0.tar.gz"),
        ("https://h/", ""),
    ],
)  # fmt: skip
def test_filename_from_url(url: str, expected: Optional[str]) -> None:
    assert filename_from_url(url) == expected
