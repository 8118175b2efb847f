"""SLOW END-TO-END: concurrent fastpex runs sharing one cache, and a fetch killed mid-download.

1. Two separate `pants` processes (`--no-pantsd`, two scratch repos, separate LMDB stores, ONE
   shared named-caches dir, so one shared `fastpex` cache) started at the same moment:
   (a) both package the same app, (b) they package different apps with an overlapping
   dependency. Both succeed, both PEXes run, the outputs of (a) are byte-identical, and the
   shared cache is intact: no temp or partial leftovers, every artifact's sha256 equals its
   name, every layer dir complete (manifest + fragment) and exactly one layer per wheel.
2. `python -m fastpex fetch` against a slowed index, SIGKILLed mid-download, then restarted:
   nothing under a final name until the bytes are verified, the restart completes, resumes
   the partial with a Range request, and leaves a verified store and no partial behind.

Fails if the store's lock/rename protocol, the layer cache's atomic directories, or the
fetcher's partial/resume handling are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import fastpex.core.cli.fetch  # the CLI that part 2 runs as `python -m fastpex fetch`
from e2e.scratch_repo import (
    APP,
    APP_OUT,
    APP_PACKED,
    APP_PACKED_OUT,
    TOOL,
    TOOL_OUT,
    Caches,
    build_dists,
    check_fastpex_cache,
    pants,
    pants_argv,
    pants_env,
    run_pex,
    sha256_path,
    tree_digest,
    write_repo,
)
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

pytestmark = pytest.mark.slow

APP_WHEELS = ("greet-1.0-py3-none-any.whl", "colorize-2.1-py3-none-any.whl")
TOOL_WHEELS = ("colorize-2.1-py3-none-any.whl", "shout-1.0-py3-none-any.whl")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    dists = tmp_path_factory.mktemp("dists")
    build_dists(dists)
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False, honour_range=True)
    with IndexServer(dists, config=config) as server:
        yield server


def _concurrently(runs: List[Tuple[Path, Caches, Tuple[str, ...]]]) -> List["subprocess.CompletedProcess[str]"]:
    """Start every `pants` run at once; wait for all of them."""
    procs = []
    for root, caches, args in runs:
        procs.append(
            (
                args,
                root,
                subprocess.Popen(
                    pants_argv(caches, *args),
                    cwd=root,
                    env=pants_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    results = []
    for args, root, proc in procs:
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            for _, _, other in procs:  # don't leave the other run behind
                if other.poll() is None:
                    other.kill()
            raise AssertionError(f"concurrent pants {' '.join(args)} in {root} failed ({proc.returncode}):\n{out}\n{err[-20000:]}")
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


_STEP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \[INFO\] (Starting|Completed): Build \S+ with fastpex", re.M)


def _build_window(stderr: str) -> Tuple[float, float]:
    """(start, end) seconds-of-day of the run's fastpex build process(es), from Pants' log."""
    times: Dict[str, List[float]] = {"Starting": [], "Completed": []}
    for h, m, sec, kind in _STEP.findall(stderr):
        times[kind].append(int(h) * 3600 + int(m) * 60 + float(sec))
    assert times["Starting"] and times["Completed"], f"no fastpex build in this run:\n{stderr[-5000:]}"
    return min(times["Starting"]), max(times["Completed"])


def _assert_overlapped(results: List["subprocess.CompletedProcess[str]"]) -> Tuple[Tuple[float, float], ...]:
    windows = tuple(_build_window(r.stderr) for r in results)
    (s1, e1), (s2, e2) = windows
    assert max(s1, s2) < min(e1, e2), f"the two fastpex builds did not run at the same time: {windows}"
    return windows


def _whole_downloads(index: IndexServer) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for r in index.requests:
        if r.path.startswith("/files/") and r.method == "GET" and not r.range and r.status == 200:
            name = Path(r.path).name
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_two_pants_processes_share_the_fastpex_named_cache(tmp_path: Path, index: IndexServer) -> None:
    repo_a, repo_b = tmp_path / "repo-a", tmp_path / "repo-b"
    write_repo(repo_a, index)
    write_repo(repo_b, index)
    store_a, store_b = tmp_path / "store-a", tmp_path / "store-b"

    # One lock for both repos (same index, same requirements).
    pants(repo_a, Caches(tmp_path / "lock-caches"), "generate-lockfiles", "--resolve=app")
    shutil.copy(repo_a / "3rdparty" / "app.lock", repo_b / "3rdparty" / "app.lock")

    def caches(store: Path, named: Path) -> Caches:
        # Separate LMDB stores (so neither run replays the other's result: both really build),
        # one shared named-caches dir.
        return Caches(tmp_path, store_dir=store, named_dir=named)

    # Slow downloads (~3-5 s per wheel) so the two builds' fetch windows surely overlap.
    index.update(faults=(Fault("slow", pattern="*.whl", chunk_delay=0.15),))

    # (a) the same app, at once, cold shared cache.
    named_1 = tmp_path / "named-1"
    index.reset_log()
    results_a = _concurrently([(repo_a, caches(store_a, named_1), ("package", APP)), (repo_b, caches(store_b, named_1), ("package", APP))])
    pex_a, pex_b = repo_a / "dist" / APP_OUT, repo_b / "dist" / APP_OUT
    assert sha256_path(pex_a) == sha256_path(pex_b), "the same app built concurrently differs"
    assert run_pex(pex_a, tmp_path / "pex_root") == "*hello fastpex*\n"
    assert run_pex(pex_b, tmp_path / "pex_root") == "*hello fastpex*\n"
    windows_a = _assert_overlapped(results_a)
    counts_a = check_fastpex_cache(named_1 / "fastpex", APP_WHEELS)
    assert counts_a == {"artifacts": 2, "layers": 2}, counts_a
    downloads_a = _whole_downloads(index)

    # (b) different apps with an overlapping dependency (colorize), at once, cold shared cache.
    named_2 = tmp_path / "named-2"
    index.reset_log()
    results_b = _concurrently(
        [(repo_a, caches(store_a, named_2), ("package", TOOL)), (repo_b, caches(store_b, named_2), ("package", APP_PACKED))]
    )
    assert run_pex(repo_a / "dist" / TOOL_OUT, tmp_path / "pex_root") == "*TOOL!*\n"
    assert run_pex(repo_b / "dist" / APP_PACKED_OUT, tmp_path / "pex_root") == "*hello fastpex*\n"
    windows_b = _assert_overlapped(results_b)
    counts_b = check_fastpex_cache(named_2 / "fastpex", APP_WHEELS + TOOL_WHEELS)
    assert counts_b == {"artifacts": 3, "layers": 3}, counts_b

    # The packed app built in (b) holds the same dependency bytes as the zipapp built in (a)
    # from another cache: layers don't depend on which process (or race) built them.
    packed = tree_digest(repo_b / "dist" / APP_PACKED_OUT)
    assert any(k.startswith(".deps/greet-1.0") for k in packed), sorted(packed)
    print(
        "concurrency: build windows (a)", windows_a, "(b)", windows_b,
        "whole-wheel downloads (a)", downloads_a, "(b)", _whole_downloads(index),
    )  # fmt: skip


# -- a fetch killed mid-download, then restarted ----------------------------------------------


def _python_with_fastpex_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    src = str(Path(fastpex.core.cli.fetch.__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in sys.path if p]])
    env.pop("FASTPEX_CACHE_DIR", None)
    return env


def test_fetch_killed_mid_download_then_restarted_resumes_and_stays_intact(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    dists.mkdir()
    big = build_wheel(dists, "bigdep", "1.0", file_size_padding=6_000_000)
    small = build_wheel(dists, "smalldep", "1.0")
    lock = tmp_path / "app.lock"
    cache = tmp_path / "fetch-cache"
    env = _python_with_fastpex_env()
    config = IndexConfig(advertise_metadata=False, serve_metadata_files=False, honour_range=True)
    with IndexServer(dists, config=config) as index:
        subprocess.run(
            [sys.executable, "-m", "fastpex", "lock", "--resolve", "app", "--requirement", "bigdep",
             "--requirement", "smalldep", "--target", "linux_x86_64-cp311",
             "--interpreter-constraint", "CPython==3.11.*", "--index", index.simple_url,
             "--output", str(lock), "--cache-dir", str(tmp_path / "lock-cache"), "-q"],
            env=env, check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        # ~6 MB in 64 KiB chunks, 40 ms apart: ~4 s per whole download.
        index.update(faults=(Fault("slow", pattern=big.name, chunk_delay=0.04),))
        index.reset_log()
        fetch = [sys.executable, "-m", "fastpex", "fetch", "--lock", str(lock), "--target",
                 "linux_x86_64-cp311", "--cache-dir", str(cache), "--fetch-jobs", "2"]  # fmt: skip
        proc = subprocess.Popen(fetch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        partial_dir = cache / "artifacts" / "v1" / "partial"
        big_sha = sha256_path(big)
        final_big = cache / "artifacts" / "v1" / big_sha[:2] / big_sha
        # Kill once the server has sent a third of the big wheel (~1.3 s into ~4 s).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if index.bytes_sent_for(f"/files/{big.name}") >= big.stat().st_size // 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"fetch ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)  # our own child, by pid
        proc.communicate(timeout=30)
        # Killed mid-download: nothing under the final name, the partial kept for resuming.
        assert not final_big.exists(), "a partial download is visible under the artifact's final name"
        parts = list(partial_dir.glob("*.part"))
        partial_size = max((p.stat().st_size for p in parts), default=0)
        assert 0 < partial_size < big.stat().st_size, (parts, partial_size)

        index.update(faults=(Fault("slow", pattern=big.name, chunk_delay=0.005),))
        index.reset_log()
        restarted = subprocess.run(fetch + ["--verify"], env=env, capture_output=True, text=True, timeout=300)
        assert restarted.returncode == 0, restarted.stderr
        gets = index.matching(f"/files/{big.name}", "GET")
        assert gets and gets[0].range is not None and gets[0].status == 206, gets
        resumed_from = int(gets[0].range[len("bytes=") :].split("-")[0])
        assert resumed_from > 0
        assert sum(r.bytes_sent for r in gets) <= big.stat().st_size - resumed_from + 1

    assert final_big.exists() and sha256_path(final_big) == big_sha
    check_fastpex_cache(cache)  # no partial left, every entry named by its sha256
    small_sha = sha256_path(small)
    assert (cache / "artifacts" / "v1" / small_sha[:2] / small_sha).exists()
