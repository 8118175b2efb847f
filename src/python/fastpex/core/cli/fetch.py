"""`python -m fastpex fetch`: download one or more lock targets' artifacts into the store.

Example::

    python -m fastpex fetch --lock 3rdparty/python/default.lock \\
        --target linux_x86_64-cp311 --dest dist/wheels --manifest-out dist/wheels.json

This module only parses argv into a `FetchRequest`, calls `fastpex.core.fetch.fetch` and maps
errors to exit codes: user errors (`UserError`) exit 2, failed downloads and disk trouble 1,
each printed as `fastpex fetch: error: ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from fastpex.core.cli.run import ArgumentParser, path_argument, run
from fastpex.core.errors import UsageError
from fastpex.core.fetch import FetchRequest, fetch
from fastpex.core.fetch.api import DEFAULT_RETRIES
from fastpex.core.fetch.downloader import DEFAULT_JOBS
from fastpex.core.fetch.progress import Reporter, default_reporter
from fastpex.core.fetch.transfer import DEFAULT_TIMEOUT
from fastpex.core.model import Lock

__all__ = ["build_parser", "main"]



def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fastpex fetch",
        description="Download the artifacts that lock targets need into fastpex's "
        "content-addressed store, verified against the lock's sha256.",
    )
    parser.add_argument("--lock", metavar="LOCKFILE", type=path_argument, help="the lockfile to fetch from")
    parser.add_argument(
        "--target",
        metavar="NAME",
        action="append",
        default=[],
        help="a target the lock declares (e.g. linux_x86_64-cp311); repeat for several",
    )
    parser.add_argument(
        "--dest",
        metavar="DIR",
        type=path_argument,
        help="also place the files in DIR under their filenames (hard links into the store "
        "when possible, else copies)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=path_argument,
        help="fastpex's cache root (default: $FASTPEX_CACHE_DIR or ~/.cache/fastpex)",
    )
    parser.add_argument(
        "--fetch-jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"at most N downloads at once, spread over one worker process per CPU core "
        f"(default: 2 per core, 4 to 16; here {DEFAULT_JOBS})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        metavar="N",
        help=f"retries per artifact (default: {DEFAULT_RETRIES})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds a connection may stall before it is retried (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--offline", action="store_true", help="use only the store; never touch the network"
    )
    parser.add_argument(
        "--index",
        metavar="URL",
        action="append",
        default=[],
        help="an index URL with credentials (user:token@, ${ENV} references) that apply to "
        "artifact URLs on the same host; repeatable",
    )
    parser.add_argument(
        "--allow-sdists",
        action="store_true",
        default=None,
        help="fetch an sdist when a distribution has no wheel for the target "
        "(default: when the lock was made with --allow-sdists)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="rehash artifacts already in the store first; corrupt ones are fetched again",
    )
    parser.add_argument(
        "--manifest-out",
        metavar="JSON",
        type=path_argument,
        help="write a JSON list of {filename, sha256, path} for the fetched artifacts",
    )
    return parser


def _load_lock(path: str) -> Lock:
    if not os.path.isfile(path):
        raise UsageError(f"The lockfile `{path}` does not exist. Pass the lock's path with --lock")
    from fastpex.core.lockfile import load_lock  # lazy: only the CLI needs the lock readers

    try:
        return load_lock(path)
    except Exception as e:  # noqa: BLE001 - any failure to read the file is the input's fault
        raise UsageError(
            f"Could not read the lockfile `{path}`: {e}. Regenerate it with `pants "
            f"generate-lockfiles` (or `python -m fastpex lock`)"
        ) from e


def _request(args: argparse.Namespace, lock: Optional[Lock], reporter: Optional[Reporter]) -> FetchRequest:
    if args.fetch_jobs < 1:
        raise UsageError(f"--fetch-jobs must be at least 1, not {args.fetch_jobs}")
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, not {args.retries}")
    if lock is None:
        if not args.lock:
            raise UsageError("Pass the lockfile to fetch from with --lock LOCKFILE")
        lock = _load_lock(args.lock)
    if not args.target:
        known = ", ".join(f"`{r.target.name}`" for r in lock.resolves) or "none"
        raise UsageError(f"Pass at least one --target NAME. The lock declares these targets: {known}")
    return FetchRequest(
        lock=lock,
        targets=tuple(args.target),
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        jobs=args.fetch_jobs,
        retries=args.retries,
        timeout=args.timeout,
        offline=args.offline,
        indexes=tuple(args.index),
        allow_sdists=args.allow_sdists,
        verify=args.verify,
        dest=Path(args.dest) if args.dest else None,
        manifest=Path(args.manifest_out) if args.manifest_out else None,
        progress=reporter if reporter is not None else default_reporter(sys.stderr),
    )


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    lock: Optional[Lock] = None,
    reporter: Optional[Reporter] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """Run `fetch` with `argv` (without the subcommand). `lock` bypasses --lock (for tests
    and callers that hold a `Lock` already). Returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        fetch(_request(build_parser().parse_args(arguments), lock, reporter))
        return 0

    return run("fetch", body, stderr=stderr)


if __name__ == "__main__":
    sys.exit(main())
