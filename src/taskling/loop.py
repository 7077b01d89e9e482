"""The whole loop, top to bottom, round after round.

    ingest
    round 0:  generate -> curate -> train -> evaluate
    round k:  analyse -> generate -> curate -> train -> evaluate     (k = 1 .. loop.rounds-1)
              until a stop rule fires
    export (the kept round's student) -> report

Each stage is skipped when its inputs and settings are unchanged, so running
it again after a crash or kill continues where it stopped, in the right round
and stage. A round the loop has recorded as finished (loop.json) is kept as it
is: more rounds or another budget continue the run, and other settings apply
from the next round on (to redo finished rounds, use --force or another
--run id). With loop.rounds = 1 the single round re-runs whatever its
settings changed, as any stage does.

Stop rules, checked after every round, first match wins:
  target    the student's held-out (eval) metric reached loop.target
  budget    the run's examples, teacher tokens, money or wall time are spent
  rounds    loop.rounds rounds are done
  plateau   none of the last loop.patience rounds gained significantly over
            the best round before it: the paired bootstrap interval of the
            per-item difference (loop.confidence) is not above zero
The round that is exported is the last one, unless an earlier round is
significantly better on eval (the same paired test). runs/<id>/loop.json holds
every round's figures, the stop rule and the reasons.
"""
from __future__ import annotations

import dataclasses
import json
import time

from rich.table import Table

from .core.manifests import (AnalyseManifest, CurateManifest, EvaluateManifest, GenerateManifest, SystemResult,
    TrainManifest)
from .core.workspace import Context, atomic_write_json, read_jsonl
from .report import build as report
from .curation import enough
from .stages import analyse, curate, evaluate, export, generate, ingest, train
from .tasks import metrics
from .teacher import allocate

ROUND_STAGES = ("analyse", "generate", "curate", "train", "evaluate")
STOP_SET = "eval"  # the loop decides on the held-out eval set; gold.jsonl only ever measures


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    if cfg.loop.rounds > 1:
        allocate.get_policy(cfg.loop.policy, "loop.policy")  # a misspelt policy fails now, not after round 0
    timings: dict = {}
    ctx = ctx.at_round(0)
    m = ingest.run(ctx)
    timings["ingest"] = {"seconds": m.seconds, "skipped": m.skipped}
    recorded = rounds_so_far(ctx)  # what earlier invocations finished (read once: loop.json is rewritten below)
    spent_s = sum(r["seconds"] for r in recorded)
    ctx = dataclasses.replace(ctx, deadline=time.monotonic() + max(0.0, cfg.budget.wall_time_minutes * 60 - spent_s))
    history: list[dict] = []
    stop = None
    k = 0
    while stop is None:
        if not finished(ctx, k, recorded):
            for name, stage in (("analyse", analyse), ("generate", generate), ("curate", curate),
                                ("train", train), ("evaluate", evaluate)):
                if name == "analyse" and k == 0:
                    continue
                if name == "train":  # too little to train on stops here, with why and what to do
                    enough.gate(ctx.at_round(k))
                m = stage.run(ctx.at_round(k))
                timings[name if k == 0 else f"{name}@{k}"] = {"seconds": m.seconds, "skipped": m.skipped}
        history.append(round_record(ctx, k))
        stop = stop_rule(ctx, history)
        history[-1]["gain"] = gain(ctx, history)
        write_state(ctx, history, stop, None)
        k += 1
    best, why = kept_round(ctx, history)
    write_state(ctx, history, stop, {"round": best, "why": why})
    if cfg.loop.rounds > 1:
        ctx.console.print(rounds_table(history, ctx))
        ctx.console.print(f"loop: stopped after round {history[-1]['round']}: {stop['reason']}; "
                          f"exporting round {best} ({why})")
    ctx = ctx.at_round(best)
    m = export.run(ctx)
    timings["export"] = {"seconds": m.seconds, "skipped": m.skipped}
    json_path, html_path = report.write(ctx)
    ev = ctx.manifest("evaluate")
    ctx.console.print(summary_table(ev.results, ev.metric))
    results = {s: {w: r.model_dump(mode="json", exclude_unset=True) for w, r in per.items()}
               for s, per in ev.results.items()}
    exp = ctx.stage_dir("export")
    ggufs = sorted(str(p) for p in (exp / "gguf").glob("*.gguf"))
    ctx.console.print(f"report: {html_path}\nmodel:  {exp / 'merged'}" + "".join(f"\n        {g}" for g in ggufs)
                      + (f"\nollama: {exp / 'Modelfile'}" if (exp / "Modelfile").exists() else ""))
    return {"run_id": ctx.run_id, "stages": timings, "results": results, "report": str(html_path),
            "report_json": str(json_path), "model": str(exp / "merged"), "gguf": ggufs,
            "export": str(exp), "model_card": str(exp / "README.md"),
            "rounds": history, "stop": stop, "kept_round": best, "loop": str(ctx.run_dir / "loop.json")}


