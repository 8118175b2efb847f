"""Time every request pip makes, from pip's side, one JSON file per pip process.

Invoked as `python pip_waits_boot.py -c CODE ARGS...` (how fastpex launches pip). Patches
`pip._vendor.requests.Session.request`, so the launcher's own patches keep their order; forked
children (the zygote's) restart the clock at the fork and write their record at `os._exit`.
"""
import gc
import json
import os
import sys
import time

OUT_DIR = os.environ.get("FASTPEX_WAITS_DIR", "lock-waits")
clock = {"t0": time.perf_counter(), "w0": time.time()}
record: dict = {"waits": []}


def time_requests() -> None:
    from pip._vendor.requests import sessions

    original = sessions.Session.request

    def request(self, method, url, *args, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, method, url, *args, **kwargs)
        finally:
            record["waits"].append([url, started - clock["t0"], time.perf_counter() - started])

    sessions.Session.request = request


def dump(kind: str) -> None:
    record.update(
        pid=os.getpid(), kind=kind, cpu=time.process_time(),
        wall=time.perf_counter() - clock["t0"], start=clock["w0"],
    )
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, f"{os.getpid()}.json"), "w") as fp:
        json.dump(record, fp)


original_exit = os._exit


def exit_(code: int) -> None:
    if record["waits"]:
        dump("child")
    original_exit(code)


def fork() -> int:
    pid = original_fork()
    if pid == 0:
        clock.update(t0=time.perf_counter(), w0=time.time())
        record.update(waits=[], fork_cpu0=time.process_time(), gc=[0.0, 0])
        started: dict = {}

        def on_gc(phase, _info):
            if phase == "start":
                started["t"] = time.thread_time()
            else:
                record["gc"][0] += time.thread_time() - started.get("t", time.thread_time())
                record["gc"][1] += 1

        gc.callbacks.append(on_gc)
    return pid


code = sys.argv[2]
original_fork = os.fork
os._exit = exit_
if "print(pip" not in code:  # not the version probe
    time_requests()
    os.fork = fork
    import atexit

    atexit.register(lambda: dump("plain") if record["waits"] else None)
sys.argv = ["-c"] + sys.argv[3:]
exec(compile(code, "<launcher>", "exec"), {"__name__": "__main__"})
