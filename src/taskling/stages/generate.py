"""generate: the teacher writes training examples grounded in pile chunks.

Jobs are planned up front from the seed: the budget is split over arms
(topic x label) by a policy (allocate.py), each job names its chunks, the
persona and difficulty it asks for and how many examples it wants. Every
call goes through the call log, which is also the cache, and each job's
outcome is appended to `journal.jsonl` (fsynced per batch) under its job
key, so after a kill at any moment a re-run replays finished calls for free,
makes only the missing ones and writes no example twice.

The stage stops at the first budget reached (examples, teacher tokens,
money, wall time) and says which. `dry_run(ctx)` (`taskling generate --dry-run`)
runs a small sample and estimates tokens, cost and time of the whole stage first.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path

from .. import tasks
from ..core import tasktype
from ..core import stage
from ..core.config import Config, Price
from ..core.errors import TasklingError, TeacherOutputError
from ..core.journal import Journal
from ..core.manifests import AnalyseManifest, GenerateManifest, SeededJob
from ..core.progress import bar
from ..core.stage import StageSpec
from ..core.workspace import Context, atomic_write_json, read_jsonl, write_jsonl
from ..curation import auto, seed, tablerows
from ..data.pile import Pile
from ..data.retrieve import open_book
from ..teacher import allocate
from ..teacher.backends import Logged, Request, Result, open_for
from ..teacher.budget import limits, per_call
from ..tasks.classify import check_label_pools
from ..teacher.calls import CallLog, call_key

SPEC = StageSpec("generate", reads=("task", "teacher", "budget", "generate", "seed", "tables"),
                 manifest=GenerateManifest, needs=("ingest", "analyse"))


class Generation:
    """One generate stage's work in `out`: plan, run jobs in batches, journal them."""

    def __init__(self, cfg: Config, ctx: Context, out: Path):
        self.cfg, self.ctx, self.out = cfg, ctx, out
        self.task = tasktype.get(cfg.task.type)
        self.k = per_call(cfg)
        self.limits = limits(ctx)
        # Round 0 keeps the seed it always had (its cached calls stay valid); later rounds draw afresh.
        rng = random.Random(cfg.seed if ctx.round == 0 else f"{cfg.seed}:round-{ctx.round}")
        n_jobs = math.ceil(self.limits["examples"] * cfg.generate.max_calls_factor / self.k)
        chunks_per_job = self.k if self.task.one_input_per_chunk else cfg.generate.chunks_per_example
        plan = AnalyseManifest.read(ctx.stage_dir("analyse")) if ctx.round > 0 else None
        with Pile(ctx.ws.pile_db) as pile:
            pools = self.task.pools(cfg.task, pile, cfg.generate.pool_per_label)
            if plan is None:
                self.jobs = allocate.plan_jobs(pools, n_jobs, self.k, allocate.get_policy(cfg.generate.policy), rng,
                                               cfg.generate.personas, cfg.generate.difficulties, chunks_per_job)
            else:  # a later round: the analysis of the last one decided the jobs per arm and the failure seeds
                seeded = plan.allocation.seeded
                counts = {tuple(a.arm): a.jobs for a in plan.arms}
                self.jobs = allocate.plan_jobs(pools, n_jobs, self.k, None, rng,
                                               cfg.generate.personas, cfg.generate.difficulties, chunks_per_job,
                                               counts=counts, used=used_chunks(ctx), seen=seen_chunks(ctx))
                self.jobs = interleave(self.jobs, seeded, self.k, cfg.generate.personas, cfg.generate.difficulties)
            wanted = {k for j in self.jobs for k in j["chunks"]}
            self.chunk_of = {c.key: c for c in pile.chunks() if c.key in wanted}
        self.arms = len(pools)
        self.pools = pools
        self.pool_arms = sorted((list(a) for a, cs in pools.items() if cs), key=str)
        # which chunks this round could draw from: a later round puts chunks new to the pile first
        atomic_write_json(out / "pool.json", sorted({c.key for cs in pools.values() for c in cs}))
        price = cfg.budget.prices.get(cfg.teacher.model, Price())
        self.log = CallLog(ctx.ws.calls_db)
        self.teacher = Logged(open_for(ctx.executor, cfg.teacher, ctx.threads), self.log, purpose="generate",
                              price=price)
        self.model_id = self.teacher.describe()
        self.journal = Journal(out / "journal.jsonl")
        self.sums = {"jobs": 0, "examples": 0, "tokens": 0, "cost": 0.0, "failed": 0}
        self._count(self.journal.records.values())

    @property
    def batch(self) -> int:
        """Jobs per batch: four per request the teacher can have in flight (on a cluster that grows as nodes join)."""
        caps = self.teacher.capabilities
        return max(4, 4 * caps.concurrency) if caps.concurrency > 1 else (8 if caps.batching else 4)

    # -- totals over what the journal holds (kept up to date as batches are journaled) --------------------------
    def _count(self, records) -> None:
        for r in records:
            self.sums["jobs"] += 1
            self.sums["examples"] += len(r["examples"])
            self.sums["tokens"] += r["tokens"]
            self.sums["cost"] += r["cost"]
            self.sums["failed"] += r["failure"] is not None

    def totals(self) -> dict:
        return dict(self.sums)

    def request(self, job: dict) -> Request:
        chunks = [self.chunk_of[k] for k in job["chunks"]]
        cap = self.task.teacher_max_tokens if job["n"] == 1 else 10**6
        schema = self.task.teacher_schema(self.cfg.task, job) if self.cfg.teacher.json_mode else None
        return Request(self.task.teacher_messages(self.cfg.task, job, chunks),
                       max_tokens=min(self.cfg.teacher.max_tokens * job["n"], cap),
                       temperature=self.cfg.teacher.temperature,
                       seed=self.cfg.seed * 100_003 + self.ctx.round * 1_000_003 + job["index"],
                       json_schema=schema)

    def record(self, job: dict, req: Request | None, res: Result | None, failure: dict | None = None) -> dict:
        chunks = [self.chunk_of[k] for k in job["chunks"]]
        examples: list[dict] = []
        if failure is None and res is not None:
            if res.error is not None:
                failure = {"kind": res.error_kind or "error", "reason": res.error}
            else:
                try:
                    pairs = self.task.parse_teacher(self.cfg.task, job, res.text, chunks, res.finish_reason)
                except TeacherOutputError as e:
                    failure = {"kind": e.kind, "reason": str(e)}
                else:
                    for n, pair in enumerate(pairs[:job["n"]]):
                        used = sorted({s["chunk"] for s in pair["spans"]}) or job["chunks"]
                        examples.append({
                            "id": f"gen-{job['index']:05d}-{n}", "input": pair["input"], "output": pair["output"],
                            **({"label": job["label"]} if "label" in job else {}),
                            "chunks": used, "spans": pair["spans"],
                            "provenance": [self.chunk_of[k].provenance() for k in used],
                            "arm": job["arm"], "persona": job["persona"], "difficulty": job["difficulty"],
                            "round": self.ctx.round, **({"seeded_by": job["of"]} if "of" in job else {}),
                            "teacher": self.model_id["model"], "call": call_key(self.model_id, req.as_dict())[:16]})
        if failure is not None and res is not None:
            failure["text"] = res.text[:2000]
        return {"key": f"job-{job['index']:05d}", "index": job["index"], "arm": job["arm"], "asked": job["n"],
                "seeded": "like" in job, "examples": examples, "failure": failure,
                "tokens": (res.prompt_tokens + res.completion_tokens) if res else 0, "cost": res.cost if res else 0.0,
                "cached": bool(res and res.cached), "latency_s": res.latency_s if res else 0.0}

    def stop_reason(self, t0: float) -> str | None:
        t, b = self.totals(), self.limits
        if t["examples"] >= b["examples"]:
            return "example budget reached"
        if t["tokens"] >= b["teacher_tokens"]:
            return "teacher token budget reached"
        if b["money"] is not None and t["cost"] >= b["money"]:
            return "money budget reached"
        if time.monotonic() - t0 > self.cfg.budget.wall_time_minutes * 60 or (
                self.ctx.deadline is not None and time.monotonic() > self.ctx.deadline):
            return "wall-time budget reached"
        return None

    def room(self) -> int:
        """Jobs that fit in what is left of the budgets, from the averages so far."""
        t, b = self.totals(), self.limits
        if not t["jobs"]:  # a first, small batch measures what a job costs
            return min(self.batch, max(self.teacher.capabilities.concurrency, 4))
        per_job = {"examples": t["examples"] / t["jobs"], "tokens": t["tokens"] / t["jobs"], "cost": t["cost"] / t["jobs"]}
        room = [self.batch]
        if per_job["examples"] > 0:
            room.append(math.ceil((b["examples"] - t["examples"]) / per_job["examples"]))
        if per_job["tokens"] > 0:
            room.append(math.ceil((b["teacher_tokens"] - t["tokens"]) / per_job["tokens"]))
        if b["money"] is not None and per_job["cost"] > 0:
            room.append(math.ceil((b["money"] - t["cost"]) / per_job["cost"]))
        return max(1, min(room))

    def run_batch(self, batch: list[dict], on_done=None) -> None:
        """Ask the teacher for `batch` and journal the outcomes (one fsync)."""
        records, reqs, live = [], [], []
        for job in batch:
            chunks = [self.chunk_of[k] for k in job["chunks"]]
            if not any(c.text.strip() for c in chunks):
                records.append(self.record(job, None, None, {"kind": "empty_chunk",
                                                             "reason": "the chunk is empty after cleaning"}))
                continue
            reqs.append(self.request(job))
            live.append(job)

        def done(i: int, res: Result) -> None:
            if on_done:
                on_done(res)

        results = self.teacher.generate(reqs, on_result=done) if reqs else []
        records += [self.record(job, req, res) for job, req, res in zip(live, reqs, results)]
        self._count(self.journal.add_batch(records))

    def pending(self) -> list[dict]:
        return [j for j in self.jobs if f"job-{j['index']:05d}" not in self.journal]

    def close(self) -> None:
        try:
            self.teacher.close()
        finally:
            self.journal.close()
            self.log.close()


