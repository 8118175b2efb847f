"""`python -m fastpex lock` through a real proxy (tinyproxy), with the index on 127.0.0.2.

With the metadata proxy (the default) pip talks only to fastpex on 127.0.0.1 and the core's
client makes the upstream requests through the proxy; with `--no-proxy` pip talks to the index
itself, through the user's proxy, and honours the user's `NO_PROXY` merged with loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

import fastpex
from fastpex.core.lock.pip import clean_env
from fastpex.core.lockfile import load_lock
from fastpex.testing.index_server import IndexServer
from fastpex.testing.proxy_fixture import TestCA, Tinyproxy, free_port
from fastpex.testing.wheels import WheelFactory

HOST = "127.0.0.2"
SRC = str(Path(fastpex.__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    factory = WheelFactory(tmp_path_factory.mktemp("dists"))
    factory.wheel("app", "1.0", requires_dist=["dep>=1"])
    factory.wheel("dep", "1.0")
    return factory.dist_dir


@pytest.fixture
def index(dists: Path) -> Iterator[IndexServer]:
    with IndexServer(dists, host=HOST) as server:
        yield server


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("PIP_")}
    env["PYTHONPATH"] = SRC
    env.update(extra)
    return env


def _lock(index: IndexServer, tmp_path: Path, env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    out = tmp_path / "python-default.lock"
    cmd = [
        sys.executable, "-m", "fastpex", "lock", "--resolve", "python-default", "--index", index.simple_url,
        "--requirement", "app", "--target", "linux_x86_64-cp311", "--output", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--quiet", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        locked = load_lock(out)
        assert {p.name for r in locked.resolves for p in r.packages} == {"app", "dep"}
    return proc


def test_lock_through_the_proxy(index: IndexServer, tmp_path: Path) -> None:
    with Tinyproxy(tmp_path / "proxy") as proxy:
        proc = _lock(index, tmp_path, _env(HTTP_PROXY=proxy.url, NO_PROXY="pypi.org"))
        assert proc.returncode == 0, proc.stderr
        seen = proxy.requests()
    # The metadata proxy's upstream requests (pages, metadata) went through the proxy.
    assert f"GET {index.project_url('app')} HTTP/1.1" in seen
    assert f"GET {index.project_url('dep')} HTTP/1.1" in seen
    assert all(f"//{HOST}:{index.port}/" in r for r in seen)  # pip's loopback traffic did not


def test_pip_itself_uses_the_proxy_and_the_users_no_proxy(index: IndexServer, tmp_path: Path) -> None:
    with Tinyproxy(tmp_path / "proxy") as proxy:
        proc = _lock(index, tmp_path / "a", _env(HTTP_PROXY=proxy.url), "--no-proxy")
        assert proc.returncode == 0, proc.stderr
        through = proxy.requests()
        assert f"GET {index.project_url('app')} HTTP/1.1" in through  # pip's own request
        # The user's NO_PROXY (lower case here) is merged into pip's, not replaced by loopback.
        proc = _lock(index, tmp_path / "b", _env(HTTP_PROXY=proxy.url, no_proxy=HOST), "--no-proxy")
        assert proc.returncode == 0, proc.stderr
        assert proxy.requests() == through
    assert index.matching("/simple/app/")


def test_pip_no_proxy_merges_both_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "corp.example, 10.0.0.0/8")
    monkeypatch.setenv("no_proxy", "corp.example,.internal")
    env = clean_env(())
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,10.0.0.0/8,.internal,127.0.0.1,localhost"


def test_lock_from_an_https_index_through_connect(dists: Path, tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", HOST)
    with IndexServer(dists, host=HOST, ssl_context=ca.server_context()) as index:
        with Tinyproxy(tmp_path / "proxy", connect_ports=[index.port]) as proxy:
            env = _env(HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(ca.ca_cert))
            proc = _lock(index, tmp_path / "m", env)  # the metadata proxy's client
            assert proc.returncode == 0, proc.stderr
            proc = _lock(index, tmp_path / "d", env, "--no-proxy")  # pip itself
            assert proc.returncode == 0, proc.stderr
            seen = proxy.requests()
        # Only tunnels: fastpex's client sends CONNECT as HTTP/1.1, pip's (http.client) as 1.0.
        assert set(seen) == {f"CONNECT {HOST}:{index.port} HTTP/1.1", f"CONNECT {HOST}:{index.port} HTTP/1.0"}


@pytest.mark.parametrize("mode", [(), ("--no-proxy",)])
def test_lock_with_an_unreachable_proxy_fails_clearly(index: IndexServer, tmp_path: Path, mode: tuple) -> None:
    port = free_port()
    proc = _lock(index, tmp_path, _env(HTTP_PROXY=f"http://bob:hunter2@127.0.0.1:{port}"), *mode)
    # The lock stage reports it as an unusable index, but the proxy being down is the world's
    # fault, not the input's: exit 1 (operational), not 2 (user error).
    assert proc.returncode == 1, proc.stderr
    assert f"could not reach the proxy `http://bob:***@127.0.0.1:{port}` (from `HTTP_PROXY`)" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    assert not index.requests  # no silent direct connection


def test_lock_from_an_https_index_with_an_unreachable_https_proxy_exits_1(dists: Path, tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", HOST)
    port = free_port()
    with IndexServer(dists, host=HOST, ssl_context=ca.server_context()) as index:
        env = _env(HTTPS_PROXY=f"http://127.0.0.1:{port}", SSL_CERT_FILE=str(ca.ca_cert))
        proc = _lock(index, tmp_path, env)
        assert proc.returncode == 1, proc.stderr
        assert f"could not reach the proxy `http://127.0.0.1:{port}` (from `HTTPS_PROXY`)" in proc.stderr
        assert not index.requests


def test_fetch_goes_through_the_proxy_and_honours_no_proxy(index: IndexServer, tmp_path: Path) -> None:
    """`fetch`'s downloads (in its worker processes) take the same proxy as the lock's pages."""
    assert _lock(index, tmp_path, _env()).returncode == 0
    lock = tmp_path / "python-default.lock"

    def fetch(cache: str, **proxy_env: str) -> str:
        cmd = [sys.executable, "-m", "fastpex", "fetch", "--lock", str(lock), "--target", "linux_x86_64-cp311",
               "--cache-dir", str(tmp_path / cache)]  # fmt: skip
        proc = subprocess.run(cmd, env=_env(**proxy_env), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    with Tinyproxy(tmp_path / "proxy") as proxy:
        fetch("through", HTTP_PROXY=proxy.url)
        through = proxy.requests()
        wheels = [r for r in through if r.startswith("GET ") and ".whl HTTP/1.1" in r]
        assert len(wheels) == 2, through  # app and dep, each downloaded through the proxy
        direct = fetch("direct", HTTP_PROXY=proxy.url, NO_PROXY=HOST)
        assert proxy.requests() == through  # NO_PROXY: nothing more reached the proxy
    assert "2/2 artifacts" in direct and "2 downloaded" in direct, direct
