"""Pages narrowed to a pip run's pins: pip gets only the pinned versions' files, and writes the
report it writes from the full pages (success and failure alike)."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any, ContextManager, Iterator, List, Mapping

import pytest

from fastpex.core.lock.pinned_pages import PinnedPages, narrow
from fastpex.core.lock.pip import PipTool, ensure_pip
from fastpex.core.lock.project_view import ProjectView
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig
from fastpex.core.lock.proxy_http import PEP691_JSON
from fastpex.core.lock.runner import PipRun, ResolveOptions, Runner
from fastpex.core.lock.sources import ProxySource, proxy_target_name
from fastpex.core.model import Target
from fastpex.core.net.index import ProjectFile
from fastpex.core.platforms import parse_target
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory

TARGET = "linux_x86_64-cp311"
DEP_VERSIONS = ["1.0", "1.1", "1.2", "1.3", "2.0"]


def build_catalog(f: WheelFactory) -> None:
    f.wheel("app", "1.0", requires_dist=["dep>=1", "tool"])
    f.wheel("app", "2.0", requires_dist=["dep>=1.3", "tool"])
    for v in DEP_VERSIONS:
        f.wheel("dep", v)
    f.wheel("dep", "1.2", tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    f.wheel("tool", "0.9")
    f.wheel("tool", "1.0", requires_dist=["dep<1.2"])


def _view(filenames: List[str]) -> ProjectView:
    return ProjectView("demo", [ProjectFile(filename=n, url=f"https://files.example/demo/{n}") for n in filenames])


def _kept(view: ProjectView, usable: Any) -> List[str]:
    return [view.files.filenames[i] for i in usable]


def test_narrow_keeps_every_file_equal_to_the_pin_as_pep_440_compares() -> None:
    view = _view([
        "demo-1.0-py3-none-any.whl",
        "demo-1.0.0-py3-none-any.whl",  # ==1.0 matches 1.0.0
        "demo-1.0+cpu-cp311-cp311-linux_x86_64.whl",  # and 1.0+local
        "demo-1.0.1-py3-none-any.whl",
        "demo-1.0rc1-py3-none-any.whl",
        "demo-2.0-py3-none-any.whl",
        "demo-bad-wheel.whl",  # no version fastpex can read: pip decides
    ])
    every = range(len(view.files))
    assert _kept(view, narrow(view, every, "1.0")) == [
        "demo-1.0-py3-none-any.whl",
        "demo-1.0.0-py3-none-any.whl",
        "demo-1.0+cpu-cp311-cp311-linux_x86_64.whl",
        "demo-bad-wheel.whl",
    ]
    assert _kept(view, narrow(view, every, "1.0rc1")) == ["demo-1.0rc1-py3-none-any.whl", "demo-bad-wheel.whl"]
    # no pin, a version nothing has, or a match only among files the target can't use: the page
    assert narrow(view, every, None) == every
    assert narrow(view, every, "3.0") == every
    usable = [3, 5]  # 1.0.1 and 2.0
    assert narrow(view, usable, "1.0") == usable
    assert narrow(view, every, "not a version!") == every


def test_pins_hold_for_one_run_and_never_for_two_at_once() -> None:
    pinned = PinnedPages()
    assert pinned.pin("t", "dep") is None
    with pinned.pinned("t", {"dep": "1.2"}):
        assert pinned.pin("t", "dep") == "1.2"
        assert pinned.pin("t", "other") is None
        assert pinned.pin("u", "dep") is None  # per target
        with pinned.pinned("t", {"dep": "1.3"}):  # a second run for the target: full pages
            assert pinned.pin("t", "dep") is None
        assert pinned.pin("t", "dep") is None  # still: the first run may have seen either
    assert pinned.pin("t", "dep") is None
    with pinned.pinned("t", {"dep": "1.3"}):
        assert pinned.pin("t", "dep") == "1.3"


class FullPages(ProxySource):
    """The same proxy without narrowing: what pip saw before."""

    def pinned(self, target: Target, pins: Mapping[str, str]) -> ContextManager[None]:
        return contextlib.nullcontext()


@pytest.fixture(scope="module")
def pip() -> PipTool:
    return ensure_pip()


@pytest.fixture
def proxy(catalog: IndexServer, tmp_path: Path) -> Iterator[MetadataProxy]:
    config = ProxyConfig(indexes=(IndexSpec("default", catalog.simple_url),), cache_root=tmp_path / "proxy-cache")
    with MetadataProxy(config) as running:
        yield running


def _run(source: ProxySource, pip: PipTool, cache: Path, requirements: List[str], pins: Mapping[str, str]) -> PipRun:
    runner = Runner(source, ResolveOptions(pip=pip, cache_root=cache), pip, requirements)
    try:
        return runner.run(parse_target(TARGET), pins)
    finally:
        runner.close()


def _page_filenames(proxy: MetadataProxy, project: str) -> List[str]:
    body = proxy.render_page(proxy_target_name(TARGET), project, PEP691_JSON)
    assert body is not None
    return [f["filename"] for f in json.loads(body)["files"]]


def test_a_pinned_run_reads_narrowed_pages_and_reports_what_full_pages_give(proxy, pip, tmp_path) -> None:
    narrowed, full = ProxySource(proxy), FullPages(proxy)
    pins = {"app": "1.0", "dep": "1.1", "tool": "0.9"}
    seen: List[List[str]] = []
    # what pip is served while the run is in flight, from a thread as the handler would ask
    with narrowed.pinned(parse_target(TARGET), pins):
        worker = threading.Thread(target=lambda: seen.append(_page_filenames(proxy, "dep")))
        worker.start()
        worker.join()
    assert seen == [["dep-1.1-py3-none-any.whl"]]
    assert len(_page_filenames(proxy, "dep")) == len(DEP_VERSIONS) + 1  # after the run: the full page

    for requirements, pins in [
        (["app"], pins),
        (["app"], {"app": "1.0", "dep": "1.2", "tool": "0.9"}),  # two files of 1.2: pip picks the same one
        (["app", "tool"], {"app": "2.0", "dep": "1.3", "tool": "0.9"}),
        (["app"], {"dep": "1.1"}),  # only some pinned: app and tool resolve as before
    ]:
        a = _run(narrowed, pip, tmp_path / "narrowed", requirements, pins)
        b = _run(full, pip, tmp_path / "full", requirements, pins)
        assert a.ok and b.ok, a.output + b.output
        assert a.raw_report == b.raw_report
    assert a.report is not None  # the last case: tool is free, and takes its newest that fits
    assert {i.name: i.version for i in a.report.items} == {"app": "1.0", "dep": "1.1", "tool": "1.0"}


def test_a_pinned_run_that_fails_says_what_the_full_pages_say(proxy, pip, tmp_path) -> None:
    narrowed, full = ProxySource(proxy), FullPages(proxy)
    for pins in [
        {"dep": "9.9"},  # no such version: the page is served whole, "from versions" as before
        {"app": "1.0", "dep": "1.3", "tool": "1.0"},  # tool 1.0 wants dep<1.2: a conflict
    ]:
        a = _run(narrowed, pip, tmp_path / "narrowed", ["app"], pins)
        b = _run(full, pip, tmp_path / "full", ["app"], pins)
        assert not a.ok and not b.ok
        assert a.collected_from == b.collected_from
        assert a.missing == b.missing
        # pip's explanation, word for word (a minimal re-lock frees the pins it names)
        assert a.output == b.output
