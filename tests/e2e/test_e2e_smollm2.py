"""End to end on the real embedded SmolLM2-135M-Instruct: the real CLI runs
every stage (llama.cpp teacher, PEFT training, evaluation, export), then
`taskling serve` serves the export and the official openai client asks it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import yaml

from conftest import write_workspace

pytestmark = pytest.mark.slow
TASKLING = str(Path(sys.executable).parent / "taskling")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("e2e")
    # every artefact: f16, q8_0, q4_k_m, the LoRA GGUF, the Modelfile
    return root, *run_real(root, tiny_model_dir, export={"verify_items": 6})


def run_real(root, tiny_model_dir, **sections) -> tuple[dict, str]:
    """`taskling run --json` on the tiny task with the real embedded teacher and student."""
    path = write_workspace(root, tiny_model_dir)
    cfg = yaml.safe_load(path.read_text())
    cfg["teacher"] = {"backend": "llamacpp", "model": "smollm2-135m-instruct", "temperature": 0.8}
    cfg["student"] = {"model": "smollm2-135m-instruct"}
    cfg["budget"] = {"examples": 12}
    cfg["ingest"] = {"chunk_tokens": 128}
    cfg["curate"] = {"min_words": 3}
    cfg["train"] = {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "max_seq_len": 192}
    cfg["evaluate"] = {"max_items": 6, "batch_size": 6}
    cfg.update(sections)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run([TASKLING, "run", "--json"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_every_exported_artifact_loads_in_its_consumer_and_answers_as_trained(finished):
    from taskling.student import ollama

    root, result, stderr = finished
    exp = root / "runs" / "tiny-router" / "export"
    m = json.loads((exp / "manifest.json").read_text())
    arts = {a["file"]: a for a in m["artifacts"]}
    assert set(arts) == {"merged", "adapter", "gguf/tiny-router-f16.gguf", "gguf/tiny-router-q8_0.gguf",
                         "gguf/tiny-router-q4_k_m.gguf", "gguf/tiny-router-lora-f16.gguf"}
    for f, a in arts.items():
        assert (exp / f).exists() and a["size_mb"] > 0
        if f != "adapter":
            assert a["items"] == m["counts"]["checked_items"] >= 1 and a["tokens_per_s"] > 0, a
    # quantized types are judged by the metric: q4_k_m may fail on a 135M model (the demo's did), and says so
    for q in ("q8_0", "q4_k_m"):
        a = arts[f"gguf/tiny-router-{q}.gguf"]
        ok = a["status"] == "match" or a["metric_drop"] <= m["tolerance"]
        assert a["status"] in ("match", "within tolerance", "failed") and (a["status"] == "failed") == (not ok), a
        assert (a["name"] in m["failed"]) == (a["status"] == "failed")
    # the lossless ones give the evaluated student's greedy answers (a flipped near-tie must not change the metric)
    for f in ("merged", "gguf/tiny-router-f16.gguf", "gguf/tiny-router-lora-f16.gguf"):
        assert arts[f]["status"] in ("match", "near-ties flipped") and arts[f]["metric"] >= m["student_metric"]
    assert arts["gguf/tiny-router-q4_k_m.gguf"]["size_mb"] < arts["gguf/tiny-router-q8_0.gguf"]["size_mb"] \
        < arts["gguf/tiny-router-f16.gguf"]["size_mb"]
    mf = ollama.parse_modelfile((exp / "Modelfile").read_text())
    assert mf["from"] == "./gguf/tiny-router-q8_0.gguf" and (exp / mf["from"]).exists()
    assert mf["template"] == ollama.CHATML_GO and any(v == "<|im_end|>" for _, v in mf["parameters"])
    task = json.loads((exp / "gguf" / "task.json").read_text())
    assert mf["system"] == task["system_prompt"] and task["chat_template_kind"] == "chatml"
    card = (exp / "README.md").read_text()
    assert "Apache-2.0" in card and "## Data lineage" in card and "| gold | student |" in card
    assert "ollama create tiny-router" in card
    html = Path(result["report"]).read_text()
    assert "tiny-router-q4_k_m.gguf" in html and "same answers" in html


def test_run_end_to_end_on_smollm2(finished):
    root, result, stderr = finished
    gold = result["results"]["gold"]
    assert set(gold) == {"student", "base", "base-fewshot", "teacher", "student-constrained", "base-constrained"}
    assert all(r["n"] == 6 and 0 <= r["metric"] <= 1 for r in gold.values())
    assert gold["student-constrained"]["unparsed"] == gold["base-constrained"]["unparsed"] == 0
    assert gold["student"]["size_mb"] > 100
    assert "student vs base vs teacher" in stderr
    assert Path(result["report"]).exists() and (Path(result["model"]) / "model.safetensors").exists()
    gen = json.loads((root / "runs" / "tiny-router" / "round-0" / "generate" / "manifest.json").read_text())
    assert gen["counts"]["examples"] > 0 and gen["teacher"]["backend"] == "llamacpp"


def test_served_export_answers_through_openai_client(finished):
    root, result, _ = finished
    port = free_port()
    server = subprocess.Popen([TASKLING, "serve", "tiny-router", "--port", str(port)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            try:
                models = client.models.list().data
                break
            except openai.APIConnectionError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.5)
        assert [m.id for m in models] == ["tiny-router"]
        reply = client.chat.completions.create(
            model="tiny-router", messages=[{"role": "user", "content": "How do I hash data with createHash?"}],
            max_tokens=8, temperature=0)
        text = reply.choices[0].message.content
        assert isinstance(text, str) and text.strip()
        assert reply.usage.completion_tokens > 0 and reply.choices[0].finish_reason in ("stop", "length")
    finally:
        server.terminate()
        server.wait(30)


def test_two_short_loop_rounds_on_the_real_models(tmp_path, tiny_model_dir):
    """The loop on the real teacher and student: round 1 is planned by the analysis of round 0 (the
    real student probed on unlabelled chunks), trains on the grown set and is measured on the same eval."""
    result, _ = run_real(tmp_path, tiny_model_dir, budget={"examples": 16}, loop={"rounds": 2, "probe_chunks": 6},
                         evaluate={"max_items": 6, "batch_size": 6, "models": ["student"], "constrained": False})
    assert [r["round"] for r in result["rounds"]] == [0, 1] and result["stop"]["rule"] in ("rounds", "budget")
    run = tmp_path / "runs" / "tiny-router"
    a = json.loads((run / "round-1" / "analyse" / "analysis.json").read_text())
    assert a["uncertainty"]["probed"] > 0 and a["allocation"]["jobs"] > 0
    assert all(0 <= r["uncertainty"] <= 1 for r in a["arms"] if r["uncertainty"] is not None)
    r0, r1 = (json.loads((run / f"round-{k}" / "curate" / "manifest.json").read_text())["counts"] for k in (0, 1))
    assert r1["train"] >= r0["train"] and r1["earlier_rounds"] == r0["train"]
    assert (run / "round-0" / "curate" / "eval.jsonl").read_text() == (run / "round-1" / "curate" / "eval.jsonl").read_text()
    assert "Rounds" in (run / "report.html").read_text()
