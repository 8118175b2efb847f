"""`pants package` for `fastpex_binary`: fastpex `build` processes (one for a zipapp; two for a
directory layout: dependencies and application, cached apart).

The process reads the resolve's lockfile and the target's first-party sources (its inputs) and
writes the PEX (its output). Artifacts and layers live in the `fastpex` named cache, which only
makes the process faster: the output is the same whatever the cache holds, so Pants' process
cache and a remote cache stay correct.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fastpex.pants.subsystem import FastpexSubsystem
from fastpex.pants.target_types import (
    FastpexBinaryDependenciesField,
    FastpexCompressionLevelField,
    FastpexEntryPointField,
    FastpexIncludeToolsField,
    FastpexLayoutField,
    FastpexTargetsField,
)
from fastpex.pants.tool import FastpexProcess
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import (
    InterpreterConstraintsField,
    PexArgsField,
    PexEnvField,
    PexExecutionModeField,
    PexInheritPathField,
    PexScriptField,
    PexShebangField,
    PexStripEnvField,
    PythonRequirementsField,
    PythonResolveField,
    ResolvedPexEntryPoint,
    ResolvePexEntryPointRequest,
)
from pants.backend.python.util_rules.pex_requirements import PexRequirements
from pants.backend.python.util_rules.python_sources import (
    PythonSourceFilesRequest,
    StrippedPythonSourceFiles,
)
from pants.core.goals.package import (
    BuiltPackage,
    BuiltPackageArtifact,
    OutputPathField,
    PackageFieldSet,
)
from pants.engine.fs import (
    AddPrefix,
    Digest,
    GlobExpansionConjunction,
    GlobMatchErrorBehavior,
    MergeDigests,
    PathGlobs,
)
from pants.engine.process import ProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import TransitiveTargets, TransitiveTargetsRequest
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel
from pants.util.strutil import softwrap

SOURCES_DIR = "__fastpex_srcs"
LOCK_DIR = "__fastpex_lock"


@dataclass(frozen=True)
class FastpexBinaryFieldSet(PackageFieldSet):
    required_fields = (FastpexEntryPointField, FastpexLayoutField)

    output_path: OutputPathField
    dependencies: FastpexBinaryDependenciesField
    entry_point: FastpexEntryPointField
    script: PexScriptField
    resolve: PythonResolveField
    interpreter_constraints: InterpreterConstraintsField
    targets: FastpexTargetsField
    layout: FastpexLayoutField
    compression_level: FastpexCompressionLevelField
    env: PexEnvField
    args: PexArgsField
    execution_mode: PexExecutionModeField
    inherit_path: PexInheritPathField
    strip_env: PexStripEnvField
    shebang: PexShebangField
    include_tools: FastpexIncludeToolsField


class FastpexPackageError(Exception):
    pass


@rule(level=LogLevel.DEBUG)
async def package_fastpex_binary(
    field_set: FastpexBinaryFieldSet,
    fastpex: FastpexSubsystem,
    python_setup: PythonSetup,
) -> BuiltPackage:
    resolve = field_set.resolve.normalized_value(python_setup)
    lockfile_path = python_setup.resolves[resolve]
    if resolve not in fastpex.resolves:
        raise FastpexPackageError(
            softwrap(
                f"""
                {field_set.address} uses the resolve `{resolve}`, whose lockfile fastpex does not
                manage. Add `{resolve}` to `[fastpex].resolves` in pants.toml and run
                `pants generate-lockfiles --resolve={resolve}`.
                """
            )
        )
    if field_set.entry_point.value is not None and field_set.script.value is not None:
        raise FastpexPackageError(
            f"{field_set.address} sets both `entry_point` and `script`: keep one of them."
        )

    entry_point, transitive, lock_digest = await MultiGet(
        Get(ResolvedPexEntryPoint, ResolvePexEntryPointRequest(field_set.entry_point)),
        Get(TransitiveTargets, TransitiveTargetsRequest([field_set.address])),
        Get(
            Digest,
            PathGlobs(
                [lockfile_path],
                glob_match_error_behavior=GlobMatchErrorBehavior.error,
                conjunction=GlobExpansionConjunction.all_match,
                description_of_origin=softwrap(
                    f"""
                    the lockfile of the resolve `{resolve}` used by {field_set.address} (run
                    `pants generate-lockfiles --resolve={resolve}` to create it)
                    """
                ),
            ),
        ),
    )
    sources = await Get(
        StrippedPythonSourceFiles,
        PythonSourceFilesRequest(transitive.closure, include_resources=True, include_files=False),
    )
    sources_digest, lock_in = await MultiGet(
        Get(Digest, AddPrefix(sources.stripped_source_files.snapshot.digest, SOURCES_DIR)),
        Get(Digest, AddPrefix(lock_digest, LOCK_DIR)),
    )
    input_digest = await Get(Digest, MergeDigests([sources_digest, lock_in]))

    requirements = PexRequirements.req_strings_from_requirement_fields(
        tgt[PythonRequirementsField]
        for tgt in transitive.closure
        if tgt.has_field(PythonRequirementsField)
    )
    output_path = field_set.output_path.value_or_default(file_ending="pex")
    layout = field_set.layout.value
    constraints = field_set.interpreter_constraints.value or python_setup.resolves_to_interpreter_constraints.get(
        resolve, python_setup.interpreter_constraints
    )
    compression = field_set.compression_level.value
    # What the dependencies depend on: the lock and its subset, the targets, the layout.
    deps_argv = [
        "build",
        "--lock",
        os.path.join(LOCK_DIR, lockfile_path),
        "--layout",
        layout,
        "--output",
        output_path,
        "--compress-level",
        str(fastpex.compression_level if compression is None else compression),
    ]
    if fastpex.fetch_jobs is not None:
        deps_argv.extend(["--fetch-jobs", str(fastpex.fetch_jobs)])
    for target in field_set.targets.value or ():
        deps_argv.extend(["--target", target])
    for requirement in sorted(requirements):
        deps_argv.extend(["--requirement", requirement])
    for constraint in constraints:
        deps_argv.extend(["--python-constraint", constraint])
    if field_set.execution_mode.value == "venv":
        deps_argv.append("--venv")
    if field_set.include_tools.value:
        deps_argv.append("--include-tools")
    if fastpex.offline:
        deps_argv.append("--offline")
    # What only the application part depends on.
    app_args = [
        "--sources",
        SOURCES_DIR,
        "--inherit-path",
        field_set.inherit_path.value or "false",
        "--shebang",
        field_set.shebang.value or "#!/usr/bin/env python3",
    ]
    if entry_point.val is not None:
        app_args.extend(["--entry-point", entry_point.val.spec])
    if field_set.script.value is not None:
        app_args.extend(["--script", field_set.script.value.name])
    for key, value in sorted((field_set.env.value or {}).items()):
        app_args.extend(["--inject-env", f"{key}={value}"])
    for arg in field_set.args.value or ():
        app_args.extend(["--inject-arg", arg])
    if not field_set.strip_env.value:
        app_args.append("--no-strip-pex-env")

    if layout == "zipapp":
        result = await Get(
            ProcessResult,
            FastpexProcess.create(
                deps_argv + app_args,
                description=f"Build {output_path} with fastpex ({layout})",
                input_digest=input_digest,
                output_files=(output_path,),
            ),
        )
        return BuiltPackage(result.output_digest, (BuiltPackageArtifact(output_path),))

    # A directory layout is two processes whose outputs never overlap: the dependencies (the
    # same after a source change, so Pants' process cache replays them without capturing
    # gigabytes again) and the application part. Both are pure functions of their inputs.
    deps_result, app_result = await MultiGet(
        Get(
            ProcessResult,
            FastpexProcess.create(
                deps_argv + ["--part", "deps"],
                description=f"Build the dependencies of {output_path} with fastpex ({layout})",
                input_digest=lock_in,
                output_directories=(output_path,),
            ),
        ),
        Get(
            ProcessResult,
            FastpexProcess.create(
                deps_argv + app_args + ["--part", "app"],
                description=f"Build {output_path} with fastpex ({layout}, application part)",
                input_digest=input_digest,
                output_directories=(output_path,),
            ),
        ),
    )
    digest = await Get(Digest, MergeDigests([deps_result.output_digest, app_result.output_digest]))
    return BuiltPackage(digest, (BuiltPackageArtifact(output_path),))


def rules():
    return [*collect_rules(), UnionRule(PackageFieldSet, FastpexBinaryFieldSet)]
