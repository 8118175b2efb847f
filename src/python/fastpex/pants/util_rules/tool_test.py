"""The tool PEX carries the whole core, and its process sees what `[fastpex]` says it should."""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Dict, List, Set

import pytest
from pants.backend.python.util_rules.pex import PexRequest, Script, VenvPex, VenvPexProcess
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import EMPTY_DIGEST
from pants.engine.process import Process, ProcessCacheScope
from pants.engine.rules import rule
from pants.testutil.rule_runner import MockGet, QueryRule, RuleRunner, run_rule_with_mocks
from pants.util.frozendict import FrozenDict

import fastpex
from fastpex.pants.subsystems.fastpex import PROXY_VARIABLES, FastpexSubsystem, with_both_proxy_spellings
from fastpex.pants.util_rules.tool import (
    NAMED_CACHE,
    NAMED_CACHE_PATH,
    FastpexProcess,
    FastpexToolSources,
    core_files,
    setup_fastpex_process,
)
from fastpex.pants.util_rules.tool import rules as tool_rules


def tool_modules(package: Path) -> Set[str]:
    """An independent walk: every `.py` below `core/` and beside it, minus tests and conftest."""
    found = {f"fastpex/{name}" for name in os.listdir(package) if name.endswith(".py")}
    for directory, _, names in os.walk(package / "core"):
        for name in names:
            if name.endswith(".py") and not name.endswith("_test.py") and name != "conftest.py":
                found.add("fastpex/" + Path(directory, name).relative_to(package).as_posix())
    return found


def test_core_files_include_every_core_module() -> None:
    # Under `pants test` the core is in the sandbox as files (`fastpex:all_sources`).
    package = Path(fastpex.__file__).parent
    expected = tool_modules(package)
    assert {"fastpex/__main__.py", "fastpex/versions.py", "fastpex/core/cli/main.py"} <= expected
    # At least one module two packages deep, so a one-level glob would fail here.
    assert any(path.count("/") >= 3 for path in expected)
    files = core_files(package)
    assert {fc.path for fc in files} == expected
    for fc in files:
        assert fc.content == (package.parent / fc.path).read_bytes()


def test_core_files_recurse_into_every_subpackage(tmp_path: Path) -> None:
    package = tmp_path / "fastpex"
    for module in [
        "__init__.py",
        "__main__.py",
        "core/__init__.py",
        "core/model.py",
        "core/model_test.py",
        "core/conftest.py",
        "core/lock/resolve.py",
        "core/lock/deep/er/most.py",
        "core/testdata/hostile/corpus.txt",
        "pants/register.py",
    ]:
        (package / module).parent.mkdir(parents=True, exist_ok=True)
        (package / module).write_text(f"# {module}\n")
    assert [fc.path for fc in core_files(package)] == [
        "fastpex/__init__.py",
        "fastpex/__main__.py",
        "fastpex/core/__init__.py",
        "fastpex/core/lock/deep/er/most.py",
        "fastpex/core/lock/resolve.py",
        "fastpex/core/model.py",
    ]


def stand_in_venv_pex() -> VenvPex:
    """A tool PEX that was never built: what the rules under test pass on is all they see of it."""
    return VenvPex(
        digest=EMPTY_DIGEST,
        append_only_caches=None,
        pex_filename="fastpex.pex",
        pex=Script(PurePath("fastpex.pex")),
        python=Script(PurePath("python")),
        bin=FrozenDict(),
        venv_rel_dir="venv",
    )


@pytest.fixture(scope="module")
def fastpex_subsystem() -> FastpexSubsystem:
    runner = RuleRunner(rules=[*FastpexSubsystem.rules(), QueryRule(FastpexSubsystem, [])])
    runner.set_options(["--fastpex-env-vars=['NETRC', 'PIP_INDEX_URL=https://mirror/simple']"])
    return runner.request(FastpexSubsystem, [])


