"""fastpex: a Pants backend that locks, fetches and packs large Python dependency sets fast."""

from fastpex.pants import claim_resolves, lockfiles, subsystem, tool

claim_resolves.install(lockfiles.RequestedFastpexResolveNames)


def rules():
    return [*lockfiles.rules(), *subsystem.rules(), *tool.rules()]


def target_types():
    return []
