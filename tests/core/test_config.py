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


# -- each check's own message, and who is blamed for it (what mutation testing showed the tests above let through) --
def test_label_rules_and_teachers_are_checked_against_the_task(tmp_path):
    def label_error(label: dict, task: dict | None = None) -> str:
        return error_of(write(tmp_path, {**MINIMAL, "task": task or MINIMAL["task"], "label": label}))

    answer = {"name": "t", "description": "d", "type": "answer"}
    assert "label.rules and label.teachers vote on labels: they need a classify task (this one is answer)" in \
        label_error({"teachers": [{"name": "t1"}]}, answer)
    kw = {"name": "kw", "keywords": ["x"], "label": "a"}
    msg = label_error({"rules": [kw, {**kw, "label": "b"}]})
    assert f"{tmp_path / 'taskling.yaml'}: (top level): label sources need distinct names; 'kw' is used twice" in msg
    assert "'asked' is used twice" in label_error({"rules": [{**kw, "name": "asked"}]})  # the asked vote's name
    assert load_config(write(tmp_path, {**MINIMAL, "label": {"asked": False, "rules": [{**kw, "name": "asked"}]}}))
    assert "'t1' is used twice" in label_error({"teachers": [{"name": "t1"}], "rules": [{**kw, "name": "t1"}]})
    task = {**MINIMAL["task"], "labels": ["billing", "technical"]}
    msg = label_error({"rules": [{**kw, "label": "billng"}]}, task)
    assert "rule 'kw' votes 'billng', which is not one of the labels ['billing', 'technical']; did you mean 'billing'?" \
        in msg
    msg = label_error({"rules": [{"name": "m", "regex": "(x)", "map": {"x": "billing", "y": "zzz"}}]}, task)
    assert msg.endswith("rule 'm' votes 'zzz', which is not one of the labels ['billing', 'technical']")
    assert "rule 'r': regex '(' does not compile (" in label_error({"rules": [{"name": "r", "regex": "(", "label": "a"}]})
    cfg = load_config(write(tmp_path, {**MINIMAL, "label": {"rules": [
        kw, {"name": "m", "field": "column:team", "regex": "(x)", "map": {"x": "b"}}]}}))
    assert [r.name for r in cfg.label.rules] == ["kw", "m"] and cfg.label.rules[1].map == {"x": "b"}


def test_a_rule_needs_one_test_one_vote_and_a_known_field(tmp_path):
    def rule_error(**rule) -> str:
        return error_of(write(tmp_path, {**MINIMAL, "label": {"rules": [{"name": "r", **rule}]}}))

    assert "rule 'r' needs exactly one of keywords or regex" in rule_error(keywords=["x"], regex="x", label="a")
    assert "rule 'r' needs exactly one of keywords or regex" in rule_error(label="a")
    assert "rule 'r' needs exactly one of label or map" in rule_error(keywords=["x"], label="a", map={"x": "a"})
    assert "rule 'r' needs exactly one of label or map" in rule_error(keywords=["x"])
    assert "rule 'r': field 'title' is not one of input, source, path, locator or column:NAME" in \
        rule_error(keywords=["x"], label="a", field="title")
    for field in ("input", "source", "path", "locator", "column:team"):
        cfg = load_config(write(tmp_path, {**MINIMAL, "label": {"rules": [
            {"name": "r", "keywords": ["x"], "label": "a", "field": field}]}}))
        assert cfg.label.rules[0].field == field


def test_label_auto_switch(tmp_path):
    off = load_config(write(tmp_path, {**MINIMAL, "label": {"auto": False}})).label.auto
    assert (off.embedding, off.knn, off.retrieval, off.keywords, off.teacher_words, off.self_training) == (False,) * 6
    assert off.dev_items == 0 and off.any is False
    on = load_config(write(tmp_path, {**MINIMAL, "label": {"auto": True}})).label.auto
    assert (on.embedding, on.knn, on.retrieval, on.keywords, on.teacher_words, on.self_training) == (True,) * 6
    assert on.dev_items == 200 and on.any is True
    part = load_config(write(tmp_path, {**MINIMAL, "label": {"auto": {"dev_items": 5}}})).label.auto
    assert part.dev_items == 5 and part.knn is True
    for only in ("embedding", "knn", "retrieval", "keywords", "teacher_words"):  # any one of them is enough
        switches = {k: k == only for k in ("embedding", "knn", "retrieval", "keywords", "teacher_words")}
        assert load_config(write(tmp_path, {**MINIMAL, "label": {"auto": switches}})).label.auto.any is True, only


