"""The curation filters on their own (curation/filters.py): language, grounding (each task
type's), dedup kinds, decontamination by n-gram and by paraphrase, balanced selection."""
from __future__ import annotations

import numpy as np

from taskling.core import tasktype
from taskling.core.tasktype import TaskCfg
from taskling.curation import filters as curation
from taskling.data.embed import Embedder


def test_language_vote_is_confident_or_silent():
    assert curation.language_of("How do I read the value of a key that is in the JSON column?") == "en"
    assert curation.language_of("Wie kann ich den Wert aus der Spalte mit dem Schlüssel lesen, ist das nicht ein Fehler?") == "de"
    assert curation.language_of("json_extract bm25") is None


def grounding(kind: str, ex: dict, source: str, similarity: float | None = None) -> float:
    task = TaskCfg(name="t", description="d", type=kind, labels=["a", "b"], output_schema={"type": "object"})
    return tasktype.get(kind).grounding(task, ex, source, similarity)


def test_grounding_by_task_type():
    src = "The json_extract function reads a value at a path. Invoice INV-204 is due on 2026-12-01."
    assert grounding("extract", {"output": {"invoice": "INV-204", "due": "2026-12-01"}}, src) == 1.0
    assert grounding("extract", {"output": {"invoice": "INV-999", "due": "2026-12-01"}}, src) == 0.5
    assert grounding("classify", {"input": "How does json_extract read a path?"}, src) > 0.5
    assert grounding("classify", {"input": "How do Kubernetes operators reconcile?"}, src) == 0.0
    assert grounding("answer", {"input": "q", "output": "It reads a value at a path."}, src, 0.8) > 0.6
    # the claim is the output for free text, the input for a label: an off-topic input does not count
    off = {"input": "How do Kubernetes operators reconcile?", "output": "It reads a value at a path."}
    assert grounding("generate", off, src) == grounding("answer", off, src) > 0.5
    assert grounding("classify", off, src) == 0.0
    # similarity weighs half for text claims; values are found or not
    assert grounding("answer", off, src, 0.0) == round(grounding("answer", off, src) / 2, 4)
    assert grounding("extract", {"output": {"invoice": "INV-204"}}, src, 0.0) == 1.0


def test_dedup_kinds_keep_the_first_in_order():
    texts = ["How do I read a file with readFile in node?", "how do i read a file with readfile in node",
             "How do I read a file with readFile in node.js?", "How can a node program load a file's contents?",
             "Which function ranks FTS5 results?"]
    vecs = Embedder().encode(texts)
    dups = curation.dedup([0, 1, 2, 3, 4], texts, vecs, near=0.7, semantic=0.8)
    assert dups[1] == ("exact duplicate", 0) and dups[2][0] == "near duplicate"
    assert 4 not in dups
    order_best_last = curation.dedup([4, 3, 2, 1, 0], texts, None, near=0.7, semantic=0.8)
    assert 2 not in order_best_last and order_best_last[1] == ("near duplicate", 2)  # the earlier in `order` stays


def test_decontamination_finds_copies_and_paraphrases():
    blocked = ["How do I read a file with readFile in node?"]
    texts = ["so, how do I read a file with readFile in node? thanks",  # shares a 6-gram
             "With node, how can I read a file using readFile?",        # paraphrase
             "How do I rank FTS5 MATCH results with bm25?"]             # unrelated
    emb = Embedder()
    out = curation.contaminated(texts, emb.encode(texts), blocked, emb.encode(blocked), cosine=0.85)
    assert out == {0: "overlaps eval or gold (n-gram)", 1: "overlaps eval or gold (paraphrase)"}
    assert curation.contaminated(texts, None, blocked, None, 0.85) == {0: "overlaps eval or gold (n-gram)"}


def test_selection_balances_labels_and_spreads_within():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(40, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = ["a"] * 30 + ["b"] * 6 + ["c"] * 4
    got = curation.select(list(range(40)), 15, lambda i: labels[i], vecs, lambda i: 0.0)
    counts = {lab: sum(labels[i] == lab for i in got) for lab in "abc"}
    assert len(got) == 15 and counts["c"] == 4 and counts["b"] == 5 and counts["a"] == 6
    twins = np.vstack([vecs[:1], vecs[:1], vecs[1:3]])
    assert sorted(curation.k_center(twins, 3)) in ([0, 2, 3], [1, 2, 3])  # never both twins
