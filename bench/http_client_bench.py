"""HTTP client benchmark (issue 11, item 3): fastpex's HttpClient vs urllib3 2.x vs curl, same run.

The question: would a maintained client (urllib3 2.x) keep fetch at >= 90% of N parallel curls,
so that the hand-written `core/net/http.py` could go? Fetch's cost per byte is the client's read
loop, so this downloads the same large files from a loopback IndexServer (in a subprocess of its
own, so its CPU is not counted) with:

  fastpex   core.net.http.HttpClient, N threads, `get(stream=True)` + `Response.readinto` into a
            1 MiB buffer (what fetch/transfer.py does), body discarded
  urllib3   urllib3.PoolManager, N threads, `request(preload_content=False)` + `readinto` into a
            1 MiB buffer, body discarded
  curl      N curl processes in parallel, `-o /dev/null`

and prints MB/s, CPU seconds (getrusage: this process for the Python clients, the waited-for
children for curl) and the ratios. Each client runs `--rounds` times, alternating; the best
round counts. Nothing is hashed or written: the client is what is compared.

Run: /tmp/dev/bin/python bench/http_client_bench.py [--files 16 --size-mb 100 --parallel 16]
(needs `pip install 'urllib3>=2,<3'` in that interpreter; it is not a project requirement).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Tuple

SRC = Path(__file__).resolve().parent.parent / "src" / "python"
sys.path.insert(0, str(SRC))

from fastpex.core.net.http import HttpClient, HttpConfig  # noqa: E402
from fastpex.core.net.proxy import NO_PROXY_SETTINGS  # noqa: E402
from fastpex.testing.wheels import WheelFactory  # noqa: E402

BUF = 1024 * 1024

SERVER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from fastpex.testing.index_server import IndexConfig, IndexServer
server = IndexServer(sys.argv[1], IndexConfig(chunk_size=1024 * 1024)).start()
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _threads(urls: List[str], parallel: int, one: Callable[[str], int]) -> Tuple[float, float, int]:
    cpu0, t0 = _cpu_self(), time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        total = sum(pool.map(one, urls))
    return time.perf_counter() - t0, _cpu_self() - cpu0, total


def run_fastpex(urls: List[str], parallel: int) -> Tuple[float, float, int]:
    client = HttpClient(HttpConfig(proxies=NO_PROXY_SETTINGS, max_idle_per_host=parallel))
    local = threading.local()

    def one(url: str) -> int:
        buf = getattr(local, "buf", None) or bytearray(BUF)
        local.buf = buf
        view, n = memoryview(buf), 0
        response = client.get(url, stream=True).raise_for_status()
        while True:
            got = response.readinto(view)
            if not got:
                break
            n += got
        response.close()
        return n

    try:
        return _threads(urls, parallel, one)
    finally:
        client.close()


def run_urllib3(urls: List[str], parallel: int) -> Tuple[float, float, int]:
    import urllib3

    pool = urllib3.PoolManager(maxsize=parallel, block=False, retries=urllib3.Retry(3))
    local = threading.local()

    def one(url: str) -> int:
        buf = getattr(local, "buf", None) or bytearray(BUF)
        local.buf = buf
        view, n = memoryview(buf), 0
        response = pool.request("GET", url, preload_content=False, decode_content=False)
        assert response.status == 200, response.status
        while True:
            got = response.readinto(view)
            if not got:
                break
            n += got
        response.release_conn()
        return n

    try:
        return _threads(urls, parallel, one)
    finally:
        pool.clear()


def run_curl(urls: List[str], parallel: int) -> Tuple[float, float, int]:
    groups: List[List[str]] = [urls[i::parallel] for i in range(parallel)]
    cpu0, t0 = _cpu_children(), time.perf_counter()
    procs = []
    for group in groups:
        if not group:
            continue
        cmd = ["curl", "-sS", "--fail", "-w", "%{size_download}\\n"]
        for url in group:
            cmd += ["-o", "/dev/null", url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    total = 0
    for proc in procs:
        out, _ = proc.communicate()
        assert proc.returncode == 0, proc.returncode
        total += sum(int(float(x)) for x in out.split())
    return time.perf_counter() - t0, _cpu_children() - cpu0, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="where the wheels go (default: a temp dir, removed)")
    args = ap.parse_args()

    import urllib3

    work = args.work or Path(tempfile.mkdtemp(prefix="fastpex-http-bench-"))
    factory = WheelFactory(work / "dists")
    t0 = time.perf_counter()
    paths = [factory.wheel(f"big{i}", "1.0", file_size_padding=args.size_mb * 1_000_000) for i in range(args.files)]
    size = sum(p.stat().st_size for p in paths)
    print(f"made {args.files} wheels, {size / 1e6:.0f} MB, in {time.perf_counter() - t0:.1f} s", flush=True)

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(factory.dist_dir), str(SRC)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        urls = [f"{base}/files/{p.name}" for p in paths]
        subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)  # page cache warm
        runners: Dict[str, Callable[[List[str], int], Tuple[float, float, int]]] = {
            "fastpex HttpClient": run_fastpex,
            f"urllib3 {urllib3.__version__}": run_urllib3,
            f"curl x{args.parallel}": run_curl,
        }
        results: Dict[str, List[Tuple[float, float, int]]] = {name: [] for name in runners}
        for round_no in range(args.rounds):
            for name, run in runners.items():
                wall, cpu, total = run(urls, args.parallel)
                assert total == size, (name, total, size)
                results[name].append((wall, cpu, total))
                print(f"round {round_no + 1} {name:22s} {wall:6.2f} s  {total / wall / 1e6:7.0f} MB/s  cpu {cpu:6.2f} s", flush=True)
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(30)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    best = {name: min(rs) for name, rs in results.items()}
    curl_name = f"curl x{args.parallel}"
    curl_rate = size / best[curl_name][0]
    print()
    print(f"{args.files} files x {args.size_mb} MB, {args.parallel} in parallel, best of {args.rounds} rounds, nproc={_nproc()}")
    print("| client | wall | MB/s | CPU s | CPU s per GB | % of curl's MB/s |")
    print("|---|---|---|---|---|---|")
    for name, (wall, cpu, _) in best.items():
        rate = size / wall
        print(f"| {name} | {wall:.2f} s | {rate / 1e6:.0f} | {cpu:.2f} | {cpu / (size / 1e9):.2f} | {100 * rate / curl_rate:.0f}% |")
    summary = {name: {"wall": w, "cpu": c} for name, (w, c, _) in best.items()}
    print(json.dumps({"bytes": size, "parallel": args.parallel, "best": summary}))
    return 0


def _nproc() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
