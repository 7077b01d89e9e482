"""The whole loop in-process on the tiny random Llama with the scripted
teacher: every stage runs for real (SQLite, PEFT training, transformers
evaluation, merged export), re-runs are skipped, --force re-runs, training
resumes exactly from a checkpoint."""
from __future__ import annotations

import json
import shutil

import pytest
from rich.console import Console

from taskling import loop
from taskling.core.config import load_config
from taskling.stages import generate, ingest, train
from taskling.core.manifests import BY_STAGE, ExportManifest
from taskling.core.workspace import Context

QUIET = dict(console=Console(stderr=True, quiet=True))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    from conftest import write_workspace

    path = write_workspace(tmp_path_factory.mktemp("ws"), tiny_model_dir)
    result = loop.run(Context(load_config(path), **QUIET))
    return path, result


@pytest.fixture
def copy(finished, tmp_path):
    """A copy of the finished workspace for a test that changes it (the shared one stays as the run left it,
    whatever order the tests run in); returns its taskling.yaml."""
    path, _ = finished
    shutil.copytree(path.parent, tmp_path / "ws")
    return tmp_path / "ws" / path.name


def test_run_produces_every_artifact(finished):
    path, result = finished
    root = path.parent
    run = root / "runs" / "tiny-router"
    for stage in ("ingest", "generate", "curate", "train", "evaluate"):
        m = BY_STAGE[stage].read(run / "round-0" / stage)
        assert m and m.fingerprint and m.versions["torch"] and m.seconds >= 0
    exp = ExportManifest.read(run / "export")
    assert exp.counts.checked_items > 0 and exp.failed == []
    assert [a["status"] for a in exp.artifacts][0] in ("match", "near-ties flipped")
    card = (run / "export" / "README.md").read_text()
    assert card.startswith("---\n") and "\n---\n\n# tiny-router" in card  # Hub front matter, then the card
    assert (run / "round-0" / "train" / "checkpoints" / "step-000006" / "state.pt").exists()
    assert set(result["results"]["gold"]) == {"student", "base", "base-fewshot", "teacher", "student-constrained",
                                              "base-constrained"}
    gold = result["results"]["gold"]["teacher"]
    assert gold["n"] == 6 and 0 <= gold["metric"] <= 1 and gold["ci_low"] <= gold["metric"] <= gold["ci_high"]
    for who, r in result["results"]["gold"].items():
        assert set(r["metrics"]) == {"accuracy", "macro_f1"} and r["latency_ms"]["p95"] >= r["latency_ms"]["p50"]
        assert r["tokens"]["prompt"] > 0 and sum(map(sum, r["confusion"]["matrix"])) == 6
    # constrained decoding always answers with a label
    assert result["results"]["gold"]["student-constrained"]["unparsed"] == 0
    rep = json.loads((run / "report.json").read_text())
    assert rep["results"]["gold"]["student"]["n"] == 6 and rep["training"]["loss"]
    assert rep["evaluation"]["confusion"]["gold"]["student"]["labels"] == ["sqlite", "node", "python"]
    assert rep["evaluation"]["constrained"]["gold"]["student"]["constrained"] is not None
    rates = rep["evaluation"]["error_rates"]
    assert sum(r["n"] for r in rates["label"]["gold"]) == 6 and rates["topic"]["gold"]
    assert rep["costs"]["teacher"]["calls"] > 0 and rep["costs"]["total_seconds"] > 0
    failures = [json.loads(x) for x in (run / "round-0" / "evaluate" / "failures.jsonl").read_text().splitlines()]
    assert all("topic" in f and f["student"] != f["expected"] for f in failures)
    assert rep["split"]["unit"] in ("document", "chunk")
    html = (run / "report.html").read_text()
    assert "<svg" in html and "http" not in html.split("<body", 1)[1].replace("http://www.w3.org", "")
    examples = [json.loads(x) for x in (run / "round-0" / "generate" / "examples.jsonl").read_text().splitlines()]
    for ex in examples:
        prov = ex["provenance"][0]
        assert prov["path"].startswith("docs/") and len(prov["sha256"]) == 64 and prov["end_char"] > prov["start_char"]


def test_teacher_calls_are_logged_and_replayed(copy):
    path = copy
    import sqlite3

    db = sqlite3.connect(path.parent / ".taskling" / "calls.db")
    n = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert n >= 30
    ctx = Context(load_config(path), force=True, **QUIET)
    m = generate.run(ctx)
    assert m.counts.new_calls == 0 and m.counts.cached_calls > 0


