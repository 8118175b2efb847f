"""`generate-lockfiles` gives the resolves in `[fastpex].resolves` to fastpex and leaves every other
python resolve with the python backend: the real goal rule and both backends' planning rules, with
the two lock generators replaced by ones that only say who was asked."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from pants.backend.python.goals import lockfile as python_lockfile
from pants.backend.python.goals.lockfile import (
    GeneratePythonLockfile,
    KnownPythonUserResolveNamesRequest,
    RequestedPythonUserResolveNames,
)
from pants.backend.python.target_types import PythonRequirementTarget
from pants.core.goals import generate_lockfiles
from pants.core.goals.generate_lockfiles import (
    AmbiguousResolveNamesError,
    GenerateLockfile,
    GenerateLockfileResult,
    GenerateLockfilesGoal,
    KnownUserResolveNames,
    KnownUserResolveNamesRequest,
    RequestedUserResolveNames,
)
from pants.engine.fs import CreateDigest, Digest, FileContent
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.unions import UnionRule
from pants.testutil.rule_runner import RuleRunner

from fastpex.pants.goals import claim_resolves, lockfiles
from fastpex.pants.goals.claim_resolves import hand_over
from fastpex.pants.goals.lockfiles import (
    GenerateFastpexLockfile,
    KnownFastpexResolveNamesRequest,
    RequestedFastpexResolveNames,
)


async def _written_by(who: str, request: GenerateLockfile) -> GenerateLockfileResult:
    digest = await Get(Digest, CreateDigest([FileContent(request.lockfile_dest, who.encode())]))
    return GenerateLockfileResult(digest, request.resolve_name, request.lockfile_dest, diff=None)


@rule
async def fake_fastpex_lock(request: GenerateFastpexLockfile) -> GenerateLockfileResult:
    return await _written_by("fastpex", request)


@rule
async def fake_pex_lock(request: GeneratePythonLockfile) -> GenerateLockfileResult:
    return await _written_by("pex", request)


@pytest.fixture
def rule_runner() -> RuleRunner:
    claim_resolves.install(RequestedFastpexResolveNames)
    runner = RuleRunner(
        rules=[
            *generate_lockfiles.rules(),
            *collect_rules(
                {
                    "python_resolves": python_lockfile.determine_python_user_resolves,
                    "python_requests": python_lockfile.setup_user_lockfile_requests,
                    "python_wrap": python_lockfile.wrap_python_lockfile_request,
                    "fastpex_resolves": lockfiles.determine_fastpex_resolves,
                    "fastpex_requests": lockfiles.setup_fastpex_lockfile_requests,
                }
            ),
            UnionRule(KnownUserResolveNamesRequest, KnownPythonUserResolveNamesRequest),
            UnionRule(RequestedUserResolveNames, RequestedPythonUserResolveNames),
            UnionRule(GenerateLockfile, GeneratePythonLockfile),
            UnionRule(KnownUserResolveNamesRequest, KnownFastpexResolveNamesRequest),
            UnionRule(RequestedUserResolveNames, RequestedFastpexResolveNames),
            UnionRule(GenerateLockfile, GenerateFastpexLockfile),
            fake_fastpex_lock,
            fake_pex_lock,
        ],
        target_types=[PythonRequirementTarget],
    )
    runner.write_files(
        {
            "BUILD": dedent(
                """\
                python_requirement(name="torch", requirements=["torch"], resolve="claimed")
                python_requirement(name="six", requirements=["six"], resolve="other")
                """
            )
        }
    )
    return runner


def run_goal(rule_runner: RuleRunner, *args: str) -> dict:
    result = rule_runner.run_goal_rule(
        GenerateLockfilesGoal,
        global_args=[
            "--python-enable-resolves",
            "--python-resolves={'claimed': 'claimed.lock', 'other': 'other.lock'}",
            "--fastpex-resolves=['claimed']",
        ],
        args=args,
    )
    assert result.exit_code == 0
    root = Path(rule_runner.build_root)
    return {name: (root / name).read_text() for name in ("claimed.lock", "other.lock") if (root / name).exists()}


def test_claimed_resolve_goes_to_fastpex(rule_runner: RuleRunner) -> None:
    assert run_goal(rule_runner, "--resolve=claimed") == {"claimed.lock": "fastpex"}


def test_unclaimed_resolve_stays_with_the_python_backend(rule_runner: RuleRunner) -> None:
    assert run_goal(rule_runner, "--resolve=other") == {"other.lock": "pex"}


def test_all_resolves(rule_runner: RuleRunner) -> None:
    assert run_goal(rule_runner, "--resolve=claimed", "--resolve=other") == {
        "claimed.lock": "fastpex",
        "other.lock": "pex",
    }


def test_python_backend_generating_nothing(rule_runner: RuleRunner) -> None:
    # The documented setup: the python backend generates no lockfiles; fastpex still does.
    assert run_goal(
        rule_runner, "--python-no-resolves-generate-lockfiles", "--resolve=claimed", "--resolve=other"
    ) == {"claimed.lock": "fastpex"}


def test_hand_over() -> None:
    python = KnownUserResolveNames(("a", "b", "c"), "[python].resolves", RequestedPythonUserResolveNames)
    fastpex = KnownUserResolveNames(("b",), "[fastpex].resolves", RequestedFastpexResolveNames)
    assert hand_over([python, fastpex], RequestedFastpexResolveNames) == [
        fastpex,
        KnownUserResolveNames(("a", "c"), "[python].resolves", RequestedPythonUserResolveNames),
    ]
    # Without the hand-over, Pants refuses the name both backends list.
    with pytest.raises(AmbiguousResolveNamesError):
        generate_lockfiles._check_ambiguous_resolve_names([python, fastpex])
