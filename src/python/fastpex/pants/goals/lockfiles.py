"""`pants generate-lockfiles` for the resolves fastpex manages.

Resolve names are global in Pants 2.17, and the lock must serve Pants' own python goals too, so
fastpex does not invent new names: it claims the `[python].resolves` listed in
`[fastpex].resolves` and writes their lockfiles in the format the python backend reads. The
handover of those names from the python backend to fastpex is `claim_resolves.py`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Tuple

from fastpex.pants.subsystem import FastpexSubsystem
from fastpex.pants.tool import FastpexProcess
from pants.backend.python.pip_requirement import PipRequirement
from pants.backend.python.subsystems.repos import PythonRepos
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import PythonRequirementResolveField, PythonRequirementsField
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.util_rules.lockfile_metadata import PythonLockfileMetadata
from pants.backend.python.util_rules.pex_requirements import PexRequirements
from pants.core.goals.generate_lockfiles import (
    GenerateLockfile,
    GenerateLockfileResult,
    GenerateLockfilesSubsystem,
    KnownUserResolveNames,
    KnownUserResolveNamesRequest,
    RequestedUserResolveNames,
    UserGenerateLockfiles,
)
from pants.engine.fs import CreateDigest, Digest, DigestContents, FileContent, PathGlobs
from pants.engine.process import ProcessCacheScope, ProcessResult
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import AllTargets
from pants.engine.unions import UnionRule
from pants.engine.fs import GlobMatchErrorBehavior
from pants.util.docutil import bin_name
from pants.util.logging import LogLevel
from pants.util.strutil import softwrap

LOCK_OUTPUT = "__fastpex_out/lock.json"
PYLOCK_OUTPUT = "__fastpex_out/pylock.toml"
EXISTING_LOCK = "__fastpex_in/existing.lock"


class FastpexConfigurationError(Exception):
    pass


@dataclass(frozen=True)
class GenerateFastpexLockfile(GenerateLockfile):
    requirements: Tuple[str, ...]
    interpreter_constraints: InterpreterConstraints
    targets: Tuple[str, ...]


class RequestedFastpexResolveNames(RequestedUserResolveNames):
    pass


class KnownFastpexResolveNamesRequest(KnownUserResolveNamesRequest):
    pass


def pylock_path(lockfile_dest: str, resolve_name: str) -> str:
    """PEP 751's name for the export, next to the resolve's lockfile."""
    return os.path.join(os.path.dirname(lockfile_dest), f"pylock.{resolve_name}.toml")


@rule
def determine_fastpex_resolves(
    _: KnownFastpexResolveNamesRequest,
    fastpex: FastpexSubsystem,
    python_setup: PythonSetup,
) -> KnownUserResolveNames:
    names = tuple(fastpex.resolves)
    if names:
        unknown = sorted(set(names) - set(python_setup.resolves))
        if unknown:
            raise FastpexConfigurationError(
                softwrap(
                    f"""
                    `[fastpex].resolves` lists {unknown}, which `[python].resolves` does not
                    define. fastpex writes the lockfiles of python resolves: add them to
                    `[python].resolves` with their lockfile paths.
                    """
                )
            )
    return KnownUserResolveNames(
        names=names,
        option_name="[fastpex].resolves",
        requested_resolve_names_cls=RequestedFastpexResolveNames,
    )


@rule
async def setup_fastpex_lockfile_requests(
    requested: RequestedFastpexResolveNames,
    all_targets: AllTargets,
    python_setup: PythonSetup,
    fastpex: FastpexSubsystem,
) -> UserGenerateLockfiles:
    resolve_to_requirements_fields = defaultdict(set)
    for tgt in all_targets:
        if not tgt.has_fields((PythonRequirementResolveField, PythonRequirementsField)):
            continue
        resolve = tgt[PythonRequirementResolveField].normalized_value(python_setup)
        resolve_to_requirements_fields[resolve].add(tgt[PythonRequirementsField])

    requests = []
    for resolve in sorted(requested):
        requirements = PexRequirements.req_strings_from_requirement_fields(
            resolve_to_requirements_fields[resolve]
        )
        if not requirements:
            raise FastpexConfigurationError(
                softwrap(
                    f"""
                    The resolve `{resolve}` has no `python_requirement` targets, so there is
                    nothing to lock. Add requirements with `resolve="{resolve}"`.
                    """
                )
            )
        requests.append(
            GenerateFastpexLockfile(
                resolve_name=resolve,
                lockfile_dest=python_setup.resolves[resolve],
                diff=False,
                requirements=tuple(sorted(requirements)),
                interpreter_constraints=InterpreterConstraints(
                    python_setup.resolves_to_interpreter_constraints.get(
                        resolve, python_setup.interpreter_constraints
                    )
                ),
                targets=tuple(fastpex.resolve_targets.get(resolve, fastpex.targets)),
            )
        )
    return UserGenerateLockfiles(requests)


def _strip_header(content: bytes) -> bytes:
    lines = content.splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"//"))


@rule(desc="Generate a lockfile with fastpex", level=LogLevel.DEBUG)
async def generate_fastpex_lockfile(
    req: GenerateFastpexLockfile,
    fastpex: FastpexSubsystem,
    python_repos: PythonRepos,
    python_setup: PythonSetup,
    generate_lockfiles_subsystem: GenerateLockfilesSubsystem,
) -> GenerateLockfileResult:
    indexes = fastpex.indexes or python_repos.indexes
    find_links = fastpex.find_links or python_repos.find_links

    argv = [
        "lock",
        "--resolve",
        req.resolve_name,
        "--output",
        LOCK_OUTPUT,
        "--pylock-output",
        PYLOCK_OUTPUT,
        "--metadata-jobs",
        str(fastpex.metadata_jobs),
    ]
    for requirement in req.requirements:
        argv.extend(["--requirement", requirement])
    for target in req.targets:
        argv.extend(["--target", target])
    for constraint in req.interpreter_constraints:
        argv.extend(["--interpreter-constraint", str(constraint)])
    names = list(fastpex.index_names)
    for i, index in enumerate(indexes):
        name = names[i] if i < len(names) else f"index{i}"
        argv.extend(["--index", f"{name}={index}"])
    for link in find_links:
        argv.extend(["--find-links", link])
    for route in fastpex.routes:
        argv.extend(["--route", route])
    if fastpex.upload_cutoff:
        argv.extend(["--upload-cutoff", fastpex.upload_cutoff])
    if fastpex.allow_sdists:
        argv.append("--allow-sdists")
    if not fastpex.reuse_unchanged_locks:
        argv.append("--no-reuse")

    # The current lockfile (if any) goes in as a hint: its projects' pages are fetched before
    # pip asks. Its pins are kept only for a minimal re-lock (`[fastpex].upgrade`).
    existing = await Get(
        Digest,
        PathGlobs([req.lockfile_dest], glob_match_error_behavior=GlobMatchErrorBehavior.ignore),
    )
    contents = await Get(DigestContents, Digest, existing)
    input_digest = None
    if contents:
        input_digest = await Get(
            Digest, CreateDigest([FileContent(EXISTING_LOCK, contents[0].content)])
        )
        argv.extend(["--hint-lock", EXISTING_LOCK])
        if fastpex.upgrade:
            argv.extend(["--existing-lock", EXISTING_LOCK])
    for project in fastpex.upgrade:
        argv.extend(["--upgrade", project])

    result = await Get(
        ProcessResult,
        FastpexProcess.create(
            argv,
            description=f"Lock the resolve `{req.resolve_name}` with fastpex for {', '.join(req.targets)}",
            input_digest=input_digest,
            output_files=(LOCK_OUTPUT, PYLOCK_OUTPUT),
            # Like Pants' own lock generation: never replay a lock from the process cache, so
            # a lock always reflects the index as it is now.
            cache_scope=ProcessCacheScope.PER_SESSION,
        ),
    )
    outputs = {fc.path: fc.content for fc in await Get(DigestContents, Digest, result.output_digest)}

    metadata = PythonLockfileMetadata.new(
        valid_for_interpreter_constraints=req.interpreter_constraints,
        requirements={
            PipRequirement.parse(
                r,
                description_of_origin=f"the lockfile {req.lockfile_dest} for the resolve {req.resolve_name}",
            )
            for r in req.requirements
        },
        manylinux=python_setup.manylinux,
        requirement_constraints=set(),
        only_binary=set(),
        no_binary=set(),
    )
    lockfile = metadata.add_header_to_lockfile(
        _strip_header(outputs[LOCK_OUTPUT]),
        regenerate_command=(
            generate_lockfiles_subsystem.custom_command
            or f"{bin_name()} generate-lockfiles --resolve={req.resolve_name}"
        ),
        delimeter="//",
    )
    digest = await Get(
        Digest,
        CreateDigest(
            [
                FileContent(req.lockfile_dest, lockfile),
                FileContent(pylock_path(req.lockfile_dest, req.resolve_name), outputs[PYLOCK_OUTPUT]),
            ]
        ),
    )
    return GenerateLockfileResult(digest, req.resolve_name, req.lockfile_dest, diff=None)


def rules():
    return [
        *collect_rules(),
        UnionRule(KnownUserResolveNamesRequest, KnownFastpexResolveNamesRequest),
        UnionRule(RequestedUserResolveNames, RequestedFastpexResolveNames),
        UnionRule(GenerateLockfile, GenerateFastpexLockfile),
    ]
