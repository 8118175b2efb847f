"""The first-start floor (issue 14 item 2): what writing a PEX's installed tree costs here.

A PEX's first start with an empty PEX_ROOT writes every dependency's installed files
(`installed_wheels/...`) and, for the deflated members, inflates them. This script does only
that work, with no pex runtime around it, so its times are the floor a runtime could reach:

  serial     one process extracts every member of every zip
  balanced   N processes, the members spread by uncompressed size (the ideal N-core floor)
  per-zip    N processes, whole zips handed out largest first (what a runtime that installs
             each wheel in one job, like pex's PEX_MAX_INSTALL_JOBS, can reach at best)

Input: zips that hold the installed tree, e.g. a fastpex/pex `packed` PEX's `.deps/` (each
`.deps/<wheel>` is the installed chroot, zipped), or plain wheel files. Every run extracts into
a fresh directory under --scratch and deletes it afterwards; `--sync` adds a `sync` to each
timing (the runtime doesn't fsync, so the default leaves write-back to the kernel, as pex does).

Run (under the bench lock, it writes gigabytes):
  flock /tmp/work/bench.lock /tmp/dev/bin/python bench/first_start_floor.py \
      --zips /tmp/fastpex-bench/faststart/out/default-packed.pex/.deps --jobs 2
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Sequence, Tuple

# (zip path, member name, uncompressed size, is deflated)
Member = Tuple[str, str, int, bool]


def list_members(zips: Sequence[str]) -> List[Member]:
    members: List[Member] = []
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    deflated = info.compress_type == zipfile.ZIP_DEFLATED
                    members.append((path, info.filename, info.file_size, deflated))
    return members


def extract(args: Tuple[str, List[Member]]) -> int:
    """Write `members` under `dest/<zip basename>/`; returns the bytes written."""
    dest, members = args
    written = 0
    open_zips: Dict[str, zipfile.ZipFile] = {}
    made = set()
    try:
        for path, name, _, _ in members:
            zf = open_zips.get(path)
            if zf is None:
                zf = open_zips[path] = zipfile.ZipFile(path)
            target = os.path.join(dest, os.path.basename(path), *name.split("/"))
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            with zf.open(name) as src, open(target, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    written += len(chunk)
    finally:
        for zf in open_zips.values():
            zf.close()
    return written


def spread_balanced(members: Sequence[Member], jobs: int) -> List[List[Member]]:
    """Members to `jobs` bins by size, largest first onto the lightest bin."""
    bins: List[Tuple[int, int]] = [(0, i) for i in range(jobs)]
    out: List[List[Member]] = [[] for _ in range(jobs)]
    for member in sorted(members, key=lambda m: -m[2]):
        load, i = heapq.heappop(bins)
        out[i].append(member)
        heapq.heappush(bins, (load + member[2], i))
    return out


def spread_per_zip(members: Sequence[Member], jobs: int) -> List[List[Member]]:
    """Whole zips to `jobs` bins, largest first onto the lightest bin."""
    by_zip: Dict[str, List[Member]] = {}
    for member in members:
        by_zip.setdefault(member[0], []).append(member)
    bins: List[Tuple[int, int]] = [(0, i) for i in range(jobs)]
    out: List[List[Member]] = [[] for _ in range(jobs)]
    for group in sorted(by_zip.values(), key=lambda g: -sum(m[2] for m in g)):
        load, i = heapq.heappop(bins)
        out[i].extend(group)
        heapq.heappush(bins, (load + sum(m[2] for m in group), i))
    return out


def run_once(bins: List[List[Member]], scratch: str, sync: bool) -> Tuple[float, int]:
    dest = tempfile.mkdtemp(prefix="floor.", dir=scratch)
    try:
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        if len(bins) == 1:
            written = extract((dest, bins[0]))
        else:
            with ProcessPoolExecutor(max_workers=len(bins)) as pool:
                written = sum(pool.map(extract, [(dest, b) for b in bins]))
        if sync:
            subprocess.run(["sync"], check=True)
        return time.perf_counter() - start, written
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["sync"], check=True)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zips", required=True, help="A directory of zips (e.g. a packed PEX's .deps).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="Runs per mode (the table shows each).")
    parser.add_argument("--scratch", default="/tmp", help="Where to extract (same disk as PEX_ROOT).")
    parser.add_argument("--sync", action="store_true", help="Include a final `sync` in each timing.")
    parser.add_argument("--json", help="Also write the results here.")
    options = parser.parse_args(argv)

    zips = sorted(os.path.join(options.zips, n) for n in os.listdir(options.zips))
    members = list_members(zips)
    total = sum(m[2] for m in members)
    inflated = sum(m[2] for m in members if m[3])
    largest = max(
        (sum(m[2] for m in members if m[0] == z), os.path.basename(z)) for z in zips
    )
    print(
        f"{len(zips)} zips, {len(members)} files, {total / 1e9:.2f} GB to write, "
        f"{inflated / 1e9:.2f} GB of it inflated; largest zip {largest[1]} {largest[0] / 1e9:.2f} GB"
    )
    modes = {
        "serial": [list(members)],
        "balanced": spread_balanced(members, options.jobs),
        "per-zip": spread_per_zip(members, options.jobs),
    }
    results = {"zips": options.zips, "files": len(members), "bytes": total, "inflated": inflated,
               "jobs": options.jobs, "sync": options.sync, "runs": {}}
    for run in range(options.runs):
        for mode, bins in modes.items():
            seconds, written = run_once(bins, options.scratch, options.sync)
            assert written == total, (written, total)
            results["runs"].setdefault(mode, []).append(seconds)
            loads = ", ".join(f"{sum(m[2] for m in b) / 1e9:.2f}" for b in bins)
            print(f"run {run + 1} {mode:9s} {seconds:7.2f} s  ({total / seconds / 1e9:.2f} GB/s; "
                  f"GB per process: {loads})", flush=True)
    if options.json:
        with open(options.json, "w") as fp:
            json.dump(results, fp, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
