"""`pants publish` of a `fastpex_image`: one uncached interactive `fastpex push` per tag, which
sees only the environment `[fastpex].publish_env_vars` names (the tool process replaced by a
stand-in that records what it was asked)."""

from __future__ import annotations

from textwrap import dedent
from typing import Tuple

import pytest
from pants.backend.python import target_types_rules
from pants.core.goals.package import BuiltPackage, BuiltPackageArtifact
from pants.core.goals.publish import PublishProcesses
from pants.engine.addresses import Address
from pants.engine.process import InteractiveProcess
from pants.testutil.rule_runner import QueryRule, RuleRunner

from fastpex.pants.goals import publish
from fastpex.pants.goals.image import FastpexImageError
from fastpex.pants.goals.testutil import record_fastpex_argv
from fastpex.pants.goals.publish import FastpexImagePublishFieldSet, PublishFastpexImageRequest
from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.target_types import FastpexBinary, FastpexImage, FastpexPythonBase

ENV = {"DOCKER_CONFIG": "/home/ci/.docker", "HOME": "/home/ci", "REGISTRY_TOKEN": "s3cr3t", "AWS_SECRET_ACCESS_KEY": "k"}


@pytest.fixture
def rule_runner() -> RuleRunner:
    runner = RuleRunner(
        rules=[
            *publish.rules(),
            *target_types_rules.rules(),
            record_fastpex_argv,
            QueryRule(PublishProcesses, [PublishFastpexImageRequest]),
            QueryRule(FastpexSubsystem, []),
        ],
        target_types=[FastpexBinary, FastpexImage, FastpexPythonBase],
    )
    runner.write_files(
        {
            "src/app/BUILD": dedent(
                """\
                fastpex_image(name="img", binary=":bin", base=":py", repository="127.0.0.1:5000/team/app", image_tags=["1.0", "latest"])
                fastpex_image(name="local", binary=":bin", base=":py")
                fastpex_image(name="untagged", binary=":bin", base=":py", repository="127.0.0.1:5000/app", image_tags=[])
                fastpex_image(name="tagged-repo", binary=":bin", base=":py", repository="127.0.0.1:5000/app:1.0")
                fastpex_image(name="no-host", binary=":bin", base=":py", repository="app")
                """
            ),
        }
    )
    return runner


def processes(rule_runner: RuleRunner, name: str, *options: str) -> Tuple[Tuple[str, ...], Tuple[InteractiveProcess, ...]]:
    """The published names and the push processes for `src/app:<name>`'s packaged layout."""
    rule_runner.set_options(list(options), env=ENV)
    field_set = FastpexImagePublishFieldSet.create(rule_runner.get_target(Address("src/app", target_name=name)))
    layout = f"src.app/{name}"
    digest = rule_runner.make_snapshot({f"{layout}/index.json": "{}", f"{layout}/oci-layout": "{}"}).digest
    packages = (BuiltPackage(digest, (BuiltPackageArtifact(layout),)),)
    published = rule_runner.request(PublishProcesses, [PublishFastpexImageRequest(field_set, packages)])
    names = tuple(name for pub in published for name in pub.names)
    return names, tuple(pub.process for pub in published if pub.process is not None)


def test_one_push_per_tag(rule_runner: RuleRunner) -> None:
    names, (first, second) = processes(rule_runner, "img")
    assert names == ("127.0.0.1:5000/team/app:1.0", "127.0.0.1:5000/team/app:latest")
    script_args = 4  # /bin/sh -c SCRIPT fastpex
    assert first.process.argv[script_args:] == (
        "push", "--layout", "src.app/img", "--tag", "1.0", "--to", "127.0.0.1:5000/team/app:1.0",
    )  # fmt: skip
    # Both push the layout's one image (named by the first tag) under their own tag.
    assert second.process.argv[script_args:] == (
        "push", "--layout", "src.app/img", "--tag", "1.0", "--to", "127.0.0.1:5000/team/app:latest",
    )  # fmt: skip
    layout = rule_runner.make_snapshot({"src.app/img/index.json": "{}", "src.app/img/oci-layout": "{}"}).digest
    for interactive in (first, second):
        # The packaged layout is the push's input, in a sandbox: it never reads dist/.
        assert not interactive.run_in_workspace
        assert interactive.process.input_digest == layout


def test_the_push_sees_only_the_environment_it_is_given(rule_runner: RuleRunner) -> None:
    _, (push, _) = processes(rule_runner, "img")
    env = dict(push.process.env)
    assert env["DOCKER_CONFIG"] == "/home/ci/.docker" and env["HOME"] == "/home/ci"
    assert "REGISTRY_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "s3cr3t" not in repr(push)

    _, (push, _) = processes(rule_runner, "img", "--fastpex-publish-env-vars=['REGISTRY_TOKEN', 'EXTRA=1']")
    env = dict(push.process.env)
    assert env["REGISTRY_TOKEN"] == "s3cr3t" and env["EXTRA"] == "1"
    assert "DOCKER_CONFIG" not in env and "HOME" not in env


def test_insecure_registries(rule_runner: RuleRunner) -> None:
    _, (push, _) = processes(rule_runner, "img", "--fastpex-insecure-registries=['reg.lan:5000']")
    argv = push.process.argv
    assert argv[argv.index("--insecure-registry") + 1] == "reg.lan:5000"
    _, (push, _) = processes(rule_runner, "img")
    assert "--insecure-registry" not in push.process.argv


@pytest.mark.parametrize("name, missing", [("local", "repository"), ("untagged", "image_tags")])
def test_skipped_without_repository_or_tags(rule_runner: RuleRunner, name: str, missing: str) -> None:
    rule_runner.set_options([], env=ENV)
    field_set = FastpexImagePublishFieldSet.create(rule_runner.get_target(Address("src/app", target_name=name)))
    published = rule_runner.request(PublishProcesses, [PublishFastpexImageRequest(field_set, ())])
    (only,) = published
    assert only.process is None and f"no `{missing}`" in (only.description or "")


@pytest.mark.parametrize("name", ["tagged-repo", "no-host"])
def test_a_repository_is_host_and_name_only(rule_runner: RuleRunner, name: str) -> None:
    field_set = FastpexImagePublishFieldSet.create(rule_runner.get_target(Address("src/app", target_name=name)))
    with pytest.raises(FastpexImageError, match="must be\\s+`HOST\\[:PORT\\]/REPO`"):
        field_set.checked_repository()
