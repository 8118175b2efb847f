"""fastpex: a Pants backend that locks, fetches and packs large Python dependency sets fast."""

from fastpex.pants.goals import claim_resolves, image, lockfiles, package, publish
from fastpex.pants.subsystems import fastpex
from fastpex.pants.target_types import FastpexBinary, FastpexImage, FastpexPythonBase
from fastpex.pants.util_rules import dependency_inference, tool

claim_resolves.install(lockfiles.RequestedFastpexResolveNames)


def rules():
    return [
        *dependency_inference.rules(),
        *lockfiles.rules(),
        *package.rules(),
        *image.rules(),
        *publish.rules(),
        *fastpex.rules(),
        *tool.rules(),
    ]


def target_types():
    return [FastpexBinary, FastpexImage, FastpexPythonBase]
