"""Fleet simulation: taskling's distributed work on volunteer / spot nodes that
come and go, and how shard size and checkpoint interval trade completion time
against wasted work.

    .venv/bin/python bench/fleet_sim.py [--jobs 20000] [--steps 2000] [--nodes 100] [--seeds 3]
                                        [--churn calm spot] [--horizon-h 100] [--out PATH]

A seeded discrete-event simulation (one heap of timed events per run), not formulas:
  fleet       N nodes alternate exponential up / down periods with availability a
              and a mean up period of 2 h ("calm") or 20 min ("spot"); each starts
              at a random point of its cycle. 5% of nodes are 4x slower (stragglers;
              generation only). The same seed gives the same fleet in every setting.
  generation  J teacher jobs (lognormal, mean 6 s, sigma 0.5) in shards of S. The
              coordinator hands a queued shard to an idle live node, which runs its
              jobs in order. "stream": each result comes back at once, so a death
              loses only the job in progress; "batch": results come back at the end
              of the shard, so a death loses the shard's finished work too. A lost
              shard's unreturned jobs go back to the front of the queue. With
              speculation, once the queue is empty idle nodes (not the slow ones: the
              coordinator times every node) duplicate the oldest in-flight shard, one
              backup each; the first copy to return a job wins, the other's is waste.
              Lost per death counts over the deaths of nodes holding a shard.
  training    T data-parallel steps on W workers that must all be alive; a step takes
              2 s*16/W + 0.2 s*log2 W, a checkpoint every C steps takes 5 s. A death
              stops the group: it waits for a live idle replacement, restarts (30 s)
              and resumes from the last checkpoint; the steps since (and the step in
              progress) are wasted. The first launch has no restart cost.
Wasted work is node time whose result was thrown away, also as % of the node time
of results kept. Deaths count all nodes in the phase (training: "in group" those of
members). Runs still going at --horizon-h simulated hours count as DNF.

Writes bench/results/fleet_sim.json; prints a generation and a training table
(markdown) and findings computed from them.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import platform
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0
JOB_MEAN_S, JOB_SIGMA = 6.0, 0.5
STRAGGLER_FRAC, STRAGGLER_SLOWDOWN = 0.05, 4.0
STEP_BASE_S, ALLREDUCE_S, CKPT_S, RESTART_S = 2.0, 0.2, 5.0, 30.0
CHURN = {"calm": 2 * HOUR, "spot": 20 * 60.0}  # mean up period, seconds
SHARDS, AVAILS, WORKERS, CKPT_EVERY = (1, 4, 16, 64), (0.5, 0.8, 0.95), (4, 16, 64), (10, 50, 200)


class Fleet:
    """The event heap of one run, and each node's up / down process feeding it."""

    def __init__(self, nodes, avail, up_mean, seed):
        self.heap, self.seq, self.rng = [], itertools.count(), np.random.default_rng([seed, 1])
        self.mean = {"up": up_mean, "down": up_mean * (1 - avail) / avail}
        self.up = (self.rng.random(nodes) < avail).tolist()  # stationary start
        self.deaths = 0
        if avail < 1:  # exponential periods are memoryless: the residual is a fresh draw
            for node, up in enumerate(self.up):
                self.push(self.rng.exponential(self.mean["up" if up else "down"]), "down" if up else "up", node)

    def push(self, t, kind, *data):
        heapq.heappush(self.heap, (t, next(self.seq), kind, data))

    def flip(self, now, kind, node):  # kind "up" / "down": the node's new state; schedule its end
        self.up[node] = kind == "up"
        self.deaths += kind == "down"
        self.push(now + self.rng.exponential(self.mean[kind]), "down" if kind == "up" else "up", node)


class Shard:
    __slots__ = ("jobs", "returned", "copies")

    def __init__(self, jobs):
        self.jobs, self.returned, self.copies = jobs, set(), []


class Copy:
    """One node running one shard: at job index pos since t0, holding (batch) unreturned results."""
    __slots__ = ("node", "shard", "pos", "t0", "held")

    def __init__(self, node, shard, pos, t0):
        self.node, self.shard, self.pos, self.t0, self.held = node, shard, pos, t0, []


