"""Weak supervision for classify: several sources vote on each candidate's label, and a label
model decides which to trust (the `label:` section of taskling.yaml; curate runs it).

Sources:
  asked        the label the teacher was asked to write an input for (label-conditioned
               generation: writing an input for a given label is an easier job than labelling,
               so it is right more often than the teacher's own guess)
  retrieved    for pile chunks taken as inputs (generate.pile_inputs): the label whose
               search pool the chunk came from
  teachers     LLM labellers (label.teachers): the teacher or other models, few- or zero-shot,
               free or constrained to the label set (a JSON-schema grammar where the backend
               has one); every call goes through the call log, purpose "label:<name>"
  rules        keyword, regex and metadata rules (rules.py): a folder name, a file name, a
               table column, the text of the cited chunk
  automatic    label.auto (auto.py): embedding, kNN and retrieval labellers over the pile and
               keyword rules mined per label
  self         later rounds (label.auto.self_training): the last student's confident label of an
               unlabelled pile chunk (analyse's self_labels.jsonl); never on eval or gold items

The label model (labelmodel.py, Dawid-Skene; or majority vote) is fitted on the votes over
every candidate and gold item, without gold labels unless label.init is "gold". Each
candidate gets the posterior's label and confidence: below label.min_confidence it is
dropped, otherwise its label becomes the posterior's and, with label.weight, its confidence
is its weight in training. Rows of a mapped table (source "table") carry their label as data
and are not relabelled. Each source's estimated accuracy is put beside its accuracy measured
on gold.jsonl (the sources vote on gold inputs too), and per label, in the curate manifest.
"""
from __future__ import annotations

import json

from . import auto, labelmodel, mined, seed
from ..core import tasktype
from ..teacher.backends import Logged, Request, open_for
from ..teacher.calls import CallLog
from ..core.config import Config, LabellerCfg, Price
from ..data.pile import Pile
from ..core.workspace import Context

ASKED = "asked"
RETRIEVED = "retrieved"
LABEL_TOKENS = 24  # a label, or {"label": "..."}, fits easily
SELF = "self"
SELF_CONFIDENCE = 0.6  # the student's label on a pile chunk votes only when it is at least this sure


def label_schema(labels: list[str]) -> dict:
    return {"type": "object", "properties": {"label": {"type": "string", "enum": labels}}, "required": ["label"]}


def labeller_messages(cfg: Config, lab: LabellerCfg, text: str) -> list[dict]:
    """How evaluate asks the teacher to do the task; zero-shot: the same without the task's examples."""
    task_cfg = cfg.task if lab.prompt == "fewshot" else cfg.task.model_copy(update={"examples": []})
    return tasktype.get(cfg.task.type).teacher_eval_messages(task_cfg, text)


def parse_vote(cfg: Config, text: str) -> str | None:
    """The label in a labeller's reply: {"label": ...} from a constrained reply, else the one
    label the text names (classify's own parser); None (an abstention) when there is none."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and obj.get("label") in cfg.task.labels:
            return obj["label"]
    except (json.JSONDecodeError, TypeError):
        pass
    got = tasktype.get(cfg.task.type).parse_output(cfg.task, text or "")
    return got if got in cfg.task.labels else None


def llm_votes(cfg: Config, ctx: Context, lab: LabellerCfg, inputs: list[str], on_done=None) -> list[str | None]:
    """One labeller's vote on each input (cached in the call log like every teacher call)."""
    model = cfg.teacher if lab.model == "teacher" else lab.model
    schema = label_schema(list(cfg.task.labels)) if lab.constrained else None
    reqs = [Request(labeller_messages(cfg, lab, text), max_tokens=LABEL_TOKENS, temperature=0.0, json_schema=schema)
            for text in inputs]
    log = CallLog(ctx.ws.calls_db)
    backend = Logged(open_for(ctx.executor, model, ctx.threads), log, purpose=f"label:{lab.name}",
                     price=cfg.budget.prices.get(model.model, Price()))
    try:
        res = backend.generate(reqs, on_result=(lambda i, r: on_done(1)) if on_done else None)
    finally:
        backend.close()
        log.close()
    return [parse_vote(cfg, r.text) if r.error is None else None for r in res]


def chunk_texts(ctx: Context, items: list[dict]) -> dict[str, str]:
    keys = {k for ex in items for k in ex.get("chunks", [])}
    if not keys or not ctx.ws.pile_db.exists():
        return {}
    with Pile(ctx.ws.pile_db) as pile:
        return {k: c.text for k in keys if (c := pile.chunk(k)) is not None}


