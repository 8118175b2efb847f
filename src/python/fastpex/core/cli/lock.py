"""`python -m fastpex lock`: resolve a set of requirements for several targets into one lockfile.

    python -m fastpex lock --resolve python-default \\
        --requirement 'torch==2.9.1' --requirements-file reqs.txt \\
        --target linux_x86_64-cp311 --target macosx_arm64-cp311 \\
        --index https://pypi.org/simple/ --index cuda=https://download.pytorch.org/whl/cu128 \\
        --route 'torch,nvidia-*=cuda@linux_*' --upload-cutoff 2025-10-01 \\
        --interpreter-constraint 'CPython>=3.9,<3.14' \\
        --output 3rdparty/python/default.lock --pylock-output pylock.toml

A `--target` without `-cpXY` is expanded over the CPython versions the interpreter
constraints admit. Exit status: 0 on success, 2 for anything the user can fix (bad
requirement, unknown platform, unsatisfiable requirements, unreachable index, bad flags) with a
one-paragraph message on stderr; on any error the existing lockfile is left untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import contextlib
import logging
import re
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, List, NoReturn, Optional, Sequence, Tuple

from fastpex.core.lockfile.codec import (
    LockfileError,
    PantsHeader,
    dumps_lock,
    load_lock,
    pylock_toml,
    write_text_atomically,
)
from fastpex.core.model import Lock

__all__ = ["UsageError", "main", "parse_route", "parse_upload_cutoff", "read_requirements_file"]

logger = logging.getLogger("fastpex.lock")


class UsageError(Exception):
    """A command-line mistake; reported with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `python -m fastpex lock --help`)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m fastpex lock",
        description="Lock Python requirements for several target platforms into one lockfile "
        "that Pants 2.17 and pex read (plus an optional PEP 751 pylock.toml).",
    )
    p.add_argument("--resolve", required=True, help="name of the resolve (goes into the lock and its header)")
    p.add_argument("--requirement", action="append", default=[], metavar="REQ", help="a PEP 508 requirement (repeatable)")
    p.add_argument("--requirements-file", action="append", default=[], metavar="FILE", help="a file of requirements, one per line (repeatable)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="PLATFORM",
        help="a target such as linux_x86_64-cp311, linux_aarch64-cp312@glibc2.34, macosx_arm64-cp311@macos14.0; "
        "a bare platform (linux_x86_64) is expanded over the interpreter constraints (repeatable)",
    )
    p.add_argument("--index", action="append", default=[], metavar="[NAME=]URL", help="a PEP 503/691 index; the first is the default name `default` (repeatable)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR", help="a local directory of wheels/sdists (repeatable)")
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
    p.add_argument("--output", "-o", required=True, metavar="LOCKFILE", help="where to write the lockfile")
    p.add_argument("--pylock-output", metavar="PATH", help="also write a PEP 751 pylock.toml here")
    p.add_argument("--cache-dir", metavar="DIR", help="fastpex's cache root (metadata, hashes, pinned pip)")
    p.add_argument("--existing-lock", metavar="LOCKFILE", help="keep this lock's pins where the requirements allow (minimal re-lock)")
    p.add_argument("--upgrade", action="append", default=[], metavar="PROJECT", help="with --existing-lock: let PROJECT move (repeatable)")
    binary = p.add_mutually_exclusive_group()
    binary.add_argument("--only-binary", dest="only_binary", action="store_true", default=True, help="wheels only (default)")
    binary.add_argument("--allow-sdists", dest="only_binary", action="store_false", help="let pip build sdists for their metadata")
    p.add_argument("--pre", action="store_true", help="allow pre-releases")
    p.add_argument("--regenerate-command", metavar="STR", help="the command the lock header tells users to run")
    p.add_argument("--pip", metavar="PATH", help="the pip to run (a dir with pip/, a pip wheel, or a Python with pip >= 25.3)")
    p.add_argument("--jobs", type=int, default=4, metavar="N", help="pip processes in parallel (default 4)")
    p.add_argument("--hint-lock", metavar="LOCKFILE", help="an earlier lock of this resolve whose projects' pages are fetched before pip asks for them (default: --output, if it exists); pins are not kept (see --existing-lock)")
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


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _hinted_projects(args: argparse.Namespace) -> List[str]:
    hint = args.hint_lock or (args.output if args.output and os.path.isfile(args.output) else None)
    if not hint:
        return []
    try:
        return sorted({d.name for d in load_lock(hint).distributions})
    except Exception as e:  # noqa: BLE001 - only a hint: a broken or foreign lock is ignored
        logger.debug("ignoring the hint lock %s: %s", hint, e)
        return []


