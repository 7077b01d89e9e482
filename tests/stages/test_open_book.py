"""An open-book answer task through ingest, generate, curate, train, evaluate, export, predict and the report
(tiny random Llama, scripted teacher): the RAFT-trained student and its base asked with the chunks the one
retriever finds, recall@k of the source chunk, abstention on a question the pile cannot answer scored as an
answer, citations resolved, and one change of the retriever's settings seen by train, evaluate and predict."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from rich.console import Console

from conftest import write_workspace
from taskling.core import tasktype
from taskling.core.config import load_config
from taskling.core.openbook import ABSTAIN
from taskling.core.workspace import Context, read_jsonl
from taskling.data.pile import Pile
from taskling.data.retrieve import Retriever
from taskling.report import build as report
from taskling.serving.predict import predict_file
from taskling.serving.systems import open_conversations
from taskling.stages import curate, evaluate, export, generate, ingest, train
from taskling.teacher.backends.scripted import set_script
from taskling.tasks.openbook import is_abstention, split_citations
from stages.test_evaluate import script

QUIET = Console(stderr=True, quiet=True)
UNANSWERABLE = "What is the airspeed velocity of an unladen swallow?"
GOLD = [{"input": "How do I read a file with readFile in node?", "source": "docs/node.html",
         "output": "The node fs module reads files with readFile and writes them with writeFile."},
        {"input": UNANSWERABLE, "output": ABSTAIN}]


def answer_workspace(root, model_dir, *overrides):
    path = write_workspace(root, model_dir)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "tiny-book", "type": "answer", "description": "Answer a developer's question from the manual.",
                   "examples": [{"input": "What does json_extract do?", "output": "It reads a value from JSON."}]}
    cfg["student"]["retrieval"] = {"mode": "on", "k": 2, "chunk_chars": 300}
    cfg["budget"]["examples"] = 24
    cfg["evaluate"]["models"] = ["student", "base"]
    cfg["train"]["max_seq_len"] = 160
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    return path


@pytest.fixture(scope="module")
def booked(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("openbook")
    path = answer_workspace(root, tiny_model_dir)
    ctx = Context(load_config(path, []), console=QUIET)
    set_script(script)
    try:
        for stage in (ingest, generate, curate, train, evaluate, export):
            stage.run(ctx)
    finally:
        set_script(None)
    return path, ctx


def test_training_rows_are_rendered_open_book(booked):
    _, ctx = booked
    m = json.loads((ctx.stage_dir("train") / "manifest.json").read_text())
    book = m["open_book"]
    assert {book["k"], book["p"], book["chunk_chars"], book["missing"]} == {2, 0.8, 300, "abstain"}
    assert book["oracle"] + book["distractors"] + book["unsourced"] == m["counts"]["examples"]
    assert book["oracle"] > book["distractors"] > 0  # RAFT: mostly with the source, some with distractors only


def test_evaluate_scores_open_book_systems_recall_and_abstention(booked):
    _, ctx = booked
    ev = ctx.stage_dir("evaluate")
    m = json.loads((ev / "manifest.json").read_text())
    assert m["systems"] == ["student", "base", "student-open", "base-open"]
    items = read_jsonl(ctx.stage_dir("curate") / "eval.jsonl")[:8]
    for s in ("eval", "gold"):
        assert {"student-open", "base-open"} <= set(m["results"][s])
        rows = read_jsonl(ev / f"pred-student-open-{s}.jsonl")
        assert max(len(row["retrieved"]) for row in rows) == 2
        for row in rows:
            assert len(row["retrieved"]) <= 2 and isinstance(row["citations"], list)
            assert row["output"] == split_citations(row["raw_output"])[0]
            assert all(c["chunk"] in row["retrieved"] for c in row["citations"])
    # recall@k of the source chunk, as the rows show it
    hits = [any(k in it["chunks"] for k in row["retrieved"])
            for it, row in zip(items, read_jsonl(ev / "pred-student-open-eval.jsonl")) if it.get("chunks")]
    assert {k: m["retrieval"]["eval"][k] for k in ("k", "recall", "n")} == {
        "k": 2, "recall": round(sum(hits) / len(hits), 4), "n": len(hits)}
    assert m["retrieval"]["gold"]["n"] == 1  # the gold item naming its source document
    assert read_jsonl(ev / "pred-base-open-gold.jsonl")[1]["retrieved"] == []  # no word of the pile: no match
    # the unanswerable gold question: abstaining on it is the right answer, and is scored so
    for w in ("student", "student-open", "base-open"):
        rows = read_jsonl(ev / f"pred-{w}-gold.jsonl")
        said = [is_abstention(r["output"]) for r in rows]
        got = m["results"]["gold"][w]["metrics"]
        assert got["abstain_recall"] == float(said[1]) and got["abstain_rate"] == sum(said) / 2
    # an abstention is scored as the answer it is: right where the pile lacks the answer, wrong elsewhere
    task = tasktype.get("answer")
    said = [{"output": "The documents do not contain the answer"}, {"output": ABSTAIN}]
    r = evaluate.score_set(task, ctx.cfg, GOLD[::-1], said, [None, None], 0)
    assert r["_scores"] == [1.0, 0.0] and r["metrics"]["exact_match"] == 0.5


def test_evaluate_says_whether_each_wrong_open_book_answer_missed_its_source_or_misread_it(booked):
    _, ctx = booked
    ev = ctx.stage_dir("evaluate")
    m = json.loads((ev / "manifest.json").read_text())
    scores = json.loads((ev / "scores.json").read_text())
    assert m["retrieval"] == json.loads((ev / "metrics.json").read_text())["retrieval"]
    items = {"eval": read_jsonl(ctx.stage_dir("curate") / "eval.jsonl")[:8], "gold": GOLD}
    with Pile(ctx.ws.pile_db) as pile:
        path_of = {c.key: c.path for c in pile.chunks()}
    for s, its in items.items():
        for w in ("student-open", "base-open"):
            rows = read_jsonl(ev / f"pred-{w}-{s}.jsonl")
            wrong = [(it, row) for it, row, x in zip(its, rows, scores[s][w]) if x < 1]
            sourced = [(it, row) for it, row in wrong if it.get("chunks") or it.get("source")]
            missed = [it for it, row in sourced if not any(
                k in it.get("chunks", []) or path_of[k] == it.get("source") for k in row["retrieved"])]
            errors = m["retrieval"][s]["errors"][w]
            assert errors["wrong"] == len(wrong) and errors["no_source"] == len(wrong) - len(sourced)
            assert errors["retrieval_missed"] == len(missed) and errors["reader_wrong"] == len(sourced) - len(missed)
            assert errors["reader_abstained"] <= errors["reader_wrong"]
    assert m["retrieval"]["eval"]["errors"]["student-open"]["wrong"] > 0  # a tiny random student: most are wrong


def test_train_and_evaluate_decide_open_or_closed_book_once(booked, monkeypatch):
    """With mode auto that reads the pile: the stage's settings and its body asked it each (twice a stage)."""
    import shutil

    path, done = booked
    cfg = load_config(path, ["student.retrieval.mode=auto", "train.steps=2", "evaluate.max_items=2"])
    ctx = Context(cfg, console=QUIET, run_id="decided-once")  # a run of its own: the module's stays as it is
    shutil.copytree(done.stage_dir("curate"), ctx.stage_dir("curate"))
    asked = []
    for stage in (train, evaluate):
        real = stage.open_book
        monkeypatch.setattr(stage, "open_book", lambda c, db, real=real, name=stage.__name__: asked.append(name)
                            or real(c, db))
    train.run(ctx)
    man = evaluate.run(ctx)
    assert asked == ["taskling.stages.train", "taskling.stages.evaluate"]
    assert "student-open" in man.systems and man.retrieval["gold"]["errors"]["student-open"]["wrong"] >= 0