def collect(cfg: Config, ctx: Context, candidates: list[dict], gold: list[dict], vecs=None,
            embedder=None) -> tuple[list[str], list[dict], "auto.Auto"]:
    """Every source's vote on every candidate, then on every gold item: (source names, votes, what the
    automatic sources found). `vecs`: the items' unit input vectors (candidates, then gold), if any."""
    from . import rules as rulemod
    from ..core.progress import bar

    lab = cfg.label
    items = candidates + [{"input": str(g["input"])} for g in gold]
    votes: list[dict] = [{} for _ in items]
    names: list[str] = []
    found = auto.Auto()
    if auto.active(cfg):
        found = auto.collect(cfg, ctx, items, vecs, embedder, len(candidates), {r.name for r in lab.rules})
        for v, av in zip(votes, found.votes):
            v.update(av)
        names += found.names
    if lab.asked:
        # "asked": the label the teacher wrote an input for; "retrieved": the label whose search
        # pool a pile chunk taken as an input came from (generate.pile_inputs): two different guesses
        for name, theirs in ((ASKED, lambda ex: ex.get("source") not in ("table", "pile")),
                             (RETRIEVED, lambda ex: ex.get("source") == "pile")):
            mine = [i for i, ex in enumerate(candidates) if theirs(ex)
                    and (ex.get("arm") or [None, None])[1] in cfg.task.labels]
            if mine:
                names.append(name)
                for i in mine:
                    votes[i][name] = candidates[i]["arm"][1]
    mine = [i for i, ex in enumerate(candidates) if ex.get("self_label") in cfg.task.labels
            and float(ex.get("self_confidence") or 0.0) >= SELF_CONFIDENCE]
    if mine:  # self-training: the last round's student on unlabelled pile chunks (never eval or gold)
        names.append(SELF)
        for i in mine:
            votes[i][SELF] = candidates[i]["self_label"]
    if lab.rules:
        compiled = rulemod.compile_rules(lab.rules, list(cfg.task.labels))
        texts = chunk_texts(ctx, candidates)
        for v, rv in zip(votes, rulemod.votes(compiled, items, texts)):
            v.update(rv)
        names += [r.name for r in lab.rules]
    if lab.teachers:
        with bar(ctx.console) as progress:
            for t in lab.teachers:
                job = progress.add_task(f"label: {t.name}", total=len(items), info="")
                said = llm_votes(cfg, ctx, t, [str(ex["input"]) for ex in items],
                                 on_done=lambda n, job=job: progress.advance(job, n))
                for v, s in zip(votes, said):
                    if s is not None:  # no label in the reply: no vote (not a vote for "none")
                        v[t.name] = s
                names.append(t.name)
    return names, votes, found


def apply(cfg: Config, ctx: Context, candidates: list[dict], gold: list[dict], keep_label: set[str],
          vecs=None, embedder=None, where=None, human: list[dict] = ()) -> tuple[list[dict], list[tuple[dict, str]],
                                                                             dict | None]:
    """Relabel `candidates` by the label model. Returns (kept, dropped with reason, manifest
    section; None when no source but the asked labels voted, and nothing was weighed). Examples whose
    id is in `keep_label` (a person decided) keep their label. `human`: the user's own labelled items
    (seed_data): every source votes on them too, the source `human` votes their label, the label model
    pins them there (known truth that orients every other source's estimate) and measures the other
    sources on them; they are not returned (curate adds them as seeds). `vecs`: unit input vectors of
    the candidates, then the human items, then the gold items (the automatic sources need them);
    `where`: where the mined rules (mined_rules.yaml) and the label model's answers on gold go."""
    labels = list(cfg.task.labels)
    items = list(candidates) + list(human)
    names, votes, found = collect(cfg, ctx, items, gold, vecs, embedder)
    pinned = seed.clamp(items, labels)
    if pinned:
        names.append(seed.HUMAN)
        for v, hv in zip(votes, seed.votes(items)):
            v.update(hv)
    # auto.wanted said a source may vote (the settings); here: did one, besides the labels asked for?
    if not set(names) - {ASKED, RETRIEVED, seed.HUMAN}:  # only the asked labels: nothing to weigh
        return candidates, [], None
    c, n = len(candidates), len(items)
    gold_labels = {n + j: str(g["output"]) for j, g in enumerate(gold) if str(g["output"]) in cfg.task.labels}
    # a rule that looked and stayed silent says something (a keyword rule votes one label or nothing)
    silent = [r.name for r in cfg.label.rules] + found.abstaining
    if cfg.label.model == "majority":
        fit = None
        assigned = labelmodel.majority(votes, labels, names)
    elif cfg.label.init == "gold" and gold_labels:
        fit = labelmodel.fit(votes, labels, sources=names, gold=gold_labels | pinned, init="gold",
                             abstain_sources=silent, class_balance=auto.class_balance(cfg))
        assigned = fit.assignments()
    else:
        # fitted on the candidates (and human items, pinned) alone, then applied to gold: the label model
        # as a classifier a user could deploy, measured on items it never saw
        fit = labelmodel.fit(votes[:n], labels, sources=names, init="majority", abstain_sources=silent,
                             class_balance=auto.class_balance(cfg), gold=pinned or None)
        assigned = fit.assignments() + fit.predict(votes[n:])
    # Measured on gold: how often each source (and the label model) is right where it voted.
    measured = measure(names, votes, assigned, gold_labels)
    if cfg.label.init == "gold" and gold_labels:  # clamped to gold: its own score there would be 1 by construction
        measured["label_model"] = {"accuracy": None, "voted": 0, "coverage": None, "note": "calibrated with gold"}
    kept, dropped, changed = [], [], 0
    for i, ex in enumerate(candidates):
        label, conf = assigned[i]
        if ex.get("source") == "table" or ex["id"] in keep_label:
            kept.append(ex)
            continue
        if label is None:
            label, conf = ex.get("label"), 0.0
        if conf + 1e-9 < cfg.label.min_confidence:
            dropped.append((ex, f"label model unsure (confidence {conf:.2f} < {cfg.label.min_confidence:g})"))
            continue
        out = dict(ex, label_votes={s: votes[i].get(s) for s in names}, label_confidence=round(conf, 4))
        if label != ex.get("label"):
            changed += ex.get("label") is not None  # an unlabelled pile input gets its first label, no change
            out.update(label=label, output=label, relabelled_from=ex.get("label"))
            if ex.get("label") is None and isinstance(ex.get("arm"), list):  # its arm is now (topic, that label)
                out["arm"] = [ex["arm"][0], label]
        if cfg.label.weight:
            out["weight"] = round(conf, 4)
        kept.append(out)
    info = {"model": cfg.label.model, "sources": names, "items": c, "gold_items": len(gold_labels),
            "relabelled": changed, "dropped_unsure": len(dropped), "min_confidence": cfg.label.min_confidence,
            "weighted": cfg.label.weight, "calibrated_with_gold": cfg.label.init == "gold" and bool(gold_labels),
            "measured": measured, "seconds_per_item": round(found.seconds_per_item or 0.0, 5)}
    if pinned:  # the user's labelled items: each source's accuracy on them, a second measure beside gold's
        info["human_items"] = len(pinned)
        info["measured_on_human"] = seed.measured_on_human(names, votes, pinned)
    if fit is not None:
        info["fit"] = {k: v for k, v in fit.to_json(posteriors=False).items()}
    if found.info:
        info["auto"] = found.info
    if where is not None:
        saved(cfg, where, gold, assigned[n:], votes[n:], names, found, fit, measured, info, candidates, votes[:c])
    ctx.console.print(f"curate: label model ({cfg.label.model}) over {len(names)} sources on {n} candidates: "
                      f"{changed} relabelled, {len(dropped)} dropped as unsure"
                      + (f"; on gold (n={len(gold_labels)}): " + ", ".join(
                          f"{s} {m['accuracy']:.2f}" for s, m in measured.items() if m["accuracy"] is not None)
                         if gold_labels else ""))
    return kept, dropped, info