def test_tables_need_distinct_names_and_the_output_shape_of_the_task(tmp_path):
    table = {"name": "t1", "input": "{q}", "output": "{a}"}
    assert load_config(write(tmp_path, {**MINIMAL, "tables": [table, {**table, "name": "t2"}]})).tables[1].name == "t2"
    assert "tables need distinct names" in error_of(write(tmp_path, {**MINIMAL, "tables": [table, table]}))
    extract = {"name": "t", "description": "d", "type": "extract", "output_schema": {"type": "object"}}
    cfg = load_config(write(tmp_path, {**MINIMAL, "task": extract, "tables": [{**table, "output": {"f": "{a}"}}]}))
    assert cfg.tables[0].output == {"f": "{a}"}
    msg = error_of(write(tmp_path, {**MINIMAL, "task": extract, "tables": [table]}))
    assert "table 't1': an extract task maps output to fields, e.g. output: {field: '{column}'}" in msg
    msg = error_of(write(tmp_path, {**MINIMAL, "tables": [{**table, "output": {"f": "{a}"}}]}))
    assert "table 't1': output is one template for a classify task" in msg


def test_unknown_keys_deep_down_list_the_keys_allowed_there(tmp_path):
    p = write(tmp_path, {**MINIMAL, "label": {"rules": [{"name": "r", "keywords": ["x"], "label": "a", "feild": "path"}]}})
    msg = error_of(p)
    assert msg == (f"{p}: unknown key 'label.rules.0.feild'; did you mean 'field'? "
                   "(allowed here: name, field, keywords, regex, label, map, ignore_case)")
    p = write(tmp_path, {**MINIMAL, "curate": {"judge": {"backend": "openai", "temprature": 0.1}}})
    assert "did you mean 'temperature'?" in error_of(p)  # judge is "teacher", a model block or null
    p = write(tmp_path, {**MINIMAL, "zzzz": 1})  # nothing near: no suggestion; the top level never offers root
    msg = error_of(p)
    assert msg.startswith(f"{p}: unknown key 'zzzz' (allowed here: task, sources, teacher, student, budget, ")
    assert msg.endswith(", seed)") and "root" not in msg.split("allowed here")[1]
    p = write(tmp_path, {**MINIMAL, "budget": {"prices": {"m": {"input_per_mtok": 1, "outptu_per_mtok": 2}}}})
    # through a mapping of model name to price: a price's keys
    assert error_of(p) == (f"{p}: unknown key 'budget.prices.m.outptu_per_mtok'; did you mean 'output_per_mtok'? "
                           "(allowed here: input_per_mtok, output_per_mtok)")


def test_value_messages_name_key_and_what_is_allowed(tmp_path):
    p = write(tmp_path, {**MINIMAL, "teacher": {"backend": "ollama"}})
    assert error_of(p) == (f"{p}: teacher.backend = 'ollama' is not allowed; use one of "
                           "'llamacpp', 'transformers', 'openai' or 'scripted'")
    p = write(tmp_path, {**MINIMAL, "train": {"steps": 0}, "loop": {"rounds": 0}})
    assert error_of(p) == (f"{p}: train.steps: Input should be greater than or equal to 1\n"
                           f"{p}: loop.rounds: Input should be greater than or equal to 1")


