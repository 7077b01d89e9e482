"""taskling try: one input answered in the terminal by the trained student, its base or the teacher (issue 29)."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import one_line_error


@pytest.fixture
def trained(ui_workspace, tmp_path):
    """A copy of the shared trained workspace (try's teacher call goes into the call log)."""
    root = tmp_path / "ws"
    shutil.copytree(ui_workspace.parent, root)
    return root


def test_try_answers_with_label_probabilities(cli, trained):
    r = cli("try", "How do I read a JSON field with json_extract?", "--json", cwd=trained)
    assert r.exit_code == 0, r.output
    ans = json.loads(r.output)
    probs = ans["probabilities"]
    assert list(probs) and set(probs) == {"sqlite", "node", "python"}
    assert abs(sum(probs.values()) - 1) < 1e-3 and list(probs.values()) == sorted(probs.values(), reverse=True)
    assert ans["system"] == "student" and ans["round"] == 0 and ans["constrained"] == next(iter(probs))
    text = cli("try", "How do I read a JSON field with json_extract?", cwd=trained).output
    assert text.startswith("student: ") and ", ".join(f"{k} {v:.2f}" for k, v in probs.items()) in text
    base = json.loads(cli("try", "How do I hash data in node?", "--model", "base", "--json", cwd=trained).output)
    assert base["system"] == "base" and set(base["probabilities"]) == {"sqlite", "node", "python"}
    teacher = json.loads(cli("try", "How do I hash data in node?", "--model", "teacher", "--json", cwd=trained).output)
    assert teacher["system"] == "teacher" and "probabilities" not in teacher and teacher["output"]


def test_try_mistakes_are_one_line(cli, trained, tmp_path, tiny_model_dir):
    from conftest import write_workspace

    one_line_error(cli("try", "x", "--model", "gpt", cwd=trained), "--model gpt", "student, base, teacher")
    one_line_error(cli("try", "   ", cwd=trained), "type an input first")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_workspace(fresh, tiny_model_dir)
    one_line_error(cli("try", "hello", cwd=fresh), "no trained student yet", "taskling train")
