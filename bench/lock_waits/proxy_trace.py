"""Run `python -m fastpex ...` in-process with the metadata proxy's side timed.

JSON lines into $FASTPEX_TRACE_LOG: every proxy request (wall and thread CPU), upstream page
fetches, page bodies, view builds, each pip run, the zygote's start and readiness, the merge.
Internals that no longer exist are skipped with a warning on stderr.
"""
import atexit
import json
import os
import sys
import threading
import time

T0 = time.perf_counter()
LOG = open(os.environ.get("FASTPEX_TRACE_LOG", "lock-trace.jsonl"), "w")
_log_lock = threading.Lock()


def emit(**fields) -> None:
    with _log_lock:
        LOG.write(json.dumps(fields) + "\n")


def timed(owner, name: str, kind: str, describe=lambda args: {}) -> None:
    original = getattr(owner, name, None)
    if original is None:
        print(f"proxy_trace: {getattr(owner, '__name__', owner)}.{name} not found; not timed", file=sys.stderr)
        return

    def wrapper(*args, **kwargs):
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            emit(k=kind, t=started - T0, wall=time.perf_counter() - started,
                 cpu=time.thread_time() - cpu, **describe(args))

    setattr(owner, name, wrapper)


from fastpex.core.lock import proxy, proxy_http, python_range, resolve, runner, sources, zygote  # noqa: E402
from fastpex.core.lockfile import codec  # noqa: E402
from fastpex.core.net import index  # noqa: E402

timed(proxy_http._Handler, "_dispatch", "req", lambda a: {"path": a[0].path})
timed(proxy.MetadataProxy, "_upstream_page", "up", lambda a: {"project": a[2]})
timed(proxy.MetadataProxy, "_build_view", "view", lambda a: {"project": a[2]})
timed(index.IndexClient, "_body", "body", lambda a: {"project": a[2]})
timed(resolve, "resolve", "span", lambda a: {"what": "resolve"})
timed(resolve, "merge", "span", lambda a: {"what": "merge"})
timed(runner.Runner, "run", "span", lambda a: {"what": "run", "extra": getattr(a[1], "name", "")})
# lock/api.py imports these on the resolve path only, by attribute, so patching their modules works.
for module, name in ((sources, "open_source"), (python_range, "check_lock"), (codec, "dumps_lock")):
    timed(module, name, "span", lambda a, name=name: {"what": name})

_zygote_init = zygote.PipZygote.__init__


def zygote_init(self, *args, **kwargs):
    emit(k="span", what="zygote-start", t=time.perf_counter() - T0, wall=0)
    _zygote_init(self, *args, **kwargs)
    ready = getattr(self, "_ready", None)
    if ready is not None:
        original_set = ready.set

        def set_ready():
            emit(k="span", what="zygote-ready", t=time.perf_counter() - T0, wall=0)
            original_set()

        ready.set = set_ready


zygote.PipZygote.__init__ = zygote_init
emit(k="span", what="driver-start", t=0, wall=0, cpu=time.process_time())
atexit.register(lambda: (emit(k="end", t=time.perf_counter() - T0, cpu=time.process_time()), LOG.flush()))
sys.argv = ["fastpex"] + sys.argv[1:]
from fastpex.core.cli.main import main  # noqa: E402

main()
