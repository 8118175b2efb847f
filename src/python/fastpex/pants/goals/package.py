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
from typing import Iterable, Optional, Tuple

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
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.util_rules.pex_environment import PythonExecutable
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

from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.target_types import (
    FastpexBinaryDependenciesField,
    FastpexCompressionLevelField,
    FastpexDepsInstallField,
    FastpexEntryPointField,
    FastpexIncludeToolsField,
    FastpexLayoutField,
    FastpexMaxInstallJobsField,
    FastpexTargetsField,
)
from fastpex.pants.util_rules.tool import FastpexProcess

SOURCES_DIR = "__fastpex_srcs"
LOCK_DIR = "__fastpex_lock"


class FastpexPackageError(Exception):
    pass


@dataclass(frozen=True)
class FastpexBuildInputs:
    """What a build reads: the resolved entry point, the requirements, the lockfile, the sources."""

    entry_point: ResolvedPexEntryPoint
    requirements: Tuple[str, ...]
    lock: Digest  # the resolve's lockfile under `LOCK_DIR`
    lock_and_sources: Digest  # that, plus the stripped first-party sources under `SOURCES_DIR`
    # With `[fastpex].allow_sdists`: the local interpreter that builds the lock's sdists (the
    # core cannot discover one inside the sandbox).
    python: Optional[str] = None


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
    deps_install: FastpexDepsInstallField
    max_install_jobs: FastpexMaxInstallJobsField

    def output_file(self) -> str:
        return self.output_path.value_or_default(file_ending="pex")

    def layout_name(self) -> str:
        return self.layout.value or FastpexLayoutField.default

    def checked_resolve(self, fastpex: FastpexSubsystem, python_setup: PythonSetup) -> str:
        """The target's resolve, if fastpex can build from it; else an error that says how."""
        resolve = self.resolve.normalized_value(python_setup)
        if resolve not in fastpex.resolves:
            raise FastpexPackageError(
                softwrap(
                    f"""
                    {self.address} uses the resolve `{resolve}`, whose lockfile fastpex does not
                    manage. Add `{resolve}` to `[fastpex].resolves` in pants.toml and run
                    `pants generate-lockfiles --resolve={resolve}`.
                    """
                )
            )
        if self.entry_point.value is not None and self.script.value is not None:
            raise FastpexPackageError(
                f"{self.address} sets both `entry_point` and `script`: keep one of them."
            )
        return resolve

    def constraints(self, python_setup: PythonSetup) -> Tuple[str, ...]:
        """The target's interpreter constraints, else its resolve's, else the global ones."""
        resolve = self.resolve.normalized_value(python_setup)
        return tuple(
            self.interpreter_constraints.value
            or python_setup.resolves_to_interpreter_constraints.get(resolve, python_setup.interpreter_constraints)
        )

    def dependencies_argv(
        self,
        fastpex: FastpexSubsystem,
        python_setup: PythonSetup,
        requirements: Iterable[str],
        python: Optional[str] = None,
    ) -> Tuple[str, ...]:
        """The `fastpex build` arguments the dependencies depend on: the lock and its subset, the
        targets, the layout, the interpreter that builds sdists."""
        resolve = self.resolve.normalized_value(python_setup)
        constraints = self.constraints(python_setup)
        compression = self.compression_level.value
        argv = [
            "build",
            "--lock",
            os.path.join(LOCK_DIR, python_setup.resolves[resolve]),
            "--layout",
            self.layout_name(),
            "--output",
            self.output_file(),
            "--compress-level",
            str(fastpex.compression_level if compression is None else compression),
        ]
        if fastpex.fetch_jobs is not None:
            argv.extend(["--fetch-jobs", str(fastpex.fetch_jobs)])
        for target in self.targets.value or ():
            argv.extend(["--target", target])
        for requirement in sorted(requirements):
            argv.extend(["--requirement", requirement])
        for constraint in constraints:
            argv.extend(["--interpreter-constraint", constraint])
        if self.execution_mode.value == "venv":
            argv.append("--venv")
        if self.include_tools.value:
            argv.append("--include-tools")
        deps_install = self.deps_install.value
        if deps_install is not None and deps_install != FastpexDepsInstallField.default:
            argv.extend(["--deps-install", deps_install])
        if self.max_install_jobs.value is not None:
            argv.extend(["--max-install-jobs", str(self.max_install_jobs.value)])
        if fastpex.offline:
            argv.append("--offline")
        if python is not None:
            argv.extend(["--python", python])
        return tuple(argv)

    def application_argv(self, entry_point: ResolvedPexEntryPoint) -> Tuple[str, ...]:
        """The `fastpex build` arguments only the application part depends on."""
        argv = [
            "--sources",
            SOURCES_DIR,
            "--inherit-path",
            self.inherit_path.value or "false",
            "--shebang",
            self.shebang.value or "#!/usr/bin/env python3",
        ]
        if entry_point.val is not None:
            argv.extend(["--entry-point", entry_point.val.spec])
        if self.script.value is not None:
            argv.extend(["--script", self.script.value.name])
        for key, value in sorted((self.env.value or {}).items()):
            argv.extend(["--inject-env", f"{key}={value}"])
        for arg in self.args.value or ():
            argv.extend(["--inject-arg", arg])
        if not self.strip_env.value:
            argv.append("--no-strip-pex-env")
        return tuple(argv)

    def build_processes(
        self, inputs: FastpexBuildInputs, fastpex: FastpexSubsystem, python_setup: PythonSetup
    ) -> Tuple[FastpexProcess, ...]:
        """One process for a zipapp. A directory layout is two whose outputs never overlap: the
        dependencies (the same after a source change, so Pants' process cache replays them
        without capturing gigabytes again) and the application part."""
        deps = self.dependencies_argv(fastpex, python_setup, inputs.requirements, inputs.python)
        app = self.application_argv(inputs.entry_point)
        output, layout = self.output_file(), self.layout_name()
        if layout == "zipapp":
            return (
                FastpexProcess.create(
                    deps + app,
                    description=f"Build {output} with fastpex ({layout})",
                    input_digest=inputs.lock_and_sources,
                    output_files=(output,),
                ),
            )
        return (
            FastpexProcess.create(
                deps + ("--part", "deps"),
                description=f"Build the dependencies of {output} with fastpex ({layout})",
                input_digest=inputs.lock,
                output_directories=(output,),
            ),
            FastpexProcess.create(
                deps + app + ("--part", "app"),
                description=f"Build {output} with fastpex ({layout}, application part)",
                input_digest=inputs.lock_and_sources,
                output_directories=(output,),
            ),
        )


