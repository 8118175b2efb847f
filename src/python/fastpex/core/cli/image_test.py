"""`python -m fastpex lock`, `image-base` then `image`, against a loopback index; the images are
checked by independent tools (umoci unpacks and we chroot into them, skopeo inspects them)."""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from fastpex.core.cli import image as image_cli
from fastpex.core.cli import lock as lock_cli
from fastpex.core.image.oci import canonical_json
from fastpex.testing.base_image import python_base_layout, run_in_image
from fastpex.testing.index_server import IndexConfig, IndexServer
from fastpex.testing.pythons import cpython
from fastpex.testing.wheels import build_wheel

TAG = "app"
TARGETS = ("linux_x86_64-cp311", "linux_aarch64-cp311")


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("image")
    dists = root / "dists"
    dists.mkdir()
    build_wheel(
        dists, "greet", "1.0", requires_dist=["colorize>=2"],
        files={"greet/__init__.py": b"from colorize import paint\n\ndef hello(n):\n    return paint('hello ' + n)\n\n"
                                    b"def cli():\n    print(hello('cli'))\n"},
        console_scripts={"greet-cli": "greet:cli"},
    )
    build_wheel(dists, "colorize", "2.1", files={"colorize/__init__.py": b"def paint(s):\n    return '<' + s + '>'\n"})
    lockfile = root / "app.lock"
    with IndexServer(dists, config=IndexConfig(advertise_metadata=False, serve_metadata_files=False)) as server:
        argv = ["--resolve", "app", "--requirement", "greet", "--index", server.simple_url,
                "--output", str(lockfile), "--cache-dir", str(root / "cache")]
        for target in TARGETS:
            argv += ["--target", target]
        assert lock_cli.main(argv) == 0
        yield lockfile, root / "cache"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return python_base_layout(tmp_path_factory.mktemp("base") / "layout", str(cpython("3.11")))


def _sources(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True, exist_ok=True)
    (src / "app" / "__init__.py").write_text("")
    (src / "app" / "main.py").write_text(
        "import sys\nimport greet, colorize\n\ndef main():\n    print(greet.hello('image'), sys.prefix, sys.argv[1:])\n"
    )
    return src


def _image(lockfile: Path, cache: Path, base: Path, out: Path, src: Path, *extra: str, capsys=None) -> int:
    argv = ["--lock", str(lockfile), "--cache-dir", str(cache), "--base", f"oci:{base}:base", "--sources", str(src),
            "--entry-point", "app.main:main", "--output", str(out), "--tag", TAG,
            "--python", str(cpython("3.11")), *extra]
    return image_cli.main(argv)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _manifest(layout: Path) -> Dict:
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == TAG
    return {"digest": entry["digest"], **json.loads(_blob(layout, entry["digest"]))}


def _files(layout: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(layout)): p.read_bytes() for p in layout.rglob("*") if p.is_file()}


def _check_layer_safe(blob: bytes, name: str) -> None:
    import io

    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        for member in tar:
            path = member.name
            assert not path.startswith("/") and ".." not in path.split("/"), (name, path)
            assert not (member.ischr() or member.isblk() or member.isfifo()), (name, path)
            assert not member.mode & 0o6000, (name, path, oct(member.mode))
            if member.issym() or member.islnk():
                target = member.linkname
                resolved = posixpath.normpath(posixpath.join("/", posixpath.dirname(path), target)) if member.issym() else "/" + target
                assert not target.startswith("/") or member.islnk(), (name, path, target)
                assert resolved.startswith("/") and ".." not in resolved.split("/"), (name, path, target)


