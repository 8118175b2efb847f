"""`fastpex fetch` (cli/fetch.py) over the downloader: the destination and manifest, exit
statuses 2 and 1, real lockfiles, and `python -m fastpex fetch`."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from fastpex.core.fetch.downloader_test import artifact_for, wheel
from fastpex.core.fetch.progress import Reporter
from fastpex.core.fetch.selection_test import dist, linux_target, mac_target, make_lock
from fastpex.core.lockfile import dumps_lock
from fastpex.core.model import Artifact, Lock
from fastpex.core.store import ArtifactStore
from fastpex.testing.index_server import Fault, IndexServer
from fastpex.testing.wheels import sha256_file


def cli_lock(server: IndexServer, dists: Path) -> Tuple[Lock, Artifact, Artifact, Artifact]:
    linux_whl = wheel(dists, "torchish", tag="cp311-cp311-manylinux_2_17_x86_64")
    mac_whl = wheel(dists, "torchish", tag="cp311-cp311-macosx_11_0_arm64")
    pure = wheel(dists, "pure")
    a = {p.name: artifact_for(server, p) for p in (linux_whl, mac_whl, pure)}
    lock = make_lock(
        ["torchish"],
        [
            dist("torchish", "1.0", [a[linux_whl.name], a[mac_whl.name]], ["pure"]),
            dist("pure", "1.0", [a[pure.name]]),
        ],
        {linux_target(): ["torchish", "pure"], mac_target(): ["torchish", "pure"]},
    )
    return lock, a[linux_whl.name], a[mac_whl.name], a[pure.name]


def run_cli(argv: List[str], lock: Optional[Lock] = None) -> Tuple[int, str]:
    from fastpex.core.cli.fetch import main

    err = io.StringIO()
    code = main(argv, lock=lock, reporter=Reporter(), stderr=err)
    return code, err.getvalue()


def test_cli_fetches_into_dest_and_writes_manifest(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    import json

    lock, linux, _, pure = cli_lock(server, dists)
    dest, manifest = tmp_path / "out", tmp_path / "manifest.json"
    code, err = run_cli(
        ["--target", "linux_x86_64-cp311", "--cache-dir", str(tmp_path / "c"), "--dest", str(dest),
         "--manifest-out", str(manifest), "--fetch-jobs", "2"],
        lock,
    )
    assert (code, err) == (0, "")
    assert sorted(p.name for p in dest.iterdir()) == sorted([linux.filename, pure.filename])
    entries = json.loads(manifest.read_text())
    assert {e["filename"]: e["sha256"] for e in entries} == {
        linux.filename: linux.sha256,
        pure.filename: pure.sha256,
    }
    store = ArtifactStore(tmp_path / "c")
    for entry in entries:
        assert entry["path"] == str(dest / entry["filename"])
        assert sha256_file(Path(entry["path"])) == entry["sha256"]
        assert os.path.samefile(entry["path"], store.path_for(entry["sha256"]))  # hard link
    # Again, offline, with --verify: same result, no requests.
    server.reset_log()
    code, err = run_cli(
        ["--target", "linux_x86_64-cp311", "--cache-dir", str(tmp_path / "c"), "--dest", str(dest),
         "--offline", "--verify"],
        lock,
    )
    assert (code, err) == (0, "") and server.requests == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--target", "windows-cp311"], "`linux_x86_64-cp311`, `macosx_arm64-cp311`"),
        ([], "Pass at least one --target"),
        (["--target", "linux_x86_64-cp311", "--fetch-jobs", "0"], "--fetch-jobs must be at least 1"),
        (["--target", "linux_x86_64-cp311", "--bogus"], "unrecognized arguments"),
        (["--target", "linux_x86_64-cp311", "--offline"], "Offline mode"),
    ],
)
def test_cli_user_errors_exit_2(
    argv: List[str], expected: str, server: IndexServer, dists: Path, tmp_path: Path
) -> None:
    lock, *_ = cli_lock(server, dists)
    code, err = run_cli([*argv, "--cache-dir", str(tmp_path / "c")], lock)
    assert code == 2 and expected in err
    assert err.count("\n") == 1  # one paragraph


def test_cli_missing_lockfile_exits_2(tmp_path: Path) -> None:
    code, err = run_cli(["--lock", str(tmp_path / "nope.lock"), "--target", "x"])
    assert code == 2 and "does not exist" in err


def test_cli_download_failure_exits_1(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    lock, linux, _, _ = cli_lock(server, dists)
    server.update(faults=(Fault("http_500", pattern=linux.filename),))
    code, err = run_cli(
        ["--target", "linux_x86_64-cp311", "--cache-dir", str(tmp_path / "c"), "--retries", "1"], lock
    )
    assert code == 1 and "HTTP 500" in err and linux.filename in err


def test_cli_reads_a_real_lockfile(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    lock, linux, _, pure = cli_lock(server, dists)
    path = tmp_path / "default.lock"
    path.write_text(dumps_lock(lock))
    manifest = tmp_path / "m.json"
    code, err = run_cli(
        ["--lock", str(path), "--target", "linux_x86_64-cp311", "--cache-dir", str(tmp_path / "c"),
         "--manifest-out", str(manifest)]
    )
    assert (code, err) == (0, "")
    import json

    assert sorted(e["filename"] for e in json.loads(manifest.read_text())) == sorted(
        [linux.filename, pure.filename]
    )
    path.write_text("{not a lock")
    code, err = run_cli(["--lock", str(path), "--target", "linux_x86_64-cp311"])
    assert code == 2 and "Could not read the lockfile" in err


def test_python_dash_m_fastpex_fetch(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    import subprocess

    lock, linux, _, pure = cli_lock(server, dists)
    path = tmp_path / "default.lock"
    path.write_text(dumps_lock(lock))
    src = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": src, "NO_PROXY": "127.0.0.1"}
    base = [sys.executable, "-m", "fastpex", "fetch", "--lock", str(path), "--cache-dir", str(tmp_path / "c")]
    bad = subprocess.run([*base, "--target", "win"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "`linux_x86_64-cp311`" in bad.stderr
    ok = subprocess.run(
        [*base, "--target", "linux_x86_64-cp311", "--dest", str(tmp_path / "d")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2/2 artifacts" in ok.stderr  # the quiet reporter's one line (stderr isn't a TTY)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted([linux.filename, pure.filename])
