"""`pants generate-lockfiles` for the resolves fastpex manages.

Resolve names are global in Pants 2.17, and the lock must serve Pants' own python goals too, so
fastpex does not invent new names: it claims the `[python].resolves` listed in
`[fastpex].resolves` and writes their lockfiles in the format the python backend reads. The
handover of those names from the python backend to fastpex is `claim_resolves.py`; the
command line is `lock_argv`, a pure function of the resolve and the `[fastpex]` options.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Tuple

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
from pants.engine.fs import (
    CreateDigest,
    Digest,
    DigestContents,
    FileContent,
    GlobMatchErrorBehavior,
    PathGlobs,
)
from pants.engine.process import ProcessCacheScope, ProcessResult
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import AllTargets
from pants.engine.unions import UnionRule
from pants.util.docutil import bin_name
from pants.util.logging import LogLevel
from pants.util.strutil import softwrap

from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.util_rules.tool import FastpexProcess

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


def lock_argv(
    request: GenerateFastpexLockfile,
    fastpex: FastpexSubsystem,
    python_repos: PythonRepos,
    *,
    has_existing_lock: bool,
) -> Tuple[str, ...]:
    """The `fastpex lock` command line for one resolve: the options say how, the request what."""
    argv = [
        "lock",
        "--resolve",
        request.resolve_name,
        "--output",
        LOCK_OUTPUT,
        "--pylock-output",
        PYLOCK_OUTPUT,
        # Pants writes its own header (below), from the resolve's settings.
        "--no-header",
        "--metadata-jobs",
        str(fastpex.metadata_jobs),
    ]
    for requirement in request.requirements:
        argv.extend(["--requirement", requirement])
    for target in request.targets:
        argv.extend(["--target", target])
    for constraint in request.interpreter_constraints:
        argv.extend(["--interpreter-constraint", str(constraint)])
    names = list(fastpex.index_names)
    for i, index in enumerate(fastpex.indexes or python_repos.indexes):
        name = names[i] if i < len(names) else f"index{i}"
        argv.extend(["--index", f"{name}={index}"])
    for link in fastpex.find_links or python_repos.find_links:
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
    if has_existing_lock:
        argv.extend(["--hint-lock", EXISTING_LOCK])
        if fastpex.upgrade:
            argv.extend(["--existing-lock", EXISTING_LOCK])
    for project in fastpex.upgrade:
        argv.extend(["--upgrade", project])
    return tuple(argv)


def pants_lockfile(
    request: GenerateFastpexLockfile, body: bytes, *, manylinux: Optional[str], regenerate_command: str
) -> bytes:
    """The lock body under the `//` header Pants' python goals check against the resolve."""
    metadata = PythonLockfileMetadata.new(
        valid_for_interpreter_constraints=request.interpreter_constraints,
        requirements={
            PipRequirement.parse(
                r,
                description_of_origin=f"the lockfile {request.lockfile_dest} for the resolve {request.resolve_name}",
            )
            for r in request.requirements
        },
        manylinux=manylinux,
        requirement_constraints=set(),
        only_binary=set(),
        no_binary=set(),
    )
    return metadata.add_header_to_lockfile(body, regenerate_command=regenerate_command, delimeter="//")


@rule(desc="Generate a lockfile with fastpex", level=LogLevel.DEBUG)
async def generate_fastpex_lockfile(
    req: GenerateFastpexLockfile,
    fastpex: FastpexSubsystem,
    python_repos: PythonRepos,
    python_setup: PythonSetup,
    generate_lockfiles_subsystem: GenerateLockfilesSubsystem,
) -> GenerateLockfileResult:
    existing = await Get(
        DigestContents,
        PathGlobs([req.lockfile_dest], glob_match_error_behavior=GlobMatchErrorBehavior.ignore),
    )
    input_digest = None
    if existing:
        input_digest = await Get(Digest, CreateDigest([FileContent(EXISTING_LOCK, existing[0].content)]))
    result = await Get(
        ProcessResult,
        FastpexProcess.create(
            lock_argv(req, fastpex, python_repos, has_existing_lock=bool(existing)),
            description=f"Lock the resolve `{req.resolve_name}` with fastpex for {', '.join(req.targets)}",
            input_digest=input_digest,
            output_files=(LOCK_OUTPUT, PYLOCK_OUTPUT),
            # Like Pants' own lock generation: never replay a lock from the process cache, so
            # a lock always reflects the index as it is now.
            cache_scope=ProcessCacheScope.PER_SESSION,
        ),
    )
    outputs = {fc.path: fc.content for fc in await Get(DigestContents, Digest, result.output_digest)}
    lockfile = pants_lockfile(
        req,
        outputs[LOCK_OUTPUT],
        manylinux=python_setup.manylinux,
        regenerate_command=(
            generate_lockfiles_subsystem.custom_command
            or f"{bin_name()} generate-lockfiles --resolve={req.resolve_name}"
        ),
    )
    pylock = FileContent(pylock_path(req.lockfile_dest, req.resolve_name), outputs[PYLOCK_OUTPUT])
    digest = await Get(Digest, CreateDigest([FileContent(req.lockfile_dest, lockfile), pylock]))
    return GenerateLockfileResult(digest, req.resolve_name, req.lockfile_dest, diff=None)


def rules():
    return [
        *collect_rules(),
        UnionRule(KnownUserResolveNamesRequest, KnownFastpexResolveNamesRequest),
        UnionRule(RequestedUserResolveNames, RequestedFastpexResolveNames),
        UnionRule(GenerateLockfile, GenerateFastpexLockfile),
    ]
