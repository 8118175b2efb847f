"""The pools' TLS contexts (`pool.tls_context`, `pool.lazy_tls_context`): made once per trust
store, the system store's directory first; what is trusted is what the whole store trusts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from fastpex.core.net.errors import HttpConnectionError
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.net.pool import lazy_tls_context, tls_context
from fastpex.core.net.proxy import NO_PROXY_SETTINGS
from fastpex.testing.index_server import IndexServer
from fastpex.testing.proxy_fixture import TestCA

HOST = "127.0.0.2"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"), host=HOST)


@pytest.fixture
def https_index(ca: TestCA, tmp_path: Path) -> Iterator[IndexServer]:
    (tmp_path / "dists").mkdir()
    with IndexServer(tmp_path / "dists", host=HOST, ssl_context=ca.server_context()) as server:
        yield server


def _client() -> HttpClient:
    return HttpClient(HttpConfig(max_retries=0, proxies=NO_PROXY_SETTINGS))


def _directory_with(tmp_path: Path, ca: TestCA) -> Path:
    directory = tmp_path / "certs"
    directory.mkdir()
    shutil.copy(ca.ca_cert, directory / "test-ca.pem")
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
    return directory


def test_the_store_directory_alone_verifies_loading_only_the_ca_a_chain_needs(
    ca: TestCA, https_index: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_directory_with(tmp_path, ca)))
    lazy = lazy_tls_context()
    assert lazy is not None and lazy.cert_store_stats()["x509_ca"] == 0
    with _client() as client:
        assert client.get(https_index.simple_url).status == 200
    assert lazy.cert_store_stats()["x509_ca"] == 1  # read from the directory for this chain


def test_a_certificate_the_directory_fails_is_tried_with_the_whole_store_and_still_fails_if_untrusted(
    https_index: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    with _client() as client, pytest.raises(HttpConnectionError, match="certificate"):
        client.get(https_index.simple_url)
    whole = tls_context()
    assert whole.cert_store_stats()["x509_ca"] > 0  # the system file was consulted, and does not trust it


def test_what_the_whole_store_trusts_is_still_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty directory trusts nothing, the system file trusts the index's CA: the fallback
    # is what verifies (this machine's package index is reachable on every project machine).
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    with HttpClient(HttpConfig(max_retries=1)) as client:
        response = client.get("https://pypi.org/simple/six/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert response.status == 200
    lazy = lazy_tls_context()
    assert lazy is not None and lazy.cert_store_stats()["x509_ca"] == 0


def test_a_named_store_file_is_loaded_whole(ca: TestCA, https_index: IndexServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_cert))
    assert lazy_tls_context() is None
    with _client() as client:
        assert client.get(https_index.simple_url).status == 200
    assert tls_context() is tls_context()
