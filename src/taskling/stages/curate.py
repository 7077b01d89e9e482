"""curate: keep only examples worth learning from, and hold out an honest eval set.

Funnel: generated -> valid (the task type's rules, the task's language) ->
unique (exact, near and semantic duplicates; the best-grounded of a group
stays) -> grounded (supported by the chunks the example cites) -> split into
train and eval by source document (no document feeds both) -> train
decontaminated against eval and gold (shared n-grams, paraphrases) ->
selected (label-balanced and diverse, down to curate.target_size) -> PII
scrubbed (optional). Every dropped example is kept with its reason; the
filters themselves live in the curation room. `funnel` runs the steps in that order.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import tasks
from ..core import tasktype
from ..core import stage
from ..core.config import Config
from ..core.errors import TasklingError
from ..core.manifests import CurateManifest
from ..core.stage import StageSpec
from ..core.workspace import Context, read_jsonl, sha256_file, write_jsonl
from ..curation import auto, filters as curation, review, seed, weak
from ..curation.candidates import candidates
from ..curation.gold import load_gold
from ..curation.split import SPLIT_UNITS, split, split_dev, split_rows
from ..data.embed import Embedder, from_blob
from ..data.pile import Pile
from ..teacher import allocate

# Later rounds grow the training set from the last one and keep round 0's split: the curate before is read.
SPEC = StageSpec("curate", reads=("task", "curate", "seed", "ingest.embed_model"), manifest=CurateManifest,
                 needs=("generate",), earlier=("curate",))
TEACHER_KEYS = ("backend", "model", "base_url", "json_mode", "n_ctx")  # what a judge or labeller "teacher" is


SAMPLES_PER_REASON = 3


def expected_language(cfg: Config) -> str | None:
    if cfg.curate.language != "auto":
        return cfg.curate.language
    text = " ".join([cfg.task.description] + [ex.input for ex in cfg.task.examples])
    return curation.language_of(text, min_hits=2)


class Sources:
    """Cited chunk texts and (when the pile has them) their embeddings."""

    def __init__(self, pile: Pile, keys: set[str], dim: int | None):
        self.chunks = {k: c for k in keys if (c := pile.chunk(k)) is not None}
        self.vectors: dict[str, np.ndarray] = {}
        if dim:
            by_id = {c.id: k for k, c in self.chunks.items()}
            for i, b in zip(*pile.embeddings(list(by_id))):
                self.vectors[by_id[i]] = from_blob(b, dim)

    def text(self, ex: dict) -> str:
        return "\n".join(self.chunks[k].text for k in ex.get("chunks", []) if k in self.chunks)

    def vector(self, ex: dict) -> np.ndarray | None:
        vs = [self.vectors[k] for k in ex.get("chunks", []) if k in self.vectors]
        return vs[0] if vs else None


def judge_and_check(cfg: Config, ctx: Context, examples: list[dict], src: Sources, drop, forced) -> tuple[list[dict], dict | None]:
    """The examples that pass the judge and the self-consistency check (each only when configured)."""
    c = cfg.curate
    if not examples or (c.judge is None and not c.self_consistency):
        return examples, None
    from ..core.config import Price
    from ..teacher import judge as judging
    from ..teacher.backends import Logged, open_for
    from ..teacher.calls import CallLog

    info: dict = {}
    opened: dict[str, object] = {}

    def backend(mcfg, purpose: str):
        key = mcfg.model_dump_json()
        if key not in opened:
            opened[key] = open_for(ctx.executor, mcfg, ctx.threads)
        return Logged(opened[key], log, purpose=purpose, price=cfg.budget.prices.get(mcfg.model, Price()))

    keep = list(examples)
    with CallLog(ctx.ws.calls_db) as log:
        try:
            if c.judge is not None:
                jcfg = cfg.teacher if c.judge == "teacher" else c.judge
                jb = backend(jcfg, "judge")
                verdicts = judging.judge(jb, cfg.task, keep, lambda ex: [src.chunks[k] for k in ex.get("chunks", [])
                                                                         if k in src.chunks])
                passed = []
                for ex, v in zip(keep, verdicts):
                    ex["judge"] = v["score"] if v else None
                    ex["judge_reason"] = v["reason"] if v else None
                    if v and v["score"] < c.judge_threshold and not forced(ex):
                        drop(ex, f"judge score {v['score']:g} < {c.judge_threshold:g}: {v['reason'] or 'no reason given'}")
                    else:
                        passed.append(ex)
                scored = [v["score"] for v in verdicts if v]
                info.update({"model": jcfg.model, "threshold": c.judge_threshold, "judged": len(scored),
                             "unparsed": len(verdicts) - len(scored), "dropped": len(keep) - len(passed),
                             "mean_score": round(sum(scored) / len(scored), 3) if scored else None,
                             "new_calls": jb.stats["calls"], "cached_calls": jb.stats["cached"]})
                keep = passed
            if c.self_consistency and keep:
                tb = backend(cfg.teacher, "consistency")
                agree = judging.consistent(tb, cfg.task, keep, c.consistency_samples)
                passed = []
                for ex, ok in zip(keep, agree):
                    if ok or forced(ex):
                        passed.append(ex)
                    else:
                        drop(ex, f"the teacher does not give this output again ({c.consistency_samples} samples)")
                info["self_consistency"] = {"checked": len(keep), "dropped": len(keep) - len(passed),
                                            "samples": c.consistency_samples}
                keep = passed
        finally:
            for b in opened.values():
                b.close()
    return keep, info


def seed_examples(cfg: Config) -> list[dict]:
    """The task's own examples (taskling.yaml task.examples) as training examples: written by a
    person, so no filter drops them, and a generated copy of one counts as its duplicate."""
    out = []
    for n, shot in enumerate(cfg.task.examples, 1):
        ex = {"id": f"task-example-{n}", "input": shot.input, "output": shot.output, "source": "task example",
              "chunks": [], "spans": [], "grounding": 1.0,
              "provenance": [{"chunk": f"task.examples[{n - 1}]", "path": "taskling.yaml", "format": "yaml",
                              "locator": f"task.examples[{n - 1}]"}]}
        if tasktype.get(cfg.task.type).labelled:
            ex["label"] = shot.output
        out.append(ex)
    return out


def export_review(ctx: Context, path: Path) -> dict:
    rows = candidates(ctx.stage_dir("curate"))
    n = review.export_review(path, rows, review.load_decisions(ctx.ws.reviews))
    ctx.console.print(f"curate: wrote {n} examples to {path}; fill the 'decision' column (accept, reject or fix) "
                      f"and run 'taskling curate --import {path.name}'")
    return {"exported": n, "path": str(path)}


def import_review(ctx: Context, path: Path) -> dict:
    generated = read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")
    res = review.import_review(path, ctx.ws.reviews, {ex["id"]: ex for ex in generated})
    for e in res["errors"]:
        ctx.console.print(f"[yellow]{e}[/]")
    ctx.console.print(f"curate: imported {res['accept']} accepted, {res['reject']} rejected, {res['fix']} fixed "
                      f"({len(res['errors'])} rows with problems); they apply from this curate on")
    return res


def extra_settings(cfg: Config) -> dict:
    """Settings curate reads only when it uses them: the teacher as judge or labeller, the dev split, label:."""
    out: dict = {"embed": cfg.curate.embed if cfg.curate.embed is not None else cfg.ingest.embed}
    if cfg.seed_data:
        out["seed_data"] = [s.model_dump(mode="json") for s in cfg.seed_data]
    if cfg.curate.judge == "teacher" or cfg.curate.self_consistency:
        out["teacher"] = {k: v for k, v in cfg.section("teacher").items() if k in TEACHER_KEYS}
    if cfg.loop.rounds > 1:
        out["dev_fraction"] = cfg.loop.dev_fraction
    if auto.wanted(cfg):
        out["label"] = cfg.section("label")
        if auto.active(cfg) and cfg.label.auto.teacher_words:  # the teacher names each label's typical words
            out["teacher"] = {k: v for k, v in cfg.section("teacher").items() if k in TEACHER_KEYS}
        if any(t.model == "teacher" for t in cfg.label.teachers):
            out["teacher"] = {k: v for k, v in cfg.section("teacher").items() if k in TEACHER_KEYS}
    return out


def run(ctx: Context) -> CurateManifest:
    gold, store = ctx.ws.gold, ctx.ws.reviews
    inputs = {"gold": sha256_file(gold) if gold.exists() else None,
              "review": sha256_file(store) if store.exists() else None}
    if ctx.cfg.seed_data:
        inputs["seed_data"] = seed.digest(ctx.cfg)
    return stage.run(ctx, SPEC, lambda out: funnel(ctx, out), settings=extra_settings(ctx.cfg), inputs=inputs)


@dataclass
class Sieve:
    """What the funnel dropped, with reasons. A person's decision to keep an example wins over every filter."""

    forced_keep: set[str]
    rejected: list[dict] = field(default_factory=list)

    def drop(self, ex: dict, reason: str) -> None:
        if ex["id"] not in self.forced_keep:
            self.rejected.append({**ex, "reason": reason})

    def forced(self, ex: dict) -> bool:
        return ex["id"] in self.forced_keep


