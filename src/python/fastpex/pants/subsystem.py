"""The `[fastpex]` options scope."""

from __future__ import annotations

from pants.engine.rules import collect_rules
from pants.option.subsystem import Subsystem


class FastpexSubsystem(Subsystem):
    options_scope = "fastpex"
    help = "fastpex: lock, fetch and pack Python dependency sets (e.g. torch + CUDA) fast."


def rules():
    return [*collect_rules()]
