"""Constrained decoding for extract: JSON valid against the task's schema from
any model (llguidance masks the logits of transformers' generate), and the
evaluate stage's constrained systems for an extract task; on the tiny random
Llama, whose free output is never JSON."""
from __future__ import annotations

import json

from taskling.student import infer
from taskling import tasks
from taskling.core import tasktype
from taskling.core.tasktype import TaskCfg
from taskling.student.models import load_causal_lm
from taskling.stages import evaluate

TASK = TaskCfg(name="codes", type="extract", description="Extract the error code and its severity.",
               output_schema={"type": "object", "properties": {
                   "severity": {"type": "integer"}, "code": {"type": "string", "maxLength": 12},
                   "level": {"type": "string", "enum": ["low", "high"]}}})
EXTRACT = tasktype.get("extract")
CONVS = [tasks.student_messages("Extract the code as JSON.", text)
         for text in ("Error E1042 is severity 3.", "The printer says P-7, level high.", "All fine today.")]


def valid(obj, schema: dict) -> bool:
    props = schema["properties"]
    if not isinstance(obj, dict) or list(obj) != list(props):
        return False
    ok = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool), "string": lambda v: isinstance(v, str)}
    for k, v in obj.items():
        types = props[k]["type"]
        if v is None:
            if "null" not in types:
                return False
        elif not any(ok[t](v) for t in types if t != "null") or ("enum" in props[k] and v not in props[k]["enum"]):
            return False
    return True


def test_the_student_schema_is_every_field_nullable_in_training_order():
    schema = EXTRACT.decoding(TASK).json_schema
    assert list(schema["properties"]) == ["code", "level", "severity"] == schema["required"]  # json.dumps sort_keys
    assert schema["properties"]["severity"]["type"] == ["integer", "null"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["severity"]["maximum"] == 10**15  # bounded: a weak model cannot write digits forever


def test_a_random_model_writes_schema_valid_json_only_when_constrained(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir)
    schema = EXTRACT.decoding(TASK).json_schema
    free = infer.generate(model, tok, CONVS, max_new_tokens=48)
    assert not any(valid(EXTRACT.parse_output(TASK, r["text"]), schema) for r in free)
    bound = infer.generate(model, tok, CONVS, max_new_tokens=200, json_schema=schema, batch_size=2)
    for r in bound:
        assert r["finish_reason"] == "stop", r  # the value closed and the turn ended
        obj = json.loads(r["text"])
        assert valid(obj, schema), r["text"]
        assert r["text"] == json.dumps(obj, ensure_ascii=False, sort_keys=True)  # the student's training format


def test_extract_evaluation_adds_constrained_systems(tiny_model_dir, workspace):
    from taskling.core.config import load_config

    cfg = load_config(workspace, ["evaluate.constrained=true"])
    cfg = cfg.model_copy(update={"task": TASK})
    assert evaluate.systems(cfg)[-2:] == ["student-constrained", "base-constrained"]
    model, tok = load_causal_lm(tiny_model_dir)
    out = evaluate.predict_local(model, tok, "student-constrained", CONVS, EXTRACT, cfg)
    schema = EXTRACT.decoding(TASK).json_schema
    assert all(valid(json.loads(r["text"]), schema) for r in out)
