"""The `fastpex_binary` target: a `pex_binary` built from a fastpex lock by copying layers.

It reuses the python backend's own fields where they mean the same thing (entry point,
script, env, args, resolve, interpreter constraints...), so dependency inference from the
entry point and the help text a `pex_binary` user knows carry over unchanged.
"""

from __future__ import annotations

from typing import Optional

from pants.backend.python.target_types import (
    EntryPointField,
    InterpreterConstraintsField,
    PexArgsField,
    PexEnvField,
    PexExecutionModeField,
    PexInheritPathField,
    PexScriptField,
    PexShebangField,
    PexStripEnvField,
    PythonResolveField,
)
from pants.core.goals.package import OutputPathField
from pants.engine.addresses import Address
from pants.engine.target import (
    COMMON_TARGET_FIELDS,
    BoolField,
    Dependencies,
    IntField,
    InvalidFieldException,
    StringField,
    StringSequenceField,
    Target,
)
from pants.util.strutil import help_text


class FastpexEntryPointField(EntryPointField):
    # Not `PexEntryPointField`: that would make the builtin `pex_binary` packaging claim this
    # target too. Dependency inference from it is `fastpex.pants.util_rules.dependency_inference`.
    pass


class FastpexBinaryDependenciesField(Dependencies):
    pass


class FastpexTargetsField(StringSequenceField):
    alias = "targets"
    help = help_text(
        """
        The lock targets (platform + interpreter, e.g. `linux_x86_64-cp311`) this PEX must run
        on. Each must be one of the targets the resolve was locked for (`[fastpex].targets`).
        Several targets make a multi-platform PEX. Default: the lock's first target.
        """
    )


class FastpexLayoutField(StringField):
    alias = "layout"
    valid_choices = ("zipapp", "packed", "split")
    default = "zipapp"
    help = help_text(
        """
        `zipapp`: one executable file. `packed`: a directory whose dependency zips are
        hard-linked from fastpex's layer cache (cheap to sync; no 4 GiB / 65,535-entry zip
        limits). `split`: a packed PEX written as two directories, `deps/` and `srcs/`, for two
        container image layers; a source change leaves `deps/` byte-identical. Copy both into
        one directory to run it.
        """
    )


class FastpexCompressionLevelField(IntField):
    alias = "compression_level"
    default = None
    help = help_text(
        """
        Deflate level (0-9) of the dependency layers and sources. Default:
        `[fastpex].compression_level`. Layers are compressed once per wheel and level, then
        cached.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[int], address: Address) -> Optional[int]:
        value = super().compute_value(raw_value, address)
        if value is not None and not 0 <= value <= 9:
            raise InvalidFieldException(
                f"The `{cls.alias}` field of {address} must be between 0 and 9, not {value}."
            )
        return value


class FastpexIncludeToolsField(BoolField):
    alias = "include_tools"
    default = True
    help = help_text(
        """
        Include pex's tools in the bootstrap, so `PEX_TOOLS=1 ./app.pex info` and
        `PEX_TOOLS=1 ./app.pex venv DIR` work.
        """
    )


class FastpexBinary(Target):
    alias = "fastpex_binary"
    core_fields = (
        *COMMON_TARGET_FIELDS,
        OutputPathField,
        FastpexBinaryDependenciesField,
        FastpexEntryPointField,
        PexScriptField,
        PythonResolveField,
        InterpreterConstraintsField,
        FastpexTargetsField,
        FastpexLayoutField,
        FastpexCompressionLevelField,
        PexEnvField,
        PexArgsField,
        PexExecutionModeField,
        PexInheritPathField,
        PexStripEnvField,
        PexShebangField,
        FastpexIncludeToolsField,
    )
    help = help_text(
        """
        A PEX built by fastpex from the resolve's fastpex lock: the target platforms' wheels are
        fetched in parallel into a verified content-addressed cache, each wheel becomes a
        pre-compressed layer once, and the PEX is assembled by copying those bytes.
        """
    )
