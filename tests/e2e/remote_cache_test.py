"""SLOW END-TO-END: fastpex through real Pants 2.17.1 against a real BuildGrid remote cache.

A scratch repo (two `fastpex_binary` apps, a loopback index of factory wheels) whose pants.toml
enables `remote_cache_read`/`remote_cache_write` against a BuildGrid server (CAS + ActionCache)
on loopback, exactly as docs/remote-cache.md tells a team to configure a shared cache.

1. Build with local caches A (`generate-lockfiles`, then `package` both apps).
2. Wipe every local cache (Pants' LMDB store, every named cache including `fastpex`, .pants.d,
   dist/) and build with empty caches B: the fastpex build processes are remote-cache hits
   (Pants' debug log says so, the index sends no artifact, the `fastpex` named cache stays
   empty) and every output is byte-identical to run 1.
3. Add a newer wheel to the index and regenerate the lock (still caches B, remote cache on):
   the lock changes, i.e. lock generation (PER_SESSION) is never replayed from any cache.

Fails if fastpex's build process stops being cacheable or deterministic (run 2 would download
from the index, or produce different bytes), or if lock processes become cacheable (step 3 would
replay the stale lock from the remote cache). If BuildGrid cannot be installed or started, the
test fails with the reason (set FASTPEX_ALLOW_NO_BUILDGRID=1 to skip instead). The figures are
printed (`pytest -s`) and written to $FASTPEX_E2E_REPORT_DIR/remote_cache.json when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from e2e.buildgrid_server import BuildGridServer
from e2e.scratch_repo import (
    APP,
    APP_OUT,
    TOOL,
    TOOL_OUT,
    Caches,
    artifacts_in,
    build_dists,
    file_downloads,
    lock_pins,
    pants,
    run_pex,
    snapshot_plugin,
    stats_counters,
    tree_digest,
    wipe_local_state,
    write_repo,
)
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

pytestmark = pytest.mark.slow  # ~2-3 min: three cold Pants runs and a BuildGrid server

FASTPEX_BUILD = re.compile(r"remote cache (hit|miss) for: .*with fastpex")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[IndexServer]:
    dists = tmp_path / "dists"
    dists.mkdir()
    build_dists(dists)
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False, honour_range=True)
    with IndexServer(dists, config=config) as server:
        yield server


@pytest.fixture
def bgd(tmp_path: Path) -> Iterator[BuildGridServer]:
    server = BuildGridServer(tmp_path / "buildgrid", instance="fastpex-ci")
    # No skip when BuildGrid can't start: that would hide a broken remote-cache path in CI.
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _remote_toml(server: BuildGridServer) -> str:
    # The same settings docs/remote-cache.md gives for a team's shared cache.
    return f"""
        remote_cache_read = true
        remote_cache_write = true
        remote_store_address = "{server.address}"
        remote_instance_name = "{server.instance}"
        # Let Pants finish uploading the run's results before it exits.
        session_end_tasks_timeout = 60
    """


_LOG_STEP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \[INFO\] (?:Starting: Build|Wrote dist/)", re.M)


def _fastpex_stage_seconds(stderr: str) -> float:
    """From the first fastpex step (tool PEX or build) to the last PEX written, per Pants' log."""
    stamps = [int(h) * 3600 + int(m) * 60 + float(sec) for h, m, sec in _LOG_STEP.findall(stderr)]
    return round(max(stamps) - min(stamps), 2) if stamps else -1.0


def _complete_downloads(index: IndexServer, dists: Path) -> list:
    """Whole artifacts the index sent in full."""
    sizes = {p.name: p.stat().st_size for p in dists.iterdir()}
    return [
        r.path
        for r in index.requests
        if r.path.startswith("/files/")
        and r.method == "GET"
        and r.status == 200
        and r.bytes_sent == sizes.get(Path(r.path).name, -1)
    ]


def _outputs(repo: Path) -> dict:
    return {out: tree_digest(repo / "dist" / out) for out in (APP_OUT, TOOL_OUT)}


def _report(figures: dict) -> None:
    print("remote-cache figures:", json.dumps(figures, indent=1, sort_keys=True))
    report_dir = os.environ.get("FASTPEX_E2E_REPORT_DIR")
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        (Path(report_dir) / "remote_cache.json").write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")


