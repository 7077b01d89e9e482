"""Task types: classify, extract, answer, generate, each in one module owning
its prompts, teacher-output parser, validator and metric. `get(task_cfg)`
returns the module for a task; all share the helpers here.
"""
from __future__ import annotations

import json
import random
import re
from types import ModuleType
from typing import Any

from ..config import TaskCfg
from ..pile import Chunk, Pile

EXCERPT_CHARS = 1400


def get(task: TaskCfg) -> ModuleType:
    from . import answer, classify, extract, generate

    return {"classify": classify, "extract": extract, "answer": answer, "generate": generate}[task.type]


def output_text(output: Any) -> str:
    """How an output is written in the assistant turn (JSON for structures)."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, sort_keys=True)


def student_messages(system: str, input_text: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": input_text}]


def excerpt(chunk: Chunk, limit: int = EXCERPT_CHARS) -> str:
    text = chunk.text.strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def first_line(text: str, prefixes: tuple[str, ...] = ("input", "question", "answer", "output", "text")) -> str:
    """The first meaningful line of a teacher reply, without labels and quotes."""
    for line in text.strip().splitlines():
        line = line.strip().strip("-*•").strip()
        line = re.sub(r"^\d+[.)]\s*", "", line)
        low = line.lower()
        for p in prefixes:
            if low.startswith(p + ":"):
                line = line[len(p) + 1:].strip()
                break
        line = line.strip('"“”\'` ')
        if line:
            return line
    return ""


def sample_chunks(pile: Pile, n: int, rng: random.Random) -> list[Chunk]:
    """n unique chunks spread over the pile's topics (or, before topics
    exist, its documents): round-robin across groups, random within."""
    groups: dict = {}
    for c in pile.chunks(unique=True):
        if len(c.text.split()) >= 20:
            groups.setdefault(c.topic_id if c.topic_id is not None else f"doc-{c.doc_id}", []).append(c)
    for cs in groups.values():
        rng.shuffle(cs)
    order = sorted(groups, key=str)
    rng.shuffle(order)
    out: list[Chunk] = []
    i = 0
    while len(out) < n and groups:
        g = order[i % len(order)]
        out.append(groups[g][(i // len(order)) % len(groups[g])])
        i += 1
    return out


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(pred: str, gold: str) -> float:
    p, g = words(pred), words(gold)
    if not p or not g:
        return float(p == g)
    common: dict[str, int] = {}
    for w in g:
        common[w] = common.get(w, 0) + 1
    hit = 0
    for w in p:
        if common.get(w, 0) > 0:
            hit += 1
            common[w] -= 1
    if hit == 0:
        return 0.0
    prec, rec = hit / len(p), hit / len(g)
    return 2 * prec * rec / (prec + rec)
