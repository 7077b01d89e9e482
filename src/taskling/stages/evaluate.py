"""evaluate: the task's metric for the tuned student, its base and the teacher,
on the held-out set and on gold.jsonl, with 95% bootstrap intervals.

Student and base run through the same transformers code path (infer.py) with
the student's prompt; the teacher is asked through its backend few-shot, as
it would be used without taskling. Predictions per model and set are saved
as they finish, so a re-run after a kill redoes only the unfinished ones.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from ..backends import Logged, Request, open_backend
from ..calls import CallLog
from ..config import Config
from .. import infer, tasks
from ..models import dir_size_mb, load_causal_lm, model_size_mb, resolve_gguf, resolve_hf
from ..workspace import Context, atomic_write_json, read_jsonl, run_stage, sha256_file, upstream, write_jsonl
from .curate import load_gold


def bootstrap_ci(scores: list[float], seed: int = 0, reps: int = 2000) -> tuple[float, float]:
    if not scores:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(sum(scores[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def predict_hf(model, tok, system: str, items: list[dict], task, cfg: Config) -> tuple[list[str], float]:
    convs = [tasks.student_messages(system, it["input"]) for it in items]
    t0 = time.perf_counter()
    outs = infer.generate(model, tok, convs, max_new_tokens=task.MAX_NEW_TOKENS, batch_size=cfg.evaluate.batch_size)
    return [o["text"] for o in outs], time.perf_counter() - t0


def predict_teacher(backend, items: list[dict], task, cfg: Config) -> tuple[list[str], float]:
    reqs = [Request(task.teacher_eval_messages(cfg.task, it["input"]), max_tokens=task.MAX_NEW_TOKENS,
                    temperature=0.0) for it in items]
    t0 = time.perf_counter()
    res = backend.generate(reqs)
    # Cached replies cost nothing now; report the speed of the original calls.
    secs = sum(r.latency_s for r in res) or (time.perf_counter() - t0)
    return [r.text if r.error is None else "" for r in res], secs


def score_set(task, cfg: Config, items: list[dict], texts: list[str], seconds: float, seed: int) -> dict:
    preds = [task.parse_output(cfg.task, t) for t in texts]
    scores = [task.score(cfg.task, p, it["output"]) for p, it in zip(preds, items)]
    lo, hi = bootstrap_ci(scores, seed)
    per_label: dict[str, list[float]] = {}
    if cfg.task.type == "classify":
        for it, s in zip(items, scores):
            per_label.setdefault(it["output"], []).append(s)
    return {"metric": round(sum(scores) / len(scores), 4) if scores else None, "ci_low": round(lo, 4),
            "ci_high": round(hi, 4), "n": len(items), "items_per_s": round(len(items) / max(seconds, 1e-9), 2),
            "unparsed": sum(p is None for p in preds),
            "per_label": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_label.items())},
            "_preds": preds, "_scores": scores}


def run(cfg: Config, ctx: Context) -> dict:
    gold_path = ctx.ws.gold
    settings = {k: cfg.section(k) for k in ("task", "student", "teacher", "evaluate")} | {"seed": cfg.seed}
    inputs = upstream(ctx, "curate", "train") | {"gold": sha256_file(gold_path) if gold_path.exists() else None}

    def body(out: Path) -> dict:
        infer.set_threads(ctx.threads)
        task = tasks.get(cfg.task)
        system = task.system_prompt(cfg.task)
        sets = {"eval": read_jsonl(ctx.stage_dir("curate") / "eval.jsonl")[: cfg.evaluate.max_items],
                "gold": load_gold(cfg, gold_path)[: cfg.evaluate.max_items]}
        sets = {k: v for k, v in sets.items() if v}
        results: dict = {name: {} for name in sets}
        adapter = ctx.stage_dir("train") / "adapter"
        sizes = {"student": model_size_mb(cfg.student.model) + dir_size_mb(adapter / "adapter_model.safetensors"),
                 "base": model_size_mb(cfg.student.model)}
        for who in cfg.evaluate.models:
            pending = [s for s in sets if not (out / f"pred-{who}-{s}.jsonl").exists()]
            if pending:
                if who == "teacher":
                    log = CallLog(ctx.ws.calls_db)
                    backend = Logged(open_backend(cfg.teacher, ctx.threads), log, purpose="evaluate")
                    runner = lambda items: predict_teacher(backend, items, task, cfg)  # noqa: E731
                else:
                    model, tok = load_causal_lm(resolve_hf(cfg.student.model))
                    if who == "student":
                        from peft import PeftModel

                        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
                    model.eval()
                    runner = lambda items: predict_hf(model, tok, system, items, task, cfg)  # noqa: E731
                for s in pending:
                    ctx.console.print(f"evaluate: {who} on {s} ({len(sets[s])} items)")
                    texts, secs = runner(sets[s])
                    write_jsonl(out / f"pred-{who}-{s}.jsonl",
                                [{"id": it.get("id"), "output": t, "seconds": secs / len(texts)}
                                 for it, t in zip(sets[s], texts)])
                if who == "teacher":
                    backend.close()
                    log.close()
                    path = resolve_gguf(cfg.teacher.model) if cfg.teacher.backend == "llamacpp" else None
                    sizes["teacher"] = dir_size_mb(path) if path else None
                else:
                    del model
            if who == "teacher" and "teacher" not in sizes:
                sizes["teacher"] = (dir_size_mb(resolve_gguf(cfg.teacher.model))
                                    if cfg.teacher.backend == "llamacpp" else None)
            for s, items in sets.items():
                rows = read_jsonl(out / f"pred-{who}-{s}.jsonl")
                texts = [r["output"] for r in rows]
                r = score_set(task, cfg, items, texts, sum(x["seconds"] for x in rows), cfg.seed)
                r["size_mb"] = sizes.get(who)
                results[s][who] = r
        failures = []
        for s, items in sets.items():
            said = {w: [r["output"] for r in read_jsonl(out / f"pred-{w}-{s}.jsonl")] for w in results[s]}
            for i, it in enumerate(items):
                row = results[s].get("student")
                if row and row["_scores"][i] < 1.0:
                    failures.append({"set": s, "id": it.get("id"), "input": it["input"],
                                     "expected": tasks.output_text(it["output"]),
                                     **{w: said[w][i] for w in said},
                                     "source": (it.get("provenance") or [{}])[0].get("path", "gold.jsonl")})
        write_jsonl(out / "failures.jsonl", failures)
        clean = {s: {w: {k: v for k, v in r.items() if not k.startswith("_")} for w, r in per.items()}
                 for s, per in results.items()}
        atomic_write_json(out / "metrics.json", {"metric": task.METRIC, "results": clean})
        for s, per in clean.items():
            line = ", ".join(f"{w} {r['metric']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for w, r in per.items())
            ctx.console.print(f"evaluate ({s}, n={len(sets[s])}, {task.METRIC}): {line}")
        return {"counts": {s: len(v) for s, v in sets.items()} | {"failures": len(failures)},
                "metric": task.METRIC, "results": clean, "outputs": ["metrics.json", "failures.jsonl"]}

    return run_stage(ctx, "evaluate", settings, inputs, body)
