"""A warm pip: one process imports pip once (and applies the launcher's patches), then forks one
child per pip run with that run's target, argv, working directory and environment.

Measured (docs/benchmarks.md, "Lock CPU: pip's side"): of the ~1.2 CPU-s a pip run of ml-core
costs, ~0.3 CPU-s is importing pip, ~0.025 CPU-s building its TLS context (certifi's bundle)
and ~0.012 CPU-s its user agent (which runs `rustc --version`), in every one of the six runs.
The zygote pays that once per lock; what pip caches itself (`lru_cache`) it computes here, in
the environment every child gets.

The children behave as `python -c LAUNCHER spec.json ARGS` does (`pip.LAUNCHER`): the patches
are installed before any other pip module is imported, exactly as there, but read the target
from a module-level spec that each child fills in after the fork. So modules that bind
`default_environment` or `get_supported` by name at import time (pip's installation report,
`target_python`) see the target as they do in a plain run. The zygote starts no threads, so
forking it is safe; a child redirects stdin to /dev/null and stdout+stderr to one file (as the
plain run's one pipe), and ends with `os._exit` after pip's `main` returns.

Protocol (lines on pipes): the zygote reads JSON requests on stdin and writes `ready`,
`started ID PID`, `exited ID CODE UTIME STIME` on its reply fd. Where fork is unavailable, or the
zygote cannot start or dies, `PipZygote.run` returns None and the caller runs pip plainly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from fastpex.core.lock.pip import PipTool, clean_env

__all__ = ["ZYGOTE", "PipZygote", "ZygoteRun", "fork_available"]

logger = logging.getLogger("fastpex.core.lock.zygote")

# Runs under the pip's interpreter (Python >= 3.9): keep the syntax plain. The patches are
# pip.LAUNCHER's (after pex's pex/pip/foreign_platform/, the pex project), made to read `_SPEC`.
ZYGOTE = r"""
# fastpex-pip-zygote
import gc, json, os, select, signal, sys, traceback
_SPEC = {"marker_environment": {}, "tags": [], "allow_sdists": False}
_TAGS = []
from pip._vendor.packaging import markers
def default_environment():
    return dict(_SPEC["marker_environment"])
markers.default_environment = default_environment
if hasattr(markers, "_cached_default_environment"):
    markers._cached_default_environment = default_environment
from pip._vendor.packaging.tags import Tag
from pip._internal.utils import compatibility_tags
def get_supported(version=None, platforms=None, impl=None, abis=None):
    return list(_TAGS)
compatibility_tags.get_supported = get_supported
from pip._internal.models import target_python
target_python.get_supported = get_supported
from pip._internal.cli import cmdoptions
_check = cmdoptions.check_dist_restriction
def check_dist_restriction(options, check_target=False):
    if not _SPEC.get("allow_sdists"):
        return _check(options, check_target)
    saved = options.ignore_dependencies
    options.ignore_dependencies = True
    try:
        _check(options, check_target)
    finally:
        options.ignore_dependencies = saved
cmdoptions.check_dist_restriction = check_dist_restriction
from pip._internal.cli.main import main
# What `pip install --dry-run --report` imports on its way (measured with pip 26.3); a module
# missing from another pip version is simply not warmed.
for _name in (
    "pip._internal.cli.main_parser", "pip._internal.cli.autocompletion", "pip._internal.commands.install",
    "pip._internal.resolution.resolvelib.resolver", "pip._internal.resolution.resolvelib.factory",
    "pip._internal.resolution.resolvelib.provider", "pip._internal.resolution.resolvelib.reporter",
    "pip._internal.resolution.resolvelib.candidates", "pip._internal.resolution.resolvelib.found_candidates",
    "pip._internal.utils.wheel", "pip._vendor.distro", "pip._vendor.truststore", "netrc", "argparse",
):
    try:
        __import__(_name)
    except Exception:
        pass
try:
    from pip._internal.metadata import select_backend
    select_backend()
except Exception:
    pass
try:  # pip caches its TLS context (lru_cache); build it once, here, where it cannot warn
    import ssl
    from pip._vendor import truststore
    from pip._internal.cli import index_command
    index_command._create_truststore_ssl_context()
except Exception:
    pass
try:  # also cached by pip (lru_cache): distro files, libc, `rustc --version`; same environment
    from pip._internal.network.session import user_agent
    user_agent()
except Exception:
    pass

