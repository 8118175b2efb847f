"""Container image benchmark (issue 13): `fastpex_image` vs the pex venv + umoci + skopeo recipe.

Reuses bench/pack_bench.py's scratch Pants repo (the torch + transformers app `src/app`, the
one-dependency app `src/small`, same locks) and adds to each app a `fastpex_python_base` (made
by the build from this machine's CPython 3.11) and a `fastpex_image` of its packed
`fastpex_binary`, with `repository` = a loopback Debian docker-registry started by this script.
One pantsd for the whole run, as a user's (torch app first, so its cold build is cold).

Per app (`--apps app small`):
  cold      `pants package src/APP:image` (fastpex cache seeded with the artifacts of
            `--artifacts`, hard links, so nothing is downloaded: bytes received say whether)
  publish1  `pants publish src/APP:image` (everything uploaded)
  source    edit main.py, `pants package` again; Pants log: `Completed: Build the image` ->
            `Wrote dist/` = Pants rewriting dist/
  publish2  `pants publish` again: the registry's storage growth and its PUT/PATCH requests
            vs the layout's app layer + config + manifest
Torch app only:
  compress  the dependency layers of the cold build, gunzipped to tar files, then compressed
            once with the core's GzipLayerSink at level 6 (timed alone)
  baseline  a packed PEX (built by the fastpex core from its layer cache: the builtin
            pex_binary's cold build is ~400 s), `PEX_TOOLS=1 python app.pex venv --scope=deps
            D1` / `--scope=srcs D2`, each `umoci insert`ed onto the same base, `skopeo copy` to
            the registry; after a source-only change the srcs steps again
  start     `umoci unpack` of the image, `chroot rootfs <Entrypoint>`: time to the first output
            line, twice; vs the packed PEX's second start (same run)
  repro     `python -m fastpex image` twice from two empty cache roots: same manifest digest?

Run (never beside another benchmark):
    flock /tmp/work/bench.lock /tmp/dev/bin/python bench/image_bench.py [--apps small] [--steps ...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_bench import PY311, edit, write_repo  # noqa: E402
from runner import REPO_ROOT, Comparison, Report, clean_env, dir_size, fmt_bytes, measure, rmtree  # noqa: E402

STEPS = ["pants", "compress", "baseline", "start", "repro"]
TAG = "v1"


def snapshot_sources(work: Path) -> Path:
    """A frozen `git archive HEAD src/python` (as pack_bench does): others edit the tree meanwhile."""
    src = work / "src-snapshot" / "src" / "python"
    if not src.exists():
        (work / "src-snapshot").mkdir(parents=True, exist_ok=True)
        subprocess.run(f"git -C {shlex.quote(str(REPO_ROOT))} archive HEAD src/python | tar -x -C {shlex.quote(str(work / 'src-snapshot'))}",
                       shell=True, check=True)
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        (work / "src-snapshot" / "COMMIT").write_text(commit + "\n")
    return src


def add_image_targets(repo: Path, registry: str) -> None:
    for app, binary in (("app", "fastpex-packed"), ("small", "small-fastpex")):
        with open(repo / "src" / app / "BUILD", "a") as f:
            f.write(textwrap.dedent(f"""\
                fastpex_python_base(name="python", interpreter_constraints=["CPython==3.11.*"])
                fastpex_image(name="image", binary=":{binary}", base=":python", repository="{registry}/{app}", image_tags=["{TAG}"])
                """))


def seed_artifacts(artifacts: Path, cache: Path) -> None:
    """Hard-link the fastpex store's artifacts into a cache root: 'artifacts already fetched'."""
    (cache).mkdir(parents=True, exist_ok=True)
    if artifacts.is_dir() and not (cache / "artifacts").exists():
        subprocess.run(["cp", "-al", str(artifacts), str(cache / "artifacts")], check=True)


