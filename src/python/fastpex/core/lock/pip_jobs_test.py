"""default_pip_jobs: a re-lock runs one pip per usable core, 2 to 4 (more only make pip wait
for a core mid-request); a first lock runs 4, to overlap its waits on the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from fastpex.core.lock.api import default_pip_jobs

PROBE = "from fastpex.core.lock.api import default_pip_jobs; print(default_pip_jobs())"


def _jobs_on(cpus: str) -> int:
    taskset = shutil.which("taskset")
    assert taskset is not None, "taskset (util-linux) is needed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([taskset, "-c", cpus, sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout)


def test_one_run_per_usable_core_but_at_least_two_and_at_most_four() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert default_pip_jobs() == max(2, min(4, len(cores)))
    assert _jobs_on(str(cores[0])) == 2  # one core: still two, runs wait on the proxy too
    if len(cores) >= 2:
        assert _jobs_on(f"{cores[0]},{cores[1]}") == 2


def test_a_first_lock_runs_four_whatever_the_cores() -> None:
    assert default_pip_jobs(first_lock=True) == 4
