"""Proxies: `NO_PROXY` semantics against urllib's, and HttpClient through a real tinyproxy.

The index is served on 127.0.0.2, so the `NO_PROXY=127.0.0.1,localhost` that pip runs get
does not hide it; the proxy's own log proves which requests went through it.
"""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path
from typing import Dict, Iterator
from urllib.parse import urlsplit

import pytest

from fastpex.core.errors import OperationalError, UserError
from fastpex.core.net.errors import HttpConnectionError, ProxyError
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.proxy import NO_PROXY_SETTINGS, ProxySettings
from fastpex.testing.index_server import IndexServer
from fastpex.testing.proxy_fixture import TestCA, Tinyproxy, free_port
from fastpex.testing.wheels import WheelFactory

HOST = "127.0.0.2"
FAST = dict(backoff_initial=0.01, backoff_max=0.02, connect_timeout=2, read_timeout=5, max_retries=1)
WHEEL = "demo-1.0-py3-none-any.whl"


def _client(env: Dict[str, str], **config: object) -> HttpClient:
    return HttpClient(HttpConfig(proxies=ProxySettings.from_environ(env), **{**FAST, **config}))  # type: ignore[arg-type]


# -- which proxy, if any --------------------------------------------------------------------
@pytest.mark.parametrize(
    "no_proxy, url",
    [
        ("example.com", "http://example.com/"),
        ("example.com", "http://pkgs.example.com/simple/"),
        (".example.com", "https://pkgs.example.com/"),
        ("example.com", "http://badexample.com/"),
        ("example.com:8080", "http://example.com:8080/"),
        ("example.com:8080", "http://example.com:9090/"),
        ("127.0.0.1, localhost", "http://127.0.0.2:9000/"),
        ("127.0.0.1, localhost", "http://localhost:9000/"),
        ("*", "https://anything.test/"),
        ("Example.COM", "http://example.com/"),
    ],
)
def test_no_proxy_agrees_with_urllib(no_proxy: str, url: str) -> None:
    settings = ProxySettings.from_environ({"HTTP_PROXY": "http://p:1", "HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy})
    host = urlsplit(url).netloc
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # not in typeshed
    expected = bool(bypass(host, {"no": no_proxy}))
    assert settings.bypasses(url) is expected
    assert (settings.proxy_for(url) is None) is expected


def test_no_proxy_networks_ipv6_and_default_ports() -> None:
    s = ProxySettings.from_environ({"HTTPS_PROXY": "p:3128", "NO_PROXY": "10.0.0.0/8,[::1]:8443,pypi.org:443"})
    assert s.bypasses("https://10.1.2.3/") and not s.bypasses("https://11.1.2.3/")
    assert s.bypasses("https://[::1]:8443/") and not s.bypasses("https://[::1]:9443/")
    assert s.bypasses("https://pypi.org/simple/")  # the default port counts as :443
    assert s.https is not None and (s.https.host, s.https.port) == ("p", 3128)  # no scheme: http://


def test_which_variable_serves_which_scheme() -> None:
    s = ProxySettings.from_environ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "ALL_PROXY": "http://all:3"})
    assert s.proxy_for("https://x/").host == "lower"  # type: ignore[union-attr]
    assert s.proxy_for("http://x/").host == "all"  # type: ignore[union-attr]
    assert s.proxy_for("file:///tmp/x") is None
    cgi = ProxySettings.from_environ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"})
    assert cgi.http is None  # urllib's httpoxy guard
    assert ProxySettings.from_environ({}).proxy_for("https://x/") is None


def test_unsupported_proxy_scheme_is_a_user_error_without_the_password() -> None:
    with pytest.raises(UserError) as e:
        ProxySettings.from_environ({"HTTPS_PROXY": "socks5://bob:hunter2@proxy:1080"})
    assert "`HTTPS_PROXY`" in str(e.value) and "only `http://` proxies" in str(e.value)
    assert "hunter2" not in str(e.value) and "hunter2" not in repr(ProxySettings.from_environ({"HTTP_PROXY": "http://bob:hunter2@p:1"}))


# -- a real proxy ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    factory = WheelFactory(tmp_path_factory.mktemp("dists"))
    factory.wheel("demo", "1.0", file_size_padding=200_000)
    return factory.dist_dir


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"), HOST)


@pytest.fixture
def http_index(dists: Path) -> Iterator[IndexServer]:
    with IndexServer(dists, host=HOST) as server:
        yield server


@pytest.fixture
def https_index(dists: Path, ca: TestCA) -> Iterator[IndexServer]:
    with IndexServer(dists, host=HOST, ssl_context=ca.server_context()) as server:
        yield server


def test_http_index_through_the_forward_proxy(http_index: IndexServer, tmp_path: Path) -> None:
    with Tinyproxy(tmp_path) as proxy, _client({"HTTP_PROXY": proxy.url}) as client:
        page = client.get(http_index.project_url("demo"))
        assert page.status == 200 and WHEEL.encode() in page.read()
        body = client.get(http_index.file_url(WHEEL)).read()
        assert body == (http_index.dist_dir / WHEEL).read_bytes()
        # Pooled per (proxy, origin): the connection to the proxy is kept for the next request.
        assert client.idle_connections_by_route() == {(proxy.url, ("http", HOST, http_index.port)): 1}
    seen = proxy.requests()
    assert f"GET {http_index.project_url('demo')} HTTP/1.1" in seen
    assert f"GET {http_index.file_url(WHEEL)} HTTP/1.1" in seen


