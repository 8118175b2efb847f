"""`pants publish` for `fastpex_image`: push the packaged OCI layout with fastpex `push`.

One uncached `InteractiveProcess` per `repository:tag`. The push runs the OCI distribution
API itself (HEAD each blob, upload only the missing ones, then the manifest and the tag), so a
publish after a source-only change sends the application layer, the config and the manifest.
Like every Pants process it sees only the environment it is given: `[fastpex].env_vars` and
`[fastpex].publish_env_vars` (where the registry credentials are), never the whole environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from pants.core.goals.package import OutputPathField
from pants.core.goals.publish import (
    PublishFieldSet,
    PublishOutputData,
    PublishPackages,
    PublishProcesses,
    PublishRequest,
)
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import Digest, MergeDigests
from pants.engine.process import InteractiveProcess, Process, ProcessCacheScope
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.util.logging import LogLevel
from pants.util.strutil import softwrap

from fastpex.pants.goals.image import FastpexImageError, checked_tags, layout_tag
from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.target_types import FastpexImageRepositoryField, FastpexImageTagsField
from fastpex.pants.util_rules.tool import FastpexProcess


class PublishFastpexImageRequest(PublishRequest):
    pass


@dataclass(frozen=True)
class FastpexImagePublishFieldSet(PublishFieldSet):
    publish_request_type = PublishFastpexImageRequest
    required_fields = (FastpexImageRepositoryField, FastpexImageTagsField)

    output_path: OutputPathField
    repository: FastpexImageRepositoryField
    tags: FastpexImageTagsField

    def checked_repository(self) -> str:
        """`HOST[:PORT]/REPO`, without tag or digest (the tags come from `image_tags`)."""
        repository = (self.repository.value or "").strip()
        name = repository.rsplit("/", 1)[-1]
        if "/" not in repository or "@" in repository or ":" in name:
            raise FastpexImageError(
                softwrap(
                    f"""
                    The `repository` field of {self.address} is `{repository}`: it must be
                    `HOST[:PORT]/REPO`, with no tag or digest (put tags in `image_tags`).
                    """
                )
            )
        return repository

    def push_argv(self, layout_dir: str, in_layout: str, tag: str, fastpex: FastpexSubsystem) -> Tuple[str, ...]:
        """Push the layout's image `in_layout` to `repository:tag`."""
        argv = ["push", "--layout", layout_dir, "--tag", in_layout, "--to", f"{self.checked_repository()}:{tag}"]
        for registry in fastpex.insecure_registries:
            argv.extend(["--insecure-registry", registry])
        return tuple(argv)

    def get_output_data(self) -> PublishOutputData:
        return PublishOutputData({"publisher": "fastpex", **super().get_output_data()})


@rule(desc="Push a fastpex_image", level=LogLevel.DEBUG)
async def push_fastpex_image(request: PublishFastpexImageRequest, fastpex: FastpexSubsystem) -> PublishProcesses:
    field_set = request.field_set
    layouts = tuple(artifact.relpath for pkg in request.packages for artifact in pkg.artifacts if artifact.relpath)
    if not field_set.repository.value or not field_set.tags.value:
        missing = "repository" if not field_set.repository.value else "image_tags"
        return PublishProcesses(
            [PublishPackages(names=layouts, description=f"(no `{missing}` on {field_set.address})")]
        )
    tags = checked_tags(field_set.address, field_set.tags.value or ())
    in_layout = layout_tag(tags)
    packages, env = await MultiGet(
        Get(Digest, MergeDigests(pkg.digest for pkg in request.packages)),
        Get(EnvironmentVars, EnvironmentVarsRequest(fastpex.publish_env_vars)),
    )
    layout_dir = field_set.output_path.value_or_default(file_ending=None)
    references = [f"{field_set.checked_repository()}:{tag}" for tag in tags]
    processes = await MultiGet(
        Get(
            Process,
            FastpexProcess,
            FastpexProcess.create(
                field_set.push_argv(layout_dir, in_layout, tag, fastpex),
                description=f"Push {layout_dir} to {reference}",
                input_digest=packages,
                cache_scope=ProcessCacheScope.PER_SESSION,
                extra_env=env,
            ),
        )
        for tag, reference in zip(tags, references)
    )
    return PublishProcesses(
        PublishPackages(
            names=(reference,),
            process=InteractiveProcess.from_process(process),
            description=reference,
            data=PublishOutputData({"repository": reference}),
        )
        for reference, process in zip(references, processes)
    )


def rules():
    return [*collect_rules(), *FastpexImagePublishFieldSet.rules()]
