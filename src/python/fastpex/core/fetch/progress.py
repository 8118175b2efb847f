"""Fetch progress: one reporter interface (after uv's), rendered quietly for logs or live on a TTY."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Dict, Optional

from fastpex.core.model import Artifact

__all__ = ["QuietReporter", "Reporter", "TTYReporter", "default_reporter"]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Reporter:
    """Receives fetch progress (uv-style: one interface, several renderings). Does nothing.

    `fetch` calls the methods from the thread that called it (workers send their events to
    it); a reporter shared with other threads must still be thread-safe.
    """

    def start(self, *, total_files: int, total_bytes: int, cached_files: int, cached_bytes: int) -> None:
        """Before any download; `total_*` include the `cached_*` ones already in the store."""

    def artifact_started(self, artifact: Artifact) -> None:
        """A download begins (after the store turned out not to have it)."""

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        """`n` more bytes are on disk for `artifact`; negative when a restart discards some."""

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        """A transient failure; attempt `attempt` starts after `delay` seconds."""

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        """`artifact` is verified in the store (`cached`: it already was)."""

    def finish(self, *, ok: bool) -> None:
        """After the last download (or the failure)."""


class _Counting(Reporter):
    """Shared bookkeeping for the concrete reporters."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.lock = threading.Lock()
        self.total_files = self.total_bytes = 0
        self.cached_files = self.cached_bytes = 0
        self.done_files = 0
        self.received = 0  # bytes written this run (incl. resumed prefixes)
        self.ready_bytes = 0  # bytes of the artifacts ready, counted as stored (not as the index said)
        self._received_for: Dict[str, int] = {}  # sha256 -> bytes written for it this run
        self.downloaded_files = 0
        self.retries = 0
        self.started = time.monotonic()

    def start(self, *, total_files: int, total_bytes: int, cached_files: int, cached_bytes: int) -> None:
        with self.lock:
            self.total_files, self.total_bytes = total_files, total_bytes
            self.cached_files, self.cached_bytes = cached_files, cached_bytes
            self.done_files = cached_files
            self.ready_bytes = cached_bytes
            self.started = time.monotonic()

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        with self.lock:
            self.received += n
            key = artifact.sha256.lower()
            self._received_for[key] = self._received_for.get(key, 0) + n

    def artifact_retrying(self, artifact: Artifact, attempt: int, reason: str, delay: float) -> None:
        with self.lock:
            self.retries += 1

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        with self.lock:
            self.done_files += 1
            written = self._received_for.pop(artifact.sha256.lower(), 0)
            # What was written for it, else (another process stored it first) what the lock says.
            self.ready_bytes += written if written > 0 else artifact.size or 0
            if not cached:
                self.downloaded_files += 1

    def summary(self, ok: bool) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        downloaded = self.done_files - self.cached_files
        line = (
            f"fastpex fetch: {self.done_files}/{self.total_files} artifacts "
            f"({_human_bytes(self.ready_bytes)}) {'ready' if ok else 'ready before the failure'}: "
            f"{self.cached_files} from the store, {downloaded} downloaded "
            f"({_human_bytes(self.received)} in {elapsed:.1f}s, "
            f"{_human_bytes(self.received / elapsed)}/s)"
        )
        if self.retries:
            line += f", {self.retries} retries"
        return line


class QuietReporter(_Counting):
    """For CI logs and non-TTY stderr: one summary line at the end, nothing else."""

    def finish(self, *, ok: bool) -> None:
        with self.lock:
            print(self.summary(ok), file=self.stream, flush=True)


class TTYReporter(_Counting):
    """One line rewritten in place: files done/total, bytes, rate, ETA (at most 10 redraws/s)."""

    def __init__(self, stream: Optional[IO[str]] = None, *, interval: float = 0.1) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last_draw = 0.0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.received / elapsed
        have = self.cached_bytes + self.received
        remaining = max(self.total_bytes - have, 0)
        eta = f"{remaining / rate:.0f}s" if rate > 0 and remaining else "-"
        line = (
            f"Fetching {self.done_files}/{self.total_files} files  "
            f"{_human_bytes(have)}/{_human_bytes(max(self.total_bytes, have))}  "
            f"{_human_bytes(rate)}/s  ETA {eta}"
        )
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def bytes_received(self, artifact: Artifact, n: int) -> None:
        super().bytes_received(artifact, n)
        with self.lock:
            self._draw()

    def artifact_finished(self, artifact: Artifact, *, cached: bool) -> None:
        super().artifact_finished(artifact, cached=cached)
        with self.lock:
            self._draw()

    def finish(self, *, ok: bool) -> None:
        with self.lock:
            self.stream.write("\r\x1b[K" + self.summary(ok) + "\n")
            self.stream.flush()


def default_reporter(stream: Optional[IO[str]] = None) -> Reporter:
    """`TTYReporter` when the stream (stderr) is a terminal, else `QuietReporter`."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return TTYReporter(stream) if isatty is not None and isatty() else QuietReporter(stream)