def simulate_generation(jobs=20000, shard=16, avail=0.8, up_mean=CHURN["calm"], nodes=100, seed=0,
                        batch=False, speculate=False, straggler_frac=STRAGGLER_FRAC, horizon_h=100.0):
    """One generation phase; returns its completion time, wasted work and losses per death."""
    fleet = Fleet(nodes, avail, up_mean, seed)
    rng = np.random.default_rng([seed, 2])
    work = rng.lognormal(math.log(JOB_MEAN_S) - JOB_SIGMA ** 2 / 2, JOB_SIGMA, jobs).tolist()
    speed = [1.0] * nodes
    for node in rng.choice(nodes, round(straggler_frac * nodes), replace=False):
        speed[node] = STRAGGLER_SLOWDOWN
    queue = deque(Shard(list(range(i, min(i + shard, jobs)))) for i in range(0, jobs, shard))
    inflight = {}  # id -> Shard, oldest dispatch first
    running = [None] * nodes  # node -> its Copy
    idle = dict.fromkeys(n for n in range(nodes) if fleet.up[n])  # ordered set
    busy = useful = 0.0  # node-seconds spent / kept
    returned, lost, dups, now = 0, [], 0, 0.0

    def dispatch():
        nonlocal dups
        while idle:
            node = next(iter(idle))
            if queue:
                sh, pos = queue.popleft(), 0
                inflight[id(sh)] = sh
            elif speculate:  # a backup copy, not on a node the coordinator has timed as slow
                sh = next((s for s in inflight.values() if len(s.copies) == 1), None)
                node = next((n for n in idle if speed[n] == 1.0), None)
                if sh is None or node is None:
                    return
                pos = 0 if batch else sh.copies[0].pos  # stream: from the first unreturned job
                dups += 1
            else:
                return
            del idle[node]
            running[node] = c = Copy(node, sh, pos, now)
            sh.copies.append(c)
            fleet.push(now + work[sh.jobs[pos]] * speed[node], "job", c)

    def stop(c, alive=True):  # the copy ends; a live node goes back to the idle set
        c.shard.copies.remove(c)
        running[c.node] = None
        if alive:
            idle[c.node] = None

    dispatch()
    while returned < jobs and fleet.heap and now < horizon_h * HOUR:
        now, _, kind, data = heapq.heappop(fleet.heap)
        if kind == "job":
            c = data[0]
            if running[c.node] is not c:  # cancelled or dead copy
                continue
            sh, dt = c.shard, now - c.t0
            busy += dt
            job = sh.jobs[c.pos]
            if batch:
                c.held.append(dt)
            elif job not in sh.returned:  # stream: the first copy to return a job wins it
                sh.returned.add(job)
                useful += dt
                returned += 1
            c.pos += 1
            c.t0 = now
            if (c.pos == len(sh.jobs)) if batch else (len(sh.returned) == len(sh.jobs)):
                if batch:
                    useful += sum(c.held)
                    returned += len(sh.jobs)
                del inflight[id(sh)]
                for other in list(sh.copies):  # the loser's job in progress is wasted
                    busy += now - other.t0
                    stop(other)
            elif c.pos < len(sh.jobs):
                fleet.push(now + work[sh.jobs[c.pos]] * speed[c.node], "job", c)
            else:
                stop(c)
        else:
            node = data[0]
            fleet.flip(now, kind, node)
            if kind == "up":
                idle[node] = None
            else:
                idle.pop(node, None)
                c = running[node]
                if c is not None:
                    busy += now - c.t0
                    lost.append(1 + len(c.held))  # job in progress + finished but unreturned
                    stop(c, alive=False)
                    sh = c.shard
                    if not sh.copies:
                        del inflight[id(sh)]
                        queue.appendleft(Shard([j for j in sh.jobs if j not in sh.returned]))
        dispatch()
    return {"finished": returned == jobs, "completion_h": now / HOUR, "wasted_node_h": (busy - useful) / HOUR,
            "waste_pct": 100 * (busy - useful) / useful if useful else 0.0, "deaths": fleet.deaths,
            "busy_deaths": len(lost), "lost_per_death_mean": sum(lost) / len(lost) if lost else 0.0,
            "lost_per_death_max": max(lost, default=0), "duplicates": dups}


def step_seconds(workers):
    return STEP_BASE_S * 16 / workers + ALLREDUCE_S * math.log2(workers)