def layout_parts(layout: Path, tag: str = TAG) -> dict:
    """Sizes of the manifest, config and each layer (by `io.fastpex.layer`) of `layout:tag`."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    blob = lambda d: layout / "blobs" / "sha256" / d["digest"].split(":", 1)[1]  # noqa: E731
    manifest = json.loads(blob(desc).read_text())
    layers = [{"name": (l.get("annotations") or {}).get("io.fastpex.layer", "base"), "digest": l["digest"], "size": l["size"]}
              for l in manifest["layers"]]
    return {"manifest_digest": desc["digest"], "manifest_size": desc["size"], "config_size": manifest["config"]["size"],
            "layers": layers, "app_layer_size": sum(l["size"] for l in layers if l["name"] == "app")}


def pants_log_span(log: Path, start_pat: str, end_pat: str) -> Optional[float]:
    """Seconds between the last log line matching start_pat and the next matching end_pat."""
    stamp = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) ")
    t0 = None
    span = None
    for line in log.read_text(errors="replace").splitlines():
        m = stamp.match(line)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
        if start_pat in line:
            t0 = t
        elif end_pat in line and t0 is not None:
            span = t - t0
    return span


class Bench:
    def __init__(self, args, registry) -> None:
        self.args = args
        self.registry = registry
        self.work: Path = args.work
        self.logs = self.work / "logs"
        self.repo = self.work / "repo"
        self.caches = self.work / "caches"
        self.results: Dict[str, dict] = {}
        self.env = clean_env()

    def save(self) -> None:
        (self.work / "results.json").write_text(json.dumps(self.results, indent=2))

    def step(self, name: str, argv, key: dict, **kw) -> bool:
        r = measure(name, argv, log_dir=self.logs, check=False, timeout=self.args.timeout, env=kw.pop("env", self.env), **kw)
        key.update({"wall": r.wall, "rx": r.rx, "rc": r.returncode, "log": str(r.log), "command": shlex.join(r.argv)})
        self.save()
        return r.ok

    def pants(self, goal: str, address: str) -> List[str]:
        home = self.caches / "home"
        home.mkdir(parents=True, exist_ok=True)
        return [str(REPO_ROOT / "pants"), "--pantsd", f"--named-caches-dir={self.caches / 'named'}",
                f"--local-store-dir={self.caches / 'store'}", f'--subprocess-environment-env-vars=+["HOME={home}"]', goal, address]

    def registry_delta(self, fn) -> dict:
        before, mark = self.registry.stored_blob_bytes(), self.registry.mark()
        ok = fn()
        reqs = self.registry.requests_since(mark)
        return {"ok": ok, "stored_growth": self.registry.stored_blob_bytes() - before,
                "writes": sum(1 for q in reqs if q.method in ("PUT", "PATCH", "POST")),
                "heads": sum(1 for q in reqs if q.method == "HEAD")}

    # -- fastpex through Pants -------------------------------------------------------------
    def run_app(self, app: str) -> None:
        res = self.results.setdefault(app, {})
        address = f"src/{app}:image"
        dist = self.repo / "dist" / f"src.{app}" / "image"
        res["cold"] = {}
        if not self.step(f"{app}-cold", self.pants("package", address), res["cold"], cwd=self.repo):
            return
        res["cold"]["parts"] = layout_parts(dist)
        res["cold"]["dist_size"] = dir_size(dist)
        res["publish1"] = {}
        res["publish1"].update(self.registry_delta(lambda: self.step(f"{app}-publish1", self.pants("publish", address), res["publish1"], cwd=self.repo)))
        edit(self.repo / "src" / app / "main.py")
        res["source"] = {}
        if not self.step(f"{app}-source", self.pants("package", address), res["source"], cwd=self.repo):
            return
        log = Path(res["source"]["log"])
        res["source"]["app_process"] = pants_log_span(log, "Starting: Build the image", "Completed: Build the image")
        res["source"]["dist_write"] = pants_log_span(log, "Completed: Build the image", "Wrote dist/")
        res["source"]["parts"] = parts = layout_parts(dist)
        res["publish2"] = {}
        res["publish2"].update(self.registry_delta(lambda: self.step(f"{app}-publish2", self.pants("publish", address), res["publish2"], cwd=self.repo)))
        res["publish2"]["app_config_manifest"] = parts["app_layer_size"] + parts["config_size"] + parts["manifest_size"]
        self.save()

    # -- the core's compression alone --------------------------------------------------------
    def compress(self) -> None:
        sys.path.insert(0, str(self.args.src))
        from fastpex.core.image.tarball import GzipLayerSink

        dist = self.repo / "dist" / "src.app" / "image"
        parts = layout_parts(dist)
        scratch = self.work / "compress"
        rmtree(scratch)
        scratch.mkdir(parents=True)
        tars = []
        for layer in parts["layers"]:
            if layer["name"] in ("app", "base"):
                continue
            out = scratch / layer["digest"].split(":")[1]
            with gzip.open(dist / "blobs" / "sha256" / out.name, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tars.append(out)
        raw = sum(t.stat().st_size for t in tars)
        t0 = time.perf_counter()
        gz = 0
        with open(os.devnull, "wb") as null:
            for t in tars:
                sink = GzipLayerSink(null, 6)
                with open(t, "rb") as f:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        sink.write(chunk)
                gz += sink.finish().size
        wall = time.perf_counter() - t0
        self.results["compress"] = {"wall": wall, "layers": len(tars), "tar_bytes": raw, "gz_bytes": gz, "rc": 0}
        print(f"compress: {len(tars)} layers, {fmt_bytes(raw)} tar -> {fmt_bytes(gz)} in {wall:.2f} s", flush=True)
        rmtree(scratch)
        self.save()

    # -- the user's recipe without a Docker engine ----------------------------------------------
    def baseline(self) -> None:
        b = self.work / "baseline"
        rmtree(b)
        b.mkdir(parents=True)
        res = self.results.setdefault("baseline", {})
        core = [self.args.python, "-m", "fastpex"]
        cenv = clean_env({"PYTHONPATH": str(self.args.src)})
        pex = b / "app.pex"
        build = core + ["build", "--lock", self.repo / "3rdparty" / "ml-core.lock", "--target", "linux_x86_64-cp311",
                        "--requirement", "torch==2.9.1", "--requirement", "transformers", "--offline", "--cache-dir", self.args.pex_cache,
                        "--sources", self.repo / "src", "--entry-point", "app.main:main", "--layout", "packed", "--include-tools", "--output", pex]
        res["pex1"] = {}
        if not self.step("baseline-pex1", build, res["pex1"], env=cenv):
            return
        self.step("baseline-base", core + ["image-base", "--python", PY311, "--output", b / "layout", "--tag", "base"], {}, env=cenv)
        penv = clean_env({"PEX_TOOLS": "1", "PEX_ROOT": str(b / "pex_root")})
        umoci = lambda src, frm, to: ["umoci", "insert", "--image", f"{b / 'layout'}:{frm}", "--tag", to, src, "/app/venv"]  # noqa: E731
        push = lambda tag: ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{b / 'layout'}:{tag}", f"docker://{self.registry.address}/baseline:{tag}"]  # noqa: E731
        steps = [
            ("venv_deps", [PY311, pex, "venv", "--scope=deps", b / "deps"], penv),
            ("venv_srcs", [PY311, pex, "venv", "--scope=srcs", b / "srcs1"], penv),
            ("umoci_deps", umoci(b / "deps", "base", "deps"), self.env),
            ("umoci_srcs", umoci(b / "srcs1", "deps", "v1"), self.env),
        ]
        for key, argv, env in steps:
            res[key] = {}
            if not self.step(f"baseline-{key}", argv, res[key], env=env):
                return
        res["push1"] = {}
        res["push1"].update(self.registry_delta(lambda: self.step("baseline-push1", push("v1"), res["push1"])))
        rmtree(b / "deps")  # 7 GB
        # the packed PEX's starts, same run (PEX_ROOT already holds the installed wheels: the
        # first is pex's venv/link step, the second is the "second start")
        for key in ("pex_start_a", "pex_start_b"):
            res[key] = {}
            self.step(f"baseline-{key}", [PY311, pex], res[key], env=clean_env({"PEX_ROOT": str(b / "pex_root")}))
        edit(self.repo / "src" / "app" / "main.py")
        res["pex2"] = {}
        self.step("baseline-pex2", build, res["pex2"], env=cenv)
        for key, argv, env in [("venv_srcs2", [PY311, pex, "venv", "--scope=srcs", b / "srcs2"], penv),
                               ("umoci_srcs2", umoci(b / "srcs2", "deps", "v2"), self.env)]:
            res[key] = {}
            if not self.step(f"baseline-{key}", argv, res[key], env=env):
                return
        res["push2"] = {}
        res["push2"].update(self.registry_delta(lambda: self.step("baseline-push2", push("v2"), res["push2"])))
        res["layout_size"] = dir_size(b / "layout")
        rmtree(b / "pex_root")
        self.save()

    # -- first start of the container ------------------------------------------------------------
    def start(self) -> None:
        dist = self.repo / "dist" / "src.app" / "image"
        bundle = self.work / "bundle"
        if any(os.path.ismount(bundle / "rootfs" / d) for d in ("dev", "proc")):
            raise SystemExit(f"{bundle} still has a bind mount: umount it first")
        rmtree(bundle)
        res = self.results.setdefault("start", {})
        res["unpack"] = {}
        if not self.step("start-unpack", ["umoci", "unpack", "--image", f"{dist}:{TAG}", bundle], res["unpack"]):
            return
        config = json.loads((bundle / "config.json").read_text())["process"]
        env = dict(e.partition("=")[::2] for e in config.get("env") or [])
        rootfs = str(bundle / "rootfs")
        argv = config["args"]
        res["argv"] = argv
        # A container runtime gives the process /dev and /proc (torch opens /dev/urandom); the
        # minimal base has neither, so bind-mount the host's, as runc's defaults would provide.
        mounts = []
        for d in ("dev", "proc"):
            (bundle / "rootfs" / d).mkdir(exist_ok=True)
            if subprocess.run(["mount", "--bind", f"/{d}", str(bundle / "rootfs" / d)], check=False).returncode == 0:
                mounts.append(bundle / "rootfs" / d)
        try:
            self._starts(res, argv, env, rootfs, config)
        finally:
            for m in mounts:
                subprocess.run(["umount", str(m)], check=False)
        if any(os.path.ismount(m) for m in mounts):
            print(f"left {bundle} in place: a bind mount is still there", flush=True)
        else:
            rmtree(bundle)
        self.save()

    def _starts(self, res: dict, argv: List[str], env: Dict[str, str], rootfs: str, config: dict) -> None:
        subprocess.run(["sync"], check=False)
        for key in ("first", "second"):
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    preexec_fn=lambda: (os.chroot(rootfs), os.chdir(config.get("cwd") or "/")))
            assert proc.stdout is not None
            line = proc.stdout.readline().decode(errors="replace").strip()
            first_output = time.perf_counter() - t0
            rest = proc.stdout.read()
            rc = proc.wait()
            res[key] = {"wall": first_output, "rc": rc, "output": line[:200], "rest": rest.decode(errors="replace")[-500:]}
            print(f"start {key}: {first_output:.2f} s rc={rc} {line[:120]}", flush=True)

    # -- reproducibility ---------------------------------------------------------------------------
    def repro(self) -> None:
        res = self.results.setdefault("repro", {})
        base = self.work / "baseline" / "layout"
        cenv = clean_env({"PYTHONPATH": str(self.args.src)})
        if not (base / "index.json").exists():
            self.step("repro-base", [self.args.python, "-m", "fastpex", "image-base", "--python", PY311, "--output", base, "--tag", "base"], {}, env=cenv)
        for app, lock, reqs in self.args.repro_apps:
            digests = []
            for root in ("a", "b"):
                cache = self.work / "repro" / f"{app}-{root}"
                rmtree(cache)
                seed_artifacts(self.args.artifacts, cache)
                out = self.work / "repro" / f"{app}-{root}.oci"
                rmtree(out)
                argv = [self.args.python, "-m", "fastpex", "image", "--lock", self.repo / "3rdparty" / lock, "--target", "linux_x86_64-cp311",
                        *[a for r in reqs for a in ("--requirement", r)], "--base", f"oci:{base}:base", "--sources", self.repo / "src",
                        "--entry-point", f"{app}.main:main", "--output", out, "--tag", TAG, "--cache-dir", cache, "--python", PY311]
                key = res.setdefault(f"{app}-{root}", {})
                if self.step(f"repro-{app}-{root}", argv, key, env=cenv):
                    key["manifest_digest"] = layout_parts(out)["manifest_digest"]
                    digests.append(key["manifest_digest"])
                rmtree(out)
                rmtree(cache)
            res[f"{app}-same"] = len(digests) == 2 and digests[0] == digests[1]
            self.save()


def stop_pantsd(repo: Path) -> None:
    """Stop this repo's pantsd by the pid it recorded (never by a name pattern)."""
    for pid_file in list((repo / ".pids").rglob("pantsd/pid")) if (repo / ".pids").exists() else []:
        try:
            os.kill(int(pid_file.read_text().strip()), 15)
        except (ValueError, OSError):
            pass
    time.sleep(2)