def test_image_runs_in_a_chroot_and_is_a_valid_layout(locked: Tuple[Path, Path], base: Path, tmp_path: Path) -> None:
    lockfile, cache = locked
    out = tmp_path / "image"
    assert _image(lockfile, cache, base, out, _sources(tmp_path), "--target", "linux_x86_64-cp311", "--arg", "x",
                  "--env", "GREETING=hi", "--label", "org.example=1") == 0
    manifest = _manifest(out)
    config = json.loads(_blob(out, manifest["config"]["digest"]))
    assert config["created"] == "1970-01-01T00:00:00Z" and config["architecture"] == "amd64"
    assert config["config"]["Entrypoint"] == ["/app/entrypoint"] and config["config"]["Cmd"] == ["x"]
    assert "PATH=/app/venv/bin:" in " ".join(config["config"]["Env"]) and "GREETING=hi" in config["config"]["Env"]
    assert config["config"]["Labels"] == {"org.example": "1"} and config["config"]["WorkingDir"] == "/app/src"
    names = [layer.get("annotations", {}).get("io.fastpex.layer", "base") for layer in manifest["layers"]]
    assert names[:2] == ["base", "venv"] and names[-1] == "app", names
    wheels = sorted(w for layer in manifest["layers"] for w in layer.get("annotations", {}).get("io.fastpex.wheels", "").split(",") if w)
    assert wheels == ["colorize-2.1-py3-none-any.whl", "greet-1.0-py3-none-any.whl"]
    assert all(n.startswith("group:") for n in names[2:-1]), names
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])

    argv = [*config["config"]["Entrypoint"], *config["config"]["Cmd"]]
    proc = run_in_image(out, TAG, argv, tmp_path / "bundle")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "<hello image> /app/venv ['x']"
    proc = run_in_image(out, TAG, ["/app/venv/bin/greet-cli"], tmp_path / "bundle")
    assert (proc.returncode, proc.stdout.strip()) == (0, "<hello cli>"), proc.stderr
    # Byte code was precompiled: importing the dependencies writes no __pycache__ at run time.
    site = tmp_path / "bundle/rootfs/app/venv/lib/python3.11/site-packages"
    assert (site / "colorize/__pycache__/__init__.cpython-311.pyc").is_file()
    assert (tmp_path / "bundle/rootfs/app/src/app/__pycache__/main.cpython-311.pyc").is_file()

    inspected = subprocess.run(["skopeo", "inspect", f"oci:{out}:{TAG}"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == manifest["digest"]
    for layer in manifest["layers"]:
        _check_layer_safe(_blob(out, layer["digest"]), layer.get("annotations", {}).get("io.fastpex.layer", "base"))


def test_same_manifest_digest_from_two_cache_roots(locked: Tuple[Path, Path], base: Path, tmp_path: Path) -> None:
    lockfile, cache = locked
    other_cache = tmp_path / "cache2"
    shutil.copytree(cache, other_cache)
    shutil.rmtree(other_cache / "image-layers", ignore_errors=True)
    src = _sources(tmp_path)
    assert _image(lockfile, cache, base, tmp_path / "a", src) == 0
    assert _image(lockfile, other_cache, base, tmp_path / "b", src) == 0
    assert _manifest(tmp_path / "a")["digest"] == _manifest(tmp_path / "b")["digest"]
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_parts_never_overlap_and_add_up_to_the_whole(locked: Tuple[Path, Path], base: Path, tmp_path: Path) -> None:
    lockfile, cache = locked
    src = _sources(tmp_path)
    outputs = {}
    for part in ("all", "deps", "app"):
        assert _image(lockfile, cache, base, tmp_path / part, src, "--part", part) == 0
        outputs[part] = _files(tmp_path / part)
    assert not set(outputs["deps"]) & set(outputs["app"])
    assert {**outputs["deps"], **outputs["app"]} == outputs["all"]
    assert "index.json" in outputs["app"] and "oci-layout" in outputs["app"]
    # The app part alone, with the layer cache gone, rebuilds the layers there (same digests).
    shutil.rmtree(cache / "image-layers")
    assert _image(lockfile, cache, base, tmp_path / "app-cold", src, "--part", "app") == 0
    assert _files(tmp_path / "app-cold") == outputs["app"]
    # A source change re-makes only the app part; the deps part is unchanged.
    (src / "app" / "extra.py").write_text("X = 1\n")
    assert _image(lockfile, cache, base, tmp_path / "deps2", src, "--part", "deps") == 0
    assert _files(tmp_path / "deps2") == outputs["deps"]
    assert _image(lockfile, cache, base, tmp_path / "app2", src, "--part", "app") == 0
    assert _files(tmp_path / "app2") != outputs["app"]


def test_a_base_with_another_python_is_refused(locked: Tuple[Path, Path], tmp_path: Path, capsys) -> None:
    lockfile, cache = locked
    base312 = python_base_layout(tmp_path / "base312", str(cpython("3.12")))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    code = _image(lockfile, cache, base312, out, _sources(tmp_path), "--target", "linux_x86_64-cp311")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Python 3.12" in err and "needs Python 3.11" in err and "linux_x86_64-cp311" in err
    assert [p.name for p in out.iterdir()] == ["keep"]


def _synthetic_arm64(base: Path, dest: Path) -> Path:
    """The same files with an arm64 config: enough for an index (nothing runs it)."""
    shutil.copytree(base, dest)
    (entry,) = json.loads((dest / "index.json").read_text())["manifests"]
    manifest = json.loads(_blob(dest, entry["digest"]))
    config = json.loads(_blob(dest, manifest["config"]["digest"]))
    config["architecture"] = "arm64"
    config_bytes = canonical_json(config)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    (dest / "blobs/sha256" / config_digest.split(":")[1]).write_bytes(config_bytes)
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_bytes)}
    manifest_bytes = canonical_json(manifest)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    (dest / "blobs/sha256" / manifest_digest.split(":")[1]).write_bytes(manifest_bytes)
    amd64 = dict(entry, platform={"os": "linux", "architecture": "amd64"})
    arm64 = dict(entry, digest=manifest_digest, size=len(manifest_bytes), platform={"os": "linux", "architecture": "arm64"})
    index = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [amd64, arm64]})
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    (dest / "blobs/sha256" / index_digest.split(":")[1]).write_bytes(index)
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": len(index),
           "annotations": {"org.opencontainers.image.ref.name": "base"}}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return dest


