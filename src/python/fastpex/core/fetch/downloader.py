"""FETCH's engine: make a set of artifacts present and verified in the store, in parallel.

pip and pex download one artifact at a time. Here a bounded number (`jobs`) of downloads run at
once, spread over one worker process per CPU core (`workers.py`, each running its share of the
`jobs` in threads, with its own keep-alive connections); one download is `transfer.py`. This
process owns the queue (biggest first), the bound on concurrent downloads, the reporter,
cancellation and the errors it raises; workers send it progress every 0.1 s.

A warm store costs nothing: an entry named by its sha256 with the right size is trusted, with
no request and no rehash. `offline=True` never opens a socket (and starts no worker).
The typed entry point is `fetch.api.fetch(FetchRequest)`; this is the engine it runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import deque
from multiprocessing.connection import wait as connection_wait
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import urlsplit

from fastpex.core.fetch import workers
from fastpex.core.fetch.errors import DownloadError, OfflineError
from fastpex.core.fetch.progress import Reporter
from fastpex.core.fetch.transfer import DEFAULT_BACKOFF, DEFAULT_TIMEOUT, ArtifactDownloader
from fastpex.core.model import Artifact, FetchedArtifact
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.store import ArtifactStore

__all__ = ["DEFAULT_JOBS", "default_jobs", "fetch"]

_USER_AGENT = "fastpex-fetch/1"


def default_jobs() -> int:
    """Two downloads per CPU core, at least 4 (one connection rarely fills a fast link) and at
    most 16. Fetching a fast link is CPU-bound (TLS, sha256, writing: ~2 CPU-s per GB), and
    streams beyond what the cores can drain only add contention: measured on the 2-core
    benchmark machine (ml-core, 62 files, 4.17 GB, 2 worker processes), 4 streams took
    5.5-6.2 s, 8 streams 6.2-6.4 s and 16 streams 7.1 s."""
    return max(4, min(16, 2 * (os.cpu_count() or 1)))


DEFAULT_JOBS = default_jobs()


def _dedupe(artifacts: Iterable[Artifact]) -> List[Artifact]:
    seen: Dict[str, Artifact] = {}
    for artifact in artifacts:
        seen.setdefault(artifact.sha256.lower(), artifact)
    return list(seen.values())


def _is_local(artifact: Artifact) -> bool:
    return urlsplit(artifact.url).scheme.lower() == "file"


def fetch(
    artifacts: Iterable[Artifact],
    store: ArtifactStore,
    *,
    jobs: int = DEFAULT_JOBS,
    configured_indexes: Sequence[str] = (),
    offline: bool = False,
    retries: int = 5,
    progress: Optional[Reporter] = None,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: float = DEFAULT_BACKOFF,
    client: Optional[HttpClient] = None,
    processes: Optional[int] = None,
) -> List[FetchedArtifact]:
    """Make every artifact present and verified in `store`; returns them in input order.

    `jobs` bounds the parallel downloads, `retries` the retries per artifact after transient
    failures, `timeout` the seconds a connection may stall. `configured_indexes` are the index
    URLs (possibly with credentials) whose credentials apply to artifact URLs of the same
    origin. `client` lets a caller share its `HttpClient` (its own retries then multiply ours;
    the default client retries nothing itself); downloads then run in threads of this process.
    `processes` is the number of worker processes the `jobs` downloads are spread over
    (default `workers.default_processes`: one per core; 0 or 1 = threads of this process). On failure
    the first error is raised once the in-flight downloads stopped; their partial files stay
    for the next run to resume.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    wanted = _dedupe(artifacts)
    reporter = progress if progress is not None else Reporter()
    cached = [a for a in wanted if store.has(a)]
    cached_shas = {a.sha256.lower() for a in cached}
    missing = [a for a in wanted if a.sha256.lower() not in cached_shas]
    if offline:
        remote = [a for a in missing if not _is_local(a)]
        if remote:
            raise OfflineError(remote)
    # Stored artifacts count as stored (the lock has no size when the index gave none).
    cached_bytes = sum(store.path_for(a.sha256).stat().st_size for a in cached)
    reporter.start(
        total_files=len(wanted),
        total_bytes=cached_bytes + sum(a.size or 0 for a in missing),
        cached_files=len(cached),
        cached_bytes=cached_bytes,
    )
    results: Dict[str, FetchedArtifact] = {
        a.sha256.lower(): FetchedArtifact(a, str(store.path_for(a.sha256))) for a in cached
    }
    ok = False
    try:
        if missing:
            config = HttpConfig(
                connect_timeout=min(10.0, timeout),
                read_timeout=timeout,
                max_retries=0,  # fetch retries itself, resuming where it can
                max_idle_per_host=max(jobs, 1),
                user_agent=_USER_AGENT,
            )
            count = workers.default_processes(jobs, len(missing)) if processes is None else processes
            count = min(count, jobs, len(missing))
            processes_started: Optional[List[workers.Worker]] = None
            if client is None and count > 1 and sys.executable:
                setup = workers.WorkerSetup(
                    store=store,
                    config=dataclasses.replace(config, max_idle_per_host=-(-jobs // count)),
                    configured_indexes=tuple(configured_indexes),
                    retries=retries,
                    backoff=backoff,
                )
                processes_started = workers.start_processes(setup, jobs, count)
            if processes_started is not None:
                results.update(_download_all(processes_started, missing, reporter))
            else:
                own_client = client is None
                http = client or HttpClient(config, configured_indexes=configured_indexes)
                try:
                    downloader = ArtifactDownloader(store, client=http, retries=retries, backoff=backoff, reporter=Reporter())
                    thread_worker = workers.ThreadWorker(downloader, jobs)
                    if not thread_worker.ready(workers.WORKER_START_TIMEOUT):  # pragma: no cover
                        raise RuntimeError("the download thread did not start")
                    results.update(_download_all([thread_worker], missing, reporter))
                finally:
                    if own_client:
                        http.close()
        ok = True
    finally:
        reporter.finish(ok=ok)
    return [results[a.sha256.lower()] for a in wanted]


def _download_all(
    pool: List[workers.Worker], missing: Sequence[Artifact], reporter: Reporter
) -> Dict[str, FetchedArtifact]:
    """Hand `missing` to the workers, biggest first, never more at once than their slots.

    The parent owns the reporter: workers send events, applied here in arrival order. On the
    first error nothing more is handed out, every worker is told to cancel, and the error is
    raised once the running downloads stopped (their partial files stay, to resume).
    """
    # Biggest first: the long downloads start early and the small ones fill in around them.
    order = sorted(missing, key=lambda a: -(a.size or 0))
    queue = deque(enumerate(order))
    results: Dict[str, FetchedArtifact] = {}
    errors: List[BaseException] = []
    alive = list(pool)
    by_conn = {w.conn: w for w in pool}

    def fail(error: BaseException) -> None:
        errors.append(error)
        if len(errors) == 1:
            for other in alive:
                other.send(("cancel",))

    try:
        while True:
            if not errors:
                for worker in sorted(alive, key=lambda w: len(w.running) - w.slots):
                    while queue and len(worker.running) < worker.slots:
                        task_id, artifact = queue.popleft()
                        worker.running.add(task_id)
                        worker.send(("task", task_id, artifact))
            busy = [w.conn for w in alive if w.running]
            if not busy:
                break
            for ready in connection_wait(busy):
                worker = by_conn[ready]  # type: ignore[index]  # wait() returns the objects it was given
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):  # the worker died (killed, out of memory...)
                    alive.remove(worker)
                    for task_id in sorted(worker.running):
                        artifact = order[task_id]
                        fail(DownloadError(artifact.url, artifact.filename, worker.describe_exit()))
                    worker.running.clear()
                    continue
                kind, task_id = message[0], message[1]
                artifact = order[task_id]
                if kind == "bytes":
                    reporter.bytes_received(artifact, message[2])
                elif kind == "started":
                    reporter.artifact_started(artifact)
                elif kind == "retry":
                    reporter.artifact_retrying(artifact, message[2], message[3], message[4])
                elif kind == "finished":
                    reporter.artifact_finished(artifact, cached=message[2])
                else:
                    worker.running.discard(task_id)
                    if kind == "done":
                        results[artifact.sha256.lower()] = FetchedArtifact(artifact, message[2])
                    elif kind == "failed":
                        fail(message[2])
        if errors:
            raise errors[0]
        return results
    except BaseException:
        for worker in alive:
            worker.send(("cancel",))
        raise
    finally:
        for worker in pool:
            worker.send(("stop",))
        for worker in pool:
            worker.close(timeout=30.0)