def test_exported_model_loads_in_plain_transformers(finished):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _ = finished
    merged = path.parent / "runs" / "tiny-router" / "export" / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged)
    tok = AutoTokenizer.from_pretrained(merged)
    assert model.config.num_hidden_layers == 2 and tok.chat_template
    assert json.loads((merged / "task.json").read_text())["labels"] == ["sqlite", "node", "python"]
    assert (path.parent / "runs" / "tiny-router" / "export" / "adapter" / "adapter_config.json").exists()


def test_bundle_packs_one_artifact_with_its_prompt_and_checksums(copy):
    import hashlib
    import tarfile

    from taskling.core.errors import TasklingError
    from taskling.stages import export

    path = copy
    ctx = Context(load_config(path), run_id="tiny-router", **QUIET)
    tar_path = export.bundle(ctx, ctx.cfg, "merged")
    assert tar_path.name == "tiny-router-merged.bundle.tar"
    with tarfile.open(tar_path) as tar:
        data = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert {"task.json", "serve.json", "SHA256SUMS", "model/config.json", "model/model.safetensors"} <= set(data)
    sums = dict(reversed(line.split("  ", 1)) for line in data["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(data) - {"SHA256SUMS"}
    assert all(hashlib.sha256(data[name]).hexdigest() == digest for name, digest in sums.items())
    assert json.loads(data["serve.json"]) == {"backend": "transformers", "model": "model"}
    assert json.loads(data["task.json"])["system_prompt"]
    with pytest.raises(TasklingError, match="bundle one of: merged"):
        export.bundle(ctx, ctx.cfg, "q8_0")  # this workspace exports no GGUF


def test_rerun_skips_and_force_reruns(finished, copy, capsys):
    path, _ = finished
    ctx = Context(load_config(path), console=Console(stderr=True, width=200))
    again = loop.run(ctx)  # every stage skipped: the shared workspace is left as it was
    assert all(s["skipped"] for s in again["stages"].values())
    assert "up to date" in capsys.readouterr().err
    ctx = Context(load_config(copy), force=True, **QUIET)
    assert ingest.run(ctx).skipped is False


def test_changed_setting_reruns_only_downstream(copy):
    path = copy
    ctx = Context(load_config(path, ["evaluate.max_items=5"]), run_id="tiny-router", **QUIET)
    again = loop.run(ctx)
    assert [k for k, v in again["stages"].items() if not v["skipped"]] == ["evaluate", "export"]
    assert again["results"]["gold"]["student"]["n"] == 5


def test_train_resumes_exactly(copy, tmp_path):
    """Stop after step 4, resume to 6: the same weights and losses as one go."""
    path = copy
    ctx = Context(load_config(path), **QUIET)
    full = json.loads((ctx.stage_dir("train") / "loss.json").read_text())["loss"]
    src = ctx.stage_dir("train")
    # Rebuild a half-done train dir: keep the step-4 checkpoint only, no manifest.
    ck = src / "checkpoints"
    partial = tmp_path / "partial"
    shutil.copytree(src, partial)
    shutil.rmtree(src)
    src.mkdir(parents=True)
    (src / ".fingerprint").write_text((partial / ".fingerprint").read_text())
    (src / "checkpoints").mkdir()
    shutil.copytree(partial / "checkpoints" / "step-000004", src / "checkpoints" / "step-000004")
    m = train.run(ctx)
    resumed = json.loads((src / "loss.json").read_text())["loss"]
    assert m.skipped is False and not (ck / "step-000002").exists()
    assert resumed == full
    import safetensors.torch as st

    a = st.load_file(partial / "adapter" / "adapter_model.safetensors")
    b = st.load_file(src / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)


def test_predict_over_csv_and_jsonl(finished, tmp_path):
    from taskling.core.errors import TasklingError
    from taskling.serving.predict import predict_file

    path, _ = finished
    csv_in = tmp_path / "in.csv"
    csv_in.write_text('id,input\n1,"How do I read a file in node?"\n2,"How do I use strftime?"\n')
    res = predict_file(csv_in, None, "tiny-router", path.parent, Console(stderr=True, quiet=True))
    import csv

    with open(tmp_path / "in.predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))  # CSV in, CSV out, with the predictions added
    assert res["rows"] == 2 and [r["id"] for r in rows] == ["1", "2"]
    assert all(r["prediction"] in ("sqlite", "node", "python") and 0 <= float(r["probability"]) <= 1 for r in rows)
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    with pytest.raises(TasklingError, match="row 1 has no 'input'"):
        predict_file(bad, None, "tiny-router", path.parent, Console(stderr=True, quiet=True))
