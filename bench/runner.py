"""Shared helpers for fastpex's benchmarks (stdlib only).

- `measure()` runs one command and records its wall time, the bytes this machine received
  while it ran (rx_bytes of every non-loopback interface in /proc/net/dev, so whole-machine
  traffic: other processes downloading at the same time are counted too), and the CPU time
  (user + sys) of its whole process tree (RUSAGE_CHILDREN before/after: every descendant that
  was waited for, which is every process a well-behaved tool starts).
- `Comparison` rows print as a table "fastpex vs stock" with their ratio and the target.
- `Report` collects the tables and appends one markdown block (command line, date, machine,
  numbers) to bench/results/<name>.md, ready to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# The fastpex sources the benchmarks run. Others edit src/python while benchmarks run: point
# FASTPEX_BENCH_SRC at a frozen copy (`git archive HEAD src/python | tar -x -C DIR`) to pin them.
SRC = Path(os.environ.get("FASTPEX_BENCH_SRC") or REPO_ROOT / "src" / "python")
RESULTS_DIR = BENCH_DIR / "results"

# Interfaces that mirror real traffic (traffic-shaping ifb devices) or are local.
_SKIP_IFACES = ("lo",)
_SKIP_PREFIXES = ("ifb",)


def rx_bytes() -> int:
    """Bytes received so far by all non-loopback interfaces (whole machine)."""
    total = 0
    with open("/proc/net/dev") as f:
        for line in f.readlines()[2:]:
            name, data = line.split(":", 1)
            name = name.strip()
            if name in _SKIP_IFACES or name.startswith(_SKIP_PREFIXES):
                continue
            total += int(data.split()[0])
    return total


def clean_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment minus every PIP_/UV_/PEX_/PANTS_ variable, with pip's config disabled.

    This machine has a global pip configuration (constraints, extra local indexes, find-links)
    and PIP_* variables that must not leak into any measured tool.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "PEX_", "PANTS_", "FASTPEX_"))
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if extra:
        env.update(extra)
    return env


@dataclass
class Result:
    name: str
    argv: List[str]
    wall: float
    rx: int
    returncode: int
    log: Path
    cpu_user: float = 0.0  # the process tree's user CPU seconds
    cpu_sys: float = 0.0

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _log_path(log_dir: Path, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return log_dir / f"{safe}.log"


def measure(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    log_dir: Path = Path("/tmp/fastpex-bench-logs"),
    check: bool = True,
    timeout: Optional[float] = None,
) -> Result:
    """Run argv, time it (wall seconds) and count the bytes received meanwhile."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = _log_path(log_dir, name)
    argv = [str(a) for a in argv]
    print(f"\n>>> [{name}] {shlex.join(argv)}" + (f"   (cwd={cwd})" if cwd else ""), flush=True)
    with open(log, "wb") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        rx0 = rx_bytes()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=dict(env) if env is not None else clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -999
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rx = rx_bytes() - rx0
    res = Result(name, argv, wall, rx, rc, log, ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime)
    print(f"    {wall:8.2f} s  {fmt_bytes(rx):>10}  cpu {res.cpu:.2f} s  rc={rc}  log={log}", flush=True)
    if rc != 0:
        tail = log.read_bytes()[-3000:].decode(errors="replace")
        print(f"    FAILED; last lines of {log}:\n{tail}", flush=True)
        if check:
            raise SystemExit(f"[{name}] failed with exit code {rc}; see {log}")
    return res


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def fmt_secs(s: Optional[float]) -> str:
    return "-" if s is None else f"{s:.2f} s"


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def rmtree(path: Path) -> None:
    """Remove a directory tree or a file, if present."""
    if path.is_file() or path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Comparison:
    """One row: fastpex's number vs a stock tool's number, and the ratio stock / fastpex."""

    what: str
    unit: str  # "s" or "B"
    fastpex: Optional[float]
    stock: Optional[float]
    stock_label: str
    target: str = ""
    # ratio shown is stock / fastpex ("x faster/smaller"); `met` is decided by the caller.
    met: Optional[bool] = None

    def ratio(self) -> Optional[float]:
        if self.fastpex is None or self.stock is None:
            return None
        if self.fastpex == 0:
            return float("inf") if self.stock else 1.0
        return self.stock / self.fastpex

    def cells(self) -> List[str]:
        f = fmt_secs if self.unit == "s" else fmt_bytes
        r = self.ratio()
        ratio = "-" if r is None else ("inf" if r == float("inf") else f"{r:.2f}x")
        met = {None: "", True: "met", False: "MISSED"}[self.met]
        return [self.what, f(self.fastpex), self.stock_label, f(self.stock), ratio, self.target, met]


HEADER = ["measurement", "fastpex", "stock tool", "stock", "stock/fastpex", "target", ""]


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return f"nproc={os.cpu_count()}{mem}, {platform.system()} {platform.release()} {platform.machine()}, bench python {platform.python_version()}"


def git_head() -> str:
    """The checkout's commit (read-only git calls) and whether the tree had local changes."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src"],
                               capture_output=True, text=True).stdout.strip()
        return f"commit {head}" + (" + uncommitted changes under src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


@dataclass
class Report:
    name: str
    title: str
    sections: List[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    def add_table(self, heading: str, comparisons: Sequence[Comparison]) -> None:
        text = f"**{heading}**\n\n" + table([c.cells() for c in comparisons])
        print("\n" + text + "\n", flush=True)
        self.sections.append(text)

    def add_raw_table(self, heading: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        text = f"**{heading}**\n\n" + table(rows, header)
        print("\n" + text + "\n", flush=True)
        self.sections.append(text)

    def add_text(self, text: str) -> None:
        print("\n" + text + "\n", flush=True)
        self.sections.append(text)

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        cmd = shlex.join([sys.executable, *sys.argv])
        block = "\n\n".join(
            [
                f"### {self.title}",
                f"- command: `{cmd}` (cwd `{os.getcwd()}`)",
                f"- date: {self.started} (finished {_dt.datetime.now(_dt.timezone.utc).strftime('%H:%M UTC')})",
                f"- machine: {machine()}",
                f"- fastpex: {git_head()}; sources run: `{SRC}`",
                "- bytes = rx_bytes of all non-loopback interfaces during the step (whole machine)",
                *self.sections,
            ]
        )
        out = RESULTS_DIR / f"{self.name}.md"
        with open(out, "a") as f:
            f.write(block + "\n\n")
        print(f"\nappended the markdown block to {out}", flush=True)
        return out
