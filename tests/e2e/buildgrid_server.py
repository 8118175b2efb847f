"""A real BuildGrid server (REAPI CAS + ActionCache) on loopback, for remote-cache tests.

BuildGrid (`buildgrid` on PyPI) pins its own grpcio/protobuf/SQLAlchemy, so it lives in its own
virtualenv, never in the test resolve: `ensure_buildgrid()` creates it once, from PyPI, with an
isolated pip (the machine-wide pip configuration must not leak in), under a file lock so that
concurrent first runs build it once. Later runs reuse it.

Environment:
  FASTPEX_BUILDGRID_VENV          where the venv lives (default ~/.cache/fastpex-test/buildgrid-venv)
  FASTPEX_BUILDGRID_PYTHON        CPython >= 3.11 to build it with (default pyenv's 3.11.7)
  FASTPEX_BOOTSTRAP_INDEX_URL     package index (default https://pypi.org/simple/), as for ./pants
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, Optional

from fastpex.testing.pythons import cpython

BUILDGRID_VERSION = "0.4.4"
_VENV_FORMAT = "1"
_DEFAULT_PYTHONS = ("python3.11", "python3.12")


class BuildGridUnavailable(Exception):
    """BuildGrid could not be installed or started here (the message says exactly why)."""


def _venv_dir() -> Path:
    configured = os.environ.get("FASTPEX_BUILDGRID_VENV")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fastpex-test" / "buildgrid-venv"


def _python() -> str:
    try:
        project_python: Optional[str] = str(cpython("3.11"))
    except AssertionError:
        project_python = None
    candidates = [os.environ.get("FASTPEX_BUILDGRID_PYTHON"), project_python, *_DEFAULT_PYTHONS]
    for candidate in candidates:
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.exists(path):
            return path
    raise BuildGridUnavailable(
        f"no CPython >= 3.11 to install buildgrid {BUILDGRID_VERSION} with (looked at {candidates}); "
        "set FASTPEX_BUILDGRID_PYTHON"
    )


def _isolated_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.pop("PYTHONPATH", None)
    return env


def ensure_buildgrid() -> Path:
    """The `bgd` executable of a cached venv with buildgrid installed (installs it once)."""
    venv = _venv_dir()
    bgd = venv / "bin" / "bgd"
    marker = venv / ".fastpex-buildgrid-complete"
    expected = f"{_VENV_FORMAT} {BUILDGRID_VERSION}\n"
    if marker.exists() and marker.read_text() == expected and bgd.exists():
        return bgd
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == expected and bgd.exists():
            return bgd
        shutil.rmtree(venv, ignore_errors=True)
        python = _python()
        index_url = os.environ.get("FASTPEX_BOOTSTRAP_INDEX_URL", "https://pypi.org/simple/")
        steps = [
            [python, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"), "-m", "pip", "--isolated", "--disable-pip-version-check",
                "--no-input", "--retries", "2", "--timeout", "30", "install", "--quiet",
                "--index-url", index_url, f"buildgrid=={BUILDGRID_VERSION}",
            ],
        ]  # fmt: skip
        for argv in steps:
            proc = subprocess.run(argv, env=_isolated_env(), capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise BuildGridUnavailable(
                    f"installing buildgrid=={BUILDGRID_VERSION} failed: {' '.join(argv)} exited "
                    f"{proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
                )
        marker.write_text(expected)
        return bgd


def _die_with_parent() -> None:
    """In the server's child process: SIGTERM it when the test process dies (Linux), so a
    killed test run never leaves a BuildGrid server behind."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # not Linux, or no prctl: stop() is then the only cleanup
        pass


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int, instance: str, storage: Path) -> str:
    # CAS on disk in the test's temp dir (no size limit to evict blobs mid-test), an LRU
    # ActionCache over it, no authorization: loopback only. `thread-pool-size` is also gRPC's
    # `maximum_concurrent_rpcs`: BuildGrid's default (5 x cores = 10 here) makes Pants' parallel
    # uploads fail with `ResourceExhausted: "Concurrent RPC limit exceeded!"`.
    return textwrap.dedent(
        f"""
        thread-pool-size: 200
        server:
          - !channel
            address: "127.0.0.1:{port}"
            insecure-mode: true
        authorization:
          method: none
        storages:
          - !disk-storage &cas
            path: {storage}
        caches:
          - !lru-action-cache &ac
            storage: *cas
            max-cached-refs: 100000
            allow-updates: true
            cache-failed-actions: false
        instances:
          - name: "{instance}"
            services:
              - !action-cache
                cache: *ac
              - !cas
                storage: *cas
              - !bytestream
                storage: *cas
        """
    ).lstrip()


class BuildGridServer:
    """`bgd server start` with a CAS + ActionCache instance on 127.0.0.1:<free port>."""

    def __init__(self, workdir: Path, instance: str = "fastpex-ci") -> None:
        self.workdir = Path(workdir)
        self.instance = instance
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / "bgd.log"
        self.storage = self.workdir / "cas"

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 60.0) -> "BuildGridServer":
        bgd = ensure_buildgrid()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            config = self.workdir / "bgd.yml"
            config.write_text(_config(self.port, self.instance, self.storage))
            log = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                [str(bgd), "server", "start", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_isolated_env(),
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if "Starting BuildGrid server" in self.log() and _listening(self.port):
                    return self
                time.sleep(0.2)
            last_error = self.log()
            self.stop()
        raise BuildGridUnavailable(f"bgd server did not start on 127.0.0.1:{self.port}:\n{last_error[-4000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def __enter__(self) -> "BuildGridServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def buildgrid(workdir: Path, instance: str = "fastpex-ci") -> Iterator[BuildGridServer]:
    with BuildGridServer(workdir, instance) as server:
        yield server


if __name__ == "__main__":
    # `python3 tests/e2e/buildgrid_server.py --install`: build the cached venv (e.g. in CI setup);
    # `python3 tests/e2e/buildgrid_server.py DIR`: run a loopback server by hand until Ctrl-C.
    if sys.argv[1:] == ["--install"]:
        print(ensure_buildgrid())
        sys.exit(0)
    with buildgrid(Path(sys.argv[1] if len(sys.argv) > 1 else "bgd-work")) as server:
        print(f"BuildGrid on {server.address}, instance {server.instance!r}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            server.proc.wait()  # type: ignore[union-attr]
