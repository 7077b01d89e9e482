"""Benchmark generation on a Ray cluster: scaling with nodes, Ray's overhead, work lost with a killed node.

    .venv/bin/python bench/cluster.py [--examples 240] [--shard-jobs 4] [--latency 0.25] [--slots 12] [--kills 3]

A local Ray cluster on loopback (taskling.cluster.local.LocalCluster, as the tests use):
a head without CPUs and 1-CPU worker nodes, one TeacherWorker actor per node.
The teacher is taskling.teacher.faults.FaultServer in its own process, no fault rates,
its toy reply (grounded in the request's <document>), made to act like a GPU
box with `--slots` K slots: each request holds a slot for `--latency` seconds,
requests over K wait for one. Task: the tests' tiny classify task
(tests/conftest.py write_workspace), one example per teacher call. Every run
is `taskling.stages.generate.run` on a fresh copy of one ingested workspace
(cold call cache), same budget, same server.

1. scaling: 1, 2 and 4 worker nodes (and 3, part 3's run without a kill):
   examples/s and teacher requests/s over the stage's wall time, and "steady"
   requests/s from the server's first request to its last reply (start-up left
   out); the server's max_in_flight. With shard_jobs=4 in flight per node, K=12
   slots are the bottleneck from 3 nodes on (4-node run: 16 in flight > 12).
2. overhead: single-machine generate (teacher.concurrency = shard_jobs) vs the
   1-node cluster, alternated A B A B, medians. Target: < 10%.
3. kill: 3 worker nodes, one killed at a seeded random moment of generation,
   `--kills` trials: lost_items vs shard_jobs (target: at most one shard), the
   budget met in full, no job key twice in the journal.

CPU time of the driver, the Ray processes and the server and the machine's busy
share are measured per run (psutil), to say what the bottleneck is.
Writes bench/results/cluster.json.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

# One machine: every Ray process binds and connects on loopback (set before ray is imported).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from taskling.cluster.local import LocalCluster  # noqa: E402  (a multi-node Ray cluster on loopback)
RUN = "tiny-router"


# -- the teacher: FaultServer with K slots, in its own process --------------------------------------------------
class Slots:
    """A `reply` for FaultServer: the toy answer, after holding one of `k` slots for `latency` s."""

    def __init__(self, k: int, latency: float):
        self.k, self.latency = k, latency
        self.sem = threading.BoundedSemaphore(k)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.serving = self.waiting = self.max_serving = self.max_waiting = self.requests = 0
            self.busy_s, self.first, self.last = 0.0, None, None
            self.zero_at, self.gaps = None, []  # moments with no request at the server, between requests
            self.occupancy, self.changed = [0.0] * (self.k + 1), None  # seconds spent with n requests in service
            self.seen: dict[str, int] = {}

    def _change(self, now: float) -> None:
        """Called under the lock just before `serving` changes."""
        if self.changed is not None:
            self.occupancy[self.serving] += now - self.changed
        self.changed = now

    def reply(self, req: dict) -> str:
        from taskling.teacher.faults import toy_reply

        digest = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
        text = toy_reply(req, digest)
        with self.lock:
            self.waiting += 1
            self.max_waiting = max(self.max_waiting, self.waiting)
            self.seen[digest] = self.seen.get(digest, 0) + 1
        with self.sem:
            t0 = time.monotonic()
            with self.lock:
                self.waiting -= 1
                if self.serving == 0 and self.waiting == 0 and self.zero_at is not None:
                    self.gaps.append(t0 - self.zero_at)
                self._change(t0)
                self.serving += 1
                self.max_serving = max(self.max_serving, self.serving)
                self.first = t0 if self.first is None else self.first
            time.sleep(self.latency)
            with self.lock:
                self.last = time.monotonic()
                self._change(self.last)
                self.serving -= 1
                self.requests += 1
                self.busy_s += self.last - t0
                if self.serving == 0 and self.waiting == 0:
                    self.zero_at = self.last
        return text

    def snapshot(self) -> dict:
        with self.lock:
            span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
            gaps = sorted(self.gaps)
            return {"requests": self.requests, "distinct_requests": len(self.seen),
                    "asked_twice": sum(n - 1 for n in self.seen.values() if n > 1),
                    "max_serving": self.max_serving, "max_waiting_for_slot": self.max_waiting,
                    "avg_serving": round(self.busy_s / span, 2) if span > 0 else None,
                    "slot_use": round(self.busy_s / (self.k * span), 3) if span > 0 else None,
                    "first_t": self.first, "last_t": self.last, "span_s": round(span, 3),
                    "idle_gaps": len(gaps), "idle_s": round(sum(gaps), 3),
                    "idle_gap_median_ms": round(1000 * gaps[len(gaps) // 2], 1) if gaps else None,
                    "idle_gap_max_ms": round(1000 * gaps[-1], 1) if gaps else None,
                    # share of the time from first request to last reply with n requests in service
                    "in_service_share": {n: round(t / span, 3) for n, t in enumerate(self.occupancy)
                                         if span > 0 and t / span >= 0.005}}


def serve(port: int, slots: int, latency: float) -> None:
    """The --serve mode: a server on `port`, driven by lines on stdin (reset, stats, quit)."""
    import psutil

    from taskling.teacher.faults import FaultServer

    state = Slots(slots, latency)
    srv = FaultServer(reply=state.reply, port=port).start()
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    me = psutil.Process()
    print(json.dumps({"url": srv.url}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "reset":  # a new server on the same port: its max_in_flight starts from 0
            srv.stop()
            state.reset()
            srv = FaultServer(reply=state.reply, port=port).start()
            print(json.dumps({"ok": True}), flush=True)
        elif cmd == "stats":
            st = srv.stats
            cpu = me.cpu_times()
            print(json.dumps({"max_in_flight": st["max_in_flight"], "ok": st["ok"], **state.snapshot(),
                              "cpu_s": round(cpu.user + cpu.system, 3)}), flush=True)
        elif cmd == "quit":
            break
    srv.stop()


class Teacher:
    """The server process, seen from the driver."""

    def __init__(self, slots: int, latency: float):
        self.slots, self.latency = slots, latency
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "--slots", str(slots),
                                      "--latency", str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        self.url = self._read()["url"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the teacher server exited (code {self.proc.poll()})")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# -- measuring a run ----------------------------------------------------------------------------------------------
class Sampler:
    """Every `every` s, in a thread: the machine's CPU times and the CPU seconds of the driver, of the Ray
    processes (the driver's other descendants: head, raylets, workers) and of the server; windows of the
    run are read from these samples afterwards."""

    def __init__(self, server_pid: int, every: float = 0.5):
        import psutil

        self.ps, self.server_pid, self.every = psutil, server_pid, every
        self.me = psutil.Process()
        self.seen: dict[int, float] = {}  # pid: CPU s last seen (a dead process keeps what it used)
        self.group: dict[int, str] = {}   # pid: raylet, gcs, workers (Python actors), agents/other
        self.samples: list[tuple] = []
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        server = 0.0
        for p in self.me.children(recursive=True):
            try:
                t = p.cpu_times()
            except self.ps.Error:
                continue
            if p.pid == self.server_pid:
                server = t.user + t.system
            else:
                self.seen[p.pid] = t.user + t.system
                if p.pid not in self.group:
                    self.group[p.pid] = self._kind(p)
        c = self.ps.cpu_times()
        total = sum(getattr(c, f) for f in c._fields if f not in ("guest", "guest_nice"))
        d = self.me.cpu_times()
        groups = dict.fromkeys(("raylet", "gcs", "workers", "other"), 0.0)
        for pid, v in self.seen.items():
            groups[self.group.get(pid, "other")] += v
        self.samples.append((time.monotonic(), total, total - c.idle - getattr(c, "iowait", 0.0),
                             d.user + d.system, sum(self.seen.values()), server, groups))

    def _kind(self, p) -> str:
        try:
            name, cmd = p.name(), " ".join(p.cmdline())
        except self.ps.Error:
            return "other"
        if "raylet" in name or cmd.split(" ")[0].endswith("/raylet"):
            return "raylet"
        if "gcs_server" in name or "gcs_server" in cmd:
            return "gcs"
        if name.startswith("ray::") or cmd.startswith("ray::") or "default_worker.py" in cmd:
            return "workers"
        return "other"

    def _loop(self) -> None:
        while not self.stop_ev.wait(self.every):
            self._sample()

    def start(self) -> None:
        self._sample()
        self.thread.start()

    def stop(self) -> None:
        self.stop_ev.set()
        self.thread.join()
        self._sample()

    def window(self, a: float | None, b: float | None) -> dict | None:
        """Shares between monotonic times a and b (the samples just inside): cores busy per group."""
        if a is None or b is None:
            return None
        inside = [x for x in self.samples if a - 1e-3 <= x[0] <= b + 1e-3]
        if len(inside) < 2:
            return None
        x0, x1 = inside[0], inside[-1]
        span = x1[0] - x0[0]
        if span <= 0:
            return None
        cores = os.cpu_count() or 1
        return {"span_s": round(span, 2), "machine_busy": round((x1[2] - x0[2]) / max(x1[1] - x0[1], 1e-9), 3),
                "driver_cores": round((x1[3] - x0[3]) / span, 3), "ray_cores": round((x1[4] - x0[4]) / span, 3),
                "server_cores": round((x1[5] - x0[5]) / span, 3), "cores": cores,
                "ray_cores_by_process": {g: round((x1[6][g] - x0[6][g]) / span, 3) for g in x1[6]}}


def alive(cluster: LocalCluster) -> int:
    return sum(1 for n in cluster.ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1)


def fresh_copy(base: Path, dest: Path) -> Path:
    """The ingested workspace again, with a cold call cache."""
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("calls.db*"))
    return dest / "taskling.yaml"


def generate(path: Path, teacher: Teacher, cluster: LocalCluster | None, killer=None,
             overrides: list[str] | None = None) -> dict:
    """One generate stage on `path` (on the cluster if given): wall time, counts, rates, CPU, server stats."""
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.core.workspace import Context

    teacher.ask("reset")
    cfg = load_config(path, overrides or [])
    session = None
    if cluster is not None:
        from taskling.cluster import RayExecutor

        session = RayExecutor(cluster.address, cfg.cluster)
    from taskling.core.executor import LocalExecutor

    ctx = Context(cfg, console=Console(stderr=True, quiet=True), executor=session or LocalExecutor())
    meter = Sampler(teacher.proc.pid)
    meter.start()
    if killer:
        killer.start(time.perf_counter())
    t0, m0 = time.perf_counter(), time.monotonic()
    try:
        importlib.import_module("taskling.stages.generate").run(ctx)
        wall, m1 = time.perf_counter() - t0, time.monotonic()
    finally:
        meter.stop()
        if killer:
            killer.finish()
        if session is not None:
            session.close()
    m = json.loads((ctx.stage_dir("generate") / "manifest.json").read_text())
    srv = teacher.ask("stats")
    c = m["counts"]
    first, last = srv.pop("first_t"), srv.pop("last_t")
    out = {"wall_s": round(wall, 2), "examples": c["examples"], "jobs": c["jobs"], "new_calls": c["new_calls"],
           "failed_jobs": c["failed_jobs"], "examples_per_s": round(c["examples"] / wall, 2),
           "requests_per_s": round(c["new_calls"] / wall, 2), "stopped": m["stopped"],
           # from the first request the server took to its last reply: the stage's start-up left out
           "first_request_at_s": round(first - m0, 2) if first else None,
           "after_last_reply_s": round(m1 - last, 2) if last else None,
           "steady_requests_per_s": round(srv["requests"] / srv["span_s"], 2) if srv["span_s"] else None,
           "server": {k: v for k, v in srv.items() if k not in ("ok", "cpu_s")},
           "cpu": {"whole": meter.window(m0, m1), "start_up": meter.window(m0, first),
                   "steady": meter.window(first, last)}}
    if "cluster" in m:
        cl = m["cluster"]
        joined = [e["t"] for e in cl["events"] if e["event"] == "joined"]
        out["cluster"] = {"nodes": [{k: r[k] for k in ("node", "shards", "items", "busy_s", "lost_shards",
                                                           "lost_items", "left")} for r in cl["nodes"]],
                          "shards": cl["shards"], "rescheduled_shards": cl["rescheduled_shards"],
                          "lost_items": cl["lost_items"], "workers_ready_s": max(joined) if joined else None,
                          "events": cl["events"], "rescheduled": cl["rescheduled"]}
    out["_ctx"] = ctx  # for the checks of the kill trials; dropped before writing
    return out


def strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the faster of two)."""
    return sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]


