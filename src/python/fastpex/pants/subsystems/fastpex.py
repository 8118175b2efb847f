"""The `[fastpex]` options scope: which resolves fastpex locks, for which targets, from where.

fastpex's core runs as a Python tool (like black or pytest in Pants): its requirements come
from the lockfile shipped with this plugin unless `[fastpex].install_from_resolve` says
otherwise; its own sources are added by `fastpex.pants.util_rules.tool`.
"""

from __future__ import annotations

from typing import ClassVar, Iterable, List, Sequence, Tuple

from pants.backend.python.subsystems.python_tool_base import PythonToolBase
from pants.backend.python.target_types import EntryPoint
from pants.backend.python.util_rules.lockfile import LockfileRules
from pants.engine.rules import collect_rules
from pants.option.option_types import BoolOption, DictOption, IntOption, StrListOption, StrOption
from pants.util.strutil import softwrap

from fastpex.versions import PEX_VERSION

DEFAULT_TARGETS = ("linux_x86_64-cp311",)
# Read in both spellings by fastpex's core (lower case first, as curl does), pip and curl.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


def with_both_proxy_spellings(env_vars: Iterable[str]) -> Tuple[str, ...]:
    """`env_vars` (`NAME` or `NAME=value` entries) with every proxy variable also in its other
    spelling (`HTTPS_PROXY` adds `https_proxy`, and the reverse), with the same value when one
    is set, unless that spelling is listed itself: a user who exported only `https_proxy` (the
    curl and pip habit) is not sent around the proxy because Pants asked for `HTTPS_PROXY`."""
    entries = list(env_vars)
    listed = {entry.partition("=")[0] for entry in entries}
    result: List[str] = []
    for entry in entries:
        result.append(entry)
        name, equals, value = entry.partition("=")
        if name.upper() not in PROXY_VARIABLES:
            continue
        other = name.lower() if name == name.upper() else name.upper()
        if other not in listed:
            listed.add(other)
            result.append(f"{other}{equals}{value}")
    return tuple(result)


