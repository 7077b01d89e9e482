"""answer: a question in, a short answer grounded in the documents out.

The teacher reads a chunk and writes a question it answers and the answer.
Metric: token F1 against the reference answer. `generate` reuses this module
with other wording (instruction in, free text out).
"""
from __future__ import annotations

import json
import re

from ..core.config import TaskCfg
from ..core.errors import TeacherOutputError
from ..data.pile import Chunk, Pile
from . import (DATA_RULE, document_block, diversity_line, example_items, examples_schema, object_schema, output_text,
    spans_for, token_f1, topic_pools)

METRIC = "token_f1"
MAX_NEW_TOKENS = 128
FIRST, SECOND = "Question", "Answer"


def system_prompt(task: TaskCfg) -> str:
    return task.system_prompt or f"{task.description.strip()}\nAnswer briefly and only from what you know of the documents."


def pools(task: TaskCfg, pile: Pile, pool_per_label: int) -> dict[tuple, list[Chunk]]:
    return topic_pools(pile)


def teacher_schema(task: TaskCfg, job: dict) -> dict | None:
    if job["n"] == 1:
        return None
    item = object_schema({"input": {"type": "string"}, "output": {"type": "string"}, "quote": {"type": "string"}})
    return examples_schema(item, job["n"])


def like_line(job: dict, noun: str) -> str:
    """Failure-seeded jobs (the loop): a {noun} the student still gets wrong, to write more like it."""
    return f"A model still answers this {noun} badly; write yours in a similar vein: {job['like']}\n" \
        if job.get("like") else ""


def pair_messages(task: TaskCfg, job: dict, chunks: list[Chunk], first: str, second: str) -> list[dict]:
    system = f"You write realistic, varied training data.\n{DATA_RULE}"
    if job["n"] == 1:
        shots = "\n\n".join(f"{first}: {ex.input}\n{second}: {output_text(ex.output)}" for ex in task.examples[:2])
        user = (f"Documentation excerpt:\n{document_block(chunks)}\n\nTask: {task.description.strip()}\n"
                + like_line(job, first.lower()) +
                f"Write one {first.lower()} that the excerpt answers, as {job['persona']} would ask it, "
                f"and its {second.lower()}, in this format:\n\n"
                f"{shots or f'{first}: ...' + chr(10) + f'{second}: ...'}")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    shots = "\n".join(json.dumps({"input": ex.input, "output": output_text(ex.output)}, ensure_ascii=False)
                      for ex in task.examples[:3])
    user = (f"{document_block(chunks)}\n\nTask: {task.description.strip()}\n"
            f"Write {job['n']} different training examples for this task, each answered by the document(s) above: "
            f"an {first.lower()} ('input'), its {second.lower()} ('output') using only what the documents say, and "
            f"the sentence of a document that supports it, copied exactly ('quote'). {diversity_line(job, first.lower())}\n"
            + like_line(job, first.lower())
            + (f"Examples:\n{shots}\n" if shots else "")
            + 'Reply with JSON only: {"examples": [{"input": "...", "output": "...", "quote": "..."}, ...]}')
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_pair(text: str, first: str, second: str, job: dict, chunks: list[Chunk], finish_reason: str) -> list[dict]:
    if job["n"] == 1:
        if not text.strip():
            raise TeacherOutputError("the teacher's reply is empty", kind="empty")
        m = re.search(rf"{first}\s*:\s*(.+?)\s*{second}\s*:\s*(.+)", text, re.S | re.I)
        if not m:
            raise TeacherOutputError(f"the teacher's reply lacks '{first}:' and '{second}:' lines", kind="wrong_fields")
        q, a = m.group(1).strip(), m.group(2).strip()
        return [{"input": q, "output": a, "spans": spans_for(chunks, a)}]
    out = []
    for item in example_items(text, finish_reason):
        q, a = str(item.get("input") or "").strip(), str(item.get("output") or "").strip()
        if q and a:
            out.append({"input": q, "output": a, "spans": spans_for(chunks, item.get("quote"), a)})
    if not out:
        raise TeacherOutputError("the teacher's examples lack 'input' and 'output'", kind="wrong_fields")
    return out


def teacher_messages(task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
    return pair_messages(task, job, chunks, FIRST, SECOND)


def parse_teacher(task: TaskCfg, job: dict, text: str, chunks: list[Chunk], finish_reason: str = "stop") -> list[dict]:
    return parse_pair(text, FIRST, SECOND, job, chunks, finish_reason)


def validate(task: TaskCfg, ex: dict, min_words: int, max_words: int) -> str | None:
    for part in ("input", "output"):
        n = len(str(ex[part]).split())
        if n < (min_words if part == "input" else 1):
            return f"{part} too short"
        if n > max_words:
            return f"{part} longer than {max_words} words"
    return None


def parse_output(task: TaskCfg, text: str) -> str:
    return text.strip()


def score(task: TaskCfg, pred, gold) -> float:
    return token_f1(pred or "", output_text(gold))


def teacher_eval_messages(task: TaskCfg, input_text: str) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt(task)}]
    for ex in task.examples:
        msgs += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": output_text(ex.output)}]
    return msgs + [{"role": "user", "content": input_text}]
