from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from fastpex.testing.fixtures import pypiserver_index, run_pip, wheel_factory  # noqa: F401
from fastpex.testing.pypiserver_fixture import PypiserverError, pypiserver_command, run_pypiserver
from fastpex.testing.wheels import WheelFactory, sha256_file

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_pip_downloads_factory_wheel_through_pypiserver(
    pypiserver_index: str, wheel_factory: WheelFactory, tmp_path: Path  # noqa: F811
) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/simple/", pypiserver_index)
    whl = wheel_factory("Served.Pkg", "3.1", requires_dist=["not-there"])
    with OPENER.open(pypiserver_index + "served-pkg/", timeout=10) as resp:
        page = resp.read().decode()
    assert f"{whl.name}#sha256={sha256_file(whl)}" in page
    out = tmp_path / "dl"
    run_pip(["download", "--no-deps", "--index-url", pypiserver_index, "-d", str(out), "served_pkg==3.1"])
    (downloaded,) = out.iterdir()
    assert downloaded.name == whl.name
    assert sha256_file(downloaded) == sha256_file(whl)


def test_command_is_loopback_without_auth_or_fallback(tmp_path: Path) -> None:
    cmd = pypiserver_command(tmp_path, 1234, python="py")
    assert cmd[:4] == ["py", "-m", "pypiserver", "run"]
    assert cmd[cmd.index("-i") + 1] == "127.0.0.1" and cmd[cmd.index("-p") + 1] == "1234"
    assert cmd[cmd.index("-a") + 1] == "." and cmd[cmd.index("-P") + 1] == "."
    assert "--disable-fallback" in cmd and cmd[-1] == str(tmp_path)


def test_startup_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PypiserverError, match="exited"):
        with run_pypiserver(tmp_path, python="/bin/false", attempts=1):
            pass