@dataclass
class Embedded:
    """The valid examples' input vectors (one row each, in order) and the embedder, when curate embeds."""

    embedder: Embedder | None
    vecs: np.ndarray | None
    pos: dict[str, int] = field(default_factory=dict)  # example id -> its row

    def of(self, rows: list[dict]) -> np.ndarray | None:
        return self.vecs[[self.pos[ex["id"]] for ex in rows]] if self.vecs is not None and rows else None

    def subset(self, rows: list[dict]) -> "Embedded":
        """The same vectors for `rows` (a subset of the examples, e.g. what the label model kept), in order."""
        return Embedded(self.embedder, self.of(rows), {ex["id"]: i for i, ex in enumerate(rows)})

    def encode(self, texts: list[str]) -> np.ndarray | None:
        return self.embedder.encode(texts) if self.embedder and texts else None


def funnel(ctx: Context, out: Path) -> dict:
    """The curate stage's work, step by step; its manifest fields."""
    cfg = ctx.cfg
    filt = cfg.curate.filters  # off: a baseline that trains on everything the teacher wrote
    generated = read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")
    gold = load_gold(cfg, ctx.ws.gold)
    # 0. human decisions (taskling curate --import): fixes applied, rejects out, accepts past every filter
    decisions = review.load_decisions(ctx.ws.reviews)
    raw, forced_keep, forced_drop = review.apply(generated, decisions)
    sieve = Sieve(forced_keep)
    sieve.rejected += [{**ex, "reason": "rejected by a person (review)"} for ex in raw if ex["id"] in forced_drop]
    raw = [ex for ex in raw if ex["id"] not in forced_drop]
    # 1. valid: the task type's rules and the language
    lang = expected_language(cfg)
    valid = validated(cfg, raw, lang, sieve)
    # 1b. labelled: where label: names sources, a label model weighs their votes on every valid
    # candidate (weak.py); its label replaces the teacher's, an unsure one is dropped
    emb = embedded(ctx, valid)
    label_info, n_valid = None, len(valid)
    human = seed.examples(cfg, ctx.ws.gold)  # the user's labelled items: the label model's truth, then seeds
    if auto.wanted(cfg) and tasktype.get(cfg.task.type).labelled and valid:
        more = [ex["input"] for ex in human] + [str(g["input"]) for g in gold]
        mvecs = emb.encode(more) if more else None
        vecs = emb.vecs if mvecs is None or emb.vecs is None else np.vstack([emb.vecs, mvecs])
        valid, unsure, label_info = weak.apply(cfg, ctx, valid, gold, forced_keep, vecs, emb.embedder, out, human)
        for ex, reason in unsure:
            sieve.drop(ex, reason)
        emb = emb.subset(valid)
    if tasktype.get(cfg.task.type).labelled and any(ex.get("output") is None for ex in valid):
        for ex in valid:
            if ex.get("output") is None:  # an unlabelled pile input no source voted on
                sieve.drop(ex, "no label source voted on it")
        valid = [ex for ex in valid if ex.get("output") is not None]
        emb = emb.subset(valid)
    # 2. grounding score of each valid example against the chunks it cites
    src = grounding_scores(ctx, valid, emb)
    # 3. unique: exact, near and semantic duplicates; the best-grounded of a group stays. The task's own
    # examples come first, so a generated copy of one is a duplicate of it (the teacher parrots them).
    # A later round of the loop puts everything earlier rounds trained on first instead: the training
    # set grows, and a new example that repeats an old one is its duplicate.
    prior = read_jsonl(ctx.stage_dir("curate", ctx.round - 1) / "train.jsonl") if ctx.round > 0 else None
    seeds = prior if prior is not None else \
        (seed_examples(cfg) if cfg.curate.task_examples else []) + human
    svecs = emb.encode([ex["input"] for ex in seeds])
    unique = deduplicated(cfg, valid, emb, seeds, svecs, sieve)
    # 4. grounded: supported enough by the cited source
    floor = cfg.curate.min_grounding
    floor = floor if floor is not None else tasktype.get(cfg.task.type).min_grounding
    floor = floor if filt else 0.0
    grounded = []
    for i in unique:
        if valid[i]["grounding"] + 1e-9 < floor and not sieve.forced(valid[i]):
            sieve.drop(valid[i], f"not grounded in its source (score < {floor:g})")
        else:
            grounded.append(i)
    # 5. judged: the LLM judge's rubric and the teacher's self-consistency, where configured
    judged, judge_info = judge_and_check(cfg, ctx, [valid[i] for i in grounded], src, sieve.drop, sieve.forced) \
        if filt else ([valid[i] for i in grounded], None)
    # 6. split by source document, then decontaminate train against eval and gold
    first = CurateManifest.read(ctx.stage_dir("curate", 0)) if ctx.round > 0 else None
    train, evals, dev, new_dev, split_info = split_sets(ctx, judged, first, sieve)
    evals = evals if first or not seeds else apart_from_seeds(cfg, evals, emb, seeds, svecs, sieve)
    clean, seeds, n_dirty = decontaminated(cfg, train, evals, dev, gold, emb, seeds, svecs, sieve)
    # 7. selected: label-balanced, diverse, down to the target size
    n_before = len(clean) + len(seeds)
    clean = seeds + selected(cfg, clean, valid, emb, len(seeds), sieve)
    # 8. PII scrubbing of what will be trained and evaluated on
    pii_counts: Counter = Counter()
    if cfg.curate.pii:
        clean, evals = scrubbed(clean, pii_counts), scrubbed(evals, pii_counts)

    new_kept = clean[len(seeds):] + (evals + dev if not first else new_dev)
    if len(clean) == len(seeds) and first:
        ctx.console.print(f"[yellow]curate: no new training example survived round {ctx.round}; the student "
                          f"trains on the {len(seeds)} of earlier rounds[/]")
    elif len(clean) == len(seeds):  # the task's own examples alone are not a training set
        reasons = Counter(_reason_kind(r["reason"]) for r in sieve.rejected)
        write_jsonl(out / "rejected.jsonl", sieve.rejected)  # the file the error sends the user to
        raise TasklingError("curate: no generated training example survived curation "
                            f"({dict(reasons)}); see {out / 'rejected.jsonl'} and raise budget.examples")
    for name, rows in (("train", clean), ("eval", evals), ("dev", dev), ("rejected", sieve.rejected)):
        write_jsonl(out / f"{name}.jsonl", rows)
    steps = {"generated": len(generated), "valid": n_valid, "labelled": len(valid) if label_info is not None else None,
             "unique": len(unique), "grounded": len(grounded), "judged": len(judged), "before_selection": n_before,
             "decontaminated": n_dirty}
    pii = dict(pii_counts) if cfg.curate.pii else None
    return summary(ctx, steps, clean, evals, dev, seeds, new_kept, sieve.rejected, split_info, bool(first), pii) | {
        "review": human_decisions(ctx, decisions, forced_drop, review.stale(generated, decisions)),
        "language": lang, "pii": pii, "judge": judge_info,
        "grounding": {"min": floor, "mean_kept": round(sum(ex["grounding"] for ex in clean) / len(clean), 4),
                      "embeddings": emb.embedder is not None},
        **({"label_model": label_info} if label_info is not None else {}),
        "outputs": ["train.jsonl", "eval.jsonl", "dev.jsonl", "rejected.jsonl"]}


