"""Fixtures of the fetch tests (the index server and its dists come from core/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastpex.core.store import ArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "cache")
