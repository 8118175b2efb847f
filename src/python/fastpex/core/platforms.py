"""Target platforms: `linux_x86_64-cp311` -> a `model.Target` (PEP 508 environment + PEP 425 tags).

A lock is made for targets that are not the machine running pip, so everything pip would read
from the running interpreter is computed here from the target string instead:

- the full PEP 508 marker environment (what `packaging.markers.default_environment()` returns on
  that target, with `platform_release`/`platform_version` left empty: they name a kernel build
  and no lock can know them);
- the PEP 425 tags, most preferred first, in the order `packaging.tags.sys_tags()` yields them
  on that target (`cpython_tags` + `compatible_tags` over the platform tags below).

Grammar (see `ACCEPTED_FORMS`)::

    <platform>-<python>[@<option>[,<option>...]]

    platform  linux_x86_64 linux_aarch64 linux_ppc64le linux_s390x linux_armv7l linux_i686
              macosx_arm64 macosx_x86_64 win_amd64 win_arm64
    python    cp311 | cp3.11 | cp3.11.9 (patch for `python_full_version`) | cp313t (free-threaded)
    options   glibc2.34   Linux: newest glibc of the target (manylinux tags); default 2.28
                          (a bare `@2.34` means glibc on Linux, macOS on macOS)
              musl1.2     Linux: a musl target (musllinux tags instead of manylinux)
              macos14.0   macOS: oldest macOS the target must run on; default 13.0 (as uv's),
                          which every current scikit-learn/scipy/torch arm64 wheel accepts
                          (11.0 finds no scikit-learn wheel at all: they are macosx_12_0_arm64)

A platform without `-<python>` is accepted by `expand_targets` together with a list of Python
versions (e.g. derived from interpreter constraints by `python_versions_for_constraints`).

A lock resolves each target at the lowest patch its interpreter constraints admit
(`admitted_patches`, `at_lowest_admitted_patch`; see docs/lockfile.md): the lock's header admits
every such patch, so the lock must hold on the oldest of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import compatible_tags, cpython_tags, mac_platforms
from packaging.version import Version

from fastpex.core.errors import UserError
from fastpex.core.model import Target

__all__ = [
    "ACCEPTED_FORMS",
    "DEFAULT_GLIBC",
    "DEFAULT_MACOS",
    "DEFAULT_PYTHON_PATCH",
    "InterpreterConstraintError",
    "KNOWN_PLATFORMS",
    "MAX_PATCH",
    "PYTHON_UNIVERSE",
    "PlatformSpec",
    "UnknownPlatformError",
    "admitted_patches",
    "at_lowest_admitted_patch",
    "expand_targets",
    "host_target_name",
    "parse_platform",
    "parse_target",
    "python_versions_for_constraints",
    "target_marker",
    "target_names_patch",
    "with_python_patch",
]

DEFAULT_GLIBC = (2, 28)  # manylinux_2_28: what current ML wheels (torch, ...) are built for; uv's default too
DEFAULT_MACOS = {"arm64": (13, 0), "x86_64": (13, 0)}  # 13.0 accepts every 10.x-12.x wheel too
# The patch release `parse_target` gives a target's `python_full_version` unless the string names
# one: recent releases, as on an up-to-date image. A lock does not resolve at these: it resolves
# at the lowest patch its interpreter constraints admit (`at_lowest_admitted_patch`), since its
# header admits that patch too; bug-fix guards such as `foo; python_full_version < "3.11.4"`
# then pull `foo` into the lock, and the marker, kept in the lock, leaves it out on 3.11.4+.
DEFAULT_PYTHON_PATCH = {
    (3, 8): 20,
    (3, 9): 25,
    (3, 10): 19,
    (3, 11): 14,
    (3, 12): 12,
    (3, 13): 9,
    (3, 14): 0,
}
# The CPython minor versions interpreter constraints are expanded over.
PYTHON_UNIVERSE = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
# The patches of a minor version that interpreter constraints are checked over: 0..MAX_PATCH.
MAX_PATCH = 30


@dataclass(frozen=True)
class _OS:
    os_name: str
    sys_platform: str
    platform_system: str


_LINUX = _OS("posix", "linux", "Linux")
_MACOS = _OS("posix", "darwin", "Darwin")
_WINDOWS = _OS("nt", "win32", "Windows")

# platform -> (os, tag arch, `platform.machine()` on that platform)
KNOWN_PLATFORMS: Mapping[str, Tuple[_OS, str, str]] = {
    "linux_x86_64": (_LINUX, "x86_64", "x86_64"),
    "linux_aarch64": (_LINUX, "aarch64", "aarch64"),
    "linux_ppc64le": (_LINUX, "ppc64le", "ppc64le"),
    "linux_s390x": (_LINUX, "s390x", "s390x"),
    "linux_armv7l": (_LINUX, "armv7l", "armv7l"),
    "linux_i686": (_LINUX, "i686", "i686"),
    "macosx_arm64": (_MACOS, "arm64", "arm64"),
    "macosx_x86_64": (_MACOS, "x86_64", "x86_64"),
    "win_amd64": (_WINDOWS, "amd64", "AMD64"),
    "win_arm64": (_WINDOWS, "arm64", "ARM64"),
}

ACCEPTED_FORMS = (
    "<platform>-<python>[@<option>,...] where <platform> is one of "
    + ", ".join(sorted(KNOWN_PLATFORMS))
    + "; <python> is cpXY, cpX.Y, cpX.Y.Z or cpXYt (free-threaded), e.g. cp311, cp3.11.9; "
    "options are glibcX.Y (Linux, default 2.28), muslX.Y (Linux, musllinux instead of "
    "manylinux) and macosX.Y (macOS, default 13.0). "
    "Examples: `linux_x86_64-cp311`, `linux_aarch64-cp312@glibc2.34`, `macosx_arm64-cp311@macos14.0`"
)

_PYTHON_RE = re.compile(r"^cp(?:(?P<nodot>3)(?P<nodot_minor>\d{1,2})|(?P<major>3)\.(?P<minor>\d{1,2})(?:\.(?P<patch>\d{1,3}))?)(?P<t>t?)$")
_OPTION_RE = re.compile(r"^(?P<kind>glibc|musl|macos|macosx)?(?P<major>\d+)\.(?P<minor>\d+)$")


class InterpreterConstraintError(UserError, ValueError):
    """An interpreter constraint that is malformed or names an interpreter other than CPython."""


class UnknownPlatformError(UserError, ValueError):
    """A target string that does not name a supported platform; the message lists the forms."""

    def __init__(self, spec: str, problem: str) -> None:
        self.spec = spec
        super().__init__(f"Unknown target platform `{spec}`: {problem}. Accepted forms: {ACCEPTED_FORMS}")


@dataclass(frozen=True)
class PlatformSpec:
    """A parsed platform (without Python): `linux_x86_64@glibc2.34`."""

    platform: str
    glibc: Optional[Tuple[int, int]] = None  # Linux manylinux; None with musl
    musl: Optional[Tuple[int, int]] = None
    macos: Optional[Tuple[int, int]] = None
    explicit_options: Tuple[str, ...] = ()  # canonical option strings the user gave

    @property
    def os(self) -> _OS:
        return KNOWN_PLATFORMS[self.platform][0]

    @property
    def arch(self) -> str:
        return KNOWN_PLATFORMS[self.platform][1]

    @property
    def machine(self) -> str:
        return KNOWN_PLATFORMS[self.platform][2]

    def platform_tags(self) -> List[str]:
        """Platform tags, most preferred first, as `packaging.tags` orders them on the target."""
        if self.os is _LINUX:
            tags = [f"linux_{self.arch}"]  # packaging >= 26.3 ranks native linux_* first
            if self.musl is not None:
                tags.extend(f"musllinux_{self.musl[0]}_{m}_{self.arch}" for m in range(self.musl[1], -1, -1))
            else:
                tags.extend(_manylinux_tags(self.arch, self.glibc or DEFAULT_GLIBC))
            return tags
        if self.os is _MACOS:
            return list(mac_platforms(self.macos or DEFAULT_MACOS[self.arch], self.arch))
        return [f"win_{self.arch}"]


def _manylinux_tags(arch: str, glibc: Tuple[int, int]) -> Iterator[str]:
    """`packaging._manylinux.platform_tags` for a given glibc instead of the running one."""
    # Oldest glibc supported: 2.17, or 2.5 on x86 (manylinux1).
    too_old_minor = 4 if arch in ("x86_64", "i686") else 16
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    major, newest = glibc
    if major != 2:
        return
    for minor in range(newest, too_old_minor, -1):
        yield f"manylinux_2_{minor}_{arch}"
        if minor in legacy:
            yield f"{legacy[minor]}_{arch}"


def parse_platform(spec: str, *, _whole: Optional[str] = None) -> PlatformSpec:
    """`linux_x86_64`, `linux_x86_64@glibc2.34`, `macosx_arm64@macos14.0`, ..."""
    platform, _, options = spec.strip().partition("@")
    spec = _whole or spec
    if platform not in KNOWN_PLATFORMS:
        raise UnknownPlatformError(spec, f"`{platform}` is not a known platform")
    os_ = KNOWN_PLATFORMS[platform][0]
    glibc: Optional[Tuple[int, int]] = None
    musl: Optional[Tuple[int, int]] = None
    macos: Optional[Tuple[int, int]] = None
    explicit = []
    for raw in filter(None, (o.strip() for o in options.split(","))) if options else ():
        match = _OPTION_RE.match(raw)
        if not match:
            raise UnknownPlatformError(spec, f"`{raw}` is not a known option")
        # A bare version means the platform's own kind: glibc on Linux, macOS on macOS.
        kind = match["kind"] or ("glibc" if os_ is _LINUX else "macos")
        version = (int(match["major"]), int(match["minor"]))
        if kind == "glibc" and os_ is _LINUX:
            if version[0] != 2 or version[1] < 5:
                raise UnknownPlatformError(spec, f"glibc `{raw}` must be 2.5 or newer")
            glibc = version
            explicit.append(f"glibc{version[0]}.{version[1]}")
        elif kind == "musl" and os_ is _LINUX:
            if version[0] != 1:
                raise UnknownPlatformError(spec, f"musl `{raw}` must be 1.x")
            musl = version
            explicit.append(f"musl{version[0]}.{version[1]}")
        elif kind in ("macos", "macosx") and os_ is _MACOS:
            if version < (10, 4):
                raise UnknownPlatformError(spec, f"macOS `{raw}` must be 10.4 or newer")
            macos = version
            explicit.append(f"macos{version[0]}.{version[1]}")
        else:
            raise UnknownPlatformError(spec, f"option `{raw}` does not apply to `{platform}`")
    if glibc is not None and musl is not None:
        raise UnknownPlatformError(spec, "a target is either glibc or musl, not both")
    if os_ is _LINUX and musl is None:
        glibc = glibc or DEFAULT_GLIBC
    if os_ is _MACOS:
        macos = macos or DEFAULT_MACOS[KNOWN_PLATFORMS[platform][1]]
    return PlatformSpec(platform, glibc=glibc, musl=musl, macos=macos, explicit_options=tuple(sorted(explicit)))


def _parse_python(spec: str, python: str) -> Tuple[Tuple[int, int], Optional[int], bool]:
    match = _PYTHON_RE.match(python)
    lowest, highest = (tuple(int(x) for x in v.split(".")) for v in (PYTHON_UNIVERSE[0], PYTHON_UNIVERSE[-1]))
    supported = (
        f"fastpex supports CPython {PYTHON_UNIVERSE[0]} to {PYTHON_UNIVERSE[-1]}: cp{''.join(map(str, lowest))} "
        f"to cp{''.join(map(str, highest))}, or cp3.11 and cp3.11.9 to name a minor and a patch"
    )
    if not match or (3, int(match["nodot_minor"] or match["minor"])) > highest:
        raise UnknownPlatformError(spec, f"`{python}` is not a supported CPython version; {supported}")
    if match["nodot"]:
        version = (3, int(match["nodot_minor"]))
        patch = None
    else:
        version = (3, int(match["minor"]))
        patch = int(match["patch"]) if match["patch"] is not None else None
    if version < (3, 8):
        raise UnknownPlatformError(spec, f"Python {version[0]}.{version[1]} is too old (3.8 or newer)")
    threaded = bool(match["t"])
    if threaded and version < (3, 13):
        raise UnknownPlatformError(spec, "free-threaded CPython (`t`) exists from 3.13 on")
    return version, patch, threaded


def parse_target(spec: str, *, python_patch: Optional[int] = None) -> Target:
    """Parse `linux_x86_64-cp311[@options]` into a `Target` named canonically.

    `python_patch` sets the patch level of `python_full_version` when the string has none
    (default: `DEFAULT_PYTHON_PATCH`, else 0).
    """
    text = spec.strip()
    head, at, options = text.partition("@")
    platform, dash, python = head.rpartition("-")
    if not dash or not platform:
        raise UnknownPlatformError(
            spec, "it names no Python (append e.g. `-cp311`, or give Python versions separately)"
        )
    plat = parse_platform(platform + (at + options if at else ""), _whole=spec)
    version, patch, threaded = _parse_python(spec, python)
    if patch is None:
        patch = python_patch if python_patch is not None else DEFAULT_PYTHON_PATCH.get(version, 0)
        python_token = f"cp{version[0]}{version[1]}"
    else:
        python_token = f"cp{version[0]}.{version[1]}.{patch}"
    python_token += "t" if threaded else ""
    name = f"{plat.platform}-{python_token}"
    if plat.explicit_options:
        name += "@" + ",".join(plat.explicit_options)
    return _build_target(name, plat, version, patch, threaded)


def _build_target(
    name: str, plat: PlatformSpec, version: Tuple[int, int], patch: int, threaded: bool
) -> Target:
    python_version = f"{version[0]}.{version[1]}"
    full_version = f"{python_version}.{patch}"
    env = {
        "implementation_name": "cpython",
        "implementation_version": full_version,
        "os_name": plat.os.os_name,
        "platform_machine": plat.machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": plat.os.platform_system,
        "platform_version": "",
        "python_full_version": full_version,
        "python_version": python_version,
        "sys_platform": plat.os.sys_platform,
    }
    abi = f"cp{version[0]}{version[1]}" + ("t" if threaded else "")
    platforms = plat.platform_tags()
    tags = [str(t) for t in cpython_tags(version, [abi], platforms)]
    tags += [str(t) for t in compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)]
    return Target(
        name=name,
        platform=plat.platform,
        python_version=python_version,
        marker_environment=env,
        supported_tags=tuple(_dedupe(tags)),
    )


def _dedupe(items: Iterable[str]) -> Iterator[str]:
    seen = set()
    for item in items:
        if item not in seen:
            seen.add(item)
            yield item


def python_versions_for_constraints(
    constraints: Sequence[str], universe: Sequence[str] = PYTHON_UNIVERSE
) -> List[str]:
    """The `X.Y` CPython versions of `universe` that any Pants-style interpreter constraint admits.

    `CPython>=3.9,<3.14` and `>=3.9,<3.14` are both accepted; several constraints are OR'ed
    (as Pants does). A minor version is admitted if any patch of it matches.
    """
    out = []
    specs = [_constraint_specifier(c) for c in constraints]
    for minor in universe:
        candidates = [Version(f"{minor}.{p}") for p in range(0, 31)]
        if not specs or any(any(spec.contains(v, prereleases=True) for v in candidates) for spec in specs):
            out.append(minor)
    return out


def _constraint_specifier(constraint: str) -> SpecifierSet:
    text = constraint.strip()
    match = re.match(r"^\s*([A-Za-z][A-Za-z0-9_.-]*)?\s*(.*)$", text)
    assert match is not None
    impl, rest = match.group(1), match.group(2)
    if impl and impl.lower() not in ("cpython", "python"):
        raise InterpreterConstraintError(f"interpreter constraint `{constraint}`: only CPython targets are supported")
    try:
        return SpecifierSet(rest)
    except InvalidSpecifier as e:
        raise InterpreterConstraintError(f"interpreter constraint `{constraint}` is invalid: {e}") from e


def admitted_patches(python_version: str, constraints: Sequence[str]) -> List[int]:
    """The patches 0..MAX_PATCH of CPython `python_version` (`3.11`) that any of the (OR'ed)
    interpreter constraints admits, `!=` exclusions honoured; every one with no constraints
    (the lock header then says `CPython==3.11.*`)."""
    specs = [_constraint_specifier(c) for c in constraints]
    return [
        patch
        for patch in range(MAX_PATCH + 1)
        if not specs or any(s.contains(Version(f"{python_version}.{patch}"), prereleases=True) for s in specs)
    ]


_NAMED_PATCH_RE = re.compile(r"-cp3\.\d{1,2}\.\d{1,3}t?(?:@|$)")


def target_names_patch(target: Target) -> bool:
    """Did the target string name its patch (`linux_x86_64-cp3.11.9`)? Canonical names keep it."""
    return bool(_NAMED_PATCH_RE.search(target.name))


def with_python_patch(target: Target, patch: int) -> Target:
    """`target` with `python_full_version` (and `implementation_version`) at `X.Y.<patch>`."""
    full = f"{target.python_version}.{patch}"
    env = dict(target.marker_environment)
    env["python_full_version"] = full
    env["implementation_version"] = full
    return Target(
        name=target.name,
        platform=target.platform,
        python_version=target.python_version,
        marker_environment=env,
        supported_tags=target.supported_tags,
    )


def at_lowest_admitted_patch(target: Target, constraints: Sequence[str]) -> Target:
    """The target a lock resolves for: at the lowest patch of its minor that the interpreter
    constraints admit (0 without constraints, or when none of its patches is admitted), unless
    its string named a patch, which it keeps."""
    if target_names_patch(target):
        return target
    patches = admitted_patches(target.python_version, constraints)
    return with_python_patch(target, patches[0] if patches else 0)


def expand_targets(specs: Sequence[str], python_versions: Sequence[str] = ()) -> List[Target]:
    """Targets for `specs`; a spec without `-<python>` is crossed with `python_versions`.

    Duplicates (same canonical name) are dropped; order is kept.
    """
    out: Dict[str, Target] = {}
    for spec in specs:
        head = spec.partition("@")[0]
        if head.strip() in KNOWN_PLATFORMS:
            if not python_versions:
                raise UnknownPlatformError(
                    spec, "it names no Python; append e.g. `-cp311` or give interpreter constraints"
                )
            platform, at, options = spec.strip().partition("@")
            for version in python_versions:
                target = parse_target(f"{platform}-cp{version}{at}{options}")
                out.setdefault(target.name, target)
        else:
            target = parse_target(spec)
            out.setdefault(target.name, target)
    return list(out.values())


def target_marker(target: Target) -> str:
    """A PEP 508 marker that holds exactly on this target's platform + Python minor version."""
    env = target.marker_environment
    return (
        f'sys_platform == "{env["sys_platform"]}" and platform_machine == "{env["platform_machine"]}" '
        f'and python_version == "{env["python_version"]}"'
    )


def host_target_name() -> str:
    """The target string of the running interpreter (for messages and defaults)."""
    import platform as _platform
    import sys

    machine = _platform.machine()
    if sys.platform.startswith("linux"):
        plat = f"linux_{machine}"
    elif sys.platform == "darwin":
        plat = f"macosx_{machine}"
    else:
        plat = "win_amd64" if machine.lower() in ("amd64", "x86_64") else "win_arm64"
    return f"{plat}-cp{sys.version_info[0]}{sys.version_info[1]}"
