"""lock_bench's CPU split (issue 3): the `--pip` wrapper that times every pip process under GNU
`time`, one measured run (the tree's CPU and pip's share), the median of --repeat runs, and the
rows of the "CPU split, fastpex vs uv" table with each case's target.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from runner import Result, rmtree

PIP_WRAPPER = """#!/bin/bash
# lock_bench: run the real Python under GNU time, one line per process: "<kind> <wall> <user> <sys>"
case "$*" in
  *"print(pip.__version__)"*) kind=probe ;;
  *fastpex-pip-zygote*) kind=zygote ;;
  *) kind=pip ;;
esac
exec /usr/bin/time -a -o "${{FASTPEX_BENCH_PIP_TIMES:-/dev/null}}" -f "$kind %e %U %S" {python} "$@"
"""


def write_pip_wrapper(path: Path, python: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PIP_WRAPPER.format(python=python))
    path.chmod(0o755)
    return path


@dataclass
class Run:
    """One measured run: the tree's numbers, and pip's share from the wrapper's lines."""

    result: Result
    pip_cpu: float = 0.0  # every pip process (runs, probes, a zygote)
    pip_runs: int = 0  # resolutions pip did (from fastpex's log)
    probe_cpu: float = 0.0

    @property
    def own_cpu(self) -> float:
        return self.result.cpu - self.pip_cpu


def _pip_runs_from_log(log: Path) -> int:
    m = re.search(r"\((\d+) pip runs\)", log.read_text(errors="replace"))
    return int(m.group(1)) if m else 0


def timed(m: Callable[..., Result], name: str, argv: List[str], work: Path, env: Dict[str, str], **kw) -> Run:
    """Run argv with the pip wrapper's time file set, and read pip's share back."""
    times = work / "pip-times" / f"{name}.txt"
    times.parent.mkdir(parents=True, exist_ok=True)
    rmtree(times)
    result = m(name, argv, env={**env, "FASTPEX_BENCH_PIP_TIMES": str(times)}, **kw)
    run = Run(result, pip_runs=_pip_runs_from_log(result.log))
    if times.exists():
        for line in times.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] in ("pip", "probe", "zygote"):
                cpu = float(parts[2]) + float(parts[3])
                run.pip_cpu += cpu
                if parts[0] == "probe":
                    run.probe_cpu += cpu
    return run


@dataclass
class Case:
    """The median of --repeat runs of one case."""

    runs: List[Run]

    def _median(self, f: Callable[[Run], float]) -> float:
        return statistics.median(f(r) for r in self.runs)

    @property
    def wall(self) -> float:
        return self._median(lambda r: r.result.wall)

    @property
    def rx(self) -> float:
        return self._median(lambda r: r.result.rx)

    @property
    def cpu(self) -> float:
        return self._median(lambda r: r.result.cpu)

    @property
    def pip_cpu(self) -> float:
        return self._median(lambda r: r.pip_cpu)

    @property
    def own_cpu(self) -> float:
        return self._median(lambda r: r.own_cpu)

    @property
    def pip_runs(self) -> int:
        return int(self._median(lambda r: r.pip_runs))

    @property
    def per_pip_run(self) -> Optional[float]:
        per = [(r.pip_cpu - r.probe_cpu) / r.pip_runs for r in self.runs if r.pip_runs]
        return statistics.median(per) if per else None

    def spread(self) -> str:
        return "/".join(f"{r.result.wall:.2f}" for r in self.runs)


def repeat(n: int, before: Callable[[int], None], once: Callable[[int], Run]) -> Case:
    runs = []
    for i in range(n):
        before(i)
        runs.append(once(i))
    return Case(runs)


CASES = ("cold", "unchanged", "one added")
TARGET_TEXT = {
    ("ml-core", "cold"): ("≤4 s, ≤2.5x uv; own ≤1.5 CPU-s; pip ≤0.8 CPU-s/run", lambda f, u: f.wall <= 4 and f.wall <= 2.5 * u.wall and f.own_cpu <= 1.5),
    ("ml-core", "one added"): ("≤3.5 s, ≤2x uv; pip ≤0.8 CPU-s/run", lambda f, u: f.wall <= 3.5 and f.wall <= 2 * u.wall),
    ("ml-core", "unchanged"): ("≤0.3 s", lambda f, u: f.wall <= 0.3),
    ("scale", "cold"): ("≤2x uv", lambda f, u: f.wall <= 2 * u.wall),
    ("scale", "one added"): ("≤2x uv", lambda f, u: f.wall <= 2 * u.wall),
}


def cpu_rows(label: str, by_case: Dict[str, Case]) -> List[List[str]]:
    rows = []
    for case in CASES:
        f, u = by_case.get(f"fastpex {case}"), by_case.get(f"uv {case}")
        if f is None or u is None:
            continue
        text, check = TARGET_TEXT.get((label, case), ("", None))
        met = ""
        if check is not None:
            met = "met" if check(f, u) and (f.per_pip_run is None or f.per_pip_run <= 0.8 or "pip" not in text) else "MISSED"
        per = f.per_pip_run
        rows.append([
            label, case, f"{f.wall:.2f} s ({f.spread()})", f"{u.wall:.2f} s ({u.spread()})",
            f"{f.wall / u.wall:.2f}x" if u.wall else "-", f"{f.cpu:.2f}", f"{f.pip_cpu:.2f}", str(f.pip_runs),
            "-" if per is None else f"{per:.2f}", f"{f.own_cpu:.2f}", f"{u.cpu:.2f}", text, met,
        ])
    return rows
