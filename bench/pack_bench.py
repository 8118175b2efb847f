"""Pack benchmark (issue 5): Pants 2.17.1 builtin `pex_binary` vs `fastpex_binary`.

A scratch Pants repo with an app that imports torch + transformers (src/app/main.py prints
their versions) and a one-dependency app (src/small/main.py imports humanize). Both binaries
of an app use the same lockfile: the ml-core lock that bench/lock_bench.py had fastpex write
through Pants (stock Pants reads it too), built for linux x86_64 / CPython 3.11; humanize is
locked with `python -m fastpex lock` (--manylinux manylinux2014 so its header matches Pants).

For each variant (`fastpex-zipapp`, `fastpex-packed`, `builtin-zipapp`, `builtin-packed`,
`small-fastpex`, `small-builtin`), with its own empty named-caches dir and local store:

  cold      `pants --no-pantsd package <target>`  (downloads included; `--pantsd`: with pantsd,
            which the cold step starts and the warm and source steps reuse, as a user's would)
  warm      the same again, nothing changed
  source    after an edit of main.py (a source-only change)
  start     the produced PEX run with python3.11 and an empty PEX_ROOT (first start), then
            again (second start); its size (file or directory)

Results accumulate in <work>/results.json, so variants can be run in separate invocations
(--variants ...) and the report rebuilt with --report-only.

Run: /tmp/dev/bin/python bench/pack_bench.py [--variants fastpex-zipapp builtin-zipapp ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_repro import SPLIT_HEADER, prune_big_blobs, stop_pantsd, timed_pants_run  # noqa: E402
from runner import (  # noqa: E402
    REPO_ROOT,
    SRC,
    Comparison,
    Report,
    clean_env,
    dir_size,
    fmt_bytes,
    measure,
    rmtree,
)

ML_REQS = ["torch==2.9.1", "transformers", "scikit-learn", "pandas"]
IC = "CPython>=3.11,<3.13"
PY311 = "/root/.pyenv/versions/3.11.7/bin/python3.11"
INDEX = "https://pypi.org/simple/"

VARIANTS = {
    # name: (BUILD target name, app dir)
    "small-fastpex": ("small-fastpex", "small"),
    "small-builtin": ("small-builtin", "small"),
    "fastpex-zipapp": ("fastpex-zipapp", "app"),
    "fastpex-packed": ("fastpex-packed", "app"),
    "builtin-zipapp": ("builtin-zipapp", "app"),
    "builtin-packed": ("builtin-packed", "app"),
}

MAIN_APP = """\
import torch
import transformers

EDIT = 0


def main():
    print("torch", torch.__version__, "transformers", transformers.__version__, "edit", EDIT)


if __name__ == "__main__":
    main()
"""

MAIN_SMALL = """\
import humanize

EDIT = 0


def main():
    print("humanize", humanize.naturalsize(4_200_000_000), "edit", EDIT)


if __name__ == "__main__":
    main()
