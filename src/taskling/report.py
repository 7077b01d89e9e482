"""The run report: report.json (every figure) and a self-contained report.html.

`build(ctx)` gathers what the finished stages wrote; `write(ctx)` saves both
files under runs/<id>/. `taskling report` rebuilds them at any time.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .calls import CallLog
from .workspace import STAGES, Context, atomic_write_json, atomic_write_text, read_jsonl, read_manifest


def build(ctx: Context) -> dict:
    cfg = ctx.cfg
    from . import tasks

    rep: dict = {"run_id": ctx.run_id, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "task": {"name": cfg.task.name, "type": cfg.task.type, "description": cfg.task.description,
                          "metric": tasks.get(cfg.task).METRIC}, "stages": []}
    manifests = {}
    for s in STAGES:
        m = read_manifest(ctx.stage_dir(s))
        if m:
            manifests[s] = m
            rep["stages"].append({"stage": s, "round": m.get("round", 0), "seconds": m.get("seconds"),
                                  "skipped": False, "counts": m.get("counts", {})})
    if "generate" in manifests:
        g = manifests["generate"]
        rep["generation"] = {k: g.get(k) for k in ("stopped", "rates", "failures_by_kind", "examples_by_arm",
                                                   "teacher_health")}
    if "curate" in manifests:
        rep["funnel"] = manifests["curate"].get("funnel", [])
        rep["rejections"] = manifests["curate"].get("rejections", {})
        rep["split"] = {k: v for k, v in manifests["curate"].get("split", {}).items() if k != "held_out_units"}
        c = manifests["curate"]
        rep["curation"] = {k: c.get(k) for k in ("rejected_samples", "labels", "topics", "grounding", "judge", "pii",
                                                 "review", "language")}
    if "train" in manifests:
        t = manifests["train"]
        loss = {}
        lp = ctx.stage_dir("train") / "loss.json"
        if lp.exists():
            import json

            loss = json.loads(lp.read_text())
        rep["training"] = {"loss": loss.get("loss", []), "eval_loss": loss.get("eval_loss", []),
                           "steps": t["counts"].get("steps"), "tokens_per_s": t.get("tokens_per_s"),
                           "seconds": t.get("train_seconds"), "trainable_params": t["counts"].get("trainable_params")}
    if "evaluate" in manifests:
        res = manifests["evaluate"].get("results", {})
        rep["results"] = {s: {w: {k: v for k, v in r.items() if k != "per_label"} for w, r in per.items()}
                          for s, per in res.items()}
        rep["per_label"] = {s: {w: r.get("per_label", {}) for w, r in per.items() if r.get("per_label")}
                            for s, per in res.items()}
        rep["failures"] = read_jsonl(ctx.stage_dir("evaluate") / "failures.jsonl")[:200]
        rep["summary"] = summary(res, rep["task"]["metric"])
    if "export" in manifests:
        e = manifests["export"]
        rep["export"] = {"dir": str(ctx.stage_dir("export")), "artifacts": e.get("artifacts", []),
                         "verified": e.get("verified")}
    if ctx.ws.calls_db.exists():
        log = CallLog(ctx.ws.calls_db)
        rep["teacher_calls"] = log.totals()
        log.close()
    if manifests:
        rep["versions"] = list(manifests.values())[-1].get("versions", {})
    return rep


def summary(results: dict, metric: str) -> str:
    key = "gold" if "gold" in results else next(iter(results), None)
    if key is None:
        return ""
    per = results[key]
    parts = [f"{w} {r['metric']:.2f}" for w, r in per.items() if r.get("metric") is not None]
    verdict = ""
    if "student" in per and "base" in per:
        s, b = per["student"], per["base"]
        if s["ci_low"] > b["ci_high"]:
            verdict = "The tuned student beats its base (95% intervals do not overlap). "
        elif s["metric"] > b["metric"]:
            verdict = "The tuned student scores above its base, but the intervals overlap. "
        else:
            verdict = "The tuned student does not beat its base. "
    return f"{verdict}{metric} on {key} (n={next(iter(per.values()))['n']}): " + ", ".join(parts) + "."


def write(ctx: Context) -> tuple[Path, Path]:
    from .report_html import render_html

    rep = build(ctx)
    jpath, hpath = ctx.run_dir / "report.json", ctx.run_dir / "report.html"
    atomic_write_json(jpath, rep)
    atomic_write_text(hpath, render_html(rep))
    return jpath, hpath
