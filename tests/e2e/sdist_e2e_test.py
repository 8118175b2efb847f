"""Sdists through Pants: `[fastpex].allow_sdists = true`, `pants generate-lockfiles` locks an
sdist-only dependency two levels deep with its pinned build requirements, and `pants package`
builds it (setuptools, served only as a wheel by the loopback index) into a PEX that runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from e2e.scratch_repo import Caches, pants, pants_toml, run_pex, write_files
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory, download_build_backend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    dists = tmp_path_factory.mktemp("dists")
    download_build_backend(dists)
    factory = WheelFactory(dists)
    factory.wheel("greet", "1.0", requires_dist=["deepsrc"],
                  files={"greet/__init__.py": b"from deepsrc import VALUE\n\ndef hello(n):\n    return VALUE + ' ' + n\n"})
    factory.sdist("deepsrc", "1.0", files={"deepsrc/__init__.py": b"VALUE = 'built from an sdist:'\n"})
    with IndexServer(dists) as server:
        yield server


def test_generate_lockfiles_and_package_build_an_sdist_only_dependency(tmp_path: Path, index: IndexServer) -> None:
    root = tmp_path / "repo"
    toml = pants_toml(index) + " " * 16 + "allow_sdists = true\n"
    write_files(
        root,
        {
            "pants.toml": toml,
            "3rdparty/BUILD": 'python_requirement(name="greet", requirements=["greet"], resolve="app")\n',
            "src/app/__init__.py": "",
            "src/app/main.py": "import greet\n\n\ndef main():\n    print(greet.hello('fastpex'))\n",
            "src/app/BUILD": 'python_sources(name="lib")\nfastpex_binary(name="app", entry_point="app.main:main")\n',
        },
    )
    caches = Caches(tmp_path / "caches")
    pants(root, caches, "generate-lockfiles", "--resolve=app")
    text = (root / "3rdparty" / "app.lock").read_text()
    lock = json.loads("".join(line for line in text.splitlines(keepends=True) if not line.startswith("//")))
    assert lock["allow_builds"] is True and lock["fastpex"]["allow_sdists"] is True
    (system,) = lock["fastpex"]["build_systems"]
    assert system["sdists"] == ["deepsrc==1.0"] and system["requires"] == ["setuptools"]

    pants(root, caches, "package", "src/app:app")
    pex = root / "dist" / "src.app" / "app.pex"
    assert run_pex(pex, tmp_path / "pex_root") == "built from an sdist: fastpex\n"
    built = list((caches.fastpex / "built-wheels" / "v1").glob("*/deepsrc-1.0-py3-none-any.whl"))
    assert len(built) == 1, built
