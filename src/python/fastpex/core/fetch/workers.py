"""Worker processes for fetch: each runs its share of the downloads in threads.

A worker runs up to `slots` downloads at once in its own threads, with its own keep-alive
client, and talks to the parent over one socket (`multiprocessing.connection` framing):

  parent -> worker   ("task", id, artifact) | ("cancel",) | ("stop",)
  worker -> parent   ("started", id) | ("bytes", id, n) | ("retry", id, attempt, reason, delay)
                     | ("finished", id, cached) | ("done", id, path) | ("failed", id, error)
                     | ("cancelled", id)

The parent (`downloader.fetch`) owns the queue, the bound on concurrent downloads, the reporter,
cancellation and the error it raises; workers only download. A worker is normally a child
process (`python -c` importing this module), so the downloads of different workers never
share a GIL (TLS, hashing and writing cost ~2 CPU-s per GB); with one worker, or a caller's
own `HttpClient`, it is a thread of this process.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from fastpex.core.fetch.errors import DownloadError
from fastpex.core.fetch.progress import Reporter
from fastpex.core.fetch.transfer import ArtifactDownloader, Cancelled
from fastpex.core.model import Artifact
from fastpex.core.net.http import HttpClient, HttpConfig
from fastpex.core.store import ArtifactStore

logger = logging.getLogger(__name__)

__all__ = [
    "WORKER_START_TIMEOUT",
    "WorkerSetup",
    "ProcessWorker",
    "ThreadWorker",
    "Worker",
    "default_processes",
    "split_slots",
    "start_processes",
    "transportable",
    "worker_main",
]

@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to start downloading (sent to it pickled)."""

    store: ArtifactStore
    config: HttpConfig
    configured_indexes: Tuple[str, ...]
    retries: int
    backoff: float
    slots: int = 0  # filled in per worker (`split_slots`)


# What travels over a worker's connection: the setup once, then the tuples listed above.
Message = Union[Tuple[Any, ...], WorkerSetup]

_PROGRESS_INTERVAL = 0.1  # seconds between a worker's progress messages
WORKER_START_TIMEOUT = 60.0  # seconds a worker process may take to import and say "ready"


def transportable(error: BaseException, artifact: Artifact) -> BaseException:
    """`error` if it survives a trip through pickle, else a DownloadError that describes it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable error
        return DownloadError(artifact.url, artifact.filename, f"{type(error).__name__}: {error}")


class _Channel:
    """One end of a worker's connection; sends from several threads are serialized."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.conn.send(message)

    def recv(self) -> Message:
        message: Message = self.conn.recv()
        return message


class _PipeReporter(Reporter):
    """A worker's reporter: forwards events to the parent, bytes batched per interval."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._ids: Dict[str, int] = {}
        self._pending: Dict[int, int] = {}
        self._flushed_at = time.monotonic()

    def track(self, artifact: Artifact, task_id: int) -> None:
        with self._lock:
            self._ids[artifact.sha256] = task_id

    def _flush_locked(self) -> None:
        for task_id, n in self._pending.items():
            if n:
                self._channel.send(("bytes", task_id, n))
        self._pending.clear()
        self._flushed_at = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def artifact_started(self, artifact: Artifact) -> None:
        with self._lock:
            self._channel.send(("started", self._ids[artifact.sha256]))

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        with self._lock:
            task_id = self._ids[artifact.sha256]
            self._pending[task_id] = self._pending.get(task_id, 0) + n
            if time.monotonic() - self._flushed_at >= _PROGRESS_INTERVAL:
                self._flush_locked()

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        with self._lock:
            self._flush_locked()
            self._channel.send(("retry", self._ids[artifact.sha256], attempt, reason, delay))

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        with self._lock:
            self._flush_locked()
            self._channel.send(("finished", self._ids[artifact.sha256], cached))


def _serve(channel: _Channel, downloader: ArtifactDownloader, slots: int) -> None:
    """A worker's loop: run the parent's tasks, `slots` at a time, until told to stop."""
    reporter = _PipeReporter(channel)
    downloader.reporter = reporter

    def run(task_id: int, artifact: Artifact) -> None:
        reporter.track(artifact, task_id)
        try:
            fetched = downloader.fetch_one(artifact)
            message: tuple = ("done", task_id, fetched.path)
        except Cancelled:
            message = ("cancelled", task_id)
        except BaseException as e:  # noqa: BLE001 - every failure goes to the parent
            message = ("failed", task_id, transportable(e, artifact))
        reporter.flush()
        try:
            channel.send(message)
        except OSError:
            pass  # the parent is gone

    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="fastpex-fetch")
    try:
        channel.send(("ready",))
        while True:
            try:
                message = channel.recv()
            except (EOFError, OSError):  # the parent is gone: stop, keeping partials
                downloader.cancelled.set()
                break
            if not isinstance(message, tuple):  # pragma: no cover - the setup comes only first
                break
            if message[0] == "task":
                pool.submit(run, message[1], message[2])
            elif message[0] == "cancel":
                downloader.cancelled.set()
            else:  # "stop"
                break
    except BaseException:
        downloader.cancelled.set()  # e.g. Ctrl-C: running downloads stop at their next read
        raise
    finally:
        pool.shutdown(wait=True)


def worker_main(fd: int) -> None:
    """Entry point of a worker process (see `ProcessWorker`): setup, then `_serve`."""
    channel = _Channel(Connection(fd))
    try:
        setup = channel.recv()
        assert isinstance(setup, WorkerSetup)
        with HttpClient(setup.config, configured_indexes=setup.configured_indexes) as client:
            downloader = ArtifactDownloader(
                setup.store,
                client=client,
                retries=setup.retries,
                backoff=setup.backoff,
                reporter=Reporter(),
            )
            _serve(channel, downloader, setup.slots)
    except (KeyboardInterrupt, EOFError, OSError):
        pass  # Ctrl-C reaches the whole process group, and the parent reports it
    finally:
        channel.conn.close()


class Worker:
    """The parent's handle on a worker: `slots` downloads at once, over `conn`."""

    def __init__(self, conn: Connection, slots: int) -> None:
        self.conn = conn
        self.slots = slots
        self.running: Set[int] = set()

    def send(self, message: Message) -> None:
        try:
            self.conn.send(message)
        except (OSError, EOFError, ValueError):
            pass  # it died: its tasks are reported as lost when its connection closes

    def ready(self, timeout: float) -> bool:
        """Wait for the worker's ("ready",): False if it died or took longer than `timeout`."""
        try:
            return bool(self.conn.poll(timeout)) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            return False

    def describe_exit(self) -> str:
        return "the download worker stopped unexpectedly"

    def close(self, timeout: float) -> None:
        raise NotImplementedError


