"""lock_bench's Pants case with pantsd (issue 12): `generate-lockfiles` after one requirement is
added, with pantsd running and the `fastpex` named cache warm, against the fastpex CLI for the
same case in the same run.

  cold       `pants --pantsd generate-lockfiles --resolve=ml-core` in a fresh repo (starts pantsd,
             fills the named caches); its lock, pylock and `fastpex` named cache are snapshotted
  unchanged  the same command again (pantsd warm; fastpex writes its stored lock again)
  one added  per repeat, the snapshot restored, then `requests` added to 3rdparty/BUILD:
             Pants (pantsd warm)  vs  the CLI (`python -m fastpex lock`, same requirements and
             targets, the snapshot's cache as --cache-dir, the snapshot's lock as its hint)
(The CLI's unchanged case is bench_set's; Pants' key differs from the CLI's: --no-header.)

Pants runs with `-ldebug` and `--stats-log`: the time from the start of the fastpex process to its
end is read from the log's `Starting:`/`Completed:` lines for "Lock the resolve", so the table
splits Pants' wall into the fastpex process and everything around it. pantsd is stopped at the
end by the pid it wrote.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from runner import REPO_ROOT, SRC, Result, rmtree

PROCESS = "Lock the resolve `ml-core` with fastpex"
_STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \[\w+\] (.*)$")


def pantsd_argv(caches: Path) -> List[str]:
    (caches / "home").mkdir(parents=True, exist_ok=True)
    return [
        str(REPO_ROOT / "pants"),
        "--pantsd",
        "-ldebug",
        "--stats-log",
        f"--named-caches-dir={caches / 'named'}",
        f"--local-store-dir={caches / 'store'}",
        f'--subprocess-environment-env-vars=+["HOME={caches / "home"}"]',
        "generate-lockfiles",
        "--resolve=ml-core",
    ]


def process_seconds(log: Path) -> Optional[float]:
    """Seconds between the fastpex process's `Starting:` and `Completed:` lines (-ldebug)."""
    started = completed = None
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if not m or PROCESS not in m.group(2):
            continue
        when = datetime.strptime(m.group(1), "%H:%M:%S.%f")
        if "Starting:" in m.group(2) and started is None:
            started = when
        elif "Completed:" in m.group(2):
            completed = when
    if started is None or completed is None:
        return None
    return (completed - started).total_seconds()


@dataclass
class PantsCase:
    pants: List[Result] = field(default_factory=list)
    process: List[Optional[float]] = field(default_factory=list)  # the fastpex process inside each Pants run
    cli: List[Result] = field(default_factory=list)

    @staticmethod
    def _median(values: Sequence[Optional[float]]) -> Optional[float]:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    def row(self, case: str) -> List[str]:
        pants = self._median([r.wall for r in self.pants])
        process = self._median(self.process)
        cli = self._median([r.wall for r in self.cli])
        around = None if pants is None or process is None else pants - process
        over = None if pants is None or cli is None else pants - cli

        def f(v: Optional[float]) -> str:
            return "-" if v is None else f"{v:.2f} s"

        spread = lambda rs: "/".join(f"{r.wall:.2f}" for r in rs)  # noqa: E731
        met = "" if over is None or case != "one added" else ("met" if over <= 1.5 else "MISSED")
        return [case, f"{f(pants)} ({spread(self.pants)})", f(process), f(around), f"{f(cli)} ({spread(self.cli)})" if self.cli else "-",
                f(over), "≤ CLI + 1.5 s" if case == "one added" else "", met]


def _copy(src: Path, dst: Path) -> None:
    import shutil

    rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    elif src.exists():
        shutil.copy2(src, dst)


def stop_pantsd(repo: Path) -> None:
    """Stop the pantsd this case started, by the pid it wrote under the repo's `.pids`."""
    for pid_file in repo.glob(".pids/*/pantsd/pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def run(args, m: Callable[..., Result], work: Path, env: Dict[str, str], *, write_repo: Callable[[Path, bool], None],
        requirements: Sequence[str], added: str, cli_argv: Callable[[Path, Path, Sequence[str]], List[str]]) -> Dict[str, PantsCase]:
    """The cases above; `cli_argv(lock, cache, requirements)` is the CLI's command for one lock."""
    repo, caches = work / "pants-pantsd-repo", work / "pants-pantsd-caches"
    rmtree(caches)
    write_repo(repo, True)
    build = repo / "3rdparty" / "BUILD"
    base_build = build.read_text()
    lock, pylock = repo / "3rdparty" / "ml-core.lock", repo / "3rdparty" / "pylock.ml-core.toml"
    named = caches / "named" / "fastpex"
    argv = pantsd_argv(caches)
    out: Dict[str, PantsCase] = {"cold": PantsCase(), "unchanged": PantsCase(), "one added": PantsCase()}
    try:
        r = m("pants-pantsd-generate-lockfiles-cold", argv, cwd=repo, check=False)
        out["cold"].pants.append(r)
        out["cold"].process.append(process_seconds(r.log))
        if not r.ok:
            return out
        snap = work / "pants-pantsd-snapshot"
        for src in (lock, pylock, named):
            _copy(src, snap / src.name)
        for i in range(max(1, args.repeat)):
            r = m(f"pants-pantsd-generate-lockfiles-unchanged-{i}", argv, cwd=repo, check=False)
            out["unchanged"].pants.append(r)
            out["unchanged"].process.append(process_seconds(r.log))
        cli_dir = work / "pants-pantsd-cli"
        for i in range(max(1, args.repeat)):
            for src in (lock, pylock, named):
                _copy(snap / src.name, src)
            build.write_text(base_build + f'python_requirement(name="added", requirements=["{added}"])\n')
            r = m(f"pants-pantsd-generate-lockfiles-one-added-{i}", argv, cwd=repo, check=False)
            out["one added"].pants.append(r)
            out["one added"].process.append(process_seconds(r.log))
            build.write_text(base_build)
            # The CLI from the same state: the snapshot's cache and, as its output (so its hint), the lock.
            _copy(snap / named.name, cli_dir / "cache")
            _copy(snap / lock.name, cli_dir / "ml-core.lock")
            out["one added"].cli.append(m(f"pants-pantsd-cli-one-added-{i}", cli_argv(cli_dir / "ml-core.lock", cli_dir / "cache",
                                                                                     [*requirements, added]), cwd=SRC, env=env, check=False))
        for src in (lock, pylock, named):
            _copy(snap / src.name, src)
    finally:
        stop_pantsd(repo)
    return out


HEADER = ["case", "Pants wall, pantsd (runs)", "fastpex process inside Pants", "Pants around it", "CLI wall (runs)",
          "Pants − CLI", "target", ""]
