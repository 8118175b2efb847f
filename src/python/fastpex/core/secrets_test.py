"""Index credentials work for locking, fetching and building, and never leak.

The token string must not appear in the lockfile, pylock.toml, PEX-INFO of the built PEX, any
output of the CLIs (also with -v), or the messages of failures against that index. Three ways
of giving credentials are covered: in the URL, as a `${ENV}` reference, and in `.netrc`.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from fastpex.core.cli import build as build_cli

from fastpex.core.cli import fetch as fetch_cli

from fastpex.core.cli import lock as lock_cli
from fastpex.core.net.errors import HttpStatusError
from fastpex.core.net.http import HttpClient
from fastpex.core.net.index import IndexClient, IndexClientError
from fastpex.core.lock.fetcher import MetadataFetcher
from fastpex.core.lock.metadata import MetadataError
from fastpex.core.util.urls import authorization_for, redact, strip_credentials
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel, sha256_file

USER = "alice"
TOKEN = "tok3n-s3cr3t-9f2c1"
TARGET = "linux_x86_64-cp311"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secret-dists")
    build_wheel(root, "greet", "1.0", requires_dist=["colorize"], files={"greet/__init__.py": b"X = 1\n"})
    build_wheel(root, "colorize", "2.0", files={"colorize/__init__.py": b"Y = 2\n"})
    return root


@pytest.fixture(scope="module")
def server(dists: Path) -> Iterator[IndexServer]:
    # No advertised metadata: the proxy reads wheels by range, the path that talks most to the index.
    config = IndexConfig(require_auth=(USER, TOKEN), advertise_metadata=False, serve_metadata_files=False)
    with IndexServer(dists, config=config) as s:
        yield s


def _netrc(tmp_path: Path) -> Path:
    path = tmp_path / "netrc"
    path.write_text(f"machine 127.0.0.1\nlogin {USER}\npassword {TOKEN}\n")
    path.chmod(0o600)
    return path


def _index_url(server: IndexServer, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of the machine running the tests
    if how == "url":
        return server.auth_url()
    if how == "env":
        monkeypatch.setenv("FASTPEX_TEST_TOKEN", TOKEN)
        return f"http://{USER}:${{FASTPEX_TEST_TOKEN}}@127.0.0.1:{server.port}/simple/"
    assert how == "netrc"
    monkeypatch.setenv("NETRC", str(_netrc(tmp_path)))
    return server.simple_url


def _texts_under(path: Path) -> List[Tuple[str, bytes]]:
    out = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out.append((str(p), p.read_bytes()))
    return out


def _assert_no_token(where: str, data: "bytes | str") -> None:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    assert TOKEN.encode() not in raw, f"the token leaked into {where}"


@pytest.mark.parametrize("how", ["url", "env", "netrc"])
def test_lock_fetch_build_with_credentials_never_leak_the_token(
    how: str, server: IndexServer, dists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    index = _index_url(server, how, tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    lockfile = tmp_path / "app.lock"
    pylock = tmp_path / "pylock.app.toml"
    code = lock_cli.main(
        ["--resolve", "app", "--requirement", "greet", "--index", index, "--target", TARGET, "--output",
         str(lockfile), "--pylock-output", str(pylock), "--cache-dir", str(cache), "-v", "-v"]
    )
    out, err = capfd.readouterr()
    assert code == 0, err
    assert server.count("/files/*") > 0  # the index was really used, with credentials
    for name, text in (("the lockfile", lockfile.read_text()), ("pylock.toml", pylock.read_text()),
                       ("lock stdout", out), ("lock stderr", err), ("lock log records", caplog.text)):
        _assert_no_token(name, text)
    assert f"127.0.0.1:{server.port}" in lockfile.read_text()

    # fetch: credentials come from --index (same host) or .netrc; the lock has none.
    dest = tmp_path / "wheels"
    manifest = tmp_path / "manifest.json"
    fetch_index = ["--index", index] if how != "netrc" else []
    code = fetch_cli.main(["--lock", str(lockfile), "--target", TARGET, "--cache-dir", str(cache / "fetch"),
                           "--dest", str(dest), "--manifest-out", str(manifest), *fetch_index])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in dest.iterdir()) == ["colorize-2.0-py3-none-any.whl", "greet-1.0-py3-none-any.whl"]
    for name, text in (("fetch stdout", out), ("fetch stderr", err), ("the manifest", manifest.read_text())):
        _assert_no_token(name, text)

    # A fetch that fails its hash check against that index names the file, not the token.
    real = sha256_file(dists / "colorize-2.0-py3-none-any.whl")
    tampered = tmp_path / "tampered.lock"
    tampered.write_text(lockfile.read_text().replace(real, "0" * 64))
    code = fetch_cli.main(["--lock", str(tampered), "--target", TARGET, "--cache-dir", str(tmp_path / "tcache"),
                           *fetch_index])
    out, err = capfd.readouterr()
    assert code != 0 and "colorize-2.0-py3-none-any.whl" in err and real in err, err
    _assert_no_token("a fetch hash-mismatch error", out + err)

    # build: a fresh cache, so the artifacts are downloaded with credentials again.
    src = tmp_path / "src" / "app"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "main.py").write_text("import greet\n")
    pex = tmp_path / "app.pex"
    code = build_cli.main(["--lock", str(lockfile), "--cache-dir", str(tmp_path / "bcache"), "--sources",
                           str(src.parent), "--entry-point", "app.main", "--output", str(pex), *fetch_index])
    out, err = capfd.readouterr()
    assert code == 0, err
    _assert_no_token("build output", out + err)
    with zipfile.ZipFile(pex) as zf:
        _assert_no_token("PEX-INFO", zf.read("PEX-INFO"))
        for info in zf.infolist():
            _assert_no_token(f"the PEX member {info.filename}", zf.read(info))
    _assert_no_token("log records", caplog.text)
    # Nothing in any cache holds the token either (caches are shared and may be uploaded).
    for path, data in _texts_under(cache) + _texts_under(tmp_path / "bcache"):
        _assert_no_token(path, data)


def test_env_reference_is_kept_unexpanded_outside_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` in an index URL is expanded only when a request is made (so a Pants process
    cache key, which holds the argv, holds the reference, not the secret)."""
    monkeypatch.setenv("FASTPEX_TEST_TOKEN", TOKEN)
    url = f"https://{USER}:${{FASTPEX_TEST_TOKEN}}@example.invalid/simple/"
    parsed = lock_cli._parse_indexes([url])  # noqa: SLF001
    assert parsed == [("default", url)]
    assert TOKEN not in strip_credentials(url) and TOKEN not in redact(url)
    header = authorization_for("https://example.invalid/simple/x/", [url])
    assert header is not None and header.startswith("Basic ")