class ThreadWorker(Worker):
    """A worker in a thread of this process (one worker, or a caller's own `HttpClient`)."""

    def __init__(self, downloader: ArtifactDownloader, slots: int) -> None:
        mine, theirs = multiprocessing.Pipe(duplex=True)
        super().__init__(mine, slots)
        self._theirs = theirs
        self._thread = threading.Thread(
            target=self._run, args=(downloader, slots), name="fastpex-fetch-worker", daemon=True
        )
        self._thread.start()

    def _run(self, downloader: ArtifactDownloader, slots: int) -> None:
        try:
            _serve(_Channel(self._theirs), downloader, slots)
        finally:
            self._theirs.close()

    def close(self, timeout: float) -> None:
        self.send(("stop",))
        self._thread.join(timeout)
        self.conn.close()


class ProcessWorker(Worker):
    """A child `python` that imports this module and runs `worker_main` on a socketpair."""

    def __init__(self, setup: WorkerSetup, slots: int) -> None:
        mine, theirs = socket.socketpair()
        # The child imports fastpex (and `packaging`) from where this process does.
        paths = [p for p in sys.path if p] + [str(Path(__file__).resolve().parents[3])]
        code = (
            "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
            "from fastpex.core.fetch.workers import worker_main; worker_main(int(sys.argv[2]))"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(paths), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        super().__init__(Connection(mine.detach()), slots)
        self.send(replace(setup, slots=slots))

    def describe_exit(self) -> str:
        code = self.process.poll()
        how = f"exit status {code}" if code is not None else "its connection closed"
        return f"the download worker process stopped unexpectedly ({how})"

    def close(self, timeout: float) -> None:
        self.send(("stop",))
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


def start_processes(setup: WorkerSetup, jobs: int, count: int) -> Optional[List[Worker]]:
    """`count` worker processes sharing `jobs` slots, or None if they can't start here."""
    workers: List[Worker] = []
    try:
        for slots in split_slots(jobs, count):
            workers.append(ProcessWorker(setup, slots))
        if all(w.ready(WORKER_START_TIMEOUT) for w in workers):
            return workers
        problem = "a worker process exited during start-up"
    except OSError as e:
        problem = f"{type(e).__name__}: {e}"
    logger.warning("fastpex fetch: downloading in threads of one process instead (%s)", problem)
    for worker in workers:
        worker.close(timeout=5.0)
    return None


def split_slots(jobs: int, workers: int) -> List[int]:
    """`jobs` download slots over `workers` workers, as evenly as possible."""
    return [jobs // workers + (1 if i < jobs % workers else 0) for i in range(workers)]


def default_processes(jobs: int, downloads: int) -> int:
    """Worker processes for `downloads` downloads, at most `jobs` at once: one per CPU core.

    TLS, hashing and writing cost ~2 CPU-seconds per GB, and threads of one process share
    one GIL (measured on 2 cores, the same read/hash/write loop on 3 streams of 2.2 GB:
    494 MB/s in 3 threads, 612 MB/s in 3 processes), so the downloads are spread over as many
    processes as there are cores.
    """
    return max(1, min(jobs, downloads, os.cpu_count() or 1))

