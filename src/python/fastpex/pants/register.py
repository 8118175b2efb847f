"""fastpex: a Pants backend that locks, fetches and packs large Python dependency sets fast."""

from fastpex.pants import claim_resolves, dependency_inference, lockfiles, package, subsystem, tool
from fastpex.pants.target_types import FastpexBinary

claim_resolves.install(lockfiles.RequestedFastpexResolveNames)


def rules():
    return [
        *dependency_inference.rules(),
        *lockfiles.rules(),
        *package.rules(),
        *subsystem.rules(),
        *tool.rules(),
    ]


def target_types():
    return [FastpexBinary]
