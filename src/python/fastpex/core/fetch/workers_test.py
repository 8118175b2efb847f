"""fetch() in worker processes: the jobs bound shared out, errors and progress carried back, a
worker that dies, the fall-back to threads."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from fastpex.core.errors import HashMismatchError
from fastpex.core.fetch import workers as workers_module
from fastpex.core.fetch.downloader import fetch
from fastpex.core.fetch.downloader_test import FAST, artifact_for, assert_store_clean, file_requests, wheel
from fastpex.core.fetch.errors import DownloadError, OfflineError, download_mismatch
from fastpex.core.fetch.progress import QuietReporter
from fastpex.core.fetch.workers import default_processes, transportable
from fastpex.core.model import Artifact
from fastpex.core.store import ArtifactStore
from fastpex.testing.index_server import Fault, IndexServer
from fastpex.testing.wheels import sha256_file


def spy_on_workers(monkeypatch: pytest.MonkeyPatch) -> List[Optional[list]]:
    """Records the worker processes each fetch started (None: it fell back to threads)."""
    started: List[Optional[list]] = []
    real = workers_module.start_processes

    def spy(setup: workers_module.WorkerSetup, jobs: int, count: int) -> Optional[list]:
        workers = real(setup, jobs, count)
        started.append(None if workers is None else list(workers))
        return workers

    monkeypatch.setattr(workers_module, "start_processes", spy)
    return started


class Recording(QuietReporter):
    """A QuietReporter that also keeps every event (called from the fetching thread only)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.events: List[Tuple[str, str, object]] = []

    def artifact_started(self, artifact: Artifact) -> None:
        self.events.append(("started", artifact.filename, None))

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        super().bytes_received(artifact, n)
        self.events.append(("bytes", artifact.filename, n))

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        super().artifact_retrying(artifact, attempt, reason, delay)
        self.events.append(("retry", artifact.filename, attempt))

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        super().artifact_finished(artifact, cached=cached)
        self.events.append(("finished", artifact.filename, cached))


@pytest.mark.parametrize("jobs,processes,slots", [(3, 2, [2, 1]), (5, 2, [3, 2]), (2, 4, [1, 1])])
def test_worker_processes_share_the_jobs_bound(
    jobs: int,
    processes: int,
    slots: List[int],
    server: IndexServer,
    dists: Path,
    store: ArtifactStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = spy_on_workers(monkeypatch)
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}")) for i in range(9)]
    server.update(faults=(Fault("slow", delay=0.25),))
    fetched = fetch(artifacts, store, jobs=jobs, processes=processes, **FAST)
    assert len(started) == 1 and started[0] is not None
    workers = started[0]
    assert [w.slots for w in workers] == slots
    pids = {w.process.pid for w in workers}
    assert len(pids) == len(slots) and os.getpid() not in pids
    assert all(w.process.returncode == 0 for w in workers)  # stopped and reaped
    assert server.max_concurrent_file_requests == jobs
    assert [f.artifact for f in fetched] == artifacts
    assert all(store.verify(a, full=True) for a in artifacts)
    assert_store_clean(store)


def test_default_processes_is_one_per_core_within_jobs_and_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_processes(8, 62) == 2
    assert default_processes(8, 1) == 1
    assert default_processes(1, 62) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_processes(8, 62) == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_processes(8, 62) == 1