def validated(cfg: Config, raw: list[dict], lang: str | None, sieve: Sieve) -> list[dict]:
    """The examples that keep the task type's rules and are in the task's language."""
    task, filt = tasktype.get(cfg.task.type), cfg.curate.filters
    valid = []
    stand_in = next(iter(cfg.task.labels), None)
    for ex in raw:
        # an unlabelled pile input: only its input is checked here; the label model gives it a label
        probe = ex if ex.get("output") is not None or not task.labelled else {**ex, "output": stand_in}
        reason = None if sieve.forced(ex) or not filt else \
            task.validate(cfg.task, probe, cfg.curate.min_words, cfg.curate.max_words)
        if reason is None and lang and filt and not sieve.forced(ex):
            got = curation.language_of(f"{ex['input']} {tasks.output_text(probe['output'])}")
            if got is not None and got != lang:
                reason = f"not in the task's language ({got}, expected {lang})"
        if reason:
            sieve.drop(ex, reason)
        else:
            valid.append(ex)
    return valid


def embedded(ctx: Context, valid: list[dict]) -> Embedded:
    """The valid examples' input vectors, when curate embeds (curate.embed, default ingest.embed)."""
    cfg = ctx.cfg
    use_embed = cfg.curate.embed if cfg.curate.embed is not None else cfg.ingest.embed
    embedder = Embedder(cfg.ingest.embed_model, ctx.threads, max_tokens=cfg.ingest.embed_max_tokens) \
        if use_embed and valid else None
    vecs = embedder.encode([ex["input"] for ex in valid]) if embedder else None
    return Embedded(embedder, vecs, {ex["id"]: i for i, ex in enumerate(valid)})