def test_rebuild_with_wiped_local_caches_hits_remote_cache_and_never_replays_a_lock(
    tmp_path: Path, index: IndexServer, bgd: BuildGridServer
) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, index, global_toml=_remote_toml(bgd), plugin_path=snapshot_plugin(tmp_path / "plugin"))
    caches_a, caches_b = Caches(tmp_path / "caches-a"), Caches(tmp_path / "caches-b")

    # Run 1, caches A: lock, then build both apps; results are written to the remote cache.
    run0 = pants(repo, caches_a, "--stats-log", "generate-lockfiles", "--resolve=app")
    assert stats_counters(run0.stderr).get("remote_cache_write_errors") == 0, run0.stderr[-3000:]
    lockfile = repo / "3rdparty" / "app.lock"
    assert lock_pins(lockfile) == {"greet": "1.0", "colorize": "2.1", "shout": "1.0"}
    index.reset_log()
    started = time.monotonic()
    run1 = pants(repo, caches_a, "--stats-log", "package", APP, TOOL)
    run1_seconds = time.monotonic() - started
    (tmp_path / "run1.log").write_text(run1.stderr)
    downloads1 = file_downloads(index)
    assert downloads1, "run 1 should fetch the wheels from the index"
    assert artifacts_in(caches_a.fastpex), "run 1 should fill the fastpex named cache"
    outputs1 = _outputs(repo)
    assert run_pex(repo / "dist" / APP_OUT, tmp_path / "pex_root1") == "*hello fastpex*\n"
    assert run_pex(repo / "dist" / TOOL_OUT, tmp_path / "pex_root1") == "*TOOL!*\n"
    counters1 = stats_counters(run1.stderr)
    assert counters1.get("remote_cache_write_successes", 0) > 0, counters1
    assert counters1.get("remote_cache_write_errors") == 0, counters1

    # Wipe every local cache: Pants' store, all named caches (fastpex, pex_root, ...), the
    # workdir and dist/. Only the lockfile (a source file) and the remote cache remain.
    shutil.copytree(repo / "dist", tmp_path / "dist-run1", symlinks=True)
    shutil.rmtree(caches_a.root)
    wipe_local_state(repo)

    # Run 2, empty caches B: everything cacheable comes from BuildGrid.
    index.reset_log()
    started = time.monotonic()
    run2 = pants(repo, caches_b, "--stats-log", "-ldebug", "package", APP, TOOL)
    run2_seconds = time.monotonic() - started
    (tmp_path / "run2.log").write_text(run2.stderr)  # kept by pytest for a failure's post-mortem
    assert _outputs(repo) == outputs1, "rebuild from the remote cache is not byte-identical"
    fastpex_lookups = [m.group(0) for m in FASTPEX_BUILD.finditer(run2.stderr)]
    hits = [line for line in fastpex_lookups if "remote cache hit" in line]
    misses = [line for line in fastpex_lookups if "remote cache miss" in line]
    # The zipapp is one build process; the packed tool is two (its dependencies, its application).
    assert len(hits) == 3 and not misses, fastpex_lookups
    # The fastpex build processes never did their work: no artifact came from the index, nothing
    # was fetched into the (new, empty) fastpex named cache. (Pants 2.17 races a local run
    # against every remote lookup and cancels it on a hit, so a speculative fastpex process may
    # be spawned and killed within milliseconds; it must not get to download anything.)
    run2_requests = file_downloads(index)
    assert _complete_downloads(index, tmp_path / "dists") == [], run2_requests
    assert artifacts_in(caches_b.fastpex) == []
    assert run_pex(repo / "dist" / APP_OUT, tmp_path / "pex_root2") == "*hello fastpex*\n"
    assert run_pex(repo / "dist" / TOOL_OUT, tmp_path / "pex_root2") == "*TOOL!*\n"

    counters2 = stats_counters(run2.stderr)
    requests = counters2.get("remote_cache_requests", 0)
    cached = counters2.get("remote_cache_requests_cached", 0)
    assert requests > 0 and counters2.get("remote_cache_read_errors", 0) == 0, counters2
    hit_rate = cached / requests

    # Run 3, still caches B and the remote cache on: a newer colorize appears on the index.
    # Lock processes are PER_SESSION: never read from (or written to) any cache, so the
    # regenerated lock sees the new version instead of replaying run 1's result.
    build_wheel(
        tmp_path / "dists",
        "colorize",
        "2.2",
        files={"colorize/__init__.py": b"def paint(s):\n    return '~' + s + '~'\n"},
    )
    stale = lockfile.read_bytes()
    index.reset_log()
    pants(repo, caches_b, "generate-lockfiles", "--resolve=app")
    assert lock_pins(lockfile)["colorize"] == "2.2", "lock generation replayed a stale result"
    assert lockfile.read_bytes() != stale
    assert any(r.path.startswith("/simple/") for r in index.requests), "the relock never asked the index"

    figures = {
        "run1_remote_cache_write_successes": counters1.get("remote_cache_write_successes", 0),
        "run1_index_file_requests": len(downloads1),
        "run2_remote_cache_requests": requests,
        "run2_remote_cache_requests_cached": cached,
        "run2_remote_cache_requests_uncached": counters2.get("remote_cache_requests_uncached", 0),
        "run2_remote_cache_hit_rate": round(hit_rate, 3),
        "run2_local_execution_requests": counters2.get("local_execution_requests", 0),
        "run2_fastpex_build_hits": len(hits),
        "run2_index_file_requests": len(run2_requests),
        "run1_package_seconds": round(run1_seconds, 1),
        "run2_package_seconds": round(run2_seconds, 1),
        "run1_fastpex_stage_seconds": _fastpex_stage_seconds(run1.stderr),
        "run2_fastpex_stage_seconds": _fastpex_stage_seconds(run2.stderr),
    }
    _report(figures)
    # Every process whose result run 1 wrote must come back; the ones left are uncacheable by
    # design (interpreter discovery and other PER_RESTART/PER_SESSION processes).
    assert hit_rate >= 0.5, figures
