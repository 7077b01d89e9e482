"""A served model doing its task: the task's answers to inputs, prompted as the student was
trained (task.json's system prompt) and constrained as its task type says (`served_decoding`).

    task_outputs(engine, target.info, ["an input"])   # [{"output": ..., "prompt_tokens": ...}, ...]

An answer that is always a label is scored, not generated: every label's probability as the
whole answer, the most likely one the output. A JSON schema constrains generation and the
output is the parsed object (None, with the text, when max_tokens cut it off); otherwise the
output is the text.
"""
from __future__ import annotations

import json
import math

from ..core import tasktype
from ..core.tasktype import Decoding
from ..tasks import student_messages
from .engine import NO_TASK, Engine, Generation, NoTask, Sampling


def served_decoding(info: dict) -> Decoding | None:
    """How task.json's task constrains answers; None when it names no task (no /v1/task)."""
    kind = info.get("type")
    if kind not in tasktype.names():
        return None
    return tasktype.get(kind).served_decoding(info)


def task_messages(info: dict, text: str) -> list[dict]:
    system = info.get("system_prompt")
    return student_messages(system, text) if system else [{"role": "user", "content": text}]


def task_outputs(engine: Engine, info: dict, inputs: list[str], max_tokens: int | None = None) -> list[dict]:
    """The task's answers to `inputs`: a label with the probability of each (classify), a JSON
    object constrained to the task's schema (extract) or text (answer, generate)."""
    decoding = served_decoding(info)
    if decoding is None:
        raise NoTask(NO_TASK)
    convs = [task_messages(info, x) for x in inputs]
    if decoding.labels is not None:
        labels = list(decoding.labels)
        out = []
        for c in convs:
            ids = engine.chat_ids(c)
            out.append({**label_result(labels, engine.label_logprobs(ids, labels)), "prompt_tokens": len(ids),
                        "completion_tokens": 0, "finish_reason": "stop"})  # scored, not generated
        return out
    limit = max_tokens or info.get("max_new_tokens") or 256
    gens = engine.generate_many(convs, Sampling(limit, json_schema=decoding.json_schema))
    return [text_result(g, as_json=decoding.json_schema is not None) for g in gens]


def label_result(labels: list[str], logps: list[float]) -> dict:
    top = max(logps)
    weights = [math.exp(x - top) for x in logps]
    probs = {lab: w / sum(weights) for lab, w in zip(labels, weights)}
    best = max(labels, key=probs.__getitem__)
    return {"output": best, "label": best, "probability": round(probs[best], 6),
            "probabilities": {k: round(v, 6) for k, v in probs.items()}}


def text_result(g: Generation, as_json: bool) -> dict:
    text = g.text.strip()
    out: object = text
    if as_json:
        try:
            out = json.loads(text)
        except json.JSONDecodeError:  # cut off by max_tokens before the object closed
            out = None
    res = {"output": out, "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
           "finish_reason": g.finish_reason}
    return res | ({"text": text} if out is None else {})