"""


def write_repo(root: Path, ml_lock: Path, small_lock: Path, src: Path = SRC) -> None:
    rmtree(root)
    (root / "3rdparty").mkdir(parents=True)
    shutil.copy(ml_lock, root / "3rdparty" / "ml-core.lock")
    shutil.copy(small_lock, root / "3rdparty" / "small.lock")
    (root / "pants.toml").write_text(textwrap.dedent(f"""\
        [GLOBAL]
        pants_version = "2.17.1"
        pythonpath = ["{src}"]
        backend_packages = ["pants.backend.python", "fastpex.pants"]
        pantsd = false

        [anonymous-telemetry]
        enabled = false

        [source]
        root_patterns = ["/src"]

        [python]
        interpreter_constraints = ["{IC}"]
        enable_resolves = true
        pip_version = "latest"
        default_resolve = "ml-core"

        [python.resolves]
        ml-core = "3rdparty/ml-core.lock"
        small = "3rdparty/small.lock"

        [python-bootstrap]
        search_path = ["<PYENV>", "<PATH>"]

        [fastpex]
        resolves = ["ml-core", "small"]
        targets = ["linux_x86_64-cp311"]
        """))
    (root / "3rdparty" / "BUILD").write_text(
        "".join(f'python_requirement(name="ml{i}", requirements=["{r}"], resolve="ml-core")\n' for i, r in enumerate(ML_REQS))
        + 'python_requirement(name="humanize", requirements=["humanize"], resolve="small")\n'
    )
    app = root / "src" / "app"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "main.py").write_text(MAIN_APP)
    (app / "BUILD").write_text(textwrap.dedent("""\
        python_sources(name="lib", resolve="ml-core")
        pex_binary(name="builtin-zipapp", entry_point="app.main:main", resolve="ml-core", layout="zipapp", interpreter_constraints=["CPython==3.11.*"])
        pex_binary(name="builtin-packed", entry_point="app.main:main", resolve="ml-core", layout="packed", interpreter_constraints=["CPython==3.11.*"])
        fastpex_binary(name="fastpex-zipapp", entry_point="app.main:main", resolve="ml-core", targets=["linux_x86_64-cp311"], layout="zipapp")
        fastpex_binary(name="fastpex-packed", entry_point="app.main:main", resolve="ml-core", targets=["linux_x86_64-cp311"], layout="packed")
        """))
    small = root / "src" / "small"
    small.mkdir(parents=True)
    (small / "__init__.py").write_text("")
    (small / "main.py").write_text(MAIN_SMALL)
    (small / "BUILD").write_text(textwrap.dedent("""\
        python_sources(name="lib", resolve="small")
        pex_binary(name="small-builtin", entry_point="small.main:main", resolve="small", interpreter_constraints=["CPython==3.11.*"])
        fastpex_binary(name="small-fastpex", entry_point="small.main:main", resolve="small", targets=["linux_x86_64-cp311"])
        """))


def edit(main_py: Path) -> None:
    text = main_py.read_text()
    n = int(text.split("EDIT = ", 1)[1].split("\n", 1)[0]) + 1
    main_py.write_text(text.replace(f"EDIT = {n - 1}\n", f"EDIT = {n}\n"))


def run_variant(args, repo: Path, variant: str, results: Dict[str, dict]) -> None:
    target, app = VARIANTS[variant]
    caches = args.work / "caches" / variant
    rmtree(caches)
    logs = args.work / "logs"
    env = clean_env()
    address = f"src/{app}:{target}"
    # Pants 2.17 + pex 2.100.7: pex keeps its build-time caches (downloads, pip) under ~/.cache/pex,
    # not under the named cache, so a fresh HOME for Pants' processes is part of "empty caches".
    home = caches / "home"
    home.mkdir(parents=True)
    argv = [str(REPO_ROOT / "pants"), "--pantsd" if args.pantsd else "--no-pantsd", f"--named-caches-dir={caches / 'named'}",
            f"--local-store-dir={caches / 'store'}", f'--subprocess-environment-env-vars=+["HOME={home}"]',
            "package", address]
    out = repo / "dist" / f"src.{app}" / f"{target}.pex"
    rmtree(out)
    res: dict = {"target": address, "command": " ".join(argv)}
    results[variant] = res

    def step(key: str) -> bool:
        r = measure(f"{variant}-{key}", argv, cwd=repo, env=env, log_dir=logs, check=False, timeout=args.timeout)
        res[key] = {"wall": r.wall, "rx": r.rx, "rc": r.returncode, "log": str(r.log)}
        save(args, results)
        return r.ok

    if not step("cold"):
        return
    step("warm")
    for i in range(args.source_runs):
        edit(repo / "src" / app / "main.py")
        key = "source" if i == 0 else f"source{i + 1}"
        if args.split:
            if not split_step(args, repo, variant, key, argv, env, out, res, results):
                return
        elif not step(key):
            return
    if out.exists():
        res["size"] = dir_size(out)
        res["kind"] = "dir" if out.is_dir() else "file"
    if not args.skip_start and out.exists():
        pex_root = args.work / "pex_root"
        for key in ("start1", "start2"):
            if key == "start1":
                rmtree(pex_root)
            r = measure(f"{variant}-{key}", [PY311, out], env=clean_env({"PEX_ROOT": str(pex_root)}), log_dir=logs,
                        check=False, timeout=args.timeout)
            res[key] = {"wall": r.wall, "rx": r.rx, "rc": r.returncode, "log": str(r.log),
                        "output": r.log.read_text(errors="replace").splitlines()[-1][:200]}
            if key == "start1":
                res["pex_root_size"] = dir_size(pex_root) if pex_root.exists() else 0
        rmtree(pex_root)
    save(args, results)
    if args.pantsd:
        stop_pantsd(repo)
    rmtree(caches)
    rmtree(out)


def split_step(args, repo: Path, variant: str, key: str, argv: List[str], env: Dict[str, str], out: Path,
               res: dict, results: Dict[str, dict]) -> bool:
    """A source-only rebuild after `sync`, cut into head / fastpex process / capture / dist/ / tail
    (capture_repro.Split: the process is polled from /proc by its `--output` argument)."""
    prune_big_blobs(args.work / "caches" / variant / "store")
    subprocess.run(["sync"], check=True)
    time.sleep(2)
    split = timed_pants_run(argv, repo, args.work / "logs" / f"{variant}-{key}.log", str(out.relative_to(repo / "dist")),
                            env=env, timeout=args.timeout)
    res[key] = {"wall": split.wall, "rx": 0, "rc": split.rc, "log": str(args.work / "logs" / f"{variant}-{key}.log"),
                "split": dict(zip(SPLIT_HEADER, split.row()))}
    print(f"    [{variant}-{key}] " + "  ".join(f"{h}={c}" for h, c in zip(SPLIT_HEADER, split.row())) + f" rc={split.rc}", flush=True)
    save(args, results)
    return split.rc == 0


def save(args, results) -> None:
    (args.work / "results.json").write_text(json.dumps(results, indent=2))


def get(results, variant, key, field="wall") -> Optional[float]:
    v = results.get(variant, {}).get(key)
    if isinstance(v, dict):
        return v[field] if v.get("rc") == 0 else None
    return v


def build_report(args, results: Dict[str, dict]) -> None:
    report = Report("pack_bench", "Pack: app importing torch + transformers (ml-core lock), linux x86_64 / CPython 3.11")
    commit_file = args.work / "src-snapshot" / "COMMIT"
    if commit_file.exists():
        report.add_text(f"fastpex sources used by Pants: `git archive` of commit {commit_file.read_text().strip()} (frozen for the whole run).")
    rows = []
    for variant, res in results.items():
        if variant.startswith("_"):
            continue

        def cell(key, field="wall"):
            v = res.get(key)
            if not isinstance(v, dict):
                return "not run"
            if v["rc"] != 0:
                return f"FAILED (exit {v['rc']})"
            return f"{v[field]:.2f} s" if field == "wall" else fmt_bytes(v[field])
        rows.append([variant, f"`{res['target']}`", cell("cold"), cell("cold", "rx"), cell("warm"), cell("source"),
                     cell("start1"), cell("start2"), fmt_bytes(res.get("size")) + (" (dir)" if res.get("kind") == "dir" else ""),
                     fmt_bytes(res.get("pex_root_size"))])
    mode = "pants --pantsd package` (pantsd started by the cold step and kept for warm + source" if results.get("_pantsd") else "pants --no-pantsd package`"
    split_rows = [[variant, key, *res[key]["split"].values()] for variant, res in results.items() if not variant.startswith("_")
                  for key in sorted(res) if key.startswith("source") and isinstance(res[key], dict) and "split" in res[key]]
    if split_rows:
        report.add_raw_table("Source-only rebuilds, split (s; after `sync`; process = the fastpex process's life in /proc)",
                             ["variant", "run", *SPLIT_HEADER], split_rows)
    report.add_raw_table(f"All measurements (one run each; `{mode}; cold = empty named caches + store)",
                         ["variant", "target", "cold", "cold bytes", "warm (no change)", "source-only rebuild",
                          "first start (empty PEX_ROOT)", "second start", "PEX size", "PEX_ROOT after 1st start"], rows)
    comps: List[Comparison] = []
    for layout in ("zipapp", "packed"):
        f, b = f"fastpex-{layout}", f"builtin-{layout}"
        fs, bs = get(results, f, "source"), get(results, b, "source")
        comps.append(Comparison(f"source-only rebuild ({layout})", "s", fs, bs, f"pex_binary {layout}", "≥30x faster",
                                None if fs is None or bs is None else bs >= 30 * fs))
        fc, bc = get(results, f, "cold"), get(results, b, "cold")
        comps.append(Comparison(f"cold build ({layout})", "s", fc, bc, f"pex_binary {layout}", "fastpex ≤ builtin (ratio ≥1x)",
                                None if fc is None or bc is None else fc <= bc))
        comps.append(Comparison(f"cold bytes ({layout})", "B", get(results, f, "cold", "rx"), get(results, b, "cold", "rx"), f"pex_binary {layout}"))
        fw, bw = get(results, f, "warm"), get(results, b, "warm")
        comps.append(Comparison(f"warm rebuild, no change ({layout})", "s", fw, bw, f"pex_binary {layout}"))
        f1, b1 = get(results, f, "start1"), get(results, b, "start1")
        comps.append(Comparison(f"first start, empty PEX_ROOT ({layout})", "s", f1, b1, f"pex_binary {layout}", "fastpex ≤ builtin (ratio ≥1x)",
                                None if f1 is None or b1 is None else f1 <= b1 * 1.05))
        fsz, bsz = results.get(f, {}).get("size"), results.get(b, {}).get("size")
        comps.append(Comparison(f"PEX size ({layout})", "B", fsz, bsz, f"pex_binary {layout}", "within 5% (ratio 0.95-1.05x)",
                                None if not fsz or not bsz else abs(fsz - bsz) <= 0.05 * bsz))
    fs, ss = get(results, "fastpex-zipapp", "source"), get(results, "small-fastpex", "source")
    comps.append(Comparison("source-only rebuild: torch app (fastpex) vs one-dep app (fastpex)", "s", fs, ss, "fastpex_binary humanize",
                            "torch app ≤2x one-dep app (ratio ≥0.5x)", None if fs is None or ss is None else fs <= 2 * ss))
    sb = get(results, "small-builtin", "source")
    comps.append(Comparison("source-only rebuild, one-dep app", "s", ss, sb, "pex_binary humanize"))
    report.add_table("fastpex_binary vs builtin pex_binary", comps)
    not_run = [v for v in VARIANTS if v not in results]
    if not_run:
        report.add_text("Not measured in this run: " + ", ".join(not_run) + ".")
    report.write()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lock", type=Path, default=Path("/tmp/fastpex-bench/lock/pants-fastpex-repo/3rdparty/ml-core.lock"),
                    help="the ml-core lock that fastpex wrote through Pants in lock_bench.py (its header matches Pants' settings)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastpex-bench/pack"))
    ap.add_argument("--python", default="/tmp/dev/bin/python", help="Python that runs the fastpex core (locks humanize)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--skip-start", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--source-runs", type=int, default=1, help="source-only rebuilds in a row (each after an edit)")
    ap.add_argument("--split", action="store_true",
                    help="sync before each source-only rebuild and split it: fastpex process, Pants' capture, dist/ write")
    ap.add_argument("--pantsd", action="store_true",
                    help="run Pants with pantsd (its default): the cold step starts it, warm and source-only reuse it")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_file = args.work / "results.json"
    results: Dict[str, dict] = json.loads(results_file.read_text()) if results_file.exists() else {}
    if args.report_only:
        build_report(args, results)
        return 0

    # Freeze the fastpex sources: others edit src/python while this runs, and any change to the
    # backend's sources changes the tool PEX and so invalidates Pants' process cache mid-benchmark.
    src = args.work / "src-snapshot" / "src" / "python"
    if not src.exists():
        (args.work / "src-snapshot").mkdir(parents=True, exist_ok=True)
        subprocess.run(f"git -C {shlex.quote(str(REPO_ROOT))} archive HEAD src/python | tar -x -C {shlex.quote(str(args.work / 'src-snapshot'))}",
                       shell=True, check=True)
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        (args.work / "src-snapshot" / "COMMIT").write_text(commit + "\n")
    print(f"fastpex sources: {src} (git archive of commit {(args.work / 'src-snapshot' / 'COMMIT').read_text().strip()})", flush=True)
    repo = args.work / "repo"
    if not (repo / "pants.toml").exists():
        small_lock = args.work / "small.lock"
        if not small_lock.exists():
            measure("lock-humanize", [args.python, "-m", "fastpex", "lock", "--resolve", "small", "--requirement", "humanize",
                                      "--target", "linux_x86_64-cp311", "--index", INDEX, "--interpreter-constraint", IC, "--manylinux", "manylinux2014",
                                      "--output", small_lock, "--cache-dir", args.work / "fastpex-lock-cache"],
                    cwd=src, log_dir=args.work / "logs")
        write_repo(repo, args.lock, small_lock, src)
    results["_pantsd"] = bool(args.pantsd)
    for variant in args.variants:
        print(f"\n===== {variant}  ({time.strftime('%H:%M:%S')})", flush=True)
        run_variant(args, repo, variant, results)
    build_report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
