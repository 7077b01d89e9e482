"""Train and eval kept apart by source: no document (or, as a fallback, no chunk) feeds both.

`split` holds out about curate.eval_fraction of the examples by source unit, `split_dev` cuts
round 0's held-out examples again into eval (fixed for the run) and the loop's dev set, and
`split_rows` holds out rows of mapped tables one by one. The curate stage records which units
it held out in its manifest (`Split`), and later rounds keep them out of training.
"""
from __future__ import annotations

import hashlib
from collections import Counter

from ..core.config import Config

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


def split_dev(cfg: Config, evals: list[dict], unit: str) -> tuple[list[dict], list[dict], list[str]]:
    """Round 0's held-out examples cut again by source unit: eval (the honest figures, fixed for the
    whole run) and dev (what the loop's analysis reads and seeds generation from; it grows by the
    later rounds' examples from its units). Never trained on, either of them."""
    key = SPLIT_UNITS[unit]
    units = sorted({key(ex) for ex in evals}, key=lambda g: hashlib.sha256(f"{cfg.seed}:dev:{g}".encode()).hexdigest())
    if len(units) < 2:
        return evals, [], []
    n_dev = min(len(units) - 1, max(1, round(cfg.loop.dev_fraction * len(units))))
    dev_units = set(units[:n_dev])
    return ([ex for ex in evals if key(ex) not in dev_units], [ex for ex in evals if key(ex) in dev_units],
            sorted(dev_units))


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
        info["held_out_units"] = sorted(held)
        if evals and (not labels or 2 * len(covered) >= len(labels)):
            break
        fallback = ("held-out documents would leave no eval set" if not evals else
                    f"held-out documents cover only {len(covered)} of {len(labels)} labels")
    return train, evals, info


def split_rows(cfg: Config, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Table rows held out one by one (not by file: a lookup table is one document), each table at
    its eval_fraction (default curate.eval_fraction); a paraphrase goes where its row goes, a question
    about a key the pile lacks (`absent`) to eval."""
    frac = {t.name: (t.eval_fraction if t.eval_fraction is not None else cfg.curate.eval_fraction)
            for t in cfg.tables}
    train, evals = [], []
    for ex in rows:
        if ex.get("absent"):  # a question about a key the pile lacks (tablerows.absent_questions): eval only
            evals.append(ex)
            continue
        unit = ex.get("paraphrase_of") or ex["id"]
        h = int(hashlib.sha256(f"{cfg.seed}:{unit}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (evals if h < frac.get(ex.get("table"), cfg.curate.eval_fraction) else train).append(ex)
    return train, evals