@contextlib.contextmanager
def _source(
    args: argparse.Namespace,
    indexes: List[Tuple[str, str]],
    targets: Sequence[object],
    cutoff: Optional[datetime],
    requirements: Sequence[str] = (),
) -> Iterator[object]:
    from fastpex.core.lock.resolve import DirectSource, ProxySource, proxy_target_name

    index_urls = [url for _, url in indexes]
    if args.no_proxy:
        if args.route:
            raise UsageError("--route needs the metadata proxy; drop --no-proxy")
        yield DirectSource(index_urls, args.find_links, upload_cutoff=cutoff)
        return
    from fastpex.core.lock.proxy import IndexSpec, MetadataProxy, ProxyConfig, ProxyConfigError, Route

    routes = []
    for text in args.route:
        projects, names, platforms = parse_route(text)
        for project in projects:
            routes.append(Route(project=project, indexes=names, platforms=platforms))
    try:
        config = ProxyConfig(
            indexes=tuple(IndexSpec(name, url) for name, url in indexes),
            find_links=tuple(Path(d).expanduser().absolute() for d in args.find_links),
            routes=tuple(routes),
            upload_cutoff=cutoff,
            cache_root=Path(args.cache_dir).expanduser().absolute() if args.cache_dir else None,
            target_tags={proxy_target_name(t.name): tuple(t.supported_tags) for t in targets},  # type: ignore[attr-defined]
            target_pythons={
                proxy_target_name(t.name): t.marker_environment.get("python_full_version") or t.python_version  # type: ignore[attr-defined]
                for t in targets
            },
            wheels_only=args.only_binary,
            workers=args.metadata_jobs,
        )
        proxy = MetadataProxy(config)
    except ProxyConfigError as e:
        raise UsageError(str(e)) from e
    with proxy:
        # Start on the pages and metadata pip will ask for while it is still starting up: the
        # top-level requirements, and every project an earlier lock of this resolve had (pip
        # asks for pages one at a time, so fetching them ahead saves a round trip each).
        names = list(requirements) + _hinted_projects(args)
        for target in targets:
            proxy.warm(proxy_target_name(target.name), names)  # type: ignore[attr-defined]
        source = ProxySource(proxy, index_urls + [Path(d).expanduser().absolute().as_uri() for d in args.find_links])
        yield source
        if proxy.artifact_requests:
            logger.info("pip downloaded %d artifact(s) through the proxy", proxy.artifact_requests)


_NOT_INPUTS = frozenset(
    {
        # where things go, how fast, how loud: none of it changes the lock
        "output", "pylock_output", "cache_dir", "hint_lock", "verbose", "quiet", "jobs", "metadata_jobs", "no_reuse",
        # replaced below by what they stand for
        "pip", "requirement", "requirements_file", "index", "find_links", "existing_lock",
    }
)


def _replay(
    args: argparse.Namespace, requirements: Sequence[str], targets: Sequence[object], indexes: List[Tuple[str, str]], pip_version: Optional[str]
) -> Tuple[Optional[object], dict]:
    """The lock store for these inputs and the expanded index URLs to check its pages with;
    (None, {}) when reuse is off or can't be trusted (no proxy: nothing records the pages)."""
    from fastpex.core.lock.replay import LockReplay
    from fastpex.core.util.urls import expand_env, strip_credentials

    if args.no_proxy or args.no_reuse:
        return None, {}
    try:
        expanded = {name: expand_env(url) for name, url in indexes}
    except KeyError:
        return None, {}  # the proxy reports the missing variable
    material = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_INPUTS}
    listings = []
    for directory in args.find_links:
        root = Path(directory).expanduser()
        try:
            listings.append(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(root) if e.is_file()))
        except OSError:
            return None, {}  # the resolve reports the missing directory
    existing = None
    if args.existing_lock:
        existing = hashlib.sha256(Path(args.existing_lock).read_bytes()).hexdigest()
    material.update(
        requirements=list(requirements),
        targets=[
            {"name": t.name, "env": dict(t.marker_environment), "tags": list(t.supported_tags)}  # type: ignore[attr-defined]
            for t in targets
        ],
        indexes=[[name, strip_credentials(expanded[name])] for name, _ in indexes],
        find_links=listings,
        existing_lock=existing,
        pylock=bool(args.pylock_output),
        pip=pip_version,
    )
    cache_root = Path(args.cache_dir).expanduser().absolute() if args.cache_dir else None
    return LockReplay(material, cache_root), expanded


def _write_outputs(args: argparse.Namespace, lock_text: str, pylock_text: Optional[str]) -> None:
    """pylock first, the lock last: the lock is what Pants reads, so it is the commit point."""
    if pylock_text is not None and args.pylock_output:
        write_text_atomically(args.pylock_output, pylock_text)
    write_text_atomically(args.output, lock_text)


