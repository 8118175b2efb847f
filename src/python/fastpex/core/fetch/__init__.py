"""FETCH: a lock's artifacts for some targets, downloaded in parallel into the verified store.

The public surface: `fetch(FetchRequest) -> FetchResult` (`api.py`), the pure selection it
starts with, and the errors it raises. `downloader.fetch` is the engine beneath (artifacts in,
verified store paths out), `progress` the reporter interface.
"""

from fastpex.core.fetch.api import FetchRequest, FetchResult, fetch, place_into
from fastpex.core.fetch.errors import DownloadError, FetchError, OfflineError
from fastpex.core.fetch.selection import (
    LockInconsistencyError,
    NoCompatibleArtifactError,
    Selection,
    SelectionError,
    UnknownTargetError,
    select_artifacts,
    targets_for,
)

__all__ = [
    "DownloadError",
    "FetchError",
    "FetchRequest",
    "FetchResult",
    "LockInconsistencyError",
    "NoCompatibleArtifactError",
    "OfflineError",
    "Selection",
    "SelectionError",
    "UnknownTargetError",
    "fetch",
    "place_into",
    "select_artifacts",
    "targets_for",
]
