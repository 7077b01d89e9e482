"""A served model's task, without a model: task.json checked against the task-type registry, and
the task's answers shaped by its decoding constraint (labels scored, JSON parsed, text as is)."""
from __future__ import annotations

import json
import math

import pytest

from taskling.core.errors import TasklingError
from taskling.serving.engine import Generation, NoTask, Sampling
from taskling.serving.outputs import served_decoding, task_outputs
from taskling.serving.target import read_task

SCHEMA = {"type": "object", "properties": {"code": {"type": ["string", "null"]}}}


class Scripted:
    """An engine that answers from a script: label log-probabilities, or fixed texts."""

    def __init__(self, logps: list[float] | None = None, text: str = ""):
        self.logps, self.text, self.asked = logps, text, []

    def chat_ids(self, messages: list[dict]) -> list[int]:
        self.asked.append(messages)
        return [1, 2, 3]

    def label_logprobs(self, ids: list[int], labels: list[str]) -> list[float]:
        return self.logps

    def generate_many(self, convs: list[list[dict]], s: Sampling) -> list[Generation]:
        self.asked.append((convs, s))
        return [Generation(self.text, 5, 2, "stop") for _ in convs]


def write(tmp_path, info: dict):
    p = tmp_path / "task.json"
    p.write_text(json.dumps(info))
    return p


def test_task_json_names_a_registered_type(tmp_path):
    assert read_task(tmp_path / "none.json") == {}
    assert read_task(write(tmp_path, {"name": "x"})) == {"name": "x"}  # no task: chat endpoints only
    with pytest.raises(TasklingError, match=r"type 'clasify' is not a task type; did you mean 'classify'"):
        read_task(write(tmp_path, {"type": "clasify"}))
    with pytest.raises(TasklingError, match="a classify task needs a list of at least two 'labels'"):
        read_task(write(tmp_path, {"type": "classify", "labels": ["only"]}))
    assert served_decoding({}) is None and served_decoding({"type": "answer"}).constrained is False


def test_a_label_is_scored_with_the_probability_of_each():
    engine = Scripted(logps=[math.log(0.2), math.log(0.8)])
    info = {"type": "classify", "labels": ["a", "b"], "system_prompt": "Route it."}
    out = task_outputs(engine, info, ["x"])[0]
    assert out["output"] == out["label"] == "b" and out["probability"] == pytest.approx(0.8)
    assert out["completion_tokens"] == 0 and engine.asked[0][0] == {"role": "system", "content": "Route it."}


def test_json_is_constrained_and_parsed_and_text_is_kept():
    engine = Scripted(text=' {"code": "E1"} ')
    out = task_outputs(engine, {"type": "extract", "output_schema": SCHEMA}, ["a", "b"], max_tokens=40)
    assert [o["output"] for o in out] == [{"code": "E1"}] * 2
    convs, s = engine.asked[0]
    assert s.json_schema == SCHEMA and s.max_tokens == 40 and convs[0] == [{"role": "user", "content": "a"}]
    cut = task_outputs(Scripted(text='{"code": "E'), {"type": "extract"}, ["a"])[0]
    assert cut["output"] is None and cut["text"] == '{"code": "E'
    engine = Scripted(text="Use json_extract. ")
    out = task_outputs(engine, {"type": "answer", "max_new_tokens": 64}, ["q"])[0]
    assert out["output"] == "Use json_extract." and "text" not in out
    assert engine.asked[0][1] == Sampling(64)
    with pytest.raises(NoTask):
        task_outputs(engine, {}, ["q"])