def test_yaml_problems_name_line_column_and_encoding(tmp_path):
    text = "task:\n  name: t\n    bad: x\n"
    with pytest.raises(yaml.YAMLError) as e:
        yaml.safe_load(text)
    mark = e.value.problem_mark
    msg = error_of(write(tmp_path, text))
    assert msg.startswith(f"{tmp_path / 'taskling.yaml'}: line {mark.line + 1}, column {mark.column + 1} is not "
                          f"valid YAML ({e.value.problem}); fix the syntax there")
    p = tmp_path / "taskling.yaml"
    p.write_bytes("task: café\n".encode("latin-1"))
    assert error_of(p) == f"{p}: is not UTF-8 text; save it as UTF-8"
    p.write_text("", encoding="utf-8")  # an empty file is an empty mapping, not a wrong type
    assert error_of(p) == f"{p}: missing required key 'task'\n{p}: missing required key 'sources'"
    p.write_text("just text\n", encoding="utf-8")
    assert error_of(p).endswith("must be a mapping of keys (task:, sources:, ...), got str")


def test_overrides_parse_values_and_are_blamed_for_their_errors(tmp_path):
    p = write(tmp_path, MINIMAL)
    cfg = load_config(p, [" teacher.base_url = http://h:8/v1?a=b", "curate.language=", "generate.policy=[oops",
                          "train.lora={r: 4}", "seed=1", "seed=2"])
    assert cfg.teacher.base_url == "http://h:8/v1?a=b"  # split at the first =, both sides stripped of spaces
    assert cfg.curate.language == "" and cfg.generate.policy == "[oops"  # empty, and not YAML: the text itself
    assert cfg.train.lora.r == 4 and cfg.seed == 2  # the last --set of a key wins
    assert error_of(p, ["train.steps"]) == "--set 'train.steps': write it as key.path=value, e.g. --set train.steps=50"
    assert error_of(p, ["task.name.x=1"]) == f"--set task.name.x=1: 'task.name' in {p} is not a section"
    assert error_of(p, ["train.steps=5", "train.steps=-1"]) == \
        "--set train.steps=-1: train.steps: Input should be greater than or equal to 1"
    assert error_of(p, ["train={steps: -2}"]).startswith("--set train={steps: -2}: train.steps:")  # a section above
    assert error_of(p, ["task.labels=[a]"]).startswith("--set task.labels=[a]: task:")  # a key below the error
    assert error_of(p, ["seed=1", "train.steps=0"]).startswith("--set train.steps=0: ")  # only the --set of that key
    bad = write(tmp_path, {**MINIMAL, "train": {"steps": 0}})
    assert error_of(bad, ["seed=1"]).startswith(f"{bad}: train.steps:")  # the file set it


def test_section_dumps_plain_json_and_seed_alone(tmp_path):
    cfg = load_config(write(tmp_path, {**MINIMAL, "seed": 4, "train": {"steps": 9}}))
    assert cfg.section("seed") == {"seed": 4}
    train = cfg.section("train")
    assert train["steps"] == 9 and train["lora"]["target_modules"] == "all-linear"
    assert cfg.section("export")["gguf"] == ["f16", "q8_0", "q4_k_m"]


def test_nested_blocks_loose_matches_file_errors_and_yaml_without_a_position(tmp_path, monkeypatch):
    # a list item's nested model block: the keys of that block (past the item's index)
    p = write(tmp_path, {**MINIMAL, "label": {"teachers": [{"name": "t", "model": {"bakend": "openai"}}]}})
    assert "unknown key 'label.teachers.0.model.ModelCfg.bakend'; did you mean 'backend'?" in error_of(p)
    # a loose match is still offered (difflib's cutoff 0.5, not its default 0.6)
    assert "did you mean 'patience'?" in error_of(write(tmp_path, {**MINIMAL, "train": {"pat": 3}}))
    # an error about the whole file is the file's, whatever --set said
    kw = {"name": "kw", "keywords": ["x"], "label": "a"}
    p = write(tmp_path, {**MINIMAL, "label": {"rules": [kw, kw]}})
    assert error_of(p, ["seed=1"]).startswith(f"{p}: (top level): label sources need distinct names")
    # a YAML error with no position (a character YAML never accepts): no line, and the reader's own words
    msg = error_of(write(tmp_path, "task: a\x07b\n"))
    assert msg.startswith(f"{tmp_path / 'taskling.yaml'}: is not valid YAML (unacceptable character #x0007")
    assert msg.endswith("); fix the syntax there")
    monkeypatch.chdir(tmp_path)  # the default file: taskling.yaml here
    write(tmp_path, MINIMAL)
    assert load_config().root == tmp_path.resolve()