class FastpexSubsystem(PythonToolBase):
    options_scope = "fastpex"
    name = "fastpex"
    help = softwrap(
        """
        fastpex locks, fetches and packs Python dependency sets (e.g. torch + CUDA) fast: locks
        with pip without downloading artifacts, fetches one platform's artifacts in parallel into
        a verified content-addressed cache, and packs PEX files from pre-compressed layers.
        """
    )

    # The core's runtime: `pex` provides the PEX runtime and PEX-INFO, `pip` resolves.
    default_version = f"pex=={PEX_VERSION}"
    default_extra_requirements: ClassVar[Sequence[str]] = ["packaging==26.4", "pip==26.3"]
    default_requirements: Sequence[str] = [default_version, *default_extra_requirements]
    default_main = EntryPoint("fastpex.core.cli.main", "main")
    default_interpreter_constraints: ClassVar[Sequence[str]] = ["CPython>=3.10,<3.14"]
    register_interpreter_constraints = True
    lockfile_rules_type = LockfileRules.SIMPLE
    default_lockfile_resource = ("fastpex.pants", "fastpex_tool.lock")

    resolves = StrListOption(
        default=[],
        help=softwrap(
            """
            The `[python].resolves` whose lockfiles fastpex generates (`pants generate-lockfiles
            --resolve=NAME`). The lockfile is written in the format Pants' own python goals read,
            so `test`, `run` and `pex_binary` keep working on the same resolve. Requires
            `[python].resolves_generate_lockfiles = false` and `fastpex.pants` listed before
            `pants.backend.python` in `[GLOBAL].backend_packages`.
            """
        ),
    )
    targets = StrListOption(
        default=list(DEFAULT_TARGETS),
        help=softwrap(
            """
            The platforms a fastpex lock resolves for, as `<platform>-cp<XY>` strings, e.g.
            `linux_x86_64-cp311`, `linux_aarch64-cp312`, `macosx_arm64-cp311`. A glibc or macOS
            version may follow an `@`: `linux_x86_64-cp311@glibc2.28`, `macosx_arm64-cp311@14.0`.
            Each target is resolved with its own tags and marker environment.
            """
        ),
    )
    resolve_targets = DictOption[list](
        default={},
        help="Per-resolve override of `targets`: `{resolve_name: [target, ...]}`.",
    )
    indexes = StrListOption(
        default=None,
        help=softwrap(
            """
            Package indexes (PEP 503/691 simple URLs) to lock from, in order. Defaults to
            `[python-repos].indexes`. Credentials may be given as `https://user:${TOKEN}@host/...`
            (expanded from the environment at run time) or in `~/.netrc`; they never reach the
            lockfile or a log line.
            """
        ),
    )
    index_names = StrListOption(
        default=[],
        help=softwrap(
            """
            Names for `indexes`, in the same order (`pypi`, `cuda`, ...), used by `routes`.
            Unnamed indexes are called `index0`, `index1`, ...
            """
        ),
    )
    find_links = StrListOption(
        default=None,
        help="Local directories of wheels to lock from. Defaults to `[python-repos].find_links`.",
    )
    routes = StrListOption(
        default=[],
        help=softwrap(
            """
            Per-package and per-platform index routing, first match wins, as
            `PROJECTS=INDEXES[@TARGETS]`, e.g. `torch,nvidia-*=cuda@linux_*` takes torch and the
            nvidia packages from the index named `cuda` for linux targets only. Projects without a
            route come from the first index (in `indexes` order) that has them.
            """
        ),
    )
    upload_cutoff = StrOption(
        default=None,
        help=softwrap(
            """
            Ignore files uploaded after this date (ISO 8601, e.g. `2025-10-01` or
            `2025-10-01T12:00:00Z`): locks stay reproducible while the index moves on.
            """
        ),
    )
    allow_sdists = BoolOption(
        default=False,
        help=softwrap(
            """
            Let the lock choose source distributions when no wheel fits a target. The lock then
            records their build requirements, pinned, and `package` builds each sdist into a wheel
            once, with a local interpreter that matches the target's interpreter constraints.
            Off by default: builds run code from the sdist.
            """
        ),
    )
    upgrade = StrListOption(
        default=[],
        help=softwrap(
            """
            Re-lock minimally: keep every pin of the existing lockfile except for these projects,
            which are resolved afresh (`pants generate-lockfiles --fastpex-upgrade=torch`). Empty:
            a fresh lock, as Pants' builtin goal does.
            """
        ),
    )
    fetch_jobs = IntOption(
        default=None,
        help=softwrap(
            """
            How many artifacts to download at once. Default: 2 per core of the machine that
            runs the build, between 4 and 16 (downloads are CPU-bound on a fast link: more
            streams than that were measured slower on 2 cores).
            """
        ),
    )
    metadata_jobs = IntOption(
        default=16,
        help="How many core-metadata requests to run at once while locking.",
    )
    compression_level = IntOption(
        default=6,
        help=softwrap(
            """
            Deflate level (0-9) of the dependency layers. Layers are compressed once and cached,
            so this costs time only on the first build of each wheel.
            """
        ),
    )
    env_vars = StrListOption(
        default=[
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "all_proxy",
            "NETRC",
        ],
        help=softwrap(
            """
            Environment variables fastpex's processes see (`NAME` to copy it from Pants'
            environment, `NAME=value` to set it): trust stores, proxies, and the path of the
            `.netrc` that holds index credentials. A proxy variable (`HTTP_PROXY`,
            `HTTPS_PROXY`, `NO_PROXY`, `ALL_PROXY`) always goes in both spellings, upper and lower
            case (`https_proxy`, as curl and pip users set it), even when only one is listed;
            lower case wins when both are set. Values are part of the process cache key, so put
            no secrets here: keep tokens in `.netrc` (see docs/security.md).
            """
        ),
    )
    offline = BoolOption(
        default=False,
        help="Build from the warm artifact store only; fail if an artifact is missing.",
    )
    publish_env_vars = StrListOption(
        default=["DOCKER_CONFIG", "HOME", "NETRC"],
        help=softwrap(
            """
            The environment `pants publish` gives fastpex's image push, besides `env_vars`
            (`NAME` to copy it from Pants' environment, `NAME=value` to set it), as the docker
            backend's `[docker].env_vars`: registry credentials come from `$DOCKER_CONFIG/config.json`
            (else `$HOME/.docker/config.json`) `auths`, or from `$NETRC` (else `$HOME/.netrc`).
            The push sees nothing else of the environment; it is never cached, and credentials
            never reach a log line.
            """
        ),
    )
    insecure_registries = StrListOption(
        default=[],
        help=softwrap(
            """
            Registries (`HOST[:PORT]`) that `pants package` (pulling a base) and `pants publish`
            may reach over plain HTTP. Loopback registries (`127.0.0.1`, `localhost`, `[::1]`)
            are always allowed; every other registry needs HTTPS.
            """
        ),
    )
    reuse_unchanged_locks = BoolOption(
        default=True,
        help=softwrap(
            """
            When every input of a lock (requirements, targets, indexes, routes, options, the
            existing lockfile, fastpex's code) is the same as for a lock fastpex made before and
            every index page that lock read is byte-identical today, write that lock again
            instead of resolving (checking the pages takes one parallel GET each, no pip). Set
            to false to resolve anyway.
            """
        ),
    )


def rules():
    return [*collect_rules(), *FastpexSubsystem.rules()]
