"""The lock's dependency edges against an independent source: pip's own report per target.

Selection re-derives what a target needs by walking the lock's edges (`util/deps.py`). If that
walk and pip ever disagree, a PEX silently misses (or carries) a dependency. So for every
target, the distributions selection walks to must be exactly the ones pip installed for it,
on a catalog that stacks markers on extras on extras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Set

import pytest

from fastpex.core.fetch.selection import select_artifacts
from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig
from fastpex.core.lock.pip import ensure_pip
from fastpex.core.lock.resolve import resolve
from fastpex.core.lock.runner import ResolveOptions
from fastpex.core.lock.sources import ProxySource
from fastpex.core.platforms import parse_target
from fastpex.testing.wheels import WheelFactory

TARGETS = ("linux_x86_64-cp311", "linux_aarch64-cp312", "macosx_arm64-cp311", "linux_x86_64-cp312")
REQUIREMENTS = ("app", "tool[cli]")


def build_catalog(f: WheelFactory) -> None:
    f.wheel(
        "app",
        "1.0",
        requires_dist=[
            'lib[feat]; python_version >= "3.12"',
            'lib; python_version < "3.12"',
            'macdep; sys_platform == "darwin"',
            'armdep; platform_machine == "aarch64"',
            "unused-extra-host",
        ],
    )
    # `feat` pulls a chain whose own extra is only asked for through the chain.
    f.wheel("lib", "1.0", extras_map={"feat": ["featdep", 'armfeat; platform_machine == "aarch64"']})
    f.wheel("featdep", "1.0", requires_dist=["deep[x]"])
    f.wheel("deep", "1.0", extras_map={"x": ["deepx"], "never": ["neverdep"]})
    f.wheel("deepx", "1.0")
    f.wheel("neverdep", "1.0")
    f.wheel("armfeat", "1.0")
    f.wheel("macdep", "1.0")
    f.wheel("armdep", "1.0")
    f.wheel("unused-extra-host", "1.0", extras_map={"big": ["neverdep"]})
    # A root with an extra, whose extra activates another project's extra under a marker.
    f.wheel("tool", "1.0", extras_map={"cli": ['shell[color]; sys_platform != "win32"', 'winonly; sys_platform == "win32"']})
    f.wheel("shell", "1.0", extras_map={"color": ['ansi; python_version >= "3.12"', 'oldansi; python_version < "3.12"']})
    for name in ("ansi", "oldansi", "winonly"):
        f.wheel(name, "1.0")


def test_selection_walks_to_exactly_what_pip_installed_for_every_target(catalog, tmp_path):
    pip = ensure_pip()
    cache = tmp_path / "cache"
    config = ProxyConfig(indexes=(IndexSpec("default", catalog.simple_url),), cache_root=cache)
    with MetadataProxy(config) as proxy:
        result = resolve(
            list(REQUIREMENTS),
            [parse_target(t) for t in TARGETS],
            ProxySource(proxy, [catalog.simple_url]),
            options=ResolveOptions(pip=pip, cache_root=cache),
        )
    for name in TARGETS:
        target = result.lock.target_resolve(name).target
        walked = {d.name for d in select_artifacts(result.lock, [target]).for_target(name).distributions}
        reported = {item.name for item in result.reports[name].items}
        assert walked == reported, name
    # The catalog really exercises the walk: each target needs a different set.
    sets = [frozenset(i.name for i in result.reports[n].items) for n in TARGETS]
    assert len(set(sets)) == len(TARGETS)
    assert "deepx" in sets[1] and "deepx" not in sets[0]  # extra of an extra, only on 3.12
    assert "neverdep" not in set().union(*sets)


def _host_pip_report(index_url: str, tmp_path: Path) -> Set[str]:
    """Plain pip on this interpreter: no fastpex launcher, no proxy, markers of this machine."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--index-url", index_url, "--report", str(report), *REQUIREMENTS],
        check=True, env=env, capture_output=True,
    )
    data = json.loads(report.read_text())
    return {item["metadata"]["name"] for item in data["install"]}


def test_the_host_target_matches_a_plain_pip_run(catalog, tmp_path):
    """The same check against a pip that fastpex didn't run at all, for this machine's target."""
    if sys.platform != "linux" or os.uname().machine != "x86_64" or sys.version_info[:2] not in ((3, 11), (3, 12)):
        pytest.fail("this test needs CPython 3.11 or 3.12 on linux x86_64 (the project's test interpreter)")
    host = f"linux_x86_64-cp3{sys.version_info[1]}"
    pip = ensure_pip()
    cache = tmp_path / "cache"
    config = ProxyConfig(indexes=(IndexSpec("default", catalog.simple_url),), cache_root=cache)
    with MetadataProxy(config) as proxy:
        result = resolve(
            list(REQUIREMENTS), [parse_target(host)], ProxySource(proxy, [catalog.simple_url]),
            options=ResolveOptions(pip=pip, cache_root=cache),
        )
    target = result.lock.target_resolve(host).target
    walked = {d.name for d in select_artifacts(result.lock, [target]).for_target(host).distributions}
    assert walked == _host_pip_report(catalog.simple_url, tmp_path)
