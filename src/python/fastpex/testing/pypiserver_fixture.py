"""Run a real `pypiserver` on loopback as a second, independent index implementation.

Our own IndexServer could share blind spots with fastpex's client code; a
third-party server catches those. pypiserver runs in a subprocess (never
imported here), so it is only needed by tests that use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional, Union

__all__ = ["PypiserverError", "pypiserver_available", "pypiserver_command", "run_pypiserver"]

_PYTHON_ENV = "FASTPEX_PYPISERVER_PYTHON"


class PypiserverError(RuntimeError):
    """pypiserver exited or did not become healthy in time."""


def _python() -> str:
    return os.environ.get(_PYTHON_ENV) or sys.executable


def pypiserver_available() -> bool:
    """True if pypiserver is importable by the interpreter we would launch."""
    if os.environ.get(_PYTHON_ENV):
        probe = subprocess.run(
            [_python(), "-c", "import pypiserver"], env=_child_env(), capture_output=True, check=False
        )
        return probe.returncode == 0
    return importlib.util.find_spec("pypiserver") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env() -> dict:
    """Pass our sys.path on, so pypiserver resolves even when we run from a PEX."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def pypiserver_command(package_dir: Path, port: int, python: Optional[str] = None) -> List[str]:
    """pypiserver 2.x CLI: loopback only, no auth, no fallback redirect to pypi.org."""
    return [
        python or _python(),
        "-m",
        "pypiserver",
        "run",
        "-p",
        str(port),
        "-i",
        "127.0.0.1",
        "-a",
        ".",
        "-P",
        ".",
        "--disable-fallback",
        "--health-endpoint",
        "/health",
        str(package_dir),
    ]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(proc: "subprocess.Popen[bytes]", url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PypiserverError(f"pypiserver exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if _healthy(url):
            return
        time.sleep(0.1)
    raise PypiserverError(f"pypiserver not ready after {timeout}s:\n{log.read_text(errors='replace')}")


def _terminate(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def run_pypiserver(
    package_dir: Union[str, Path],
    *,
    python: Optional[str] = None,
    timeout: float = 30.0,
    attempts: int = 3,
) -> Iterator[str]:
    """Serve `package_dir` with pypiserver; yields its simple URL (`.../simple/`).

    The port is picked by binding port 0 first, so it can race with another
    process; startup is therefore retried a few times.
    """
    package_dir = Path(package_dir)
    with tempfile.TemporaryDirectory(prefix="fastpex-pypiserver-") as tmp:
        log = Path(tmp) / "pypiserver.log"
        last_error: Optional[PypiserverError] = None
        for _ in range(attempts):
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            with open(log, "wb") as log_fp:
                proc = subprocess.Popen(
                    pypiserver_command(package_dir, port, python),
                    stdout=log_fp,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_child_env(),
                )
            try:
                _wait_ready(proc, url, log, timeout)
            except PypiserverError as e:
                _terminate(proc)
                last_error = e
                continue
            try:
                yield url + "/simple/"
            finally:
                _terminate(proc)
            return
        assert last_error is not None
        raise last_error