def build_report(work: Path, results: dict) -> None:
    report = Report("image_bench", "Container images: fastpex_image vs pex venv + umoci + skopeo, linux x86_64 / CPython 3.11")
    commit = work / "src-snapshot" / "COMMIT"
    if commit.exists():
        report.add_text(f"fastpex sources used by Pants: `git archive` of commit {commit.read_text().strip()}.")
    w = lambda d: d.get("wall") if isinstance(d, dict) and d.get("rc") == 0 else None  # noqa: E731
    rows = []
    for app in ("app", "small"):
        r = results.get(app)
        if not r:
            continue
        p1, p2, s = r.get("publish1", {}), r.get("publish2", {}), r.get("source", {})
        rows.append([app, fmt_s(w(r.get("cold", {}))), fmt_bytes(r.get("cold", {}).get("rx")), fmt_bytes(r.get("cold", {}).get("dist_size")),
                     fmt_s(w(p1)), fmt_bytes(p1.get("stored_growth")), fmt_s(w(s)), fmt_s(s.get("app_process")), fmt_s(s.get("dist_write")),
                     fmt_s(w(p2)), fmt_bytes(p2.get("stored_growth")), str(p2.get("writes")), fmt_bytes(p2.get("app_config_manifest"))])
    report.add_raw_table("fastpex_image through Pants (pantsd)", ["app", "cold package", "cold bytes rx", "layout size", "publish 1", "registry growth",
                                                                  "source-only package", "app process", "dist/ write", "publish 2",
                                                                  "registry growth", "POST/PUT/PATCH", "app layer+config+manifest"], rows)
    comps: List[Comparison] = []
    app, small, base = results.get("app", {}), results.get("small", {}), results.get("baseline", {})
    if app and small:
        a, sm = w(app.get("source", {})), w(small.get("source", {}))
        comps.append(Comparison("source-only package, torch vs one-dep app", "s", a, sm, "one-dep app", "torch ≤2x (ratio ≥0.5x)",
                                None if a is None or sm is None else a <= 2 * sm))
    if app and base:
        fp = (w(app.get("source", {})) or 0) + (w(app.get("publish2", {})) or 0)
        bl = sum(w(base.get(k, {})) or 0 for k in ("pex2", "venv_srcs2", "umoci_srcs2", "push2"))
        comps.append(Comparison("source-only change: rebuild + push", "s", fp, bl, "pex + venv srcs + umoci + skopeo"))
        comps.append(Comparison("source-only change: bytes into the registry", "B", app.get("publish2", {}).get("stored_growth"),
                                base.get("push2", {}).get("stored_growth"), "skopeo push"))
        fc = w(app.get("cold", {}))
        bc = sum(w(base.get(k, {})) or 0 for k in ("pex1", "venv_deps", "venv_srcs", "umoci_deps", "umoci_srcs", "push1"))
        comps.append(Comparison("cold image build + first push", "s", (fc or 0) + (w(app.get("publish1", {})) or 0), bc,
                                "pex (layers cached) + venv + umoci + skopeo"))
    comp = results.get("compress")
    if comp:
        report.add_text(f"Compression alone (core GzipLayerSink, level 6, {comp['layers']} dependency layers, "
                        f"{fmt_bytes(comp['tar_bytes'])} of tar -> {fmt_bytes(comp['gz_bytes'])}): {comp['wall']:.2f} s.")
    st = results.get("start", {})
    if st.get("first"):
        ps = w(base.get("pex_start_b", {}))
        f1 = st["first"]["wall"] if st["first"]["rc"] == 0 else None
        comps.append(Comparison("container first start (umoci unpack'd, chroot) vs packed PEX second start", "s", f1, ps,
                                "packed PEX 2nd start", "≤1.3x (ratio ≥0.77x)", None if f1 is None or ps is None else f1 <= 1.3 * ps))
    if comps:
        report.add_table("fastpex vs the recipe without a Docker engine", comps)
    report.add_text("Raw results: " + json.dumps({k: v for k, v in results.items()}, default=str)[:6000])
    report.write()


