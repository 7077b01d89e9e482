"""Is there enough to train on? The floors curate's output must clear before training, said in the
terminal, in `taskling status`, in the report and in the stop message, with why (the funnel's
biggest losses) and what to do.

Floors, per kind of output the task type declares (`TaskType.kinds`), counted over the generated
training examples (the task's own examples not counted): per label (train.min_per_label, classify;
the other types count all their examples against it), examples that give each field a value
(train.min_per_field, extract), distinct outputs and the source documents they come from
(train.min_distinct_outputs, train.min_documents: answer, generate); and held-out eval items
(train.min_eval). Below a floor the run stops before training unless the user insists (`--force`);
under THIN_FACTOR times a floor, it goes on with a warning. A run that trains on three examples, or
on forty with one answer, gives a student that answers everything the same way, and nothing else
would say so.
"""
from __future__ import annotations

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
    """The round's training data against the floors: each kind the task type counts (per label, per
    field, distinct outputs, ...) with its floor, the held-out count, what is below a floor ("short")
    or near one ("thin"), the funnel's biggest losses and what to do; None before curate has finished."""
    m = CurateManifest.read(ctx.stage_dir("curate"))
    if m is None:
        return None
    cfg = ctx.cfg
    rows = read_jsonl(ctx.stage_dir("curate") / "train.jsonl")
    generated = [r for r in rows if r.get("source") != "task example"]
    kinds = task_type(cfg.task.type).kinds(cfg.task, generated)
    floor = {k.floor: getattr(cfg.train, k.floor) for k in kinds} | {"min_eval": cfg.train.min_eval}
    short = [f"{k.says} (floor {floor[k.floor]}): {k.todo}" for k in kinds if k.n < floor[k.floor]]
    if m.counts.eval < floor["min_eval"]:
        short.append(f"{m.counts.eval} held-out eval item(s) (floor {floor['min_eval']})")
    thin = [f"{k.name}: {k.n}" for k in kinds if floor[k.floor] <= k.n < THIN_FACTOR * floor[k.floor]]
    if floor["min_eval"] <= m.counts.eval < THIN_FACTOR * floor["min_eval"]:
        thin.append(f"{m.counts.eval} held-out items")
    losses = sorted(m.rejections.items(), key=lambda kv: -kv[1])[:3]
    return {"kinds": [{"kind": k.name, "n": k.n, "floor": f"train.{k.floor}", "todo": k.todo} for k in kinds],
            "eval": m.counts.eval, "generated": m.counts.generated,
            "floors": {f"train.{name}": n for name, n in floor.items()},
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


def lowered(a: dict) -> list[str]:
    """The floors a short assessment is below (what to lower to train on it anyway)."""
    below = [k["floor"] for k in a["kinds"] if k["n"] < a["floors"][k["floor"]]]
    if a["eval"] < a["floors"]["train.min_eval"]:
        below.append("train.min_eval")
    return list(dict.fromkeys(below))


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
                            f"{why_line(a)}. To train anyway: --force (or lower {' / '.join(lowered(a))})")
    if a["short"] or a["thin"]:
        ctx.console.print(f"[yellow]training on little: {'; '.join(a['short'] + a['thin'])}. {why_line(a)}[/]",
                          highlight=False, soft_wrap=True)
    return a
