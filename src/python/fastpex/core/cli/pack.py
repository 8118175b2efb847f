"""`python -m fastpex pack`: build a PEX from wheels (via cached layers) and sources.

Example::

    python -m fastpex pack \\
        --wheel dist/six-1.16.0-py2.py3-none-any.whl=8abb2f1d...0254 \\
        --sources src/ --entry-point app:main \\
        --interpreter-constraint '>=3.9' --layout zipapp --output app.pex

User errors (bad arguments, missing/corrupt/unsafe/mismatched wheels, a zipapp that would need
ZIP64 for old Pythons...) exit with status 2 and a one-paragraph message on stderr; the output
path is then left untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from fastpex.core.cli.run import ArgumentParser, path_argument, run
from fastpex.core.errors import UsageError
from fastpex.core.pack.api import PackRequest, pack
from fastpex.core.pack.layers import WheelInput
from fastpex.core.pack.options import DEFAULT_SHEBANG, DEPS_INSTALLS, LAYOUTS, PARTS, PexOptions
from fastpex.core.util.hashing import sha256_file

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _parse_wheel(value: str) -> WheelInput:
    """`PATH[=SHA256]`; the suffix counts as a hash only if it is 64 hex digits."""
    path, sep, digest = value.rpartition("=")
    if sep and _SHA256.match(digest):
        return WheelInput(path=path_argument(path), sha256=digest.lower())
    if not os.path.isfile(value):
        raise UsageError(f"The wheel {value} does not exist.")
    # No expected hash given: the file is trusted as-is and its hash becomes the cache key.
    return WheelInput(path=path_argument(value), sha256=sha256_file(value))


def _parse_manifest(path: str) -> List[WheelInput]:
    """A JSON list (or `{"wheels": [...]}`) of `{"path", "sha256"[, "filename"]}` objects;
    relative paths are relative to the manifest's directory."""
    try:
        with open(path) as fp:
            data = json.load(fp)
    except (OSError, ValueError) as e:
        raise UsageError(f"Cannot read the wheels manifest {path}: {e}")
    if isinstance(data, dict):
        data = data.get("wheels")
    if not isinstance(data, list):
        raise UsageError(f"The wheels manifest {path} must be a JSON list of {{path, sha256}}.")
    base = os.path.dirname(os.path.abspath(path))
    wheels = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not _SHA256.match(
            str(item.get("sha256", ""))
        ):
            raise UsageError(
                f"Every entry of the wheels manifest {path} needs a `path` and a 64 hex digit "
                f"`sha256`; got {item!r}."
            )
        wheels.append(
            WheelInput(
                path=os.path.join(base, item["path"]),
                sha256=item["sha256"].lower(),
                filename=item.get("filename"),
            )
        )
    return wheels


def _parse_env(values: Sequence[str]) -> Dict[str, str]:
    env = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--inject-env takes KEY=VALUE, got {value!r}.")
        env[key] = val
    return env


