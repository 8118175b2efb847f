"""fastpex: a Pants backend that locks, fetches and packs large Python dependency sets fast."""

from fastpex.pants.goals import claim_resolves, lockfiles, package
from fastpex.pants.subsystems import fastpex
from fastpex.pants.target_types import FastpexBinary
from fastpex.pants.util_rules import dependency_inference, tool

claim_resolves.install(lockfiles.RequestedFastpexResolveNames)


def rules():
    return [
        *dependency_inference.rules(),
        *lockfiles.rules(),
        *package.rules(),
        *fastpex.rules(),
        *tool.rules(),
    ]


def target_types():
    return [FastpexBinary]