def _run(argv: Sequence[str]) -> int:
    from fastpex.core.platforms import expand_targets, python_versions_for_constraints
    from fastpex.core.lock.resolve import ResolveOptions, ensure_pip, resolve, validate_requirements

    args = _parser().parse_args(list(argv))
    logging.basicConfig(
        level=logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO),
        format="fastpex: %(message)s",
        stream=sys.stderr,
    )
    requirements = list(args.requirement)
    for path in args.requirements_file:
        requirements.extend(read_requirements_file(path))
    if not requirements:
        raise UsageError("no requirements given; pass --requirement REQ or --requirements-file FILE")
    validate_requirements(requirements)
    if not args.target:
        raise UsageError("no targets given; pass e.g. --target linux_x86_64-cp311")
    if not args.index and not args.find_links:
        raise UsageError("no package source given; pass --index URL (e.g. https://pypi.org/simple/) or --find-links DIR")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    try:
        versions = python_versions_for_constraints(args.interpreter_constraint)
    except ValueError as e:
        raise UsageError(str(e)) from e
    targets = expand_targets(args.target, versions if args.interpreter_constraint else ())
    indexes = _parse_indexes(args.index)
    cutoff = parse_upload_cutoff(args.upload_cutoff) if args.upload_cutoff else None
    existing: Optional[Lock] = load_lock(args.existing_lock) if args.existing_lock else None
    if args.upgrade and existing is None:
        raise UsageError("--upgrade needs --existing-lock (without it every project is resolved afresh)")
    cache_root = Path(args.cache_dir).expanduser().absolute() if args.cache_dir else None
    pip = ensure_pip(cache_root, explicit=args.pip, index_url=indexes[0][1] if indexes else None)
    options = ResolveOptions(
        only_binary=args.only_binary,
        prereleases=args.pre,
        max_parallel=args.jobs,
        reconcile=not args.no_reconcile,
        pip=pip,
        cache_root=cache_root,
    )
    replay, expanded = _replay(args, requirements, targets, indexes, pip.version)
    if replay is not None:
        started = time.monotonic()
        stored = replay.lookup(expanded, jobs=args.metadata_jobs)  # type: ignore[attr-defined]
        if stored is not None:
            _write_outputs(args, stored.lock_text, stored.pylock_text)
            logger.info(
                "inputs and all %d index pages unchanged since %s: wrote that lock again, without "
                "resolving, in %.1f s -> %s (--no-reuse resolves anyway)",
                stored.pages,
                datetime.fromtimestamp(stored.created, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                time.monotonic() - started,
                args.output,
            )
            return 0
    pages: dict = {}
    with _source(args, indexes, targets, cutoff, requirements) as source:
        result = resolve(
            requirements,
            targets,
            source,  # type: ignore[arg-type]
            resolve_name=args.resolve,
            interpreter_constraints=args.interpreter_constraint,
            options=options,
            existing_lock=existing,
            upgrade=args.upgrade,
            upload_cutoff=_iso(cutoff) if cutoff else None,
            reporter=logger.info,
        )
        proxy = getattr(source, "proxy", None)
        if proxy is not None:
            pages = proxy.upstream_page_digests()
    header = PantsHeader(
        regenerate_command=args.regenerate_command,
        interpreter_constraints=tuple(args.header_interpreter_constraint) if args.header_interpreter_constraint else None,
        requirements=tuple(args.header_requirement) if args.header_requirement else None,
        manylinux=None if args.manylinux in ("", "none", "None") else args.manylinux,
        requirement_constraints=tuple(args.header_constraint),
        only_binary=tuple(args.header_only_binary),
        no_binary=tuple(args.header_no_binary),
    )
    # Render everything before writing anything: an error leaves every output as it was.
    lock_text = dumps_lock(result.lock, header)
    pylock_text = pylock_toml(result.lock) if args.pylock_output else None
    _write_outputs(args, lock_text, pylock_text)
    if replay is not None:
        replay.store(pages, lock_text, pylock_text)  # type: ignore[attr-defined]
    for note in result.notes:
        logger.info("%s", note)
    logger.info(
        "locked %d distributions for %d target(s) in %.1f s (%d pip runs) -> %s",
        len(result.lock.distributions),
        len(targets),
        result.seconds,
        result.pip_runs,
        args.output,
    )
    return 0


def _user_error_types() -> Tuple[type, ...]:
    from fastpex.core.platforms import UnknownPlatformError
    from fastpex.core.lock.resolve import ResolveError

    types: List[type] = [UsageError, UnknownPlatformError, ResolveError, LockfileError]
    try:
        from fastpex.core.net.index import IndexClientError

        types.append(IndexClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _paragraph(message: str) -> str:
    """One paragraph (pip's quoted output stays below it, indented)."""
    head, _, rest = message.partition("\n")
    text = textwrap.fill(head, width=100)
    if rest.strip():
        text += "\n" + textwrap.indent(rest.strip("\n"), "    ")
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except _user_error_types() as e:
        print(f"fastpex lock: error: {_paragraph(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastpex lock: interrupted; no lockfile was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
