"""An open-book student's training rows, RAFT-style: each example shown with the chunks the
inference-time retriever returns for its input.

    rows = [render(ex, retriever, rc, system, seed) for ex in train]   # raft=True
    held = [render(ex, retriever, rc, system, seed, raft=False) for ex in eval_set]

With probability `p` (decided per example by the seed, so the same example is always rendered the
same way) the example's source chunk, the one it was generated from, is among the k shown, at a
random place, and the target is its answer citing that place (`answer [2]`). Otherwise only
distractors are shown (retrieved chunks that do not hold the answer) and the target is
`core.openbook.ABSTAIN` (an extract task: every field null), or with `missing: memory` the answer
without a citation. Held-out rows
(`raft=False`) are what evaluation will see: the retriever's k chunks as they come, the answer cited
when the source is among them and the abstention when it is not. An example without a known
source (a task example) cites the retrieved chunk that holds its answer word for word, or none.
"""
from __future__ import annotations

import random

from ..core.openbook import ABSTAIN, RetrievalCfg
from ..data.pile import Chunk
from ..data.retrieve import Retriever
from ..tasks import output_text
from ..tasks.openbook import cite, holds_text, open_messages

SPARE = 4  # retrieved beyond k, so that k distractors remain once the source and its copies are left out


def holds(chunk: Chunk, output) -> bool:
    """Whether a chunk holds the answer word for word: the whole text, or every value of an object."""
    if isinstance(output, dict):
        values = [str(v) for v in output.values() if v not in (None, "", [])]
        return bool(values) and all(holds_text(chunk.text, v) for v in values)
    return holds_text(chunk.text, output_text(output))


def abstained(output, missing: str) -> str:
    """The target when only distractors are shown: the abstention (for an object, every field null: what
    the schema-constrained student can say), or with `missing: memory` the answer all the same."""
    if missing == "memory":
        return output_text(output)
    return output_text({k: None for k in output}) if isinstance(output, dict) else ABSTAIN


def source_of(ex: dict, retriever: Retriever, found: list[Chunk]) -> Chunk | None:
    """The chunk the example was generated from as the retriever shows it for the example's input, else
    the first retrieved chunk that holds its answer. A source whose shown part (`Retriever.shown`) has
    lost the answer it holds word for word is no source: the reader could not have copied it from there."""
    for key in ex.get("chunks") or []:
        c = retriever.chunk(key)
        shown = None if c is None else retriever.shown(c, ex["input"])
        if shown is not None and (shown is c or holds(shown, ex["output"]) or not holds(c, ex["output"])):
            return shown
    return next((c for c in found if holds(c, ex["output"])), None)


def render(ex: dict, retriever: Retriever, rc: RetrievalCfg, system: str, seed: int, raft: bool = True) -> dict:
    """The example as the open-book student learns it: {messages, output (the target text), case, chunks
    (the keys shown)}; `case` is oracle, distractors or unsourced."""
    k = retriever.k
    found = retriever.find(ex["input"], k + SPARE)
    src = source_of(ex, retriever, found)
    answer = output_text(ex["output"])
    if src is None:
        shown, target, case = found[:k], answer, "unsourced"
    elif not raft:
        shown = found[:k]
        at = next((i for i, c in enumerate(shown) if c.key == src.key), None)
        case = "oracle" if at is not None else "distractors"
        target = cite(answer, at + 1) if at is not None else abstained(ex["output"], rc.missing)
    else:
        rng = random.Random(f"{seed}\x00{ex['input']}\x00{answer}")
        distractors = [c for c in found if c.key != src.key and c.text != src.text and not holds(c, ex["output"])]
        if rng.random() < rc.p:
            shown = distractors[:k - 1]
            at = rng.randrange(len(shown) + 1)
            shown.insert(at, src)
            target, case = cite(answer, at + 1), "oracle"
        else:
            shown = distractors[:k]
            target, case = abstained(ex["output"], rc.missing), "distractors"
    msgs = open_messages(system, str(ex["input"]), shown, retriever.chunk_chars)
    return {"messages": msgs, "output": target, "case": case, "chunks": [c.key for c in shown]}


def cases(rows: list[dict]) -> dict:
    """How many rows of each case, and the share shown with only distractors (about 1 - p)."""
    n = {c: sum(r["case"] == c for r in rows) for c in ("oracle", "distractors", "unsourced")}
    sourced = n["oracle"] + n["distractors"]
    return n | {"distractor_share": round(n["distractors"] / sourced, 4) if sourced else None}
