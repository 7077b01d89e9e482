"""The shipped demo on the real models, from a fresh workspace: the student's gold accuracy against the
targets of issue 28 (student >= 0.80, >= teacher + 30 points, >= base few-shot + 30 points).

The test allows 5 points below each target so that one unlucky run on a loaded machine does not fail it
(54 gold items: one item is 1.9 points); the figures it saw are in the assertion message either way.
A whole fresh demo run (about 15 minutes on 2 cores): `make test-demo` runs it, `make test` does not.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 0.05


@pytest.mark.demo
def test_demo_student_clears_the_gold_targets(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    from run_demo import run_demo

    result = run_demo(tmp_path / "devdocs-router", fresh=True)
    gold = result["results"]["gold"]
    got = {w: r["metric"] for w, r in gold.items()}
    student = got["student"]
    assert student >= 0.80 - MARGIN, got
    assert student >= got["teacher"] + 0.30 - MARGIN, got
    assert student >= got["base-fewshot"] + 0.30 - MARGIN, got
    assert "label-model" in got  # the strongest non-student system is shown beside it
