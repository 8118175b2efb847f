"""Fixtures shared by the core's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory


@pytest.fixture(scope="module")
def catalog(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    """A loopback index serving what the test module's `build_catalog(factory)` makes."""
    build = getattr(request.module, "build_catalog", None)
    if build is None:
        raise pytest.UsageError(f"{request.module.__name__} uses `catalog` but defines no build_catalog(factory)")
    factory = WheelFactory(tmp_path_factory.mktemp("dists"))
    build(factory)
    with IndexServer(factory.dist_dir) as server:
        yield server


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    """An empty directory of distributions for `server` to serve; tests add what they need."""
    path = tmp_path / "dists"
    path.mkdir()
    return path


@pytest.fixture
def server(dists: Path) -> Iterator[IndexServer]:
    """A loopback index over `dists`, fresh for each test."""
    with IndexServer(dists) as srv:
        yield srv


@pytest.fixture
def index(factory: WheelFactory) -> Iterator[IndexServer]:
    """A loopback index over the test module's own `factory` fixture (a WheelFactory), fresh
    for each test: a test may add to the factory to change a page."""
    with IndexServer(factory.dist_dir) as server:
        yield server
