"""Fetch benchmark (issue 4): fastpex fetch vs the link's capacity, pip and uv.

Input: the ml-core lock that bench/lock_bench.py wrote (or --lock), target linux_x86_64-cp311
(its selection is ~60 wheels, ~4.2 GB: torch + CUDA). In one run, each step with an empty
store/cache:

  capacity   curl of the same URLs: serial (one curl, one connection) and N in parallel
             (xargs -P N), to /dev/null
  fastpex    python -m fastpex fetch with its default --fetch-jobs (2 per core, 4-16), then
             --fetch-jobs 8 and --fetch-jobs 16 (fresh cache dir each)
  pip        pip download --no-deps --no-cache-dir <the locked URLs>  (serial downloads)
  uv         uv pip install --no-deps <name==version pins> into a scratch venv, cold --cache-dir
             (reference only: it also unpacks and installs)
  warm       the first fastpex fetch again on the warm store: expect 0 bytes

Run: /tmp/dev/bin/python bench/fetch_bench.py [--lock /tmp/fastpex-bench/lock/fastpex/ml-core.lock]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import SRC, Comparison, Report, clean_env, fmt_bytes, measure, rmtree  # noqa: E402

sys.path.insert(0, str(SRC))
from fastpex.core.lockfile import load_lock  # noqa: E402
try:  # the module was renamed select -> selection on 2026-11-25
    from fastpex.core.fetch.selection import select_artifacts, targets_for  # noqa: E402
except ImportError:  # pragma: no cover
    from fastpex.core.select import select_artifacts, targets_for  # noqa: E402

INDEX = "https://pypi.org/simple/"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lock", type=Path, default=Path("/tmp/fastpex-bench/lock/fastpex/ml-core.lock"))
    ap.add_argument("--target", default="linux_x86_64-cp311")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastpex-bench/fetch"))
    ap.add_argument("--python", default="/tmp/dev/bin/python", help="Python that runs the fastpex core")
    ap.add_argument("--uv", default="/tmp/benchvenv/bin/uv")
    ap.add_argument("--venv-python", default="/root/.pyenv/versions/3.11.7/bin/python3.11")
    ap.add_argument("--parallel", type=int, nargs="+", default=[8, 16], help="curl parallelism levels")
    ap.add_argument("--jobs", nargs="+", default=["default", "8", "16"],
                    help="fastpex fetch --fetch-jobs levels ('default': no --fetch-jobs, fastpex's default for this machine)")
    args = ap.parse_args()

    work: Path = args.work
    rmtree(work)
    work.mkdir(parents=True)
    logs = work / "logs"
    env = clean_env()
    m = lambda name, argv, **kw: measure(name, argv, log_dir=logs, env=env, **kw)  # noqa: E731

    lock = load_lock(str(args.lock))
    selection = select_artifacts(lock, targets_for(lock, [args.target]))
    arts = selection.for_target(args.target).artifacts
    total = sum(a.size or 0 for a in arts)
    urls = work / "urls.txt"
    urls.write_text("".join(a.url + "\n" for a in arts))
    pins = work / "pins.txt"
    sel = selection.for_target(args.target).distributions
    pins.write_text("".join(f"{d.name}=={d.version} --hash=sha256:{d.artifact.sha256}\n" for d in sel))
    print(f"{len(arts)} artifacts, {fmt_bytes(total)} for {args.target}", flush=True)
    report = Report("fetch_bench", f"Fetch: ml-core lock, {args.target} ({len(arts)} files, {fmt_bytes(total)})")

    def rate(r):
        return total / r.wall

    # ------------------------------------------------------------ link capacity
    curl_serial = m("curl-serial", ["sh", "-c", "curl -sS --fail " + " ".join(f"-o /dev/null {shlex.quote(a.url)}" for a in arts)])
    curls = {}
    for n in args.parallel:
        curls[n] = m(f"curl-parallel-{n}", ["sh", "-c", f"xargs -P {n} -n 1 curl -sS --fail -o /dev/null < {shlex.quote(str(urls))}"])
    best_curl = max(curls.values(), key=rate)

    # ------------------------------------------------------------ fastpex cold, then warm
    default_jobs = subprocess.run([args.python, "-c", "from fastpex.core.fetch.downloader import DEFAULT_JOBS; print(DEFAULT_JOBS)"],
                                  cwd=SRC, env=env, check=True, capture_output=True, text=True).stdout.strip()

    def jobs_argv(j):
        return [] if j == "default" else ["--fetch-jobs", str(j)]

    def jobs_label(j):
        return f"(default --fetch-jobs = {default_jobs})" if j == "default" else f"--fetch-jobs {j}"

    fp = {}
    for j in args.jobs:
        cache = work / f"fastpex-cache-j{j}"
        fp[j] = m(f"fastpex-fetch-cold-jobs{j}", [args.python, "-m", "fastpex", "fetch", "--lock", args.lock, "--target", args.target,
                                                  "--cache-dir", cache, *jobs_argv(j)], cwd=SRC)
    j0 = args.jobs[0]
    warm = m(f"fastpex-fetch-warm-jobs{j0}", [args.python, "-m", "fastpex", "fetch", "--lock", args.lock, "--target", args.target,
                                              "--cache-dir", work / f"fastpex-cache-j{j0}", *jobs_argv(j0)], cwd=SRC)
    warm_dest = m(f"fastpex-fetch-warm-jobs{j0}-dest", [args.python, "-m", "fastpex", "fetch", "--lock", args.lock, "--target", args.target,
                                                        "--cache-dir", work / f"fastpex-cache-j{j0}", *jobs_argv(j0),
                                                        "--dest", work / "dest", "--manifest-out", work / "manifest.json"], cwd=SRC)
    for j in args.jobs:
        rmtree(work / f"fastpex-cache-j{j}")
    rmtree(work / "dest")
    best_fp = min(fp.values(), key=lambda r: r.wall)

    # ------------------------------------------------------------ pip (serial)
    pip_venv = work / "pip-venv"
    subprocess.run([args.venv_python, "-m", "venv", str(pip_venv)], check=True, env=env)
    subprocess.run([str(pip_venv / "bin" / "python"), "-m", "pip", "--isolated", "install", "-q", "--index-url", INDEX, "pip==26.3"], check=True, env=env)
    pip = m("pip-download-no-deps", [pip_venv / "bin" / "python", "-m", "pip", "--isolated", "download", "--no-deps", "--no-cache-dir",
                                     "--only-binary", ":all:", "-d", work / "pip-dl", "-r", urls])
    rmtree(work / "pip-dl")

    # ------------------------------------------------------------ uv (reference)
    uv_venv = work / "uv-venv"
    subprocess.run([args.uv, "venv", "--no-config", "--python", args.venv_python, str(uv_venv)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uv = m("uv-pip-install-no-deps-cold", [args.uv, "pip", "install", "--no-config", "--no-deps", "--python", uv_venv / "bin" / "python",
                                           "--index-url", INDEX, "--cache-dir", work / "uv-cache", "-r", pins])
    rmtree(uv_venv)
    rmtree(work / "uv-cache")

    # ------------------------------------------------------------ report
    rows = [
        ["curl serial (1 connection)", f"{curl_serial.wall:.2f} s", fmt_bytes(curl_serial.rx), f"{rate(curl_serial) / 1e6:.0f} MB/s"],
        *[[f"curl x{n} parallel", f"{r.wall:.2f} s", fmt_bytes(r.rx), f"{rate(r) / 1e6:.0f} MB/s"] for n, r in curls.items()],
        *[[f"fastpex fetch {jobs_label(j)} (cold store)", f"{r.wall:.2f} s", fmt_bytes(r.rx), f"{rate(r) / 1e6:.0f} MB/s"] for j, r in fp.items()],
        ["pip 26.3 download --no-deps (serial)", f"{pip.wall:.2f} s", fmt_bytes(pip.rx), f"{rate(pip) / 1e6:.0f} MB/s"],
        ["uv 0.13.9 pip install --no-deps (cold cache; includes install)", f"{uv.wall:.2f} s", fmt_bytes(uv.rx), f"{rate(uv) / 1e6:.0f} MB/s"],
        [f"fastpex fetch {jobs_label(j0)} (warm store)", f"{warm.wall:.2f} s", fmt_bytes(warm.rx), "-"],
        [f"fastpex fetch {jobs_label(j0)} (warm store, --dest hard links + manifest)", f"{warm_dest.wall:.2f} s", fmt_bytes(warm_dest.rx), "-"],
    ]
    report.add_raw_table("All steps (one run each)", ["step", "wall", "bytes received", f"throughput ({fmt_bytes(total)} / wall)"], rows)
    cap = rate(best_curl)
    report.add_table("fastpex vs stock", [
        Comparison(f"throughput vs link capacity (best curl: x{[n for n, r in curls.items() if r is best_curl][0]})", "s", best_fp.wall, best_curl.wall,
                   "parallel curl", "fastpex ≥90% of capacity (ratio ≥0.90x)", rate(best_fp) >= 0.9 * cap),
        Comparison("cold wall", "s", best_fp.wall, pip.wall, "pip download (serial)", "≥3x faster", pip.wall >= 3 * best_fp.wall),
        Comparison("cold wall", "s", best_fp.wall, uv.wall, "uv pip install (ref.)"),
        Comparison("cold bytes", "B", best_fp.rx, pip.rx, "pip download (serial)"),
        Comparison("warm wall", "s", warm.wall, None, "-", "< 1 s", warm.wall < 1.0),
        Comparison("warm bytes", "B", warm.rx, None, "-", "0 B", warm.rx < 1_000_000),
    ])
    report.add_text(f"fastpex's best cold run reached {rate(best_fp) / cap * 100:.0f}% of the best curl throughput; "
                    "warm-run bytes are whole-machine rx (other processes' traffic included), the target is 'no artifact bytes'.")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
