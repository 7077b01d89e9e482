"""Enough to train on (curation.enough): each task type's kinds of output against their floors.
A planted thin kind (a label with one example, an extract field never filled, an answer task whose
examples all give one answer, examples from one document) is found, named with its floor and what
to do, and stops training unless forced; an adequate kind is not flagged. The same lines reach
`taskling status`, report.json and report.html."""
from __future__ import annotations

import io
from html import escape

import pytest
import yaml
from rich.console import Console

from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.manifests import CurateCounts, CurateManifest
from taskling.core.workspace import Context, atomic_write_json, write_jsonl
from taskling.curation import enough
from taskling.report import build as report
from taskling.report.html import render_html
from taskling.status import lines, status

SCHEMA = {"type": "object", "properties": {"party": {"type": "string"}, "date": {"type": "string"},
                                           "amount": {"type": "string"}}}
TASKS = {"classify": {"labels": {"a": "alpha things", "b": "beta things", "c": "gamma things"}},
         "extract": {"output_schema": SCHEMA}, "answer": {}, "generate": {}}


def context(tmp_path, type_: str, force: bool = False, **floors) -> Context:
    task = {"name": "t", "description": "Do it.", "type": type_, **TASKS[type_]}
    path = tmp_path / "taskling.yaml"
    path.write_text(yaml.safe_dump({"task": task, "sources": ["docs/*"], "train": floors}))
    return Context(load_config(path), force=force, console=Console(file=io.StringIO(), width=400))


def curated(ctx: Context, rows: list[dict], held_out: int = 40) -> None:
    """curate's output as the floors read it: train.jsonl and a manifest (the task's own example first)."""
    out = ctx.stage_dir("curate")
    own = {"id": "task-example-1", "input": "mine", "output": "mine", "source": "task example"}
    write_jsonl(out / "train.jsonl", [own] + rows)
    counts = dict.fromkeys(CurateCounts.model_fields, 0) | {"generated": 3 * len(rows), "train": len(rows),
                                                            "eval": held_out}
    m = CurateManifest(run_id=ctx.run_id, round=0, fingerprint="f", settings={}, inputs={}, outputs=["train.jsonl"],
                       digest="d", started="", seconds=0.0, versions={}, counts=counts, review=None, kept_by_arm={},
                       rejections={"near duplicate": 2 * len(rows)}, rejected_samples={}, funnel=[],
                       split={"unit": "document", "held_out": 1, "groups": 3, "label_coverage": None,
                              "held_out_units": []},
                       labels={}, topics={}, language=None, grounding={}, pii=None, judge=None)
    atomic_write_json(out / "manifest.json", m.on_disk())


def row(i: int, output, doc: str = "docs/a.md", label: str | None = None) -> dict:
    return {"id": f"ex-{i}", "input": f"input number {i}", "output": output, "label": label, "source": "teacher",
            "provenance": [{"chunk": f"c{i}", "path": doc}]}


def kinds(a: dict) -> dict:
    return {k["kind"]: k["n"] for k in a["kinds"]}


def test_a_label_with_one_example_is_short_and_the_others_are_not(tmp_path):
    ctx = context(tmp_path, "classify", min_per_label=2)
    curated(ctx, [row(i, lab, label=lab) for lab, n in (("a", 12), ("b", 12), ("c", 1)) for i in range(n)])
    a = enough.assess(ctx)
    assert kinds(a) == {"label 'a'": 12, "label 'b'": 12, "label 'c'": 1}  # the task's own example not counted
    assert a["short"] == ["label 'c' has 1 generated training example(s) (floor 2): add documents about it, or "
                          "reword task.labels.c with words its documents use"]
    assert a["thin"] == [] and a["floors"] == {"train.min_per_label": 2, "train.min_eval": 1}


