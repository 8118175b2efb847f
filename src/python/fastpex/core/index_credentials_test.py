"""Two indexes on one origin with different credentials: each index only ever sees its own.

One host:port serves two real loopback indexes, `/simple/` (alice) and `/foundry/simple/` (bob),
through tinyproxy in reverse-proxy mode, and each index links its files beside its pages
(`/files/`, `/foundry/files/`). Every request is checked by the index that serves it: any other
`Authorization` than its own is a 401 there. `/files/...` shares the characters `/f` with
`/foundry/simple/`, which once sent bob's credentials for alice's files (`urls.authorization_for`
compared paths character by character).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Tuple
from urllib.parse import quote

import pytest

from fastpex.core.cli import fetch as fetch_cli
from fastpex.core.cli import lock as lock_cli
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.proxy_fixture import INSTALL_HINT, free_port
from fastpex.testing.wheels import build_wheel

TARGET = "linux_x86_64-cp311"
ALICE = ("alice", "alice-s3cret")
BOB = ("bob", "bob-s3cret")


class MountedIndex(IndexServer):
    """An index that links its files under the public URL it is mounted at."""

    public_base = ""

    def file_url(self, filename: str) -> str:
        return f"{self.public_base}/files/{quote(filename)}"


def _reverse_proxy(workdir: Path, mounts: List[Tuple[str, int]]) -> Tuple[subprocess.Popen, int]:
    """tinyproxy as a reverse proxy: `prefix` -> 127.0.0.1:port (it tries the last rule first)."""
    binary = shutil.which("tinyproxy") or next((p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.path.exists(p)), None)
    if binary is None:
        raise AssertionError(INSTALL_HINT)  # a required test dependency: fail, never skip
    port = free_port()
    conf = workdir / "reverse.conf"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 60", f'LogFile "{workdir / "tinyproxy.log"}"',
             "LogLevel Info", "MaxClients 64", "Allow 127.0.0.1", "DisableViaHeader Yes", "ReverseOnly Yes",
             *(f'ReversePath "{prefix}" "http://127.0.0.1:{upstream}/"' for prefix, upstream in mounts)]  # fmt: skip
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"tinyproxy did not listen on 127.0.0.1:{port}")


@pytest.fixture
def one_origin(tmp_path: Path) -> Iterator[Tuple[str, MountedIndex, MountedIndex]]:
    alice_dir, bob_dir = tmp_path / "alice-dists", tmp_path / "bob-dists"
    build_wheel(alice_dir, "greet", "1.0", files={"greet/__init__.py": b"X = 1\n"})
    build_wheel(bob_dir, "colorize", "2.0", files={"colorize/__init__.py": b"Y = 2\n"})
    # No advertised metadata: the locker reads the wheels by range, so files are fetched while
    # locking too, not only by `fetch`.
    alice = MountedIndex(alice_dir, IndexConfig(require_auth=ALICE, advertise_metadata=False, serve_metadata_files=False))
    bob = MountedIndex(bob_dir, IndexConfig(require_auth=BOB, advertise_metadata=False, serve_metadata_files=False))
    with alice, bob:
        proc, port = _reverse_proxy(tmp_path, [("/", alice.port), ("/foundry/", bob.port)])
        try:
            origin = f"http://127.0.0.1:{port}"
            alice.public_base, bob.public_base = origin, origin + "/foundry"
            yield origin, alice, bob
        finally:
            proc.terminate()
            proc.wait(10)


def test_two_indexes_on_one_origin_each_get_only_their_own_credentials(
    one_origin: Tuple[str, MountedIndex, MountedIndex], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    origin, alice, bob = one_origin
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of the machine running the tests
    host = origin.split("://", 1)[1]
    alice_index = f"http://{ALICE[0]}:{ALICE[1]}@{host}/simple/"
    bob_index = f"http://{BOB[0]}:{BOB[1]}@{host}/foundry/simple/"
    lockfile = tmp_path / "app.lock"
    code = lock_cli.main(["--resolve", "app", "--requirement", "greet", "--requirement", "colorize",
                          "--index", alice_index, "--index", f"foundry={bob_index}",
                          "--target", TARGET, "--output", str(lockfile), "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    _, err = capfd.readouterr()
    assert code == 0, err
    assert f"{origin}/files/greet-1.0-py3-none-any.whl" in lockfile.read_text()
    assert f"{origin}/foundry/files/colorize-2.0-py3-none-any.whl" in lockfile.read_text()

    dest = tmp_path / "wheels"
    code = fetch_cli.main(["--lock", str(lockfile), "--target", TARGET, "--cache-dir", str(tmp_path / "fetch-cache"),
                           "--dest", str(dest), "--index", alice_index, "--index", bob_index])  # fmt: skip
    _, err = capfd.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in dest.iterdir()) == ["colorize-2.0-py3-none-any.whl", "greet-1.0-py3-none-any.whl"]
    for server in (alice, bob):
        assert server.count("/files/*") > 0, "each index served its own files"
        # Each index rejects every Authorization but its own: no 401 means nothing else came.
        assert [r for r in server.requests if r.status == 401] == []
