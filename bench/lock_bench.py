"""Lock benchmark (issue 3): fastpex lock vs Pants 2.17.1 builtin generate-lockfiles vs uv.

Requirement set `ml-core` = torch==2.9.1, transformers, scikit-learn, pandas for
linux x86_64 + linux aarch64 + macOS arm64 x CPython 3.11 and 3.12. In one run:

  cold   fastpex CLI (empty cache dir; pip is fetched into it on first use)
         fastpex through Pants (scratch repo enabling fastpex.pants; empty named caches + store)
         Pants builtin generate-lockfiles (scratch repo without fastpex; empty caches + store)
         uv pip compile --universal --generate-hashes (empty --cache-dir)
  warm   fastpex CLI again, unchanged inputs, warm cache;  uv again, warm cache
  correctness
         versions per target vs `uv pip compile --python-platform P --python-version 3.X`;
         a second lock for linux x86_64 cp310 + cp313 (and an attempt at cp39);
         `pip install --no-deps --require-hashes` of each interpreter's linux_x86_64 selection
         into a fresh venv + `pip check` (torch, triton and nvidia-* only for --torch-python).

  one added
         warm caches (the state after the cold run), the same lock with one requirement more
         (`requests` for ml-core), fastpex and uv (uv's previous output is its preferences file)
  scale  a set of 200+ distributions (SCALE_REQUIREMENTS) on 2 targets: cold and one added
         (`polars`), fastpex vs uv --universal

Every fastpex/uv case runs --repeat times (default 3) and reports the median. CPU is split:
the whole process tree's user+sys (RUSAGE_CHILDREN), and pip's share, through a `--pip` wrapper
that runs the real Python under GNU `time` (one line per pip process, a pip zygote included);
fastpex's own CPU = tree - pip (bench/lock_cpu.py).

  pantsd (--pantsd-case, issue 12) ml-core through Pants with pantsd: cold, unchanged, one added
         vs the CLI from the same state (bench/lock_pants.py)

Run: /tmp/dev/bin/python bench/lock_bench.py [--work /tmp/fastpex-bench/lock] [--repeat 3] [--pantsd-case]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lock_cpu import Case, Run, cpu_rows, repeat, timed, write_pip_wrapper  # noqa: E402
from runner import (  # noqa: E402
    REPO_ROOT,
    SRC,
    Comparison,
    Report,
    clean_env,
    measure,
    rmtree,
)

REQUIREMENTS = ["torch==2.9.1", "transformers", "scikit-learn", "pandas"]
ADDED = "requests"  # not in ml-core's closure (huggingface-hub uses httpx2 on this index)
# The scale set: a data/web stack that resolves to ~206 distributions per target (uv, 2026-12-01).
SCALE_REQUIREMENTS = ["jupyterlab", "dask[complete]", "fastapi[standard]", "sqlalchemy", "boto3", "scrapy", "celery[redis]"]
SCALE_ADDED = "polars"
SCALE_TARGETS = ["linux_x86_64-cp311", "macosx_arm64-cp311"]
SCALE_IC = "CPython==3.11.*"
INDEX = "https://pypi.org/simple/"
PLATFORMS = {
    "linux_x86_64": "x86_64-unknown-linux-gnu",
    "linux_aarch64": "aarch64-unknown-linux-gnu",
    "macosx_arm64": "aarch64-apple-darwin",
}
TARGETS = [f"{p}-{py}" for py in ("cp311", "cp312") for p in PLATFORMS]
IC = "CPython>=3.11,<3.13"
PYENV = Path("/root/.pyenv/versions")
TORCH_FAMILY = re.compile(r"^(torch|triton|nvidia-.*)$")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def interpreter(minor: str) -> Optional[Path]:
    for d in sorted(PYENV.glob(f"{minor}*")):
        p = d / "bin" / f"python{minor}"
        if p.exists() and re.fullmatch(rf"{re.escape(minor)}(\.\d+)?", d.name):
            return p
    return None


def fastpex_lock_argv(args, name: str, targets: List[str], out: Path, cache: Path, ic: str,
                      requirements: Sequence[str] = REQUIREMENTS) -> List[str]:
    argv = [args.python, "-m", "fastpex", "lock", "--resolve", name]
    for r in requirements:
        argv += ["--requirement", r]
    for t in targets:
        argv += ["--target", t]
    argv += [
        "--index", INDEX,
        "--interpreter-constraint", ic,
        "--output", str(out),
        "--pylock-output", str(out.parent / f"pylock.{name}.toml"),
        "--cache-dir", str(cache),
    ]
    if getattr(args, "pip_wrapper", None):
        argv += ["--pip", str(args.pip_wrapper)]
    return argv


def snapshot(src: Path, dst: Path) -> None:
    rmtree(dst)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    elif src.exists():
        shutil.copy2(src, dst)


def restore(snap: Path, dst: Path) -> None:
    rmtree(dst)
    snapshot(snap, dst)


def write_pants_repo(root: Path, with_fastpex: bool) -> None:
    rmtree(root)
    (root / "3rdparty").mkdir(parents=True)
    backends = '["pants.backend.python", "fastpex.pants"]' if with_fastpex else '["pants.backend.python"]'
    pythonpath = f'pythonpath = ["{SRC}"]\n' if with_fastpex else ""
    fastpex = (
        "[fastpex]\nresolves = [\"ml-core\"]\ntargets = [" + ", ".join(f'"{t}"' for t in TARGETS) + "]\n"
        if with_fastpex
        else ""
    )
    (root / "pants.toml").write_text(
        textwrap.dedent(
            f"""\
            [GLOBAL]
            pants_version = "2.17.1"
            {pythonpath.strip()}
            backend_packages = {backends}
            pantsd = false

            [anonymous-telemetry]
            enabled = false

            [python]
            interpreter_constraints = ["{IC}"]
            enable_resolves = true
            pip_version = "latest"
            default_resolve = "ml-core"

            [python.resolves]
            ml-core = "3rdparty/ml-core.lock"

            [python-bootstrap]
            search_path = ["<PYENV>", "<PATH>"]

            """
        )
        + fastpex
    )
    (root / "3rdparty" / "BUILD").write_text(
        "".join(f'python_requirement(name="r{i}", requirements=["{r}"])\n' for i, r in enumerate(REQUIREMENTS))
    )


def pants_argv(caches: Path) -> List[str]:
    # pex 2.100.7 under Pants 2.17 keeps build-time caches in ~/.cache/pex, outside the named
    # caches: a fresh HOME for Pants' processes makes "cold" cold for pex too.
    (caches / "home").mkdir(parents=True, exist_ok=True)
    return [
        str(REPO_ROOT / "pants"),
        "--no-pantsd",
        f"--named-caches-dir={caches / 'named'}",
        f"--local-store-dir={caches / 'store'}",
        f'--subprocess-environment-env-vars=+["HOME={caches / "home"}"]',
        "generate-lockfiles",
        "--resolve=ml-core",
    ]


def uv_argv(args, reqs: Path, out: Path, cache: Path, extra: List[str]) -> List[str]:
    return [
        args.uv, "pip", "compile", str(reqs), "--no-config", "--no-python-downloads", "--index-url", INDEX,
        "--cache-dir", str(cache), "--generate-hashes", "-o", str(out), *extra,
    ]


def read_lock(path: Path) -> dict:
    return json.loads("".join(l for l in path.read_text().splitlines(True) if not l.startswith("//")))


def lock_versions(lock: dict) -> Dict[str, Dict[str, str]]:
    return {t["name"]: {norm(p["name"]): p["version"] for p in t["packages"]} for t in lock["fastpex"]["targets"]}


def lock_hashes(lock: dict) -> Dict[Tuple[str, str], List[str]]:
    out: Dict[Tuple[str, str], List[str]] = {}
    for resolve in lock["locked_resolves"]:
        for req in resolve["locked_requirements"]:
            key = (norm(req["project_name"]), req["version"])
            out.setdefault(key, []).extend(a["hash"] for a in req["artifacts"])
    return out


def uv_versions(path: Path) -> Dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    return pins


def diff(fp: Dict[str, str], uv: Dict[str, str]) -> List[str]:
    out = []
    for name in sorted(set(fp) | set(uv)):
        a, b = fp.get(name), uv.get(name)
        if a != b:
            out.append(f"{name}: fastpex {a or '(absent)'} / uv {b or '(absent)'}")
    return out


def union_versions(lock: dict) -> Dict[str, str]:
    """project -> sorted versions over every locked resolve (fastpex locks and pex locks alike)."""
    out: Dict[str, set] = {}
    for resolve in lock["locked_resolves"]:
        for req in resolve["locked_requirements"]:
            out.setdefault(norm(req["project_name"]), set()).add(req["version"])
    return {k: ",".join(sorted(v)) for k, v in out.items()}


def diff_sets(a: Dict[str, str], b: Dict[str, str]) -> List[str]:
    return [f"{n}: fastpex {a.get(n, '(absent)')} / builtin {b.get(n, '(absent)')}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]


def bench_set(args, m, work: Path, env: Dict[str, str], label: str, requirements: Sequence[str], added: str,
              targets: List[str], ic: str, uv_extra: List[str], unchanged: bool = True) -> Dict[str, Case]:
    """cold (empty caches, no lock), unchanged (warm), one added (warm caches + the lock without
    `added`, restored before every run), for fastpex and uv, --repeat times each."""
    d = work / label
    (d / "fastpex").mkdir(parents=True, exist_ok=True)
    (d / "uv").mkdir(parents=True, exist_ok=True)
    fp_lock = d / "fastpex" / f"{label}.lock"
    fp_pylock = d / "fastpex" / f"pylock.{label}.toml"
    fp_cache = d / "fastpex-cache"
    base = fastpex_lock_argv(args, label, targets, fp_lock, fp_cache, ic, requirements)
    plus = fastpex_lock_argv(args, label, targets, fp_lock, fp_cache, ic, [*requirements, added])
    reqs, reqs_plus = d / "requirements.in", d / "requirements-plus.in"
    reqs.write_text("\n".join(requirements) + "\n")
    reqs_plus.write_text("\n".join([*requirements, added]) + "\n")
    uv_cache, uv_out = d / "uv-cache", d / "uv" / "requirements.txt"
    uv_base = uv_argv(args, reqs, uv_out, uv_cache, uv_extra)
    uv_plus = uv_argv(args, reqs_plus, uv_out, uv_cache, uv_extra)
    n = max(1, args.repeat)

    def wipe(*paths: Path) -> Callable[[int], None]:
        return lambda i: [rmtree(p) for p in paths] and None

    def fp(name: str, argv: List[str]) -> Callable[[int], Run]:
        return lambda i: timed(m, f"{label}-fastpex-{name}-{i}", argv, work, env, cwd=SRC)

    def uv(name: str, argv: List[str]) -> Callable[[int], Run]:
        return lambda i: timed(m, f"{label}-uv-{name}-{i}", argv, work, env)

    out: Dict[str, Case] = {}
    out["fastpex cold"] = repeat(n, wipe(fp_cache, fp_lock, fp_pylock), fp("cold", base))
    out["uv cold"] = repeat(n, wipe(uv_cache, uv_out), uv("cold", uv_base))
    if unchanged:
        out["fastpex unchanged"] = repeat(n, lambda i: None, fp("unchanged", base))
        out["uv unchanged"] = repeat(n, lambda i: None, uv("unchanged", uv_base))
    snaps = [(p, d / "snapshot" / p.name) for p in (fp_cache, fp_lock, fp_pylock, uv_cache, uv_out)]
    (d / "snapshot").mkdir(exist_ok=True)
    for src, snap in snaps:
        snapshot(src, snap)

    def warm(i: int) -> None:
        for src, snap in snaps:
            restore(snap, src)

    out["fastpex one added"] = repeat(n, warm, fp("one-added", plus))
    out["uv one added"] = repeat(n, warm, uv("one-added", uv_plus))
    warm(0)  # leave the caches and outputs as the base lock made them (the correctness checks read them)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastpex-bench/lock"))
    ap.add_argument("--python", default="/tmp/dev/bin/python", help="Python that runs the fastpex core")
    ap.add_argument("--uv", default="/tmp/benchvenv/bin/uv", help="uv 0.13.9")
    ap.add_argument("--torch-python", default="3.11", help="the one interpreter the torch install check runs on")
    ap.add_argument("--skip-pants", action="store_true")
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs per fastpex/uv case; the median is reported")
    ap.add_argument("--sets", default="ml-core,scale", help="comma-separated: ml-core, scale")
    ap.add_argument("--pip-python", default=None, help="the Python the `--pip` wrapper runs (default: --python)")
    ap.add_argument("--pantsd-case", action="store_true",
                    help="also: ml-core through Pants with pantsd, one requirement added, vs the CLI (bench/lock_pants.py)")
    args = ap.parse_args()

    work: Path = args.work
    rmtree(work)
    work.mkdir(parents=True)
    logs = work / "logs"
    args.pip_wrapper = write_pip_wrapper(work / "pip-timed.sh", args.pip_python or args.python)
    env = clean_env()
    report = Report("lock_bench", "Lock: ml-core (torch==2.9.1, transformers, scikit-learn, pandas), 6 targets; "
                    f"scale ({', '.join(SCALE_REQUIREMENTS)}), {len(SCALE_TARGETS)} targets")
    reqs = work / "requirements.in"
    reqs.write_text("\n".join(REQUIREMENTS) + "\n")
    m = lambda name, argv, **kw: measure(name, argv, log_dir=logs, env=kw.pop("env", env), **kw)  # noqa: E731

    # ---------------------------------------------------------------- ml-core: cold, unchanged, one added
    sets = {x.strip() for x in args.sets.split(",") if x.strip()}
    cases: Dict[str, Dict[str, Case]] = {}
    if "ml-core" in sets:
        cases["ml-core"] = bench_set(args, m, work, env, "ml-core", REQUIREMENTS, ADDED, TARGETS, IC,
                                     ["--universal", "--python-version", "3.11"])
    # The correctness checks read the ml-core lock and reuse its caches.
    fp_lock = work / "ml-core" / "fastpex" / "ml-core.lock"
    fp_cache = work / "ml-core" / "fastpex-cache"
    uv_cache = work / "ml-core" / "uv-cache"
    (work / "uv").mkdir(exist_ok=True)
    if fp_lock.exists():  # where fetch_bench and pack_bench look for it
        (work / "fastpex").mkdir(exist_ok=True)
        shutil.copy2(fp_lock, work / "fastpex" / "ml-core.lock")

    pants_fp = pants_stock = None
    if not args.skip_pants:
        repo = work / "pants-fastpex-repo"
        write_pants_repo(repo, with_fastpex=True)
        pants_fp = m("pants-fastpex-generate-lockfiles-cold", pants_argv(work / "pants-fastpex-caches"), cwd=repo, check=False)
        repo = work / "pants-stock-repo"
        write_pants_repo(repo, with_fastpex=False)
        pants_stock = m("pants-builtin-generate-lockfiles-cold", pants_argv(work / "pants-stock-caches"), cwd=repo, check=False)

    pantsd_cases = None
    if args.pantsd_case:
        import lock_pants
        pantsd_cases = lock_pants.run(
            args, m, work, env, write_repo=write_pants_repo, requirements=REQUIREMENTS, added=ADDED,
            cli_argv=lambda out, cache, reqs: fastpex_lock_argv(args, "ml-core", TARGETS, out, cache, IC, reqs))

    # ---------------------------------------------------------------- scale: 200+ distributions, 2 targets
    if "scale" in sets:
        cases["scale"] = bench_set(args, m, work, env, "scale", SCALE_REQUIREMENTS, SCALE_ADDED, SCALE_TARGETS, SCALE_IC,
                                   ["--universal", "--python-version", "3.11"], unchanged=False)

    def ok(r):
        return r is not None and r.ok

    rows = []
    ml = cases.get("ml-core")
    if pants_stock is not None and ml is not None:
        fp_cold = ml["fastpex cold"]
        rows.append(Comparison("cold wall, fastpex CLI", "s", fp_cold.wall, pants_stock.wall if ok(pants_stock) else None,
                               "Pants builtin", "≥30x faster", ok(pants_stock) and pants_stock.wall >= 30 * fp_cold.wall))
        rows.append(Comparison("cold bytes, fastpex CLI", "B", fp_cold.rx, pants_stock.rx if ok(pants_stock) else None, "Pants builtin"))
        if pants_fp is not None:
            rows.append(Comparison("cold wall, fastpex through Pants", "s", pants_fp.wall if ok(pants_fp) else None,
                                   pants_stock.wall if ok(pants_stock) else None, "Pants builtin", "≥30x faster",
                                   ok(pants_fp) and ok(pants_stock) and pants_stock.wall >= 30 * pants_fp.wall))
            rows.append(Comparison("cold bytes, fastpex through Pants", "B", pants_fp.rx if ok(pants_fp) else None,
                                   pants_stock.rx if ok(pants_stock) else None, "Pants builtin"))
    if ml is not None:
        c, u = ml["fastpex cold"], ml["uv cold"]
        a, ua = ml["fastpex one added"], ml["uv one added"]
        w, uw = ml["fastpex unchanged"], ml["uv unchanged"]
        rows += [
            Comparison("cold wall, fastpex CLI", "s", c.wall, u.wall, "uv --universal", "≤4 s and ≤2.5x uv", c.wall <= 4 and c.wall <= 2.5 * u.wall),
            Comparison("cold bytes, fastpex CLI", "B", c.rx, u.rx, "uv --universal", "fastpex ≤1.5x uv (ratio ≥0.67x)", c.rx <= 1.5 * u.rx),
            Comparison("one requirement added, warm caches", "s", a.wall, ua.wall, "uv --universal", "≤3.5 s and ≤2x uv",
                       a.wall <= 3.5 and a.wall <= 2 * ua.wall),
            Comparison("unchanged inputs, warm caches", "s", w.wall, uw.wall, "uv --universal", "≤0.3 s", w.wall <= 0.3),
            Comparison("unchanged bytes", "B", w.rx, uw.rx, "uv --universal"),
        ]
    if rows:
        report.add_table(f"Speed and bytes (ml-core, median of {args.repeat}; cold = empty caches)", rows)
    if cases:
        report.add_raw_table(
            f"CPU split, fastpex vs uv (median of {args.repeat} runs each; CPU = user+sys seconds; pip = every pip "
            f"process through the `--pip` wrapper, zygote and probes included; own = tree - pip)",
            ["set", "case", "fastpex wall (runs)", "uv wall (runs)", "fastpex/uv", "fastpex tree CPU", "pip CPU",
             "pip runs", "pip CPU / run", "fastpex own CPU", "uv CPU", "target", ""],
            [row for label, by_case in cases.items() for row in cpu_rows(label, by_case)],
        )
    if pantsd_cases is not None:
        report.add_raw_table(f"ml-core through Pants with pantsd (median of {args.repeat}; one added = `{ADDED}` added to "
                             "3rdparty/BUILD, the named cache and lock as the cold run left them)", lock_pants.HEADER,
                             [c.row(k) for k, c in pantsd_cases.items()])
    failures = [r for r in (pants_fp, pants_stock) if r is not None and not r.ok]
    if failures:
        report.add_text("Failed steps: " + ", ".join(f"{r.name} (exit {r.returncode}, log {r.log})" for r in failures))

    if args.skip_correctness or ml is None:
        report.write()
        return 0

    # ---------------------------------------------------------------- correctness: versions vs uv
    lock = read_lock(fp_lock)
    fp_v = lock_versions(lock)
    diffs_rows = []

    def compare(target: str, fp_pins: Dict[str, str]) -> None:
        plat, py = target.rsplit("-", 1)
        ver = f"{py[2]}.{py[3:]}"
        out = work / "uv" / f"{target}.txt"
        r = m(f"uv-compile-{target}", uv_argv(args, reqs, out, uv_cache, ["--python-platform", PLATFORMS[plat], "--python-version", ver]), check=False)
        if not r.ok:
            diffs_rows.append([target, str(len(fp_pins)), "uv failed", f"see {r.log}"])
            return
        d = diff(fp_pins, uv_versions(out))
        diffs_rows.append([target, str(len(fp_pins)), str(len(uv_versions(out))), "; ".join(d) if d else "identical"])

    for t in TARGETS:
        compare(t, fp_v.get(t, {}))

    # A second lock for the other interpreters of this machine (linux x86_64 only).
    extra_lock = work / "fastpex-extra" / "ml-core-extra.lock"
    extra_lock.parent.mkdir()
    extra_targets = ["linux_x86_64-cp310", "linux_x86_64-cp313"]
    r_extra = m("fastpex-lock-cp310-cp313", fastpex_lock_argv(args, "ml-core-extra", extra_targets, extra_lock, fp_cache, "CPython>=3.10,<3.14"), cwd=SRC, check=False)
    extra_v: Dict[str, Dict[str, str]] = {}
    extra = None
    if r_extra.ok:
        extra = read_lock(extra_lock)
        extra_v = lock_versions(extra)
        for t in extra_targets:
            compare(t, extra_v.get(t, {}))
    cp39_lock = work / "fastpex-cp39" / "ml-core-cp39.lock"
    cp39_lock.parent.mkdir()
    r39 = m("fastpex-lock-cp39", fastpex_lock_argv(args, "ml-core-cp39", ["linux_x86_64-cp39"], cp39_lock, fp_cache, "CPython==3.9.*"), cwd=SRC, check=False)
    r39uv = m("uv-compile-linux_x86_64-cp39", uv_argv(args, reqs, work / "uv" / "cp39.txt", uv_cache, ["--python-platform", PLATFORMS["linux_x86_64"], "--python-version", "3.9"]), check=False)
    cp39_v = lock_versions(read_lock(cp39_lock)) if r39.ok else {}
    if r39.ok and r39uv.ok:
        diffs_rows.append(["linux_x86_64-cp39", str(len(cp39_v.get("linux_x86_64-cp39", {}))), str(len(uv_versions(work / "uv" / "cp39.txt"))),
                           "; ".join(diff(cp39_v.get("linux_x86_64-cp39", {}), uv_versions(work / "uv" / "cp39.txt"))) or "identical"])
    else:
        def last_error(r):
            lines = [l for l in r.log.read_text(errors="replace").splitlines() if l.strip()]
            return (lines[-1][:300] if lines else "").replace("|", "/")
        diffs_rows.append(["linux_x86_64-cp39", "fastpex exit %d" % r39.returncode, "uv exit %d" % r39uv.returncode,
                           f"fastpex: {last_error(r39)} — uv: {last_error(r39uv)}"])
    stock_lock = work / "pants-stock-repo" / "3rdparty" / "ml-core.lock"
    if stock_lock.exists():
        diffs_rows.append(["all 6 targets (union)", str(len(union_versions(lock))), "Pants builtin lock: " + str(len(union_versions(read_lock(stock_lock)))),
                           "; ".join(diff_sets(union_versions(lock), union_versions(read_lock(stock_lock)))) or "identical to the Pants builtin (pex universal) lock"])
    report.add_raw_table("Selected versions: fastpex lock vs `uv pip compile --python-platform P --python-version 3.X` (same index, same day)",
                         ["target", "fastpex pins", "uv pins", "differences"], diffs_rows)

    # ---------------------------------------------------------------- correctness: install + pip check
    install_rows = []
    sources = {"3.11": (lock, "linux_x86_64-cp311"), "3.12": (lock, "linux_x86_64-cp312")}
    if extra is not None:
        sources.update({"3.10": (extra, "linux_x86_64-cp310"), "3.13": (extra, "linux_x86_64-cp313")})
    if r39.ok:
        sources["3.9"] = (read_lock(cp39_lock), "linux_x86_64-cp39")
    for minor in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        py = interpreter(minor)
        if py is None or minor not in sources:
            install_rows.append([minor, str(py or "not found"), "-", "-", "not covered by a lock (see above)"])
            continue
        src_lock, target = sources[minor]
        pins = lock_versions(src_lock)[target]
        hashes = lock_hashes(src_lock)
        with_torch = minor == args.torch_python
        chosen = {n: v for n, v in pins.items() if with_torch or not TORCH_FAMILY.match(n)}
        req_file = work / f"install-{minor}.txt"
        req_file.write_text("".join(
            f"{n}=={v} " + " ".join(f"--hash=sha256:{h}" for h in hashes[(n, v)]) + "\n" for n, v in sorted(chosen.items())
        ))
        venv = work / f"venv-{minor}"
        subprocess.run([str(py), "-m", "venv", str(venv)], check=True, env=env)
        inst = m(f"pip-install-{minor}", [venv / "bin" / "python", "-m", "pip", "--isolated", "install", "--no-deps", "--only-binary", ":all:",
                                          "--require-hashes", "--index-url", INDEX, "-r", req_file], check=False)
        chk = m(f"pip-check-{minor}", [venv / "bin" / "python", "-m", "pip", "--isolated", "check"], check=False) if inst.ok else None
        chk_text = chk.log.read_text(errors="replace").splitlines()[-1] if chk else "-"
        install_rows.append([
            minor, str(py), f"{len(chosen)} of {len(pins)} ({'with' if with_torch else 'without'} torch/triton/nvidia-*)",
            "ok" if inst.ok else f"FAILED (exit {inst.returncode}, {inst.log})",
            ("ok: " if chk and chk.ok else "FAILED: ") + chk_text.replace("|", "/") if chk else "-",
        ])
        rmtree(venv)
    report.add_raw_table("Install check: `pip install --isolated --no-deps --require-hashes` of the lock's linux_x86_64 pins into a fresh venv, then `pip check`",
                         ["python", "interpreter", "installed", "install", "pip check"], install_rows)
    report.write()
    # Keep the locks (small) for the fetch and pack benchmarks; drop the big caches.
    for d in ("pants-stock-caches", "pants-fastpex-caches", "ml-core/uv-cache", "scale/uv-cache", "ml-core/snapshot", "scale/snapshot"):
        rmtree(work / d)
    print(f"fastpex lock kept at {work / 'fastpex' / 'ml-core.lock'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
