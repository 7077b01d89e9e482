"""evaluate on an answer task through the whole loop (tiny random Llama,
scripted teacher and judge): every answer metric, the judge's score and the
win rate against the teacher, and a judge's position bias cancelled."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml
from rich.console import Console

from taskling.core.delimit import BLOCK
from taskling.teacher import judge
from taskling import loop
from taskling.teacher.backends.scripted import set_script
from taskling.core.config import load_config
from taskling.core.workspace import Context

MARK = "teacher-mark"  # only the teacher's own answers carry it: the student never sees it in training


def script(messages: list[dict]) -> str:
    text = messages[-1]["content"]
    if "ANSWER TO SCORE:" in text:
        answer = text.split("ANSWER TO SCORE:", 1)[1]
        return json.dumps({"score": 5 if MARK in answer else 2, "reason": "graded"})
    if "ANSWER A:" in text:
        a, b = re.search(r"ANSWER A: (.*)\nANSWER B: (.*)\n", text).groups()
        better = "tie" if (MARK in a) == (MARK in b) else ("A" if MARK in a else "B")
        return json.dumps({"better": better, "reason": "compared"})
    doc = BLOCK.search(text)
    if doc:  # write a grounded question and answer from the excerpt
        h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        sentences = [x for x in re.split(r"(?<=[.!?])\s+", doc.group(2).strip()) if len(x.split()) >= 4]
        sentence = sentences[h % len(sentences)]
        words = re.findall(r"[A-Za-z_]{4,}", sentence)
        picked = " and ".join(words[(h >> 8 * k) % len(words)] for k in range(3))
        return f"Question: Explain {picked}?\nAnswer: {sentence}"
    return f"{MARK}: the manual covers it."  # the teacher doing the task itself


@pytest.fixture(scope="module")
def answered(tmp_path_factory, tiny_model_dir):
    from conftest import write_workspace

    path = write_workspace(tmp_path_factory.mktemp("answer"), tiny_model_dir)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "tiny-answers", "type": "answer", "description": "Answer a developer's question from the manual.",
                   "examples": [{"input": "What does json_extract do?", "output": "It reads a value from JSON."}]}
    cfg["evaluate"]["judge"] = "teacher"
    cfg["budget"]["examples"] = 24
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (path.parent / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in [
        {"input": "How do I read a JSON value in SQLite?", "output": "Use json_extract with a path."},
        {"input": "How do I hash data in Node?", "output": "Call crypto.createHash and digest."}]))
    set_script(script)
    try:
        result = loop.run(Context(load_config(path), console=Console(stderr=True, quiet=True)))
    finally:
        set_script(None)
    return path, result


def test_answer_metrics_judge_score_and_win_rate(answered):
    path, result = answered
    for s, per in result["results"].items():
        assert set(per) == {"student", "base", "base-fewshot", "teacher"}  # no constrained variant for free text
        for who, r in per.items():
            assert {"exact_match", "token_f1", "rouge_l", "judge_score"} <= set(r["metrics"])
            assert r["metric"] == r["metrics"]["token_f1"] and r["cis"]["judge_score"][0] <= r["metrics"]["judge_score"]
        assert per["teacher"]["metrics"]["judge_score"] == 5.0 and per["student"]["metrics"]["judge_score"] == 2.0
        assert per["student"]["metrics"]["win_rate_vs_teacher"] == 0.0
        assert "win_rate_vs_teacher" not in per["teacher"]["metrics"]
    # held-out items cite their chunks, so the citation rate is measured there; gold cites nothing
    assert result["results"]["eval"]["student"]["metrics"]["citation_rate"] is not None
    assert result["results"]["gold"]["student"]["metrics"].get("citation_rate") is None
    m = json.loads((path.parent / "runs" / "tiny-answers" / "round-0" / "evaluate" / "manifest.json").read_text())
    assert m["judge"]["new_calls"] > 0


def test_pairwise_judging_cancels_position_bias(workspace):
    from taskling.teacher.backends import open_backend

    cfg = load_config(workspace)
    set_script(lambda messages: '{"better": "A", "reason": "always the first"}')
    try:
        backend = open_backend(cfg.teacher)
        items = [{"input": f"q{i}", "output": "x"} for i in range(3)]
        wins = judge.compare(backend, cfg.task, items, ["a"] * 3, ["b"] * 3, lambda it: [])
    finally:
        set_script(None)
    assert wins == [0.5, 0.5, 0.5]