def used_chunks(ctx: Context) -> set[str]:
    """Chunks earlier rounds already wrote examples from (drawn last in a later round)."""
    out: set[str] = set()
    for r in range(ctx.round):
        for ex in read_jsonl(ctx.stage_dir("generate", r) / "examples.jsonl"):
            out.update(ex.get("chunks", []))
    return out


def seen_chunks(ctx: Context) -> set[str]:
    """Chunks that were in earlier rounds' pools (a chunk not among them is new to the pile)."""
    out: set[str] = set()
    for r in range(ctx.round):
        path = ctx.stage_dir("generate", r) / "pool.json"
        if path.exists():
            out.update(json.loads(path.read_text()))
    return out


def interleave(jobs: list[dict], seeded: list[SeededJob], k: int, personas: list[str],
               difficulties: list[str]) -> list[dict]:
    """The policy's jobs with the failure-seeded ones spread evenly among them, renumbered."""
    out: list[dict] = []
    total = len(jobs) + len(seeded)
    si = ji = 0
    for i in range(total):
        take_seed = si < len(seeded) and (ji >= len(jobs) or (si + 1) * total <= (i + 1) * len(seeded))
        if take_seed:
            s = seeded[si]
            si += 1
            job = {"arm": list(s.arm), "chunks": list(s.chunks), "n": k, "like": s.like, "of": s.of,
                   "persona": personas[i % len(personas)] if personas else "a typical user",
                   "difficulty": difficulties[i % len(difficulties)] if difficulties else "medium"}
            if s.arm[1] is not None:
                job["label"] = s.arm[1]
        else:
            job = dict(jobs[ji])
            ji += 1
        job["index"] = i
        out.append(job)
    return out


