"""`python -m fastpex lock`: resolve a set of requirements for several targets into one lockfile.

    python -m fastpex lock --resolve python-default \\
        --requirement 'torch==2.9.1' --requirements-file reqs.txt \\
        --target linux_x86_64-cp311 --target macosx_arm64-cp311 \\
        --index https://pypi.org/simple/ --index cuda=https://download.pytorch.org/whl/cu128 \\
        --route 'torch,nvidia-*=cuda@linux_*' --upload-cutoff 2025-10-01 \\
        --interpreter-constraint 'CPython>=3.9,<3.14' \\
        --output 3rdparty/python/default.lock --pylock-output pylock.toml

This module only turns argv into a `lock.api.LockRequest`, calls `lock()` and maps errors to
exit codes. A `--target` without `-cpXY` is expanded over the CPython versions the interpreter
constraints admit. Exit status: 0 on success, 2 for anything the user can fix (bad
requirement, unknown platform, unsatisfiable requirements, unreachable index, bad flags), 1 when
a server, the network or the disk failed, each with a one-paragraph message on stderr; on any
error the existing lockfile is left untouched.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from fastpex.core.cli.run import ArgumentParser, path_argument, path_or_url_argument, run
from fastpex.core.errors import UsageError

# The lock API, the platforms and the header load in `_run`, after the early page check has
# started (`_start_page_check`): that check is most of an unchanged lock's time.
if TYPE_CHECKING:
    from fastpex.core.lock.api import LockRequest
    from fastpex.core.lock.proxy import Route

__all__ = ["main", "parse_route", "parse_upload_cutoff", "read_requirements_file"]


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m fastpex lock",
        description="Lock Python requirements for several target platforms into one lockfile "
        "that Pants 2.17 and pex read (plus an optional PEP 751 pylock.toml).",
    )
    p.add_argument("--resolve", required=True, help="name of the resolve (goes into the lock and its header)")
    p.add_argument("--requirement", action="append", default=[], metavar="REQ", help="a PEP 508 requirement (repeatable)")
    p.add_argument("--requirements-file", action="append", default=[], metavar="FILE", type=path_argument, help="a file of requirements, one per line (repeatable)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="PLATFORM",
        help="a target such as linux_x86_64-cp311, linux_aarch64-cp312@glibc2.34, macosx_arm64-cp311@macos14.0; "
        "a bare platform (linux_x86_64) is expanded over the interpreter constraints (repeatable)",
    )
    p.add_argument("--index", action="append", default=[], metavar="[NAME=]URL", help="a PEP 503/691 index; the first is the default name `default` (repeatable)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR", type=path_or_url_argument, help="a local directory of wheels/sdists (repeatable)")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="PROJECTS=INDEXES[@TARGETS]",
        help="take PROJECTS (comma-separated globs) from INDEXES (comma-separated index names) for targets "
        "matching TARGETS (comma-separated globs, default all), e.g. 'torch,nvidia-*=cuda@linux_*' (repeatable)",
    )
    p.add_argument("--upload-cutoff", metavar="DATE", help="ignore files uploaded after DATE (ISO 8601, UTC if no zone)")
    p.add_argument("--interpreter-constraint", action="append", default=[], metavar="IC", help="e.g. 'CPython>=3.9,<3.14' (repeatable, OR'ed)")
    p.add_argument("--output", "-o", required=True, metavar="LOCKFILE", type=path_argument, help="where to write the lockfile")
    p.add_argument("--pylock-output", metavar="PATH", type=path_argument, help="also write a PEP 751 pylock.toml here")
    p.add_argument("--cache-dir", metavar="DIR", type=path_argument, help="fastpex's cache root (metadata, hashes, pinned pip)")
    p.add_argument("--existing-lock", metavar="LOCKFILE", type=path_argument, help="keep this lock's pins where the requirements allow (minimal re-lock)")
    p.add_argument("--upgrade", action="append", default=[], metavar="PROJECT", help="with --existing-lock: let PROJECT move (repeatable)")
    binary = p.add_mutually_exclusive_group()
    binary.add_argument("--only-binary", dest="only_binary", action="store_true", default=True, help="wheels only (default)")
    binary.add_argument("--allow-sdists", dest="only_binary", action="store_false", help="let pip build sdists for their metadata")
    p.add_argument("--pre", action="store_true", help="allow pre-releases")
    p.add_argument("--regenerate-command", metavar="STR", help="the command the lock header tells users to run")
    p.add_argument("--pip", metavar="PATH", type=path_argument, help="the pip to run (a dir with pip/, a pip wheel, or a Python with pip >= 25.3)")
    p.add_argument("--pip-jobs", type=int, default=0, metavar="N", help="pip processes in parallel (default: a re-lock one per CPU core, 2 to 4; a first lock 4)")
    p.add_argument("--hint-lock", metavar="LOCKFILE", type=path_argument, help="an earlier lock of this resolve whose projects' pages are fetched before pip asks for them (default: --output, if it exists); pins are not kept (see --existing-lock)")
    p.add_argument("--metadata-jobs", type=int, default=16, metavar="N", help="parallel metadata and page requests of the proxy (default 16)")
    p.add_argument("--no-proxy", action="store_true", help="let pip talk to the indexes directly (no metadata proxy)")
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="resolve even when the inputs and every index page the last identical lock read are "
        "unchanged (by default that stored lock is written again, without running pip)",
    )
    p.add_argument("--no-reconcile", action="store_true", help="keep each target's own versions (skip version alignment)")
    hdr = p.add_argument_group("Pants lockfile header (must match the Pants resolve's settings)")
    hdr.add_argument("--no-header", action="store_true", help="write the lock's JSON body only, without the `//` header (for callers that add their own)")
    hdr.add_argument("--header-requirement", action="append", default=None, metavar="REQ", help="generated_with_requirements (default: the requirements)")
    hdr.add_argument("--header-interpreter-constraint", action="append", default=None, metavar="IC", help="valid_for_interpreter_constraints (default: --interpreter-constraint)")
    hdr.add_argument("--manylinux", metavar="TAG", default="manylinux2014", help="the header's manylinux: Pants' `[python].resolver_manylinux` (default manylinux2014, Pants' default; `none` for null)")
    hdr.add_argument("--header-constraint", action="append", default=[], metavar="REQ", help="requirement_constraints")
    hdr.add_argument("--header-only-binary", action="append", default=[], metavar="PROJECT", help="only_binary")
    hdr.add_argument("--header-no-binary", action="append", default=[], metavar="PROJECT", help="no_binary")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def read_requirements_file(path: str) -> List[str]:
    """Requirements from a file: one per line, `#` comments, `\\` continuations; no pip options."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read the requirements file `{path}`: {e.strerror or e}") from e
    out = []
    for number, line in enumerate(re.sub(r"\\\r?\n", "", text).splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise UsageError(
                f"`{path}` line {number}: `{line}` is a pip option; requirements files may hold only "
                f"requirements here (use --index/--find-links/--requirements-file instead)"
            )
        out.append(line)
    return out


def parse_upload_cutoff(text: str) -> datetime:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError as e:
        raise UsageError(f"--upload-cutoff `{text}` is not an ISO 8601 date or date-time (e.g. 2025-10-01)") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def _parse_indexes(values: Sequence[str]) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    for i, value in enumerate(values):
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+)$", value)
        if match and "://" not in match.group(1):
            name, url = match.group(1), match.group(2)
        else:
            name, url = ("default" if i == 0 else f"index{i}"), value
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
            raise UsageError(f"--index `{value}`: `{url}` is not a URL (e.g. https://pypi.org/simple/)")
        if any(name == n for n, _ in out):
            raise UsageError(f"--index: the name `{name}` is used twice")
        out.append((name, url))
    return out


