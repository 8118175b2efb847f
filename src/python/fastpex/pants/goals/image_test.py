"""The `fastpex image` / `image-base` command lines a `fastpex_image` turns into, field by field,
and the processes `pants package` runs for it through the real engine (the tool process and the
interpreter lookup replaced by stand-ins that record what they were asked)."""

from __future__ import annotations

from textwrap import dedent
from typing import Dict, List, Tuple

import pytest
from pants.backend.python.target_types import PythonRequirementTarget, PythonSourcesGeneratorTarget
from pants.core.goals.package import BuiltPackage
from pants.engine.addresses import Address, Addresses
from pants.engine.fs import Digest, DigestContents
from pants.engine.rules import rule
from pants.engine.target import DependenciesRequest
from pants.testutil.rule_runner import QueryRule, RuleRunner

from fastpex.pants.goals import image, package
from fastpex.pants.goals.image import (
    BASE_DIR,
    FastpexImageBase,
    FastpexImageError,
    FastpexImageFieldSet,
    ImagePython,
    ImagePythonRequest,
    looks_like_registry_reference,
)
from fastpex.pants.goals.package import SOURCES_DIR, FastpexBinaryFieldSet, FastpexBuildInputs
from fastpex.pants.goals.testutil import (
    LOCK,
    LOCK_AND_SOURCES,
    LOCK_ONLY,
    build_rule_runner,
    configure,
    digest_texts,
    entry,
    expect_args,
    recorded,
)
from fastpex.pants.target_types import FastpexBinary, FastpexImage, FastpexImageDependenciesField, FastpexPythonBase

FAKE_PYTHON = "/opt/python/3.11/bin/python3.11"
DIGEST = "sha256:" + "ab" * 32
REGISTRY_BASE = f"127.0.0.1:5000/python@{DIGEST}"


@rule
async def stand_in_python(request: ImagePythonRequest) -> ImagePython:
    assert request.constraints == ("CPython==3.11.*",), request
    return ImagePython(FAKE_PYTHON, "f" * 64)


def image_rules() -> List:
    return [r for r in image.rules() if getattr(r, "func", None) is not image.find_image_python]


@pytest.fixture(scope="module")
def rule_runner() -> RuleRunner:
    return build_rule_runner(
        [
            *image_rules(),
            stand_in_python,
            QueryRule(BuiltPackage, [FastpexImageFieldSet]),
            QueryRule(FastpexImageBase, [image.FastpexPythonBaseRequest]),
            QueryRule(Addresses, [DependenciesRequest]),
        ],
        [FastpexBinary, FastpexImage, FastpexPythonBase, PythonSourcesGeneratorTarget, PythonRequirementTarget],
        {
            "3rdparty/BUILD": 'python_requirement(name="torch", requirements=["torch==2.5.1"], resolve="examples")\n',
            "src/app/main.py": "import torch\n",
            "src/app/BUILD": dedent(
                f"""\
                python_sources(resolve="examples", dependencies=["3rdparty:torch"])
                fastpex_binary(name="bin", entry_point="app.main:main", resolve="examples", dependencies=[":app"], args=["--port", "80"])
                fastpex_python_base(name="py", interpreter_constraints=["CPython==3.11.*"])
                fastpex_image(name="img", binary=":bin", base=":py", image_tags=["1.0", "latest"])
                fastpex_image(name="pulled", binary=":bin", base="{REGISTRY_BASE}")
                fastpex_image(name="not-a-binary", binary=":app", base=":py")
                fastpex_image(name="not-a-base", binary=":bin", base=":bin")
                """
            ),
        },
    )


def field_sets(rule_runner: RuleRunner, fields: str) -> Tuple[FastpexImageFieldSet, FastpexBinaryFieldSet]:
    rule_runner.write_files(
        {
            "src/adhoc/BUILD": dedent(
                f"""\
                fastpex_binary(name="bin", entry_point="app.main", resolve="examples")
                fastpex_image(name="t", binary=":bin", {fields})
                """
            )
        }
    )
    tgt = rule_runner.get_target(Address("src/adhoc", target_name="t"))
    binary = rule_runner.get_target(Address("src/adhoc", target_name="bin"))
    return FastpexImageFieldSet.create(tgt), FastpexBinaryFieldSet.create(binary)


INPUTS = FastpexBuildInputs(entry("app.main"), ("a",), LOCK_ONLY, LOCK_AND_SOURCES, FAKE_PYTHON)