def pile_inputs(cfg: Config, ctx: Context, pools: dict) -> list[dict]:
    """classify: pile chunks become inputs as they are (real text, no teacher call; their first
    `pile_input_words` words). Half are dealt round-robin over the arms' search pools, each with its
    pool's label as a 'retrieved' guess, the rest drawn from the whole pile without one, so the
    inputs look like the pile does; the label model (label:) labels them all. Round 0 only."""
    n = auto.pile_input_count(cfg)
    if not n or not tasktype.get(cfg.task.type).labelled or ctx.round > 0:
        return []
    rng = random.Random(f"{cfg.seed}:pile-inputs")
    words = auto.pile_input_words(cfg)
    queues = {}
    for arm in sorted(pools, key=str):
        cs = [c for c in pools[arm] if c.text.strip()]
        rng.shuffle(cs)
        queues[arm] = cs
    out, used = [], set()

    def take(c, arm) -> None:
        used.add(c.key)
        text = " ".join(c.text.split()[:words])
        out.append({"id": f"pile-{len(out):05d}", "input": text, "output": arm[1] if arm else None,
                    "label": arm[1] if arm else None, "chunks": [c.key], "spans": [], "provenance": [c.provenance()],
                    "arm": list(arm) if arm else [c.topic_id, None], "round": 0, "source": "pile"})
    half = (n + 1) // 2 if auto.active(cfg) else n
    while len(out) < half and any(queues.values()):
        for arm, cs in queues.items():
            while cs and cs[-1].key in used:
                cs.pop()
            if not cs or len(out) >= half:
                continue
            take(cs.pop(), arm)
    if len(out) < n:
        with Pile(ctx.ws.pile_db) as pile:
            least = tasks.chunk_floor(cfg.task)
            rest = [c for c in pile.chunks(unique=True) if c.key not in used and len(c.text.split()) >= least]
        rng.shuffle(rest)
        for c in rest[:n - len(out)]:
            take(c, None)
    return out


