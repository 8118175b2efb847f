from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import pytest
from packaging import tags

from fastpex.core.model import (
    Artifact,
    Lock,
    LockedDistribution,
    ResolvedPackage,
    Target,
    TargetResolve,
)
from fastpex.core.fetch.selection import (
    LockInconsistencyError,
    NoCompatibleArtifactError,
    UnknownTargetError,
    select_artifacts,
    target_for,
    targets_for,
)

# -- helpers shared with fetch_test --------------------------------------------------------------

LINUX_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
MAC_PLATFORMS = ("macosx_14_0_arm64", "macosx_11_0_arm64", "macosx_11_0_universal2")


def _tags(platforms: Sequence[str]) -> Tuple[str, ...]:
    out = [str(t) for t in tags.cpython_tags((3, 11), abis=["cp311"], platforms=platforms)]
    out += [str(t) for t in tags.compatible_tags((3, 11), interpreter="cp311", platforms=platforms)]
    return tuple(dict.fromkeys(out))


def linux_target(name: str = "linux_x86_64-cp311") -> Target:
    env = {
        "implementation_name": "cpython",
        "implementation_version": "3.11.7",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": "3.11.7",
        "platform_python_implementation": "CPython",
        "python_version": "3.11",
        "sys_platform": "linux",
    }
    return Target(name, "linux_x86_64", "3.11", env, _tags(LINUX_PLATFORMS))


def mac_target(name: str = "macosx_arm64-cp311") -> Target:
    env = dict(linux_target().marker_environment)
    env.update(platform_machine="arm64", platform_system="Darwin", sys_platform="darwin")
    return Target(name, "macosx_arm64", "3.11", env, _tags(MAC_PLATFORMS))


def fake_artifact(filename: str, *, requires_python: Optional[str] = None) -> Artifact:
    sha = hashlib.sha256(filename.encode()).hexdigest()
    return Artifact(f"https://files.example/{filename}", filename, sha, 1000, requires_python=requires_python)


def dist(
    name: str, version: str, artifacts: Iterable[Artifact], requires_dist: Sequence[str] = ()
) -> LockedDistribution:
    return LockedDistribution(name, version, None, tuple(requires_dist), tuple(artifacts))


def make_lock(
    requirements: Sequence[str],
    dists: Sequence[LockedDistribution],
    resolves: Mapping[Target, Sequence[str]],
) -> Lock:
    """`resolves`: target -> names of the recorded packages (versions come from `dists`)."""
    versions = {d.name: d.version for d in dists}
    return Lock(
        resolve_name="python-default",
        requirements=tuple(requirements),
        requires_python=("==3.11.*",),
        distributions=tuple(dists),
        resolves=tuple(
            TargetResolve(t, tuple(ResolvedPackage(n, versions[n]) for n in names))
            for t, names in resolves.items()
        ),
    )


# -- a realistic multi-platform lock --------------------------------------------------------------

