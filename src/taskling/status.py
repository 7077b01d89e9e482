"""Where a workspace stands, on one screen: `taskling status` (and `Workspace.status()`).

Each stage of the round is "done", "stale" (with why: the settings it reads that changed since it
ran, a stage it needs that ran again or is stale itself, source files added, changed or gone) or
"not run" ("partial" when work of an unfinished run is there); then the pile's size per format and,
for classify, per label pool; the last figures (curate's sets, evaluate's metric per system); whether
there is enough to train on (curation.enough's floors, with the funnel's biggest losses); and the
next command to run. Staleness is judged from what a stage declares (core.stage.StageSpec):
the config sections it reads and the finished manifests it needs, as its fingerprint is built;
settings a stage adds on its own (generate's and curate's extras) are not compared.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core.manifests import BY_STAGE, Manifest
from .core.stage import FROM_ROUND_ONE, PATH, settings_of
from .core.workspace import Context, sha256_file


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (lists and scalars are leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def changed_settings(ctx: Context, name: str, m: Manifest) -> list[str]:
    """The settings the stage reads whose value differs from the one it ran with: "train.steps 40 -> 60"."""
    spec = importlib.import_module(f"taskling.stages.{name}").SPEC
    now, then = flat(settings_of(ctx.cfg, spec.reads)), flat(m.settings)
    return [f"{k} {then.get(k, '(unset)')!s:.40} -> {v!s:.40}" for k, v in now.items() if k in then and then[k] != v]


def changed_sources(ctx: Context, m: Manifest) -> list[str]:
    """Source files added, changed or gone since ingest ran (by path and sha256)."""
    from .data.ingest import display_path, find_sources

    files, _, _ = find_sources(ctx.cfg)
    then = {row[0]: row[1] for row in m.inputs.get("files", [])}
    now = {}
    for f in files:
        try:
            now[display_path(ctx.cfg, f)] = sha256_file(f)
        except OSError:
            now[display_path(ctx.cfg, f)] = None
    added = [p for p in now if p not in then]
    gone = [p for p in then if p not in now]
    edited = [p for p in now if p in then and now[p] != then[p]]
    return [f"{len(x)} source file(s) {what} ({', '.join(x[:3])}{', ...' if len(x) > 3 else ''})"
            for x, what in ((added, "added"), (edited, "changed"), (gone, "gone")) if x]


def stage_states(ctx: Context) -> list[dict]:
    """Each stage of the round in order: state and why."""
    out: list[dict] = []
    state_of: dict[str, str] = {}
    for name in PATH:
        d = ctx.stage_dir(name)
        m = BY_STAGE[name].read(d)
        if m is None:
            state = "partial" if d.exists() and any(d.iterdir()) else "not run"
            out.append({"stage": name, "state": state, "why": []})
            state_of[name] = state
            continue
        spec = importlib.import_module(f"taskling.stages.{name}").SPEC
        why = changed_settings(ctx, name, m)
        for need in spec.needs:
            if ctx.round == 0 and need in FROM_ROUND_ONE:
                continue
            up = BY_STAGE[need].read(ctx.stage_dir(need))
            rec = m.inputs.get(need) or {}
            if up is None:
                why.append(f"{need} is not finished any more")
            elif rec.get("fingerprint") != up.fingerprint or rec.get("digest") != up.digest:
                why.append(f"{need} ran again since")
            elif state_of.get(need) == "stale":
                why.append(f"{need} is stale")
        if name == "ingest":
            why += changed_sources(ctx, m)
        state = "stale" if why else "done"
        state_of[name] = state
        out.append({"stage": name, "state": state, "why": why, "finished": m.started, "seconds": m.seconds})
    return out


def pile_summary(ctx: Context) -> dict | None:
    """The pile's documents and chunks per format and, for classify, each label pool's size."""
    from .data.pile import Pile
    from .tasks.classify import label_pools

    if not ctx.ws.pile_db.exists():
        return None
    with Pile(ctx.ws.pile_db) as pile:
        st = pile.stats()
        pools = label_pools(ctx.cfg.task, pile, ctx.cfg.generate.pool_per_label) \
            if ctx.cfg.task.type == "classify" else []
    return {"documents": st["documents"], "chunks": st["chunks"], "tokens": st["tokens"],
            "by_format": st["by_format"], "label_pools": pools}


def figures(ctx: Context) -> dict:
    """The last figures: examples through curate, the student's training, evaluate's metric per system."""
    out: dict = {}
    gen = BY_STAGE["generate"].read(ctx.stage_dir("generate"))
    if gen is not None:
        out["generated"] = gen.counts.examples
    cur = BY_STAGE["curate"].read(ctx.stage_dir("curate"))
    if cur is not None:
        out["curated"] = {"train": cur.counts.train, "eval": cur.counts.eval, "rejected": cur.counts.rejected}
    tr = BY_STAGE["train"].read(ctx.stage_dir("train"))
    if tr is not None:
        out["train"] = {"steps": tr.counts.steps, "final_loss": tr.final_loss, "eval_loss": tr.eval_loss}
    ev = BY_STAGE["evaluate"].read(ctx.stage_dir("evaluate"))
    if ev is not None:
        out["evaluate"] = {"metric": ev.metric, "sets": {
            s: {sys: {"metric": r.metric, "n": r.n} for sys, r in res.items()} for s, res in ev.results.items()}}
    return out


def next_command(stages: list[dict], pile: dict | None) -> str:
    """What to run next: the first stage not done; all done, serve the model."""
    if pile is None or not pile["chunks"]:
        return "taskling ingest"
    for s in stages:
        if s["state"] != "done":
            return f"taskling {s['stage']}" if s["stage"] != "ingest" or s["state"] != "stale" else "taskling ingest"
    return "taskling serve (or: taskling try \"an input\")"


def status(ctx: Context) -> dict:
    """The whole picture for one screen (what `taskling status --json` prints)."""
    from .curation.enough import assess

    stages = stage_states(ctx)
    pile = pile_summary(ctx)
    enough = assess(ctx)
    nxt = next_command(stages, pile)
    if enough and enough["short"] and nxt == "taskling train":
        nxt = "more data first (see 'enough'), or taskling train --force"
    return {"task": ctx.cfg.task.name, "type": ctx.cfg.task.type, "run": str(ctx.run_id), "round": ctx.round,
            "stages": stages, "pile": pile, "figures": figures(ctx), "enough": enough, "next": nxt}


def lines(st: dict) -> list[str]:
    """The status as lines for the terminal."""
    out = [f"{st['task']} ({st['type']}), run {st['run']}, round {st['round']}"]
    for s in st["stages"]:
        out.append(f"  {s['stage']:<9} {s['state']}" + (f": {'; '.join(s['why'])}" if s["why"] else ""))
    p = st["pile"]
    if p is None:
        out.append("pile: empty (nothing ingested yet)")
    else:
        fmts = ", ".join(f"{k} {v['documents']}" for k, v in p["by_format"].items())
        out.append(f"pile: {p['documents']} documents ({fmts}), {p['chunks']} chunks, {p['tokens']} tokens")
        if p["label_pools"]:
            out.append("label pools: " + ", ".join(f"{x['label']} {x['chunks']}" + ("" if x["state"] == "ok" else
                                                                                 f" ({x['state']})")
                                                   for x in p["label_pools"]))
    f = st["figures"]
    if "curated" in f:
        c = f["curated"]
        out.append(f"examples: {f.get('generated', '?')} generated -> {c['train']} train, {c['eval']} held out, "
                   f"{c['rejected']} rejected")
    for name, res in f.get("evaluate", {}).get("sets", {}).items():
        out.append(f"{name} {f['evaluate']['metric']}: " + ", ".join(
            f"{sys} {r['metric']:.3f} (n={r['n']})" if r["metric"] is not None else f"{sys} -" for sys, r in res.items()))
    e = st.get("enough")
    if e and (e["short"] or e["thin"]):
        from .curation.enough import why_line

        out.append(("too little to train on: " + "; ".join(e["short"]) if e["short"] else
                    "thin: " + "; ".join(e["thin"])) + f". {why_line(e)}")
    out.append(f"next: {st['next']}")
    return out