def fmt_s(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastpex-bench/image"))
    ap.add_argument("--lock", type=Path, default=Path("/tmp/fastpex-bench/lock/pants-fastpex-repo/3rdparty/ml-core.lock"))
    ap.add_argument("--small-lock", type=Path, default=Path("/tmp/fastpex-bench/pack-prof/small.lock"),
                    help="humanize locked by pack_bench.py (`python -m fastpex lock ... --manylinux manylinux2014`)")
    ap.add_argument("--artifacts", type=Path, default=Path("/tmp/fastpex-bench/faststart/cache/artifacts"),
                    help="a fastpex cache's artifacts/ holding the lock's wheels (hard-linked into every cache root)")
    ap.add_argument("--pex-cache", type=Path, default=Path("/tmp/fastpex-bench/faststart/cache"),
                    help="fastpex cache whose layers build the baseline's packed PEX")
    ap.add_argument("--python", default="/tmp/dev/bin/python")
    ap.add_argument("--apps", nargs="+", default=["app", "small"], choices=["app", "small"])
    ap.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    ap.add_argument("--repro-app", nargs="+", default=["small", "app"], choices=["small", "app"])
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rf = args.work / "results.json"
    if args.report_only:
        build_report(args.work, json.loads(rf.read_text()))
        return 0
    args.src = snapshot_sources(args.work)
    sys.path.insert(0, str(args.src))
    from fastpex.testing.registry_fixture import DockerRegistry

    reqs = {"app": ("ml-core.lock", ["torch==2.9.1", "transformers"]), "small": ("small.lock", ["humanize"])}
    args.repro_apps = [(a, *reqs[a]) for a in args.repro_app if a in args.apps]
    registry = DockerRegistry(args.work / "registry")
    rmtree(args.work / "registry" / "storage")
    with registry:
        bench = Bench(args, registry)
        bench.results["_registry"] = {"address": registry.address}
        if "pants" in args.steps or not (bench.repo / "dist").exists():
            rmtree(bench.caches)
            write_repo(bench.repo, args.lock, args.small_lock, args.src)
            add_image_targets(bench.repo, registry.address)
            seed_artifacts(args.artifacts, bench.caches / "named" / "fastpex")
        elif rf.exists():  # later steps on the images of an earlier run: keep its results
            bench.results = json.loads(rf.read_text())
        try:
            if "pants" in args.steps:
                for app in args.apps:
                    print(f"\n===== {app}  ({time.strftime('%H:%M:%S')})", flush=True)
                    bench.run_app(app)
            if "app" in args.apps:
                for name in ("compress", "baseline", "start"):
                    if name in args.steps:
                        print(f"\n===== {name}  ({time.strftime('%H:%M:%S')})", flush=True)
                        try:
                            getattr(bench, name)()
                        except Exception as e:  # a partial run still reports
                            bench.results.setdefault(name, {})["error"] = repr(e)
                            print(f"{name} failed: {e!r}", flush=True)
            if "repro" in args.steps:
                bench.repro()
        finally:
            stop_pantsd(bench.repo)
            bench.save()
    build_report(args.work, bench.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