def finished(ctx: Context, k: int, recorded: list[dict]) -> bool:
    """Round k is kept as it is: it finished and the loop recorded it in loop.json (never with --force,
    never for a single-round run, where settings changes re-run stages as usual)."""
    if ctx.force or ctx.cfg.loop.rounds == 1:
        return False
    return any(r["round"] == k for r in recorded) and EvaluateManifest.read(ctx.stage_dir("evaluate", k)) is not None


def rounds_so_far(ctx: Context) -> list[dict]:
    """The rounds earlier invocations recorded in loop.json."""
    rounds = (report.loop_state(ctx) or {}).get("rounds")
    return rounds if isinstance(rounds, list) else []


def scores(ctx: Context, k: int, s: str = STOP_SET, who: str = "student") -> list[float] | None:
    path = ctx.stage_dir("evaluate", k) / "scores.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(s, {}).get(who)


def round_record(ctx: Context, k: int) -> dict:
    """What round k did and reached, from its manifests."""
    a = AnalyseManifest.read(ctx.stage_dir("analyse", k))
    g = GenerateManifest.read(ctx.stage_dir("generate", k))
    c = CurateManifest.read(ctx.stage_dir("curate", k))
    t = TrainManifest.read(ctx.stage_dir("train", k))
    e = EvaluateManifest.read(ctx.stage_dir("evaluate", k))
    per_set = {s: {w: {"metric": r.metric, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n}
                   for w, r in per.items() if w in ("student", "student-constrained", "base", "teacher")}
               for s, per in (e.results if e else {}).items()}
    arms = report.arm_spend(g, c, report.topic_names(ctx))
    return {"round": k, "results": per_set, "metric": e.metric if e else None,
            "examples": g.counts.examples if g else 0, "teacher_tokens": g.counts.teacher_tokens if g else 0,
            "cost": g.counts.cost if g else 0.0, "seeded_examples": g.seeded_examples if g else 0,
            "train_size": c.counts.train if c else None, "new_train": c.counts.new_train if c else None,
            "dev_size": c.counts.dev if c else None, "steps": t.counts.steps if t else None,
            "continued": bool(t and t.continued_from),
            "seconds": round(sum(m.seconds for m in (a, g, c, t, e) if m), 1),
            "arms": arms, "allocation": {"policy": a.allocation.policy, "why": a.why, "dev": a.dev.model_dump(),
                                         "uncertainty": a.uncertainty.model_dump(), "new_arms": a.new_arms}
            if a else {"policy": ctx.cfg.generate.policy, "why": [], "dev": None, "uncertainty": None,
                       "new_arms": []}}


def headline(rec: dict, s: str = STOP_SET) -> float | None:
    return ((rec["results"].get(s) or {}).get("student") or {}).get("metric")


def compare(ctx: Context, new: int, old: int) -> dict | None:
    """Paired bootstrap of round `new` against round `old` on the eval items (same items every round)."""
    a, b = scores(ctx, new), scores(ctx, old)
    if not a or not b or len(a) != len(b):
        return None
    d, lo, hi = metrics.paired_diff_ci(a, b, ctx.cfg.loop.confidence, seed=ctx.cfg.seed)
    return {"vs_round": old, "diff": round(d, 4), "low": round(lo, 4), "high": round(hi, 4),
            "significant": lo > 0, "confidence": ctx.cfg.loop.confidence}


def best_before(history: list[dict], k: int) -> int | None:
    earlier = [r for r in history if r["round"] < k and headline(r) is not None]
    return max(earlier, key=lambda r: (headline(r), -r["round"]))["round"] if earlier else None


def gain(ctx: Context, history: list[dict]) -> dict | None:
    k = history[-1]["round"]
    b = best_before(history, k)
    return compare(ctx, k, b) if b is not None else None


