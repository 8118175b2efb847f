"""A lock holds on every patch its header admits: resolved at the lowest, checked over 0-30."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Sequence

import pytest

from fastpex.testing.pythons import cpython
from fastpex.core.cli import build as build_cli
from fastpex.core.errors import UserError
from fastpex.core.lock.api import LockRequest, lock
from fastpex.core.lock.errors import ResolveError
from fastpex.core.lock.python_range import PythonRangeError
from fastpex.core.model import Lock
from fastpex.core.platforms import parse_target
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory



def build_catalog(f: WheelFactory) -> None:
    f.wheel("fresh", "1.0", requires_python=">=3.11")
    f.wheel("fresh", "2.0", requires_python=">=3.11.3")  # newest, but not for 3.11.0-3.11.2
    f.wheel("toonew", "1.0", requires_python=">=3.11.3")  # the only release
    f.wheel("gap", "1.0", requires_python=">=3.11,!=3.11.5")
    # A bug-fix guard: `backport` is needed before 3.11.4 only.
    f.wheel("app", "1.0", requires_dist=['backport; python_full_version < "3.11.4"'],
            files={"app/__init__.py": b"", "app/main.py": _MAIN})
    f.wheel("backport", "1.0", files={"backport/__init__.py": b""})
    # The other direction: a dependency only 3.11.4+ needs.
    f.wheel("later", "1.0", requires_dist=['newer; python_full_version >= "3.11.4"'])
    f.wheel("newer", "1.0")
    # The same, behind an extra only a dependency asks for: `wrapper` -> `plugin[fast]`.
    f.wheel("wrapper", "1.0", requires_dist=["plugin[fast]"])
    f.wheel("plugin", "1.0", extras_map={"fast": ['accel; python_full_version >= "3.11.4"']})
    f.wheel("accel", "1.0")


_MAIN = (
    b"import importlib.util, platform\n\n"
    b"def main():\n"
    b"    print(platform.python_version(), importlib.util.find_spec('backport') is not None)\n"
)


def request(catalog: IndexServer, tmp_path: Path, requirements: Sequence[str], constraints: Sequence[str] = (),
            target: str = "linux_x86_64-cp311", **changes: Any) -> LockRequest:
    base = LockRequest(
        resolve_name="r",
        requirements=tuple(requirements),
        targets=(parse_target(target),),
        output=tmp_path / "r.lock",
        indexes=(("default", catalog.simple_url),),
        interpreter_constraints=tuple(constraints),
        cache_root=tmp_path / "cache",
    )
    return dataclasses.replace(base, **changes)


def versions(locked: Lock) -> Dict[str, str]:
    return {d.name: d.version for d in locked.distributions}


def resolved_at(locked: Lock) -> Dict[str, str]:
    return {r.target.name: r.target.marker_environment["python_full_version"] for r in locked.resolves}


def test_a_header_that_admits_3_11_0_pins_the_release_that_runs_there(catalog: IndexServer, tmp_path: Path) -> None:
    result = lock(request(catalog, tmp_path, ["fresh"], ["CPython==3.11.*"]))
    assert result.lock is not None
    assert versions(result.lock) == {"fresh": "1.0"}
    assert resolved_at(result.lock) == {"linux_x86_64-cp311": "3.11.0"}
    assert "CPython==3.11.*" in result.lock_text  # the header is not narrowed
    # No constraints at all: the header says `CPython==3.11.*`, so the same.
    bare = lock(request(catalog, tmp_path / "bare", ["fresh"]))
    assert bare.lock is not None and versions(bare.lock) == {"fresh": "1.0"}


def test_constraints_above_the_bound_pin_the_newer_release(catalog: IndexServer, tmp_path: Path) -> None:
    result = lock(request(catalog, tmp_path, ["fresh"], ["CPython>=3.11.3,<3.12"]))
    assert result.lock is not None
    assert versions(result.lock) == {"fresh": "2.0"}
    assert resolved_at(result.lock) == {"linux_x86_64-cp311": "3.11.3"}


def test_several_minors_each_resolve_at_their_lowest_admitted_patch(catalog: IndexServer, tmp_path: Path) -> None:
    targets = (parse_target("linux_x86_64-cp311"), parse_target("linux_x86_64-cp312"))
    result = lock(request(catalog, tmp_path, ["fresh"], ["CPython>=3.11.4,<3.13"], targets=targets))
    assert result.lock is not None
    assert resolved_at(result.lock) == {"linux_x86_64-cp311": "3.11.4", "linux_x86_64-cp312": "3.12.0"}
    assert versions(result.lock) == {"fresh": "2.0"}


def test_only_a_too_new_release_is_refused_and_nothing_is_written(catalog: IndexServer, tmp_path: Path) -> None:
    out = tmp_path / "r.lock"
    out.write_text("the previous lock\n")
    # Resolved at 3.11.0, pip finds nothing it may use, and says why.
    with pytest.raises(ResolveError) as e:
        lock(request(catalog, tmp_path, ["toonew"], ["CPython==3.11.*"]))
    assert "toonew" in str(e.value) and ">=3.11.3" in str(e.value) and "3.11.0" in str(e.value)
    assert out.read_text() == "the previous lock\n"
    # A target that names its patch resolves there, and the check still holds the lock to the
    # header: 3.11.0 is admitted, `toonew` excludes it.
    with pytest.raises(PythonRangeError) as e2:
        lock(request(catalog, tmp_path, ["toonew"], ["CPython==3.11.*"], target="linux_x86_64-cp3.11.9"))
    message = str(e2.value)
    assert isinstance(e2.value, UserError)
    for part in ("`toonew==1.0`", "`>=3.11.3`", "`linux_x86_64-cp3.11.9`", "CPython 3.11.0", "narrow the interpreter constraints",
                 "`>=3.11.3`", "pin an older `toonew`", "No lockfile was written"):
        assert part in message, (part, message)
    assert out.read_text() == "the previous lock\n"
    # With constraints that exclude what it excludes, the same lock is fine.
    ok = lock(request(catalog, tmp_path, ["toonew"], ["CPython>=3.11.3,<3.12"], target="linux_x86_64-cp3.11.9"))
    assert ok.lock is not None and versions(ok.lock) == {"toonew": "1.0"}


def test_exclusions_in_requires_python_and_in_the_constraints(catalog: IndexServer, tmp_path: Path) -> None:
    # pip at 3.11.0 takes `gap`, but the header admits 3.11.5, which `gap` excludes.
    with pytest.raises(PythonRangeError) as e:
        lock(request(catalog, tmp_path, ["gap"], ["CPython==3.11.*"]))
    assert "`gap==1.0`" in str(e.value) and "CPython 3.11.5" in str(e.value)
    assert not (tmp_path / "r.lock").exists()
    # Constraints that exclude 3.11.5 as well: `!=` is honoured.
    ok = lock(request(catalog, tmp_path, ["gap"], ["CPython==3.11.*,!=3.11.5"]))
    assert ok.lock is not None and versions(ok.lock) == {"gap": "1.0"}
    # `!=3.11.0` moves the lowest admitted patch.
    one = lock(request(catalog, tmp_path / "one", ["fresh"], ["CPython>=3.11,!=3.11.0,!=3.11.1,<3.12"]))
    assert one.lock is not None and resolved_at(one.lock) == {"linux_x86_64-cp311": "3.11.2"}


def test_a_bug_fix_guard_is_locked_for_the_patches_that_need_it(catalog: IndexServer, tmp_path: Path) -> None:
    # 3.11.0-3.11.3 admitted: `backport` is in the lock, with its marker kept in `requires_dists`.
    wide = lock(request(catalog, tmp_path / "wide", ["app"], ["CPython==3.11.*"]))
    assert wide.lock is not None and versions(wide.lock) == {"app": "1.0", "backport": "1.0"}
    assert 'python_full_version < \\"3.11.4\\"' in wide.lock_text
    # Only 3.11.4+ admitted: the guard does not apply, as on an up-to-date interpreter.
    narrow = lock(request(catalog, tmp_path / "narrow", ["app"], ["CPython>=3.11.4,<3.12"]))
    assert narrow.lock is not None and versions(narrow.lock) == {"app": "1.0"}

    # The PEX built from the wide lock carries `backport`, and on an interpreter past the guard
    # (3.11.7 here) the marker leaves it inactive.
    python = str(cpython("3.11"))
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path / "app.pex"
    src = tmp_path / "src"
    src.mkdir()
    assert build_cli.main(["--lock", str(tmp_path / "wide" / "r.lock"), "--cache-dir", str(tmp_path / "wide" / "cache"),
                           "--sources", str(src), "--output", str(out), "--target", "linux_x86_64-cp311",
                           "--entry-point", "app.main:main"]) == 0
    run = subprocess.run([python, str(out)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root")))
    guard_applies = tuple(int(p) for p in version.split(".")) < (3, 11, 4)
    assert run.stdout.split() == [version, str(guard_applies)]


def test_a_dependency_only_later_patches_need_is_reported(catalog: IndexServer, tmp_path: Path) -> None:
    with pytest.raises(PythonRangeError) as e:
        lock(request(catalog, tmp_path, ["later"], ["CPython==3.11.*"]))
    message = str(e.value)
    for part in ("`later==1.0`", "newer", "CPython 3.11.4", "3.11.0", "has no `newer`", "`>=3.11.4`"):
        assert part in message, (part, message)
    assert not (tmp_path / "r.lock").exists()
    ok = lock(request(catalog, tmp_path, ["later"], ["CPython>=3.11.4,<3.12"]))
    assert ok.lock is not None and versions(ok.lock) == {"later": "1.0", "newer": "1.0"}


def test_a_later_patch_edge_behind_an_extra_a_dependency_asks_for_is_reported(catalog: IndexServer, tmp_path: Path) -> None:
    # The check walks each class of patches once; the classes must count the extras a walk
    # asks for (`plugin[fast]`, from `wrapper`), or 3.11.4's `accel` edge goes unseen.
    with pytest.raises(PythonRangeError) as e:
        lock(request(catalog, tmp_path, ["wrapper"], ["CPython==3.11.*"]))
    message = str(e.value)
    for part in ("`plugin==1.0`", "accel", "CPython 3.11.4", "has no `accel`"):
        assert part in message, (part, message)
    ok = lock(request(catalog, tmp_path / "ok", ["wrapper"], ["CPython>=3.11.4,<3.12"]))
    assert ok.lock is not None and versions(ok.lock) == {"wrapper": "1.0", "plugin": "1.0", "accel": "1.0"}