def grounding_scores(ctx: Context, valid: list[dict], emb: Embedded) -> Sources:
    """Each valid example's grounding score (in place), and the cited chunks."""
    cfg, task = ctx.cfg, tasktype.get(ctx.cfg.task.type)
    embedder, vecs = emb.embedder, emb.vecs
    with Pile(ctx.ws.pile_db) as pile:
        src = Sources(pile, {k for ex in valid for k in ex.get("chunks", [])}, embedder.dim if embedder else None)
    claims = vecs if task.claim == "input" else None
    if embedder and task.claim == "output":
        claims = embedder.encode([tasks.output_text(ex["output"]) for ex in valid])
    for i, ex in enumerate(valid):
        if ex.get("source") == "table":  # a row of a document's table: its own source, by construction
            ex["grounding"] = 1.0
            continue
        sv = src.vector(ex)
        sim = float(claims[i] @ sv) if claims is not None and sv is not None else None
        ex["grounding"] = task.grounding(cfg.task, ex, src.text(ex), sim)
    return src


def deduplicated(cfg: Config, valid: list[dict], emb: Embedded, seeds: list[dict], svecs, sieve: Sieve) -> list[int]:
    """Indices of the valid examples that duplicate neither a seed nor a better-grounded example."""
    task, vecs = tasktype.get(cfg.task.type), emb.vecs
    n_s = len(seeds)
    both = seeds + valid
    order = list(range(n_s)) + sorted(range(n_s, len(both)), key=lambda i: (-both[i]["grounding"], i))
    groups = [task.split_key(cfg.task, ex) for ex in both]
    dvecs = np.vstack([svecs, vecs]) if svecs is not None and vecs is not None else (vecs if not seeds else None)
    dups = curation.dedup(order, [ex["input"] for ex in both], dvecs, cfg.curate.near_dup, cfg.curate.semantic_dup,
                          groups)
    # rows of a table differ in one cell by design (code 23505, code 23503): never each other's duplicates
    dups = {i - n_s: d for i, d in dups.items() if i >= n_s and not sieve.forced(both[i]) and cfg.curate.filters
            and both[i].get("source") != "table"}
    for i, (kind, of) in dups.items():
        sieve.drop(valid[i], f"{kind} (of {both[of]['id']})")
    return [i for i in range(len(valid)) if i not in dups]


