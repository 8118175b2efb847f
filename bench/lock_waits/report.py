"""Summarize pip_waits' per-process records and proxy_trace's log: `report.py WAITS_DIR TRACE_LOG`."""
import glob
import json
import sys


def percentile(values, p):
    values = sorted(values)
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))]


def main(waits_dir: str, trace_log: str) -> None:
    records = [json.load(open(f)) for f in sorted(glob.glob(waits_dir + "/*.json"))]
    print("pid kind cpu wall requests sum p50 p99 max slowest")
    for r in sorted(records, key=lambda r: r["start"]):
        waits = [w[2] for w in r["waits"]]
        slowest = max(r["waits"], key=lambda w: w[2])
        cpu = r["cpu"] - r.get("fork_cpu0", 0)
        print(r["pid"], r["kind"], f"{cpu:.2f} {r['wall']:.2f} {len(waits)} {sum(waits):.3f}",
              f"{percentile(waits, 50) * 1000:.1f}ms {percentile(waits, 99) * 1000:.1f}ms",
              f"{slowest[2] * 1000:.0f}ms", "/".join(slowest[0].split("/")[-2:]))
    events = [json.loads(line) for line in open(trace_log)]
    requests = [e for e in events if e["k"] == "req"]
    for name, chosen in (
        ("pages", [e for e in requests if "/simple/" in e.get("path", "")]),
        ("metadata", [e for e in requests if e.get("path", "").endswith(".metadata")]),
    ):
        walls = [e["wall"] for e in chosen]
        print(name, len(chosen), f"sum={sum(walls):.2f}s p50={percentile(walls, 50) * 1000:.1f}ms",
              f"p99={percentile(walls, 99) * 1000:.1f}ms cpu={sum(e['cpu'] for e in chosen):.2f}s")
    print("slowest proxy requests:")
    for e in sorted(requests, key=lambda e: -e["wall"])[:25]:
        print(f"  t={e['t']:.2f} wall={e['wall'] * 1000:.0f}ms cpu={e['cpu'] * 1000:.0f}ms {e.get('path', '')[:110]}")
    for kind in ("up", "body", "view"):
        chosen = [e for e in events if e["k"] == kind]
        if chosen:
            print(kind, len(chosen), f"wall={sum(e['wall'] for e in chosen):.2f}s cpu={sum(e['cpu'] for e in chosen):.2f}s",
                  f"last end t={max(e['t'] + e['wall'] for e in chosen):.2f}s")
    for e in events:
        if e["k"] in ("span", "end"):
            print(f"  {e.get('what', e['k'])} t={e['t']:.2f} wall={e.get('wall', 0):.2f} {e.get('extra', '')}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
