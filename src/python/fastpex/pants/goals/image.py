"""`pants package` for `fastpex_image`: an OCI image layout in `dist/`, made by two fastpex
`image` processes whose outputs never overlap, like the packed PEX layout.

- `--part deps` reads the lock and the base; it writes the base's and the dependency layers'
  blobs. A source-only change leaves its inputs unchanged, so Pants replays it from the process
  cache and captures none of those (possibly gigabytes of) blobs again.
- `--part app` reads the lock, the sources and the base; it writes the application layer, the
  config, the manifest, `index.json` and `oci-layout`.

A `fastpex_python_base` base is a third process (`fastpex image-base`), whose output layout is
an input of both. A registry base must be pinned by digest, so that a cached image never
depends on what a tag points to today.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.util_rules.pex_environment import PythonExecutable
from pants.core.goals.package import (
    BuiltPackage,
    BuiltPackageArtifact,
    OutputPathField,
    PackageFieldSet,
)
from pants.engine.addresses import Address, Addresses, UnparsedAddressInputs
from pants.engine.fs import EMPTY_DIGEST, Digest, MergeDigests
from pants.engine.process import ProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import (
    FieldSet,
    InferDependenciesRequest,
    InferredDependencies,
    WrappedTarget,
    WrappedTargetRequest,
)
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel
from pants.util.strutil import softwrap

from fastpex.pants.goals.package import (
    LOCK_DIR,
    SOURCES_DIR,
    FastpexBinaryFieldSet,
    FastpexBuildInputs,
    FastpexPackageError,
)
from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.target_types import (
    FastpexImageBaseField,
    FastpexImageBinaryField,
    FastpexImageCompressionLevelField,
    FastpexImageDependenciesField,
    FastpexImageEnvField,
    FastpexImageLabelsField,
    FastpexImageLargeLayerMbField,
    FastpexImageRepositoryField,
    FastpexImageSmallLayerGroupsField,
    FastpexImageTagsField,
    FastpexImageUserField,
    FastpexImageWorkdirField,
    FastpexPythonBaseInterpreterConstraintsField,
)
from fastpex.pants.util_rules.tool import FastpexProcess

BASE_DIR = "__fastpex_base"  # a `fastpex_python_base`'s layout, inside the image processes
BASE_TAG = "base"
DEFAULT_TAG = "latest"

_DIGEST_REFERENCE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
# The OCI distribution spec's tag grammar.
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class FastpexImageError(FastpexPackageError):
    pass


def looks_like_registry_reference(value: str) -> bool:
    """`HOST[:PORT]/...` or anything with `@`: what a user means as an image, not an address.

    Addresses never hold `@`; their first path component is a directory, which has no `.` or
    `:PORT` (a registry host has one, or is `localhost`)."""
    if "@" in value:
        return True
    first, slash, _ = value.lstrip("/").partition("/")
    if not slash or value.startswith(("/", ":")):
        return False
    return "." in first or first == "localhost" or re.search(r":\d+$", first) is not None


def checked_tags(address: Address, tags: Iterable[str]) -> Tuple[str, ...]:
    """A `fastpex_image`'s tags, each valid by the OCI distribution spec's grammar."""
    for tag in tags:
        if not _TAG.match(tag):
            raise FastpexImageError(
                softwrap(
                    f"""
                    The `image_tags` field of {address} has `{tag}`, which is not a valid tag: up to
                    128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
                    """
                )
            )
    return tuple(tags)


def layout_tag(tags: Tuple[str, ...]) -> str:
    """The image's name inside the OCI layout: the first tag."""
    return tags[0] if tags else DEFAULT_TAG


@dataclass(frozen=True)
class FastpexPythonBaseFieldSet(FieldSet):
    required_fields = (FastpexPythonBaseInterpreterConstraintsField,)

    interpreter_constraints: FastpexPythonBaseInterpreterConstraintsField

    def constraints(self, python_setup: PythonSetup) -> Tuple[str, ...]:
        return tuple(self.interpreter_constraints.value_or_global_default(python_setup))

    @staticmethod
    def argv(python: str) -> Tuple[str, ...]:
        return ("image-base", "--python", python, "--output", BASE_DIR, "--tag", BASE_TAG)


