"""resolve(): pip per target against a loopback index (through the metadata proxy or direct)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, Dict, Sequence

import pytest

from fastpex.core.fetch.selection import select_artifacts
from fastpex.core.lock.errors import (
    IndexUnreachableResolveError,
    InvalidRequirementError,
    ResolveError,
)
from fastpex.core.lock.pip import PipTool, ensure_pip
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig
from fastpex.core.lock.resolve import ResolveResult, resolve
from fastpex.core.lock.runner import ResolveOptions, parse_report
from fastpex.core.lock.sources import DirectSource, ProxySource
from fastpex.core.model import Lock
from fastpex.core.platforms import parse_target
from fastpex.testing.index_server import Fault, IndexConfig, IndexServer
from fastpex.testing.wheels import WheelFactory, build_sdist_with_inline_backend

LINUX = "linux_x86_64-cp311"
ARM = "linux_aarch64-cp311"
MAC = "macosx_arm64-cp311"
LINUX312 = "linux_x86_64-cp312"


def build_catalog(f: WheelFactory) -> None:
    f.wheel(
        "app",
        "1.0",
        requires_dist=[
            "dep>=1",
            'macdep; sys_platform == "darwin"',
            'armdep; platform_machine == "aarch64"',
            "extra-thing[fancy]",
        ],
    )
    f.wheel("dep", "1.0")
    f.wheel("dep", "2.0", requires_python=">=3.12")
    f.wheel("macdep", "1.0")
    f.wheel("armdep", "1.0")
    f.wheel("extra-thing", "1.0", extras_map={"fancy": ["fancydep"]})
    f.wheel("fancydep", "1.0")
    f.wheel("native", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    f.wheel("native", "1.0", tag="cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64")
    f.wheel("native", "1.0", tag="cp311-cp311-macosx_11_0_arm64")
    f.sdist("native", "1.0")
    f.wheel("split", "1.0", requires_python="<3.12")
    f.wheel("split", "2.0", requires_python=">=3.12")
    f.wheel("ca", "1.0", requires_dist=["dep==1.0"])
    f.wheel("cb", "1.0", requires_dist=["dep>=2"])
    for name in ("fa", "fb"):  # 2.0 has no macOS wheel
        f.wheel(name, "1.0")
        f.wheel(name, "2.0", tag="py3-none-manylinux_2_17_x86_64")


@pytest.fixture(scope="module")
def pip() -> PipTool:
    return ensure_pip()


def run_resolve(
    server: IndexServer,
    requirements: Sequence[str],
    targets: Sequence[str],
    pip: PipTool,
    tmp_path: Path,
    **kwargs: Any,
) -> ResolveResult:
    """resolve() through a fresh metadata proxy in front of `server`."""
    config = ProxyConfig(indexes=(IndexSpec("default", server.simple_url),), cache_root=tmp_path / "cache")
    options = ResolveOptions(pip=pip, cache_root=tmp_path / "cache")
    with MetadataProxy(config) as proxy:
        result = resolve(
            requirements,
            [parse_target(t) for t in targets],
            ProxySource(proxy, [server.simple_url]),
            options=options,
            **kwargs,
        )
        assert proxy.artifact_requests == 0  # locking read metadata only
    return result


def packages(lock: Lock, target: str) -> Dict[str, str]:
    return {p.name: p.version for p in lock.target_resolve(target).packages}


def test_foreign_markers_extras_and_platform_wheels(catalog, pip, tmp_path):
    result = run_resolve(catalog, ["app", "native"], [LINUX, ARM, MAC], pip, tmp_path)
    lock = result.lock
    assert result.divergent == {}
    common = {"app": "1.0", "dep": "1.0", "extra-thing": "1.0", "fancydep": "1.0", "native": "1.0"}
    assert packages(lock, LINUX) == common
    assert packages(lock, ARM) == {**common, "armdep": "1.0"}  # platform_machine == "aarch64"
    assert packages(lock, MAC) == {**common, "macdep": "1.0"}  # sys_platform == "darwin"

    # pip saw each target's own environment, as the report records it
    assert result.reports[MAC].target.marker_environment["sys_platform"] == "darwin"
    # extras propagate to the package, and edges follow markers per target
    mac_app = next(p for p in lock.target_resolve(MAC).packages if p.name == "app")
    assert mac_app.dependencies == ("dep", "extra-thing", "macdep")
    extra = next(p for p in lock.target_resolve(LINUX).packages if p.name == "extra-thing")
    assert extra.extras == ("fancy",) and extra.dependencies == ("fancydep",)

    # every artifact of the chosen version, upstream URLs, all hashed
    native = lock.distribution("native", "1.0")
    assert sorted(a.filename for a in native.artifacts) == [
        "native-1.0-cp311-cp311-macosx_11_0_arm64.whl",
        "native-1.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "native-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "native-1.0.tar.gz",
    ]
    for dist in lock.distributions:
        for a in dist.artifacts:
            assert a.url.startswith(catalog.url + "/files/"), a.url
            assert len(a.sha256) == 64 and a.size and a.upload_time
    # pip chose the platform wheel per target
    chosen = {
        t: next(r.url for r in result.reports[t].items if r.name == "native").rsplit("/", 1)[-1]
        for t in (LINUX, ARM, MAC)
    }
    assert "x86_64" in chosen[LINUX] and "aarch64" in chosen[ARM] and "macosx" in chosen[MAC]
    # and the lock is consistent with the fetch stage's pure selection
    selection = select_artifacts(lock, [lock.target_resolve(t).target for t in (LINUX, ARM, MAC)])
    mac_files = {d.artifact.filename for d in selection.for_target(MAC).distributions}
    assert "native-1.0-cp311-cp311-macosx_11_0_arm64.whl" in mac_files
    assert "macdep-1.0-py3-none-any.whl" in mac_files and "armdep-1.0-py3-none-any.whl" not in mac_files


def test_direct_source_and_determinism(catalog, pip, tmp_path):
    def once() -> Lock:
        return resolve(
            ["app"],
            [parse_target(LINUX), parse_target(MAC)],
            DirectSource([catalog.simple_url]),
            options=ResolveOptions(pip=pip),
            resolve_name="r",
        ).lock

    first, second = once(), once()
    assert first == second
    assert packages(first, MAC)["macdep"] == "1.0"
    assert "macdep" not in packages(first, LINUX)
    assert first.indexes == (catalog.simple_url,)


def test_versions_aligned_when_possible(catalog, pip, tmp_path):
    # dep 2.0 needs Python 3.12: cp312 alone would take it, but 1.0 works for both.
    result = run_resolve(catalog, ["dep"], [LINUX, LINUX312], pip, tmp_path)
    assert packages(result.lock, LINUX) == packages(result.lock, LINUX312) == {"dep": "1.0"}
    assert result.divergent == {}
    assert [d.key for d in result.lock.distributions] == [("dep", "1.0")]
    # The cp312 target resolved once, with cp311's choices as constraints: no re-resolve.
    assert result.pip_runs == 2
    assert any(f"{LINUX312}: resolved with the versions {LINUX} chose" in n for n in result.notes)


def test_a_platforms_followers_wait_for_their_own_leader_only(pip, tmp_path, caplog):
    """macOS cp312 follows macOS cp311 and is done while Linux's leader still waits for a slow
    page only Linux needs: the platforms' chains run side by side, not in waves."""
    f = WheelFactory(tmp_path / "dists")
    f.wheel("app", "1.0", requires_dist=['slowdep; sys_platform == "linux"'])
    f.wheel("slowdep", "1.0")
    slow = Fault("slow", pattern="/simple/slowdep/", delay=4.0)
    mac312 = "macosx_arm64-cp312"
    caplog.set_level(logging.DEBUG, logger="fastpex.core.lock.resolve")
    with IndexServer(f.dist_dir, config=IndexConfig(faults=(slow,))) as server:
        result = run_resolve(server, ["app"], [LINUX, MAC, mac312], pip, tmp_path)
    assert packages(result.lock, LINUX) == {"app": "1.0", "slowdep": "1.0"}
    assert packages(result.lock, mac312) == packages(result.lock, MAC) == {"app": "1.0"}
    finished = [r.getMessage().split()[2] for r in caplog.records if r.getMessage().startswith("pip for ")]
    assert sorted(finished) == sorted([LINUX, MAC, mac312])
    assert finished.index(MAC) < finished.index(mac312) < finished.index(LINUX)
    # Notes keep the order they had in waves: the follower's, whatever finished first.
    assert any(f"{mac312}: resolved with the versions {MAC} chose" in n for n in result.notes)


