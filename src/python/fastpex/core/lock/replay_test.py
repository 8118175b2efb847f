"""Reusing a finished lock: only while every input and every index page it read is unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List

import pytest

from fastpex.core.cli.lock import main
from fastpex.core.lockfile import load_lock
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory

TARGETS = ["--target", "linux_x86_64-cp311", "--target", "macosx_arm64-cp312"]


@pytest.fixture
def factory(tmp_path: Path) -> WheelFactory:
    f = WheelFactory(tmp_path / "dists")
    f.wheel("app", "1.0", requires_dist=["dep>=1"])
    f.wheel("dep", "1.0")
    return f


def _lock(index: "IndexServer | str", tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "--resolve", "python-default",
            "--index", index if isinstance(index, str) else index.simple_url,
            "--requirement", "app",
            *TARGETS,
            "--output", str(tmp_path / "out.lock"),
            "--pylock-output", str(tmp_path / "pylock.toml"),
            "--cache-dir", str(tmp_path / "cache"),
            *extra,
        ]
    )


def _versions(path: Path) -> dict:
    return {d.name: d.version for d in load_lock(path).distributions}


def _metadata_requests(index: IndexServer) -> List[str]:
    return [r.path for r in index.requests if r.path.endswith(".metadata") or "/files/" in r.path]


def test_unchanged_inputs_and_pages_write_the_stored_lock_without_resolving(
    index: IndexServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _lock(index, tmp_path) == 0
    first = (tmp_path / "out.lock").read_bytes()
    first_pylock = (tmp_path / "pylock.toml").read_bytes()
    (tmp_path / "out.lock").write_text("stale")
    (tmp_path / "pylock.toml").unlink()
    index.reset_log()
    caplog.set_level(logging.INFO)
    assert _lock(index, tmp_path) == 0
    assert (tmp_path / "out.lock").read_bytes() == first
    assert (tmp_path / "pylock.toml").read_bytes() == first_pylock
    assert "without resolving" in caplog.text
    # Only the pages were checked: no metadata, no artifacts, and no pip (which asks for pages
    # once per target, so each page would be requested twice).
    assert _metadata_requests(index) == []
    pages = sorted(r.path for r in index.requests)
    assert pages == sorted(set(pages)) and any(p.rstrip("/").endswith("/app") for p in pages)


def test_a_new_upload_is_seen(factory: WheelFactory, index: IndexServer, tmp_path: Path) -> None:
    assert _lock(index, tmp_path) == 0
    assert _versions(tmp_path / "out.lock")["dep"] == "1.0"
    factory.wheel("dep", "2.0")  # a page the lock read changes
    assert _lock(index, tmp_path) == 0
    assert _versions(tmp_path / "out.lock")["dep"] == "2.0"


def test_a_changed_input_resolves_again(factory: WheelFactory, index: IndexServer, tmp_path: Path) -> None:
    factory.wheel("dep", "2.0rc1")
    assert _lock(index, tmp_path) == 0
    assert _versions(tmp_path / "out.lock")["dep"] == "1.0"
    assert _lock(index, tmp_path, "--pre") == 0  # an option pip sees
    assert _versions(tmp_path / "out.lock")["dep"] == "2.0rc1"
    assert _lock(index, tmp_path) == 0
    assert _versions(tmp_path / "out.lock")["dep"] == "1.0"


def test_no_reuse_resolves(index: IndexServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert _lock(index, tmp_path) == 0
    caplog.set_level(logging.INFO)
    assert _lock(index, tmp_path, "--no-reuse") == 0
    assert "without resolving" not in caplog.text and "locked 2 distributions" in caplog.text


def test_an_unreachable_index_falls_back_to_resolving_and_reports_it(
    index: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _lock(index, tmp_path) == 0
    before = (tmp_path / "out.lock").read_bytes()
    url, port = index.simple_url, index.port
    index.stop()
    assert _lock(url, tmp_path) == 2  # the check fails, the resolve reports the index
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert (tmp_path / "out.lock").read_bytes() == before  # untouched


def test_a_stored_lock_needs_the_same_pip(index: IndexServer, tmp_path: Path) -> None:
    # The pip version is checked against the entry (its probe runs while pages are fetched).
    from fastpex.core.lock.replay import LockReplay

    url = index.simple_url
    replay = LockReplay({"inputs": "same"}, tmp_path / "cache")
    from fastpex.core.net.http import HttpClient
    from fastpex.core.net.index import IndexClient

    http = HttpClient()
    try:
        digest = IndexClient(http).page_digest(url, "app")
    finally:
        http.close()
    replay.store({"default": {"app": digest}}, "LOCK", None, pip_version="26.3")
    assert replay.lookup({"default": url}, pip_version=lambda: "26.3") is not None
    assert replay.lookup({"default": url}, pip_version=lambda: "26.2") is None

    def no_pip() -> str:
        raise RuntimeError("no pip here")

    assert replay.lookup({"default": url}, pip_version=no_pip) is None
