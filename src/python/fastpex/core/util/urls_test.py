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
    # Two indexes on one host: the longest whole-segment match wins.
    configured = ["https://ci:pw1@pypi.example.com/simple", "https://ci:pw2@pypi.example.com/private/simple"]
    assert authorization_for("https://pypi.example.com/simple/a/a.whl", configured, Path("/none")) == _basic("ci", "pw1")
    assert authorization_for("https://pypi.example.com/private/simple/a/", configured, Path("/none")) == _basic("ci", "pw2")
    for other in ("http://pypi.example.com/simple", "https://pypi.example.com:444/simple", "https://cdn.example.com/a.whl"):
        assert authorization_for(other, configured, Path("/none")) is None, other
    # The URL's own credentials beat everything.
    assert authorization_for("https://me:mine@pypi.example.com/x", configured) == _basic("me", "mine")


_TWO_ON_ONE_HOST = ["https://ci:pw1@h.example/simple", "https://ci:pw2@h.example/private/simple"]


@pytest.mark.parametrize(
    "url, owner",
    [
        # The reported leak: `/packages` and `/private` share the character `p`, not a segment.
        # Files beside `/simple` (PyPI's layout) belong to the index whose directory holds them.
        ("https://h.example/packages/ab/a-1.0-py3-none-any.whl", "pw1"),
        ("https://h.example/private/packages/a-1.0.whl", "pw2"),  # beside /private/simple
        ("https://h.example/private/simple/a/", "pw2"),
        ("https://h.example/simple/private/a/", "pw1"),
        ("https://h.example/simplex/a.whl", "pw1"),  # not in /simple, but beside it
        ("https://h.example/privatex/simple/a.whl", "pw1"),  # `privatex` is not `private`
        # Dot segments and percent-escapes are resolved as the server resolves them.
        ("https://h.example/private/simple/../../packages/a.whl", "pw1"),
        ("https://h.example/%70rivate/simple/a/", "pw2"),
        ("https://h.example/private%2Fsimple/a/", "pw1"),  # one segment `private/simple`
        ("https://h.example:443/private/simple/a/", "pw2"),  # the default port is the same origin
        ("https://H.EXAMPLE/private/simple/a/", "pw2"),
    ],
)  # fmt: skip
def test_indexes_on_one_host_match_whole_path_segments(url: str, owner: str) -> None:
    for configured in (_TWO_ON_ONE_HOST, _TWO_ON_ONE_HOST[::-1]):  # the order never matters
        assert authorization_for(url, configured, Path("/none")) == _basic("ci", owner), url


def test_a_tie_between_different_credentials_sends_none(tmp_path: Path) -> None:
    siblings = ["https://a:pw1@h.example/team-a/simple", "https://b:pw2@h.example/team-b/simple"]
    # Neither index path nor directory holds `/packages`: no owner, so neither is sent...
    assert authorization_for("https://h.example/packages/a.whl", siblings, Path("/none")) is None
    # ... and the host's netrc entry, which the user gave for the whole host, applies.
    netrc_file = _netrc(tmp_path / "netrc", "h.example", "n", "pwn")
    assert authorization_for("https://h.example/packages/a.whl", siblings, netrc_file) == _basic("n", "pwn")
    # The same credentials twice are no conflict; one shared segment decides too.
    same = ["https://a:pw1@h.example/team-a/simple", "https://a:pw1@h.example/team-b/simple"]
    assert authorization_for("https://h.example/packages/a.whl", same, Path("/none")) == _basic("a", "pw1")
    assert authorization_for("https://h.example/team-b/x/a.whl", siblings, Path("/none")) == _basic("b", "pw2")
    # An index without credentials takes no part.
    mixed = ["https://h.example/team-b/simple", "https://a:pw1@h.example/team-a/simple"]
    assert authorization_for("https://h.example/team-a/files/a.whl", mixed, Path("/none")) == _basic("a", "pw1")


_SEGMENT = st.text(alphabet="ab", min_size=1, max_size=3)  # tiny alphabet: shared characters abound
_PATH = st.lists(_SEGMENT, min_size=0, max_size=4)


@settings(max_examples=400, deadline=None)
@given(_PATH, _PATH, _PATH, st.booleans())
def test_the_index_containing_the_url_gets_it_whatever_characters_paths_share(
    owner: list, other: list, rest: list, other_first: bool
) -> None:
    """A URL inside an index's path gets that index's credentials, unless another index's path
    also contains it and is longer; the order of the indexes never matters."""
    if other == owner:
        return
    url = "https://h.example/" + "/".join(owner + rest)
    indexes = ["https://o:OWNER@h.example/" + "/".join(owner), "https://x:OTHER@h.example/" + "/".join(other)]
    if other_first:
        indexes.reverse()
    other_wins = (owner + rest)[: len(other)] == other and len(other) > len(owner)
    expected = _basic("x", "OTHER") if other_wins else _basic("o", "OWNER")
    assert authorization_for(url, indexes, Path("/none")) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["http", "https"]),
    st.sampled_from(["h.example", "g.example", "h.example.evil"]),
    st.sampled_from([None, 80, 443, 8443]),
    _PATH,
)
def test_credentials_only_go_to_the_exact_origin(scheme: str, host: str, port: Optional[int], path: list) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}/" + "/".join(path)
    granted = authorization_for(url, ["https://o:pw@h.example/simple"], Path("/none"))
    same_origin = scheme == "https" and host == "h.example" and port in (None, 443)
    assert granted == (_basic("o", "pw") if same_origin else None)


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