TORCHISH_LINUX = fake_artifact("torchish-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
TORCHISH_MAC = fake_artifact("torchish-2.0-cp311-cp311-macosx_11_0_arm64.whl")
TORCHISH_SDIST = fake_artifact("torchish-2.0.tar.gz")
PURE = fake_artifact("pure-1.0-py3-none-any.whl")
MACONLY = fake_artifact("maconly-1.0-py3-none-any.whl")


def ml_lock() -> Lock:
    linux, mac = linux_target(), mac_target()
    dists = [
        dist(
            "torchish",
            "2.0",
            [TORCHISH_LINUX, TORCHISH_MAC, TORCHISH_SDIST],
            ["pure>=1", 'maconly; sys_platform == "darwin"'],
        ),
        dist("pure", "1.0", [PURE]),
        dist("maconly", "1.0", [MACONLY]),
    ]
    return make_lock(
        ["torchish==2.0"],
        dists,
        {linux: ["torchish", "pure"], mac: ["torchish", "pure", "maconly"]},
    )


def test_linux_gets_only_linux_artifacts() -> None:
    lock = ml_lock()
    selection = select_artifacts(lock, [target_for(lock, "linux_x86_64-cp311")])
    assert selection.artifacts == (PURE, TORCHISH_LINUX)
    target_sel = selection.for_target("linux_x86_64-cp311")
    assert [(d.name, d.version) for d in target_sel.distributions] == [("pure", "1.0"), ("torchish", "2.0")]
    assert target_sel.dropped == ()


def test_mac_gets_mac_wheel_and_darwin_dependency() -> None:
    lock = ml_lock()
    selection = select_artifacts(lock, [target_for(lock, "macosx_arm64-cp311")])
    assert selection.artifacts == (MACONLY, PURE, TORCHISH_MAC)


def test_multi_target_union_is_deduped_by_sha256() -> None:
    lock = ml_lock()
    selection = select_artifacts(lock, targets_for(lock, ["linux_x86_64-cp311", "macosx_arm64-cp311"]))
    assert selection.artifacts == (MACONLY, PURE, TORCHISH_MAC, TORCHISH_LINUX)  # by filename
    assert len({a.sha256 for a in selection.artifacts}) == 4


def test_recorded_but_unreached_packages_are_dropped() -> None:
    # The linux resolve (wrongly) records the darwin-only dependency: the walk drops it.
    lock = ml_lock()
    lock = make_lock(
        lock.requirements,
        lock.distributions,
        {linux_target(): ["torchish", "pure", "maconly"]},
    )
    selection = select_artifacts(lock, [linux_target()])
    assert MACONLY not in selection.artifacts
    assert selection.targets[0].dropped == ("maconly",)


def test_needed_but_unrecorded_is_an_inconsistent_lock() -> None:
    lock = ml_lock()
    lock = make_lock(lock.requirements, lock.distributions, {linux_target(): ["torchish"]})
    with pytest.raises(LockInconsistencyError, match="`pure`"):
        select_artifacts(lock, [linux_target()])


def test_packages_without_requirements_is_an_inconsistent_lock() -> None:
    lock = ml_lock()
    lock = make_lock([], lock.distributions, {linux_target(): ["torchish", "pure"]})
    with pytest.raises(LockInconsistencyError, match="no requirements"):
        select_artifacts(lock, [linux_target()])
    empty = make_lock([], [], {linux_target(): []})
    assert select_artifacts(empty, [linux_target()]).artifacts == ()


def test_recorded_version_must_satisfy_the_edge() -> None:
    lock = make_lock(
        ["a"],
        [dist("a", "1.0", [fake_artifact("a-1.0-py3-none-any.whl")], ["b>=2"]),
         dist("b", "1.0", [fake_artifact("b-1.0-py3-none-any.whl")])],
        {linux_target(): ["a", "b"]},
    )
    with pytest.raises(LockInconsistencyError, match="b==1.0"):
        select_artifacts(lock, [linux_target()])


def test_extras_propagate_through_the_walk() -> None:
    a = fake_artifact("a-1.0-py3-none-any.whl")
    b = fake_artifact("b-1.0-py3-none-any.whl")
    c = fake_artifact("c-1.0-py3-none-any.whl")
    d = fake_artifact("d-1.0-py3-none-any.whl")
    e = fake_artifact("e-1.0-py3-none-any.whl")
    dists = [
        dist("a", "1.0", [a], ['b; extra == "gpu"', 'c[fast]; extra == "gpu"', 'e; extra == "docs"']),
        dist("b", "1.0", [b]),
        dist("c", "1.0", [c], ['d; extra == "fast"']),
        dist("d", "1.0", [d]),
        dist("e", "1.0", [e]),
    ]
    everything = {linux_target(): ["a", "b", "c", "d", "e"]}
    plain = select_artifacts(make_lock(["a"], dists, everything), [linux_target()])
    assert plain.artifacts == (a,)
    gpu = select_artifacts(make_lock(["a[gpu]"], dists, everything), [linux_target()])
    assert gpu.artifacts == (a, b, c, d)
    assert gpu.targets[0].dropped == ("e",)
    by_name = {s.name: s for s in gpu.targets[0].distributions}
    assert by_name["a"].extras == ("gpu",) and by_name["c"].extras == ("fast",)
    # An extra that arrives later (second edge) still opens its dependencies.
    late = select_artifacts(make_lock(["a", "c", "a[docs]"], dists, everything), [linux_target()])
    assert late.artifacts == (a, c, e)


def test_best_ranked_wheel_wins() -> None:
    generic = fake_artifact("x-1.0-py3-none-any.whl")
    old_manylinux = fake_artifact("x-1.0-cp311-cp311-manylinux2014_x86_64.whl")
    abi3 = fake_artifact("x-1.0-cp38-abi3-manylinux_2_17_x86_64.whl")
    lock = make_lock(
        ["x"], [dist("x", "1.0", [generic, abi3, old_manylinux])], {linux_target(): ["x"]}
    )
    assert select_artifacts(lock, [linux_target()]).artifacts == (old_manylinux,)
    lock = make_lock(["x"], [dist("x", "1.0", [generic, abi3])], {linux_target(): ["x"]})
    assert select_artifacts(lock, [linux_target()]).artifacts == (abi3,)


def test_higher_build_tag_breaks_ties() -> None:
    b1 = fake_artifact("x-1.0-1-py3-none-any.whl")
    b2 = fake_artifact("x-1.0-2-py3-none-any.whl")
    lock = make_lock(["x"], [dist("x", "1.0", [b1, b2])], {linux_target(): ["x"]})
    assert select_artifacts(lock, [linux_target()]).artifacts == (b2,)


def test_requires_python_of_an_artifact_excludes_it() -> None:
    new = fake_artifact("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", requires_python=">=3.12")
    generic = fake_artifact("x-1.0-py3-none-any.whl")
    lock = make_lock(["x"], [dist("x", "1.0", [new, generic])], {linux_target(): ["x"]})
    assert select_artifacts(lock, [linux_target()]).artifacts == (generic,)


def test_no_compatible_artifact_names_dist_target_and_artifacts() -> None:
    lock = make_lock(
        ["torchish"],
        [dist("torchish", "2.0", [TORCHISH_MAC, TORCHISH_SDIST])],
        {linux_target(): ["torchish"]},
    )
    with pytest.raises(NoCompatibleArtifactError) as info:
        select_artifacts(lock, [linux_target()])
    message = str(info.value)
    assert "`torchish==2.0`" in message and "`linux_x86_64-cp311`" in message
    assert TORCHISH_MAC.filename in message and TORCHISH_SDIST.filename in message
    assert info.value.available == (TORCHISH_MAC.filename, TORCHISH_SDIST.filename)
    # With sdists allowed, the sdist is the answer.
    chosen = select_artifacts(lock, [linux_target()], allow_sdists=True)
    assert chosen.artifacts == (TORCHISH_SDIST,)


def test_wheel_preferred_over_sdist_even_when_allowed() -> None:
    lock = ml_lock()
    chosen = select_artifacts(lock, [linux_target()], allow_sdists=True)
    assert TORCHISH_LINUX in chosen.artifacts and TORCHISH_SDIST not in chosen.artifacts


def test_unknown_target_lists_the_known_ones() -> None:
    lock = ml_lock()
    with pytest.raises(UnknownTargetError) as info:
        target_for(lock, "windows-cp311")
    assert "`linux_x86_64-cp311`" in str(info.value) and "`macosx_arm64-cp311`" in str(info.value)
    assert info.value.known == ("linux_x86_64-cp311", "macosx_arm64-cp311")


def test_selection_is_pure_and_deterministic() -> None:
    lock = ml_lock()
    first = select_artifacts(lock, targets_for(lock, ["macosx_arm64-cp311", "linux_x86_64-cp311"]))
    second = select_artifacts(lock, targets_for(lock, ["linux_x86_64-cp311", "macosx_arm64-cp311"]))
    assert first.artifacts == second.artifacts
