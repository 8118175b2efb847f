"""The `[fastpex]` scope pins the pex the core is built for, and documents every option."""

from __future__ import annotations

from pants.option.option_types import _OptionBase

from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.target_types import FastpexBinary
from fastpex.versions import PEX_VERSION


def test_tool_pins_the_shared_pex_version() -> None:
    assert FastpexSubsystem.default_version == f"pex=={PEX_VERSION}"
    assert f"pex=={PEX_VERSION}" in FastpexSubsystem.default_requirements


def test_every_option_and_field_has_help() -> None:
    options = {
        name: value
        for cls in FastpexSubsystem.__mro__
        for name, value in vars(cls).items()
        if isinstance(value, _OptionBase)
    }
    assert {"resolves", "targets", "fetch_jobs", "reuse_unchanged_locks"} <= set(options)
    for name, option in options.items():
        assert option._help, name
    for field in FastpexBinary.core_fields:
        assert field.help, field.alias