def self_inputs(cfg: Config, ctx: Context) -> list[dict]:
    """A later round with label.auto.self_training: the pile chunks the last student labelled (the
    analysis's self_labels.jsonl) become inputs, the student's label and confidence on them as one
    more vote for curate's label model (source "self")."""
    path = ctx.stage_dir("analyse") / "self_labels.jsonl"
    if ctx.round == 0 or not path.exists():
        return []
    words = auto.pile_input_words(cfg)
    out = []
    with Pile(ctx.ws.pile_db) as pile:
        for r in read_jsonl(path):
            c = pile.chunk(r["chunk"])
            if c is None:
                continue
            out.append({"id": f"self-{ctx.round}-{len(out):05d}", "input": " ".join(c.text.split()[:words]),
                        "output": None, "label": None, "self_label": r["label"], "self_confidence": r["confidence"],
                        "chunks": [c.key], "spans": [], "provenance": [c.provenance()], "arm": [c.topic_id, None],
                        "round": ctx.round, "source": "pile"})
    return out


def cluster_line(backend) -> str:
    """' · 3 nodes, 1 shard rescheduled' for progress when the teacher runs on a cluster."""
    if not hasattr(backend, "cluster_stats"):
        return ""
    pool = backend.pool
    return f" · {pool.size} workers, {len(pool.rescheduled)} shards rescheduled"


def failures_by_kind(records) -> dict[str, int]:
    return dict(Counter(r["failure"]["kind"] for r in records if r["failure"]).most_common())


def extra_settings(ctx: Context) -> dict:
    """Beyond the sections it reads: the examples per call, and in a later round its share of the budgets."""
    out = {"examples_per_call": per_call(ctx.cfg)}
    if auto.pile_input_count(ctx.cfg):  # its default follows label.auto, a section generate does not read
        out["pile_inputs"] = {"n": auto.pile_input_count(ctx.cfg), "words": auto.pile_input_words(ctx.cfg)}
    if ctx.round > 0:
        out["round"] = {"round": ctx.round, "limits": limits(ctx)}
    if open_book(ctx.cfg, ctx.ws.pile_db):  # table rows then come with questions the pile cannot answer
        out["open_book"] = True
    return out