def test_hash_mismatch_in_a_worker_process(
    server: IndexServer, dists: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = spy_on_workers(monkeypatch)
    path = wheel(dists, "big", 300_000)
    wrong = hashlib.sha256(b"something else").hexdigest()
    bad = artifact_for(server, path, sha256=wrong)
    good = artifact_for(server, wheel(dists, "small"))
    with pytest.raises(HashMismatchError) as info:
        fetch([bad, good], store, jobs=2, processes=2, **FAST)
    assert started and started[0] is not None
    error = info.value
    assert (error.expected, error.actual, error.url, error.subject) == (wrong, sha256_file(path), bad.url, bad.filename)
    assert wrong in str(error) and sha256_file(path) in str(error) and bad.url in str(error)
    assert len(file_requests(server, bad)) == 1  # not retried
    assert not store.path_for(wrong).exists() and not store.partial_path(wrong).exists()
    # The other worker's download may be cancelled mid-way: its partial stays, to resume; the
    # mismatched one leaves nothing.
    partials = {p.name for p in store.partial_dir.glob("*.part")} if store.partial_dir.exists() else set()
    assert partials <= {f"{good.sha256}.part"}, partials
    assert_store_clean(store, allow_partials=True)


def test_download_error_from_a_worker_process_names_the_file(
    server: IndexServer, dists: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = spy_on_workers(monkeypatch)
    flaky = artifact_for(server, wheel(dists, "flaky", 200_000))
    fine = artifact_for(server, wheel(dists, "fine"))
    server.update(faults=(Fault("http_500", pattern="flaky-*", status=503),))
    reporter = Recording()
    with pytest.raises(DownloadError) as info:
        fetch([flaky, fine], store, jobs=2, processes=2, retries=2, progress=reporter, **FAST)
    assert started and started[0] is not None
    assert info.value.attempts == 3 and info.value.filename == flaky.filename
    assert flaky.filename in str(info.value) and "HTTP 503" in str(info.value)
    assert [e[2] for e in reporter.events if e[0] == "retry"] == [2, 3]
    assert isinstance(reporter.stream, io.StringIO)
    assert "ready before the failure" in reporter.stream.getvalue()
    assert_store_clean(store, allow_partials=True)


def test_progress_totals_add_up_across_worker_processes(
    server: IndexServer, dists: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = spy_on_workers(monkeypatch)
    cached = artifact_for(server, wheel(dists, "cached", 50_000))
    fetch([cached], store, **FAST)
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}", 400_000 * i)) for i in range(4)]
    # One download is cut halfway and resumed: its progress must not count the prefix twice.
    server.update(faults=(Fault("truncate_body", pattern="pkg3-*", count=1),))
    reporter = Recording()
    fetch([cached, *artifacts], store, jobs=3, processes=2, progress=reporter, **FAST)
    assert started[-1] is not None
    sizes = {a.filename: a.size for a in artifacts}
    per_file: Dict[str, int] = {}
    for kind, name, value in reporter.events:
        if kind == "bytes":
            per_file[name] = per_file.get(name, 0) + value  # type: ignore[operator]  # "bytes" events carry an int
    assert per_file == sizes
    assert reporter.received == sum(sizes.values())  # type: ignore[arg-type]  # sizes are set
    assert reporter.total_files == 5 and reporter.cached_files == 1 and reporter.done_files == 5
    assert reporter.downloaded_files == 4 and reporter.retries == 1
    assert sorted(n for k, n, _ in reporter.events if k == "started") == sorted(sizes)
    for name in sizes:  # each file's bytes arrive between its start and its finish
        kinds = [k for k, n, _ in reporter.events if n == name]
        assert kinds[0] == "started" and kinds[-1] == "finished"
    assert server.matching(f"/files/{artifacts[3].filename}", "GET")[-1].range is not None
    assert_store_clean(store)


def test_a_worker_process_that_dies_fails_its_downloads_cleanly(
    server: IndexServer, dists: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    started = spy_on_workers(monkeypatch)
    artifacts = [artifact_for(server, wheel(dists, f"slow{i}", 1_000_000)) for i in range(2)]
    server.update(faults=(Fault("slow", chunk_delay=0.05),))  # ~0.8 s per file

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (started and file_requests(server)):
            time.sleep(0.01)
        time.sleep(0.1)
        started[0][0].process.kill()  # type: ignore[index]  # the spy saw the workers start

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    with pytest.raises(DownloadError, match="stopped unexpectedly") as info:
        fetch(artifacts, store, jobs=2, processes=2, **FAST)
    killer.join()
    assert info.value.filename in {a.filename for a in artifacts}
    assert_store_clean(store, allow_partials=True)
    server.update(faults=())
    fetch(artifacts, store, **FAST)  # the next run completes (resuming what it can)
    assert all(store.verify(a, full=True) for a in artifacts)


def test_falls_back_to_threads_when_worker_processes_cannot_start(
    server: IndexServer, dists: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started = spy_on_workers(monkeypatch)
    monkeypatch.setattr(sys, "executable", str(Path(store.dir) / "no-such-python"))
    artifacts = [artifact_for(server, wheel(dists, f"pkg{i}")) for i in range(3)]
    fetched = fetch(artifacts, store, jobs=2, processes=2, **FAST)
    assert started == [None]
    assert "threads of one process" in caplog.text
    assert [f.artifact for f in fetched] == artifacts
    assert_store_clean(store)


def test_fetch_errors_survive_the_trip_from_a_worker() -> None:
    import pickle

    art = Artifact("https://u:secret@example.org/x-1.0-py3-none-any.whl", "x-1.0-py3-none-any.whl", "a" * 64, 10)
    errors = [
        download_mismatch(art.url, art.filename, "a" * 64, "b" * 64, expected_size=10, actual_size=11),
        DownloadError(art.url, art.filename, "HTTP 503 Service Unavailable", attempts=6),
        OfflineError([art]),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__ == error.__dict__
        assert "secret" not in str(copy)

    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}/{b}")

    converted = transportable(Odd(1, 2), art)
    assert isinstance(converted, DownloadError) and "Odd: 1/2" in str(converted)
    kept = ValueError("plain")
    assert transportable(kept, art) is kept
