"""The whole loop, top to bottom: ingest, generate, curate, train, evaluate,
export, then the report. Each stage is skipped when its inputs and settings
are unchanged, so running it again after a crash or kill continues where it
stopped.
"""
from __future__ import annotations

from rich.table import Table

from . import report
from .stages import curate, evaluate, export, generate, ingest, train
from .workspace import Context


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    timings = {}
    for name, stage in (("ingest", ingest), ("generate", generate), ("curate", curate),
                        ("train", train), ("evaluate", evaluate), ("export", export)):
        m = stage.run(cfg, ctx)
        timings[name] = {"seconds": m["seconds"], "skipped": m["skipped"]}
    json_path, html_path = report.write(ctx)
    results = ctx.manifest("evaluate")["results"]
    ctx.console.print(summary_table(results, ctx.manifest("evaluate")["metric"]))
    exp = ctx.stage_dir("export")
    ggufs = sorted(str(p) for p in (exp / "gguf").glob("*.gguf"))
    ctx.console.print(f"report: {html_path}\nmodel:  {exp / 'merged'}" + "".join(f"\n        {g}" for g in ggufs)
                      + (f"\nollama: {exp / 'Modelfile'}" if (exp / "Modelfile").exists() else ""))
    return {"run_id": ctx.run_id, "stages": timings, "results": results, "report": str(html_path),
            "report_json": str(json_path), "model": str(exp / "merged"), "gguf": ggufs,
            "export": str(exp), "model_card": str(exp / "README.md")}


def summary_table(results: dict, metric: str) -> Table:
    """The headline metric per set and system; every other figure is in report.json and report.html."""
    t = Table(title="student vs base vs teacher")
    for col in ("set", "model", metric, "95% CI", "n", "items/s", "p50 ms", "size MB"):
        t.add_column(col, justify="left" if col in ("set", "model") else "right", no_wrap=True)
    for s, per in results.items():
        for who, r in per.items():
            t.add_row(s, who, f"{r['metric']:.3f}", f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]", str(r["n"]),
                      f"{r['items_per_s']:.1f}", f"{(r.get('latency_ms') or {}).get('p50', float('nan')):.0f}",
                      "—" if r.get("size_mb") is None else f"{r['size_mb']:.0f}")
    return t