def test_report_shows_the_open_book_systems_and_recall(booked):
    _, ctx = booked
    jpath, hpath = report.write(ctx)
    rep = json.loads(jpath.read_text())
    assert rep["evaluation"]["retrieval"]["eval"]["k"] == 2 and rep["training"]["open_book"]["k"] == 2
    assert "student-open" in rep["results"]["gold"]
    html = hpath.read_text()
    assert "open book: retrieval" in html and "recall@k of the source" in html and "student-open" in html
    assert "open book: where the wrong answers come from" in html and "retrieval missed" in html


def test_predict_retrieves_and_returns_citations(booked, tmp_path):
    path, ctx = booked
    info = json.loads((ctx.stage_dir("export") / "merged" / "task.json").read_text())
    assert info["retrieval"]["k"] == 2 and info["retrieval"]["chunk_chars"] == 300
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"input": q}) + "\n" for q in ("How do I hash data in node?", UNANSWERABLE)))
    res = predict_file(src, tmp_path / "out.jsonl", None, path.parent, QUIET, backend="transformers")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert res["predicted"] == 2 and all("citations" in r and isinstance(r["prediction"], str) for r in rows)


def test_the_exported_index_travels_with_the_model_to_a_machine_without_the_workspace(booked, tmp_path):
    import shutil
    import sqlite3

    _, ctx = booked
    exported = ctx.stage_dir("export")
    index = exported / "merged" / "index.db"
    arts = {a["file"]: a for a in json.loads((exported / "artifacts.json").read_text())["artifacts"]}
    assert arts["merged/index.db"]["size_mb"] > 0
    with sqlite3.connect(index) as db:  # only what the retriever reads
        assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
        assert db.execute("SELECT count(*) FROM documents WHERE text != ''").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM table_rows").fetchone()[0] == 0
    assert index.stat().st_size < ctx.ws.pile_db.stat().st_size
    model = shutil.copytree(exported / "merged", tmp_path / "elsewhere" / "model")
    empty = tmp_path / "no-workspace"
    empty.mkdir()
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"input": "How do I hash data with createHash in node crypto?"}) + "\n")
    predict_file(src, tmp_path / "out.jsonl", str(model), empty, QUIET, backend="transformers")
    row = read_jsonl(tmp_path / "out.jsonl")[0]
    assert len(row["documents"]) == 2 and row["documents"][0]["path"] == "docs/node.html"
    assert not (empty / ".taskling").exists()  # nothing of a workspace was made
    card = " ".join((exported / "README.md").read_text().split())  # the model card says what reads what
    assert "Open-book" in card and "merged/index.db" in card
    assert "GGUF consumers (Ollama, llama.cpp, the commands below) are given no passages: they get the closed-book " \
           "student" in card
    tar = export.bundle(ctx, ctx.cfg, "merged")  # one file to carry: the model, its prompt and its index
    predict_file(src, tmp_path / "out-bundle.jsonl", str(tar), empty, QUIET, backend="transformers")
    assert read_jsonl(tmp_path / "out-bundle.jsonl")[0]["documents"] == row["documents"]


