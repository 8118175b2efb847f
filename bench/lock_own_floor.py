#!/usr/bin/env python3
"""The floor of fastpex's own CPU in a cold lock (issue 12): the work any lock of this design
must do in Python, done once, with nothing else running.

Given a finished cold lock, in one fresh process: import what the resolve path imports, fetch
and parse every project page the lock names (`IndexClient`, no page cache), index each into
a `ProjectView` (per-file versions and tags, target-independent), render each target's page
once, and read the core metadata of the wheel each target takes of every locked distribution
(`MetadataFetcher`, an empty cache). Each phase's CPU is `time.process_time()` (this process, all
threads); the import phase runs in a child interpreter. It prints the phases and their sum, to
set against the bench's "fastpex own CPU" for the same lock.

    python bench/lock_own_floor.py LOCKFILE --target linux_x86_64-cp311 ... [--index URL]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

RESOLVE_PATH_MODULES = (
    "fastpex.core.cli.lock, fastpex.core.lock.api, fastpex.core.lock.resolve, fastpex.core.lock.sources, "
    "fastpex.core.lock.runner, fastpex.core.lock.python_range, fastpex.core.lock.build_requirements, "
    "fastpex.core.lock.zygote, fastpex.core.lockfile.codec, fastpex.core.lockfile.pylock"
)


def import_cpu() -> float:
    """CPU-s of a fresh interpreter importing the resolve path, less a bare interpreter's."""
    def cpu_of(code: str) -> float:
        probe = f"import time; {code}; print(time.process_time())"
        return min(float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
                   for _ in range(5))

    return cpu_of(f"import {RESOLVE_PATH_MODULES}") - cpu_of("pass")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lock", type=Path)
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--index", default="https://pypi.org/simple/")
    ap.add_argument("--jobs", type=int, default=16)
    args = ap.parse_args()

    imports = import_cpu()

    from fastpex.core.lock.fetcher import MetadataFetcher
    from fastpex.core.lock.project_view import ProjectView
    from fastpex.core.lockfile import load_lock
    from fastpex.core.net.http import HttpClient, HttpConfig
    from fastpex.core.net.index import IndexClient
    from fastpex.core.platforms import parse_target

    lock = load_lock(args.lock)
    targets = [parse_target(t) for t in args.target]
    projects = sorted({d.name for d in lock.distributions})
    versions = {d.name: d.version for d in lock.distributions}
    http = HttpClient(HttpConfig())
    client = IndexClient(http)

    started, cpu = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(args.jobs) as pool:
        pages = dict(zip(projects, pool.map(lambda p: client.project_page(args.index, p), projects)))
    pages_cpu, pages_wall = time.process_time() - cpu, time.monotonic() - started

    cpu = time.process_time()
    views = {name: ProjectView(name, page.files) for name, page in pages.items() if page is not None}
    views_cpu = time.process_time() - cpu

    cpu = time.process_time()
    for target in targets:
        tags = frozenset(target.supported_tags)
        python = target.marker_environment.get("python_full_version") or target.python_version
        for view in views.values():
            usable = view.usable(tags, python, True, lambda wanted, py: True)
            view.json_page(usable, "http://127.0.0.1:1/t/files")
    render_cpu = time.process_time() - cpu

    wanted: Dict[str, object] = {}
    for target in targets:
        priority = {tag: i for i, tag in enumerate(target.supported_tags)}
        for name, view in views.items():
            version = versions[name]
            for file in view.best_wheels(priority, 1, lambda v, version=version: v == version):
                wanted[file.url] = file
    started, cpu = time.monotonic(), time.process_time()
    with tempfile.TemporaryDirectory() as empty, MetadataFetcher(http, Path(empty), workers=args.jobs) as fetcher:
        for future in fetcher.prefetch(list(wanted.values())):  # type: ignore[arg-type]
            future.result()
    metadata_cpu, metadata_wall = time.process_time() - cpu, time.monotonic() - started
    http.close()

    rows: List[tuple] = [
        ("imports of the resolve path (child interpreter, min of 5)", imports, ""),
        (f"fetch + parse {len(pages)} pages (TLS, gzip, json.loads, columns)", pages_cpu, f"{pages_wall:.2f} s wall"),
        (f"index them into views ({sum(len(v.files) for v in views.values())} files)", views_cpu, ""),
        (f"render each page once per target ({len(targets)} targets)", render_cpu, ""),
        (f"core metadata of {len(wanted)} wheels (one per target and distribution)", metadata_cpu, f"{metadata_wall:.2f} s wall"),
    ]
    for label, seconds, note in rows:
        print(f"{seconds:6.3f} CPU-s  {label}  {note}")
    print(f"{sum(r[1] for r in rows):6.3f} CPU-s  total")


if __name__ == "__main__":
    main()