def _child(req, closing):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in closing:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(req["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    _SPEC.update(req["spec"])
    # The zygote's objects are never garbage: out of the collector's sight (no full scans, no
    # copy-on-write of the pages they sit on), and the youngest generation collected every
    # 50,000 allocations instead of 700 (scale set: 370 collections, 0.17-0.18 CPU-s of a
    # ~3 CPU-s run -> 4-5, 0.03). Only when memory is reclaimed changes, not what pip does.
    gc.freeze()
    gc.set_threshold(50000, 20, 20)
    _TAGS[:] = [Tag(*t.split("-", 2)) for t in _SPEC["tags"]]
    sys.argv = ["-c"] + list(req["argv"])
    code = 1
    try:
        code = main(list(req["argv"]))
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(str(code) + "\n")
        code = 1
    try:
        import logging
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

def _serve(reply_fd):
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    running = {}
    def send(line):
        os.write(reply_fd, (line + "\n").encode())
    def reap():
        while running:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            send("exited %s %d %.4f %.4f" % (running.pop(pid), code, usage.ru_utime, usage.ru_stime))
    send("ready")
    buf = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        reap()
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                try:
                    _child(req, (reply_fd, wake_r, wake_w))
                finally:
                    os._exit(70)
            running[pid] = req["id"]
            send("started %s %d" % (req["id"], pid))
    for pid in list(running):  # fastpex went away: nothing may outlive it
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    while running:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        running.pop(pid, None)

_serve(int(sys.argv[1]))
"""


def fork_available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "wait4") and hasattr(signal, "SIGCHLD")


@dataclass(frozen=True)
class ZygoteRun:
    returncode: int
    output: str
    cpu_seconds: float  # the child's user + system time


class _Slot:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.pid: Optional[int] = None
        self.code: Optional[int] = None
        self.cpu = 0.0


class PipZygote:
    """One warm pip (see the module). Thread-safe: runs may be requested from several threads."""

    def __init__(self, pip: PipTool, *, ready_timeout: float = 120.0, scratch: Optional[Path] = None) -> None:
        """`scratch`: where pip's temporary files go (see `clean_env`)."""
        self.pip = pip
        self.ready_timeout = ready_timeout
        self.env = clean_env(pip.pythonpath, scratch)
        self._lock = threading.Lock()
        self._slots: Dict[str, _Slot] = {}
        self._next = 0
        self._ready = threading.Event()
        self._dead = False
        self.forked = 0  # runs that a forked child completed
        self._stderr = tempfile.TemporaryFile()
        reply_r, reply_w = os.pipe()
        try:
            self._proc: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
                [pip.python, "-c", ZYGOTE, str(reply_w)],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(reply_w,),
                start_new_session=True,  # its children share its process group: `close` ends them all
            )
        except OSError as e:
            logger.debug("no pip zygote (%s): pip runs start cold", e)
            self._proc = None
            self._dead = True
            os.close(reply_r)
            return
        finally:
            os.close(reply_w)
        self._reader = threading.Thread(target=self._read, args=(reply_r,), name="fastpex-pip-zygote", daemon=True)
        self._reader.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._proc)

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as replies:
            for raw in replies:
                parts = raw.decode().split()
                if parts == ["ready"]:
                    self._ready.set()
                elif len(parts) == 3 and parts[0] == "started":
                    with self._lock:
                        slot = self._slots.get(parts[1])
                    if slot is not None:
                        slot.pid = int(parts[2])
                elif len(parts) == 5 and parts[0] == "exited":
                    with self._lock:
                        slot = self._slots.pop(parts[1], None)
                    if slot is not None:
                        slot.code, slot.cpu = int(parts[2]), float(parts[3]) + float(parts[4])
                        slot.done.set()
        with self._lock:  # the zygote is gone: whoever waits falls back to a plain run
            self._dead = True
            pending = list(self._slots.values())
            self._slots.clear()
        self._ready.set()
        for slot in pending:
            slot.done.set()

    def run(
        self, spec: Mapping[str, Any], args: Sequence[str], cwd: Path, timeout: Optional[float]
    ) -> Optional[ZygoteRun]:
        """Run pip with `args` for `spec` (the launcher's target.json) in `cwd`; None when the
        zygote is unavailable (the caller runs pip plainly). Raises TimeoutError after `timeout`."""
        if self._proc is None or not self._ready.wait(self.ready_timeout) or self._dead:
            self._dead = True  # a zygote that never got ready is not waited for again
            self._log_death()
            return None
        output = cwd / "pip-output.txt"
        slot = _Slot()
        with self._lock:
            if self._dead or self._proc.stdin is None:
                return None
            self._next += 1
            run_id = str(self._next)
            self._slots[run_id] = slot
            request = {"id": run_id, "spec": dict(spec), "argv": list(args), "cwd": str(cwd),
                       "env": self.env, "output": str(output)}
            try:
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:
                self._slots.pop(run_id, None)
                return None
        if not slot.done.wait(timeout):
            if slot.pid is not None:
                try:
                    os.kill(slot.pid, signal.SIGKILL)
                except OSError:
                    pass
            slot.done.wait(10)
            raise TimeoutError(f"pip did not finish within {timeout:.0f} s")
        if slot.code is None:
            self._log_death()
            return None
        try:
            text = output.read_text(errors="replace")
        except OSError:
            text = ""
        with self._lock:
            self.forked += 1
        return ZygoteRun(slot.code, text, slot.cpu)

    def _log_death(self) -> None:
        try:
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            tail = ""
        logger.debug("the pip zygote is unavailable; running pip cold%s", f": {tail}" if tail else "")

    def close(self) -> None:
        if self._proc is not None:
            self._finalizer()
        self._stderr.close()


def _shutdown(proc: "subprocess.Popen[bytes]") -> None:
    """End of the lock: the zygote exits when its stdin closes (killing what still runs)."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
