"""`pants package` for `fastpex_binary`: one fastpex `build` process per PEX.

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
    argv = [
        "build",
        "--lock",
        os.path.join(LOCK_DIR, lockfile_path),
        "--sources",
        SOURCES_DIR,
        "--layout",
        layout,
        "--output",
        output_path,
        "--compress-level",
        str(fastpex.compression_level if compression is None else compression),
        "--inherit-path",
        field_set.inherit_path.value or "false",
        "--shebang",
        field_set.shebang.value or "#!/usr/bin/env python3",
    ]
    if fastpex.fetch_jobs is not None:
        argv.extend(["--fetch-jobs", str(fastpex.fetch_jobs)])
    for target in field_set.targets.value or ():
        argv.extend(["--target", target])
    for requirement in sorted(requirements):
        argv.extend(["--requirement", requirement])
    for constraint in constraints:
        argv.extend(["--python-constraint", constraint])
    if entry_point.val is not None:
        argv.extend(["--entry-point", entry_point.val.spec])
    if field_set.script.value is not None:
        argv.extend(["--script", field_set.script.value.name])
    for key, value in sorted((field_set.env.value or {}).items()):
        argv.extend(["--inject-env", f"{key}={value}"])
    for arg in field_set.args.value or ():
        argv.extend(["--inject-arg", arg])
    if field_set.execution_mode.value == "venv":
        argv.append("--venv")
    if field_set.include_tools.value:
        argv.append("--include-tools")
    if not field_set.strip_env.value:
        argv.append("--no-strip-pex-env")
    if fastpex.offline:
        argv.append("--offline")

    is_file = layout == "zipapp"
    result = await Get(
        ProcessResult,
        FastpexProcess.create(
            argv,
            description=f"Build {output_path} with fastpex ({layout})",
            input_digest=input_digest,
            output_files=(output_path,) if is_file else (),
            output_directories=() if is_file else (output_path,),
        ),
    )
    return BuiltPackage(result.output_digest, (BuiltPackageArtifact(output_path),))


def rules():
    return [*collect_rules(), UnionRule(PackageFieldSet, FastpexBinaryFieldSet)]
