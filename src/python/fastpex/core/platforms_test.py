"""The targets' marker environments and tags equal what the real interpreters report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import packaging
import pytest
from packaging.markers import Marker, default_environment
from packaging.tags import sys_tags

from fastpex.testing.pythons import cpython
from fastpex.core.errors import UserError
from fastpex.core.platforms import (
    MAX_PATCH,
    InterpreterConstraintError,
    UnknownPlatformError,
    admitted_patches,
    at_lowest_admitted_patch,
    expand_targets,
    parse_target,
    python_versions_for_constraints,
    target_marker,
    target_names_patch,
)

INTERPRETERS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
# Runs on each interpreter. packaging 26.x needs Python >= 3.10; on 3.9 the probe computes
# `default_environment()` with a verbatim copy of packaging's stdlib-only code and skips tags.
_PROBE = """
import json, os, platform, sys
try:
    from packaging.markers import default_environment
    from packaging.tags import sys_tags
    tags = [str(t) for t in sys_tags()]
except (ImportError, SyntaxError):
    tags = None

    def default_environment():
        info = sys.implementation.version
        iver = "{0.major}.{0.minor}.{0.micro}".format(info)
        if info.releaselevel != "final":
            iver += info.releaselevel[0] + str(info.serial)
        return {
            "implementation_name": sys.implementation.name,
            "implementation_version": iver,
            "os_name": os.name,
            "platform_machine": platform.machine(),
            "platform_release": platform.release(),
            "platform_system": platform.system(),
            "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform,
        }
print(json.dumps({"env": default_environment(), "tags": tags, "glibc": platform.libc_ver()[1]}))
"""


def _compare_env(target_env, real_env):
    real = dict(real_env)
    mine = dict(target_env)
    for key in ("platform_release", "platform_version"):
        assert mine.pop(key) == ""
        real.pop(key)
    assert mine == real


def _assert_ordered_subset(host_tags, target_tags):
    assert set(host_tags) <= set(target_tags), sorted(set(host_tags) - set(target_tags))[:10]
    wanted = set(host_tags)
    assert [t for t in target_tags if t in wanted] == list(host_tags)


@pytest.fixture(scope="module")
def packaging_path(tmp_path_factory) -> Path:
    """A directory holding only this `packaging`, for the other interpreters' PYTHONPATH."""
    root = tmp_path_factory.mktemp("pkgpath")
    (root / "packaging").symlink_to(Path(packaging.__file__).parent)
    return root


def test_host_interpreter_matches():
    import platform

    glibc = platform.libc_ver()[1]
    major, minor, micro = sys.version_info[:3]
    target = parse_target(f"linux_x86_64-cp{major}.{minor}.{micro}@glibc{glibc}")
    _compare_env(target.marker_environment, default_environment())
    _assert_ordered_subset([str(t) for t in sys_tags()], target.supported_tags)


