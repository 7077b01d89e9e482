"""The run report: report.json (every figure) and a self-contained report.html.

`build(ctx)` gathers what the finished stages wrote; `write(ctx)` saves both
files under runs/<id>/. `taskling report` rebuilds them at any time.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..core.manifests import BY_STAGE, CurateManifest, GenerateManifest
from ..core.workspace import STAGES, Context, atomic_write_json, atomic_write_text, read_jsonl
from ..curation import enough
from ..data.pile import Pile
from ..teacher import allocate
from ..teacher.allocate import arm_label
from ..teacher.calls import CallLog

# What the report keeps of each arm an analyse stage weighed (analysis.json has more).
ARM_FIELDS = ("name", "dev_items", "dev_errors", "error_mean", "uncertainty", "keep_rate", "weight", "jobs_total",
              "new")


def topic_names(ctx: Context) -> dict:
    if not ctx.ws.pile_db.exists():
        return {}
    with Pile(ctx.ws.pile_db) as pile:
        return {t["id"]: t["label"] for t in pile.topics()}


def arm_spend(generate: GenerateManifest | None, curate: CurateManifest | None, topics: dict) -> list[dict]:
    """Per arm of a generate manifest: its jobs, examples, what curate kept, tokens and cost
    (the report's spend per arm, and each round's arms in the loop)."""
    kept = curate.kept_by_arm if curate else {}
    return [{"arm": r.arm, "name": arm_label(tuple(r.arm), topics), "jobs": r.jobs, "seeded_jobs": r.seeded_jobs,
             "examples": r.examples, "kept": kept.get(allocate.arm_key(r.arm), 0), "tokens": r.tokens, "cost": r.cost}
            for r in (generate.jobs_by_arm if generate else [])]


def loop_state(ctx: Context) -> dict | None:
    """runs/<id>/loop.json (the loop's rounds, stop rule and kept round), or None when there is none
    or it is half written."""
    state = _read_json(ctx.run_dir / "loop.json")
    return state if isinstance(state, dict) else None


def kept_round(ctx: Context) -> int | None:
    """The round the loop exported (loop.json), if the run went through the loop."""
    loop = loop_state(ctx) or {}
    kept = loop.get("kept")
    return kept.get("round") if isinstance(kept, dict) and isinstance(kept.get("round"), int) else None


def build(ctx: Context) -> dict:
    """Everything the finished stages of `ctx.round` wrote (a run rebuilt by `taskling report` shows
    the round the loop exported), and the loop's rounds."""
    cfg = ctx.cfg
    from ..core import tasktype

    rep: dict = {"run_id": ctx.run_id, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "task": {"name": cfg.task.name, "type": cfg.task.type, "description": cfg.task.description,
                          "metric": tasktype.get(cfg.task.type).metric}, "stages": []}
    manifests = {s: m for s in STAGES if (m := BY_STAGE[s].read(ctx.stage_dir(s))) is not None}
    rep["stages"] = [{"stage": s, "round": m.round, "seconds": m.seconds, "skipped": False,
                      "counts": m.counts.model_dump(mode="json", exclude_unset=True)} for s, m in manifests.items()]
    if "generate" in manifests:
        g = manifests["generate"]
        rep["generation"] = {"stopped": g.stopped, "rates": g.rates, "failures_by_kind": g.failures_by_kind,
                             "examples_by_arm": g.examples_by_arm, "teacher_health": g.teacher_health,
                             "counts": g.counts.model_dump(mode="json", exclude_unset=True),
                             "spend_by_arm": arm_spend(g, manifests.get("curate"), topic_names(ctx))}
    if "curate" in manifests:
        c = manifests["curate"]
        rep["funnel"] = [f.model_dump(mode="json") for f in c.funnel]
        rep["rejections"] = c.rejections
        rep["split"] = c.split.model_dump(mode="json", exclude_unset=True, exclude={"held_out_units"})
        rep["curation"] = {"rejected_samples": c.rejected_samples, "labels": c.labels, "topics": c.topics,
                           "grounding": c.grounding, "judge": c.judge, "pii": c.pii, "review": c.review,
                           "language": c.language}
        rep["enough"] = enough.assess(ctx)
    if "train" in manifests:
        rep["training"] = training(ctx, manifests["train"])
    if "evaluate" in manifests:
        rep.update(evaluation(ctx, manifests["evaluate"], rep["task"]["metric"]))
    if "export" in manifests:
        e = manifests["export"]
        rep["export"] = {"dir": str(ctx.stage_dir("export")), "artifacts": e.artifacts, "verified": e.verified_on,
                         "tolerance": e.tolerance, "student_metric": e.student_metric, "failed": e.failed}
    sources = label_sources(manifests)
    if sources:
        rep["label_sources"] = sources
    spread = cluster_work(manifests)
    if spread:
        rep["cluster"] = spread
    loop = loop_rounds(ctx)
    if loop is not None:
        rep["loop"] = loop
    log = CallLog(ctx.ws.calls_db) if ctx.ws.calls_db.exists() else None
    try:
        if log is not None:
            rep["teacher_calls"] = log.totals()
        rep["costs"] = costs(log, manifests)
    finally:
        if log is not None:
            log.close()
    if manifests:
        rep["versions"] = list(manifests.values())[-1].versions
    return rep


def training(ctx: Context, t) -> dict:
    """The train stage's curves and figures (loss.json and its manifest)."""
    loss = _read_json(ctx.stage_dir("train") / "loss.json") or {}
    return {"loss": loss.get("loss", []), "eval_loss": loss.get("eval_loss", []), "steps": t.counts.steps,
            "planned_steps": t.counts.planned_steps, "tokens_per_s": t.tokens_per_s, "seconds": t.train_seconds,
            "trainable_params": t.counts.trainable_params, "best_step": t.best_step,
            "best_eval_loss": t.best_eval_loss, "stopped_early": t.stopped_early, "stop_reason": t.stop_reason,
            "lr": t.lr, "precision": t.precision, "device": t.device, "mode": t.mode, "selection": t.selection,
            "open_book": t.open_book}


def evaluation(ctx: Context, ev, metric: str) -> dict:
    """The evaluate stage's results per set and system, the details apart, failures and the summary line."""
    detail = ("per_label", "per_class", "confusion", "per_field")
    results = {s: {w: r.model_dump(mode="json", exclude_unset=True, exclude=set(detail)) for w, r in per.items()}
               for s, per in ev.results.items()}
    return {"results": results,
            "per_label": {s: {w: r.per_label for w, r in per.items() if r.per_label} for s, per in ev.results.items()},
            "evaluation": {k: {s: {w: getattr(r, k) for w, r in per.items() if getattr(r, k)}
                               for s, per in ev.results.items()} for k in ("confusion", "per_class", "per_field")}
            | {"error_rates": ev.error_rates, "constrained": ev.constrained, "systems": ev.systems,
               "retrieval": ev.retrieval},
            "failures": read_jsonl(ctx.stage_dir("evaluate") / "failures.jsonl")[:200],
            "summary": summary(results, metric)}


def _read_json(path: Path):
    """A JSON file's content, or None when it is missing or half written (reports are built mid-run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def loop_rounds(ctx: Context) -> dict | None:
    """loop.json once the loop has done more than one round, each later round with the arms its analyse
    stage weighed (`analysis_arms`); None for a single-round run."""
    loop = loop_state(ctx)
    if loop is None or not isinstance(loop.get("rounds"), list) or len(loop["rounds"]) < 2:
        return None
    for r in loop["rounds"]:
        k = r.get("round") if isinstance(r, dict) else None
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            continue
        analysis = _read_json(ctx.stage_dir("analyse", k) / "analysis.json")
        arms = analysis.get("arms") if isinstance(analysis, dict) else None
        if isinstance(arms, list):
            r["analysis_arms"] = [{f: a.get(f) for f in ARM_FIELDS} for a in arms if isinstance(a, dict)]
    return loop


def cluster_work(manifests: dict) -> dict:
    """What the cluster did in each stage that ran on one: per-node work, work lost with nodes
    that died, rescheduled shards, training restarts."""
    out: dict = {}
    ing = (manifests["ingest"].cluster if "ingest" in manifests else None) or {}
    gen = manifests["generate"].cluster if "generate" in manifests else None
    for name, pool in (("ingest: convert", ing.get("convert")), ("ingest: embed", ing.get("embed")),
                       ("generate: teacher", gen)):
        if isinstance(pool, dict):
            out.setdefault("pools", []).append({"stage": name, **pool})
    train = manifests["train"].cluster if "train" in manifests else None
    if isinstance(train, dict):
        out["training"] = train
    return out


def costs(log: CallLog | None, manifests: dict) -> dict:
    """What the run cost: teacher and judge calls (tokens, money; cached replies are free and not
    counted) and the seconds of each stage."""
    def spent(purposes):
        if log is None:
            return None
        rows = [log.totals(p) for p in purposes]
        out = {k: sum(r[k] for r in rows) for k in ("calls", "prompt_tokens", "completion_tokens", "cost", "failed")}
        return {"calls": out["calls"], "input_tokens": out["prompt_tokens"], "output_tokens": out["completion_tokens"],
                "money": round(out["cost"], 6), "failed": out["failed"]} if out["calls"] else None
    seconds = {s: m.seconds for s, m in manifests.items()}
    teacher, judge = spent(("generate", "evaluate")), spent(("judge", "consistency"))
    return {"teacher": teacher, "judge": judge,
            "train_seconds": manifests["train"].train_seconds if "train" in manifests else None,
            "evaluate_seconds": seconds.get("evaluate"), "stage_seconds": seconds,
            "total_seconds": round(sum(v for v in seconds.values() if v), 1),
            "money_total": round(sum((x or {}).get("money") or 0 for x in (teacher, judge)), 6)}


def summary(results: dict, metric: str) -> str:
    """The report's headline: on gold (else the first set), the tuned student against the strongest
    other system, said plainly when the student loses; then every system's figure."""
    key = "gold" if "gold" in results else next(iter(results), None)
    if key is None:
        return ""
    per = results[key]
    parts = [f"{w} {r['metric']:.2f}" for w, r in per.items() if r.get("metric") is not None]
    return f"{headline(per, metric)}{metric} on {key} (n={next(iter(per.values()))['n']}): " + ", ".join(parts) + "."


def strongest_other(per: dict) -> str | None:
    """The best system on this set that is not the tuned student (base, few-shot, constrained base, teacher,
    label model...)."""
    others = [w for w, r in per.items() if not w.startswith("student") and r.get("metric") is not None]
    return max(others, key=lambda w: per[w]["metric"]) if others else None


def headline(per: dict, metric: str) -> str:
    """One or two sentences comparing the student (system -> {metric, ci_low, ci_high}) with the strongest
    other system and its own base; also what the model card says."""
    s = per.get("student")
    if not s or s.get("metric") is None:
        return ""
    out = []
    best = strongest_other(per)
    if best is not None:
        o = per[best]
        fig = f"({s['metric']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] against {o['metric']:.2f} " \
              f"[{o['ci_low']:.2f}, {o['ci_high']:.2f}])"
        if s["ci_low"] > o["ci_high"]:
            out.append(f"The tuned student beats every other system; the strongest, {best}, is behind it {fig}, "
                       "95% intervals apart.")
        elif s["metric"] > o["metric"]:
            out.append(f"The tuned student scores above the strongest other system, {best} {fig}, but the "
                       "intervals overlap.")
        elif s["ci_high"] < o["ci_low"]:
            out.append(f"The tuned student loses to {best} {fig}, 95% intervals apart: on this {metric}, "
                       f"{best} is the better choice.")
        else:
            out.append(f"The tuned student does not beat {best} {fig}; the intervals overlap.")
    b = per.get("base")
    if b and b.get("metric") is not None and best != "base":
        out.append("It beats its base model." if s["ci_low"] > b["ci_high"] else
                   "It does not clearly beat its base model.")
    return " ".join(out) + " " if out else ""


def write(ctx: Context) -> tuple[Path, Path]:
    from .html import render_html

    rep = build(ctx)
    jpath, hpath = ctx.run_dir / "report.json", ctx.run_dir / "report.html"
    atomic_write_json(jpath, rep)
    atomic_write_text(hpath, render_html(rep))
    return jpath, hpath


def label_sources(manifests: dict) -> dict | None:
    """The label model's sources (curate, label:): per source its coverage, estimated accuracy
    (with interval) and per label, its accuracy measured on gold, and the student beside them."""
    lm = manifests["curate"].label_model if "curate" in manifests else None
    if lm is None:
        return None
    fit = lm.fit or {}
    stats = {s.get("name"): s for s in fit.get("stats", []) if isinstance(s, dict)}
    measured = lm.measured
    rows = []
    for name in lm.sources:
        st, m = stats.get(name, {}), measured.get(name, {})
        rows.append({"source": name, "coverage": st.get("coverage"), "votes": st.get("votes"),
                     "estimated": st.get("accuracy"), "estimated_ci": st.get("accuracy_ci"),
                     "measured": m.get("accuracy"), "measured_n": m.get("voted"),
                     "agreement": st.get("agreement"), "conflict": st.get("conflict"),
                     "per_label": {lab: v.get("accuracy") for lab, v in (st.get("per_label") or {}).items()}}
                    | ({"on_human": h.get("accuracy"), "on_human_n": h.get("voted")}
                       if (h := (lm.measured_on_human or {}).get(name)) else {}))
    res = manifests["evaluate"].results.get("gold", {}) if "evaluate" in manifests else {}
    student = {w: res[w].metric for w in ("student", "student-constrained", "teacher") if w in res}
    return {"mined_rules": lm.mined_rules, "pile": (lm.auto or {}).get("pile"),
            "model": lm.model, "items": lm.items, "relabelled": lm.relabelled,
            "dropped_unsure": lm.dropped_unsure, "calibrated_with_gold": lm.calibrated_with_gold,
            "gold_items": lm.gold_items, "label_model_on_gold": measured.get("label_model"),
            "human_items": lm.human_items,
            "prior": fit.get("prior"), "sources": rows, "on_gold": student}