def test_the_python_api_s_model_reads_the_documents_as_predict_does(booked, tmp_path):
    """taskling.load_model on an open-book export retrieves as predict and /v1/task do (it answered
    closed-book before: its worker was given no pile)."""
    import taskling

    _, ctx = booked
    empty = tmp_path / "no-workspace"
    empty.mkdir()
    q = "How do I hash data with createHash in node crypto?"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"input": q}) + "\n")
    predict_file(src, tmp_path / "out.jsonl", str(ctx.stage_dir("export") / "merged"), empty, QUIET,
                 backend="transformers")
    row = read_jsonl(tmp_path / "out.jsonl")[0]
    with taskling.load_model(ctx.stage_dir("export") / "merged", root=empty, backend="transformers") as model:
        got = model.predict([q])[0]
    assert got.raw["documents"] == row["documents"] and len(row["documents"]) == 2
    assert got.citations == row["citations"] and got.output == row["prediction"]


def documents(text: str) -> int:
    return len(re.findall(r'<document(?:-[0-9a-f]+)? id="\d+">', text))


def test_one_change_of_the_retriever_settings_reaches_train_evaluate_and_predict(booked, tmp_path, monkeypatch):
    path, _ = booked
    from taskling.serving import outputs

    shown: list[int] = []
    real = outputs.openbook.open_messages
    monkeypatch.setattr(outputs.openbook, "open_messages",
                        lambda system, text, chunks, limit: shown.append(len(chunks)) or real(system, text, chunks,
                                                                                                 limit))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"input": "How do I read a value from a JSON column with json_extract?"}) + "\n")
    seen = {}
    for k in (1, 3):
        cfg = load_config(path, [f"student.retrieval.k={k}"])
        ctx = Context(cfg, console=QUIET)
        spec, tok, _ = train.plan(ctx, None, True)
        in_train = max(documents(tok.decode(d["input_ids"])) for d in spec.data)
        with Retriever.open(cfg, ctx.ws.pile_db) as book:
            convs, _ = open_conversations(cfg, tasktype.get("answer"), read_jsonl(ctx.stage_dir("curate") / "eval.jsonl"),
                                          book)
        in_eval = max(documents(c[-1]["content"]) for c in convs)
        export.run(ctx)  # task.json takes the new settings
        shown.clear()
        predict_file(src, tmp_path / f"out-{k}.jsonl", None, path.parent, QUIET, backend="transformers")
        seen[k] = (in_train, in_eval, shown[0])
    assert seen == {1: (1, 1, 1), 3: (3, 3, 3)}


def test_serve_answers_open_book_with_citations_and_finds_a_document_added_after_training(booked):
    """Last in this module: it adds a document to the workspace's pile."""
    import urllib.request

    from conftest import serving
    from taskling.core.config import ServeCfg
    from taskling.serving.app import create_app
    from taskling.serving.target import load, resolve

    path, ctx = booked
    root = path.parent
    t = resolve(None, root, "transformers", "q8_0", explicit=True)
    app = create_app(load(t), t, ServeCfg(), None, ctx.ws.pile_db)

    def ask(question: str) -> dict:
        req = urllib.request.Request(f"{url}/v1/task", data=json.dumps({"input": question}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    question = "What does the quokka_frobnicate setting do?"
    with serving(app) as url:
        before = ask(question)
        assert before["documents"] == [] and before["citations"] == []  # no word of the pile: no match
        out = ask("How do I hash data with createHash in node crypto?")
        assert isinstance(out["output"], str) and len(out["documents"]) == t.info["retrieval"]["k"]
        assert all(d["path"] == "docs/node.html" for d in out["documents"][:1])
        assert all(c in out["documents"] for c in out["citations"])
        (root / "docs" / "quokka.md").write_text("# Settings\n\nThe quokka_frobnicate setting turns on the frobnicator "
                                                 "for every quokka in the cluster.\n", encoding="utf-8")
        ingest.run(Context(load_config(path, []), console=QUIET))  # no retraining, no restart
        after = ask(question)
    assert [d["path"] for d in after["documents"]][:1] == ["docs/quokka.md"]