def test_defaults(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs, binary = field_sets(rule_runner, 'base=":py"')
    assert fs.registry_base() is None
    assert fs.dependencies_argv(binary, fastpex, python_setup, ["b", "a"], "oci:B:base", FAKE_PYTHON) == (
        "image", "--lock", LOCK, "--base", "oci:B:base", "--output", "src.adhoc/t",
        "--compress-level", "6",
        "--requirement", "a", "--requirement", "b",
        "--interpreter-constraint", "CPython==3.11.*",
        "--python", FAKE_PYTHON,
    )  # fmt: skip
    assert fs.application_argv(binary, INPUTS) == (
        "--sources", SOURCES_DIR, "--tag", "latest", "--entry-point", "app.main",
    )  # fmt: skip


@pytest.mark.parametrize(
    "fields, deps_args, app_args",
    [
        ('output_path="images/app"', {"--output": "images/app"}, {}),
        ("compression_level=1", {"--compress-level": "1"}, {}),
        ("large_layer_mb=64", {"--large-layer-mb": "64"}, {}),
        ("small_layer_groups=8", {"--small-layer-groups": "8"}, {}),
        ('image_tags=["2.0", "stable"]', {}, {"--tag": "2.0"}),
        ("image_tags=[]", {}, {"--tag": "latest"}),
        ('image_env={"B": "2", "A": "x=1"}', {"--env": None}, {"--env": ["A=x=1", "B=2"]}),
        ('labels={"org.opencontainers.image.source": "repo"}', {}, {"--label": "org.opencontainers.image.source=repo"}),
        ('workdir="/srv"', {}, {"--workdir": "/srv"}),
        ('user="1000:1000"', {}, {"--user": "1000:1000"}),
    ],
)
def test_each_field(
    rule_runner: RuleRunner, fields: str, deps_args: Dict[str, object], app_args: Dict[str, object]
) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs, binary = field_sets(rule_runner, f'base=":py", {fields}')
    expect_args(fs.dependencies_argv(binary, fastpex, python_setup, ["a"], "oci:B:base", None), deps_args)  # type: ignore[arg-type]
    expect_args(fs.application_argv(binary, INPUTS), app_args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options, deps_args",
    [
        (["--fastpex-compression-level=2"], {"--compress-level": "2"}),
        (["--fastpex-fetch-jobs=5"], {"--fetch-jobs": "5"}),
        (["--fastpex-offline"], {"--offline": True}),
        (["--fastpex-insecure-registries=['reg.internal:5000', 'b:80']"], {"--insecure-registry": ["reg.internal:5000", "b:80"]}),
    ],
)
def test_each_option(rule_runner: RuleRunner, options: List[str], deps_args: Dict[str, object]) -> None:
    fastpex, python_setup = configure(rule_runner, *options)
    fs, binary = field_sets(rule_runner, 'base=":py"')
    expect_args(fs.dependencies_argv(binary, fastpex, python_setup, ["a"], "oci:B:base", None), deps_args)  # type: ignore[arg-type]


def test_the_binary_gives_targets_constraints_script_and_args(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner)
    rule_runner.write_files(
        {
            "src/adhoc/BUILD": dedent(
                """\
                fastpex_binary(name="bin", script="gunicorn", resolve="examples", args=["-w", "2"],
                    targets=["linux_x86_64-cp311", "linux_aarch64-cp311"], interpreter_constraints=["CPython>=3.11,<3.12"])
                fastpex_image(name="t", binary=":bin", base=":py")
                """
            )
        }
    )
    fs = FastpexImageFieldSet.create(rule_runner.get_target(Address("src/adhoc", target_name="t")))
    binary = FastpexBinaryFieldSet.create(rule_runner.get_target(Address("src/adhoc", target_name="bin")))
    deps = fs.dependencies_argv(binary, fastpex, python_setup, ["a"], "oci:B:base", None)
    expect_args(deps, {"--target": ["linux_x86_64-cp311", "linux_aarch64-cp311"], "--interpreter-constraint": ["CPython>=3.11,<3.12"]})
    no_entry = FastpexBuildInputs(package.ResolvedPexEntryPoint(None, file_name_used=False), (), LOCK_ONLY, LOCK_AND_SOURCES)
    expect_args(fs.application_argv(binary, no_entry), {"--script": "gunicorn", "--arg": ["-w", "2"], "--entry-point": None})


def test_processes_split_like_the_packed_layout(rule_runner: RuleRunner) -> None:
    fastpex, python_setup = configure(rule_runner)
    fs, binary = field_sets(rule_runner, 'base=":py"')
    base = FastpexImageBase("oci:B:base")
    deps_in, app_in = Digest("3" * 64, 3), Digest("4" * 64, 4)
    dependencies, application = fs.image_processes(binary, INPUTS, base, deps_in, app_in, fastpex, python_setup)
    deps = fs.dependencies_argv(binary, fastpex, python_setup, INPUTS.requirements, "oci:B:base", FAKE_PYTHON)
    assert dependencies.argv == deps + ("--part", "deps")
    assert application.argv == deps + fs.application_argv(binary, INPUTS) + ("--part", "app")
    assert (dependencies.input_digest, application.input_digest) == (deps_in, app_in)
    for process in (dependencies, application):
        assert (process.output_files, process.output_directories) == ((), ("src.adhoc/t",))


@pytest.mark.parametrize(
    "base",
    [
        "127.0.0.1:5000/python:3.11",
        "registry.example.com/team/python",
        "localhost/python:3.11",
        "reg.example.com/python@sha256:abc",
        "reg.example.com/python@sha512:" + "a" * 128,
    ],
)
def test_a_registry_base_must_be_pinned_by_digest(rule_runner: RuleRunner, base: str) -> None:
    configure(rule_runner)
    fs, _ = field_sets(rule_runner, f'base="{base}"')
    with pytest.raises(FastpexImageError, match="not pinned by digest"):
        fs.registry_base()


@pytest.mark.parametrize("base", [REGISTRY_BASE, f"reg.example.com/team/python:3.11@{DIGEST}"])
def test_a_pinned_registry_base(rule_runner: RuleRunner, base: str) -> None:
    configure(rule_runner)
    fs, _ = field_sets(rule_runner, f'base="{base}"')
    assert fs.registry_base() == base


@pytest.mark.parametrize("address", [":py", "src/app:py", "//src/app:py", "src/app"])
def test_addresses_are_not_registry_references(address: str) -> None:
    assert not looks_like_registry_reference(address)


def test_invalid_tag(rule_runner: RuleRunner) -> None:
    configure(rule_runner)
    fs, _ = field_sets(rule_runner, 'base=":py", image_tags=["-bad"]')
    with pytest.raises(FastpexImageError, match="`-bad`, which is not a valid tag"):
        fs.layout_tag()


def run_package(rule_runner: RuleRunner, name: str) -> Dict[str, str]:
    tgt = rule_runner.get_target(Address("src/app", target_name=name))
    built = rule_runner.request(BuiltPackage, [FastpexImageFieldSet.create(tgt)])
    assert [a.relpath for a in built.artifacts] == [f"src.app/{name}"]
    return digest_texts(rule_runner, built.digest)


def test_package_on_a_python_base_through_the_engine(rule_runner: RuleRunner) -> None:
    configure(rule_runner)
    outputs = run_package(rule_runner, "img")
    assert sorted(outputs) == ["src.app/img/app", "src.app/img/deps"]
    deps_argv, deps_inputs = recorded(outputs["src.app/img/deps"])
    app_argv, app_inputs = recorded(outputs["src.app/img/app"])
    # The base was built by its own process, from the interpreter found for its constraints.
    base_record = f"{BASE_DIR}/all"
    assert deps_inputs == [base_record, LOCK]
    assert app_inputs == [base_record, LOCK, f"{SOURCES_DIR}/app/main.py"]
    assert deps_argv[:5] == ["image", "--lock", LOCK, "--base", f"oci:{BASE_DIR}:base"]
    assert deps_argv[-4:] == ["--python", FAKE_PYTHON, "--part", "deps"]
    assert "--sources" not in deps_argv and "--tag" not in deps_argv
    assert app_argv[-2:] == ["--part", "app"]
    assert app_argv[app_argv.index("--tag") + 1] == "1.0"
    assert app_argv[app_argv.index("--entry-point") + 1] == "app.main:main"
    assert [app_argv[i + 1] for i, a in enumerate(app_argv) if a == "--arg"] == ["--port", "80"]


def test_the_base_process(rule_runner: RuleRunner) -> None:
    configure(rule_runner)
    base = rule_runner.request(FastpexImageBase, [image.FastpexPythonBaseRequest(Address("src/app", target_name="py"))])
    assert base.argument == f"oci:{BASE_DIR}:base"
    (record,) = rule_runner.request(DigestContents, [base.digest])
    argv, inputs = recorded(record.content.decode())
    assert argv == ["image-base", "--python", FAKE_PYTHON, "--output", BASE_DIR, "--tag", "base"]
    assert inputs == []


def test_package_on_a_registry_base_through_the_engine(rule_runner: RuleRunner) -> None:
    configure(rule_runner)
    outputs = run_package(rule_runner, "pulled")
    deps_argv, deps_inputs = recorded(outputs["src.app/pulled/deps"])
    assert deps_inputs == [LOCK]
    assert deps_argv[deps_argv.index("--base") + 1] == REGISTRY_BASE


@pytest.mark.parametrize(
    "name, message",
    [
        ("not-a-binary", "must name a `fastpex_binary`"),
        ("not-a-base", "is a `fastpex_binary`, not a `fastpex_python_base`"),
    ],
)
def test_refused_through_the_engine(rule_runner: RuleRunner, name: str, message: str) -> None:
    configure(rule_runner)
    with pytest.raises(Exception, match=message):
        run_package(rule_runner, name)


@pytest.mark.parametrize(
    "name, expected",
    [("img", ["src/app:bin", "src/app:py"]), ("pulled", ["src/app:bin"])],
)
def test_the_binary_and_a_python_base_are_dependencies(rule_runner: RuleRunner, name: str, expected: List[str]) -> None:
    configure(rule_runner)
    tgt = rule_runner.get_target(Address("src/app", target_name=name))
    addresses = rule_runner.request(Addresses, [DependenciesRequest(tgt[FastpexImageDependenciesField])])
    assert sorted(a.spec for a in addresses) == expected


def test_every_field_has_help_and_its_own_alias() -> None:
    for target in (FastpexImage, FastpexPythonBase):
        assert target.help
        for field in target.core_fields:
            assert field.help, (target.alias, field.alias)
        # A field may not shadow another, e.g. Pants' own `tags` on every target.
        aliases = [field.alias for field in target.core_fields]
        assert len(aliases) == len(set(aliases)), aliases
