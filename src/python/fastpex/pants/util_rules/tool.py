"""Run fastpex's core CLI (`python -m fastpex ...`) as a Pants `Process`.

The core is shipped with this plugin: its sources are read from the plugin's own package and
added to the tool PEX, whose third-party requirements come from `[fastpex]`'s lockfile. All
network and cache work happens in that process, against the `fastpex` named cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Tuple

from pants.backend.python.util_rules.pex import PexRequest, VenvPex, VenvPexProcess
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import CreateDigest, Digest, FileContent
from pants.engine.process import Process, ProcessCacheScope
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.util.logging import LogLevel

import fastpex
from fastpex.pants.subsystems.fastpex import FastpexSubsystem, with_both_proxy_spellings

NAMED_CACHE = "fastpex"
NAMED_CACHE_PATH = ".cache/fastpex"

# What the tool process needs of this package: the `python -m fastpex` entry and the whole core,
# every subpackage included (a module left out would fail only when its stage runs).
_TOOL_PACKAGES = ("core",)


@dataclass(frozen=True)
class FastpexToolSources:
    digest: Digest


@dataclass(frozen=True)
class FastpexProcess:
    """One run of the fastpex core CLI."""

    argv: Tuple[str, ...]
    description: str
    input_digest: Optional[Digest] = None
    output_files: Tuple[str, ...] = ()
    output_directories: Tuple[str, ...] = ()
    cache_scope: ProcessCacheScope = ProcessCacheScope.SUCCESSFUL
    extra_env: Tuple[Tuple[str, str], ...] = ()
    level: LogLevel = LogLevel.INFO

    @classmethod
    def create(
        cls,
        argv: Iterable[str],
        description: str,
        *,
        input_digest: Optional[Digest] = None,
        output_files: Iterable[str] = (),
        output_directories: Iterable[str] = (),
        cache_scope: ProcessCacheScope = ProcessCacheScope.SUCCESSFUL,
        extra_env: Optional[Mapping[str, str]] = None,
    ) -> "FastpexProcess":
        return cls(
            argv=tuple(argv),
            description=description,
            input_digest=input_digest,
            output_files=tuple(output_files),
            output_directories=tuple(output_directories),
            cache_scope=cache_scope,
            extra_env=tuple(sorted((extra_env or {}).items())),
        )


def _is_tool_module(relpath: Path) -> bool:
    return not (relpath.name.endswith("_test.py") or relpath.name == "conftest.py")


def core_files(root: Optional[Path] = None) -> Tuple[FileContent, ...]:
    """Every non-test module of the core, recursively, plus the package's entry files, from the
    `fastpex` package at `root` (default: the one this plugin was imported from)."""
    root = root or Path(fastpex.__file__).parent
    paths = sorted(root.glob("*.py"))
    for package in _TOOL_PACKAGES:
        paths.extend(sorted((root / package).rglob("*.py")))
    files = []
    for path in paths:
        relpath = path.relative_to(root)
        if _is_tool_module(relpath):
            files.append(FileContent((Path("fastpex") / relpath).as_posix(), path.read_bytes()))
    return tuple(files)


@rule(desc="Collect fastpex core sources", level=LogLevel.DEBUG)
async def fastpex_tool_sources() -> FastpexToolSources:
    # The core ships inside the plugin: its bytes are part of the plugin's version, like the
    # resources Pants' own backends read with `read_resource`.
    digest = await Get(Digest, CreateDigest(core_files()))
    return FastpexToolSources(digest)


@rule(desc="Set up a fastpex process", level=LogLevel.DEBUG)
async def setup_fastpex_process(
    request: FastpexProcess, fastpex_subsystem: FastpexSubsystem
) -> Process:
    sources, passthrough = await MultiGet(
        Get(FastpexToolSources),
        Get(
            EnvironmentVars,
            EnvironmentVarsRequest(with_both_proxy_spellings(fastpex_subsystem.env_vars)),
        ),
    )
    venv_pex = await Get(
        VenvPex, PexRequest, fastpex_subsystem.to_pex_request(sources=sources.digest)
    )
    # Bytecode is written: the tool's venv (core, pex, pip) lives in the `pex_root` named cache,
    # so its modules are compiled by the first run only. With PYTHONDONTWRITEBYTECODE every lock
    # compiled pip again in its zygote (~0.5 CPU-s) and the core in the tool process.
    env = {
        **passthrough,
        "FASTPEX_CACHE_DIR": NAMED_CACHE_PATH,
        **dict(request.extra_env),
    }
    return await Get(
        Process,
        VenvPexProcess(
            venv_pex,
            argv=request.argv,
            description=request.description,
            level=request.level,
            input_digest=request.input_digest,
            extra_env=env,
            output_files=request.output_files or None,
            output_directories=request.output_directories or None,
            cache_scope=request.cache_scope,
            append_only_caches={NAMED_CACHE: NAMED_CACHE_PATH},
        ),
    )


def rules():
    return [*collect_rules()]
