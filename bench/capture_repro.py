"""Minimal reproduction of Pants 2.17's capture of one large output file (issue 14 item 1).

Writes a throwaway Pants repo into <work>/repo with a ~60-line in-repo plugin
(pants-plugins/capture_repro/register.py): a `big_copy` target whose `package` rule runs ONE
Process, `sh -c 'cp <input> out && dd <nonce> into its first bytes'`, with the output in
`output_files`. Nothing of fastpex runs. Each rebuild edits the target's nonce.txt (the process
input, like a source edit), so the process reruns and its 4.1 GB output has a new digest that
Pants has to capture anew, exactly as in a source-only zipapp rebuild.

Per variant (a set of extra Pants flags): a fresh local store, a cold `package` (starts pantsd
with the variant's options; not counted), then --runs rebuilds, each after `sync` and with the
previous run's store blobs deleted. Each rebuild is split by `Split` (also used by
pack_bench.py --split):

  head     client start -> the process appears (pantsd's rule graph, sandbox setup)
  process  the process's life, polled from /proc every 0.02 s (its argv carries a marker)
  capture  process exit -> Pants' `Completed: <description>` (hash pass + copy pass into the store)
  dist     `Completed` -> `Wrote dist/...` (clear the old dist file, copy the blob to dist/)
  tail     `Wrote dist/...` -> client exit

Run (under the bench lock):
  flock /tmp/work/bench.lock /tmp/dev/bin/python bench/capture_repro.py \\
      --input /path/to/a/4.1GB.pex --work /tmp/fastpex-bench/capture-repro --runs 3 \\
      --variant default= --variant threads=--rule-threads-max=3
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import REPO_ROOT, clean_env, rmtree  # noqa: E402

MARKER = "capture-repro-copy"
DESCRIPTION = "Copy the big file into out.bin"

REGISTER_PY = '''\
"""A `big_copy` target whose package rule runs one Process copying a big file to its output."""
from dataclasses import dataclass

from pants.core.goals.package import BuiltPackage, BuiltPackageArtifact, PackageFieldSet
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.engine.process import Process, ProcessResult
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import COMMON_TARGET_FIELDS, SingleSourceField, StringField, Target
from pants.engine.unions import UnionRule

SCRIPT = '/bin/cp "$1" "$3" && /bin/dd if="$2" of="$3" conv=notrunc status=none'


class NonceSource(SingleSourceField):
    pass


class InputPath(StringField):
    alias = "input"
    required = True
    help = "Absolute path of the big file the process copies."


class BigCopy(Target):
    alias = "big_copy"
    core_fields = (*COMMON_TARGET_FIELDS, NonceSource, InputPath)
    help = "Copies `input` into its package output, with nonce.txt written over its first bytes."


@dataclass(frozen=True)
class BigCopyFieldSet(PackageFieldSet):
    required_fields = (InputPath,)
    source: NonceSource
    input: InputPath


@rule
async def package_big_copy(field_set: BigCopyFieldSet) -> BuiltPackage:
    nonce = await Get(SourceFiles, SourceFilesRequest([field_set.source]))
    out = "out.bin"
    result = await Get(
        ProcessResult,
        Process(
            argv=("/bin/sh", "-c", SCRIPT, "MARKER", field_set.input.value,
                  nonce.snapshot.files[0], out),
            input_digest=nonce.snapshot.digest,
            output_files=(out,),
            description="DESCRIPTION",
        ),
    )
    return BuiltPackage(result.output_digest, (BuiltPackageArtifact(out),))


def target_types():
    return [BigCopy]


def rules():
    return [*collect_rules(), UnionRule(PackageFieldSet, BigCopyFieldSet)]
'''.replace("MARKER", MARKER).replace("DESCRIPTION", DESCRIPTION)

_LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d\d) \[\w+\] (.*)$")


class ProcessWatch:
    """Polls /proc for processes whose argv contains `marker`: first seen, last seen."""

    def __init__(self, marker: str, interval: float = 0.02) -> None:
        self.marker = marker.encode()
        self.interval = interval
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            now = time.time()
            for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
                if cmdline.split("/")[2] == me:
                    continue
                try:
                    with open(cmdline, "rb") as f:
                        argv = f.read()
                except OSError:
                    continue
                if self.marker in argv:
                    self.first = self.first or now
                    self.last = now
                    break
            self._stop.wait(self.interval)

    def __enter__(self) -> "ProcessWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Split:
    """One Pants run cut at the process's life and at Pants' log lines (seconds)."""

    wall: float
    rc: int
    head: Optional[float] = None
    process: Optional[float] = None
    capture: Optional[float] = None
    dist: Optional[float] = None
    tail: Optional[float] = None
    notes: List[str] = field(default_factory=list)

    def row(self) -> List[str]:
        def f(v: Optional[float]) -> str:
            return "-" if v is None else f"{v:.2f}"
        return [f(self.wall), f(self.head), f(self.process), f(self.capture), f(self.dist), f(self.tail)]


SPLIT_HEADER = ["wall", "head (to spawn)", "process", "capture (exit → Completed)", "dist/ (→ Wrote)", "tail"]


def _log_times(log_text: str, day: _dt.date) -> Dict[str, float]:
    """Unix times of the first `Completed: ...` and `Wrote dist/...` lines (local-time stamps)."""
    found: Dict[str, float] = {}
    for line in log_text.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        hh, mm, ss, msg = int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)
        stamp = _dt.datetime(day.year, day.month, day.day, hh, mm).timestamp() + ss
        key = "completed" if msg.startswith("Completed: ") else "wrote" if msg.startswith("Wrote dist/") else None
        if key:
            found.setdefault(key, stamp)
    return found


def timed_pants_run(argv: Sequence[str], cwd: Path, log: Path, marker: str, env: Optional[Dict[str, str]] = None,
                    timeout: float = 1800) -> Split:
    """Run one Pants command and split its wall time (see the module docstring)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    day = _dt.date.today()
    with open(log, "w") as out, ProcessWatch(marker) as watch:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        t0 = time.time()
        try:
            rc = subprocess.run(list(argv), cwd=cwd, env=env or clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -999
        t1 = time.time()
    split = Split(wall=t1 - t0, rc=rc)
    stamps = _log_times(log.read_text(errors="replace"), day)
    if watch.first is None or watch.last is None:
        split.notes.append("process not seen")
    else:
        split.head = watch.first - t0
        split.process = watch.last - watch.first
        if "completed" in stamps:
            split.capture = stamps["completed"] - watch.last
    if "completed" in stamps and "wrote" in stamps:
        split.dist = stamps["wrote"] - stamps["completed"]
    if "wrote" in stamps:
        split.tail = t1 - stamps["wrote"]
    return split


def pantsd_pids(repo: Path) -> List[int]:
    """pantsd's pid from the pid files Pants writes under <repo>/.pids or .pants.d."""
    pids = []
    for pattern in (".pids/**/pantsd/pid", ".pants.d/**/pantsd/pid"):
        for path in glob.glob(str(repo / pattern), recursive=True):
            try:
                pids.append(int(Path(path).read_text().strip()))
            except (OSError, ValueError):
                pass
    return pids


def stop_pantsd(repo: Path) -> None:
    """Stops the pantsd of this repo only, by the pid it recorded."""
    for pid in pantsd_pids(repo):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


def write_repo(repo: Path, input_file: Path) -> None:
    rmtree(repo)
    plugin = repo / "pants-plugins" / "capture_repro"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    (plugin / "register.py").write_text(REGISTER_PY)
    (repo / "pants.toml").write_text(textwrap.dedent("""\
        [GLOBAL]
        pants_version = "2.17.1"
        pythonpath = ["%(buildroot)s/pants-plugins"]
        backend_packages = ["capture_repro"]
        pantsd = false

        [anonymous-telemetry]
        enabled = false
        """))
    (repo / "BUILD").write_text(f'big_copy(name="big", source="nonce.txt", input="{input_file}")\n')
    (repo / "nonce.txt").write_text("nonce 0\n")


def bump_nonce(repo: Path) -> None:
    path = repo / "nonce.txt"
    n = int(path.read_text().split()[1]) + 1
    path.write_text(f"nonce {n}\n")


def prune_big_blobs(store: Path, min_size: int = 1 << 30) -> None:
    """Empties every store blob of at least `min_size` but the newest: keeps the store from
    growing 4 GB per rebuild (outside the timed part; the next rebuild reads none of them).

    Truncated, not deleted: pantsd's store GC service extends the lease (mtime) of every blob it
    knows, and when one is missing it fails and pantsd exits (seen at 13:05 on 2026-12-01)."""
    blobs = sorted((p for p in (store / "immutable" / "files").glob("*/*") if p.is_file() and p.stat().st_size >= min_size),
                   key=lambda p: p.stat().st_mtime)
    for blob in blobs[:-1]:
        os.chmod(blob, 0o644)  # Pants stores blobs read-only (0555)
        os.truncate(blob, 0)


def remove_kept_sandboxes() -> None:
    """Sandboxes this repro's process left behind (`--keep-sandboxes=always`): 4 GB each."""
    for sandbox in glob.glob("/tmp/pants-sandbox-*"):
        if os.path.exists(os.path.join(sandbox, "out.bin")) and os.path.exists(os.path.join(sandbox, "nonce.txt")):
            rmtree(Path(sandbox))


def run_variant(args, name: str, flags: List[str], repo: Path, results: dict) -> None:
    stop_pantsd(repo)  # some options (e.g. --rule-threads-*) only apply when pantsd starts
    store = args.work / "stores" / name
    rmtree(store)
    argv = [str(REPO_ROOT / "pants"), "--pantsd", f"--local-store-dir={store}",
            f"--named-caches-dir={args.work / 'named'}", *flags, "package", "//:big"]
    logs = args.work / "logs"
    entry = results.setdefault(name, {"flags": flags, "runs": []})
    print(f"\n===== {name}: {' '.join(flags) or '(defaults)'}", flush=True)
    bump_nonce(repo)
    cold = timed_pants_run(argv, repo, logs / f"{name}-cold.log", MARKER, timeout=args.timeout)
    print(f"  cold (pantsd start, not counted): {cold.wall:.2f} s rc={cold.rc}", flush=True)
    if cold.rc != 0:
        print((logs / f"{name}-cold.log").read_text()[-3000:])
        entry["error"] = f"cold rc={cold.rc}"
        return
    for i in range(args.runs):
        prune_big_blobs(store)
        remove_kept_sandboxes()
        bump_nonce(repo)
        subprocess.run(["sync"], check=True)
        time.sleep(args.settle)
        split = timed_pants_run(argv, repo, logs / f"{name}-run{i + 1}.log", MARKER, timeout=args.timeout)
        entry["runs"].append(asdict(split))
        print(f"  run {i + 1}: " + "  ".join(f"{h}={c}" for h, c in zip(SPLIT_HEADER, split.row())) + f" rc={split.rc}", flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    stop_pantsd(repo)
    rmtree(store)
    rmtree(repo / "dist")
    remove_kept_sandboxes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True, help="the big file to copy (e.g. a 4.1 GB zipapp)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastpex-bench/capture-repro"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after `sync` before each timed run")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=FLAG1,FLAG2 (Pants flags, comma-separated; `default=` for none); repeatable")
    args = ap.parse_args()
    variants = [(v.split("=", 1)[0], [f for f in v.split("=", 1)[1].split(",") if f]) for v in args.variant or ["default="]]
    args.work.mkdir(parents=True, exist_ok=True)
    repo = args.work / "repo"
    write_repo(repo, args.input.resolve())
    results_file = args.work / "results.json"
    results: dict = json.loads(results_file.read_text()) if results_file.exists() else {}
    results["_input"] = {"path": str(args.input), "size": args.input.stat().st_size}
    try:
        for name, flags in variants:
            results.pop(name, None)
            run_variant(args, name, flags, repo, results)
    finally:
        stop_pantsd(repo)
    results_file.write_text(json.dumps(results, indent=2))
    print("\n| variant | " + " | ".join(SPLIT_HEADER) + " |")
    for name, flags in variants:
        for run in results.get(name, {}).get("runs", []):
            print(f"| {name} | " + " | ".join(Split(**run).row()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