def simulate_training(steps=2000, workers=16, ckpt_every=50, avail=0.8, up_mean=CHURN["calm"], nodes=100, seed=0,
                      horizon_h=100.0):
    """One training phase; returns its completion time, wasted steps and work, deaths and restarts."""
    fleet = Fleet(nodes, avail, up_mean, seed)
    dt = step_seconds(workers)
    members, state, token = set(), "wait", 0  # state: wait | restart | step | ckpt | done
    step = ckpt = 0
    t_step = wait_since = now = 0.0
    lost_steps, wasted, interrupts, restarts, waited, started = 0, 0.0, 0, 0, 0.0, False

    def go(kind, after):  # the group's next event; a death bumps the token and voids it
        fleet.push(now + after, kind, token)

    def fill():
        nonlocal state, waited, restarts, started, t_step
        spare = [n for n in range(nodes) if fleet.up[n] and n not in members]
        members.update(spare[:workers - len(members)])
        if len(members) < workers:
            return
        waited += now - wait_since
        if started:
            state, restarts = "restart", restarts + 1
            go("restart", RESTART_S)
        else:
            state, started, t_step = "step", True, now
            go("step", dt)

    fill()
    while state != "done" and fleet.heap and now < horizon_h * HOUR:
        now, _, kind, data = heapq.heappop(fleet.heap)
        if kind in ("up", "down"):
            node = data[0]
            fleet.flip(now, kind, node)
            if kind == "down" and node in members:
                members.discard(node)
                interrupts += state != "wait"
                if state in ("step", "ckpt"):
                    lost = step - ckpt
                    lost_steps += lost
                    wasted += (lost * dt + (now - t_step if state == "step" else 0.0)) * workers
                    step = ckpt
                if state != "wait":
                    state, wait_since, token = "wait", now, token + 1
            if state == "wait":
                fill()
            continue
        if data[0] != token:
            continue
        if kind == "step":
            step += 1
            if step == steps:
                state = "done"
                continue
            if step % ckpt_every == 0:
                state = "ckpt"
                go("ckpt", CKPT_S)
                continue
        elif kind == "ckpt":
            ckpt = step
        state, t_step = "step", now  # after a step, a checkpoint or a restart: the next step
        go("step", dt)
    if state == "wait":
        waited += now - wait_since
    useful = steps * dt * workers
    return {"finished": state == "done", "completion_h": now / HOUR, "wasted_node_h": wasted / HOUR,
            "waste_pct": 100 * wasted / useful, "lost_steps": lost_steps, "deaths": fleet.deaths,
            "group_deaths": interrupts, "restarts": restarts, "wait_h": waited / HOUR}


def summarize(runs):
    """Mean / min / max over seeds; completion over finished runs only, with the DNF count."""
    out = {"seeds": len(runs), "dnf": sum(not r["finished"] for r in runs)}
    for key in runs[0]:
        if key == "finished":
            continue
        vals = [r[key] for r in runs if r["finished"] or key != "completion_h"]
        out[key] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)} if vals else None
    return out


def run_all(args):
    gen, train = [], []
    for churn in args.churn:
        for a in AVAILS:
            common = dict(avail=a, up_mean=CHURN[churn], nodes=args.nodes, horizon_h=args.horizon_h)
            for s, batch, spec in itertools.product(SHARDS, (False, True), (False, True)):
                runs = [simulate_generation(args.jobs, s, batch=batch, speculate=spec, seed=seed, **common)
                        for seed in range(args.seeds)]
                gen.append({"churn": churn, "avail": a, "shard": s, "return": "batch" if batch else "stream",
                            "speculate": spec, **summarize(runs)})
            for w, c in itertools.product(WORKERS, CKPT_EVERY):
                runs = [simulate_training(args.steps, w, c, seed=seed, **common) for seed in range(args.seeds)]
                train.append({"churn": churn, "avail": a, "workers": w, "ckpt_every": c, **summarize(runs)})
    return gen, train


def mean(row, key):
    return row[key]["mean"] if row[key] else math.inf  # no finished run: infinitely slow


def findings(gen, train):
    """Plain-language conclusions read off the rows (which S, C and W win where)."""
    out = []
    for churn, a in sorted({(r["churn"], r["avail"]) for r in gen}):
        g = {(r["shard"], r["return"], r["speculate"]): r for r in gen if (r["churn"], r["avail"]) == (churn, a)}
        done = lambda s, ret="stream", spec=False: mean(g[s, ret, spec], "completion_h")  # noqa: E731
        best = {ret: min(SHARDS, key=lambda s: done(s, ret)) for ret in ("stream", "batch")}
        big = SHARDS[-1]
        out.append(f"generation {churn} a={a}: fastest S={best['stream']} with stream return "
                   f"({done(best['stream']):.2f} h), S={best['batch']} with batch "
                   f"({done(best['batch'], 'batch'):.2f} h); S={big} wastes {mean(g[big, 'stream', False], 'waste_pct'):.1f}% streamed vs "
                   f"{mean(g[big, 'batch', False], 'waste_pct'):.1f}% batched; speculation changes stream completion "
                   + ", ".join(f"S={s} {done(s, 'stream', True) / done(s) - 1:+.0%}" for s in SHARDS))
    for s in SHARDS:
        lost = [mean(r, "lost_per_death_mean") for r in gen if r["shard"] == s and r["return"] == "batch"]
        if lost:
            out.append(f"jobs lost per death of a busy node at S={s}: 1 streamed, {sum(lost) / len(lost):.1f} "
                       f"batched (mean over settings)")
    for churn, a in sorted({(r["churn"], r["avail"]) for r in train}):
        t = [r for r in train if (r["churn"], r["avail"]) == (churn, a)]
        parts = []
        for w in WORKERS:
            b = min((r for r in t if r["workers"] == w), key=lambda r: mean(r, "completion_h"))
            parts.append(f"W={w} " + (f"C={b['ckpt_every']} ({mean(b, 'completion_h'):.2f} h)"
                                      if b["completion_h"] else "none finishes"))
        fast = min(t, key=lambda r: mean(r, "completion_h"))
        out.append(f"training {churn} a={a}: fastest C per W: " + ", ".join(parts)
                   + f"; fastest overall W={fast['workers']} C={fast['ckpt_every']}")
    dnf = [r for r in train if r["dnf"]]
    if dnf:
        out.append("training not finished within the horizon: " + ", ".join(
            f"{r['churn']} a={r['avail']} W={r['workers']} C={r['ckpt_every']} ({r['dnf']}/{r['seeds']})" for r in dnf))
    return out


