"""Pytest fixtures for fastpex tests, plus an isolated way to run pip.

Import the fixtures into a test module (`from fastpex.testing.fixtures import
index_server, wheel_factory  # noqa: F401`) or list this module in
`pytest_plugins`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import pytest

from fastpex.testing.index_server import IndexServer
from fastpex.testing.pypiserver_fixture import pypiserver_available, run_pypiserver
from fastpex.testing.wheels import WheelFactory

__all__ = ["index_server", "isolated_pip_env", "pypiserver_index", "run_pip", "wheel_factory"]


def isolated_pip_env(base: Optional[Mapping[str, str]] = None) -> dict:
    """Environment for a pip subprocess that ignores every ambient pip setting.

    `--isolated` still reads the global /etc/pip.conf, so PIP_CONFIG_FILE is
    pointed at /dev/null and PIP_* variables are dropped; loopback traffic must
    also never go through a proxy.
    """
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.upper().startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def run_pip(
    args: Sequence[str],
    *,
    python: Optional[str] = None,
    timeout: float = 120.0,
    check: bool = True,
) -> "subprocess.CompletedProcess[str]":
    """Run `python -m pip --isolated --no-cache-dir ARGS` hermetically; output captured."""
    cmd = [python or sys.executable, "-m", "pip", "--isolated", "--no-cache-dir", "--no-input", *args]
    proc = subprocess.run(cmd, env=isolated_pip_env(), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"pip failed ({proc.returncode}): {cmd}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def wheel_factory(tmp_path: Path) -> WheelFactory:
    """Builds wheels/sdists into a fresh per-test dist dir (`.dist_dir`)."""
    dist_dir = tmp_path / "dists"
    dist_dir.mkdir()
    return WheelFactory(dist_dir)


@pytest.fixture
def index_server(wheel_factory: WheelFactory) -> Iterator[IndexServer]:
    """An IndexServer over `wheel_factory.dist_dir`; files added later are served too."""
    with IndexServer(wheel_factory.dist_dir) as server:
        yield server


@pytest.fixture
def pypiserver_index(wheel_factory: WheelFactory) -> Iterator[str]:
    """Simple URL of a real pypiserver over `wheel_factory.dist_dir`.

    pypiserver is in the test resolve: its absence is a broken setup, not a reason to skip."""
    assert pypiserver_available(), "pypiserver is not installed (it is in 3rdparty/python/fastpex-dev)"
    with run_pypiserver(wheel_factory.dist_dir) as url:
        yield url
