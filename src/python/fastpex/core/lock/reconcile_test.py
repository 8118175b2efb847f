"""The "none fits" hint of a failed lock names the newest version pip could have taken: a
pre-release only with `--pre`, or when the project has nothing else (and then says so)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from fastpex.core.cli import lock as lock_cli
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory

MAC = "cp311-cp311-macosx_11_0_arm64"


def build_catalog(f: WheelFactory) -> None:
    # Like tensorflow-cpu: no linux wheel at all; the final release is for macOS only, the
    # newer release candidate also for Windows.
    f.wheel("tfcpu", "2.21.0", tag=MAC)
    f.wheel("tfcpu", "2.22.0rc0", tag=MAC)
    f.wheel("tfcpu", "2.22.0rc0", tag="cp311-cp311-win_amd64")
    f.wheel("onlypre", "1.0rc1", tag=MAC)  # nothing but a pre-release


def _lock(catalog: IndexServer, tmp_path: Path, requirement: str, *extra: str) -> List[str]:
    return ["--resolve", "r", "--requirement", requirement, "--index", catalog.simple_url,
            "--output", str(tmp_path / "r.lock"), "--cache-dir", str(tmp_path / "cache"), "--quiet",
            "--target", "linux_x86_64-cp311", *extra]


def test_the_hint_names_the_newest_final_release_without_pre(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock_cli.main(_lock(catalog, tmp_path, "tfcpu")) == 2
    err = capsys.readouterr().err
    assert "The index has 3 files of `tfcpu` but none fits `linux_x86_64-cp311`" in err, err
    assert "its newest version, 2.21.0, has wheels for macosx_11_0_arm64." in err, err
    hint = err.partition("pip says:")[0]
    assert "2.22.0rc0" not in hint and "win_amd64" not in hint, hint


def test_with_pre_the_hint_names_the_newest_pre_release(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock_cli.main(_lock(catalog, tmp_path, "tfcpu", "--pre")) == 2
    err = capsys.readouterr().err
    assert "its newest version, 2.22.0rc0, has wheels for macosx_11_0_arm64, win_amd64." in err, err
    assert "a pre-release" not in err


def test_a_project_with_only_pre_releases_names_one_and_says_so(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock_cli.main(_lock(catalog, tmp_path, "onlypre")) == 2
    err = capsys.readouterr().err
    assert (
        "its newest version, 1.0rc1 (a pre-release: the project has no final release), "
        "has wheels for macosx_11_0_arm64." in err
    ), err
