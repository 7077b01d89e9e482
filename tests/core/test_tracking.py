"""track: mlflow: each stage that ran is an MLflow run nested under the taskling run in a local SQLite
store, with its settings, counts, figures, loss curve and files; off, MLflow is never imported."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.workspace import Context


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model_dir):
    """The tiny workspace through every stage but export, with track: mlflow."""
    from taskling.stages import curate, evaluate, generate, ingest, train

    root = tmp_path_factory.mktemp("tracked")
    path = write_workspace(root, tiny_model_dir, track="mlflow", train__steps=3,
                           evaluate__models=["student"], evaluate__constrained=False)
    ctx = Context(load_config(path, []), console=Console(stderr=True, quiet=True))
    manifests = {s.__name__.rsplit(".", 1)[1]: s.run(ctx) for s in (ingest, generate, curate, train, evaluate)}
    again = train.run(ctx)  # up to date: skipped, so not logged twice
    assert again.skipped
    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.taskling' / 'mlflow.db'}")
    return ctx, manifests, client


def runs(client, ctx):
    exp = client.get_experiment_by_name(ctx.cfg.task.name)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_each_stage_is_a_run_nested_under_the_taskling_run(tracked):
    ctx, manifests, client = tracked
    found = runs(client, ctx)
    parent = found.pop("tiny-router")
    assert set(found) == {f"round-0/{s}" for s in manifests}  # one each: the skipped train logged nothing
    for name, r in found.items():
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
        assert r.data.tags["taskling.fingerprint"] == manifests[name.split("/")[1]].fingerprint
    cur = found["round-0/curate"]
    assert cur.data.metrics["counts.train"] == manifests["curate"].counts.train
    assert cur.data.params["curate.eval_fraction"] == "0.2" and cur.data.params["task.type"] == "classify"


def test_the_loss_curve_figures_and_files_are_in_the_store(tracked):
    ctx, manifests, client = tracked
    found = runs(client, ctx)
    tr = found["round-0/train"]
    curve = json.loads((ctx.stage_dir("train") / "loss.json").read_text())
    history = client.get_metric_history(tr.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [tuple(p) for p in curve["loss"]] and len(history) == 3
    assert tr.data.metrics["final_loss"] == manifests["train"].final_loss
    files = {a.path for a in client.list_artifacts(tr.info.run_id)}
    assert {"manifest.json", "loss.json", "adapter"} <= files
    ev = found["round-0/evaluate"]
    gold = manifests["evaluate"].results["gold"]["student"]
    assert ev.data.metrics["gold.student.accuracy"] == gold.metrics["accuracy"]
    assert ev.data.metrics["gold.student.accuracy.ci_high"] == gold.cis["accuracy"][1]
    assert found["tiny-router"].data.metrics["gold.student.accuracy"] == gold.metrics["accuracy"]  # on the parent


def test_a_store_that_fails_is_a_warning_and_the_stage_still_finishes(tracked, tmp_path, capsys):
    from taskling.stages import ingest

    ctx, _, _ = tracked
    cfg = ctx.cfg.model_copy(update={"track": ctx.cfg.track.model_copy(update={"uri": "nosuchscheme://x"})})
    m = ingest.run(Context(cfg, console=Console(stderr=True), force=True))
    assert not m.skipped and m.counts.documents == 3
    assert "track: could not log ingest to MLflow at nosuchscheme://x" in capsys.readouterr().err


def test_without_mlflow_installed_the_stage_fails_first_with_what_to_install(tracked, monkeypatch):
    from taskling.stages import ingest

    ctx, _, _ = tracked
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(TasklingError, match=r"pip install 'taskling\[mlflow\]'"):
        ingest.run(Context(ctx.cfg, console=Console(stderr=True, quiet=True), force=True))


def test_tracking_off_never_imports_mlflow(tmp_path, tiny_model_dir):
    """A fresh process runs the whole line (every stage, the report) through the Python API without
    track: and never loads MLflow, though it is installed."""
    write_workspace(tmp_path, tiny_model_dir, train__steps=2, evaluate__models=["student"],
                    evaluate__constrained=False)
    code = textwrap.dedent(f"""
        import sys
        import taskling
        ws = taskling.open({str(tmp_path)!r}, quiet=True)
        assert ws.config.track is None
        out = ws.run()
        assert set(out["stages"]) == {{"ingest", "generate", "curate", "train", "evaluate", "export"}}, out["stages"]
        print("mlflow" in sys.modules, any(m.startswith("mlflow") for m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
