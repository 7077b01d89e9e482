"""The Python API runs the pipeline on the tiny model as the CLI does: open a workspace, run the whole
line, read typed results, export a dataset, load the exported model and predict a batch."""
from __future__ import annotations

import json

import pytest

import taskling
from conftest import write_workspace
from taskling.core.manifests import CurateManifest, EvaluateManifest, SystemResult, TrainManifest


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("api")
    write_workspace(root, tiny_model_dir)
    ws = taskling.open(root, overrides={"train.steps": 3, "evaluate.models": ["student", "base"],
                                        "evaluate.constrained": False}, quiet=True)
    return ws, ws.run()


def test_run_goes_through_every_stage_and_results_are_typed(ran):
    ws, out = ran
    assert set(out["stages"]) == {"ingest", "generate", "curate", "train", "evaluate", "export"}
    assert ws.config.train.steps == 3 and ws.round == out["kept_round"] == 0
    assert isinstance(ws.manifest("curate"), CurateManifest) and isinstance(ws.manifest("train"), TrainManifest)
    gold = ws.results("gold")
    assert set(gold) == {"student", "base"} and isinstance(gold["student"], SystemResult)
    assert gold["student"].n == 6 and 0 <= gold["student"].metric <= 1
    report = json.loads((ws.run_dir / "report.json").read_text())
    assert report["results"]["gold"]["student"]["metric"] == gold["student"].metric
    assert len(ws.examples("train")) == ws.manifest("curate").counts.train
    assert [s for s, _ in ws.loss()["loss"]] == [1, 2, 3]
    again = ws.train()  # nothing changed: skipped, as `taskling train` would be
    assert again.skipped and isinstance(ws.evaluate(), EvaluateManifest)


def test_the_exported_model_predicts_a_batch(ran):
    ws, _ = ran
    with ws.model() as model:  # no GGUF in this export: the merged folder on transformers
        preds = model.predict(["How do I read a file in node?", "How do I format a datetime?"])
        assert model.info["type"] == "classify"
    assert [p.input for p in preds] == ["How do I read a file in node?", "How do I format a datetime?"]
    for p in preds:
        assert p.output in {"sqlite", "node", "python"} and abs(sum(p.probabilities.values()) - 1) < 1e-3
        assert p.probability == p.probabilities[p.output]
    with taskling.load_model(ws.run_id, root=ws.root, backend="transformers") as again:
        assert [p.output for p in again.predict([preds[0].input])] == [preds[0].output]


def test_data_in_and_out_and_the_pile(ran, tmp_path):
    ws, _ = ran
    info = ws.export_dataset("openai", out=tmp_path / "openai")
    assert info["rows"]["train"] == ws.manifest("curate").counts.train
    hits = ws.search("json_extract", limit=3, mode="fts")
    assert hits and all(h["by"] == "fts" and "json_extract" in h["text"] for h in hits)
    assert ws.chunk(hits[0]["chunk"])["path"] == hits[0]["path"] and ws.pile_stats()["documents"] == 3
    (tmp_path / "more.jsonl").write_text(json.dumps({"q": "How do I walk a JSON array with json_each?",
                                                      "a": "sqlite"}) + "\n")
    res = ws.import_gold(tmp_path / "more.jsonl", input="q", output="a")
    assert res["imported"] == 1 and res["gold_items"] == 7


def test_errors_are_taskling_errors(ran, tmp_path):
    ws, _ = ran
    with pytest.raises(taskling.TasklingError, match="no stage 'trian'"):
        ws.stage("trian")
    with pytest.raises(taskling.TasklingError, match="no 'dev' set"):
        ws.results("dev")
    with pytest.raises(taskling.TasklingError, match="no task file here"):
        taskling.open(tmp_path)
    path = taskling.init(tmp_path)
    assert path.name == "taskling.yaml" and "task:" in path.read_text()
    with pytest.raises(taskling.TasklingError, match="already exists"):
        taskling.init(tmp_path)
