"""Sdists end to end: `lock --allow-sdists` records the build requirements, `build` turns the
sdist into a wheel once (a real setuptools build, setuptools served only as a wheel by the
loopback index) and packs it like any other wheel."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from fastpex.testing.pythons import cpython
from fastpex.core.build import BuildRequest, build
from fastpex.core.cli import build as build_cli
from fastpex.core.cli import fetch as fetch_cli
from fastpex.core.cli import lock as lock_cli
from fastpex.core.lockfile.codec import dumps_lock, load_lock
from fastpex.core.pack.options import PexOptions
from fastpex.core.pack.sdist import SdistBuildError
from fastpex.testing.index_server import IndexServer
from fastpex.testing.wheels import WheelFactory, download_build_backend

LINUX = "linux_x86_64-cp311"
MAC = "macosx_arm64-cp311"

# A setup.py whose distribution claims extension modules: bdist_wheel tags the wheel for this
# interpreter and platform (cp311-cp311-linux_x86_64) without a compiler.
_PLATFORM_SETUP = b"""\
from setuptools import setup
from setuptools.dist import Distribution


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(name="natsrc", version="1.0", packages=["natsrc"], distclass=BinaryDistribution)
"""


def _python() -> str:
    return str(cpython("3.11"))


def _replace_member(sdist: Path, member: str, data: bytes) -> None:
    """Rewrite a deterministic sdist with one member's bytes replaced."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]  # type: ignore[union-attr]  # isfile() members always have a file object
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            if info.name.endswith("/" + member):
                content = data
                info.size = len(data)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    with open(sdist, "wb") as fp, gzip.GzipFile(filename="", mode="wb", fileobj=fp, mtime=0) as gz:
        gz.write(raw.getvalue())


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[IndexServer, Path]]:
    root = tmp_path_factory.mktemp("sdists")
    dists = root / "dists"
    dists.mkdir()
    # The real build backend, served only as wheels (setuptools, wheel, packaging).
    download_build_backend(dists)
    factory = WheelFactory(dists)
    factory.wheel("sdapp", "1.0", requires_dist=["middle"],
                  files={"sdapp/__init__.py": b"from middle import where\n"})
    factory.wheel("middle", "1.0", requires_dist=["deepsrc>=1"],
                  files={"middle/__init__.py": b"from deepsrc import VALUE\n\ndef where():\n    return 'from ' + VALUE\n"})
    factory.sdist("deepsrc", "1.0", files={"deepsrc/__init__.py": b"VALUE = 'deep sdist'\n"})
    natsrc = factory.sdist("natsrc", "1.0")
    _replace_member(natsrc, "setup.py", _PLATFORM_SETUP)
    with IndexServer(dists) as server:
        yield server, root


def _lock(server: IndexServer, out: Path, cache: Path, requirement: str, *targets: str, allow: bool = True) -> int:
    argv = ["--resolve", "sd", "--requirement", requirement, "--index", server.simple_url,
            "--output", str(out), "--cache-dir", str(cache)]
    for target in targets:
        argv += ["--target", target]
    return lock_cli.main(argv + (["--allow-sdists"] if allow else []))


@pytest.fixture(scope="module")
def app_lock(index: Tuple[IndexServer, Path]) -> Path:
    server, root = index
    out = root / "app.lock"
    assert _lock(server, out, root / "lock-cache", "sdapp", LINUX) == 0
    return out


def _sources(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "__init__.py").write_text("")
    (src / "app" / "main.py").write_text("import sdapp\n\ndef main():\n    print(sdapp.where())\n")
    return src


def _request(lock: Path, cache: Path, out: Path, src: Path, *targets: str) -> BuildRequest:
    return BuildRequest(
        lock_path=str(lock),
        output=str(out),
        options=PexOptions(entry_point="app.main:main", sources=str(src)),
        targets=targets or (LINUX,),
        cache_root=str(cache),
        pythons=(_python(),),
    )


def test_the_lock_records_that_sdists_were_allowed_and_the_pinned_build_requirements(app_lock: Path) -> None:
    lock = load_lock(app_lock)
    assert lock.allow_sdists
    text = app_lock.read_text()
    assert '"allow_builds": true' in text
    (system,) = lock.build_systems
    assert system.sdists == (("deepsrc", "1.0"),)
    assert system.requires == ("setuptools",)  # the sdist's own [build-system].requires
    pins = dict(system.pins_for(LINUX) or ())
    assert "setuptools" in pins
    (setuptools,) = [d for d in system.distributions if d.name == "setuptools"]
    assert setuptools.version == pins["setuptools"]
    assert setuptools.artifacts and all(a.is_wheel and len(a.sha256) == 64 for a in setuptools.artifacts)


