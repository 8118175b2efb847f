"""The warm pip (zygote): a forked pip run writes the report a plain `python -c LAUNCHER` run
writes, for a linux target, a macOS target, another Python version, and under another
interpreter; a dead zygote falls back to plain runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Tuple

import pytest

from fastpex.core.lock.pip import PipTool, ensure_pip, pip_tool_from_path
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig
from fastpex.core.lock.runner import PipRun, ResolveOptions, Runner
from fastpex.core.lock.sources import ProxySource
from fastpex.core.platforms import parse_target
from fastpex.testing.index_server import IndexServer
from fastpex.testing.pythons import cpython
from fastpex.testing.wheels import WheelFactory

REQUIREMENTS = ["app", "native"]


def build_catalog(f: WheelFactory) -> None:
    f.wheel(
        "app",
        "1.0",
        requires_dist=[
            "dep>=1",
            'macdep; sys_platform == "darwin"',
            'armdep; platform_machine == "aarch64"',
            'newpy; python_version >= "3.12"',
            "extra-thing[fancy]",
        ],
    )
    f.wheel("dep", "1.0")
    f.wheel("dep", "2.0", requires_python=">=3.12")
    f.wheel("macdep", "1.0")
    f.wheel("armdep", "1.0")
    f.wheel("newpy", "1.0")
    f.wheel("extra-thing", "1.0", extras_map={"fancy": ["fancydep"]})
    f.wheel("fancydep", "1.0")
    # only a platform wheel fits: the target's tags decide which
    f.wheel("native", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    f.wheel("native", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64")
    f.wheel("native", "1.0", tag="cp311-cp311-macosx_11_0_arm64")


@pytest.fixture(scope="module")
def pip() -> PipTool:
    return ensure_pip()


@pytest.fixture
def source(catalog: IndexServer, tmp_path: Path) -> Iterator[ProxySource]:
    config = ProxyConfig(indexes=(IndexSpec("default", catalog.simple_url),), cache_root=tmp_path / "proxy-cache")
    with MetadataProxy(config) as proxy:
        yield ProxySource(proxy, [catalog.simple_url])


def _runner(source: ProxySource, pip: PipTool, cache: Path, zygote: bool) -> Runner:
    # separate resolution caches: the second runner must run pip, not reuse the first's report
    return Runner(source, ResolveOptions(pip=pip, cache_root=cache, zygote=zygote), pip, REQUIREMENTS)


def plain_and_forked(
    source: ProxySource, pip: PipTool, tmp_path: Path, target_name: str, constraints: Mapping[str, str] = {}
) -> Tuple[PipRun, PipRun, int]:
    target = parse_target(target_name)
    plain = _runner(source, pip, tmp_path / "plain", zygote=False)
    warm = _runner(source, pip, tmp_path / "warm", zygote=True)
    try:
        cold_run = plain.run(target, constraints)
        warm_run = warm.run(target, constraints)
        assert warm._zygote is not None
        forked = warm._zygote.forked
    finally:
        warm.close()
    assert plain._zygote is None
    return cold_run, warm_run, forked


def _report(run: PipRun) -> Mapping[str, Any]:
    assert run.ok, run.output
    assert run.raw_report is not None
    return run.raw_report


def _chosen(report: Mapping[str, Any]) -> Mapping[str, str]:
    return {i["metadata"]["name"]: i["download_info"]["url"].rsplit("/", 1)[-1] for i in report["install"]}


@pytest.mark.parametrize(
    "target_name, expected",
    [
        ("linux_x86_64-cp311", {"native": "cp311-cp311-manylinux"}),
        ("macosx_arm64-cp311", {"native": "macosx_11_0_arm64", "macdep": "macdep-1.0"}),
        ("linux_x86_64-cp312", {"native": "cp312-cp312-manylinux", "newpy": "newpy-1.0", "dep": "dep-2.0"}),
    ],
)
def test_forked_pip_writes_the_plain_runs_report(source, pip, tmp_path, target_name, expected) -> None:
    plain, forked, count = plain_and_forked(source, pip, tmp_path, target_name)
    assert count == 1  # the report below came from a forked child, not the fallback
    assert _report(forked) == _report(plain)
    # and that report is the target's: its markers, its tags
    report = _report(forked)
    target = parse_target(target_name)
    assert report["environment"] == dict(target.marker_environment)
    chosen = _chosen(report)
    for name, fragment in expected.items():
        assert fragment in chosen[name], chosen
    assert ("armdep" in chosen) is False


def test_a_pinned_forked_run_writes_the_plain_runs_report(source, pip, tmp_path) -> None:
    # a follower's run: every project pinned, so the pages both runs read are narrowed to the pins
    pins = {"app": "1.0", "dep": "1.0", "extra-thing": "1.0", "fancydep": "1.0", "native": "1.0"}
    plain, forked, count = plain_and_forked(source, pip, tmp_path, "linux_x86_64-cp312", pins)
    assert count == 1
    assert _report(forked) == _report(plain)
    assert _chosen(_report(forked))["dep"] == "dep-1.0-py3-none-any.whl"  # not 2.0, its newest


def test_forked_pip_fails_as_the_plain_run_fails(source, pip, tmp_path) -> None:
    # dep==2.0 needs Python >= 3.12: pip says why, and the runner reads the same words from both
    plain, forked, count = plain_and_forked(source, pip, tmp_path, "linux_x86_64-cp311", {"dep": "2.0"})
    assert count == 1
    assert not plain.ok and not forked.ok
    assert forked.output == plain.output
    assert forked.collected_from == plain.collected_from
    assert "dep" in forked.output


def test_another_interpreter(source, pip, tmp_path) -> None:
    # the zygote runs under the pip's own interpreter: here CPython 3.12 with this pip's package
    pip_dir = tmp_path / "pip-only"
    pip_dir.mkdir()
    assert pip.pythonpath, "the test's pip comes from a directory on sys.path"
    (pip_dir / "pip").symlink_to(Path(pip.pythonpath[0]) / "pip")
    other = pip_tool_from_path(str(pip_dir), python=str(cpython("3.12")))
    plain, forked, count = plain_and_forked(source, other, tmp_path, "linux_x86_64-cp311")
    assert count == 1
    assert _report(forked) == _report(plain)
    assert _report(forked)["environment"]["python_version"] == "3.11"


def test_a_dead_zygote_falls_back_to_plain_runs(source, pip, tmp_path) -> None:
    target = parse_target("linux_x86_64-cp311")
    plain = _runner(source, pip, tmp_path / "plain", zygote=False).run(target, {})
    warm = _runner(source, pip, tmp_path / "warm", zygote=True)
    try:
        zygote = warm._warm_pip()
        assert zygote is not None and zygote._proc is not None
        zygote._proc.kill()
        zygote._proc.wait()
        run = warm.run(target, {})
        assert zygote.forked == 0  # nothing was forked: the runner ran pip plainly
    finally:
        warm.close()
    assert _report(run) == _report(plain)