def split_sets(ctx: Context, kept: list[dict], first: CurateManifest | None,
               sieve: Sieve) -> tuple[list[dict], list[dict], list[dict], list[dict], dict]:
    """train, eval, dev, this round's new dev examples and the split's record. Round 0 splits by
    source unit; later rounds keep round 0's eval set and never train on its source units."""
    cfg = ctx.cfg
    if first:
        unit, held, dev_units = first.split.unit, set(first.split.held_out_units), set(first.split.dev_units)
        train = [ex for ex in kept if SPLIT_UNITS[unit](ex) not in held]
        new_dev = []
        for ex in kept:
            u = SPLIT_UNITS[unit](ex)
            if u in dev_units:  # the dev set grows with each round; the eval set never changes
                new_dev.append(ex)
            elif u in held:
                sieve.drop(ex, f"its {unit} is held out for evaluation (round 0)")
        evals = read_jsonl(ctx.stage_dir("curate", 0) / "eval.jsonl")
        dev = read_jsonl(ctx.stage_dir("curate", ctx.round - 1) / "dev.jsonl") + new_dev
        return train, evals, dev, new_dev, first.split.model_dump(exclude_unset=True) | {"fixed_from_round": 0}
    rows = [ex for ex in kept if ex.get("source") == "table"]
    train, evals, info = split(cfg, [ex for ex in kept if ex.get("source") != "table"]) \
        if len(rows) < len(kept) else ([], [], {"unit": "document", "held_out": 0, "groups": 0,
                                                "label_coverage": None, "held_out_units": []})
    row_train, row_eval = split_rows(cfg, rows)
    train, evals = train + row_train, evals + row_eval
    if rows:
        info["table_rows"] = {"train": len(row_train), "eval": len(row_eval)}
    dev: list[dict] = []
    if label_dev_wanted(cfg):
        train, evals, dev, info["dev_units"] = label_model_dev(cfg, train, evals, info["unit"])
    elif cfg.loop.rounds > 1:  # the loop probes the student on a dev set; eval stays for honest figures
        evals, dev, info["dev_units"] = split_dev(cfg, evals, info["unit"])
    return train, evals, dev, [], info


