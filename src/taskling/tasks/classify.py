"""classify: one label from a fixed set.

Generation is label-conditioned: for a chosen label the teacher reads a chunk
that the pile's search ranks high for that label's description and writes an
*input* of that label. Writing an input for a given label is a much easier job
for a weak teacher than labelling, so the labels are right more often.
Metric: accuracy.
"""
from __future__ import annotations

import random
import re

from ..config import TaskCfg
from ..errors import TeacherOutputError
from ..pile import Chunk, Pile
from . import excerpt, first_line, token_f1

METRIC = "accuracy"
MAX_NEW_TOKENS = 16
TEACHER_MAX_TOKENS = 64  # one input is short; longer replies are rambling


def system_prompt(task: TaskCfg) -> str:
    if task.system_prompt:
        return task.system_prompt
    return f"{task.description.strip()}\nAnswer with exactly one label from: {', '.join(task.labels)}."


def plan(task: TaskCfg, pile: Pile, n: int, rng: random.Random, pool_per_label: int) -> list[dict]:
    """n jobs, labels round-robin, each with a chunk relevant to its label."""
    pools: dict[str, list[Chunk]] = {}
    everything = pile.chunks(unique=True)
    unique = {c.id for c in everything}
    for label, desc in task.labels.items():
        hits = [c for c, _ in pile.search(f"{label.replace('-', ' ')} {desc}", limit=2 * pool_per_label)
                if len(c.text.split()) >= 20 and c.id in unique][:pool_per_label]
        pools[label] = hits or [c for c in everything if len(c.text.split()) >= 20]
    labels = list(task.labels)
    jobs = []
    for i in range(n):
        label = labels[i % len(labels)]
        pool = pools[label]
        if not pool:
            break
        chunk = pool[rng.randrange(len(pool))]
        jobs.append({"index": i, "label": label, "chunks": [chunk.key]})
    return jobs


def teacher_messages(task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
    label = job["label"]
    shots = [ex.input for ex in task.examples if ex.output == label] or [ex.input for ex in task.examples]
    noun = task.input_noun
    # Short and concrete: a 135M teacher follows this shape far better than a
    # long instruction (tried here; it mostly continues the example).
    user = (f"Here is part of a document:\n\"\"\"\n{excerpt(chunks[0], 700)}\n\"\"\"\n\n"
            f"Write a {noun} about {task.labels[label]}, that this part of the document answers. "
            f"Example {noun}: {shots[job['index'] % len(shots)]}\n{noun[:1].upper() + noun[1:]}:")
    return [{"role": "user", "content": user}]


def parse_teacher(task: TaskCfg, job: dict, text: str, chunks: list[Chunk]) -> dict:
    line = first_line(text)
    if not line:
        raise TeacherOutputError("the teacher's reply is empty")
    return {"input": line, "output": job["label"]}


ANSWER_LIKE = re.compile(
    r"^(here (is|are)|provide|to \w+|it appears|sure|i'd|i would|the (question|answer|excerpt)|one example|"
    r"this (answer|question|function|example)|```|\w{1,3}:|answer\b|note\b)", re.I)


def validate(task: TaskCfg, ex: dict, min_words: int, max_words: int) -> str | None:
    if ex["output"] not in task.labels:
        return "label not in the label set"
    text = ex["input"]
    n = len(text.split())
    if n < min_words:
        return f"input shorter than {min_words} words"
    if n > max_words:
        return f"input longer than {max_words} words"
    if re.search(r"\b(excerpt|part of (a|the) document|new input)\b", text, re.I):
        return "input talks about the prompt instead of the task"
    if ANSWER_LIKE.match(text):
        return "reads like an answer, not an input"
    for shot in task.examples:
        if token_f1(text, shot.input) > 0.7:
            return "copies a task example"
    return None


def parse_output(task: TaskCfg, text: str) -> str | None:
    """The label a model answered: exact match, else the one label named in the reply."""
    clean = text.strip().strip("\"'`.*").strip().lower()
    labels = {lab.lower(): lab for lab in task.labels}
    if clean in labels:
        return labels[clean]
    found = []
    for low, lab in sorted(labels.items(), key=lambda kv: -len(kv[0])):
        m = re.search(rf"(?<![\w-]){re.escape(low)}(?![\w-])", text.lower())
        if m:
            found.append((m.start(), lab))
    return min(found)[1] if found else None


def score(task: TaskCfg, pred, gold) -> float:
    return float(pred is not None and pred == gold)


def teacher_eval_messages(task: TaskCfg, input_text: str) -> list[dict]:
    """How the teacher is asked to do the task itself: few-shot, as a chat."""
    msgs = [{"role": "system", "content": system_prompt(task) + "\n" +
             "\n".join(f"- {k}: {v}" for k, v in task.labels.items())}]
    for ex in task.examples:
        msgs += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": str(ex.output)}]
    return msgs + [{"role": "user", "content": input_text}]
