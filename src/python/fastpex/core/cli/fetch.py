"""`python -m fastpex fetch`: download one or more lock targets' artifacts into the store.

Example::

    python -m fastpex fetch --lock 3rdparty/python/default.lock \\
        --target linux_x86_64-cp311 --dest dist/wheels --manifest-out dist/wheels.json

Selection is pure (`selection.py`), downloading is `fetch.py`; this module only parses arguments,
loads the lock, and publishes the result: `--dest` gets each file under its own filename (a hard
link into the store when possible, else a copy; each placed by rename, so never half-written),
and `--manifest-out` a JSON list of `{filename, sha256, path}` that `fastpex pack --wheels-manifest`
reads. User errors exit 2 with a one-paragraph message; download failures exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence

from fastpex.core.util.cache import write_bytes_atomically
from fastpex.core.fetch.downloader import (
    DEFAULT_JOBS,
    FetchError,
    OfflineError,
    Reporter,
    default_reporter,
    fetch,
)
from fastpex.core.net.index import unsafe_filename_problem
from fastpex.core.model import FetchedArtifact, Lock
from fastpex.core.fetch.selection import SelectionError, select_artifacts, targets_for
from fastpex.core.store import ArtifactStore, StoreError
from fastpex.core.util.urls import redact

__all__ = ["UsageError", "build_parser", "main", "place_into"]

EXIT_FETCH_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or its inputs; exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}. Run `python -m fastpex fetch --help` for the options")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m fastpex fetch",
        description="Download the artifacts that lock targets need into fastpex's "
        "content-addressed store, verified against the lock's sha256.",
    )
    parser.add_argument("--lock", metavar="LOCKFILE", help="the lockfile to fetch from")
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
        help="also place the files in DIR under their filenames (hard links into the store "
        "when possible, else copies)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="fastpex's cache root (default: $FASTPEX_CACHE_DIR or ~/.cache/fastpex)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"at most N downloads at once, spread over one worker process per CPU core "
        f"(default: 2 per core, 4 to 16; here {DEFAULT_JOBS})",
    )
    parser.add_argument(
        "--retries", type=int, default=5, metavar="N", help="retries per artifact (default: 5)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds a connection may stall before it is retried (default: 30)",
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
        help="fetch an sdist when a distribution has no wheel for the target",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="rehash artifacts already in the store first; corrupt ones are fetched again",
    )
    parser.add_argument(
        "--manifest-out",
        metavar="JSON",
        help="write a JSON list of {filename, sha256, path} for the fetched artifacts",
    )
    return parser


def _load_lock(path: str) -> Lock:
    if not os.path.isfile(path):
        raise UsageError(f"The lockfile `{path}` does not exist. Pass the lock's path with --lock")
    from fastpex.core.lockfile.codec import load_lock  # lazy: only the CLI needs the lock readers

    try:
        return load_lock(path)
    except Exception as e:  # noqa: BLE001 - any failure to read the file is the input's fault
        raise UsageError(
            f"Could not read the lockfile `{path}`: {e}. Regenerate it with `pants "
            f"generate-lockfiles` (or `python -m fastpex lock`)"
        ) from e


def place_into(dest: Path, fetched: Sequence[FetchedArtifact]) -> Dict[str, Path]:
    """Put each artifact at `dest/<filename>` by rename (hard link if possible, else copy)."""
    dest.mkdir(parents=True, exist_ok=True)
    by_name: Dict[str, FetchedArtifact] = {}
    for item in fetched:
        other = by_name.setdefault(item.artifact.filename, item)
        if other.artifact.sha256 != item.artifact.sha256:
            raise UsageError(
                f"Two different artifacts are both named `{item.artifact.filename}` (from "
                f"{redact(other.artifact.url)} and {redact(item.artifact.url)}), so they can't "
                f"share --dest. Fetch the targets into separate directories"
            )
    placed: Dict[str, Path] = {}
    for name, item in by_name.items():
        problem = unsafe_filename_problem(name)
        if problem is not None:
            raise UsageError(f"The lock has an unsafe artifact filename {name!r} ({problem}). Regenerate the lock")
        final = dest / name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=dest)
        os.close(fd)
        os.unlink(tmp_name)
        try:
            try:
                os.link(item.path, tmp_name)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(item.path, tmp_name)
            os.replace(tmp_name, final)
        finally:
            if os.path.lexists(tmp_name):
                os.unlink(tmp_name)
        placed[item.artifact.sha256] = final
    return placed


def _run(args: argparse.Namespace, lock: Optional[Lock], reporter: Optional[Reporter]) -> int:
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, not {args.retries}")
    if lock is None:
        if not args.lock:
            raise UsageError("Pass the lockfile to fetch from with --lock LOCKFILE")
        lock = _load_lock(args.lock)
    if not args.target:
        known = ", ".join(f"`{r.target.name}`" for r in lock.resolves) or "none"
        raise UsageError(f"Pass at least one --target NAME. The lock declares these targets: {known}")
    targets = targets_for(lock, args.target)
    selection = select_artifacts(lock, targets, allow_sdists=args.allow_sdists)
    store = ArtifactStore(Path(args.cache_dir).expanduser().absolute() if args.cache_dir else None)
    if args.verify:
        for artifact in selection.artifacts:
            store.verify(artifact, full=True)  # evicts corrupt entries, fetched again below
    fetched = fetch(
        selection.artifacts,
        store,
        jobs=args.jobs,
        configured_indexes=args.index,
        offline=args.offline,
        retries=args.retries,
        timeout=args.timeout,
        progress=reporter if reporter is not None else default_reporter(sys.stderr),
    )
    paths = {f.artifact.sha256: Path(f.path) for f in fetched}
    if args.dest:
        paths.update(place_into(Path(args.dest), fetched))
    if args.manifest_out:
        manifest: List[Dict[str, str]] = [
            {
                "filename": f.artifact.filename,
                "sha256": f.artifact.sha256,
                "path": str(paths[f.artifact.sha256].absolute()),
            }
            for f in fetched
        ]
        write_bytes_atomically(
            Path(args.manifest_out), (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
        )
    return 0


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    lock: Optional[Lock] = None,
    reporter: Optional[Reporter] = None,
    stderr: Optional[IO[str]] = None,
) -> int:
    """Run `fetch` with `argv` (without the subcommand). `lock` bypasses --lock (for tests
    and callers that hold a `Lock` already). Returns the exit status."""
    err = stderr if stderr is not None else sys.stderr
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        return _run(args, lock, reporter)
    except (UsageError, SelectionError, OfflineError, StoreError) as e:
        print(f"fastpex fetch: {e}", file=err)
        return EXIT_USAGE
    except FetchError as e:
        print(f"fastpex fetch: {e}", file=err)
        return EXIT_FETCH_FAILED
    except OSError as e:
        # --dest / --manifest-out / --cache-dir not writable, disk full...
        print(f"fastpex fetch: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=err)
        return EXIT_FETCH_FAILED


if __name__ == "__main__":
    sys.exit(main())
