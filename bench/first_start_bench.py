"""First start of the torch + transformers app (issue 14 item 2): `deps_install` preinstalled vs
wheels, zipapp and packed, through the core CLI (`python -m fastpex build`, offline).

Each variant is built (its build time is printed: the first build of a kind fills the layer
cache), then run with python3.11 and an empty PEX_ROOT (first start, `sync` before), then again
(second start). Also the default PEX run with PEX_MAX_INSTALL_JOBS=0 (pex's runtime override):
what parallel extraction of pre-installed chroots gives without rebuilding.

Needs a fastpex cache holding the app's wheels (`--cache`, e.g. a hard-linked copy of the pack
bench's named cache) and the lock (`--lock`, bench/pack_bench.py's ml-core lock); no network.

Run (it writes ~30 GB over its runs):
  flock /tmp/work/bench.lock /tmp/dev/bin/python bench/first_start_bench.py \
      --work /tmp/fastpex-bench/faststart --lock /tmp/fastpex-bench/faststart/ml-core.lock \
      --cache /tmp/fastpex-bench/faststart/cache
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parent.parent
PY311 = "/root/.pyenv/versions/3.11.7/bin/python3.11"
MAIN = "import torch\nimport transformers\n\n\ndef main():\n    print('torch', torch.__version__, 'transformers', transformers.__version__)\n"
VARIANTS = {
    # name: (layout, deps_install, runtime env)
    "preinstalled-zipapp": ("zipapp", "preinstalled", {}),
    "preinstalled-packed": ("packed", "preinstalled", {}),
    "wheels-zipapp": ("zipapp", "wheels", {}),
    "wheels-packed": ("packed", "wheels", {}),
    "preinstalled-packed+PEX_MAX_INSTALL_JOBS=0": ("packed", "preinstalled", {"PEX_MAX_INSTALL_JOBS": "0"}),
}


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build_cmd(work: Path, lock: str, cache: str, layout: str, deps_install: str, out: Path) -> List[str]:
    return [
        sys.executable, "-m", "fastpex", "build", "--lock", lock, "--target", "linux_x86_64-cp311",
        "--requirement", "torch==2.9.1", "--requirement", "transformers", "--offline",
        "--cache-dir", cache, "--sources", str(work / "src"), "--entry-point", "app.main:main",
        "--layout", layout, "--deps-install", deps_install, "--output", str(out),
    ]


def timed(cmd: Sequence[str], env: Dict[str, str]) -> tuple:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--lock", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--runs", type=int, default=1, help="first starts per variant")
    options = parser.parse_args(argv)
    work: Path = options.work
    (work / "src" / "app").mkdir(parents=True, exist_ok=True)
    (work / "src" / "app" / "__init__.py").write_text("")
    (work / "src" / "app" / "main.py").write_text(MAIN)
    build_env = dict(os.environ, PYTHONPATH=str(REPO / "src" / "python"))
    results = {}
    for name in options.variants:
        layout, deps_install, run_env = VARIANTS[name]
        out = work / "out" / f"{layout}-{deps_install}.pex"
        cmd = build_cmd(work, options.lock, options.cache, layout, deps_install, out)
        build_s, proc = timed(cmd, build_env)
        if proc.returncode != 0:
            print(f"{name}: build failed: {proc.stderr[-2000:]}")
            return 1
        row: Dict[str, object] = {"build": build_s, "build_command": shlex.join(cmd), "size": size_of(out)}
        root = work / "pex_root"
        env = {"PATH": "/usr/bin:/bin", "PEX_ROOT": str(root), **run_env}
        run_cmd = [PY311, str(out)]
        firsts = []
        for _ in range(options.runs):
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            first_s, first = timed(run_cmd, env)
            if first.returncode != 0 or "torch" not in first.stdout:
                print(f"{name}: first start failed: {first.stderr[-2000:]}")
                return 1
            firsts.append(first_s)
        second_s, second = timed(run_cmd, env)
        assert second.returncode == 0, second.stderr
        row.update(first=firsts, second=second_s, pex_root=size_of(root), output=first.stdout.strip(),
                   run_command=" ".join(f"{k}={v}" for k, v in env.items() if k != "PATH") + " " + shlex.join(run_cmd))
        results[name] = row
        print(f"{name}: build {build_s:.1f} s, size {row['size'] / 1e9:.3f} GB, first start "
              f"{', '.join(f'{s:.1f}' for s in firsts)} s, second {second_s:.1f} s, "
              f"PEX_ROOT {row['pex_root'] / 1e9:.2f} GB", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    with open(work / "first_start.json", "w") as fp:
        json.dump(results, fp, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
