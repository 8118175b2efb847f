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
    DictStringToStringField,
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


class FastpexDepsInstallField(StringField):
    alias = "deps_install"
    valid_choices = ("preinstalled", "wheels")
    default = "preinstalled"
    help = help_text(
        """
        How the PEX stores its dependencies. `preinstalled` (pex's default): each wheel's
        installed files, which the first start with an empty `PEX_ROOT` extracts (one wheel
        over `max_install_jobs` processes). `wheels` (pex's `--no-pre-install-wheels`): the
        wheel files themselves, stored uncompressed in the PEX (they are compressed already),
        which pex's own runtime installs, also over `max_install_jobs` processes, on first start. `wheels` builds faster
        (no install at build time: a copy per wheel) and is about as large; the first start is
        as fast as `preinstalled` with the same `max_install_jobs`, and later starts are the
        same. Both run under pex's runtime, `PEX_TOOLS=1` included.
        """
    )


class FastpexMaxInstallJobsField(IntField):
    alias = "max_install_jobs"
    default = None
    help = help_text(
        """
        PEX-INFO's `max_install_jobs`: how many processes pex's runtime installs the
        dependencies with on first start (1: one at a time, N: N processes, 0: one per core,
        -1: pex's own heuristic). Applies to both `deps_install` kinds. Default: 0, one per
        core (pex's own default is 1: on 2 cores that made the torch app's first start 63.8 s
        against 38.9 s). `PEX_MAX_INSTALL_JOBS` overrides it at run time.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[int], address: Address) -> Optional[int]:
        value = super().compute_value(raw_value, address)
        if value is not None and value < -1:
            raise InvalidFieldException(
                f"The `{cls.alias}` field of {address} must be -1 or greater, not {value}."
            )
        return value


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
        FastpexDepsInstallField,
        FastpexMaxInstallJobsField,
    )
    help = help_text(
        """
        A PEX built by fastpex from the resolve's fastpex lock: the target platforms' wheels are
        fetched in parallel into a verified content-addressed cache, each wheel becomes a
        pre-compressed layer once, and the PEX is assembled by copying those bytes.
        """
    )


# --- Container images (issue 13): `fastpex_image` and the base it can be built on. ---


class FastpexImageBinaryField(StringField):
    alias = "binary"
    required = True
    help = help_text(
        """
        The address of the `fastpex_binary` this image runs (e.g. `src/app:app`). Its entry point
        or script, resolve, `targets`, interpreter constraints, sources and dependencies make the
        image: one layer per large wheel, grouped layers for the small ones, and a last layer for
        the application's sources. Its `args` become the image's `Cmd`.
        """
    )


class FastpexImageDependenciesField(Dependencies):
    # The `binary` and a `fastpex_python_base` named by `base` are added by inference, so
    # `pants dependencies` and `--changed-dependents` see them.
    pass


class FastpexImageBaseField(StringField):
    alias = "base"
    required = True
    help = help_text(
        """
        The base image: the address of a `fastpex_python_base` target (built by Pants from a
        local interpreter), or a registry reference pinned by digest,
        `HOST[:PORT]/REPO[:TAG]@sha256:HEX` (pulled over the OCI distribution API and verified).
        A reference without `@sha256:` is refused: Pants caches the image by its inputs, so the
        base must not be whatever a tag points to today. The base's Python must have the
        binary's target Python's minor version.
        """
    )


class FastpexImageRepositoryField(StringField):
    alias = "repository"
    help = help_text(
        """
        Where `pants publish` pushes the image: `HOST[:PORT]/REPO`, without a tag (tags come from
        `image_tags`). Plain HTTP is used only for loopback registries or those in
        `[fastpex].insecure_registries`. Unset: `publish` skips this image.
        """
    )


class FastpexImageTagsField(StringSequenceField):
    # Not `tags`: every target has Pants' own `tags` field (labels for filtering targets).
    alias = "image_tags"
    default = ("latest",)
    help = help_text(
        """
        The image tags `pants publish` pushes the image under (`repository:tag` for each). The first
        one also names the image inside the OCI layout in `dist/` (its
        `org.opencontainers.image.ref.name`), e.g. for `umoci unpack --image DIR:TAG` or
        `skopeo copy oci:DIR:TAG ...`.
        """
    )


class FastpexImageEnvField(DictStringToStringField):
    alias = "image_env"
    help = help_text(
        """
        Environment variables set in the image's config (`Env`), on top of the base's and the
        `PATH`/`VIRTUAL_ENV` fastpex sets for the image's venv.
        """
    )


class FastpexImageWorkdirField(StringField):
    alias = "workdir"
    help = "The working directory of the image's process (`WorkingDir`). Default: the base's."


class FastpexImageUserField(StringField):
    alias = "user"
    help = help_text(
        """
        The user (`NAME`, `UID` or `UID:GID`) the image's process runs as (`User`). Default: the
        base's.
        """
    )


class FastpexImageLabelsField(DictStringToStringField):
    alias = "labels"
    help = "Labels written to the image's config (`Labels`), e.g. `org.opencontainers.image.source`."


class FastpexImageCompressionLevelField(FastpexCompressionLevelField):
    help = help_text(
        """
        Compression level (0-9) of the image's layer blobs. Default: `[fastpex].compression_level`.
        Each dependency layer is compressed once per wheel and level, then cached: the level
        costs time only on the first build of each wheel.
        """
    )


class _PositiveIntField(IntField):
    default = None

    @classmethod
    def compute_value(cls, raw_value: Optional[int], address: Address) -> Optional[int]:
        value = super().compute_value(raw_value, address)
        if value is not None and value < 1:
            raise InvalidFieldException(
                f"The `{cls.alias}` field of {address} must be a positive integer, not {value}."
            )
        return value


class FastpexImageLargeLayerMbField(_PositiveIntField):
    alias = "large_layer_mb"
    help = help_text(
        """
        Wheels that install more than this many MB get a layer each (torch, nvidia-*);
        smaller ones share grouped layers. Default: fastpex's.
        """
    )


class FastpexImageSmallLayerGroupsField(_PositiveIntField):
    alias = "small_layer_groups"
    help = help_text(
        """
        How many layers the small wheels are grouped into, by a stable rule (adding or removing
        one wheel changes at most one group). Keeps the layer count well under the 127 limit.
        Default: fastpex's.
        """
    )


class FastpexImage(Target):
    alias = "fastpex_image"
    core_fields = (
        *COMMON_TARGET_FIELDS,
        OutputPathField,
        FastpexImageDependenciesField,
        FastpexImageBinaryField,
        FastpexImageBaseField,
        FastpexImageRepositoryField,
        FastpexImageTagsField,
        FastpexImageEnvField,
        FastpexImageWorkdirField,
        FastpexImageUserField,
        FastpexImageLabelsField,
        FastpexImageCompressionLevelField,
        FastpexImageLargeLayerMbField,
        FastpexImageSmallLayerGroupsField,
    )
    help = help_text(
        """
        An OCI container image of a `fastpex_binary`, written by `pants package` as an OCI image
        layout directory in `dist/` and pushed by `pants publish`: the base image, one cached
        layer per large wheel installed in a venv (byte code precompiled, nothing extracted at
        start), grouped layers for small wheels, and the application's sources last. No Docker
        engine is needed. A source-only change rebuilds and pushes only the last layer.
        """
    )


class FastpexPythonBaseInterpreterConstraintsField(InterpreterConstraintsField):
    help = help_text(
        """
        Which of this machine's CPython installs the base holds: Pants finds one that matches
        (as for any Python process, `[python-bootstrap].search_path`). Default:
        `[python].interpreter_constraints`. Its minor version must be the image's target Python's.
        """
    )


class FastpexPythonBase(Target):
    alias = "fastpex_python_base"
    core_fields = (*COMMON_TARGET_FIELDS, FastpexPythonBaseInterpreterConstraintsField)
    help = help_text(
        """
        A minimal base image for `fastpex_image` (its `base` field names this target), made by the
        build: a local CPython install matching `interpreter_constraints` and the shared libraries
        it needs, as an OCI layout. No registry or Docker engine involved. For production, prefer
        a registry base pinned by digest.
        """
    )