def test_divergences_across_platforms_settle_in_one_combined_rerun(catalog, pip, tmp_path):
    # Linux takes fa/fb 2.0; macOS has no 2.0 files, so both settle on 1.0, and the Linux
    # target is re-resolved once with both pins (not once per project).
    result = run_resolve(catalog, ["fa", "fb"], [LINUX, MAC], pip, tmp_path)
    assert packages(result.lock, LINUX) == packages(result.lock, MAC) == {"fa": "1.0", "fb": "1.0"}
    assert result.divergent == {}
    assert result.pip_runs == 3
    assert any(f"fa: all targets use 1.0 (re-resolved {LINUX})" in n for n in result.notes)
    assert any(f"fb: all targets use 1.0 (re-resolved {LINUX})" in n for n in result.notes)


def test_versions_diverge_only_when_they_must(catalog, pip, tmp_path):
    result = run_resolve(catalog, ["split"], [LINUX, LINUX312], pip, tmp_path)
    assert result.divergent == {"split": {LINUX: "1.0", LINUX312: "2.0"}}
    assert packages(result.lock, LINUX) == {"split": "1.0"}
    assert packages(result.lock, LINUX312) == {"split": "2.0"}
    assert {d.key for d in result.lock.distributions} == {("split", "1.0"), ("split", "2.0")}
    # no pip run was wasted on a version the index says cannot work for the other target
    assert result.pip_runs == 2