def seed_data_readable(cfg: Config, ctx: Context) -> None:
    """A seed_data file curate could not read (a column not there, a label not the task's) fails here,
    before the teacher's budget is spent, not at curate after it."""
    if cfg.seed_data:
        seed.load(cfg, ctx.ws.gold)


def run(ctx: Context) -> GenerateManifest:
    cfg = ctx.cfg
    seed_data_readable(cfg, ctx)

    def body(out: Path) -> dict:
        gen = Generation(cfg, ctx, out)
        t0 = time.monotonic()
        fresh = {"calls": 0, "tokens": 0, "seconds": 0.0}
        stopped = "jobs exhausted"
        try:
            with bar(ctx.console) as progress:
                ptask = progress.add_task("generate" if ctx.round == 0 else f"generate (round {ctx.round})",
                                          total=gen.limits["examples"], info="")

                def show(res: Result | None = None) -> None:
                    t = gen.totals()
                    el = max(time.monotonic() - t0, 1e-9)
                    progress.update(ptask, completed=min(t["examples"], gen.limits["examples"]), info=(
                        f"{gen.teacher.stats['completion_tokens'] / el:.0f} tok/s · spent {t['cost']:.4f} · "
                        f"{t['failed']} failed" + cluster_line(gen.teacher.inner)))

                show()
                while True:
                    reason = gen.stop_reason(t0)
                    todo = gen.pending()
                    if reason or not todo:
                        stopped = reason or stopped
                        break
                    b0, calls0 = time.monotonic(), gen.teacher.stats["calls"]
                    gen.run_batch(todo[:gen.room()], on_done=show)
                    if gen.teacher.stats["calls"] > calls0:
                        fresh["seconds"] += time.monotonic() - b0
                    show()
            # mapped tables (the user's, else found from the task examples): rows as examples, no teacher call
            rows, table_reports, mapped = tablerows.table_examples(cfg, ctx, out)
            if rows and any(t.paraphrase for t in mapped):
                rows += tablerows.paraphrases(cfg, ctx, gen.teacher, rows, table_reports, mapped,
                                              None if cfg.tables else gen.limits["examples"])
            if rows and open_book(cfg, ctx.ws.pile_db):  # eval items an open-book student should abstain on
                with Pile(ctx.ws.pile_db) as pile:
                    absent = tablerows.absent_questions(cfg, pile, rows, mapped)
                rows += absent
                for rep in table_reports:
                    rep["absent_questions"] = sum(1 for a in absent if a["table"] == rep["table"])
        finally:
            stats = dict(gen.teacher.stats)
            health = gen.teacher.inner.health() if hasattr(gen.teacher.inner, "health") else {}
            spread = gen.teacher.inner.cluster_stats() if hasattr(gen.teacher.inner, "cluster_stats") else None
            records = sorted(gen.journal.records.values(), key=lambda r: r["index"])
            jobs_planned, arms, quota, pool_arms = len(gen.jobs), gen.arms, gen.limits["examples"], gen.pool_arms
            gen.close()
        examples = [e for r in records for e in r["examples"]][:quota]
        taken = pile_inputs(cfg, ctx, gen.pools) + self_inputs(cfg, ctx) + rows  # no teacher: labelled in curate
        failures = [{"job": r["index"], **r["failure"]} for r in records if r["failure"]]
        write_jsonl(out / "failures.jsonl", failures)
        kinds = failures_by_kind(records)
        if not examples and not taken:
            why = f"; the first: {failures[0]['reason']}" if failures else ""
            rows_why = ("" if cfg.tables or not cfg.generate.discover or ctx.round > 0 else
                        "; and no table or passage of the pile holds the task examples' answers with their keys "
                        "(map one under tables: if one does)")
            raise TasklingError(
                f"generate: the teacher ({cfg.teacher.backend}:{cfg.teacher.model}) gave no usable example in "
                f"{len(records)} jobs ({len(failures)} failed{why}){rows_why}; see {out / 'failures.jsonl'} "
                "and try a stronger teacher or a clearer task description")
        write_jsonl(out / "examples.jsonl", examples + taken)
        tokens = sum(r["tokens"] for r in records)
        seconds = time.monotonic() - t0
        by_arm = Counter(allocate.arm_name(tuple(e["arm"])) for e in examples)
        jobs_by_arm: dict[str, dict] = {}
        for r in records:
            if "arm" in r:
                row = jobs_by_arm.setdefault(allocate.arm_key(r["arm"]), {"arm": r["arm"], "jobs": 0, "asked": 0,
                                                                  "examples": 0, "seeded_jobs": 0, "tokens": 0,
                                                                  "cost": 0.0})
                row["jobs"] += 1
                row["asked"] += r.get("asked", 1)
                row["seeded_jobs"] += bool(r.get("seeded"))
                row["tokens"] += r["tokens"]  # the teacher spend per arm: what the UI's runs page shows
                row["cost"] = round(row["cost"] + r["cost"], 6)
        for e in examples:
            if allocate.arm_key(e["arm"]) in jobs_by_arm:
                jobs_by_arm[allocate.arm_key(e["arm"])]["examples"] += 1
        counts = {"examples": len(examples), "jobs": len(records), "jobs_planned": jobs_planned, "failed_jobs": len(failures),
                  "teacher_tokens": tokens, "cost": round(sum(r["cost"] for r in records), 6),
                  "new_calls": stats["calls"], "cached_calls": stats["cached"], "retries": stats["retries"],
                  "failed_calls": stats["failed"], "arms": arms, "arms_covered": len(by_arm),
                  "examples_per_call": gen.k, "quota": quota}
        rates = {"examples_per_s": round(len(examples) / max(seconds, 1e-9), 3),
                 "new_tokens_per_s": round((stats["prompt_tokens"] + stats["completion_tokens"]) / max(fresh["seconds"], 1e-9), 1)
                 if fresh["seconds"] else None,
                 "completion_tokens_per_s": round(stats["completion_tokens"] / max(fresh["seconds"], 1e-9), 1)
                 if fresh["seconds"] else None}
        summary = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"
        ctx.console.print(f"generate: {len(examples)} examples from {len(records)} jobs ({stopped}); "
                          f"{stats['calls']} new teacher calls, {stats['cached']} from the cache, "
                          f"{stats['retries']} retries; {tokens} tokens, cost {counts['cost']:.4f}; "
                          f"failures by kind: {summary}")
        return {"counts": counts, "rates": rates, "failures_by_kind": kinds, "stopped": stopped,
                "examples_by_arm": dict(by_arm.most_common()), "teacher_health": health,
                "jobs_by_arm": sorted(jobs_by_arm.values(), key=lambda r: str(r["arm"])),
                "seeded_examples": sum(1 for e in examples if "seeded_by" in e), "pool_arms": pool_arms,
                "pile_inputs": len(taken) - len(rows), "table_examples": len(rows), "tables": table_reports,
                **({"cluster": spread} if spread else {}),
                "teacher": {k: v for k, v in cfg.teacher.model_dump(mode="json").items()},
                "outputs": ["examples.jsonl", "failures.jsonl"]}

    return stage.run(ctx, SPEC, body, settings=extra_settings(ctx))


