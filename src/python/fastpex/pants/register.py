"""fastpex: a Pants backend that locks, fetches and packs large Python dependency sets fast."""

from fastpex.pants import subsystem


def rules():
    return [*subsystem.rules()]


def target_types():
    return []