def label_dev_wanted(cfg: Config) -> bool:
    return bool(cfg.label.auto.dev_items) and auto.active(cfg)


def label_model_dev(cfg: Config, train: list[dict], evals: list[dict],
                    unit: str) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """(train, eval, dev, dev units): the dev set that picks the training step and that the loop reads is
    made of pile inputs the label model labelled, never trained on and never gold: those of the
    held-out units first, then, up to label.auto.dev_items, passages drawn from training's pile inputs
    (at most half of them). Eval keeps the held-out teacher-written items, for the honest figures."""
    key = SPLIT_UNITS[unit]
    dev = [ex for ex in evals if ex.get("source") == "pile"]
    rest = [ex for ex in evals if ex.get("source") != "pile"]
    if rest:
        evals = rest
    else:  # only pile inputs were held out: they stay the eval set
        dev = []
    # more held-out pile inputs than wanted: the rest is neither trained on nor measured
    dev = sorted(dev, key=lambda ex: hashlib.sha256(f"{cfg.seed}:dev:{ex['id']}".encode()).hexdigest())
    dev = dev[:cfg.label.auto.dev_items]
    units = sorted({key(ex) for ex in dev})
    want = cfg.label.auto.dev_items - len(dev)
    pool = [ex for ex in train if ex.get("source") == "pile"]
    if want > 0 and pool:
        pool.sort(key=lambda ex: hashlib.sha256(f"{cfg.seed}:dev:{ex['id']}".encode()).hexdigest())
        moved = {ex["id"] for ex in pool[:min(want, len(pool) // 2)]}
        dev += [ex for ex in train if ex["id"] in moved]
        train = [ex for ex in train if ex["id"] not in moved]
    return train, evals, dev, units


def apart_from_seeds(cfg: Config, evals: list[dict], emb: Embedded, seeds: list[dict], svecs, sieve: Sieve) -> list[dict]:
    """Every system sees the task's examples (in training or in its prompt): an eval item that
    overlaps one measures recall of the prompt, not the task. It leaves eval; the example stays."""
    near_seed = curation.contaminated([ex["input"] for ex in evals], emb.of(evals), [x["input"] for x in seeds],
                                      svecs, cfg.curate.decontam_cosine)
    for j in near_seed:
        sieve.drop(evals[j], "eval item overlaps a task example")
    return [ex for j, ex in enumerate(evals) if j not in near_seed]


def decontaminated(cfg: Config, train: list[dict], evals: list[dict], dev: list[dict], gold: list[dict],
                   emb: Embedded, seeds: list[dict], svecs, sieve: Sieve) -> tuple[list[dict], list[dict], int]:
    """Train and seeds without what overlaps an eval, gold or dev input; and how many train examples went."""
    blocked = [ex["input"] for ex in evals] + [str(r["input"]) for r in gold] + [ex["input"] for ex in dev]
    n_eval = len(evals)
    bvecs = emb.encode(blocked)
    dirty = curation.contaminated([ex["input"] for ex in train], emb.of(train), blocked, bvecs,
                                  cfg.curate.decontam_cosine)
    dirty = {j: r for j, r in dirty.items() if not sieve.forced(train[j])}
    # Table rows share their template's words with every other row: held out row by row
    # (split_rows), they are contaminated only by an eval or gold input that is the same text.
    same = {" ".join(b.lower().split()) for b in blocked}
    for j in [j for j in dirty if train[j].get("source") == "table"]:
        if " ".join(train[j]["input"].lower().split()) in same:
            dirty[j] = "the same text as an eval or gold input"
        else:
            del dirty[j]
    for j, reason in dirty.items():
        sieve.drop(train[j], reason)
    clean = [ex for j, ex in enumerate(train) if j not in dirty]
    if seeds:  # never held out (the base and the teacher see them in their prompts); checked against gold
        gold_in = [str(r["input"]) for r in gold]
        dirty_seeds = curation.contaminated([ex["input"] for ex in seeds], svecs, gold_in,
                                            bvecs[n_eval:n_eval + len(gold)] if bvecs is not None else None,
                                            cfg.curate.decontam_cosine)
        for j, reason in dirty_seeds.items():
            sieve.drop(seeds[j], reason)
        seeds = [ex for j, ex in enumerate(seeds) if j not in dirty_seeds]
    return clean, seeds, len(dirty)


def selected(cfg: Config, clean: list[dict], valid: list[dict], emb: Embedded, n_seeds: int,
             sieve: Sieve) -> list[dict]:
    """Down to curate.target_size (with the seeds), label-balanced and diverse; a person's keeps stay."""
    room = max(0, (cfg.curate.target_size or 0) - n_seeds)
    if not (cfg.curate.filters and cfg.curate.target_size and len(clean) > room):
        return clean
    pos = emb.pos
    keep = set(curation.select([pos[ex["id"]] for ex in clean], room, lambda i: str(valid[i].get("label", "")),
                               emb.vecs, lambda i: valid[i]["grounding"]))
    keep |= {pos[ex["id"]] for ex in clean if sieve.forced(ex)}
    for ex in clean:
        if pos[ex["id"]] not in keep:
            sieve.drop(ex, "redundant (diversity selection)")
    return [ex for ex in clean if pos[ex["id"]] in keep]


def scrubbed(rows: list[dict], counts: Counter) -> list[dict]:
    """The rows with PII replaced by placeholders; what was found is added to `counts`."""
    from ..curation import pii

    out = []
    for ex in rows:
        new, found = pii.scrub_example(ex)
        counts.update(found)
        out.append(new)
    return out


def human_decisions(ctx: Context, decisions: dict, forced_drop: set[str], stale: list[str]) -> dict | None:
    if stale:
        ctx.console.print(f"[yellow]curate: {len(stale)} review decision(s) were made about examples that have "
                          f"since been re-generated with other text and were not applied: {', '.join(stale[:5])}[/]")
    return {"accepted": sum(d.get("decision") == "accept" for d in decisions.values()),
            "fixed": sum(d.get("decision") == "fix" for d in decisions.values()),
            "rejected": len(forced_drop), "stale": stale} if decisions else None


def summary(ctx: Context, n: dict, clean: list[dict], evals: list[dict], dev: list[dict], seeds: list[dict],
            new_kept: list[dict], rejected: list[dict], split_info: dict, later: bool, pii: dict | None) -> dict:
    """The funnel in numbers, the rejections by kind with samples, labels and topics; printed in one line."""
    cfg, unit = ctx.cfg, split_info["unit"]
    reasons = Counter(_reason_kind(r["reason"]) for r in rejected)
    samples: dict[str, list[dict]] = {}
    for r in rejected:
        bucket = samples.setdefault(_reason_kind(r["reason"]), [])
        if len(bucket) < SAMPLES_PER_REASON:
            bucket.append({"id": r["id"], "input": str(r["input"])[:300], "output": tasks.output_text(r["output"])[:200],
                           "reason": r["reason"]})
    funnel = [{"step": "generated", "count": n["generated"]}, {"step": "valid", "count": n["valid"]}]
    if n["labelled"] is not None:
        funnel.append({"step": "labelled (label model sure enough)", "count": n["labelled"]})
    funnel += [{"step": "unique", "count": n["unique"]}, {"step": "grounded", "count": n["grounded"]},
               {"step": "judged", "count": n["judged"]},
               {"step": f"train after split by {unit} and decontamination"
                        + (f" (with {len(seeds)} task examples)" if seeds else ""), "count": n["before_selection"]},
               {"step": "selected for training", "count": len(clean)},
               {"step": f"eval (held-out {unit}s)", "count": len(evals)}]
    if dev or later:
        funnel.append({"step": "dev (held out, read by the loop's analysis)", "count": len(dev)})
    labelled = tasktype.get(cfg.task.type).labelled
    n_valid = n["labelled"] if n["labelled"] is not None else n["valid"]
    ctx.console.print(
        f"curate: {n['generated']} generated -> {n_valid} valid -> {n['unique']} unique -> {n['grounded']} grounded "
        f"-> {len(clean)} train" + (f" (incl. {len(seeds)} task examples)" if seeds else "")
        + f", {len(evals)} eval held out by {unit} ({len(rejected)} rejected: {dict(reasons.most_common())})"
        + (f"; PII scrubbed: {pii}" if pii is not None else ""))
    return {"counts": {"generated": n["generated"], "valid": n["valid"], "labelled": n["labelled"],
                       "unique": n["unique"], "grounded": n["grounded"], "judged": n["judged"], "train": len(clean),
                       "eval": len(evals), "rejected": len(rejected), "decontaminated": n["decontaminated"],
                       "redundant": n["before_selection"] - len(clean),
                       "task_examples": len(seeds) if not later else 0, "dev": len(dev),
                       "earlier_rounds": len(seeds) if later else 0, "new_train": len(clean) - len(seeds)},
            "kept_by_arm": dict(sorted(Counter(allocate.arm_key(ex["arm"]) for ex in new_kept if ex.get("arm")).items())),
            "rejections": dict(reasons.most_common()), "rejected_samples": samples, "funnel": funnel,
            "split": split_info, "topics": dict(Counter(str(e["arm"][0]) if e.get("arm") else str(e.get("source"))
                                                        for e in clean).most_common()),
            "labels": {"train": dict(Counter(str(e.get("label")) for e in clean)),
                       "eval": dict(Counter(str(e.get("label")) for e in evals))} if labelled else {}}


def _reason_kind(reason: str) -> str:
    """A rejection reason without its particulars ('near duplicate (of gen-00012-0)' -> 'near duplicate')."""
    if reason.startswith("judge score"):
        return "judge score below the threshold"
    return re.sub(r"\s*\((of |score |confidence |[a-z]{2}, expected|\d+ samples)[^)]*\)$", "", reason)
