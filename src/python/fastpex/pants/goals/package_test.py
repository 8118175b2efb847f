"""The `fastpex build` command lines a `fastpex_binary` turns into, field by field and option by
option, and the processes `pants package` runs through the real engine."""

from __future__ import annotations

from textwrap import dedent
from typing import Dict, List, Tuple

import pytest
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import (
    PythonRequirementTarget,
    PythonSourcesGeneratorTarget,
    ResolvedPexEntryPoint,
)
from pants.core.goals.package import BuiltPackage
from pants.engine.addresses import Address
from pants.testutil.rule_runner import QueryRule, RuleRunner

from fastpex.pants.goals.package import (
    SOURCES_DIR,
    FastpexBinaryFieldSet,
    FastpexBuildInputs,
    FastpexPackageError,
)
from fastpex.pants.goals.testutil import (
    LOCK,
    LOCK_AND_SOURCES,
    LOCK_ONLY,
    LOCKFILE,
    Expected,
    build_rule_runner,
    digest_texts,
    entry,
    expect_args,
    recorded,
)
from fastpex.pants.goals.testutil import configure as configure_build
from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.target_types import FastpexBinary


@pytest.fixture(scope="module")
def rule_runner() -> RuleRunner:
    return build_rule_runner(
        [QueryRule(BuiltPackage, [FastpexBinaryFieldSet])],
        [FastpexBinary, PythonSourcesGeneratorTarget, PythonRequirementTarget],
        {
            "3rdparty/BUILD": dedent(
                """\
                python_requirement(name="torch", requirements=["torch==2.5.1"], resolve="examples")
                python_requirement(name="numpy", requirements=["numpy>=2"], resolve="examples")
                """
            ),
            "src/app/main.py": "import torch\n",
            "src/app/data.txt": "not a source\n",
            "src/app/BUILD": dedent(
                """\
                python_sources(resolve="examples", dependencies=["3rdparty:torch", "3rdparty:numpy"])
                fastpex_binary(name="bin", entry_point="app.main:main", resolve="examples", dependencies=[":app"])
                fastpex_binary(name="packed", entry_point="app.main:main", resolve="examples", layout="packed", dependencies=[":app"])
                fastpex_binary(name="script", script="gunicorn", resolve="examples")
                fastpex_binary(name="both", entry_point="app.main", script="gunicorn", resolve="examples")
                fastpex_binary(name="dev", entry_point="app.main", resolve="python-default")
                """
            ),
        },
    )


def configure(rule_runner: RuleRunner, *options: str) -> Tuple[FastpexSubsystem, PythonSetup]:
    return configure_build(rule_runner, *options, resolves={"examples": LOCKFILE, "python-default": "default.lock"})


def field_set(rule_runner: RuleRunner, build: str) -> FastpexBinaryFieldSet:
    rule_runner.write_files({"src/adhoc/BUILD": dedent(build)})
    return FastpexBinaryFieldSet.create(rule_runner.get_target(Address("src/adhoc", target_name="t")))


NO_ENTRY = ResolvedPexEntryPoint(None, file_name_used=False)
DEFAULT_DEPS = (
    "build", "--lock", LOCK, "--layout", "zipapp", "--output", "src.adhoc/t.pex",
    "--compress-level", "6",
)  # fmt: skip
DEFAULT_APP = (
    "--sources", SOURCES_DIR, "--inherit-path", "false", "--shebang", "#!/usr/bin/env python3",
)  # fmt: skip


