"""answer: a question in, a short answer grounded in the documents out.

The teacher reads a chunk and writes a question it answers and the answer.
Metric: token F1 against the reference answer. `generate` reuses this module
with other wording (instruction in, free text out).
"""
from __future__ import annotations

import random
import re

from ..config import TaskCfg
from ..errors import TeacherOutputError
from ..pile import Chunk, Pile
from . import excerpt, output_text, sample_chunks, token_f1

METRIC = "token_f1"
MAX_NEW_TOKENS = 128
FIRST, SECOND = "Question", "Answer"


def system_prompt(task: TaskCfg) -> str:
    return task.system_prompt or f"{task.description.strip()}\nAnswer briefly and only from what you know of the documents."


def plan(task: TaskCfg, pile: Pile, n: int, rng: random.Random, pool_per_label: int) -> list[dict]:
    return [{"index": i, "chunks": [c.key]} for i, c in enumerate(sample_chunks(pile, n, rng))]


def pair_messages(task: TaskCfg, chunks: list[Chunk], first: str, second: str) -> list[dict]:
    shots = "\n\n".join(f"{first}: {ex.input}\n{second}: {output_text(ex.output)}" for ex in task.examples[:2])
    user = (f"Documentation excerpt:\n\"\"\"\n{excerpt(chunks[0])}\n\"\"\"\n\nTask: {task.description.strip()}\n"
            f"Write one {first.lower()} that the excerpt answers, and its {second.lower()}, in this format:\n\n"
            f"{shots or f'{first}: ...' + chr(10) + f'{second}: ...'}")
    return [{"role": "system", "content": "You write realistic, varied training data."},
            {"role": "user", "content": user}]


def parse_pair(text: str, first: str, second: str) -> dict:
    m = re.search(rf"{first}\s*:\s*(.+?)\s*{second}\s*:\s*(.+)", text, re.S | re.I)
    if not m:
        raise TeacherOutputError(f"the teacher's reply lacks '{first}:' and '{second}:' lines")
    return {"input": m.group(1).strip(), "output": m.group(2).strip()}


def teacher_messages(task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
    return pair_messages(task, chunks, FIRST, SECOND)


def parse_teacher(task: TaskCfg, job: dict, text: str, chunks: list[Chunk]) -> dict:
    return parse_pair(text, FIRST, SECOND)


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
