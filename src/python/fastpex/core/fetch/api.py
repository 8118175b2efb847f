"""`fetch(FetchRequest) -> FetchResult`: a lock's artifacts for some targets, verified in the store.

The pipeline in named steps (after uv's plan -> prepare -> install): select (pure, from the lock),
verify what the store already has (optional rehash), download what is missing (`downloader`),
then publish: `dest` gets each file under its own filename and `manifest` a JSON list of
`{filename, sha256, path}` that `fastpex pack --wheels-manifest` reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from fastpex.core.errors import UsageError
from fastpex.core.fetch import downloader
from fastpex.core.fetch.progress import Reporter
from fastpex.core.fetch.selection import Selection, select_artifacts, targets_for
from fastpex.core.fetch.transfer import DEFAULT_TIMEOUT
from fastpex.core.model import FetchedArtifact, Lock
from fastpex.core.net.index import unsafe_filename_problem
from fastpex.core.store import ArtifactStore
from fastpex.core.util.cache import write_bytes_atomically
from fastpex.core.util.urls import redact

__all__ = ["DEFAULT_RETRIES", "FetchRequest", "FetchResult", "fetch", "place_into"]

DEFAULT_RETRIES = 5


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch and how. `indexes` are the configured index URLs whose credentials apply
    to artifact URLs on the same host (never printed); `cache_root` None is the default cache."""

    lock: Lock
    targets: Tuple[str, ...]
    cache_root: Optional[Path] = None
    jobs: int = downloader.DEFAULT_JOBS
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    offline: bool = False
    indexes: Tuple[str, ...] = field(default=(), repr=False)
    allow_sdists: Optional[bool] = None  # None: as the lock was made (`Lock.allow_sdists`)
    verify: bool = False  # rehash what the store has first; corrupt entries are fetched again
    dest: Optional[Path] = None
    manifest: Optional[Path] = None
    progress: Optional[Reporter] = field(default=None, compare=False)


@dataclass(frozen=True)
class FetchResult:
    """The selection, the artifacts in the store (in selection order), where each was published
    (`paths`: by sha256, under `dest` when given, else in the store), and what this run cost."""

    selection: Selection
    fetched: Tuple[FetchedArtifact, ...]
    paths: Mapping[str, Path]
    from_store: int  # artifacts the store had already
    downloaded: int  # artifacts this run added to the store
    bytes_downloaded: int  # their total size


def fetch(request: FetchRequest) -> FetchResult:
    """Select the targets' artifacts from the lock, make them present and verified, publish."""
    if request.jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {request.jobs}")
    if request.retries < 0:
        raise UsageError(f"retries must be 0 or more, not {request.retries}")
    targets = targets_for(request.lock, request.targets)
    selection = select_artifacts(request.lock, targets, allow_sdists=request.allow_sdists)
    store = ArtifactStore(request.cache_root)
    if request.verify:
        for artifact in selection.artifacts:
            store.verify(artifact, full=True)  # evicts corrupt entries, fetched again below
    cached = {a.sha256.lower() for a in selection.artifacts if store.has(a)}
    fetched = downloader.fetch(
        selection.artifacts,
        store,
        jobs=request.jobs,
        configured_indexes=request.indexes,
        offline=request.offline,
        retries=request.retries,
        timeout=request.timeout,
        progress=request.progress,
    )
    paths: Dict[str, Path] = {f.artifact.sha256: Path(f.path) for f in fetched}
    if request.dest is not None:
        paths.update(place_into(request.dest, fetched))
    if request.manifest is not None:
        write_manifest(request.manifest, fetched, paths)
    added = [f for f in fetched if f.artifact.sha256.lower() not in cached]
    return FetchResult(
        selection=selection,
        fetched=tuple(fetched),
        paths=paths,
        from_store=len(fetched) - len(added),
        downloaded=len(added),
        bytes_downloaded=sum(os.path.getsize(f.path) for f in added),
    )


def write_manifest(path: Path, fetched: Sequence[FetchedArtifact], paths: Mapping[str, Path]) -> None:
    """The JSON list of `{filename, sha256, path}` that `fastpex pack --wheels-manifest` reads."""
    manifest: List[Dict[str, str]] = [
        {
            "filename": f.artifact.filename,
            "sha256": f.artifact.sha256,
            "path": str(paths[f.artifact.sha256].absolute()),
        }
        for f in fetched
    ]
    write_bytes_atomically(path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def place_into(dest: Path, fetched: Sequence[FetchedArtifact]) -> Dict[str, Path]:
    """Put each artifact at `dest/<filename>` by rename (hard link if possible, else copy).

    A hard link shares the store's read-only inode, so placing gigabytes costs nothing; the
    rename means `dest` never shows a half-written file, and a rerun replaces what is there.
    """
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