def measure(names: list[str], votes: list[dict], assigned: list, gold: dict[int, str]) -> dict:
    """Per source, and for the label model's own choice: accuracy and coverage on the gold items."""
    out = {}
    for s in names + ["label_model"]:
        right = voted = 0
        for i, truth in gold.items():
            said = assigned[i][0] if s == "label_model" else votes[i].get(s)
            if said is None:
                continue
            voted += 1
            right += said == truth
        out[s] = {"accuracy": round(right / voted, 4) if voted else None, "voted": voted,
                  "coverage": round(voted / len(gold), 4) if gold else None}
    return out


def saved(cfg: Config, out, gold: list[dict], on_gold: list, gold_votes: list[dict], names: list[str],
          found: "auto.Auto", fit, measured: dict, info: dict, candidates: list[dict] = (),
          cand_votes: list[dict] = ()) -> None:
    """label_model.jsonl: the label model's answer on each gold item (evaluate scores it as a system);
    candidate_votes.jsonl: every source's vote on every candidate (what the label model was fitted on);
    mined_rules.yaml: the mined rules with their estimated and measured accuracy (a person edits and
    promotes them: mined.py)."""
    from ..core.workspace import write_jsonl

    write_jsonl(out / "candidate_votes.jsonl", [{"id": ex["id"], "votes": v} for ex, v in zip(candidates, cand_votes)])

    rows = [{"id": g.get("id"), "output": lab or "", "confidence": round(conf, 4),
             "votes": {s: v.get(s) for s in names if v.get(s) is not None}}
            for g, (lab, conf), v in zip(gold, on_gold, gold_votes)]
    write_jsonl(out / "label_model.jsonl", rows)
    if found.rules:
        stats = {st["name"]: st for st in (fit.to_json(posteriors=False)["stats"] if fit is not None else [])}
        table = {r["name"]: {"estimated": stats.get(r["name"], {}).get("accuracy"),
                             "coverage": stats.get(r["name"], {}).get("coverage"),
                             "measured": measured.get(r["name"], {}).get("accuracy"),
                             "measured_n": measured.get(r["name"], {}).get("voted")} for r in found.rules}
        mined.write(out / "mined_rules.yaml", found.rules, table)
        info["mined_rules"] = [dict(r, **table[r["name"]]) for r in found.rules]
