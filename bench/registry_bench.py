"""Registry client benchmark and evaluation (issue 13): fastpex's client vs `oras` (PyPI).

One OCI layout holding a ~500 MB random (incompressible) layer, a config and a manifest. For
each client, in the same run, against a fresh Debian docker-registry on loopback each time:

  push    the layout -> the registry (timed; the process's peak RSS from wait4), then again
          (HEAD-before-upload: how many POST/PUT/PATCH the second push still sends)
  pull    the registry -> a new layout (timed)
  verify  skopeo inspect's digest == the layout's manifest digest (push correctness), and a pull
          through a front that flips one byte of every blob (testing/token_server.AuthFront,
          corrupt_blobs=True): does the client notice?

Both clients run as subprocesses so their RSS is theirs: fastpex via `python -m fastpex push`
and a pull script, oras 0.2.x (`oras.layout.Layout.push_to_registry` / `pull_from_registry`)
from a scratch venv that is never a project dependency:

    python3.11 -m venv /tmp/work/orasvenv && PIP_CONFIG_FILE=/dev/null /tmp/work/orasvenv/bin/pip install oras

Run (never beside another benchmark):
    flock /tmp/work/bench.lock /tmp/dev/bin/python bench/registry_bench.py [--size-mb 500] [--oras-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "python"
sys.path.insert(0, str(SRC))

from fastpex.core.image.oci import (  # noqa: E402
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    OciLayout,
    canonical_json,
)
from fastpex.testing.registry_fixture import DockerRegistry  # noqa: E402
from fastpex.testing.token_server import AuthFront  # noqa: E402

ORAS_PUSH = """
import sys, oras.provider, oras.layout
layout, target, tag = sys.argv[1:4]
registry = oras.provider.Registry(insecure=True)
oras.layout.Layout(layout).push_to_registry(registry, target, tag=tag)
"""
ORAS_PULL = """
import sys, oras.provider, oras.layout
out, target = sys.argv[1:3]
registry = oras.provider.Registry(insecure=True)
oras.layout.NewLayoutFromRegistry(out, registry, target, tag="v1")
"""
FASTPEX_PULL = """
import sys
from pathlib import Path
from fastpex.core.image.registry import RegistryOptions, parse_reference, pull_to_layout
pull_to_layout(parse_reference(sys.argv[2]), Path(sys.argv[1]), platform=None, options=RegistryOptions())
"""


def make_layout(path: Path, size_mb: int) -> str:
    """A layout with one random layer of `size_mb` MiB (a valid tar is not needed by any
    registry; the media type says tar). Returns the manifest digest."""
    raw = path.parent / "layer.bin"
    with open(raw, "wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))
    layout = OciLayout(path)
    layer_digest, layer_size = layout.add_blob_from_file(raw)
    raw.unlink()
    config = canonical_json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}, "config": {}}
    )
    config_digest, config_size = layout.add_blob_bytes(config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MEDIA_TYPE_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
        }
    )
    digest, size = layout.add_blob_bytes(manifest)
    layout.write_index([Descriptor(MEDIA_TYPE_MANIFEST, digest, size, {"org.opencontainers.image.ref.name": "v1"})])
    return digest


def timed(argv: List[str], env: Dict[str, str]) -> Tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit status, stderr tail) of one subprocess."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, process.returncode, stderr.strip()[-300:]


def skopeo_digest(address: str, repo: str) -> str:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{address}/{repo}:v1"], capture_output=True, text=True
    )
    return json.loads(out.stdout)["Digest"] if out.returncode == 0 else f"(skopeo failed: {out.stderr.strip()[-200:]})"


def run_client(
    name: str, run: int, work: Path, layout: Path, digest: str, python: str, env: Dict[str, str]
) -> Dict[str, object]:
    result: Dict[str, object] = {"client": name, "run": run}
    with DockerRegistry(work / f"registry-{name}-{run}") as registry:  # empty: every blob is uploaded
        target = f"{registry.address}/bench/{name}"
        if name == "fastpex":
            push = [sys.executable, "-m", "fastpex", "push", "--layout", str(layout), "--tag", "v1", "--to", f"{target}:v1"]
            pull = [sys.executable, "-c", FASTPEX_PULL]
        else:
            push = [python, "-c", ORAS_PUSH, str(layout), f"{target}:v1", "v1"]
            pull = [python, "-c", ORAS_PULL]
        wall, rss, code, err = timed(push, env)
        size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        result.update(push_s=round(wall, 2), push_MBps=round(size / wall / 1e6, 1), push_rss_MiB=round(rss), push_ok=code == 0)
        if code:
            result["push_error"] = err
        result["pushed_digest_ok"] = skopeo_digest(registry.address, f"bench/{name}") == digest
        result["stored_bytes"] = registry.stored_blob_bytes()
        mark = registry.mark()
        wall, _, code, _ = timed(push, env)  # the same layout again: HEADs, no upload
        writes = [r for r in registry.requests_since(mark) if r.method in ("POST", "PUT", "PATCH")]
        result.update(repush_s=round(wall, 2), repush_ok=code == 0, repush_writes=len(writes))
        pulled = work / f"pulled-{name}-{run}"
        wall, rss, code, err = timed([*pull, str(pulled), f"{target}:v1"], env)
        result.update(pull_s=round(wall, 2), pull_rss_MiB=round(rss), pull_ok=code == 0)
        if code:
            result["pull_error"] = err
        shutil.rmtree(pulled, ignore_errors=True)
        with AuthFront(registry.address, mode="none", corrupt_blobs=True) as front:
            corrupt = work / f"corrupt-{name}-{run}"
            _, _, code, err = timed([*pull, str(corrupt), f"{front.address}/bench/{name}:v1"], env)
            result["corrupt_pull_refused"] = code != 0
            result["corrupt_pull_left_files"] = corrupt.exists() and any(corrupt.rglob("*"))
            shutil.rmtree(corrupt, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--oras-python", default="/tmp/work/orasvenv/bin/python")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="registry-bench."))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(SRC)
    layout = work / "layout"
    digest = make_layout(layout, args.size_mb)
    oras_version = subprocess.run(
        [args.oras_python, "-c", "import oras.version as v; print(v.__version__)"], capture_output=True, text=True, env=env
    ).stdout.strip()
    rows: List[Dict[str, object]] = []
    for run in range(args.runs):  # alternating, so drift hits both clients alike
        rows.append(run_client("fastpex", run, work, layout, digest, sys.executable, env))
        rows.append(run_client("oras", run, work, layout, digest, args.oras_python, env))
    print(f"layout: one {args.size_mb} MiB random layer; oras {oras_version}; docker-registry on loopback")
    for row in rows:
        print(json.dumps(row))
    for step in ("push_s", "pull_s"):
        best = {c: min(float(str(r[step])) for r in rows if r["client"] == c) for c in ("fastpex", "oras")}
        print(
            f"{step[:-2]} (best of {args.runs}): fastpex {best['fastpex']:.2f} s, oras {best['oras']:.2f} s, "
            f"oras/fastpex = {best['oras'] / best['fastpex']:.2f}"
        )
    print(f"self RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB; work dir {work}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