def test_defaults(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs = field_set(rule_runner, 'fastpex_binary(name="t", entry_point="app.main", resolve="examples")')
    assert fs.dependencies_argv(fastpex, python_setup, ["b", "a"]) == (
        *DEFAULT_DEPS,
        "--requirement", "a", "--requirement", "b",
        # The resolve's interpreter constraints when the target sets none.
        "--interpreter-constraint", "CPython==3.11.*",
        "--include-tools",
    )  # fmt: skip
    assert fs.application_argv(entry("app.main")) == (*DEFAULT_APP, "--entry-point", "app.main")


@pytest.mark.parametrize(
    "fields, deps_args, app_args",
    [
        ('output_path="dist/app.pex"', {"--output": "dist/app.pex"}, {}),
        ('layout="packed"', {"--layout": "packed"}, {}),
        ('layout="split"', {"--layout": "split"}, {}),
        ("compression_level=0", {"--compress-level": "0"}, {}),
        ('targets=["linux_x86_64-cp311", "macosx_arm64-cp311"]', {"--target": ["linux_x86_64-cp311", "macosx_arm64-cp311"]}, {}),
        ('interpreter_constraints=["CPython>=3.11,<3.13"]', {"--interpreter-constraint": ["CPython>=3.11,<3.13"]}, {}),
        ('execution_mode="venv"', {"--venv": True}, {}),
        ('execution_mode="zipapp"', {"--venv": False}, {}),
        ("include_tools=False", {"--include-tools": False}, {}),
        ('deps_install="wheels"', {"--deps-install": "wheels"}, {}),
        ('deps_install="preinstalled"', {"--deps-install": None, "--max-install-jobs": None}, {}),
        ("max_install_jobs=0", {"--max-install-jobs": "0"}, {}),
        ('deps_install="wheels", max_install_jobs=-1', {"--deps-install": "wheels", "--max-install-jobs": "-1"}, {}),
        ('inherit_path="prefer"', {}, {"--inherit-path": "prefer"}),
        ('shebang="#!/usr/bin/python3.11"', {}, {"--shebang": "#!/usr/bin/python3.11"}),
        ('env={"B": "2", "A": "x=1"}', {}, {"--inject-env": ["A=x=1", "B=2"]}),
        ('args=["--port", "80"]', {}, {"--inject-arg": ["--port", "80"]}),
        ("strip_pex_env=False", {}, {"--no-strip-pex-env": True}),
        ("strip_pex_env=True", {}, {"--no-strip-pex-env": False}),
    ],
)
def test_each_field(
    rule_runner: RuleRunner, fields: str, deps_args: Dict[str, Expected], app_args: Dict[str, Expected]
) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs = field_set(
        rule_runner,
        f'fastpex_binary(name="t", entry_point="app.main", resolve="examples", {fields})',
    )
    expect_args(fs.dependencies_argv(fastpex, python_setup, ["a"]), deps_args)
    expect_args(fs.application_argv(entry("app.main")), app_args)


def test_script_instead_of_entry_point(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs = field_set(rule_runner, 'fastpex_binary(name="t", script="gunicorn", resolve="examples")')
    fs.checked_resolve(fastpex, python_setup)
    assert fs.application_argv(NO_ENTRY) == (*DEFAULT_APP, "--script", "gunicorn")


@pytest.mark.parametrize(
    "options, deps_args",
    [
        ([], {"--compress-level": "6", "--fetch-jobs": None, "--offline": False}),
        (["--fastpex-compression-level=1"], {"--compress-level": "1"}),
        (["--fastpex-fetch-jobs=12"], {"--fetch-jobs": "12"}),
        (["--fastpex-offline"], {"--offline": True}),
    ],
)
def test_each_option(rule_runner: RuleRunner, options: List[str], deps_args: Dict[str, Expected]) -> None:
    fastpex, python_setup = configure(rule_runner, *options)
    fs = field_set(rule_runner, 'fastpex_binary(name="t", entry_point="app.main", resolve="examples")')
    expect_args(fs.dependencies_argv(fastpex, python_setup, ["a"]), deps_args)


def test_the_interpreter_that_builds_sdists_is_passed_in(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner, "--fastpex-allow-sdists")
    fs = field_set(rule_runner, 'fastpex_binary(name="t", entry_point="app.main", resolve="examples")')
    assert fs.constraints(python_setup) == ("CPython==3.11.*",)
    python = "/usr/bin/python3.11"
    expect_args(fs.dependencies_argv(fastpex, python_setup, ["a"], python), {"--python": python})
    expect_args(fs.dependencies_argv(fastpex, python_setup, ["a"]), {"--python": None})
    inputs = FastpexBuildInputs(entry("app.main"), ("a",), LOCK_ONLY, LOCK_AND_SOURCES, python)
    (only,) = fs.build_processes(inputs, fastpex, python_setup)
    assert only.argv[only.argv.index("--python") + 1] == python


def test_field_overrides_option(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner, "--fastpex-compression-level=1")
    fs = field_set(
        rule_runner,
        'fastpex_binary(name="t", entry_point="app.main", resolve="examples", compression_level=9)',
    )
    expect_args(fs.dependencies_argv(fastpex, python_setup, ["a"]), {"--compress-level": "9"})


def test_processes_per_layout(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner)
    inputs = FastpexBuildInputs(entry("app.main"), ("a",), LOCK_ONLY, LOCK_AND_SOURCES)
    zipapp = field_set(rule_runner, 'fastpex_binary(name="t", entry_point="app.main", resolve="examples")')
    (only,) = zipapp.build_processes(inputs, fastpex, python_setup)
    deps = zipapp.dependencies_argv(fastpex, python_setup, ["a"])
    app = zipapp.application_argv(inputs.entry_point)
    assert only.argv == deps + app
    assert (only.input_digest, only.output_files, only.output_directories) == (
        LOCK_AND_SOURCES,
        ("src.adhoc/t.pex",),
        (),
    )

    packed = field_set(
        rule_runner,
        'fastpex_binary(name="t", entry_point="app.main", resolve="examples", layout="packed")',
    )
    dependencies, application = packed.build_processes(inputs, fastpex, python_setup)
    deps = packed.dependencies_argv(fastpex, python_setup, ["a"])
    assert dependencies.argv == deps + ("--part", "deps")
    assert application.argv == deps + app + ("--part", "app")
    # The dependencies part never sees the sources: a source change replays it from the cache.
    assert dependencies.input_digest == LOCK_ONLY
    assert application.input_digest == LOCK_AND_SOURCES
    for process in (dependencies, application):
        assert (process.output_files, process.output_directories) == ((), ("src.adhoc/t.pex",))


@pytest.mark.parametrize(
    "name, message",
    [
        ("dev", "uses the resolve `python-default`, whose lockfile fastpex does not manage"),
        ("both", "sets both `entry_point` and `script`"),
    ],
)
def test_refused(rule_runner: RuleRunner, name: str, message: str) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs = FastpexBinaryFieldSet.create(rule_runner.get_target(Address("src/app", target_name=name)))
    with pytest.raises(FastpexPackageError, match=message):
        fs.checked_resolve(fastpex, python_setup)


def run_package(rule_runner: RuleRunner, name: str) -> Dict[str, str]:
    tgt = rule_runner.get_target(Address("src/app", target_name=name))
    built = rule_runner.request(BuiltPackage, [FastpexBinaryFieldSet.create(tgt)])
    return digest_texts(rule_runner, built.digest)


def test_package_zipapp_through_the_engine(rule_runner: RuleRunner) -> None:
    configure(rule_runner, "--fastpex-fetch-jobs=3")
    outputs = run_package(rule_runner, "bin")
    argv, inputs = recorded(outputs["src.app/bin.pex"])
    assert argv == [
        "build", "--lock", LOCK, "--layout", "zipapp", "--output", "src.app/bin.pex",
        "--compress-level", "6", "--fetch-jobs", "3",
        "--requirement", "numpy>=2", "--requirement", "torch==2.5.1",
        "--interpreter-constraint", "CPython==3.11.*", "--include-tools",
        "--sources", SOURCES_DIR, "--inherit-path", "false", "--shebang", "#!/usr/bin/env python3",
        "--entry-point", "app.main:main",
    ]  # fmt: skip
    # The lockfile and the stripped first-party sources, nothing else.
    assert inputs == [LOCK, f"{SOURCES_DIR}/app/main.py"]


def test_package_packed_through_the_engine(rule_runner: RuleRunner) -> None:
    configure(rule_runner)
    outputs = run_package(rule_runner, "packed")
    assert sorted(outputs) == ["src.app/packed.pex/app", "src.app/packed.pex/deps"]
    deps_argv, deps_inputs = recorded(outputs["src.app/packed.pex/deps"])
    app_argv, app_inputs = recorded(outputs["src.app/packed.pex/app"])
    assert deps_argv[-2:] == ["--part", "deps"] and "--sources" not in deps_argv
    assert app_argv[-2:] == ["--part", "app"] and "--entry-point" in app_argv
    assert deps_inputs == [LOCK]
    assert app_inputs == [LOCK, f"{SOURCES_DIR}/app/main.py"]


def test_package_needs_the_lockfile(rule_runner: RuleRunner) -> None:
    configure(rule_runner, "--python-resolves={'examples': 'missing.lock'}")
    with pytest.raises(Exception, match="run\\s+`pants generate-lockfiles --resolve=examples`"):
        run_package(rule_runner, "bin")