@pytest.mark.parametrize("minor", INTERPRETERS)
def test_real_interpreters_match(minor, packaging_path):
    python = cpython(minor)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(packaging_path)
    out = subprocess.run(
        [str(python), "-S", "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    probe = json.loads(out)
    version = probe["env"]["python_full_version"]
    target = parse_target(f"linux_x86_64-cp{version}@glibc{probe['glibc']}")
    assert target.python_version == minor
    _compare_env(target.marker_environment, probe["env"])
    if probe["tags"] is None:
        assert version.startswith("3.9")  # packaging 26 cannot run there; env checked above
    else:
        _assert_ordered_subset(probe["tags"], target.supported_tags)


def test_default_target_names_and_envs():
    t = parse_target("linux_x86_64-cp311")
    assert t.name == "linux_x86_64-cp311"
    assert t.platform == "linux_x86_64"
    assert t.marker_environment["python_full_version"].startswith("3.11.")
    assert "cp311-cp311-manylinux_2_28_x86_64" in t.supported_tags
    assert "cp311-cp311-manylinux_2_29_x86_64" not in t.supported_tags  # default glibc 2.28
    assert "cp311-cp311-manylinux2014_x86_64" in t.supported_tags
    assert not any("musllinux" in tag for tag in t.supported_tags)
    assert t.supported_tags[-1] == "py30-none-any"

    arm = parse_target("linux_aarch64-cp312@glibc2.34")
    assert arm.name == "linux_aarch64-cp312@glibc2.34"
    assert arm.marker_environment["platform_machine"] == "aarch64"
    assert "cp312-cp312-manylinux_2_34_aarch64" in arm.supported_tags
    assert "cp312-cp312-manylinux_2_17_aarch64" in arm.supported_tags
    assert "cp312-cp312-manylinux_2_16_aarch64" not in arm.supported_tags

    mac = parse_target("macosx_arm64-cp311")
    env = mac.marker_environment
    assert (env["sys_platform"], env["platform_system"], env["platform_machine"]) == ("darwin", "Darwin", "arm64")
    assert mac.supported_tags[0] == "cp311-cp311-macosx_13_0_arm64"
    assert "cp311-cp311-macosx_11_0_arm64" in mac.supported_tags
    assert "cp311-cp311-macosx_14_0_arm64" not in mac.supported_tags
    mac14 = parse_target("macosx_arm64-cp311@macos14.0")
    assert mac14.supported_tags[0] == "cp311-cp311-macosx_14_0_arm64"
    assert parse_target("macosx_arm64-cp311@14.0") == mac14  # bare version: the platform's kind
    assert parse_target("linux_x86_64-cp311@2.34").name == "linux_x86_64-cp311@glibc2.34"
    intel = parse_target("macosx_x86_64-cp310")
    assert intel.supported_tags[0] == "cp310-cp310-macosx_13_0_x86_64"
    assert "cp310-cp310-macosx_10_9_x86_64" in intel.supported_tags
    old_intel = parse_target("macosx_x86_64-cp310@macos10.13")
    assert old_intel.supported_tags[0] == "cp310-cp310-macosx_10_13_x86_64"

    musl = parse_target("linux_x86_64-cp311@musl1.2")
    assert "cp311-cp311-musllinux_1_2_x86_64" in musl.supported_tags
    assert not any("manylinux" in tag for tag in musl.supported_tags)

    full = parse_target("linux_x86_64-cp3.11.4")
    assert full.name == "linux_x86_64-cp3.11.4"
    assert full.marker_environment["python_full_version"] == "3.11.4"

    ft = parse_target("linux_x86_64-cp313t")
    assert ft.supported_tags[0] == "cp313-cp313t-linux_x86_64"
    assert not any("abi3" == tag.split("-")[1] for tag in ft.supported_tags)

    win = parse_target("win_amd64-cp312")
    assert win.marker_environment["os_name"] == "nt"
    assert win.supported_tags[0] == "cp312-cp312-win_amd64"


@pytest.mark.parametrize(
    "spec",
    ["linux_x86-cp311", "linux_x86_64", "linux_x86_64-py311", "linux_x86_64-cp27",
     "macosx_arm64-cp311@glibc2.28", "linux_x86_64-cp311@glibc2.28,musl1.2", "linux_x86_64-cp311@foo"],
)
def test_unknown_platforms(spec):
    with pytest.raises(UnknownPlatformError) as e:
        parse_target(spec)
    assert spec in str(e.value)
    assert "linux_x86_64-cp311" in str(e.value)  # lists the accepted forms


def test_expand_and_constraints():
    versions = python_versions_for_constraints(["CPython>=3.9,<3.14"])
    assert versions == ["3.9", "3.10", "3.11", "3.12", "3.13"]
    assert python_versions_for_constraints([">=3.11,<3.12", "==3.13.*"]) == ["3.11", "3.13"]
    names = [t.name for t in expand_targets(["linux_x86_64", "macosx_arm64-cp311", "linux_x86_64-cp311"], ["3.11", "3.12"])]
    assert names == ["linux_x86_64-cp311", "linux_x86_64-cp312", "macosx_arm64-cp311"]
    with pytest.raises(UnknownPlatformError):
        expand_targets(["linux_x86_64"], [])


def test_target_marker_selects_only_its_target():
    targets = expand_targets(["linux_x86_64", "linux_aarch64", "macosx_arm64"], ["3.11", "3.12"])
    for t in targets:
        marker = Marker(target_marker(t))
        assert [o.name for o in targets if marker.evaluate(dict(o.marker_environment))] == [t.name]


@pytest.mark.parametrize("python", ["cp99", "cp27", "cp399", "cp3.15", "cp4"])
def test_an_unsupported_python_is_called_unsupported_and_the_range_is_listed(python):
    with pytest.raises(UnknownPlatformError) as e:
        parse_target(f"linux_x86_64-{python}")
    message = str(e.value)
    assert f"`{python}` is not a supported CPython version; fastpex supports CPython 3.8 to 3.14: cp38 to cp314" in message
    assert "like cp311" not in message


def test_admitted_patches_honour_bounds_and_exclusions():
    assert admitted_patches("3.11", []) == list(range(MAX_PATCH + 1))
    assert admitted_patches("3.11", ["CPython==3.11.*"]) == list(range(31))
    assert admitted_patches("3.11", ["CPython>=3.11.4,<3.13"]) == list(range(4, 31))
    assert admitted_patches("3.12", ["CPython>=3.11.4,<3.13"]) == list(range(31))
    assert admitted_patches("3.11", [">=3.11,!=3.11.0,!=3.11.5,<3.12"]) == [p for p in range(1, 31) if p != 5]
    assert admitted_patches("3.11", ["==3.12.*", "==3.11.9"]) == [9]  # OR'ed
    assert admitted_patches("3.10", ["CPython>=3.11"]) == []
    with pytest.raises(InterpreterConstraintError) as e:
        admitted_patches("3.11", ["PyPy>=3.9"])
    assert isinstance(e.value, UserError) and "PyPy>=3.9" in str(e.value)


def test_a_lock_resolves_a_target_at_its_lowest_admitted_patch():
    def full(spec, constraints):
        target = at_lowest_admitted_patch(parse_target(spec), constraints)
        assert target.marker_environment["implementation_version"] == target.marker_environment["python_full_version"]
        assert target.name == parse_target(spec).name and target.supported_tags == parse_target(spec).supported_tags
        return target.marker_environment["python_full_version"]

    assert full("linux_x86_64-cp311", []) == "3.11.0"
    assert full("linux_x86_64-cp311", ["CPython==3.11.*"]) == "3.11.0"
    assert full("linux_x86_64-cp311", ["CPython>=3.11.4,<3.13"]) == "3.11.4"
    assert full("macosx_arm64-cp312@macos14.0", ["CPython>=3.11.4,<3.13"]) == "3.12.0"
    assert full("linux_x86_64-cp311", [">=3.11,!=3.11.0"]) == "3.11.1"
    # A named patch is kept, whatever the constraints.
    assert full("linux_x86_64-cp3.11.9", ["CPython==3.11.*"]) == "3.11.9"
    assert full("linux_x86_64-cp3.13.2t", []) == "3.13.2"
    assert target_names_patch(parse_target("linux_x86_64-cp3.11.9@glibc2.34"))
    assert not target_names_patch(parse_target("linux_x86_64-cp3.11@glibc2.34"))
    assert not target_names_patch(parse_target("linux_x86_64-cp313t"))
