"""`lock(LockRequest)`: the library API the CLI is a thin shell over."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fastpex.core.cli.lock import main as cli_main
from fastpex.core.lock.api import LockOptions, LockRequest, lock, without_header
from fastpex.core.lock.errors import InvalidRequirementError
from fastpex.core.lockfile import load_lock
from fastpex.core.platforms import parse_target
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory


def build_catalog(f: WheelFactory) -> None:
    f.wheel("app", "1.0", requires_dist=["dep>=1"])
    f.wheel("dep", "1.0")
    f.wheel("dep", "2.0rc1")


def request(catalog: IndexServer, tmp_path: Path, **changes: Any) -> LockRequest:
    base = LockRequest(
        resolve_name="r",
        requirements=("app",),
        targets=(parse_target("linux_x86_64-cp311"), parse_target("macosx_arm64-cp311")),
        output=tmp_path / "r.lock",
        indexes=(("default", catalog.simple_url),),
        cache_root=tmp_path / "cache",
    )
    return dataclasses.replace(base, **changes)


def test_lock_writes_the_lock_and_reuses_it_while_inputs_and_pages_are_unchanged(catalog: IndexServer, tmp_path: Path) -> None:
    first = lock(request(catalog, tmp_path))
    assert not first.reused and first.lock is not None and first.pip_runs >= 1
    assert {d.name: d.version for d in first.lock.distributions} == {"app": "1.0", "dep": "1.0"}
    assert (tmp_path / "r.lock").read_text() == first.lock_text
    assert load_lock(tmp_path / "r.lock") == first.lock

    again = lock(request(catalog, tmp_path))
    assert again.reused and again.lock is None and again.lock_text == first.lock_text

    # Any input that changes the lock changes the key: here pre-releases, then the header.
    pre = lock(request(catalog, tmp_path, options=LockOptions(prereleases=True)))
    assert not pre.reused and pre.lock is not None
    assert {d.name: d.version for d in pre.lock.distributions}["dep"] == "2.0rc1"
    bare = lock(request(catalog, tmp_path, header=None))
    assert not bare.reused and bare.lock_text == without_header(first.lock_text)


def test_lock_without_proxy_and_without_reuse(catalog: IndexServer, tmp_path: Path) -> None:
    direct = lock(request(catalog, tmp_path, options=LockOptions(use_proxy=False), pylock_output=tmp_path / "pylock.toml"))
    assert direct.lock is not None and not direct.reused
    assert (tmp_path / "pylock.toml").read_text() == direct.pylock_text
    proxied = lock(request(catalog, tmp_path, options=LockOptions(reuse=False)))
    assert proxied.lock == direct.lock
    assert not lock(request(catalog, tmp_path, options=LockOptions(reuse=False))).reused


def test_invalid_requirement_is_refused_before_anything_is_written(catalog: IndexServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequirementError):
        lock(request(catalog, tmp_path, requirements=("app>=",)))
    assert not (tmp_path / "r.lock").exists()


def test_a_stored_lock_is_not_reused_when_the_admitted_patch_changes(catalog: IndexServer, tmp_path: Path) -> None:
    # The key holds the targets as given; the patch each resolves at comes from the interpreter
    # constraints, which must therefore be in the key: a narrower range is a different lock.
    one = (parse_target("linux_x86_64-cp311"),)
    any_patch = lock(request(catalog, tmp_path, targets=one, interpreter_constraints=("CPython==3.11.*",)))
    assert '"python_full_version": "3.11.0"' in any_patch.lock_text
    later = lock(request(catalog, tmp_path, targets=one, interpreter_constraints=("CPython>=3.11.4,<3.12",)))
    assert not later.reused and later.lock is not None
    assert '"python_full_version": "3.11.4"' in later.lock_text
    again = lock(request(catalog, tmp_path, targets=one, interpreter_constraints=("CPython==3.11.*",)))
    assert again.reused and again.lock_text == any_patch.lock_text


def test_an_unchanged_lock_loads_none_of_the_resolve_machinery(catalog: IndexServer, tmp_path: Path) -> None:
    """The replay path decides "unchanged" without importing pip's runner, the proxy, the merge
    or the lock codec: that is most of its start-up time. From an index without validators
    (this machine's PyPI mirror), once the page hint knows it, it does not load the page cache
    or the HTML parser either: the early page check only hashes bodies."""
    argv = [
        "--resolve", "r", "--requirement", "app", "--target", "linux_x86_64-cp311", "--target", "macosx_arm64-cp311",
        "--index", catalog.simple_url, "--output", str(tmp_path / "r.lock"), "--cache-dir", str(tmp_path / "cache"),
    ]
    config = catalog.config
    catalog.update(page_validators=())
    try:
        assert cli_main(argv) == 0
        script = textwrap.dedent(
            f"""
            import sys
            from fastpex.core.cli.lock import main
            code = main({argv!r})
            print(" ".join(sorted(m for m in sys.modules if m.startswith(("fastpex.", "packaging.", "html.")))))
            sys.exit(code)
            """
        )
        runs = [
            subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[3])
            for _ in range(2)  # the first learns that the index sends no validators
        ]
    finally:
        catalog.config = config
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        assert "without resolving" in proc.stderr
    loaded = set(runs[-1].stdout.split())
    heavy = {
        "fastpex.core.lock.proxy", "fastpex.core.lock.resolve", "fastpex.core.lock.runner", "fastpex.core.lock.merge",
        "fastpex.core.lock.metadata", "fastpex.core.lock.sources", "fastpex.core.lockfile.codec",
        "fastpex.core.lockfile.pylock", "packaging.requirements",
        "fastpex.core.net.page_cache", "fastpex.core.net.json_page", "html.parser",
    }
    assert loaded and not (heavy & loaded), sorted(heavy & loaded)
    assert "fastpex.core.lock.page_check" in loaded
