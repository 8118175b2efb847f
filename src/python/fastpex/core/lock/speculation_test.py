"""Speculation guesses what pip will ask for: the versions a requirement admits, only the
dependencies whose markers hold for the target. Against a real loopback index."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator, Set, Tuple

from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig
from fastpex.core.platforms import parse_target
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.wheels import build_wheel

TARGET = "linux_x86_64-cp311"
TAG = "cp311-cp311-manylinux_2_17_x86_64"


def _metadata(*requires_dist: str) -> bytes:
    lines = ["Metadata-Version: 2.1", "Name: app", "Version: 1.0"]
    lines += [f"Requires-Dist: {r}" for r in requires_dist]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@contextlib.contextmanager
def _speculating(dists: Path, tmp_path: Path, **config: Any) -> Iterator[Tuple[IndexServer, MetadataProxy]]:
    """A loopback index without PEP 658 files, and a proxy that knows TARGET's tags and
    environment (and `config`)."""
    with IndexServer(dists, config=IndexConfig(advertise_metadata=False, serve_metadata_files=False)) as server:
        target = parse_target(TARGET)
        proxy_config = ProxyConfig(
            indexes=(IndexSpec("main", server.simple_url),),
            cache_root=tmp_path / "cache",
            target_tags={TARGET: target.supported_tags},
            target_markers={TARGET: target.marker_environment},
            **config,
        )
        with MetadataProxy(proxy_config) as proxy:
            yield server, proxy


def _settled(server: IndexServer, quiet: float = 0.3, timeout: float = 10.0) -> Set[str]:
    """Paths the server was asked for, once no new request came for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        paths = {r.path for r in server.requests}
        if len(paths) == seen:
            return paths
        seen = len(paths)
        time.sleep(quiet)
    raise AssertionError(f"the proxy kept fetching for {timeout} s: {sorted(paths)}")


def test_prefetch_takes_the_version_the_requirement_admits_and_skips_failed_markers(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    for version in ("1.0", "2.0", "3.0rc1"):  # newest final 2.0; `==1.0` is what pip will pick
        build_wheel(dists, "pinned", version, tag=TAG)
    for version in ("1.0", "1.5", "2.0"):
        build_wheel(dists, "ranged", version, tag=TAG)
    build_wheel(dists, "maconly", "1.0", tag=TAG)
    build_wheel(dists, "anywhere", "1.0", tag=TAG)
    for version in ("1.0", "2.0rc1"):  # no specifier: the newest final release, as pip without --pre
        build_wheel(dists, "plain", version, tag=TAG)
    with _speculating(dists, tmp_path) as (server, proxy):
        proxy.speculate(
            TARGET,
            _metadata(
                "pinned==1.0",
                "ranged<2,>=1",
                'maconly; sys_platform == "darwin"',
                'anywhere; python_version >= "3.8"',
                'fancy; extra == "gpu"',
                "plain",
            ),
        )
        paths = _settled(server)
    pages = {p for p in paths if p.startswith("/simple/")}
    fetched = {tuple(p.rsplit("/", 1)[1].split("-")[:2]) for p in paths if p.startswith("/files/")}
    # The marker-failed dependency and the extra's are not followed; the others are.
    assert pages == {"/simple/pinned/", "/simple/ranged/", "/simple/anywhere/", "/simple/plain/"}
    # The metadata guessed is that of the newest version each requirement admits.
    assert fetched == {("pinned", "1.0"), ("ranged", "1.5"), ("anywhere", "1.0"), ("plain", "1.0")}


def test_with_pre_releases_allowed_the_newest_pre_release_is_guessed(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    for version in ("1.0", "2.0rc1"):
        build_wheel(dists, "plain", version, tag=TAG)
    with _speculating(dists, tmp_path, prereleases=True) as (server, proxy):
        proxy.speculate(TARGET, _metadata("plain"))
        paths = _settled(server)
    assert {tuple(p.rsplit("/", 1)[1].split("-")[:2]) for p in paths if p.startswith("/files/")} == {("plain", "2.0rc1")}


def test_without_a_target_environment_every_marker_is_followed(tmp_path: Path) -> None:
    """A target the proxy knows no environment for: as before, only extras are skipped."""
    dists = tmp_path / "dists"
    build_wheel(dists, "maconly", "1.0", tag=TAG)
    with IndexServer(dists) as server:
        proxy_config = ProxyConfig(indexes=(IndexSpec("main", server.simple_url),), cache_root=tmp_path / "cache")
        with MetadataProxy(proxy_config) as proxy:
            proxy.speculate(TARGET, _metadata('maconly; sys_platform == "darwin"'))
            paths = _settled(server)
    assert "/simple/maconly/" in paths


def test_extras_asked_of_a_project_are_followed_even_when_asked_after_its_metadata(tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    build_wheel(dists, "withextras", "1.0", tag=TAG, extras_map={"fast": ["speedy"], "slow": ["slowpoke"]})
    build_wheel(dists, "late", "1.0", tag=TAG, extras_map={"fast": ["lateextra"]})
    for name in ("speedy", "slowpoke", "lateextra"):
        build_wheel(dists, name, "1.0", tag=TAG)
    with _speculating(dists, tmp_path) as (server, proxy):
        proxy.speculate(TARGET, _metadata("withextras[fast]", "late"))
        first = {p for p in _settled(server) if p.startswith("/simple/")}
        # `late`'s metadata was read without extras; asking for `late[fast]` now follows them.
        proxy.speculate(TARGET, _metadata("late[fast]"))
        then = {p for p in _settled(server) if p.startswith("/simple/")}
    assert first == {"/simple/withextras/", "/simple/speedy/", "/simple/late/"}
    assert then == first | {"/simple/lateextra/"}
