"""`python -m fastpex fetch`'s summary counts the bytes it stored, even when the index (so the
lock) gives no sizes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastpex.core.cli import fetch as fetch_cli
from fastpex.core.cli import lock as lock_cli
from fastpex.core.fetch.progress import _human_bytes
from fastpex.core.lockfile import load_lock
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import build_wheel

TARGET = "linux_x86_64-cp311"


def test_the_summary_counts_stored_bytes_when_the_index_gives_no_sizes(
    server: IndexServer, dists: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_wheel(dists, "big", "1.0", requires_dist=["small"], file_size_padding=200_000)
    build_wheel(dists, "small", "1.0", file_size_padding=30_000)
    server.update(include_sizes=False)
    lockfile, cache = tmp_path / "app.lock", tmp_path / "cache"
    assert lock_cli.main(["--resolve", "app", "--requirement", "big", "--index", server.simple_url, "--target", TARGET,
                          "--output", str(lockfile), "--cache-dir", str(cache), "--quiet"]) == 0
    artifacts = [a for d in load_lock(str(lockfile)).distributions for a in d.artifacts]
    assert len(artifacts) == 2 and all(a.size is None for a in artifacts)  # the index gave none
    expected = _human_bytes(sum(p.stat().st_size for p in dists.iterdir()))
    capsys.readouterr()

    assert fetch_cli.main(["--lock", str(lockfile), "--target", TARGET, "--cache-dir", str(cache)]) == 0
    summary = capsys.readouterr().err
    assert re.search(rf"2/2 artifacts \({re.escape(expected)}\) ready: 0 from the store, 2 downloaded "
                     rf"\({re.escape(expected)} in ", summary), summary

    assert fetch_cli.main(["--lock", str(lockfile), "--target", TARGET, "--cache-dir", str(cache), "--offline"]) == 0
    summary = capsys.readouterr().err
    assert f"2/2 artifacts ({expected}) ready: 2 from the store, 0 downloaded (0 B in " in summary, summary