def parse_route(text: str) -> Tuple[Tuple[str, ...], Tuple[str, ...], Optional[Tuple[str, ...]]]:
    """`torch,nvidia-*=cuda@linux_*` -> (projects, index names, target globs or None)."""
    projects, eq, rest = text.partition("=")
    indexes, at, platforms = rest.partition("@")
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    if not eq or not split(projects) or not split(indexes) or (at and not split(platforms)):
        raise UsageError(f"--route `{text}` is not `PROJECTS=INDEXES[@TARGETS]`, e.g. 'torch,nvidia-*=cuda@linux_*'")
    return split(projects), split(indexes), (split(platforms) if at else None)


def _requirements(args: argparse.Namespace) -> List[str]:
    requirements = list(args.requirement)
    for path in args.requirements_file:
        requirements.extend(read_requirements_file(path))
    return requirements


def _start_page_check(args: argparse.Namespace) -> None:
    """Start fetching the pages the last lock of this resolve read (`lock.page_check`), while
    the modules the lock's key needs still load; `lock()` takes the check over or drops it.
    Only a head start: anything unusual here leaves the check to `lock()`."""
    if args.no_reuse or args.no_proxy or not args.index:
        return
    # The TLS context (loading the trust store, ~26 ms) is made while the modules load.
    threading.Thread(target=_warm_tls, name="fastpex-tls", daemon=True).start()
    try:
        from fastpex.core.lock import page_check
        from fastpex.core.util.urls import expand_env

        indexes = {name: expand_env(url) for name, url in _parse_indexes(args.index)}
        hint = page_check.hint_key(args.resolve, _requirements(args), list(indexes.values()))
        page_check.prefetch(Path(args.cache_dir) if args.cache_dir else None, hint, indexes, jobs=args.metadata_jobs)
    except Exception as e:  # noqa: BLE001 - the request below reports what is wrong
        logging.getLogger("fastpex.lock").debug("no early page check: %s", e)


