"""taskling status on a fresh, a partial, a finished and a stale workspace (issue 29)."""
from __future__ import annotations

import json
from html import escape

import yaml

from conftest import one_line_error, write_workspace


def status(cli, root) -> dict:
    r = cli("status", "--json", cwd=root)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def states(st: dict) -> dict:
    return {s["stage"]: s["state"] for s in st["stages"]}


def test_status_fresh_partial_finished_and_stale(cli, tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir)
    st = status(cli, tmp_path)
    assert set(states(st).values()) == {"not run"} and st["pile"] is None and st["next"] == "taskling ingest"

    assert cli("ingest", cwd=tmp_path).exit_code == 0
    st = status(cli, tmp_path)
    assert states(st)["ingest"] == "done" and states(st)["generate"] == "not run"
    assert set(st["pile"]["by_format"]) == {"markdown", "html", "text"}
    assert [p["label"] for p in st["pile"]["label_pools"]] == ["sqlite", "node", "python"]
    assert st["next"] == "taskling generate"

    for stage in ("generate", "curate", "train", "evaluate"):
        assert cli(stage, cwd=tmp_path).exit_code == 0, stage
    st = status(cli, tmp_path)
    assert states(st) == {"ingest": "done", "generate": "done", "curate": "done", "train": "done",
                          "evaluate": "done", "export": "not run"}
    assert st["figures"]["curated"]["train"] > 0 and "gold" in st["figures"]["evaluate"]["sets"]
    assert st["next"] == "taskling export"
    text = cli("status", cwd=tmp_path).output
    assert "next: taskling export" in text and "gold accuracy: student" in text and "label pools: sqlite" in text

    # stale: a setting train reads changed, and everything after it follows; a new source file
    cfg = yaml.safe_load(path.read_text())
    cfg["train"]["steps"] = 7
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (tmp_path / "docs" / "more.md").write_text("# More\n\nThe sqlite json_each function walks an array.\n")
    st = status(cli, tmp_path)
    why = {s["stage"]: s["why"] for s in st["stages"]}
    assert states(st)["ingest"] == "stale" and any("1 source file(s) added (docs/more.md)" in w for w in why["ingest"])
    assert states(st)["train"] == "stale" and "train.steps 6 -> 7" in why["train"]
    assert states(st)["evaluate"] == "stale" and "train is stale" in why["evaluate"]
    assert st["next"] == "taskling ingest"

    # partial: an unfinished train (its folder, no manifest)
    (tmp_path / "runs" / "tiny-router" / "round-0" / "train" / "manifest.json").unlink()
    st = status(cli, tmp_path)
    assert states(st)["train"] == "partial"
    assert "train is not finished any more" in {s["stage"]: s["why"] for s in st["stages"]}["evaluate"]


def test_status_outside_a_workspace_is_one_line(cli, tmp_path):
    one_line_error(cli("status", cwd=tmp_path), "no task file here", "taskling init")


def test_too_little_to_train_on_stops_before_training_with_why_unless_forced(cli, tmp_path, tiny_model_dir):
    write_workspace(tmp_path, tiny_model_dir)
    for stage in ("ingest", "generate", "curate"):
        assert cli(stage, cwd=tmp_path).exit_code == 0, stage
    high = ["--set", "train.min_per_label=40", "--set", "train.min_eval=30"]
    r = cli("train", *high, cwd=tmp_path)
    one_line_error(r, "too little to train on in round 0", "label 'sqlite' has", "(floor 40)",
                   "held-out eval item(s) (floor 30)", "curate dropped", "budget.examples", "--force")
    train_dir = tmp_path / "runs" / "tiny-router" / "round-0" / "train"
    assert not (train_dir / "manifest.json").exists()
    one_line_error(cli("run", *high, cwd=tmp_path), "too little to train on")  # the loop stops there too
    st = json.loads(cli("status", "--json", *[], cwd=tmp_path).output)
    assert st["enough"]["short"] == [] and st["next"] == "taskling train"  # the default floors (1, 1) are met
    text = cli("status", "-c", "taskling.yaml", cwd=tmp_path).output
    assert "next: taskling train" in text
    forced = cli("train", *high, "--force", cwd=tmp_path)
    assert forced.exit_code == 0, forced.output
    assert "training on little" in forced.output and (train_dir / "manifest.json").exists()
    # trained on exactly this data once: asking again does not stop
    assert cli("train", *high, cwd=tmp_path).exit_code == 0
    # the floors are in status too
    path = tmp_path / "taskling.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["train"]["min_eval"] = 30
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    st = json.loads(cli("status", "--json", cwd=tmp_path).output)
    assert st["enough"]["short"] == [f"{st['enough']['eval']} held-out eval item(s) (floor 30)"]
    assert st["enough"]["losses"] and all(x["todo"] for x in st["enough"]["losses"])
    # and in the report: report.json says it, report.html says it first in the curation section
    rep = json.loads(cli("report", "--json", cwd=tmp_path).stdout)
    assert rep["enough"]["short"] == st["enough"]["short"] and rep["enough"]["floors"]["train.min_eval"] == 30
    html = next(tmp_path.rglob("report.html")).read_text()
    assert "Below a floor" in html and f"{st['enough']['eval']} held-out eval item(s) (floor 30)" in html
    assert escape(st["enough"]["losses"][0]["todo"]) in html
