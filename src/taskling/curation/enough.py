"""Is there enough to train on? The floors curate's output must clear before training, said in the
terminal, in `taskling status` and in the stop message, with why (the funnel's biggest losses) and
what to do.

Floors (train.min_per_label, train.min_eval): generated training examples per label (a classify
task; per task for the other types), the task's own examples not counted, and held-out eval items.
Below a floor the run stops before training unless the user insists (`--force`); under
THIN_FACTOR times a floor, it goes on with a warning. A run that trains on three examples gives a
student that answers everything the same way, and nothing else would say so.
"""
from __future__ import annotations

from collections import Counter

from ..core.errors import TasklingError
from ..core.manifests import CurateManifest, TrainManifest
from ..core.tasktype import get as task_type
from ..core.workspace import Context, read_jsonl

THIN_FACTOR = 5
# What to do about curate's biggest losses, by the start of their reason.
ADVICE = (("near duplicate", "the teacher repeats itself: raise teacher.temperature or add documents"),
          ("exact duplicate", "the teacher repeats itself (or the task's examples): raise teacher.temperature"),
          ("semantic duplicate", "the teacher repeats itself: raise teacher.temperature or add documents"),
          ("not grounded", "the examples stray from their documents: a stronger teacher, or lower curate.min_grounding"),
          ("overlaps eval", "many examples copy held-out ones: add documents"),
          ("not in the task's language", "set curate.language, or write task.examples in the documents' language"),
          ("judge", "the judge refuses most: a stronger teacher, or lower curate.judge_threshold"))


def advice(reason: str) -> str:
    for start, what in ADVICE:
        if reason.startswith(start):
            return what
    return "a stronger teacher (teacher.backend: openai), or more documents"


def assess(ctx: Context) -> dict | None:
    """The round's training data against the floors: per kind (label) its generated training examples,
    the held-out count, what is below a floor ("short") or near one ("thin"), the funnel's biggest
    losses and what to do; None before curate has finished."""
    m = CurateManifest.read(ctx.stage_dir("curate"))
    if m is None:
        return None
    cfg = ctx.cfg
    rows = read_jsonl(ctx.stage_dir("curate") / "train.jsonl")
    generated = [r for r in rows if r.get("source") != "task example"]
    labelled = task_type(cfg.task.type).labelled and bool(cfg.task.labels)
    per = Counter(str(r.get("label")) for r in generated) if labelled else Counter({"all": len(generated)})
    kinds = {lab: per.get(lab, 0) for lab in (cfg.task.labels if labelled else ["all"])}
    floor, eval_floor = cfg.train.min_per_label, cfg.train.min_eval
    short = [f"label '{k}' has {n} generated training example(s) (floor {floor})" if labelled else
             f"{n} generated training example(s) (floor {floor})" for k, n in kinds.items() if n < floor]
    if m.counts.eval < eval_floor:
        short.append(f"{m.counts.eval} held-out eval item(s) (floor {eval_floor})")
    thin = [f"label '{k}': {n}" if labelled else f"{n} training examples" for k, n in kinds.items()
            if floor <= n < THIN_FACTOR * floor]
    if eval_floor <= m.counts.eval < THIN_FACTOR * eval_floor:
        thin.append(f"{m.counts.eval} held-out items")
    losses = sorted(m.rejections.items(), key=lambda kv: -kv[1])[:3]
    return {"per_label" if labelled else "per_task": kinds, "eval": m.counts.eval, "generated": m.counts.generated,
            "floors": {"train.min_per_label": floor, "train.min_eval": eval_floor},
            "short": short, "thin": thin,
            "losses": [{"reason": r, "count": n, "todo": advice(r)} for r, n in losses]}


def why_line(a: dict) -> str:
    """The funnel's biggest losses and what to do, in one line."""
    if not a["losses"]:
        return f"curate kept what it got; raise budget.examples (the teacher wrote {a['generated']})"
    top = a["losses"][0]
    return (f"of {a['generated']} generated, curate dropped " + ", ".join(f"{x['count']} {x['reason']}"
                                                                          for x in a["losses"])
            + f"; {top['todo']}; or raise budget.examples")


def trained_on_this(ctx: Context) -> bool:
    """Whether the round's student already trained on exactly this curate output (asked once, answered)."""
    t, c = TrainManifest.read(ctx.stage_dir("train")), CurateManifest.read(ctx.stage_dir("curate"))
    return t is not None and c is not None and (t.inputs.get("curate") or {}).get("fingerprint") == c.fingerprint


def gate(ctx: Context) -> dict | None:
    """Before training: stop (TasklingError) when the round's data is below a floor, unless ctx.force;
    warn when it is thin. The assessment, or None before curate has finished."""
    a = assess(ctx)
    if a is None or trained_on_this(ctx):
        return a
    if a["short"] and not ctx.force:
        raise TasklingError(f"too little to train on in round {ctx.round}: {'; '.join(a['short'])}. "
                            f"{why_line(a)}. To train anyway: --force (or lower train.min_per_label / "
                            "train.min_eval)")
    if a["short"] or a["thin"]:
        ctx.console.print(f"[yellow]training on little: {'; '.join(a['short'] + a['thin'])}. {why_line(a)}[/]",
                          highlight=False, soft_wrap=True)
    return a