@rule(desc="Collect the inputs of a fastpex build", level=LogLevel.DEBUG)
async def collect_fastpex_build_inputs(
    field_set: FastpexBinaryFieldSet, python_setup: PythonSetup, fastpex: FastpexSubsystem
) -> FastpexBuildInputs:
    resolve = field_set.resolve.normalized_value(python_setup)
    lockfile = python_setup.resolves[resolve]
    lockfile_glob = PathGlobs(
        [lockfile],
        glob_match_error_behavior=GlobMatchErrorBehavior.error,
        conjunction=GlobExpansionConjunction.all_match,
        description_of_origin=softwrap(
            f"""
            the lockfile of the resolve `{resolve}` used by {field_set.address} (run
            `pants generate-lockfiles --resolve={resolve}` to create it)
            """
        ),
    )
    entry_point, transitive, lock_digest = await MultiGet(
        Get(ResolvedPexEntryPoint, ResolvePexEntryPointRequest(field_set.entry_point)),
        Get(TransitiveTargets, TransitiveTargetsRequest([field_set.address])),
        Get(Digest, PathGlobs, lockfile_glob),
    )
    sources = await Get(
        StrippedPythonSourceFiles,
        PythonSourceFilesRequest(transitive.closure, include_resources=True, include_files=False),
    )
    sources_digest, lock_in = await MultiGet(
        Get(Digest, AddPrefix(sources.stripped_source_files.snapshot.digest, SOURCES_DIR)),
        Get(Digest, AddPrefix(lock_digest, LOCK_DIR)),
    )
    lock_and_sources = await Get(Digest, MergeDigests([sources_digest, lock_in]))
    requirements = PexRequirements.req_strings_from_requirement_fields(
        tgt[PythonRequirementsField]
        for tgt in transitive.closure
        if tgt.has_field(PythonRequirementsField)
    )
    python: Optional[str] = None
    if fastpex.allow_sdists:
        executable = await Get(
            PythonExecutable, InterpreterConstraints, InterpreterConstraints(field_set.constraints(python_setup))
        )
        python = executable.path
    return FastpexBuildInputs(entry_point, tuple(sorted(requirements)), lock_in, lock_and_sources, python)


@rule(desc="Package a fastpex_binary", level=LogLevel.DEBUG)
async def package_fastpex_binary(
    field_set: FastpexBinaryFieldSet, fastpex: FastpexSubsystem, python_setup: PythonSetup
) -> BuiltPackage:
    field_set.checked_resolve(fastpex, python_setup)
    inputs = await Get(FastpexBuildInputs, FastpexBinaryFieldSet, field_set)
    results = await MultiGet(
        Get(ProcessResult, FastpexProcess, process)
        for process in field_set.build_processes(inputs, fastpex, python_setup)
    )
    digest = await Get(Digest, MergeDigests(result.output_digest for result in results))
    return BuiltPackage(digest, (BuiltPackageArtifact(field_set.output_file()),))


def rules():
    return [*collect_rules(), UnionRule(PackageFieldSet, FastpexBinaryFieldSet)]
