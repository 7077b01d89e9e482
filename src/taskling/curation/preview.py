"""What curate would say about a few generated examples before the stage is paid for: the samples
`taskling generate --dry-run` prints, each with its source span and curation's verdict.

The verdict comes from the checks curate itself makes, through the same functions: the task type's
`validate` and `grounding` (against the cited chunks' text, with curate's floor) and `filters.dedup`
against the task's own examples (a copy of one is a duplicate, as in curate). Without embeddings,
the language vote, the judge or the split, so an example marked "kept" here can still fall later;
one marked "dropped" would be dropped by curate too.
"""
from __future__ import annotations

from typing import Callable

from ..core import tasktype
from ..core.config import Config
from ..tasks import output_text
from .filters import dedup


def verdicts(cfg: Config, examples: list[dict], source_text: Callable[[dict], str]) -> list[dict]:
    """Each example with its verdict: "kept", or "dropped: <curate's reason>"; `source_text(ex)` is the
    text of the chunks it cites."""
    task = tasktype.get(cfg.task.type)
    floor = cfg.curate.min_grounding if cfg.curate.min_grounding is not None else task.min_grounding
    shots = [s.input for s in cfg.task.examples] if cfg.curate.task_examples else []
    texts = shots + [str(ex["input"]) for ex in examples]
    order = list(range(len(texts)))
    dups = dedup(order, texts, None, cfg.curate.near_dup, cfg.curate.semantic_dup) if cfg.curate.filters else {}
    out = []
    for i, ex in enumerate(examples):
        reason = task.validate(cfg.task, ex, cfg.curate.min_words, cfg.curate.max_words) if cfg.curate.filters \
            else None
        grounding = task.grounding(cfg.task, ex, source_text(ex), None)
        if reason is None and (d := dups.get(len(shots) + i)) is not None:
            kind, of = d
            reason = f"{kind} (of " + (f"task.examples[{of}]" if of < len(shots) else
                                      f"sample {of - len(shots) + 1}") + ")"
        if reason is None and cfg.curate.filters and grounding + 1e-9 < floor:
            reason = f"not grounded in its source (score < {floor:g})"
        out.append({"input": ex["input"], "output": ex["output"], "label": ex.get("label"),
                    "source": source_of(ex), "span": span_of(ex), "grounding": round(grounding, 3),
                    "verdict": "kept" if reason is None else f"dropped: {reason}"})
    return out


def source_of(ex: dict) -> str:
    """Where the example comes from: the first cited chunk's path and locator."""
    prov = (ex.get("provenance") or [{}])[0]
    where = " ".join(x for x in (prov.get("path"), prov.get("locator")) if x)
    return where or "(no source)"


def span_of(ex: dict, width: int = 160) -> str:
    """The source text the example rests on (its first span), cut to `width` characters."""
    spans = ex.get("spans") or []
    text = " ".join(str(spans[0].get("text", "")).split()) if spans else ""
    return text if len(text) <= width else text[: width - 1] + "…"


def sample_lines(samples: list[dict]) -> list[str]:
    """The samples as a short block each, for the terminal."""
    lines = []
    for n, s in enumerate(samples, 1):
        out = output_text(s["output"])
        lines += [f"sample {n}: {s['verdict']}  (grounding {s['grounding']:g})",
                  f"  input:  {' '.join(str(s['input']).split())[:300]}",
                  f"  output: {' '.join(out.split())[:300]}",
                  f"  source: {s['source']}" + (f": \"{s['span']}\"" if s["span"] else "")]
    return lines


def pick(records: list[dict], n: int = 5) -> list[dict]:
    """Up to n examples from the dry run's jobs, one per job first (different chunks, labels, personas)."""
    rounds = [r["examples"] for r in records if r.get("examples")]
    out: list[dict] = []
    depth = 0
    while len(out) < n and any(len(x) > depth for x in rounds):
        out += [x[depth] for x in rounds if len(x) > depth][: n - len(out)]
        depth += 1
    return out