@dataclass(frozen=True)
class FastpexImageBase:
    """The `--base` argument and what the processes need to read it (a layout, or nothing)."""

    argument: str
    digest: Digest = EMPTY_DIGEST


@dataclass(frozen=True)
class FastpexImageFieldSet(PackageFieldSet):
    required_fields = (FastpexImageBinaryField, FastpexImageBaseField)

    output_path: OutputPathField
    binary: FastpexImageBinaryField
    base: FastpexImageBaseField
    repository: FastpexImageRepositoryField
    tags: FastpexImageTagsField
    image_env: FastpexImageEnvField
    workdir: FastpexImageWorkdirField
    user: FastpexImageUserField
    labels: FastpexImageLabelsField
    compression_level: FastpexImageCompressionLevelField
    large_layer_mb: FastpexImageLargeLayerMbField
    small_layer_groups: FastpexImageSmallLayerGroupsField

    def output_dir(self) -> str:
        return self.output_path.value_or_default(file_ending=None)

    def checked_tags(self) -> Tuple[str, ...]:
        return checked_tags(self.address, self.tags.value or ())

    def layout_tag(self) -> str:
        return layout_tag(self.checked_tags())

    def registry_base(self) -> Optional[str]:
        """The base's registry reference, if it is one (refused unless pinned by digest); None
        when `base` is the address of a `fastpex_python_base`."""
        value = (self.base.value or "").strip()
        if not looks_like_registry_reference(value):
            return None
        if not _DIGEST_REFERENCE.match(value):
            raise FastpexImageError(
                softwrap(
                    f"""
                    The `base` field of {self.address} is `{value}`, a registry reference that is
                    not pinned by digest. Pants caches images by their inputs, so a base must be
                    `HOST[:PORT]/REPO[:TAG]@sha256:<64 hex digits>` (e.g. the digest `skopeo
                    inspect docker://...` prints), or the address of a `fastpex_python_base`.
                    """
                )
            )
        return value

    def dependencies_argv(
        self,
        binary: FastpexBinaryFieldSet,
        fastpex: FastpexSubsystem,
        python_setup: PythonSetup,
        requirements: Iterable[str],
        base: str,
        python: Optional[str],
    ) -> Tuple[str, ...]:
        """The `fastpex image` arguments the dependency layers depend on: the lock and its subset,
        the targets, the base, the layer settings, the interpreter that compiles byte code."""
        resolve = binary.resolve.normalized_value(python_setup)
        compression = self.compression_level.value
        argv = [
            "image",
            "--lock",
            f"{LOCK_DIR}/{python_setup.resolves[resolve]}",
            "--base",
            base,
            "--output",
            self.output_dir(),
            "--compress-level",
            str(fastpex.compression_level if compression is None else compression),
        ]
        if self.large_layer_mb.value is not None:
            argv.extend(["--large-layer-mb", str(self.large_layer_mb.value)])
        if self.small_layer_groups.value is not None:
            argv.extend(["--small-layer-groups", str(self.small_layer_groups.value)])
        for registry in fastpex.insecure_registries:
            argv.extend(["--insecure-registry", registry])
        if fastpex.fetch_jobs is not None:
            argv.extend(["--fetch-jobs", str(fastpex.fetch_jobs)])
        for target in binary.targets.value or ():
            argv.extend(["--target", target])
        for requirement in sorted(requirements):
            argv.extend(["--requirement", requirement])
        for constraint in binary.constraints(python_setup):
            argv.extend(["--interpreter-constraint", constraint])
        if fastpex.offline:
            argv.append("--offline")
        if python is not None:
            argv.extend(["--python", python])
        return tuple(argv)

    def application_argv(self, binary: FastpexBinaryFieldSet, inputs: FastpexBuildInputs) -> Tuple[str, ...]:
        """The `fastpex image` arguments only the application layer and the config depend on."""
        argv = ["--sources", SOURCES_DIR, "--tag", self.layout_tag()]
        if inputs.entry_point.val is not None:
            argv.extend(["--entry-point", inputs.entry_point.val.spec])
        if binary.script.value is not None:
            argv.extend(["--script", binary.script.value.name])
        for arg in binary.args.value or ():
            argv.extend(["--arg", arg])
        for key, value in sorted((self.image_env.value or {}).items()):
            argv.extend(["--env", f"{key}={value}"])
        if self.workdir.value:
            argv.extend(["--workdir", self.workdir.value])
        if self.user.value:
            argv.extend(["--user", self.user.value])
        for key, value in sorted((self.labels.value or {}).items()):
            argv.extend(["--label", f"{key}={value}"])
        return tuple(argv)

    def image_processes(
        self,
        binary: FastpexBinaryFieldSet,
        inputs: FastpexBuildInputs,
        base: FastpexImageBase,
        deps_input: Digest,
        app_input: Digest,
        fastpex: FastpexSubsystem,
        python_setup: PythonSetup,
    ) -> Tuple[FastpexProcess, FastpexProcess]:
        """Dependencies (lock + base in, base and dependency blobs out) and application (lock +
        sources + base in, the rest out): output directories that never overlap."""
        deps = self.dependencies_argv(
            binary, fastpex, python_setup, inputs.requirements, base.argument, inputs.python
        )
        output = self.output_dir()
        return (
            FastpexProcess.create(
                deps + ("--part", "deps"),
                description=f"Build the dependency layers of {output} with fastpex",
                input_digest=deps_input,
                output_directories=(output,),
            ),
            FastpexProcess.create(
                deps + self.application_argv(binary, inputs) + ("--part", "app"),
                description=f"Build the image {output} with fastpex (application layer)",
                input_digest=app_input,
                output_directories=(output,),
            ),
        )


