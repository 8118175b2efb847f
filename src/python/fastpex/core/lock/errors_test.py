"""What a failed lock says: a project no index has is called that (not pip's bare "from
versions: none"), and every failing target is reported, in target order, lockfile untouched."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from fastpex.core.cli import lock as lock_cli
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory, build_sdist_with_inline_backend

TARGETS = ("linux_x86_64-cp311", "macosx_arm64-cp311", "linux_x86_64-cp312")


def build_catalog(f: WheelFactory) -> None:
    f.wheel("app", "1.0", requires_dist=["reqeusts"])  # a typo: the index has no such project
    f.wheel("native", "1.0", tag="cp311-cp311-macosx_11_0_arm64")  # has files, none for linux
    # Two levels below the root, a project published only as an sdist.
    f.wheel("deepapp", "1.0", requires_dist=["middle"])
    f.wheel("middle", "1.0", requires_dist=["sdonly>=1"])
    build_sdist_with_inline_backend(f.dist_dir, "sdonly", "1.0")


def _lock(catalog: IndexServer, tmp_path: Path, requirement: str, *extra: str, targets=TARGETS) -> List[str]:
    index = catalog.simple_url.replace("://", "://someone:s3cr3t@")
    argv = ["--resolve", "r", "--requirement", requirement, "--index", index, "--output", str(tmp_path / "r.lock"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra]
    for target in targets:
        argv += ["--target", target]
    return argv


@pytest.mark.parametrize("extra", [(), ("--no-proxy",)], ids=["proxy", "direct"])
def test_a_project_no_index_has_is_named_with_the_index(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra
) -> None:
    code = lock_cli.main(_lock(catalog, tmp_path, "app", *extra, targets=TARGETS[:1]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"No index has a project `reqeusts`: `{catalog.simple_url}` has no files of it" in err, err
    assert "Check the spelling of `reqeusts`" in err and "--index" in err and "--route" in err
    assert "from versions: none" in err  # pip's words stay, below
    assert "s3cr3t" not in err and "someone" not in err
    assert not (tmp_path / "r.lock").exists()


def test_a_project_with_files_that_do_not_fit_is_not_called_missing(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock_cli.main(_lock(catalog, tmp_path, "native", targets=TARGETS[:1])) == 2
    err = capsys.readouterr().err
    assert "The index has 1 files of `native` but none fits `linux_x86_64-cp311`" in err, err
    assert "No index has a project" not in err


def test_every_failing_target_is_reported_in_target_order_and_the_lock_is_untouched(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lockfile = tmp_path / "r.lock"
    lockfile.write_text("the lock of yesterday\n")
    # `native` fits the mac target only: both linux targets fail (the cp312 one a follower of
    # the failed cp311 leader), and each gets its own paragraph.
    code = lock_cli.main(_lock(catalog, tmp_path, "native"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert lockfile.read_text() == "the lock of yesterday\n"
    assert err.startswith(
        "fastpex lock: error: Could not resolve the requirements for 2 of the 3 targets "
        "(`linux_x86_64-cp311`, `linux_x86_64-cp312`); each is explained below\n"
    ), err
    paragraphs = [line for line in err.splitlines() if line.startswith("    Could not resolve the requirements for target")]
    assert [p.split("`")[1] for p in paragraphs] == ["linux_x86_64-cp311", "linux_x86_64-cp312"]
    assert err.count("none fits `linux_x86_64-cp311`") == 1 and err.count("none fits `linux_x86_64-cp312`") == 1
    assert err.count("        ERROR: No matching distribution found for native") == 2  # pip, under each

    # Without reconciliation (no leaders and followers) too, and a lone failure reads as before.
    assert lock_cli.main(_lock(catalog, tmp_path, "native", "--no-reconcile")) == 2
    assert "2 of the 3 targets" in capsys.readouterr().err
    assert lock_cli.main(_lock(catalog, tmp_path, "native", targets=TARGETS[:2])) == 2
    assert capsys.readouterr().err.startswith(
        "fastpex lock: error: Could not resolve the requirements for target `linux_x86_64-cp311`."
    )
    assert lockfile.read_text() == "the lock of yesterday\n"


def test_a_deep_sdist_only_dependency_names_its_chain_and_the_option_that_allows_it(
    catalog: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock_cli.main(_lock(catalog, tmp_path, "deepapp", targets=TARGETS[:1])) == 2
    err = capsys.readouterr().err
    assert "`sdonly` (required through `deepapp` -> `middle` -> `sdonly`) is published only as an sdist" in err, err
    assert "`--allow-sdists`" in err and "[fastpex].allow_sdists = true" in err
    assert not (tmp_path / "r.lock").exists()
