from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastpex.core.errors import UsageError
from fastpex.core.fetch import FetchRequest, OfflineError, UnknownTargetError, fetch
from fastpex.core.fetch.progress import Reporter
from fastpex.core.fetch.selection_test import dist, linux_target, mac_target, make_lock
from fastpex.core.model import Artifact, Lock
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import build_wheel, sha256_file


def two_target_lock(server: IndexServer, dists: Path) -> Lock:
    linux = build_wheel(dists, "torchish", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    mac = build_wheel(dists, "torchish", "1.0", tag="cp311-cp311-macosx_11_0_arm64")
    pure = build_wheel(dists, "pure", "1.0")
    a = {p.name: Artifact(server.file_url(p.name), p.name, sha256_file(p), p.stat().st_size) for p in (linux, mac, pure)}
    return make_lock(
        ["torchish"],
        [dist("torchish", "1.0", [a[linux.name], a[mac.name]], ["pure"]), dist("pure", "1.0", [a[pure.name]])],
        {linux_target(): ["torchish", "pure"], mac_target(): ["torchish", "pure"]},
    )


def test_fetch_selects_downloads_publishes_and_counts(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    lock = two_target_lock(server, dists)
    request = FetchRequest(
        lock=lock,
        targets=("linux_x86_64-cp311",),
        cache_root=tmp_path / "cache",
        dest=tmp_path / "dest",
        manifest=tmp_path / "manifest.json",
        progress=Reporter(),
    )
    result = fetch(request)
    names = sorted(f.artifact.filename for f in result.fetched)
    assert names == ["pure-1.0-py3-none-any.whl", "torchish-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
    assert [a.filename for a in result.selection.artifacts] == [f.artifact.filename for f in result.fetched]
    assert (result.from_store, result.downloaded) == (0, 2)
    assert result.bytes_downloaded == sum((dists / n).stat().st_size for n in names)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == names
    assert all(path.parent == tmp_path / "dest" for path in result.paths.values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(e["filename"] for e in manifest) == names
    assert {e["path"] for e in manifest} == {str(p.absolute()) for p in result.paths.values()}

    again = fetch(FetchRequest(lock=lock, targets=("linux_x86_64-cp311",), cache_root=tmp_path / "cache", offline=True))
    assert (again.from_store, again.downloaded, again.bytes_downloaded) == (2, 0, 0)
    assert all(path.is_relative_to(tmp_path / "cache") for path in again.paths.values())  # no dest: the store


def test_fetch_errors_are_the_stage_errors(server: IndexServer, dists: Path, tmp_path: Path) -> None:
    lock = two_target_lock(server, dists)
    with pytest.raises(UnknownTargetError) as unknown:
        fetch(FetchRequest(lock=lock, targets=("win",), cache_root=tmp_path))
    assert unknown.value.exit_code == 2
    with pytest.raises(OfflineError) as offline:
        fetch(FetchRequest(lock=lock, targets=("linux_x86_64-cp311",), cache_root=tmp_path, offline=True))
    assert offline.value.exit_code == 2
    with pytest.raises(UsageError, match="jobs must be at least 1"):
        fetch(FetchRequest(lock=lock, targets=("linux_x86_64-cp311",), cache_root=tmp_path, jobs=0))