def _warm_tls() -> None:
    try:
        from fastpex.core.net.pool import tls_context

        tls_context()
    except Exception:  # noqa: BLE001 - the first connection makes it again and reports
        pass


def _request(args: argparse.Namespace) -> LockRequest:
    """argv -> the request: every flag read, checked and parsed here, nothing run."""
    from fastpex.core.lock.api import LockOptions, LockRequest
    from fastpex.core.lockfile.header import PantsHeader
    from fastpex.core.platforms import expand_targets, python_versions_for_constraints

    requirements = _requirements(args)
    if not requirements:
        raise UsageError("no requirements given; pass --requirement REQ or --requirements-file FILE")
    if not args.target:
        raise UsageError("no targets given; pass e.g. --target linux_x86_64-cp311")
    if not args.index and not args.find_links:
        raise UsageError("no package source given; pass --index URL (e.g. https://pypi.org/simple/) or --find-links DIR")
    if args.pip_jobs < 0:
        raise UsageError("--pip-jobs must be at least 1 (or 0 for the default)")
    try:
        versions = python_versions_for_constraints(args.interpreter_constraint)
    except ValueError as e:
        raise UsageError(str(e)) from e
    targets = expand_targets(args.target, versions if args.interpreter_constraint else ())
    indexes = _parse_indexes(args.index)
    routes: List[Route] = []
    if args.route:  # the proxy's module is heavy: loaded only when routes are given
        from fastpex.core.lock import proxy

        for text in args.route:
            projects, names, platforms = parse_route(text)
            routes.extend(proxy.Route(project=project, indexes=names, platforms=platforms) for project in projects)
    if args.upgrade and not args.existing_lock:
        raise UsageError("--upgrade needs --existing-lock (without it every project is resolved afresh)")
    header = None
    if not args.no_header:
        header = PantsHeader(
            regenerate_command=args.regenerate_command,
            interpreter_constraints=tuple(args.header_interpreter_constraint) if args.header_interpreter_constraint else None,
            requirements=tuple(args.header_requirement) if args.header_requirement else None,
            manylinux=None if args.manylinux in ("", "none", "None") else args.manylinux,
            requirement_constraints=tuple(args.header_constraint),
            only_binary=tuple(args.header_only_binary),
            no_binary=tuple(args.header_no_binary),
        )
    return LockRequest(
        resolve_name=args.resolve,
        requirements=tuple(requirements),
        targets=tuple(targets),
        output=Path(args.output),
        indexes=tuple(indexes),
        find_links=tuple(args.find_links),
        routes=tuple(routes),
        upload_cutoff=parse_upload_cutoff(args.upload_cutoff) if args.upload_cutoff else None,
        interpreter_constraints=tuple(args.interpreter_constraint),
        options=LockOptions(
            only_binary=args.only_binary,
            prereleases=args.pre,
            reconcile=not args.no_reconcile,
            pip=args.pip,
            pip_jobs=args.pip_jobs,
            metadata_jobs=args.metadata_jobs,
            use_proxy=not args.no_proxy,
            reuse=not args.no_reuse,
        ),
        existing_lock=Path(args.existing_lock) if args.existing_lock else None,
        upgrade=tuple(args.upgrade),
        hint_lock=Path(args.hint_lock) if args.hint_lock else None,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        pylock_output=Path(args.pylock_output) if args.pylock_output else None,
        header=header,
    )


def _run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    logging.basicConfig(
        level=logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO),
        format="fastpex: %(message)s",
        stream=sys.stderr,
    )
    _start_page_check(args)
    from fastpex.core.lock.api import lock

    try:
        lock(_request(args))
    finally:
        if "fastpex.core.lock.page_check" in sys.modules:
            sys.modules["fastpex.core.lock.page_check"].drop_unclaimed()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(
        "lock",
        lambda: _run(sys.argv[1:] if argv is None else argv),
        interrupted="interrupted; no lockfile was written",
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