def hours(row):
    c = row["completion_h"]
    if c is None:
        return "DNF"
    cell = f"{c['mean']:.2f} ({c['min']:.2f}–{c['max']:.2f})"
    return cell + (f" {row['dnf']} DNF" if row["dnf"] else "")


def tables(gen, train):
    pick = {(r["churn"], r["avail"], r["shard"], r["return"], r["speculate"]): r for r in gen}
    lines = ["| churn | a | S | return | done h (min–max) | +spec done h | wasted node-h | waste % | +spec waste % "
             "| lost/death mean (max) | deaths |", "|" + "---|" * 11]
    for (churn, a, s, ret, spec), r in pick.items():
        if spec:
            continue
        sp = pick[churn, a, s, ret, True]
        lines.append(f"| {churn} | {a} | {s} | {ret} | {hours(r)} | {mean(sp, 'completion_h'):.2f} "
                     f"| {mean(r, 'wasted_node_h'):.2f} | {mean(r, 'waste_pct'):.1f} | {mean(sp, 'waste_pct'):.1f} "
                     f"| {mean(r, 'lost_per_death_mean'):.2f} ({r['lost_per_death_max']['max']}) "
                     f"| {mean(r, 'deaths'):.0f} |")
    lines += ["", "| churn | a | W | C | done h (min–max) | wasted node-h | waste % | lost steps | deaths "
                  "(in group) | restarts | wait h |", "|" + "---|" * 11]
    for r in train:
        lines.append(f"| {r['churn']} | {r['avail']} | {r['workers']} | {r['ckpt_every']} | {hours(r)} "
                     f"| {mean(r, 'wasted_node_h'):.2f} | {mean(r, 'waste_pct'):.1f} | {mean(r, 'lost_steps'):.0f} "
                     f"| {mean(r, 'deaths'):.0f} ({mean(r, 'group_deaths'):.0f}) | {mean(r, 'restarts'):.0f} "
                     f"| {mean(r, 'wait_h'):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20000, help="teacher jobs J per generation run")
    ap.add_argument("--steps", type=int, default=2000, help="training steps T per training run")
    ap.add_argument("--nodes", type=int, default=100, help="fleet size N")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per setting")
    ap.add_argument("--churn", nargs="+", choices=sorted(CHURN), default=["calm", "spot"],
                    help="calm: mean up period 2 h; spot: 20 min")
    ap.add_argument("--horizon-h", type=float, default=100.0, help="simulated hours before a run counts as DNF")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fleet_sim.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    gen, train = run_all(args)
    found = findings(gen, train)
    wall = round(time.perf_counter() - t0, 1)
    out = {
        "benchmark": "fleet_sim: generation and training on a churning volunteer / spot fleet (simulated)",
        "command": "python bench/fleet_sim.py",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_s": wall,
        "settings": {"jobs": args.jobs, "steps": args.steps, "nodes": args.nodes, "seeds": list(range(args.seeds)),
                     "churn_up_mean_s": {c: CHURN[c] for c in args.churn}, "horizon_h": args.horizon_h,
                     "shards": SHARDS, "avails": AVAILS, "workers": WORKERS, "ckpt_every": CKPT_EVERY},
        "model": {"job_mean_s": JOB_MEAN_S, "job_sigma": JOB_SIGMA, "straggler_frac": STRAGGLER_FRAC,
                  "straggler_slowdown": STRAGGLER_SLOWDOWN, "step_base_s": STEP_BASE_S, "allreduce_s": ALLREDUCE_S,
                  "ckpt_s": CKPT_S, "restart_s": RESTART_S,
                  "step_s": {w: round(step_seconds(w), 3) for w in WORKERS},
                  "ideal_generation_h": {a: args.jobs * JOB_MEAN_S / (args.nodes * a) / HOUR for a in AVAILS}},
        "findings": found, "generation": gen, "training": train}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(tables(gen, train))
    print("\nFindings:\n" + "\n".join(f"- {f}" for f in found))
    print(f"\n{wall} s; wrote {args.out}")


if __name__ == "__main__":
    main()
