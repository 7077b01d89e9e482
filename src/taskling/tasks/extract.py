"""extract: a JSON object of fields, described by task.output_schema.

The teacher reads a chunk and writes the fields found in it; the input is the
chunk's text. Values must occur in the source (checked in curation).
Metric: share of schema fields whose value matches exactly (normalised).
"""
from __future__ import annotations

import json
import random
import re

from ..config import TaskCfg
from ..errors import TeacherOutputError
from ..pile import Chunk, Pile
from . import excerpt, output_text, sample_chunks

METRIC = "field_accuracy"
MAX_NEW_TOKENS = 192
TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "array": list, "object": dict}


def fields(task: TaskCfg) -> dict:
    return (task.output_schema or {}).get("properties", {})


def system_prompt(task: TaskCfg) -> str:
    if task.system_prompt:
        return task.system_prompt
    spec = ", ".join(f"{k} ({v.get('type', 'string')})" for k, v in fields(task).items())
    return f"{task.description.strip()}\nReply with a JSON object with the fields: {spec}. Use null when a field is absent."


def plan(task: TaskCfg, pile: Pile, n: int, rng: random.Random, pool_per_label: int) -> list[dict]:
    return [{"index": i, "chunks": [c.key]} for i, c in enumerate(sample_chunks(pile, n, rng))]


def teacher_messages(task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
    shots = "\n".join(f"Text: {ex.input}\nJSON: {output_text(ex.output)}" for ex in task.examples[:2])
    user = (f"{system_prompt(task)}\n\n{shots}\n\nText: {excerpt(chunks[0])}\nJSON:")
    return [{"role": "user", "content": user}]


def parse_json(text: str) -> dict | None:
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None
    blob = m.group(0)
    for candidate in (blob, re.sub(r",\s*([}\]])", r"\1", blob).replace("'", '"')):
        try:
            val = json.loads(candidate)
            return val if isinstance(val, dict) else None
        except json.JSONDecodeError:
            continue
    return None


def parse_teacher(task: TaskCfg, job: dict, text: str, chunks: list[Chunk]) -> dict:
    obj = parse_json(text)
    if obj is None:
        raise TeacherOutputError("the teacher's reply holds no JSON object")
    return {"input": chunks[0].text.strip(), "output": obj}


def validate(task: TaskCfg, ex: dict, min_words: int, max_words: int) -> str | None:
    out = ex["output"]
    if not isinstance(out, dict):
        return "output is not a JSON object"
    spec = fields(task)
    extra = set(out) - set(spec)
    if extra:
        return f"unknown fields {sorted(extra)}"
    for name in (task.output_schema or {}).get("required", []):
        if out.get(name) is None:
            return f"required field '{name}' missing"
    for name, val in out.items():
        want = TYPES.get(spec[name].get("type", "string"))
        if val is not None and want and not isinstance(val, want):
            return f"field '{name}' is not a {spec[name].get('type')}"
    if all(v in (None, "", []) for v in out.values()):
        return "all fields empty"
    return None


def _norm(v) -> str:
    return re.sub(r"\s+", " ", str(v).strip().lower()) if v is not None else ""


def parse_output(task: TaskCfg, text: str) -> dict | None:
    return parse_json(text)


def score(task: TaskCfg, pred, gold) -> float:
    if isinstance(gold, str):
        gold = parse_json(gold) or {}
    names = list(fields(task)) or list(gold)
    if not names:
        return 0.0
    pred = pred or {}
    return sum(_norm(pred.get(k)) == _norm(gold.get(k)) for k in names) / len(names)


def teacher_eval_messages(task: TaskCfg, input_text: str) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt(task)}]
    for ex in task.examples:
        msgs += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": output_text(ex.output)}]
    return msgs + [{"role": "user", "content": input_text}]