def test_unsatisfiable_names_target_and_pip_explanation(catalog, pip, tmp_path):
    with pytest.raises(ResolveError) as e:
        run_resolve(catalog, ["ca", "cb"], [LINUX312], pip, tmp_path)
    message = str(e.value)
    assert f"`{LINUX312}`" in message
    assert "The conflict is caused by" in message and "cb 1.0 depends on dep>=2" in message
    assert e.value.target == LINUX312


def test_no_wheel_for_a_target_is_an_error_naming_it(catalog, pip, tmp_path):
    with pytest.raises(ResolveError) as e:
        run_resolve(catalog, ["native"], [LINUX, LINUX312], pip, tmp_path)
    assert f"`{LINUX312}`" in str(e.value) and "native" in str(e.value)


def test_invalid_requirement_before_pip_runs(tmp_path):
    never = PipTool("/nonexistent/python")
    for bad in ["app>=", "--index-url=http://evil", "app[", ""]:
        with pytest.raises(InvalidRequirementError):
            resolve(
                [bad] if bad else [],
                [parse_target(LINUX)],
                DirectSource(["http://127.0.0.1:9/simple/"]),
                options=ResolveOptions(pip=never),
            )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_index_is_a_clear_error(pip, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/simple/"
    from fastpex.core.net.http import HttpClient, HttpConfig

    source = DirectSource([url], http=HttpClient(HttpConfig(max_retries=0)))
    with pytest.raises(IndexUnreachableResolveError) as e:
        resolve(["app"], [parse_target(LINUX)], source, options=ResolveOptions(pip=pip))
    assert LINUX in str(e.value) and "could not be used" in str(e.value)


def test_minimal_relock_keeps_other_pins(pip, tmp_path):
    factory = WheelFactory(tmp_path / "dists")
    factory.wheel("alpha", "1.0", requires_dist=["beta"])
    factory.wheel("beta", "1.0")
    factory.wheel("gamma", "1.0")
    with IndexServer(factory.dist_dir) as server:
        old = run_resolve(server, ["alpha", "gamma"], [LINUX, MAC], pip, tmp_path).lock
        factory.wheel("alpha", "1.1", requires_dist=["beta"])
        factory.wheel("beta", "1.1")
        factory.wheel("gamma", "1.1")

        fresh = run_resolve(server, ["alpha", "gamma"], [LINUX, MAC], pip, tmp_path).lock
        assert packages(fresh, LINUX) == {"alpha": "1.1", "beta": "1.1", "gamma": "1.1"}

        kept = run_resolve(server, ["alpha", "gamma"], [LINUX, MAC], pip, tmp_path, existing_lock=old).lock
        assert kept == old

        bumped = run_resolve(
            server, ["alpha", "gamma"], [LINUX, MAC], pip, tmp_path, existing_lock=old, upgrade=["Beta"]
        ).lock
        assert packages(bumped, LINUX) == packages(bumped, MAC) == {"alpha": "1.0", "beta": "1.1", "gamma": "1.0"}

        # a changed requirement releases the pin it contradicts, and only that one
        changed = run_resolve(server, ["alpha", "gamma>=1.1"], [LINUX], pip, tmp_path, existing_lock=old)
        assert packages(changed.lock, LINUX) == {"alpha": "1.0", "beta": "1.0", "gamma": "1.1"}
        assert any("gamma==1.0" in n for n in changed.notes)

        # a new requirement whose dependencies conflict with an old pin releases that pin too
        factory.wheel("alpha", "1.2", requires_dist=["beta>=1.1"])
        moved = run_resolve(server, ["alpha>=1.2", "gamma"], [LINUX], pip, tmp_path, existing_lock=old)
        assert packages(moved.lock, LINUX) == {"alpha": "1.2", "beta": "1.1", "gamma": "1.0"}
        assert any("released 1 pin(s): beta" in n for n in moved.notes), moved.notes


def test_parse_report_v1():
    target = parse_target(LINUX)
    report = parse_report(
        {
            "version": "1",
            "pip_version": "26.3",
            "install": [
                {
                    "download_info": {
                        "url": "https://i/files/Foo_Bar-1.0-py3-none-any.whl",
                        "archive_info": {"hash": "sha256=ABCD", "hashes": {}},
                    },
                    "is_direct": False,
                    "requested": True,
                    "requested_extras": ["X_Y"],
                    "metadata": {"name": "Foo_Bar", "version": "1.0", "requires_dist": ["baz; extra == 'x-y'"]},
                }
            ],
        },
        target,
    )
    (item,) = report.items
    assert (item.name, item.version, item.sha256) == ("foo-bar", "1.0", "abcd")
    assert item.requested_extras == ("x-y",) and item.requires_dist == ("baz; extra == 'x-y'",)
    with pytest.raises(ResolveError):
        parse_report({"version": "2", "install": []}, target)


def test_allow_sdists_evaluates_sdist_dependencies_for_the_target(pip, tmp_path):
    factory = WheelFactory(tmp_path / "dists")
    factory.wheel("dep", "1.0")
    factory.wheel("macdep", "1.0")
    build_sdist_with_inline_backend(
        factory.dist_dir, "sdonly", "1.0", requires_dist=["dep", 'macdep; sys_platform == "darwin"']
    )
    targets = [parse_target(LINUX), parse_target(MAC)]
    with IndexServer(factory.dist_dir) as server:
        with pytest.raises(ResolveError):  # wheels only by default
            resolve(["sdonly"], targets, DirectSource([server.simple_url]), options=ResolveOptions(pip=pip))
        lock = resolve(
            ["sdonly"], targets, DirectSource([server.simple_url]), options=ResolveOptions(pip=pip, only_binary=False)
        ).lock
    assert packages(lock, LINUX) == {"sdonly": "1.0", "dep": "1.0"}
    assert packages(lock, MAC) == {"sdonly": "1.0", "dep": "1.0", "macdep": "1.0"}
    assert [a.filename for a in lock.distribution("sdonly", "1.0").artifacts] == ["sdonly-1.0.tar.gz"]


def test_hashless_index_and_upload_cutoff(pip, tmp_path):
    from datetime import datetime, timezone

    from fastpex.testing.index_server import IndexConfig
    from fastpex.testing.wheels import sha256_file

    factory = WheelFactory(tmp_path / "dists")
    old = factory.wheel("dep", "1.0")
    factory.wheel("dep", "2.0")
    times = {
        "dep-1.0-py3-none-any.whl": datetime(2024, 1, 1, tzinfo=timezone.utc),
        "dep-2.0-py3-none-any.whl": datetime(2025, 6, 1, tzinfo=timezone.utc),
    }
    config = IndexConfig(include_hashes=False, upload_times=times)
    with IndexServer(factory.dist_dir, config=config) as server:
        proxy_config = ProxyConfig(
            indexes=(IndexSpec("default", server.simple_url),),
            cache_root=tmp_path / "cache",
            upload_cutoff=datetime(2025, 1, 1, tzinfo=timezone.utc),
        )
        with MetadataProxy(proxy_config) as proxy:
            result = resolve(
                ["dep"],
                [parse_target(LINUX)],
                ProxySource(proxy, [server.simple_url]),
                options=ResolveOptions(pip=pip),
                upload_cutoff="2025-01-01T00:00:00Z",
            )
    (dist,) = result.lock.distributions
    assert dist.version == "1.0"  # 2.0 was uploaded after the cut-off
    (artifact,) = dist.artifacts
    assert artifact.sha256 == sha256_file(old)  # computed: the index gave no hash
    assert result.lock.upload_cutoff == "2025-01-01T00:00:00Z"


def test_pip_tools(tmp_path):
    import pip as own_pip

    from fastpex.core.lock.errors import PipError
    from fastpex.core.lock.pip import pip_tool_from_path

    site = str(Path(own_pip.__file__).parent.parent)
    tool = pip_tool_from_path(site)
    assert tool.pythonpath == (site,) and tool.version == own_pip.__version__
    assert ensure_pip(tmp_path).version == own_pip.__version__  # new enough: nothing installed
    assert not (tmp_path / "tools").exists() or not any((tmp_path / "tools").rglob("pip-*"))
    with pytest.raises(PipError, match="neither a directory"):
        pip_tool_from_path(str(tmp_path / "nothing"))
    old = tmp_path / "old"
    (old / "pip").mkdir(parents=True)
    (old / "pip" / "__init__.py").write_text('__version__ = "23.0"\n')
    with pytest.raises(PipError, match="pip 23.0"):
        pip_tool_from_path(str(old))


def test_unchanged_inputs_reuse_pip_runs_until_a_page_changes(pip, tmp_path):
    factory = WheelFactory(tmp_path / "dists")
    factory.wheel("top", "1.0", requires_dist=["leaf>=1"])
    factory.wheel("leaf", "1.0")
    with IndexServer(factory.dist_dir) as server:
        first = run_resolve(server, ["top"], [LINUX, MAC], pip, tmp_path)
        assert first.pip_runs == 2
        again = run_resolve(server, ["top"], [LINUX, MAC], pip, tmp_path)
        # Same command lines, same pages: both reports reused, the same lock.
        assert again.pip_runs == 0
        assert again.lock == first.lock
        # A new release changes leaf's page: pip runs again and picks it up.
        factory.wheel("leaf", "1.1")
        server.update()  # re-read the directory
        third = run_resolve(server, ["top"], [LINUX, MAC], pip, tmp_path)
        assert third.pip_runs == 2
        assert packages(third.lock, LINUX)["leaf"] == "1.1"