# -- the kill trials ----------------------------------------------------------------------------------------------
class Killer:
    """Kills one node (seeded choice) at a seeded random moment once the generation's journal exists (it is
    opened right after the teacher workers are ready, so the kill falls while the nodes work)."""

    def __init__(self, cluster: LocalCluster, journal: Path, seed: int, window_s: float, kill: bool = True):
        self.cluster, self.journal, self.rng = cluster, journal, random.Random(seed)
        self.window_s, self.info, self.kill = window_s, {}, kill
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self.thread.start()

    def _run(self) -> None:
        while not self.journal.exists() and not self.done.is_set():
            time.sleep(0.01)
        self.info["journal_open_at_s"] = round(time.perf_counter() - self.t0, 2)
        if not self.kill:
            return
        delay = self.rng.uniform(0.0, self.window_s)
        victim = self.rng.randrange(len(self.cluster.nodes))
        if self.done.wait(delay):
            self.info["missed"] = "the generation ended first"
            return
        self.info.update({"at_s": round(time.perf_counter() - self.t0, 2), "delay_after_journal_open_s": round(delay, 2),
                          "journaled_at_kill": self.journal.read_text().count("\n"), "node_index": victim})
        self.cluster.kill(self.cluster.nodes[victim])

    def finish(self) -> None:
        self.done.set()
        self.thread.join(timeout=60)


