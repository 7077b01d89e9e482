"""extract: a JSON object of fields, described by task.output_schema.

The teacher reads a chunk and writes the fields found in it; the input is the
chunk's text. Values must occur in the source (checked in curation, and against
retrieved chunks in evaluate's teacher-retrieval system). Metric: share of schema
fields whose value matches exactly (normalised). Constrained decoding writes JSON
valid against every field, nullable, in the order the student was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import TeacherOutputError
from ..core.tasktype import Decoding, Kind, TaskCfg, register
from ..data.pile import Chunk, Pile
from . import (DATA_RULE, document_block, example_items, examples_schema, norm_value, object_schema, output_text,
    parse_json_object, spans_for, task_kind, topic_pools)
from . import metrics
from .grounding import value_support

TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "array": list, "object": dict}
NUMBER_BOUND = 10**15  # a weak model can write digits forever; constrained numbers stay within this


def fields(task: TaskCfg) -> dict:
    return (task.output_schema or {}).get("properties", {})


def fields_schema(task: TaskCfg) -> dict:
    """The fields as a JSON schema object, each one nullable (absent)."""
    props = {}
    for name, spec in fields(task).items():
        t = spec.get("type", "string")
        props[name] = {**spec, "type": [t, "null"] if isinstance(t, str) else [*t, "null"]}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def student_schema(task: TaskCfg) -> dict:
    """The student's output for constrained decoding: every field (null when absent), keys
    sorted as the student was trained (tasks.output_text)."""
    schema = fields_schema(task)
    props = {}
    for name, spec in sorted(schema["properties"].items()):
        if {"integer", "number"} & set(spec["type"]) and "maximum" not in spec and "minimum" not in spec:
            spec = {**spec, "minimum": -NUMBER_BOUND, "maximum": NUMBER_BOUND}  # no endless digits
        props[name] = spec
    return {**schema, "properties": props, "required": sorted(schema["required"])}


def example_of(obj: dict, chunk: Chunk) -> dict:
    return {"input": chunk.text.strip(), "output": obj,
            "spans": spans_for([chunk], *[v for v in obj.values() if isinstance(v, (str, int, float))])}


@dataclass(frozen=True)
class Extract:
    name: str = "extract"
    metric: str = "field_accuracy"
    max_new_tokens: int = 192
    teacher_max_tokens: int = 10**6
    min_grounding: float = 1.0      # every value must be found in the source
    labelled: bool = False
    structured: bool = True
    judged: bool = False
    retrieval_check: bool = True
    one_input_per_chunk: bool = True  # the input is a chunk's text: several examples per call = several chunks
    claim: str = "values"

    def check_task(self, task: TaskCfg) -> str | None:
        if not task.output_schema:
            return "an extract task needs task.output_schema (a JSON schema of the fields)"
        return None

    def system_prompt(self, task: TaskCfg) -> str:
        if task.system_prompt:
            return task.system_prompt
        spec = ", ".join(f"{k} ({v.get('type', 'string')})" for k, v in fields(task).items())
        return (f"{task.description.strip()}\nReply with a JSON object with the fields: {spec}. "
                "Use null when a field is absent.")

    def pools(self, task: TaskCfg, pile: Pile, pool_per_label: int) -> dict[tuple, list[Chunk]]:
        return topic_pools(pile)

    def teacher_schema(self, task: TaskCfg, job: dict) -> dict | None:
        if len(job["chunks"]) == 1:
            return fields_schema(task)
        return examples_schema(object_schema({"document": {"type": "integer"}, "output": fields_schema(task)}),
                               len(job["chunks"]))

    def teacher_messages(self, task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
        shots = "\n".join(f"Text: {ex.input}\nJSON: {output_text(ex.output)}" for ex in task.examples[:2])
        if len(chunks) == 1:
            user = f"{self.system_prompt(task)}\n\n{shots}\n\n{document_block(chunks)}\nJSON:"
            return [{"role": "system", "content": DATA_RULE}, {"role": "user", "content": user}]
        user = (f"{document_block(chunks)}\n\n{self.system_prompt(task)}\n\n{shots}\n\n"
                f"Do this for each of the {len(chunks)} documents above. Copy values exactly as they are written. "
                f'Reply with JSON only: {{"examples": [{{"document": 1, "output": {{...}}}}, ...]}}')
        return [{"role": "system", "content": DATA_RULE}, {"role": "user", "content": user}]

    def teacher_eval_messages(self, task: TaskCfg, input_text: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt(task)}]
        for ex in task.examples:
            msgs += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": output_text(ex.output)}]
        return msgs + [{"role": "user", "content": input_text}]

    def parse_teacher(self, task: TaskCfg, job: dict, text: str, chunks: list[Chunk],
                      finish_reason: str = "stop") -> list[dict]:
        if len(chunks) == 1:
            obj = parse_json_object(text)
            if obj is None:
                kind = "empty" if not text.strip() else "truncated" if finish_reason == "length" else "not_json"
                raise TeacherOutputError("the teacher's reply holds no JSON object", kind=kind)
            obj = obj.get("output", obj) if set(obj) - set(fields(task)) == {"output"} else obj
            return [example_of(obj, chunks[0])]
        out = []
        for n, item in enumerate(example_items(text, finish_reason), 1):
            obj = item.get("output") if isinstance(item.get("output"), dict) else None
            doc = item.get("document", n)
            if obj is None or not isinstance(doc, int) or not 1 <= doc <= len(chunks):
                continue
            out.append(example_of(obj, chunks[doc - 1]))
        if not out:
            raise TeacherOutputError("the teacher's examples have no 'document' and 'output'", kind="wrong_fields")
        return out

    def validate(self, task: TaskCfg, ex: dict, min_words: int, max_words: int) -> str | None:
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

    def parse_output(self, task: TaskCfg, text: str) -> dict | None:
        return parse_json_object(text)

    def split_key(self, task: TaskCfg, ex: dict) -> str:
        return str((ex.get("arm") or [None])[0])

    def grounding(self, task: TaskCfg, ex: dict, source: str, similarity: float | None = None) -> float:
        return round(value_support(ex["output"], source), 4)  # values are found or not: no similarity

    def check_retrieved(self, task: TaskCfg, parsed: Any, chunks: list[Chunk]) -> tuple[Any, dict]:
        """A value that occurs in none of the retrieved text is dropped (set to null)."""
        if not isinstance(parsed, dict):
            return parsed, {"supported": None, "dropped": []}
        text = " ".join(c.text for c in chunks).lower()
        kept, dropped = {}, []
        for field, value in parsed.items():
            if value is None or str(value).strip().lower() in text:
                kept[field] = value
            else:
                kept[field] = None
                dropped.append(field)
        return kept, {"supported": not dropped, "dropped": dropped}

    def kinds(self, task: TaskCfg, rows: list[dict]) -> list[Kind]:
        """The training examples, and per field those that give it a value: a field the student
        never saw filled is one it learns to leave null."""
        filled = {name: sum(isinstance(r.get("output"), dict) and r["output"].get(name) not in (None, "", [], {})
                            for r in rows) for name in fields(task)}
        return [task_kind(rows)] + [
            Kind(f"field '{name}'", n, "min_per_field", f"field '{name}' has a value in {n} generated training "
                 "example(s)", f"add documents that state it, or a task.examples entry that fills it, or drop it "
                 "from task.output_schema") for name, n in filled.items()]

    def decoding(self, task: TaskCfg) -> Decoding:
        return Decoding(json_schema=student_schema(task))

    def served_decoding(self, info: dict) -> Decoding:
        return Decoding(json_schema=info.get("output_schema") or {"type": "object"})

    def score(self, task: TaskCfg, pred: Any, gold: Any) -> float:
        if isinstance(gold, str):
            gold = parse_json_object(gold) or {}
        names = list(fields(task)) or list(gold)
        if not names:
            return 0.0
        pred = pred or {}
        return sum(norm_value(pred.get(k)) == norm_value(gold.get(k)) for k in names) / len(names)

    def item_scores(self, task: TaskCfg, expected: list, predicted: list) -> list[float]:
        return metrics.field_scores(expected, predicted, list(fields(task)) or None)

    def summarize(self, task: TaskCfg, expected: list, predicted: list, sources: list | None = None, *,
                  seed: int = 0, reps: int = 1000) -> dict:
        return metrics.field_summary(expected, predicted, list(fields(task)) or None, seed=seed, reps=reps)


EXTRACT = register(Extract())