def test_an_extract_field_never_filled_is_short_and_the_filled_ones_are_not(tmp_path):
    ctx = context(tmp_path, "extract", min_per_field=3)
    rows = [row(i, {"party": f"Firm {i}", "amount": str(10 * i), "date": "2024-01-02" if i == 0 else None})
            for i in range(20)]
    rows.append(row(20, {"party": "Firm 20", "amount": "", "date": ""}))  # empty is no value
    curated(ctx, rows)
    a = enough.assess(ctx)
    assert kinds(a) == {"training examples": 21, "field 'party'": 21, "field 'date'": 1, "field 'amount'": 20}
    assert a["short"] == ["field 'date' has a value in 1 generated training example(s) (floor 3): add documents "
                          "that state it, or a task.examples entry that fills it, or drop it from task.output_schema"]
    assert a["floors"] == {"train.min_per_label": 1, "train.min_per_field": 3, "train.min_eval": 1}
    with pytest.raises(TasklingError) as e:
        enough.gate(ctx)
    assert "too little to train on in round 0: field 'date' has a value in 1" in str(e.value)
    assert "--force (or lower train.min_per_field)" in str(e.value) and "near duplicate" in str(e.value)
    forced = context(tmp_path, "extract", force=True, min_per_field=3)
    assert enough.gate(forced)["short"] == a["short"]
    assert "training on little: field 'date' has a value in 1" in forced.console.file.getvalue()


def test_an_answer_task_with_one_reply_to_everything_is_short(tmp_path):
    ctx = context(tmp_path, "answer")
    curated(ctx, [row(i, "See the manual." if i % 2 else "see  the manual.", doc=f"docs/{i % 3}.md")
                  for i in range(30)])
    a = enough.assess(ctx)
    assert kinds(a) == {"training examples": 30, "distinct answers": 1, "source documents": 3}
    assert a["short"] == ["1 distinct answer(s) among 30 generated training example(s) (floor 2): the teacher "
                          "repeats one reply: a stronger teacher, or raise teacher.temperature"]
    assert a["floors"]["train.min_distinct_outputs"] == 2 and "train.min_per_field" not in a["floors"]
    with pytest.raises(TasklingError, match=r"or lower train.min_distinct_outputs\)"):
        enough.gate(ctx)


def test_answers_that_differ_from_enough_documents_are_not_flagged(tmp_path):
    ctx = context(tmp_path, "answer", min_distinct_outputs=3, min_documents=2)
    curated(ctx, [row(i, f"Answer {i}: call function_{i}.", doc=f"docs/{i % 3}.md") for i in range(30)])
    a = enough.assess(ctx)
    assert kinds(a) == {"training examples": 30, "distinct answers": 30, "source documents": 3}
    assert a["short"] == [] and a["thin"] == ["source documents: 3"]  # under five times its floor: a warning
    assert enough.gate(ctx) == a


def test_generate_examples_from_one_document_are_short(tmp_path):
    ctx = context(tmp_path, "generate", min_documents=2)
    curated(ctx, [row(i, f"Text {i} written.") for i in range(12)])
    a = enough.assess(ctx)
    assert kinds(a)["distinct responses"] == 12
    assert a["short"] == ["the generated training examples come from 1 source document(s) (floor 2): add documents, "
                          "or raise budget.examples"]


def test_status_and_the_report_show_a_short_kind(tmp_path):
    ctx = context(tmp_path, "extract", min_per_field=3)
    curated(ctx, [row(i, {"party": f"Firm {i}", "amount": "5", "date": None}) for i in range(20)])
    st = status(ctx)
    line = "field 'date' has a value in 0 generated training example(s) (floor 3)"
    assert st["enough"]["short"][0].startswith(line) and st["enough"]["floors"]["train.min_per_field"] == 3
    assert any(x.startswith("too little to train on: " + line) for x in lines(st))
    rep = report.build(ctx)
    assert rep["enough"]["short"] == st["enough"]["short"]
    assert {"kind": "field 'date'", "n": 0, "floor": "train.min_per_field"}.items() <= rep["enough"]["kinds"][2].items()
    html = render_html(rep)
    assert "Below a floor" in html and escape(line) in html and "train.min_per_field 3" in html
