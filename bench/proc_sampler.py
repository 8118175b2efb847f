"""Sample a process tree from /proc while a Pants command runs (issue 14, profiling aid).

    python bench/proc_sampler.py <root pid> <out.jsonl> [interval seconds, default 0.05]

Every interval, for the root (e.g. pantsd) and each of its descendants, writes one JSON line:
{"t": unix time, "pid", "ppid", "comm", "cmd" (first 300 chars, on first sight only),
 "cpu": utime+stime seconds, "ccpu": cutime+cstime seconds (waited-for children),
 "rchar", "wchar", "read_bytes", "write_bytes" (from /proc/<pid>/io)}.
Stops when the root exits or on SIGINT/SIGTERM. Summarise with `--summary out.jsonl`:
per pid, first/last seen, wall, CPU and I/O deltas; for the root, a per-second timeline.
"""
import json
import os
import signal
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def read_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] = state (field 3); field n is rest[n - 3]
    ppid = int(rest[1])
    ut, st, cut, cst = (int(rest[i]) for i in (11, 12, 13, 14))
    return comm, ppid, (ut + st) / TICK, (cut + cst) / TICK


def read_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                if k in ("rchar", "wchar", "read_bytes", "write_bytes"):
                    out[k] = int(v)
    except OSError:
        pass
    return out


def sample(root, out, interval):
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    seen = set()
    with open(out, "w") as f:
        while not stop and os.path.exists(f"/proc/{root}"):
            t = time.time()
            stats = {}
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        stats[int(d)] = read_stat(int(d))
                    except (OSError, ValueError):
                        pass
            tree = {root}
            changed = True
            while changed:
                changed = False
                for pid, (_, ppid, _, _) in stats.items():
                    if ppid in tree and pid not in tree:
                        tree.add(pid)
                        changed = True
            for pid in sorted(tree):
                if pid not in stats:
                    continue
                comm, ppid, cpu, ccpu = stats[pid]
                rec = {"t": round(t, 3), "pid": pid, "ppid": ppid, "comm": comm, "cpu": cpu, "ccpu": ccpu, **read_io(pid)}
                if pid not in seen:
                    seen.add(pid)
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as c:
                            rec["cmd"] = c.read().replace(b"\0", b" ").decode(errors="replace")[:300]
                    except OSError:
                        pass
                f.write(json.dumps(rec) + "\n")
            f.flush()
            time.sleep(max(0.0, interval - (time.time() - t)))


def summary(path, root=None):
    by_pid = {}
    for line in open(path):
        r = json.loads(line)
        by_pid.setdefault(r["pid"], []).append(r)
    root = root or min(by_pid, key=lambda p: by_pid[p][0]["t"])
    t0 = by_pid[root][0]["t"]
    print(f"t0 = {time.strftime('%H:%M:%S', time.gmtime(t0))}.{int(t0 * 1000) % 1000:03d} UTC")
    for pid, rs in sorted(by_pid.items(), key=lambda kv: kv[1][0]["t"]):
        a, b = rs[0], rs[-1]
        wall = b["t"] - a["t"]
        if pid != root and wall < 0.5:
            continue
        gb = 1e9
        print(f"pid {pid} {a['comm']:<16} seen {a['t'] - t0:8.2f} → {b['t'] - t0:8.2f} s (wall {wall:7.2f}), "
              f"cpu {b['cpu'] - a['cpu']:6.2f} s (+children {b['ccpu'] - a['ccpu']:6.2f}), "
              f"rchar {(b.get('rchar', 0) - a.get('rchar', 0)) / gb:6.2f} GB, wchar {(b.get('wchar', 0) - a.get('wchar', 0)) / gb:6.2f} GB, "
              f"write_bytes {(b.get('write_bytes', 0) - a.get('write_bytes', 0)) / gb:6.2f} GB  {a.get('cmd', '')[:120]}")
    print("root timeline (per second: cpu s, rchar GB, wchar GB):")
    rs = by_pid[root]
    prev = rs[0]
    for r in rs[1:]:
        if r["t"] - prev["t"] >= 1.0 or r is rs[-1]:
            print(f"  {prev['t'] - t0:7.2f}-{r['t'] - t0:7.2f}  cpu {r['cpu'] - prev['cpu']:5.2f}  "
                  f"rchar {(r.get('rchar', 0) - prev.get('rchar', 0)) / 1e9:5.2f}  wchar {(r.get('wchar', 0) - prev.get('wchar', 0)) / 1e9:5.2f}")
            prev = r


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
    else:
        sample(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.05)