def test_https_index_through_a_connect_tunnel_with_a_trusted_test_ca(
    https_index: IndexServer, ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert https_index.url.startswith(f"https://{HOST}:")
    with Tinyproxy(tmp_path, connect_ports=[https_index.port]) as proxy:
        # The default trust store does not know the test CA: TLS is checked through the tunnel.
        with _client({"HTTPS_PROXY": proxy.url}) as untrusting, pytest.raises(HttpConnectionError) as e:
            untrusting.get(https_index.project_url("demo"))
        assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
        # SSL_CERT_FILE is how a private CA is trusted (HttpConfig.ca_bundle's default store).
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_cert))
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        with HttpClient(HttpConfig(**FAST)) as client:  # type: ignore[arg-type]  # proxies from os.environ
            assert WHEEL.encode() in client.get(https_index.project_url("demo")).read()
            wheel = client.get(https_index.file_url(WHEEL), stream=True)
            assert b"".join(wheel.iter_chunks()) == (https_index.dist_dir / WHEEL).read_bytes()
            client.get(https_index.project_url("demo"))  # over the pooled tunnel
            assert client.idle_connections_by_route() == {(proxy.url, ("https", HOST, https_index.port)): 1}
    connects = [r for r in proxy.requests() if r.startswith("CONNECT")]
    assert connects and set(connects) == {f"CONNECT {HOST}:{https_index.port} HTTP/1.1"}
    assert len(connects) == 2  # the refused handshake, then one tunnel reused for three requests
    assert not [r for r in proxy.requests() if not r.startswith("CONNECT")]  # nothing in the clear


def test_no_proxy_bypasses_the_proxy(http_index: IndexServer, tmp_path: Path) -> None:
    with Tinyproxy(tmp_path) as proxy:
        for no_proxy in (HOST, f"{HOST}:{http_index.port}", "127.0.0.0/8", "*"):
            with _client({"HTTP_PROXY": proxy.url, "no_proxy": no_proxy}) as client:
                assert client.get(http_index.project_url("demo")).status == 200
        assert proxy.requests() == []
        with _client({"HTTP_PROXY": proxy.url, "NO_PROXY": f"{HOST}:1"}) as client:  # another port
            assert client.get(http_index.project_url("demo")).status == 200
        assert len(proxy.requests()) == 1
        with HttpClient(HttpConfig(proxies=NO_PROXY_SETTINGS)) as client:
            assert client.get(http_index.project_url("demo")).status == 200
        assert len(proxy.requests()) == 1


def test_an_unreachable_proxy_is_a_clear_error_naming_it(
    http_index: IndexServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.DEBUG, logger="fastpex")
    for scheme, variable in (("https", "HTTPS_PROXY"), ("http", "http_proxy")):
        with _client({variable: f"http://alice:s3cret%40x@127.0.0.1:{port}"}) as client:
            with pytest.raises(ProxyError) as e:
                client.get(f"{scheme}://{HOST}:{http_index.port}/simple/demo/")
        message = str(e.value)
        assert f"could not reach the proxy `http://alice:***@127.0.0.1:{port}` (from `{variable}`)" in message
        assert "ConnectionRefusedError" in message and "NO_PROXY" in message
        assert isinstance(e.value, OperationalError)  # exit 1
    assert http_index.requests == []  # it did not fall back to a direct connection
    assert "s3cret" not in caplog.text and "s3cret" not in message


def test_proxy_credentials_are_sent_and_never_shown(
    http_index: IndexServer, https_index: IndexServer, ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fastpex")
    auth = ("alice", "s3cret")
    with Tinyproxy(tmp_path, connect_ports=[https_index.port], basic_auth=auth) as proxy:
        good = proxy.url_with_credentials(*auth)
        env = {"HTTP_PROXY": good, "HTTPS_PROXY": good}
        with _client(env, ca_bundle=str(ca.ca_cert)) as client:
            assert client.get(http_index.project_url("demo")).status == 200  # Proxy-Authorization
            assert client.get(https_index.project_url("demo")).status == 200  # on CONNECT
            assert all("s3cret" not in str(key) for key in client.idle_connections_by_route())
        bad = proxy.url_with_credentials("alice", "wrong-pw")
        for url in (http_index.project_url("demo"), https_index.project_url("demo")):
            with _client({"HTTP_PROXY": bad, "HTTPS_PROXY": bad}, ca_bundle=str(ca.ca_cert)) as client:
                if url.startswith("https"):
                    with pytest.raises(ProxyError) as e:
                        client.get(url)
                    assert "answered CONNECT with HTTP 40" in str(e.value) and "wants credentials" in str(e.value)
                    assert f"`http://alice:***@127.0.0.1:{proxy.port}`" in str(e.value)
                    assert "wrong-pw" not in str(e.value)
                else:  # a forward proxy answers the request itself
                    assert client.get(url).status in (401, 407)  # tinyproxy says 401
        log = proxy.log()
    assert "CONNECT" in log
    for secret in ("s3cret", "wrong-pw"):
        assert secret not in caplog.text
        assert secret not in log
