"""curate: keep only examples worth learning from, and hold out an honest eval set.

Validation (the task type's own rules, with a reason for every rejection),
exact dedup on normalised input, a split into train and eval by source
document (no document feeds both), and removal of train examples that repeat
an eval or gold input. Every dropped example is kept with its reason.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from ..config import Config
from ..errors import TasklingError
from .. import tasks
from ..workspace import Context, read_jsonl, run_stage, sha256_file, upstream, write_jsonl


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", str(text).lower())).strip()


def load_gold(cfg: Config, path: Path) -> list[dict]:
    """gold.jsonl rows, checked: each needs input and output (a label for classify)."""
    if not path.exists():
        return []
    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "input" not in row or "output" not in row:
            raise TasklingError(f"{path}: item {n} needs 'input' and 'output' keys")
        if cfg.task.type == "classify" and row["output"] not in cfg.task.labels:
            raise TasklingError(f"{path}: item {n} has output {row['output']!r}, not one of the labels "
                                f"{', '.join(cfg.task.labels)}")
        row.setdefault("id", f"gold-{n:03d}")
    return rows


def split_by_document(cfg: Config, examples: list[dict]) -> tuple[set[str], dict]:
    """Choose held-out documents: about eval_fraction of the examples, in a seeded
    order, never taking a document whose loss would leave a label with less
    than 60% of its examples for training."""
    doc_of = [ex["provenance"][0]["path"] for ex in examples]
    per_doc = Counter(doc_of)
    labels_per_doc: dict[str, Counter] = {}
    for ex, d in zip(examples, doc_of):
        labels_per_doc.setdefault(d, Counter())[str(ex.get("label", ""))] += 1
    total_per_label = Counter(str(ex.get("label", "")) for ex in examples)
    order = sorted(per_doc, key=lambda d: hashlib.sha256(f"{cfg.seed}:{d}".encode()).hexdigest())
    target = cfg.curate.eval_fraction * len(examples)
    held: set[str] = set()
    held_per_label: Counter = Counter()
    n_held = 0
    for d in order:
        if n_held >= target:
            break
        if n_held + per_doc[d] > 1.5 * target and n_held > 0:
            continue
        trial = held_per_label + labels_per_doc[d]
        if any(trial[lab] > 0.4 * total_per_label[lab] for lab in trial if lab):
            continue
        held.add(d)
        held_per_label = trial
        n_held += per_doc[d]
    return held, {"held_out_documents": sorted(held), "documents": len(per_doc)}


def run(cfg: Config, ctx: Context) -> dict:
    gold_path = ctx.ws.gold
    settings = {k: cfg.section(k) for k in ("task", "curate")} | {"seed": cfg.seed}
    inputs = upstream(ctx, "generate") | {"gold": sha256_file(gold_path) if gold_path.exists() else None}

    def body(out: Path) -> dict:
        task = tasks.get(cfg.task)
        raw = read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")
        rejected: list[dict] = []
        kept: list[dict] = []
        seen: set[str] = set()
        for ex in raw:
            reason = task.validate(cfg.task, ex, cfg.curate.min_words, cfg.curate.max_words)
            key = normalise(ex["input"])
            if reason is None and key in seen:
                reason = "duplicate"
            if reason:
                rejected.append({**ex, "reason": reason})
                continue
            seen.add(key)
            kept.append(ex)
        n_valid_unique = len(kept)
        held, split_info = split_by_document(cfg, kept)
        train = [ex for ex in kept if ex["provenance"][0]["path"] not in held]
        evals = [ex for ex in kept if ex["provenance"][0]["path"] in held]
        blocked = {normalise(ex["input"]) for ex in evals} | {normalise(r["input"]) for r in load_gold(cfg, gold_path)}
        clean = []
        for ex in train:
            if normalise(ex["input"]) in blocked:
                rejected.append({**ex, "reason": "overlaps eval or gold (decontamination)"})
            else:
                clean.append(ex)
        reasons = Counter(r["reason"] for r in rejected)
        funnel = [{"step": "generated", "count": len(raw)},
                  {"step": "valid and unique", "count": n_valid_unique},
                  {"step": "train", "count": len(clean)},
                  {"step": "eval (held-out documents)", "count": len(evals)}]
        if not clean:
            raise TasklingError("curate: no training example survived curation "
                                f"({dict(reasons)}); see {out / 'rejected.jsonl'} and raise budget.examples")
        write_jsonl(out / "train.jsonl", clean)
        write_jsonl(out / "eval.jsonl", evals)
        write_jsonl(out / "rejected.jsonl", rejected)
        labels = {"train": dict(Counter(str(e.get("label")) for e in clean)),
                  "eval": dict(Counter(str(e.get("label")) for e in evals))} if cfg.task.type == "classify" else {}
        ctx.console.print(f"curate: {len(raw)} generated -> {len(clean)} train, {len(evals)} eval "
                          f"({len(rejected)} rejected: {dict(reasons)})")
        return {"counts": {"generated": len(raw), "train": len(clean), "eval": len(evals), "rejected": len(rejected)},
                "rejections": dict(reasons), "funnel": funnel, "split": split_info, "labels": labels,
                "outputs": ["train.jsonl", "eval.jsonl", "rejected.jsonl"]}

    return run_stage(ctx, "curate", settings, inputs, body)