def dry_run_samples(ctx: Context, recs: list[dict]) -> list[dict]:
    """3-5 of the sample's examples with their source span and curation's verdict, printed."""
    from ..curation import preview

    picked = preview.pick(recs, 5)
    with Pile(ctx.ws.pile_db) as pile:
        text = {k: c.text for k in {k for ex in picked for k in ex.get("chunks", [])} if (c := pile.chunk(k))}
    samples = preview.verdicts(ctx.cfg, picked, lambda ex: "\n".join(text.get(k, "") for k in ex.get("chunks", [])))
    for line in preview.sample_lines(samples):
        ctx.console.print(line, markup=False, highlight=False, soft_wrap=True)
    return samples


def dry_run(ctx: Context) -> dict:
    """Run a small sample of the planned jobs (kept in the stage's folder: the real run reuses
    them) and project tokens, cost and time for the whole stage."""
    cfg = ctx.cfg
    seed_data_readable(cfg, ctx)
    gen = Generation(cfg, ctx, stage.open_dir(ctx, SPEC, settings=extra_settings(ctx)))
    try:
        n = max(cfg.generate.dry_run_sample, 2 * gen.teacher.capabilities.concurrency)
        sample = gen.jobs[:n]
        todo = [j for j in sample if f"job-{j['index']:05d}" not in gen.journal]
        t0 = time.monotonic()
        calls0 = gen.teacher.stats["calls"]
        if todo:
            gen.run_batch(todo)
        wall = time.monotonic() - t0
        recs = [gen.journal.records[f"job-{j['index']:05d}"] for j in sample if f"job-{j['index']:05d}" in gen.journal]
        fresh = gen.teacher.stats["calls"] - calls0
        conc = gen.teacher.capabilities.concurrency
    finally:
        gen.close()
    if not recs:
        raise TasklingError("generate --dry-run: no job could be sampled (the pile has no usable chunk)")
    m = len(recs)
    per_job = {"examples": sum(len(r["examples"]) for r in recs) / m, "tokens": sum(r["tokens"] for r in recs) / m,
               "cost": sum(r["cost"] for r in recs) / m}
    # Seconds per job: measured when the sample made its calls now, else from the logged latencies.
    secs = wall / max(fresh, 1) if fresh >= m // 2 else sum(r["latency_s"] for r in recs) / m / max(1, min(conc, m))
    b = cfg.budget
    need = len(gen.jobs) if per_job["examples"] <= 0 else min(len(gen.jobs), math.ceil(b.examples / per_job["examples"]))
    reach = {"example budget": need}
    if per_job["tokens"] > 0:
        reach["teacher token budget"] = math.ceil(b.teacher_tokens / per_job["tokens"])
    if b.money is not None and per_job["cost"] > 0:
        reach["money budget"] = math.ceil(b.money / per_job["cost"])
    if secs > 0:
        reach["wall-time budget"] = math.ceil(b.wall_time_minutes * 60 / secs)
    first = min(reach, key=reach.get)
    jobs = min(reach[first], len(gen.jobs))
    est = {"sample_jobs": m, "sample_new_calls": fresh, "sample_seconds": round(wall, 2),
           "per_job": {k: round(v, 6) for k, v in per_job.items()} | {"seconds": round(secs, 3)},
           "jobs_planned": len(gen.jobs), "jobs_estimated": jobs,
           "estimate": {"examples": round(min(b.examples, jobs * per_job["examples"])),
                        "teacher_tokens": round(jobs * per_job["tokens"]), "cost": round(jobs * per_job["cost"], 4),
                        "seconds": round(jobs * secs, 1)},
           "stops_at": first if reach[first] < len(gen.jobs) or first == "example budget" else "jobs exhausted",
           "failures_by_kind": failures_by_kind(recs), "thin_labels": check_label_pools(ctx),
           "samples": dry_run_samples(ctx, recs)}
    atomic_write_json(gen.out / "dry_run.json", est)
    e = est["estimate"]
    ctx.console.print(
        f"generate --dry-run: {m} sample jobs gave {per_job['examples']:.2f} examples and {per_job['tokens']:.0f} "
        f"tokens each. Estimate for the stage: {e['examples']} examples from {jobs} jobs, {e['teacher_tokens']} "
        f"teacher tokens, cost {e['cost']:.4f}, about {e['seconds'] / 60:.1f} min; stops at: {est['stops_at']}. "
        f"The sample's calls are kept and reused by the real run.")
    return est
