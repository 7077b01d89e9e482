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


SPLIT_UNITS = {
    "document": lambda ex: ex["provenance"][0]["path"],
    "chunk": lambda ex: ex["provenance"][0]["chunk"],
}


def _held_out(cfg: Config, examples: list[dict], unit: str) -> set[str]:
    """Groups (documents or chunks) to hold out: about eval_fraction of the
    examples, in a seeded order, never taking a group whose loss would leave a
    label with less than 60% of its examples for training."""
    key = SPLIT_UNITS[unit]
    per_group = Counter(key(ex) for ex in examples)
    labels_per_group: dict[str, Counter] = {}
    for ex in examples:
        labels_per_group.setdefault(key(ex), Counter())[str(ex.get("label", ""))] += 1
    total_per_label = Counter(str(ex.get("label", "")) for ex in examples)
    order = sorted(per_group, key=lambda g: hashlib.sha256(f"{cfg.seed}:{g}".encode()).hexdigest())
    target = cfg.curate.eval_fraction * len(examples)
    held: set[str] = set()
    held_per_label: Counter = Counter()
    n_held = 0
    for g in order:
        if n_held >= target:
            break
        if n_held + per_group[g] > 1.5 * target and n_held > 0:
            continue
        trial = held_per_label + labels_per_group[g]
        if any(trial[lab] > 0.4 * total_per_label[lab] for lab in trial if lab):
            continue
        held.add(g)
        held_per_label = trial
        n_held += per_group[g]
    return held


def split(cfg: Config, examples: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """Train and eval sets such that no source unit feeds both.

    The unit is the document. When holding out whole documents cannot give an
    eval set (too few documents, or each label lives in one document, so any
    held-out document would take a whole label away from training) the unit
    falls back to the chunk, and the manifest and report say so: the eval set
    is then held out by passage, not by document, which is a weaker test."""
    labels = {str(ex.get("label", "")) for ex in examples} - {""}
    fallback = None
    for unit in ("document", "chunk"):
        key = SPLIT_UNITS[unit]
        held = _held_out(cfg, examples, unit)
        train = [ex for ex in examples if key(ex) not in held]
        evals = [ex for ex in examples if key(ex) in held]
        covered = {str(ex.get("label", "")) for ex in evals} - {""}
        info = {"unit": unit, "held_out": len(held), "groups": len({key(ex) for ex in examples}),
                "label_coverage": f"{len(covered)}/{len(labels)}" if labels else None}
        if fallback:
            info["fallback_reason"] = fallback
        if evals and (not labels or 2 * len(covered) >= len(labels)):
            break
        fallback = ("held-out documents would leave no eval set" if not evals else
                    f"held-out documents cover only {len(covered)} of {len(labels)} labels")
    return train, evals, info


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
        train, evals, split_info = split(cfg, kept)
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
                  {"step": f"eval (held-out {split_info['unit']}s)", "count": len(evals)}]
        if not clean:
            raise TasklingError("curate: no training example survived curation "
                                f"({dict(reasons)}); see {out / 'rejected.jsonl'} and raise budget.examples")
        write_jsonl(out / "train.jsonl", clean)
        write_jsonl(out / "eval.jsonl", evals)
        write_jsonl(out / "rejected.jsonl", rejected)
        labels = {"train": dict(Counter(str(e.get("label")) for e in clean)),
                  "eval": dict(Counter(str(e.get("label")) for e in evals))} if cfg.task.type == "classify" else {}
        ctx.console.print(f"curate: {len(raw)} generated -> {len(clean)} train, {len(evals)} eval "
                          f"held out by {split_info['unit']} ({len(rejected)} rejected: {dict(reasons)})")
        return {"counts": {"generated": len(raw), "train": len(clean), "eval": len(evals), "rejected": len(rejected)},
                "rejections": dict(reasons), "funnel": funnel, "split": split_info, "labels": labels,
                "outputs": ["train.jsonl", "eval.jsonl", "rejected.jsonl"]}

    return run_stage(ctx, "curate", settings, inputs, body)
