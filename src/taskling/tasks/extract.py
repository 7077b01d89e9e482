"""extract: a JSON object of fields, described by task.output_schema.

The teacher reads a chunk and writes the fields found in it; the input is the
chunk's text. Values must occur in the source (checked in curation).
Metric: share of schema fields whose value matches exactly (normalised).
"""
from __future__ import annotations

import re

from ..core.config import TaskCfg
from ..core.errors import TeacherOutputError
from ..data.pile import Chunk, Pile
from . import (DATA_RULE, document_block, example_items, examples_schema, object_schema, output_text,
    parse_json_loose, spans_for, topic_pools)

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


ONE_INPUT_PER_CHUNK = True  # the input is a chunk's text: several examples per call = several chunks


def pools(task: TaskCfg, pile: Pile, pool_per_label: int) -> dict[tuple, list[Chunk]]:
    return topic_pools(pile)


def _fields_schema(task: TaskCfg) -> dict:
    props = {}
    for name, spec in fields(task).items():
        t = spec.get("type", "string")
        props[name] = {**spec, "type": [t, "null"] if isinstance(t, str) else [*t, "null"]}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


NUMBER_BOUND = 10**15  # a weak model can write digits forever; constrained numbers stay within this


def student_schema(task: TaskCfg) -> dict:
    """The student's output for constrained decoding: every field (null when absent), keys
    sorted as the student was trained (tasks.output_text)."""
    schema = _fields_schema(task)
    props = {}
    for name, spec in sorted(schema["properties"].items()):
        if {"integer", "number"} & set(spec["type"]) and "maximum" not in spec and "minimum" not in spec:
            spec = {**spec, "minimum": -NUMBER_BOUND, "maximum": NUMBER_BOUND}  # no endless digits
        props[name] = spec
    return {**schema, "properties": props, "required": sorted(schema["required"])}


def teacher_schema(task: TaskCfg, job: dict) -> dict | None:
    if len(job["chunks"]) == 1:
        return _fields_schema(task)
    return examples_schema(object_schema({"document": {"type": "integer"}, "output": _fields_schema(task)}),
                           len(job["chunks"]))


def teacher_messages(task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
    shots = "\n".join(f"Text: {ex.input}\nJSON: {output_text(ex.output)}" for ex in task.examples[:2])
    if len(chunks) == 1:
        user = f"{system_prompt(task)}\n\n{shots}\n\n{document_block(chunks)}\nJSON:"
        return [{"role": "system", "content": DATA_RULE}, {"role": "user", "content": user}]
    user = (f"{document_block(chunks)}\n\n{system_prompt(task)}\n\n{shots}\n\n"
            f"Do this for each of the {len(chunks)} documents above. Copy values exactly as they are written. "
            f'Reply with JSON only: {{"examples": [{{"document": 1, "output": {{...}}}}, ...]}}')
    return [{"role": "system", "content": DATA_RULE}, {"role": "user", "content": user}]


def parse_json(text: str) -> dict | None:
    val = parse_json_loose(text)
    return val if isinstance(val, dict) else None


def _example(task: TaskCfg, obj: dict, chunk: Chunk) -> dict:
    return {"input": chunk.text.strip(), "output": obj,
            "spans": spans_for([chunk], *[v for v in obj.values() if isinstance(v, (str, int, float))])}


def parse_teacher(task: TaskCfg, job: dict, text: str, chunks: list[Chunk], finish_reason: str = "stop") -> list[dict]:
    if len(chunks) == 1:
        obj = parse_json(text)
        if obj is None:
            kind = "empty" if not text.strip() else "truncated" if finish_reason == "length" else "not_json"
            raise TeacherOutputError("the teacher's reply holds no JSON object", kind=kind)
        obj = obj.get("output", obj) if set(obj) - set(fields(task)) == {"output"} else obj
        return [_example(task, obj, chunks[0])]
    out = []
    for n, item in enumerate(example_items(text, finish_reason), 1):
        obj = item.get("output") if isinstance(item.get("output"), dict) else None
        doc = item.get("document", n)
        if obj is None or not isinstance(doc, int) or not 1 <= doc <= len(chunks):
            continue
        out.append(_example(task, obj, chunks[doc - 1]))
    if not out:
        raise TeacherOutputError("the teacher's examples have no 'document' and 'output'", kind="wrong_fields")
    return out


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