def stop_rule(ctx: Context, history: list[dict]) -> dict | None:
    """The first stop rule that fires after the last round of `history`, or None to go on."""
    cfg, last = ctx.cfg, history[-1]
    k = last["round"]
    value = headline(last)
    if cfg.loop.target is not None and value is not None and value >= cfg.loop.target:
        return {"rule": "target", "reason": f"the student's {last['metric']} on {STOP_SET} is {value:.3f}, "
                f"at or above loop.target {cfg.loop.target:g}"}
    b = cfg.budget
    examples = sum(r["examples"] for r in history)
    tokens = sum(r["teacher_tokens"] for r in history)
    cost = sum(r["cost"] for r in history)
    if examples >= b.examples:
        return {"rule": "budget", "reason": f"the example budget is spent ({examples} of {b.examples})"}
    if tokens >= b.teacher_tokens:
        return {"rule": "budget", "reason": f"the teacher token budget is spent ({tokens} of {b.teacher_tokens})"}
    if b.money is not None and cost >= b.money:
        return {"rule": "budget", "reason": f"the money budget is spent ({cost:.4f} of {b.money:g})"}
    if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
        return {"rule": "budget", "reason": f"the wall-time budget is spent ({b.wall_time_minutes:g} min)"}
    if k + 1 >= cfg.loop.rounds:
        return {"rule": "rounds", "reason": f"{k + 1} of loop.rounds = {cfg.loop.rounds} rounds done"}
    p = cfg.loop.patience
    if k >= p:
        tests = [compare(ctx, r, best_before(history, r)) for r in range(k - p + 1, k + 1)]
        if all(t is not None and not t["significant"] for t in tests):
            worst = max(tests, key=lambda t: t["low"])
            return {"rule": "plateau", "reason": f"no significant gain in the last {p} rounds (best: {worst['diff']:+.3f} "
                    f"vs round {worst['vs_round']}, {worst['confidence']:.0%} interval [{worst['low']:+.3f}, "
                    f"{worst['high']:+.3f}] reaches zero)", "tests": tests}
    return None


def kept_round(ctx: Context, history: list[dict]) -> tuple[int, str]:
    """The last round, unless an earlier one is significantly better on eval."""
    last = history[-1]["round"]
    for r in sorted(history, key=lambda r: -(headline(r) or -1)):
        if r["round"] == last:
            break
        t = compare(ctx, r["round"], last)
        if t and t["significant"]:
            return r["round"], (f"significantly better than the last round on {STOP_SET} "
                                f"({t['diff']:+.3f}, interval [{t['low']:+.3f}, {t['high']:+.3f}])")
    return last, "the last round" + ("" if len(history) == 1 else "; no earlier round is significantly better")


def write_state(ctx: Context, history: list[dict], stop: dict | None, kept: dict | None) -> None:
    cfg = ctx.cfg
    atomic_write_json(ctx.run_dir / "loop.json", {
        "run_id": ctx.run_id, "policy": cfg.loop.policy, "rounds_max": cfg.loop.rounds, "train": cfg.loop.train,
        "failure_share": cfg.loop.failure_share, "stop_set": STOP_SET, "rounds": history, "stop": stop,
        "kept": kept, "budget": {"examples": cfg.budget.examples, "teacher_tokens": cfg.budget.teacher_tokens,
                                 "money": cfg.budget.money, "wall_time_minutes": cfg.budget.wall_time_minutes},
        "spent": {"examples": sum(r["examples"] for r in history),
                  "teacher_tokens": sum(r["teacher_tokens"] for r in history),
                  "cost": round(sum(r["cost"] for r in history), 6),
                  "seconds": round(sum(r["seconds"] for r in history), 1)},
        "remaining_failures": read_jsonl(ctx.stage_dir("evaluate", history[-1]["round"]) / "failures.jsonl")[:50]})


def rounds_table(history: list[dict], ctx: Context) -> Table:
    t = Table(title=f"rounds ({ctx.cfg.loop.policy})")
    for col in ("round", "examples", "train", f"{STOP_SET} (95% CI)", "gold (95% CI)", "gain vs best earlier"):
        t.add_column(col, justify="left" if col == "round" else "right", no_wrap=True)
    for r in history:
        cells = []
        for s in (STOP_SET, "gold"):
            x = (r["results"].get(s) or {}).get("student")
            cells.append(f"{x['metric']:.3f} [{x['ci_low']:.2f}, {x['ci_high']:.2f}]" if x and x["metric"] is not None
                         else "—")
        gn = r.get("gain")
        t.add_row(str(r["round"]), str(r["examples"]), str(r["train_size"]), *cells,
                  f"{gn['diff']:+.3f} [{gn['low']:+.2f}, {gn['high']:+.2f}]" if gn else "—")
    return t


def summary_table(results: dict[str, dict[str, SystemResult]], metric: str) -> Table:
    """The headline metric per set and system; every other figure is in report.json and report.html."""
    t = Table(title="student vs base vs teacher")
    for col in ("set", "model", metric, "95% CI", "n", "items/s", "p50 ms", "size MB"):
        t.add_column(col, justify="left" if col in ("set", "model") else "right", no_wrap=True)
    for s, per in results.items():
        for who, r in per.items():
            t.add_row(s, who, f"{r.metric:.3f}", f"[{r.ci_low:.2f}, {r.ci_high:.2f}]", str(r.n),
                      f"{r.items_per_s:.1f}", f"{(r.latency_ms or {}).get('p50', float('nan')):.0f}",
                      "—" if r.size_mb is None else f"{r.size_mb:.0f}")
    return t