@dataclass(frozen=True)
class ImagePythonRequest:
    constraints: Tuple[str, ...]


@dataclass(frozen=True)
class ImagePython:
    """A local interpreter for those constraints (`fingerprint`: its identity, beyond the path)."""

    path: str
    fingerprint: str


@rule(desc="Find an interpreter for a fastpex image", level=LogLevel.DEBUG)
async def find_image_python(request: ImagePythonRequest) -> ImagePython:
    executable = await Get(PythonExecutable, InterpreterConstraints, InterpreterConstraints(request.constraints))
    return ImagePython(executable.path, executable.fingerprint or "")


@dataclass(frozen=True)
class FastpexPythonBaseRequest:
    address: Address


@dataclass(frozen=True)
class FastpexImageBinary:
    field_set: FastpexBinaryFieldSet


@rule(desc="Build a fastpex_python_base", level=LogLevel.DEBUG)
async def build_fastpex_python_base(
    request: FastpexPythonBaseRequest, python_setup: PythonSetup
) -> FastpexImageBase:
    wrapped = await Get(
        WrappedTarget,
        WrappedTargetRequest(request.address, description_of_origin="the `base` field of a fastpex_image"),
    )
    if not FastpexPythonBaseFieldSet.is_applicable(wrapped.target):
        raise FastpexImageError(
            softwrap(
                f"""
                {request.address} is a `{wrapped.target.alias}`, not a `fastpex_python_base`: a
                fastpex_image's `base` is the address of a `fastpex_python_base` or a registry
                reference pinned by digest (`HOST/REPO@sha256:...`).
                """
            )
        )
    field_set = FastpexPythonBaseFieldSet.create(wrapped.target)
    python = await Get(ImagePython, ImagePythonRequest(field_set.constraints(python_setup)))
    # The base copies the interpreter's files, which are no input of the process: its
    # fingerprint in the environment makes another interpreter at the same path another key.
    result = await Get(
        ProcessResult,
        FastpexProcess,
        FastpexProcess.create(
            field_set.argv(python.path),
            description=f"Build the base image {request.address} from {python.path}",
            output_directories=(BASE_DIR,),
            extra_env={"FASTPEX_BASE_PYTHON_FINGERPRINT": python.fingerprint},
        ),
    )
    return FastpexImageBase(f"oci:{BASE_DIR}:{BASE_TAG}", result.output_digest)


