"""Retrieval for the teacher (retrieve.py): FTS5 and embeddings fused by reciprocal rank, the
teacher's answer checked against what it was shown, and evaluate's teacher-retrieval system."""
from __future__ import annotations

import json
import re

from rich.console import Console

from conftest import write_workspace
from taskling.core.delimit import BLOCK
from taskling.teacher.backends.scripted import set_script
from taskling.core.config import load_config
from taskling.data.pile import Pile
from taskling.core import tasktype
from taskling.data.retrieve import retrieve
from taskling.tasks import with_context
from taskling.stages import curate, evaluate, generate, ingest, train
from taskling.core.workspace import Context, read_jsonl

QUIET = Console(stderr=True, quiet=True)


def test_words_and_meaning_are_fused_and_the_answer_is_checked_against_the_chunks(tmp_path, tiny_model_dir):
    from taskling.data.embed import Embedder

    path = write_workspace(tmp_path, tiny_model_dir, ingest__embed=True)
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    ingest.run(ctx)
    emb = Embedder(cfg.ingest.embed_model, max_tokens=cfg.ingest.embed_max_tokens)
    with Pile(ctx.ws.pile_db) as pile:
        words = retrieve(pile, "createHash randomBytes", k=3)
        assert words and all(c.path == "docs/node.html" for c in words)
        # no shared word with the manual: only the embeddings can find it
        meaning = retrieve(pile, "computing a message digest of some bytes in javascript", k=2, embedder=emb)
        assert meaning and meaning[0].path == "docs/node.html"
        assert retrieve(pile, "   ", k=3) == [] and retrieve(pile, "node", k=0) == []
        chunks = retrieve(pile, "json_extract path JSON document", k=2, embedder=emb)
    assert chunks[0].path == "docs/sqlite.md"
    msgs = with_context([{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}], chunks)
    assert msgs[-1]["content"].endswith("Q?") and "<document" in msgs[-1]["content"] and msgs[0]["content"] == "s"
    extract, answer = tasktype.get("extract"), tasktype.get("answer")
    fixed, info = extract.check_retrieved(cfg.task, {"fn": "json_extract", "made_up": "json_frobnicate", "none": None},
                                          chunks)
    assert fixed == {"fn": "json_extract", "made_up": None, "none": None} and info["dropped"] == ["made_up"]
    supported = [answer.check_retrieved(cfg.task, text, chunks)[1]["supported"]
                 for text in ("The sqlite json_extract function reads a value at a path",
                              "Bananas are yellow and curved fruit")]
    assert supported == [True, False]


def reader(messages: list[dict]) -> str:
    """A teacher that, given documents, answers with their first sentence; without, says it does not know."""
    text = messages[-1]["content"]
    doc = BLOCK.search(text)
    if "Answer from these documents" in text and doc:
        return re.split(r"(?<=[.!?])\s", doc.group(2).strip(), maxsplit=1)[0]
    if doc:  # generation: test_evaluate's grounded question-and-answer writer
        from stages.test_evaluate import script  # tests/ is on sys.path (its conftest.py)

        return script(messages)
    return "I do not know."


def test_evaluate_scores_the_teacher_with_retrieved_chunks(tmp_path, tiny_model_dir):
    import yaml

    path = write_workspace(tmp_path, tiny_model_dir, evaluate__teacher_retrieval=2, budget__examples=24)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "tiny-answers", "type": "answer", "description": "Answer a developer's question from the manual.",
                   "examples": [{"input": "What does json_extract do?", "output": "It reads a value from JSON."}]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (path.parent / "gold.jsonl").write_text(json.dumps(
        {"input": "What does the node fs module do with files?",
         "output": "The node fs module reads files with readFile and writes them with writeFile."}) + "\n")
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    set_script(reader)
    try:
        for stage in (ingest, generate, curate, train):
            stage.run(ctx)
        man = evaluate.run(ctx)
    finally:
        set_script(None)
    gold = man.results["gold"]
    assert "teacher-retrieval" in gold and "teacher" in gold
    assert gold["teacher-retrieval"].metric > gold["teacher"].metric  # the documents help it
    rows = read_jsonl(ctx.stage_dir("evaluate") / "pred-teacher-retrieval-gold.jsonl")
    assert len(rows[0]["retrieved"]) == 2 and rows[0]["supported"] is True
