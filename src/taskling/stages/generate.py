"""generate: the teacher writes training examples grounded in pile chunks.

Jobs (which chunk, which label) are planned up front from the seed, so a
re-run asks exactly the same calls; every call goes through the call log,
so after a crash or kill the finished calls are replayed from calls.db for
free and only the rest are made. Stops at the example, token or wall-time
budget, whichever comes first, and says which.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from ..backends import Logged, Request, open_backend
from ..calls import CallLog
from ..config import Config
from ..errors import TasklingError, TeacherOutputError
from ..pile import Pile
from ..progress import bar
from .. import tasks
from ..workspace import Context, run_stage, upstream, write_jsonl


def run(cfg: Config, ctx: Context) -> dict:
    settings = {k: cfg.section(k) for k in ("task", "teacher", "budget", "generate")} | {"seed": cfg.seed}
    inputs = upstream(ctx, "ingest")

    def body(out: Path) -> dict:
        task = tasks.get(cfg.task)
        rng = random.Random(cfg.seed)
        n_max = int(cfg.budget.examples * cfg.generate.max_calls_factor)
        with Pile(ctx.ws.pile_db) as pile:
            jobs = task.plan(cfg.task, pile, n_max, rng, cfg.generate.pool_per_label)
            chunk_of = {c.key: c for c in pile.chunks()}
        log = CallLog(ctx.ws.calls_db)
        teacher = Logged(open_backend(cfg.teacher, ctx.threads), log, purpose="generate")
        examples, failures = [], []
        tokens = 0
        stopped = "jobs exhausted"
        t0 = time.monotonic()
        step = 8 if teacher.capabilities.batching else 1
        try:
            with bar(ctx.console) as progress:
                ptask = progress.add_task("generate", total=cfg.budget.examples, info="")
                for b in range(0, len(jobs), step):
                    if len(examples) >= cfg.budget.examples:
                        stopped = "example budget reached"
                        break
                    if tokens >= cfg.budget.teacher_tokens:
                        stopped = "teacher token budget reached"
                        break
                    if time.monotonic() - t0 > cfg.budget.wall_time_minutes * 60:
                        stopped = "wall-time budget reached"
                        break
                    batch = jobs[b:b + step]
                    reqs = [Request(task.teacher_messages(cfg.task, j, [chunk_of[k] for k in j["chunks"]]),
                                    max_tokens=min(cfg.teacher.max_tokens, getattr(task, "TEACHER_MAX_TOKENS", 10**6)),
                                    temperature=cfg.teacher.temperature,
                                    seed=cfg.seed * 100_003 + j["index"]) for j in batch]
                    for job, res in zip(batch, teacher.generate(reqs)):
                        tokens += res.prompt_tokens + res.completion_tokens
                        chunks = [chunk_of[k] for k in job["chunks"]]
                        try:
                            pair = task.parse_teacher(cfg.task, job, res.text, chunks)
                        except TeacherOutputError as e:
                            failures.append({"index": job["index"], "reason": str(e), "text": res.text})
                            continue
                        examples.append({
                            "id": f"gen-{job['index']:05d}", **pair,
                            **({"label": job["label"]} if "label" in job else {}),
                            "chunks": job["chunks"], "provenance": [c.provenance() for c in chunks],
                            "teacher": teacher.describe()["model"],
                        })
                        progress.update(ptask, completed=min(len(examples), cfg.budget.examples),
                                        info=f"{len(failures)} unparsable")
        finally:
            teacher.close()
            totals = dict(teacher.stats)
            log.close()
        write_jsonl(out / "unparsable.jsonl", failures)
        if not examples:
            why = f"; the first: {failures[0]['reason']}" if failures else ""
            raise TasklingError(
                f"generate: the teacher ({cfg.teacher.backend}:{cfg.teacher.model}) gave no usable example in "
                f"{len(jobs)} jobs ({len(failures)} replies did not parse{why}); see {out / 'unparsable.jsonl'} "
                "and try a stronger teacher or a clearer task description")
        write_jsonl(out / "examples.jsonl", examples)
        ctx.console.print(f"generate: {len(examples)} examples, {len(failures)} unparsable replies, "
                          f"{totals['calls']} new teacher calls, {totals['cached']} from the cache ({stopped})")
        return {"counts": {"examples": len(examples), "unparsable": len(failures), "teacher_tokens": tokens,
                           "new_calls": totals["calls"], "cached_calls": totals["cached"]},
                "stopped": stopped, "teacher": cfg.teacher.model_dump(mode="json"),
                "outputs": ["examples.jsonl", "unparsable.jsonl"]}

    return run_stage(ctx, "generate", settings, inputs, body)