def test_an_sdist_two_levels_deep_builds_once_into_a_pex_that_imports_it(tmp_path: Path, app_lock: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "app.pex"
    first = build(_request(app_lock, cache, out, _sources(tmp_path)))
    assert [(b.wheel.wheel_filename, b.built) for b in first.built] == [("deepsrc-1.0-py3-none-any.whl", True)]
    assert "deepsrc-1.0-py3-none-any.whl" in {w.wheel_filename for w in first.wheels}
    run = subprocess.run([_python(), str(out)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root")))
    assert run.stdout == "from deep sdist\n"

    # A second build reuses the built wheel: no build runs, the same bytes come out.
    again = tmp_path / "again.pex"
    second = build(_request(app_lock, cache, again, _sources(tmp_path / "x")))
    assert [b.built for b in second.built] == [False]
    assert second.built[0].wheel.sha256 == first.built[0].wheel.sha256
    assert again.read_bytes() == out.read_bytes()


def test_two_builds_from_empty_caches_give_the_same_pex_bytes(tmp_path: Path, app_lock: Path) -> None:
    digests = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.pex"
        result = build(_request(app_lock, tmp_path / f"cache-{name}", out, _sources(tmp_path / name)))
        assert [b.built for b in result.built] == [True]
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_a_platform_specific_sdist_for_a_foreign_target_is_a_clear_error(
    tmp_path: Path, index: Tuple[IndexServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, root = index
    lock = tmp_path / "nat.lock"
    assert _lock(server, lock, root / "lock-cache", "natsrc", LINUX, MAC) == 0
    src = _sources(tmp_path)
    # It serves the target it was built for...
    ok = build(dataclasses.replace(_request(lock, tmp_path / "cache", tmp_path / "linux.pex", src), options=PexOptions()))
    (built,) = ok.built
    assert built.wheel.wheel_filename.startswith("natsrc-1.0-cp311-cp311-linux_")
    # ...and refuses the foreign one, naming the sdist, the target and why.
    with pytest.raises(SdistBuildError) as info:
        build(dataclasses.replace(_request(lock, tmp_path / "cache", tmp_path / "mac.pex", src, MAC), options=PexOptions()))
    message = str(info.value)
    assert "natsrc-1.0.tar.gz" in message and f"`{MAC}`" in message and "platform-specific" in message
    assert not (tmp_path / "mac.pex").exists()
    # Through the CLI: exit 2, one message.
    code = build_cli.main(["--lock", str(lock), "--target", MAC, "--cache-dir", str(tmp_path / "cache"),
                           "--python", _python(), "--output", str(tmp_path / "mac.pex")])
    assert code == 2
    assert "natsrc-1.0.tar.gz" in capsys.readouterr().err


def test_a_wheels_only_lock_never_builds_and_says_how_to_allow_it(
    tmp_path: Path, app_lock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "binary.lock"
    lock.write_text(dumps_lock(dataclasses.replace(load_lock(app_lock), allow_sdists=False)))
    code = build_cli.main(["--lock", str(lock), "--cache-dir", str(tmp_path / "cache"), "--python", _python(),
                           "--sources", str(_sources(tmp_path)), "--output", str(tmp_path / "app.pex")])
    assert code == 2
    err = capsys.readouterr().err
    assert "The lock has no wheel of `deepsrc==1.0`" in err
    assert "--allow-sdists" in err and "--only-binary" in err
    assert not (tmp_path / "built-wheels").exists() and not (tmp_path / "app.pex").exists()


def test_fetch_takes_allow_sdists_from_the_lock(tmp_path: Path, app_lock: Path) -> None:
    dest = tmp_path / "dest"
    code = fetch_cli.main(["--lock", str(app_lock), "--target", LINUX, "--cache-dir", str(tmp_path / "cache"),
                           "--dest", str(dest)])
    assert code == 0
    assert "deepsrc-1.0.tar.gz" in {p.name for p in dest.iterdir()}