def check_trial(run: dict, budget: int) -> dict:
    from taskling.teacher.calls import CallLog
    from taskling.core.workspace import read_jsonl

    ctx = run["_ctx"]
    out = ctx.stage_dir("generate")
    keys = [json.loads(line)["key"] for line in (out / "journal.jsonl").read_text().splitlines()]
    ids = [e["id"] for e in read_jsonl(out / "examples.jsonl")]
    with CallLog(ctx.ws.calls_db) as log:
        logged = log.totals(purpose="generate")["calls"]
    return {"examples_eq_budget": run["examples"] == budget, "duplicate_job_keys": len(keys) - len(set(keys)),
            "duplicate_example_ids": len(ids) - len(set(ids)), "calls_logged": logged,
            "calls_logged_eq_jobs": logged == run["jobs"]}


# -- tables -------------------------------------------------------------------------------------------------------
def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def lingering() -> dict:
    """Ray processes still running on this machine (there should be none)."""
    out = {}
    for name in ("raylet", "gcs_server", "default_worker", "ray::"):
        p = subprocess.run(f"ps aux | grep -F -- '{name}' | grep -v grep | wc -l", shell=True, capture_output=True,
                           text=True)
        out[name] = int(p.stdout.strip() or 0)
    return out


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=240)
    ap.add_argument("--shard-jobs", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.25, help="seconds a request holds a server slot")
    ap.add_argument("--slots", type=int, default=12, help="requests the teacher server serves at once")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.port, args.slots, args.latency)

    sys.path.insert(0, str(ROOT / "tests"))
    import psutil
    import ray
    from conftest import build_tiny_model, write_workspace
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.core.workspace import Context

    t_bench = time.perf_counter()
    k, budget = args.shard_jobs, args.examples
    res: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "ray": ray.__version__, "platform": platform.platform()},
        "command": "bench/cluster.py " + " ".join(sys.argv[1:]),
        "setup": {"examples": budget, "examples_per_call": 1, "shard_jobs": k, "teacher_concurrency": k,
                  "server_latency_s": args.latency, "server_slots": args.slots, "node_cpus": 1,
                  "workers_per_node": 1, "task": "tests/conftest.py tiny classify task (tiny-router)",
                  "teacher": "openai backend -> taskling.teacher.faults.FaultServer toy reply in its own process, no "
                             "faults, K slots held `latency` s each",
                  "cold_cache": "every run on a fresh copy of one ingested workspace, without calls.db"},
        "lingering_before": lingering()}
    teacher = cluster = None
    tmp = Path(tempfile.mkdtemp(prefix="taskling-bench-cluster-"))
    n_run = [0]
    journal_rel = Path("runs") / RUN / "round-0" / "generate" / "journal.jsonl"

    def copy() -> Path:
        n_run[0] += 1
        return fresh_copy(tmp / "base", tmp / f"run{n_run[0]:02d}")

    try:
        teacher = Teacher(args.slots, args.latency)
        model = build_tiny_model(tmp / "tiny-llama")
        (tmp / "base").mkdir()
        base = write_workspace(tmp / "base", model, teacher__backend="openai", teacher__model="toy-teacher",
                               teacher__base_url=teacher.url, teacher__concurrency=k, teacher__timeout_s=30.0,
                               generate__examples_per_call=1, budget__examples=budget, cluster__shard_jobs=k)
        cfg = load_config(base, [])
        importlib.import_module("taskling.stages.ingest").run(Context(cfg, console=Console(stderr=True, quiet=True)))
        print(f"teacher {teacher.url}: {args.slots} slots x {args.latency} s; budget {budget} examples; "
              f"shard_jobs {k}", flush=True)

        # warm-up (imports, page cache, the server's first connections), not measured
        generate(copy(), teacher, None, overrides=["budget.examples=32"])

        # 1 node: the overhead pairs A B A B (single machine, 1-node cluster)
        cluster = LocalCluster(1)
        res["startup"] = {"cluster_head_and_1_node_s": cluster.startup_s}
        print(f"ray cluster up (head + 1 node) in {cluster.startup_s} s", flush=True)
        pairs: dict[str, list] = {"single": [], "cluster_1": []}
        for rep in range(2):
            for name, cl in (("single", None), ("cluster_1", cluster)):
                r = generate(copy(), teacher, cl)
                pairs[name].append(r)
                print(f"overhead {name} #{rep + 1}: {r['wall_s']} s, {r['examples_per_s']} ex/s", flush=True)
        scaling = {1: median_run(pairs["cluster_1"])}
        res["startup"]["add_1_node_s"] = cluster.add(1)
        scaling[2] = generate(copy(), teacher, cluster)
        print(f"2 nodes: {scaling[2]['wall_s']} s", flush=True)
        res["startup"]["add_2_nodes_s"] = cluster.add(2)
        scaling[4] = generate(copy(), teacher, cluster)
        print(f"4 nodes: {scaling[4]['wall_s']} s", flush=True)
        cluster.close()
        cluster = None

        # 3 nodes: once without a kill (also the 3-node point of the scaling), then one node killed per trial
        cluster = LocalCluster(3)
        res["startup"]["cluster_head_and_3_nodes_s"] = cluster.startup_s
        path = copy()
        watch = Killer(cluster, path.parent / journal_rel, 0, 0.0, kill=False)
        clean = generate(path, teacher, cluster, watch)
        clean["journal_open_at_s"] = watch.info.get("journal_open_at_s")
        scaling[3] = clean
        window = 0.8 * (clean["wall_s"] - (clean["journal_open_at_s"] or 0.0))
        print(f"3 nodes, no kill: {clean['wall_s']} s; kills fall in the {window:.1f} s after the journal opens",
              flush=True)
        trials = []
        for i in range(args.kills):
            if alive(cluster) < 3:
                res["startup"].setdefault("re_add_1_node_s", []).append(cluster.add(3 - alive(cluster)))
            path = copy()
            killer = Killer(cluster, path.parent / journal_rel, args.seed + i, window_s=window)
            r = generate(path, teacher, cluster, killer)
            r["kill"] = killer.info
            r["checks"] = check_trial(r, budget)
            r["shard_jobs"] = k
            trials.append(r)
            print(f"kill trial {i + 1}: {killer.info}, lost_items {r['cluster']['lost_items']}, "
                  f"rescheduled {r['cluster']['rescheduled_shards']}, {r['wall_s']} s", flush=True)
        cluster.close()
        cluster = None
    finally:
        if cluster is not None:
            cluster.close()
        if teacher is not None:
            teacher.close()
        shutil.rmtree(tmp, ignore_errors=True)

    # -- results ----------------------------------------------------------------------------------------------
    def ideal(nodes: int) -> float:
        return min(nodes * k, args.slots) / args.latency

    res["scaling"] = {"note": ("1_nodes is the faster of the two 1-node runs of the overhead pairs, 3_nodes the "
                               "kill section's run without a kill (a fresh 3-node cluster); ideal = min(nodes x "
                               "shard_jobs, slots) / latency; steady = server requests / (last reply - first "
                               "request), i.e. without the stage's start-up (worker actors) and end")}
    for n in sorted(scaling):
        r = scaling[n]
        res["scaling"][f"{n}_nodes"] = {**strip(r), "ideal_requests_per_s": ideal(n),
                                        "share_of_ideal": round(r["requests_per_s"] / ideal(n), 3),
                                        "steady_share_of_ideal": round((r["steady_requests_per_s"] or 0) / ideal(n), 3)}
    ts = [r["wall_s"] for r in pairs["single"]]
    tc = [r["wall_s"] for r in pairs["cluster_1"]]
    single_m, cluster_m = round(statistics.median(ts), 3), round(statistics.median(tc), 3)
    overhead = (cluster_m - single_m) / single_m
    med = lambda rs, key: round(statistics.median(r[key] for r in rs), 3)  # noqa: E731
    first_s, first_c = med(pairs["single"], "first_request_at_s"), med(pairs["cluster_1"], "first_request_at_s")
    steady_s, steady_c = med(pairs["single"], "steady_requests_per_s"), med(pairs["cluster_1"], "steady_requests_per_s")
    res["overhead"] = {"order": "single, cluster_1, single, cluster_1", "single_wall_s": ts, "cluster_1_wall_s": tc,
                       "single_median_s": single_m, "cluster_1_median_s": cluster_m,
                       "overhead": round(overhead, 3), "target": 0.10, "met": overhead < 0.10,
                       "first_request_at_s": {"single": first_s, "cluster_1": first_c},
                       "steady_requests_per_s": {"single": steady_s, "cluster_1": steady_c},
                       "steady_overhead": round(steady_s / steady_c - 1, 3),
                       "runs": {k2: [strip(r) for r in v] for k2, v in pairs.items()}}
    res["kill"] = {"nodes": 3, "window_after_journal_open_s": round(window, 2), "no_kill": strip(clean),
                   "trials": [strip(r) for r in trials]}
    lost_ok = all(r["cluster"]["lost_items"] <= k for r in trials)
    intact = all(r["checks"]["examples_eq_budget"] and not r["checks"]["duplicate_job_keys"]
                 and not r["checks"]["duplicate_example_ids"] and r["checks"]["calls_logged_eq_jobs"] for r in trials)
    res["kill"]["met"] = {"lost_items_le_shard_jobs": lost_ok, "no_example_lost_or_duplicated": intact,
                          "every_trial_killed_a_node": all("at_s" in r["kill"] for r in trials)}
    res["bench_wall_s"] = round(time.perf_counter() - t_bench, 1)
    res["lingering_after"] = lingering()

    dest = ROOT / "bench" / "results" / "cluster.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=2) + "\n")

    print(f"\n## scaling: generate, {budget} examples, cold cache; teacher {args.slots} slots x {args.latency} s\n")
    print(table(["nodes", "wall s", "examples/s", "requests/s", "ideal req/s", "of ideal", "1st request at s",
                 "steady req/s", "steady of ideal", "max_in_flight", "slots (max)", "avg in service",
                 "busy start-up / steady", "driver / ray cores (steady)"],
                [[n, r["wall_s"], r["examples_per_s"], r["requests_per_s"], ideal(n), pct(r["requests_per_s"] / ideal(n)),
                  r["first_request_at_s"], r["steady_requests_per_s"], pct((r["steady_requests_per_s"] or 0) / ideal(n)),
                  r["server"]["max_in_flight"], f"{r['server']['max_serving']}/{args.slots}", r["server"]["avg_serving"],
                  "%s / %s" % (pct((r["cpu"]["start_up"] or {}).get("machine_busy")),
                               pct((r["cpu"]["steady"] or {}).get("machine_busy"))),
                  "%s / %s" % ((r["cpu"]["steady"] or {}).get("driver_cores"), (r["cpu"]["steady"] or {}).get("ray_cores"))]
                 for n, r in sorted(scaling.items())]))
    print("\n## overhead: single machine vs 1-node cluster (A B A B, medians)\n")
    print(table(["run", "wall s (1st, 2nd)", "median s", "examples/s", "1st request at s", "steady req/s",
                 "max_in_flight", "idle gaps (n, median ms)"],
                [[name, [r["wall_s"] for r in rs], med(rs, "wall_s"),
                  median_run(rs)["examples_per_s"], med(rs, "first_request_at_s"), med(rs, "steady_requests_per_s"),
                  [r["server"]["max_in_flight"] for r in rs],
                  "%s, %s" % (median_run(rs)["server"]["idle_gaps"], median_run(rs)["server"]["idle_gap_median_ms"])]
                 for name, rs in (("single", pairs["single"]), ("cluster, 1 node", pairs["cluster_1"]))]))
    print(f"\noverhead {overhead:+.1%} (target < 10%: {'met' if overhead < 0.10 else 'MISSED'}); first request "
          f"{first_c - first_s:+.2f} s later on the cluster; steady {res['overhead']['steady_overhead']:+.1%}")
    print("\n## a node killed at a random moment (3 nodes)\n")
    print(table(["trial", "killed at s", "lost_items", "rescheduled_shards", "shard_jobs", "examples", "dup keys",
                 "calls logged = jobs", "server asked twice", "wall s (no kill %s)" % clean["wall_s"]],
                [[i + 1, r["kill"].get("at_s", "missed"), r["cluster"]["lost_items"],
                  r["cluster"]["rescheduled_shards"], k, f"{r['examples']}/{budget}",
                  r["checks"]["duplicate_job_keys"], r["checks"]["calls_logged_eq_jobs"], r["server"]["asked_twice"],
                  r["wall_s"]] for i, r in enumerate(trials)]))
    print(f"\nlost work <= one shard: {'met' if lost_ok else 'MISSED'}; budget in full, nothing twice: "
          f"{'met' if intact else 'MISSED'}")
    print(f"\nstart-up: {res['startup']}\nmachine: {res['machine']}\nbench {res['bench_wall_s']} s; "
          f"Ray processes left: {res['lingering_after']}")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
