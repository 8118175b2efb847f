"""`python -m fastpex fetch` when the proxy is at fault: the error names the proxy as
`scheme://host:port` and the variable it came from, never the credentials in its URL, and
exits 1 (the world failed, not the input)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest

from fastpex.core.fetch.downloader_test import artifact_for, wheel
from fastpex.core.fetch.selection_test import dist, linux_target, make_lock
from fastpex.core.lockfile import dumps_lock
from fastpex.testing.index_server import IndexServer
from fastpex.testing.proxy_fixture import TestCA, Tinyproxy, free_port

HOST = "127.0.0.2"  # not loopback-exempt from the proxy the way 127.0.0.1 is
SRC = str(Path(__file__).resolve().parents[3])
USER, PASSWORD = "bob", "hunter2-proxy-secret"


def _write_lock(index: IndexServer, dists: Path, path: Path) -> None:
    pure = wheel(dists, "pure")
    lock = make_lock(["pure"], [dist("pure", "1.0", [artifact_for(index, pure)])], {linux_target(): ["pure"]})
    path.write_text(dumps_lock(lock))


def _fetch(lock: Path, tmp_path: Path, *extra: str, **env_extra: str) -> "subprocess.CompletedProcess[str]":
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=SRC, **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "fastpex", "fetch", "--lock", str(lock), "--target", "linux_x86_64-cp311",
         "--cache-dir", str(tmp_path / "cache"), *(extra or ("--retries", "1"))],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_unreachable_proxy_is_named_without_its_credentials(dists: Path, tmp_path: Path, scheme: str) -> None:
    ca = TestCA.create(tmp_path / "ca", HOST)
    context = ca.server_context() if scheme == "https" else None
    variable = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    port = free_port()  # nothing listens there
    with IndexServer(dists, host=HOST, ssl_context=context) as index:
        lock = tmp_path / "default.lock"
        _write_lock(index, dists, lock)
        proxy = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
        proc = _fetch(lock, tmp_path, **{variable: proxy, "SSL_CERT_FILE": str(ca.ca_cert)})
        assert not index.requests  # no silent direct connection
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert f"could not reach the proxy `http://127.0.0.1:{port}` (from `{variable}`)" in proc.stderr, output
    assert f"Check `{variable}`" in proc.stderr
    assert PASSWORD not in output and f"{USER}:" not in output and f"{USER}@" not in output, output


def test_a_proxy_refusing_the_tunnel_is_named_without_its_credentials(dists: Path, tmp_path: Path) -> None:
    """tinyproxy with the right credentials, but CONNECT allowed to another port only: 403."""
    ca = TestCA.create(tmp_path / "ca", HOST)
    with IndexServer(dists, host=HOST, ssl_context=ca.server_context()) as index:
        lock = tmp_path / "default.lock"
        _write_lock(index, dists, lock)
        with Tinyproxy(tmp_path / "proxy", connect_ports=[free_port()], basic_auth=(USER, PASSWORD)) as proxy:
            proc = _fetch(
                lock, tmp_path, HTTPS_PROXY=proxy.url_with_credentials(USER, PASSWORD), SSL_CERT_FILE=str(ca.ca_cert)
            )
            assert any(line.startswith("CONNECT ") for line in proxy.requests()), proxy.log()
        assert not index.requests
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert f"the proxy `http://127.0.0.1:{proxy.port}` (from `HTTPS_PROXY`) refused the connection" in output, output
    assert PASSWORD not in output and f"{USER}:" not in output, output


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_refusing_connections_fails_the_whole_fetch_fast(dists: Path, tmp_path: Path, scheme: str) -> None:
    """Nothing listens at the proxy's address: every artifact would fail alike, so the fetch
    retries that cause once in all per worker process (`--fetch-jobs 2`: at most 2 processes),
    not `--retries 5` times per artifact (the old behaviour: >= 5 retries, ~12 s)."""
    ca = TestCA.create(tmp_path / "ca", HOST)
    context = ca.server_context() if scheme == "https" else None
    variable = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    port = free_port()  # nothing listens there
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    with IndexServer(dists, host=HOST, ssl_context=context) as index:
        built = [wheel(dists, name) for name in names]
        lock = make_lock(
            names,
            [dist(name, "1.0", [artifact_for(index, path)]) for name, path in zip(names, built)],
            {linux_target(): names},
        )
        (tmp_path / "default.lock").write_text(dumps_lock(lock))
        started = time.monotonic()
        proc = _fetch(
            tmp_path / "default.lock", tmp_path, "--retries", "5", "--fetch-jobs", "2",
            **{variable: f"http://{USER}:{PASSWORD}@127.0.0.1:{port}", "SSL_CERT_FILE": str(ca.ca_cert)},
        )  # fmt: skip
        elapsed = time.monotonic() - started
        assert not index.requests
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert proc.stderr.count(f"could not reach the proxy `http://127.0.0.1:{port}` (from `{variable}`)") == 1, output
    assert PASSWORD not in output and f"{USER}:" not in output and f"{USER}@" not in output, output
    # The summary counts every retry the workers reported; the old behaviour retried each of the
    # in-flight artifacts up to 5 times (>= 5 in all).
    summary = [line for line in proc.stderr.splitlines() if line.startswith("fastpex fetch: 0/6 artifacts")]
    assert len(summary) == 1, output
    found = re.search(r", (\d+) retries", summary[0])
    retries = int(found.group(1)) if found else 0
    assert retries <= 2, output
    assert elapsed < 5, (elapsed, output)  # it was ~12 s; the retries count above is the real check