def test_several_targets_make_an_image_index(locked: Tuple[Path, Path], base: Path, tmp_path: Path, capsys) -> None:
    lockfile, cache = locked
    multi = _synthetic_arm64(base, tmp_path / "multi-base")
    out = tmp_path / "image"
    assert _image(lockfile, cache, multi, out, _sources(tmp_path), "--target", TARGETS[0], "--target", TARGETS[1]) == 0
    (entry,) = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = json.loads(_blob(out, entry["digest"]))
    platforms = [m["platform"]["architecture"] for m in index["manifests"]]
    assert platforms == ["amd64", "arm64"]
    for child in index["manifests"]:
        config = json.loads(_blob(out, json.loads(_blob(out, child["digest"]))["config"]["digest"]))
        assert config["architecture"] == child["platform"]["architecture"]
    inspected = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:{TAG}"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    # An amd64-only base for the arm64 target: refused, naming both platforms.
    capsys.readouterr()
    assert _image(lockfile, cache, base, tmp_path / "arm", _sources(tmp_path), "--target", TARGETS[1]) == 2
    err = capsys.readouterr().err
    assert "linux/amd64" in err and "linux/arm64" in err


def test_unknown_script_and_missing_entry_point_are_refused(locked: Tuple[Path, Path], base: Path, tmp_path: Path, capsys) -> None:
    lockfile, cache = locked
    argv = ["--lock", str(lockfile), "--cache-dir", str(cache), "--base", f"oci:{base}:base", "--output", str(tmp_path / "o"),
            "--python", str(cpython("3.11"))]
    assert image_cli.main([*argv, "--script", "nope"]) == 2
    assert "greet-cli" in capsys.readouterr().err
    assert image_cli.main([*argv, "--entry-point", "missing.mod:main"]) == 2
    assert "missing.mod:main" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _layer_names(layout: Path) -> List[str]:
    return [layer.get("annotations", {}).get("io.fastpex.layer", "base") for layer in _manifest(layout)["layers"]]
