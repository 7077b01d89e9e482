"""core.yamledit: one key of a task file set in its text, everything else kept line for line (the
comments, the blank lines, the other keys as they were written), the comment on the key's own line
kept with it; absent keys added where they belong; the result reads back as the data with that one
change."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from taskling.core.errors import TasklingError
from taskling.core.taskfile import task_file
from taskling.core.yamledit import set_key

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "devdocs-router" / "taskling.yaml").read_text()
INIT = task_file("tickets", "classify", ["docs"], labels=["billing", "bug"])
CHANGES = [(("task", "labels"), {"billing": "invoices", "bug": "crashes", "account": "logins"}),
           (("task", "examples"), [{"input": "Charged twice.", "output": "billing"},
                                   {"input": "It crashes\nwhen I open it", "output": "bug"}]),
           (("task", "description"), "Route a ticket: to the team # that handles it."),
           (("task", "type"), "answer"),
           (("task", "system_prompt"), "Be brief."),  # absent in both files
           (("sources",), ["docs/**/*.md", "more/*.txt"]),
           (("train", "lora", "r"), 8)]


def with_change(data: dict, keys: tuple, value) -> dict:
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize("text", [EXAMPLE, INIT], ids=["example", "init"])
@pytest.mark.parametrize("keys,value", CHANGES, ids=[".".join(k) for k, _ in CHANGES])
def test_one_key_changes_and_every_comment_stays(text, keys, value):
    out = set_key(text, keys, value)
    assert yaml.safe_load(out) == with_change(yaml.safe_load(text), keys, value)
    comments = [ln.split("#", 1)[1].strip() for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert [ln.split("#", 1)[1].strip() for ln in out.splitlines() if ln.lstrip().startswith("#")] == comments
    kept = [ln for ln in text.splitlines() if ln.startswith("teacher:") or ln.startswith("  backend:")]
    assert all(ln in out.splitlines() for ln in kept)


def test_the_comment_on_the_key_line_moves_with_the_key():
    text = ("task:\n  type: classify  # classify | extract\n  labels:   # one line each\n    a: x\n    b: y\n"
            "  examples: []   # a few you wrote\nsources: [docs]  # globs\n# the end\n")
    out = set_key(text, ("task", "labels"), {"a": "alpha", "c": "gamma"})
    out = set_key(out, ("task", "examples"), [{"input": "hi there", "output": "a"}])
    out = set_key(out, ("sources",), ["d/*", "e/*"])
    out = set_key(out, ("task", "type"), "classify")
    assert out == ("task:\n  type: classify  # classify | extract\n  labels:  # one line each\n    a: alpha\n"
                   "    c: gamma\n  examples:  # a few you wrote\n    - input: hi there\n      output: a\n"
                   "sources:  # globs\n  - d/*\n  - e/*\n# the end\n")


def test_absent_keys_and_flow_mappings():
    assert set_key("task: {name: a, type: classify}\n", ("task", "labels"), {"x": "y"}) == \
        "task:\n  name: a\n  type: classify\n  labels:\n    x: y\n"
    assert set_key("task:\n  name: a\n", ("train", "lora", "r"), 8) == "task:\n  name: a\ntrain:\n  lora:\n    r: 8\n"
    assert set_key("", ("sources",), ["docs"]) == "sources:\n  - docs\n"
    assert yaml.safe_load(set_key("task:\n  name: a  # n\n\n# below\n", ("task", "type"), "x")) == \
        {"task": {"name": "a", "type": "x"}}


def test_a_file_that_is_not_a_mapping_is_refused():
    with pytest.raises(TasklingError, match="not valid YAML"):
        set_key("task: [unclosed\n", ("task", "type"), "x")
    with pytest.raises(TasklingError, match="must be a mapping"):
        set_key("- a\n- b\n", ("task", "type"), "x")
