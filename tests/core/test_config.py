"""taskling.yaml: loading, validation messages, overrides and the init template."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from taskling.core.config import TEMPLATE, load_config
from taskling.core.errors import TasklingError

MINIMAL = {"task": {"name": "t", "description": "d", "type": "classify", "labels": ["a", "b"]},
           "sources": ["docs"]}


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "taskling.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return p


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(TasklingError) as e:
        load_config(path, list(overrides))
    return str(e.value)


def test_template_is_valid_and_commented(tmp_path):
    cfg = load_config(write(tmp_path, TEMPLATE))
    assert cfg.task.type == "classify" and len(cfg.task.labels) == 3
    assert cfg.root == tmp_path.resolve()
    assert TEMPLATE.count("#") > 20  # every section explained


def test_defaults_and_label_list(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.task.labels == {"a": "a", "b": "b"}
    assert cfg.teacher.backend == "llamacpp" and cfg.student.model == "smollm2-135m-instruct"
    assert cfg.train.steps is None and cfg.seed == 0


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, {**MINIMAL, "trian": {"steps": 3}})
    msg = error_of(p)
    assert str(p) in msg and "'trian'" in msg and "did you mean 'train'" in msg


def test_nested_unknown_key_lists_allowed(tmp_path):
    p = write(tmp_path, {**MINIMAL, "train": {"stpes": 3}})
    msg = error_of(p)
    assert "train.stpes" in msg and "did you mean 'steps'" in msg and "lr" in msg


def test_bad_value_names_key_and_allowed(tmp_path):
    p = write(tmp_path, {**MINIMAL, "task": {**MINIMAL["task"], "type": "summarise"}})
    msg = error_of(p)
    assert "task.type" in msg and "'summarise'" in msg and "classify" in msg and "extract" in msg


def test_unknown_task_type_names_the_nearest_registered_one(tmp_path):
    msg = error_of(write(tmp_path, {**MINIMAL, "task": {**MINIMAL["task"], "type": "clasify"}}))
    assert "task.type: 'clasify' is not a task type; did you mean 'classify'?" in msg
    assert "answer, classify, extract, generate" in msg


def test_sections_that_need_a_kind_of_task(tmp_path):
    answer = {"name": "t", "description": "d", "type": "answer"}
    rules = {"rules": [{"name": "kw", "keywords": ["x"], "label": "a"}]}
    assert "need a classify task (this one is answer)" in error_of(write(tmp_path, {**MINIMAL, "task": answer,
                                                                                    "label": rules}))
    table = {"name": "t1", "input": "{q}", "output": {"a": "{a}"}}
    assert "output is one template for a answer task" in error_of(write(tmp_path, {**MINIMAL, "task": answer,
                                                                                    "tables": [table]}))
    extract = {"name": "t", "description": "d", "type": "extract", "output_schema": {"type": "object"}}
    msg = error_of(write(tmp_path, {**MINIMAL, "task": extract, "tables": [{**table, "output": "{a}"}]}))
    assert "an extract task maps output to fields" in msg


def test_classify_needs_labels_and_extract_needs_schema(tmp_path):
    assert "two labels" in error_of(write(tmp_path, {**MINIMAL, "task": {**MINIMAL["task"], "labels": ["a"]}}))
    msg = error_of(write(tmp_path, {**MINIMAL, "task": {"name": "t", "description": "d", "type": "extract"}}))
    assert "output_schema" in msg


def test_example_label_must_be_a_label(tmp_path):
    task = {**MINIMAL["task"], "examples": [{"input": "x", "output": "c"}]}
    assert "'c' is not one of the labels" in error_of(write(tmp_path, {**MINIMAL, "task": task}))


def test_missing_file_and_malformed_yaml(tmp_path):
    msg = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "taskling init" in msg
    msg = error_of(write(tmp_path, "task: [unclosed\nsources: x\n"))
    assert "not valid YAML" in msg and "line" in msg
    assert "must be a mapping" in error_of(write(tmp_path, "- just\n- a list\n"))
    assert "missing required key 'task'" in error_of(write(tmp_path, "sources: [x]\n"))


def test_dotted_overrides(tmp_path):
    p = write(tmp_path, MINIMAL)
    cfg = load_config(p, ["train.steps=50", "train.lora.r=8", "teacher.temperature=0.2", "seed=7"])
    assert (cfg.train.steps, cfg.train.lora.r, cfg.teacher.temperature, cfg.seed) == (50, 8, 0.2, 7)
    assert "--set" in error_of(p, ["train.steps"])
    assert "did you mean 'steps'" in error_of(p, ["train.step=5"])
    assert "seed: Input should be a valid integer" in error_of(p, ["seed.x=1"])
    p = write(tmp_path, {**MINIMAL, "seed": 3})
    assert "'seed'" in error_of(p, ["seed.x=1"]) and "not a section" in error_of(p, ["seed.x=1"])
    assert "train.steps" in error_of(p, ["train.steps=-1"])