def test_process(fastpex_subsystem: FastpexSubsystem) -> None:
    venv_pex = stand_in_venv_pex()
    asked_env: List[EnvironmentVarsRequest] = []
    processes: List[VenvPexProcess] = []

    def environment(request: EnvironmentVarsRequest) -> EnvironmentVars:
        asked_env.append(request)
        return EnvironmentVars({"NETRC": "/home/u/.netrc", "PIP_INDEX_URL": "https://mirror/simple"})

    def process(request: VenvPexProcess) -> Process:
        processes.append(request)
        return Process(argv=("true",), description="recorded")

    request = FastpexProcess.create(
        ["lock", "--resolve", "ml"],
        "Lock",
        output_files=["out.json"],
        cache_scope=ProcessCacheScope.PER_SESSION,
        extra_env={"EXTRA": "1"},
    )
    run_rule_with_mocks(
        setup_fastpex_process,
        rule_args=[request, fastpex_subsystem],
        mock_gets=[
            MockGet(FastpexToolSources, (), lambda: FastpexToolSources(EMPTY_DIGEST)),
            MockGet(EnvironmentVars, (EnvironmentVarsRequest,), environment),
            MockGet(VenvPex, (PexRequest,), lambda _: venv_pex),
            MockGet(Process, (VenvPexProcess,), process),
        ],
    )
    assert [tuple(r.requested) for r in asked_env] == [("NETRC", "PIP_INDEX_URL=https://mirror/simple")]
    (venv_process,) = processes
    assert venv_process.argv == ("lock", "--resolve", "ml")
    assert venv_process.output_files == ("out.json",)
    assert venv_process.output_directories is None
    assert venv_process.cache_scope == ProcessCacheScope.PER_SESSION
    assert venv_process.append_only_caches == FrozenDict({NAMED_CACHE: NAMED_CACHE_PATH})
    assert venv_process.extra_env == FrozenDict(
        {
            "NETRC": "/home/u/.netrc",
            "PIP_INDEX_URL": "https://mirror/simple",
            "FASTPEX_CACHE_DIR": NAMED_CACHE_PATH,
            "EXTRA": "1",
        }
    )
    # No PYTHONDONTWRITEBYTECODE: the tool venv's bytecode is kept for the next run.
    assert "PYTHONDONTWRITEBYTECODE" not in venv_process.extra_env


@rule
async def stand_in_tool_pex(request: PexRequest) -> VenvPex:
    return stand_in_venv_pex()


@rule
async def stand_in_venv_pex_process(request: VenvPexProcess) -> Process:
    return Process(argv=request.argv, description=request.description, env=request.extra_env or {})


@pytest.mark.parametrize(
    "options, pants_env, expected",
    [
        # The defaults: the curl/pip spelling alone is enough.
        ([], {"https_proxy": "http://lower:3128", "no_proxy": "corp.example"}, {"https_proxy": "http://lower:3128", "no_proxy": "corp.example"}),
        ([], {"HTTP_PROXY": "http://upper:3128"}, {"HTTP_PROXY": "http://upper:3128"}),
        # Only one spelling listed: the other comes too.
        (["--fastpex-env-vars=['HTTPS_PROXY']"], {"https_proxy": "http://lower:1", "http_proxy": "x"}, {"https_proxy": "http://lower:1"}),
        (["--fastpex-env-vars=['no_proxy']"], {"NO_PROXY": "a,b"}, {"NO_PROXY": "a,b"}),
        # A value set in the option holds for both spellings, over either one in Pants' environment.
        (["--fastpex-env-vars=['HTTPS_PROXY=http://set:1']"], {"https_proxy": "http://env:2"}, {"HTTPS_PROXY": "http://set:1", "https_proxy": "http://set:1"}),
    ],
)
def test_proxy_variables_reach_the_process_in_both_spellings(
    options: List[str], pants_env: Dict[str, str], expected: Dict[str, str]
) -> None:
    """Through the engine: the real `setup_fastpex_process` and Pants' own environment lookup,
    the tool PEX replaced by a stand-in."""
    runner = RuleRunner(
        rules=[
            *tool_rules(),
            stand_in_tool_pex,
            stand_in_venv_pex_process,
            QueryRule(Process, [FastpexProcess]),
        ],
    )
    runner.set_options(options, env=pants_env)
    process = runner.request(Process, [FastpexProcess.create(["lock"], "Lock")])
    proxy_env = {k: v for k, v in process.env.items() if k.upper() in PROXY_VARIABLES}
    assert proxy_env == expected


def test_with_both_proxy_spellings() -> None:
    assert with_both_proxy_spellings(["NETRC", "HTTPS_PROXY", "no_proxy", "X=1"]) == (
        "NETRC", "HTTPS_PROXY", "https_proxy", "no_proxy", "NO_PROXY", "X=1",
    )  # fmt: skip
    assert with_both_proxy_spellings(["HTTP_PROXY=http://p:1"]) == ("HTTP_PROXY=http://p:1", "http_proxy=http://p:1")
    # A spelling listed itself keeps its own entry.
    assert with_both_proxy_spellings(["HTTP_PROXY=http://a:1", "http_proxy"]) == ("HTTP_PROXY=http://a:1", "http_proxy")
