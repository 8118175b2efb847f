"""The `fastpex lock` command line for each `[fastpex]` option, the requests made per resolve, and
the lockfile `generate-lockfiles` writes, through the real engine with a recording process."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent
from typing import Dict, List, Tuple

import pytest
from pants.backend.python.subsystems.repos import PythonRepos
from pants.backend.python.target_types import PythonRequirementTarget
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.core.goals.generate_lockfiles import (
    GenerateLockfileResult,
    KnownUserResolveNames,
    UserGenerateLockfiles,
)
from pants.engine.process import Process
from pants.engine.rules import rule
from pants.testutil.rule_runner import QueryRule, RuleRunner

from fastpex.pants.goals import lockfiles
from fastpex.pants.goals.lockfiles import (
    EXISTING_LOCK,
    LOCK_OUTPUT,
    PYLOCK_OUTPUT,
    GenerateFastpexLockfile,
    KnownFastpexResolveNamesRequest,
    RequestedFastpexResolveNames,
    lock_argv,
    pylock_path,
)
from fastpex.pants.goals.testutil import Expected, digest_texts, expect_args, goal_rule_runner, recording_process
from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.util_rules.tool import FastpexProcess

REQUEST = GenerateFastpexLockfile(
    resolve_name="ml",
    lockfile_dest="3rdparty/ml.lock",
    diff=False,
    requirements=("numpy>=2", "torch==2.5.1"),
    interpreter_constraints=InterpreterConstraints(["CPython==3.11.*"]),
    targets=("linux_x86_64-cp311", "macosx_arm64-cp311"),
)

# Stands in for the tool PEX: the lock body is the argv it was given, the pylock a fixed text.
_RECORD_ARGV = dedent(
    """\
    mkdir -p __fastpex_out
    printf '%s\\n' "$@" > __fastpex_out/lock.json
    if [ -f __fastpex_in/existing.lock ]; then echo existing >> __fastpex_out/lock.json; fi
    echo 'lock-version = "1.0"' > __fastpex_out/pylock.toml
    """
)


@rule
async def record_lock_argv(request: FastpexProcess) -> Process:
    return recording_process(_RECORD_ARGV, request)


@pytest.fixture(scope="module")
def rule_runner() -> RuleRunner:
    return goal_rule_runner(
        [
            *lockfiles.rules(),
            record_lock_argv,
            QueryRule(PythonRepos, []),
            QueryRule(KnownUserResolveNames, [KnownFastpexResolveNamesRequest]),
            QueryRule(UserGenerateLockfiles, [RequestedFastpexResolveNames]),
            QueryRule(GenerateLockfileResult, [GenerateFastpexLockfile]),
        ],
        [PythonRequirementTarget],
        {
            "3rdparty/BUILD": dedent(
                """\
                python_requirement(name="torch", requirements=["torch==2.5.1"], resolve="ml")
                python_requirement(name="numpy", requirements=["numpy>=2"], resolve="ml")
                python_requirement(name="cv", requirements=["opencv-python"], resolve="cv")
                """
            ),
        },
    )


def configure(rule_runner: RuleRunner, *options: str) -> Tuple[FastpexSubsystem, PythonRepos]:
    rule_runner.set_options(
        [
            "--python-enable-resolves",
            "--python-resolves={'ml': '3rdparty/ml.lock', 'cv': '3rdparty/cv.lock', 'empty': 'e.lock'}",
            "--python-interpreter-constraints=['CPython==3.11.*']",
            "--python-resolves-to-interpreter-constraints={'cv': ['CPython==3.12.*']}",
            "--python-repos-indexes=['https://pypi.org/simple/']",
            *options,
        ]
    )
    return rule_runner.request(FastpexSubsystem, []), rule_runner.request(PythonRepos, [])


def test_defaults(rule_runner: RuleRunner) -> None:
    fastpex, repos = configure(rule_runner)
    assert lock_argv(REQUEST, fastpex, repos, has_existing_lock=False) == (
        "lock", "--resolve", "ml", "--output", LOCK_OUTPUT, "--pylock-output", PYLOCK_OUTPUT,
        "--no-header", "--metadata-jobs", "16",
        "--requirement", "numpy>=2", "--requirement", "torch==2.5.1",
        "--target", "linux_x86_64-cp311", "--target", "macosx_arm64-cp311",
        "--interpreter-constraint", "CPython==3.11.*",
        "--index", "index0=https://pypi.org/simple/",
    )  # fmt: skip


@pytest.mark.parametrize(
    "options, existing, expected",
    [
        (["--fastpex-metadata-jobs=4"], False, {"--metadata-jobs": "4"}),
        (
            ["--fastpex-indexes=['https://a/simple', 'https://b/simple']"],
            False,
            {"--index": ["index0=https://a/simple", "index1=https://b/simple"]},
        ),
        (
            ["--fastpex-indexes=['https://a/simple', 'https://b/simple']", "--fastpex-index-names=['pypi']"],
            False,
            {"--index": ["pypi=https://a/simple", "index1=https://b/simple"]},
        ),
        (["--python-repos-find-links=['/wheels']"], False, {"--find-links": ["/wheels"]}),
        (
            ["--python-repos-find-links=['/wheels']", "--fastpex-find-links=['/mine']"],
            False,
            {"--find-links": ["/mine"]},
        ),
        (
            ["--fastpex-routes=['torch=cuda@linux_*', 'jax=pypi']"],
            False,
            {"--route": ["torch=cuda@linux_*", "jax=pypi"]},
        ),
        (["--fastpex-upload-cutoff=2025-10-01"], False, {"--upload-cutoff": "2025-10-01"}),
        ([], False, {"--upload-cutoff": None, "--allow-sdists": False, "--no-reuse": False}),
        (["--fastpex-allow-sdists"], False, {"--allow-sdists": True}),
        (["--no-fastpex-reuse-unchanged-locks"], False, {"--no-reuse": True}),
        ([], True, {"--hint-lock": EXISTING_LOCK, "--existing-lock": None}),
        (
            ["--fastpex-upgrade=['torch', 'numpy']"],
            True,
            {"--hint-lock": EXISTING_LOCK, "--existing-lock": EXISTING_LOCK, "--upgrade": ["torch", "numpy"]},
        ),
        # No lockfile yet: nothing to keep, but the projects are still named.
        (["--fastpex-upgrade=['torch']"], False, {"--hint-lock": None, "--existing-lock": None, "--upgrade": ["torch"]}),
    ],
)
def test_each_option(
    rule_runner: RuleRunner, options: List[str], existing: bool, expected: Dict[str, Expected]
) -> None:
    fastpex, repos = configure(rule_runner, *options)
    expect_args(lock_argv(REQUEST, fastpex, repos, has_existing_lock=existing), expected)


def test_requests_per_resolve(rule_runner: RuleRunner) -> None:
    configure(
        rule_runner,
        "--fastpex-resolves=['ml', 'cv']",
        "--fastpex-targets=['linux_x86_64-cp311']",
        "--fastpex-resolve-targets={'cv': ['linux_aarch64-cp312']}",
    )
    known = rule_runner.request(KnownUserResolveNames, [KnownFastpexResolveNamesRequest()])
    assert known.names == ("ml", "cv")
    assert known.requested_resolve_names_cls is RequestedFastpexResolveNames
    requests = rule_runner.request(UserGenerateLockfiles, [RequestedFastpexResolveNames(["ml", "cv"])])
    assert list(requests) == [
        GenerateFastpexLockfile(
            resolve_name="cv",
            lockfile_dest="3rdparty/cv.lock",
            diff=False,
            requirements=("opencv-python",),
            interpreter_constraints=InterpreterConstraints(["CPython==3.12.*"]),
            targets=("linux_aarch64-cp312",),
        ),
        GenerateFastpexLockfile(
            resolve_name="ml",
            lockfile_dest="3rdparty/ml.lock",
            diff=False,
            requirements=("numpy>=2", "torch==2.5.1"),
            interpreter_constraints=InterpreterConstraints(["CPython==3.11.*"]),
            targets=("linux_x86_64-cp311",),
        ),
    ]


def test_unknown_resolve_is_refused(rule_runner: RuleRunner) -> None:
    configure(rule_runner, "--fastpex-resolves=['ml', 'nope']")
    with pytest.raises(Exception, match="FastpexConfigurationError: `\\[fastpex\\].resolves` lists \\['nope'\\], which `\\[python\\].resolves` does not"):
        rule_runner.request(KnownUserResolveNames, [KnownFastpexResolveNamesRequest()])


def test_resolve_without_requirements_is_refused(rule_runner: RuleRunner) -> None:
    configure(rule_runner, "--fastpex-resolves=['empty']")
    with pytest.raises(Exception, match="FastpexConfigurationError: The resolve `empty` has no `python_requirement` targets"):
        rule_runner.request(UserGenerateLockfiles, [RequestedFastpexResolveNames(["empty"])])


def generate(rule_runner: RuleRunner) -> Dict[str, str]:
    result = rule_runner.request(GenerateLockfileResult, [REQUEST])
    assert (result.resolve_name, result.path) == ("ml", "3rdparty/ml.lock")
    return digest_texts(rule_runner, result.digest)


def test_lockfile_through_the_engine(rule_runner: RuleRunner) -> None:
    configure(rule_runner, "--generate-lockfiles-custom-command=make locks")
    outputs = generate(rule_runner)
    assert sorted(outputs) == ["3rdparty/ml.lock", pylock_path("3rdparty/ml.lock", "ml")]
    assert outputs["3rdparty/pylock.ml.toml"] == 'lock-version = "1.0"\n'
    header = [line[3:] for line in outputs["3rdparty/ml.lock"].splitlines() if line.startswith("// ")]
    body = [line for line in outputs["3rdparty/ml.lock"].splitlines() if not line.startswith("//")]
    # Pants' header, from the request: what Pants' python goals check the resolve against.
    assert "   make locks" in header
    metadata = json.loads("\n".join(header[header.index("--- BEGIN PANTS LOCKFILE METADATA: DO NOT EDIT OR REMOVE ---") + 1 : -1]))
    assert metadata["valid_for_interpreter_constraints"] == ["CPython==3.11.*"]
    assert metadata["generated_with_requirements"] == ["numpy>=2", "torch==2.5.1"]
    assert metadata["manylinux"] == "manylinux2014"
    # The body is the tool's output, unchanged: here, the argv it ran with.
    fastpex, repos = configure(rule_runner, "--generate-lockfiles-custom-command=make locks")
    assert [line for line in body if line] == list(lock_argv(REQUEST, fastpex, repos, has_existing_lock=False))


def test_existing_lockfile_goes_in(rule_runner: RuleRunner) -> None:
    configure(rule_runner)
    rule_runner.write_files({"3rdparty/ml.lock": "// old header\n{}\n"})
    try:
        body = generate(rule_runner)["3rdparty/ml.lock"].splitlines()
    finally:
        Path(rule_runner.build_root, "3rdparty/ml.lock").unlink()
    assert body[-1] == "existing"
    assert "--hint-lock" in body