@pytest.mark.parametrize("how", ["url", "env", "netrc"])
def test_failures_against_a_credentialed_index_do_not_leak_the_token(
    how: str, server: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _index_url(server, how, tmp_path, monkeypatch)
    # A 404 for a page, with the credentials in the URL asked for.
    with HttpClient(configured_indexes=[index]) as http:
        client = IndexClient(http)
        assert client.project_page(index, "no-such-project") is None
        response = http.get(index.replace("/simple/", "/nothing/"))
        with pytest.raises(HttpStatusError) as status_error:
            response.raise_for_status()
        _assert_no_token("a 404 error", str(status_error.value))
        # A hash mismatch of a file from that index.
        server.update(faults=(Fault("wrong_hash", "colorize-*"),))
        try:
            page = client.project_page(index, "colorize")
            assert page is not None
            fetcher = MetadataFetcher(http, tmp_path / "cache", probe=False)
            with pytest.raises(MetadataError) as mismatch:
                # range reads would succeed without hashing: force the full download
                fetcher._via_full_download(page.files[0])  # noqa: SLF001
            assert "sha256" in str(mismatch.value)
            _assert_no_token("a hash mismatch error", str(mismatch.value))
            _assert_no_token("a hash mismatch error's repr", repr(mismatch.value))
        finally:
            server.update(faults=())
    # Wrong credentials: 401 with a hint, no secret echoed.
    wrong = server.simple_url.replace("http://", f"http://{USER}:not-{TOKEN}@")
    with HttpClient(configured_indexes=[wrong]) as http:
        with pytest.raises(IndexClientError) as unauthorized:
            IndexClient(http).project_page(wrong, "greet")
    assert "401" in str(unauthorized.value)
    _assert_no_token("a 401 error", str(unauthorized.value))


def test_credentials_are_not_forwarded_to_another_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files may live on another host (PEP 503 allows it): that host never gets the index's
    credentials, even through a redirect."""
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    index = f"https://{USER}:{TOKEN}@index.example/simple/"
    assert authorization_for("https://files.example/packages/a.whl", [index]) is None
    assert authorization_for("https://index.example/packages/a.whl", [index]) is not None
    # Same host, other port or scheme is another origin too.
    assert authorization_for("https://index.example:8443/packages/a.whl", [index]) is None
    assert authorization_for("http://index.example/packages/a.whl", [index]) is None


def test_manifest_and_lock_json_hold_no_userinfo(server: IndexServer, tmp_path: Path, monkeypatch) -> None:
    """Even a lock made from a page whose file links carry userinfo records clean URLs."""
    from fastpex.core.net.index import parse_html_page

    page = parse_html_page(
        f'<a href="http://{USER}:{TOKEN}@127.0.0.1:1/files/greet-1.0-py3-none-any.whl#sha256={"a" * 64}">x</a>'.encode(),
        f"http://{USER}:{TOKEN}@127.0.0.1:1/simple/greet/",
        "greet",
    )
    assert page.files and all(TOKEN not in f.url for f in page.files)
    _assert_no_token("the page URL", page.url)
    _assert_no_token("the artifact", json.dumps(page.files[0].to_artifact().__dict__))


def test_env_reference_works_without_the_proxy(
    server: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """`--no-proxy` hands the index URL to pip, which does not expand `${VAR}` itself."""
    index = _index_url(server, "env", tmp_path, monkeypatch)
    lockfile = tmp_path / "app.lock"
    code = lock_cli.main(["--resolve", "app", "--requirement", "colorize", "--index", index, "--target", TARGET,
                          "--output", str(lockfile), "--cache-dir", str(tmp_path / "cache"), "--no-proxy", "-v"])
    out, err = capfd.readouterr()
    assert code == 0, err
    for name, text in (("the lockfile", lockfile.read_text()), ("stdout", out), ("stderr", err)):
        _assert_no_token(name, text)
