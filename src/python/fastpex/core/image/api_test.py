from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from fastpex.core.errors import UserError
from fastpex.core.image.api import ImageConfig, ImageRequest, PlatformImage, image
from fastpex.core.image.base import BaseImageError, load_base
from fastpex.core.image.grouping import MAX_LAYERS, check_layer_count, group_wheels
from fastpex.core.image.install import HostileWheelError
from fastpex.core.image.oci import Platform
from fastpex.core.image_build import ImageBuildRequest, build_image, parse_base
from fastpex.core.pack.layers import WheelInput
from fastpex.testing.base_image import python_base_layout, run_in_image
from fastpex.testing.pythons import cpython
from fastpex.testing.registry_fixture import DockerRegistry
from fastpex.testing.wheels import WheelFactory

AMD64 = Platform("linux", "amd64")


def _input(path: Path) -> WheelInput:
    return WheelInput(str(path), hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return python_base_layout(tmp_path_factory.mktemp("base") / "layout", str(cpython("3.11")))


def _request(base: Path, wheels: List[Path], out: Path, tmp: Path, **kwargs: object) -> ImageRequest:
    platform_image = PlatformImage("linux_x86_64-cp311", "3.11", tuple(_input(w) for w in wheels), load_base(base, "base", AMD64, "3.11", "t"))
    return ImageRequest(images=(platform_image,), output=out, pythons=(str(cpython("3.11")),), cache_root=tmp / "cache", **kwargs)  # type: ignore[arg-type]


def _tree(path: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_hostile_wheel_fails_and_leaves_the_output_untouched(base: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
        zf.writestr("evil-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("../../../../etc/profile.d/evil.sh", "echo owned\n")
    good = WheelFactory(tmp_path / "w").wheel("good", "1.0")
    out = tmp_path / "out"
    assert image(_request(base, [good], out, tmp_path)).manifests
    before = _tree(out)
    with pytest.raises(HostileWheelError, match=r"evil-1.0-py3-none-any.whl.*\.\./\.\./\.\./\.\./etc/profile.d/evil.sh"):
        image(_request(base, [good, evil], out, tmp_path))
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == []


def test_grouping_is_stable_when_a_wheel_is_added(tmp_path: Path) -> None:
    factory = WheelFactory(tmp_path)
    wheels = [_input(factory.wheel(f"proj{i}", "1.0")) for i in range(20)]
    big = _input(factory.wheel("huge", "1.0", file_size_padding=3 * 1024 * 1024))
    groups = group_wheels([*wheels, big], large_layer_mb=2, small_layer_groups=4)
    assert groups[0].name == "wheel:huge" and len(groups) <= 5
    added = _input(factory.wheel("newcomer", "1.0"))
    regrouped = group_wheels([*wheels, big, added], large_layer_mb=2, small_layer_groups=4)
    changed = [g.name for g in regrouped if g not in groups]
    assert len(changed) == 1 and any(w.sha256 == added.sha256 for g in regrouped if g.name == changed[0] for w in g.wheels)


def test_layer_count_is_bounded(tmp_path: Path) -> None:
    check_layer_count(100, MAX_LAYERS - 100, "b")
    with pytest.raises(UserError, match="128 layers .*120 from the base"):
        check_layer_count(120, 8, "b")


def test_venv_links_resolve_inside_the_image(base: Path, tmp_path: Path) -> None:
    wheel = WheelFactory(tmp_path / "w").wheel("dep", "1.0", files={"dep/__init__.py": b"X = 'dep'\n"})
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("import dep, sys\nprint(dep.X, sys.executable, sys.prefix != sys.base_prefix)\n")
    out = tmp_path / "out"
    result = image(_request(base, [wheel], out, tmp_path, sources=src, config=ImageConfig(entry_point="main")))
    assert [layer.name for layer in result.manifests[0].layers][1] == "venv"
    proc = run_in_image(out, "latest", ["/app/entrypoint"], tmp_path / "bundle")
    assert (proc.returncode, proc.stdout.strip()) == (0, "dep /app/venv/bin/python3.11 True"), proc.stderr
    link = tmp_path / "bundle/rootfs/app/venv/bin/python3.11"
    assert not Path(link.readlink()).is_absolute()
    cfg = (tmp_path / "bundle/rootfs/app/venv/pyvenv.cfg").read_text()
    assert f"home = {cpython('3.11').parent}\n" in cfg


def test_image_base_is_reproducible(tmp_path: Path) -> None:
    python = str(cpython("3.11"))
    outputs = []
    for name in ("a", "b"):
        proc = subprocess.run(
            [str(cpython("3.11")), "-m", "fastpex", "image-base", "--python", python, "--output", str(tmp_path / name)],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3],
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout.splitlines()[-1])["digest"])
    assert outputs[0] == outputs[1]
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    layout = tmp_path / "a"
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    (layer,) = manifest["layers"]
    with tarfile.open(layout / "blobs/sha256" / layer["digest"][7:]) as tar:
        names = set(tar.getnames())
    stdlib = str(cpython("3.11").parents[1] / "lib/python3.11").lstrip("/")
    assert python.lstrip("/") in names and f"{stdlib}/os.py" in names and "etc/passwd" in names and "tmp" in names
    assert not any(n.startswith((f"{stdlib}/test/", f"{stdlib}/tkinter/", f"{stdlib}/site-packages/")) for n in names)
    assert not any("__pycache__" in n for n in names)


def test_base_spec_parsing() -> None:
    assert parse_base("oci:/x/y:tag").layout == Path("/x/y") and parse_base("oci:/x/y:tag").tag == "tag"
    assert parse_base("oci:/x/y").layout == Path("/x/y") and parse_base("oci:/x/y").tag is None
    assert parse_base("127.0.0.1:5000/base:3.11").reference == "127.0.0.1:5000/base:3.11"


def test_base_without_python_is_refused(base: Path, tmp_path: Path) -> None:
    with pytest.raises(BaseImageError, match="needs Python 3.10"):
        load_base(base, "base", AMD64, "3.10", "linux_x86_64-cp310")
    with pytest.raises(BaseImageError, match="does not exist"):
        load_base(tmp_path / "nothing", None, AMD64, "3.11", "t")


def test_a_registry_base_is_pulled_and_used(base: Path, tmp_path: Path) -> None:
    """The base goes to a real registry with skopeo; fastpex pulls it from there by digest."""
    from fastpex.core.cli import lock as lock_cli
    from fastpex.testing.index_server import IndexConfig, IndexServer

    dists = tmp_path / "dists"
    WheelFactory(dists).wheel("dep", "1.0", files={"dep/__init__.py": b"X = 'from the registry base'\n"})
    with DockerRegistry(tmp_path / "registry") as registry, IndexServer(dists, config=IndexConfig()) as server:
        copied = subprocess.run(
            ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{base}:base", f"docker://{registry.address}/python-base:3.11"],
            capture_output=True, text=True,
        )
        assert copied.returncode == 0, copied.stderr
        inspected = json.loads(subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.address}/python-base:3.11"],
            capture_output=True, text=True, check=True,
        ).stdout)
        lockfile = tmp_path / "app.lock"
        assert lock_cli.main(["--resolve", "app", "--requirement", "dep", "--index", server.simple_url, "--output", str(lockfile),
                              "--cache-dir", str(tmp_path / "cache"), "--target", "linux_x86_64-cp311"]) == 0
        src = tmp_path / "src"
        src.mkdir()
        (src / "main.py").write_text("import dep\nprint(dep.X)\n")
        out = tmp_path / "out"
        result = build_image(ImageBuildRequest(
            lock_path=str(lockfile), base=f"{registry.address}/python-base@{inspected['Digest']}", output=str(out),
            sources=str(src), config=ImageConfig(entry_point="main"), cache_root=str(tmp_path / "cache"),
            pythons=(str(cpython("3.11")),),
        ))
    assert result.image.manifests[0].layers[0].name == "base"
    proc = run_in_image(out, "latest", ["/app/entrypoint"], tmp_path / "bundle")
    assert (proc.returncode, proc.stdout.strip()) == (0, "from the registry base"), proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fastpex-image-base.")]
    assert stat.S_ISDIR((out / "blobs").stat().st_mode)