@rule(desc="Find a fastpex_image's binary", level=LogLevel.DEBUG)
async def find_fastpex_image_binary(field_set: FastpexImageFieldSet) -> FastpexImageBinary:
    origin = f"the `binary` field of {field_set.address}"
    addresses = await Get(
        Addresses,
        UnparsedAddressInputs(
            [field_set.binary.value or ""], owning_address=field_set.address, description_of_origin=origin
        ),
    )
    wrapped = await Get(WrappedTarget, WrappedTargetRequest(addresses[0], description_of_origin=origin))
    if not FastpexBinaryFieldSet.is_applicable(wrapped.target):
        raise FastpexImageError(
            f"The `binary` field of {field_set.address} names {wrapped.target.address}, a "
            f"`{wrapped.target.alias}`: it must name a `fastpex_binary`."
        )
    return FastpexImageBinary(FastpexBinaryFieldSet.create(wrapped.target))


@rule(desc="Package a fastpex_image", level=LogLevel.DEBUG)
async def package_fastpex_image(
    field_set: FastpexImageFieldSet, fastpex: FastpexSubsystem, python_setup: PythonSetup
) -> BuiltPackage:
    registry_base = field_set.registry_base()
    binary = (await Get(FastpexImageBinary, FastpexImageFieldSet, field_set)).field_set
    binary.checked_resolve(fastpex, python_setup)
    inputs, python = await MultiGet(
        Get(FastpexBuildInputs, FastpexBinaryFieldSet, binary),
        # The interpreter that compiles the layers' byte code for the binary's Python.
        Get(ImagePython, ImagePythonRequest(binary.constraints(python_setup))),
    )
    inputs = dataclasses.replace(inputs, python=python.path)
    if registry_base is not None:
        base = FastpexImageBase(registry_base)
    else:
        base_address = await Get(
            Addresses,
            UnparsedAddressInputs(
                [field_set.base.value or ""],
                owning_address=field_set.address,
                description_of_origin=f"the `base` field of {field_set.address}",
            ),
        )
        base = await Get(FastpexImageBase, FastpexPythonBaseRequest(base_address[0]))
    deps_input, app_input = await MultiGet(
        Get(Digest, MergeDigests([inputs.lock, base.digest])),
        Get(Digest, MergeDigests([inputs.lock_and_sources, base.digest])),
    )
    deps_process, app_process = field_set.image_processes(
        binary, inputs, base, deps_input, app_input, fastpex, python_setup
    )
    # One after the other: on a cold build the application part then finds every dependency
    # layer in the named cache instead of building them a second time beside the first; after a
    # source-only change the dependencies part is a cache hit and costs nothing.
    deps = await Get(ProcessResult, FastpexProcess, deps_process)
    app = await Get(ProcessResult, FastpexProcess, app_process)
    digest = await Get(Digest, MergeDigests([deps.output_digest, app.output_digest]))
    return BuiltPackage(digest, (BuiltPackageArtifact(field_set.output_dir()),))


@dataclass(frozen=True)
class FastpexImageInferenceFieldSet(FieldSet):
    required_fields = (FastpexImageDependenciesField, FastpexImageBinaryField, FastpexImageBaseField)

    dependencies: FastpexImageDependenciesField
    binary: FastpexImageBinaryField
    base: FastpexImageBaseField


class InferFastpexImageDependencies(InferDependenciesRequest):
    infer_from = FastpexImageInferenceFieldSet


@rule(desc="Inferring a fastpex_image's dependencies on its binary and base")
async def infer_fastpex_image_dependencies(request: InferFastpexImageDependencies) -> InferredDependencies:
    field_set = request.field_set
    values = [field_set.binary.value or ""]
    base = (field_set.base.value or "").strip()
    if base and not looks_like_registry_reference(base):
        values.append(base)
    addresses = await Get(
        Addresses,
        UnparsedAddressInputs(
            values,
            owning_address=field_set.address,
            description_of_origin=f"the `binary` and `base` fields of {field_set.address}",
        ),
    )
    return InferredDependencies(addresses)


def rules():
    return [
        *collect_rules(),
        UnionRule(PackageFieldSet, FastpexImageFieldSet),
        UnionRule(InferDependenciesRequest, InferFastpexImageDependencies),
    ]