def add_pex_options(parser: argparse.ArgumentParser) -> None:
    """The options of the PEX being built; shared by `pack` and `build`."""
    parser.add_argument("--sources", metavar="DIR", type=path_argument, help="Application sources root.")
    parser.add_argument("--entry-point", metavar="MODULE[:FUNC]")
    parser.add_argument("--script", metavar="NAME",
                        help="A console script (or script) of one of the wheels to run.")
    parser.add_argument("--layout", choices=LAYOUTS, default="zipapp")
    parser.add_argument("--compress-level", type=int, default=6, choices=range(10),
                        metavar="0-9")
    parser.add_argument("--interpreter-constraint", action="append", default=[], metavar="CONSTRAINT",
                        help="Interpreter constraint, e.g. '>=3.9' or 'CPython==3.11.*'.")
    parser.add_argument("--inject-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--inject-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--inherit-path", choices=("false", "prefer", "fallback"), default="false")
    parser.add_argument("--venv", action="store_true", help="Run the PEX from a venv it creates.")
    parser.add_argument("--include-tools", action="store_true", help="Support PEX_TOOLS=1.")
    parser.add_argument("--no-strip-pex-env", dest="strip_pex_env", action="store_false")
    parser.add_argument("--shebang", default=DEFAULT_SHEBANG)
    parser.add_argument("--output", "-o", required=True, metavar="PATH", type=path_argument)
    parser.add_argument("--part", choices=PARTS, default="all",
                        help="Build only the dependencies (`deps`: bootstrap + dependency zips) or "
                             "only the application (`app`: PEX-INFO, __main__.py, sources) of a "
                             "packed or split PEX; the two merged are the whole (`all`).")
    parser.add_argument("--deps-install", choices=DEPS_INSTALLS, default="preinstalled",
                        help="How the PEX stores its dependencies: `preinstalled` (installed "
                             "chroots, extracted on first start; pex's default) or `wheels` (the "
                             "wheel files, STORED, which pex's runtime installs on first start in "
                             "parallel; pex's --no-pre-install-wheels).")
    parser.add_argument("--max-install-jobs", type=int, default=None, metavar="N",
                        help="PEX-INFO's max_install_jobs: processes the first start installs "
                             "dependencies with (1 serial, 0 one per core, -1 pex's heuristic). "
                             "Default: 1 for preinstalled, 0 for wheels.")
    parser.add_argument("--cache-dir", metavar="DIR", type=path_argument,
                        help="fastpex cache root (default: $FASTPEX_CACHE_DIR or ~/.cache/fastpex).")
    parser.add_argument("--layer-jobs", type=int, default=None,
                        help="Processes for building layers (default: the CPU count).")


def pex_options_from(options: argparse.Namespace) -> PexOptions:
    """The `PexOptions` that `add_pex_options`' flags describe; refuses contradictory flags."""
    if options.entry_point and options.script:
        raise UsageError("Use either --entry-point or --script, not both.")
    if options.layer_jobs is not None and options.layer_jobs < 1:
        raise UsageError("--layer-jobs must be at least 1.")
    if options.max_install_jobs is not None and options.max_install_jobs < -1:
        raise UsageError("--max-install-jobs must be -1 or greater.")
    return PexOptions(
        sources=options.sources,
        layout=options.layout,
        entry_point=options.entry_point,
        script=options.script,
        interpreter_constraints=tuple(options.interpreter_constraint),
        inject_env=_parse_env(options.inject_env),
        inject_args=tuple(options.inject_arg),
        inherit_path=options.inherit_path,
        venv=options.venv,
        strip_pex_env=options.strip_pex_env,
        include_tools=options.include_tools,
        shebang=options.shebang,
        compress_level=options.compress_level,
        part=options.part,
        deps_install=options.deps_install,
        max_install_jobs=options.max_install_jobs,
    )


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fastpex pack",
        description="Build a PEX from pre-compressed, cached dependency layers.",
    )
    parser.add_argument("--wheel", action="append", default=[], metavar="PATH[=SHA256]",
                        help="A wheel to include; repeatable. Without =SHA256 the file is trusted.")
    parser.add_argument("--wheels-manifest", metavar="JSON", type=path_argument,
                        help="A JSON file listing wheels as {path, sha256[, filename]} objects.")
    add_pex_options(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run("pack", lambda: _run(argv))


def _run(argv: Optional[Sequence[str]]) -> int:
    options = _parser().parse_args(argv)
    wheels = [_parse_wheel(value) for value in options.wheel]
    if options.wheels_manifest:
        wheels.extend(_parse_manifest(options.wheels_manifest))
    request = PackRequest(
        wheels=tuple(wheels),
        output=options.output,
        options=pex_options_from(options),
        cache_root=options.cache_dir,
        layer_jobs=options.layer_jobs,
    )
    for output in pack(request).outputs:
        print(output)
    return 0