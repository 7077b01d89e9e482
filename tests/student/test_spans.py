"""Answers copied from the documents (student.retrieval.spans): the grammar accepts a run of the shown
chunks' words with an optional citation, or the abstention, and nothing else; a model constrained by
it (the tiny random Llama, whose free text is noise) never leaves the chunks; evaluate's open-book
systems use it when the setting is on."""
from __future__ import annotations

import re

import llguidance
import pytest

from taskling.core.openbook import ABSTAIN, RetrievalCfg
from taskling.data.pile import Chunk
from taskling.student import infer
from taskling.student.models import load_causal_lm
from taskling.tasks.openbook import open_messages, shown_texts, span_gbnf, span_lark, span_rules, split_citations

TEXTS = ["Error 23505 | unique_violation | raised when a key repeats (see ALTER TABLE).",
         "SQLITE_BUSY (5): the database file is locked; retry later."]


def chunk(key: str, text: str) -> Chunk:
    return Chunk(id=1, key=key, doc_id=1, path=f"docs/{key}.html", sha256="", start_char=0, end_char=len(text),
                 locator="p 1", text=text)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir)
    return model.eval(), tok


def accepts(tok, grammar: str, text: str) -> bool:
    """Whether the Lark grammar takes exactly `text` (then the end of the turn)."""
    stops = infer.stop_token_ids(tok)
    m = llguidance.LLMatcher(infer._ll_tokenizer(tok, stops), infer.lark_grammar(grammar), log_level=0)
    ids = tok.encode(text, add_special_tokens=False)
    return m.consume_tokens(ids) and m.is_accepting()


@pytest.mark.parametrize("text,ok", [
    ("unique_violation", True), ("unique_violation [1]", True), ("SQLITE_BUSY [2]", True),
    ("the database file is locked", True), ("23505 | unique_violation", True), ("ALTER TABLE", True),
    ("SQLITE_BUSY (5)", True), (ABSTAIN, True),
    ("unique_violation [3]", False),          # only the documents shown can be cited
    ("unique_violation [2]", False),          # and only the one the answer was copied from
    ("foreign_key_violation", False),         # a name in no chunk
    ("unique violation", False),              # spaced otherwise than in the chunk
    ("locked database", False),               # words of a chunk, not a run of them
    ("SQLITE_BUSY unique_violation", False),  # a run across two chunks
])
def test_the_grammar_takes_a_run_of_one_chunk_a_citation_or_the_abstention(tiny, text, ok):
    _, tok = tiny
    assert accepts(tok, span_lark(TEXTS), text) is ok


def test_the_grammar_is_linear_in_the_text_and_llama_cpp_reads_it_too():
    from llama_cpp import LlamaGrammar

    long = " ".join(f"word{i}," for i in range(400))
    rules = span_rules([long])
    assert len(rules) == 2 + 800  # root, the text's span, and one rule per piece (400 words, 400 commas)
    LlamaGrammar.from_string(span_gbnf([long, *TEXTS]), verbose=False)  # parses; raises if not
    # however long the chunks, the grammar stays bounded
    from taskling.tasks.openbook import MAX_PIECES

    assert len(span_rules([long] * 20)) <= MAX_PIECES + 1 + 20
    # no chunks: only the abstention
    assert span_rules([]) == [("root", f'"{ABSTAIN}"')]


def test_a_constrained_model_never_leaves_the_chunks(tiny):
    model, tok = tiny
    chunks = [chunk("a", TEXTS[0]), chunk("b", TEXTS[1])]
    texts = shown_texts(chunks, 600)
    convs = [open_messages("Answer from the documents.", q, chunks, 600)
             for q in ("What is 23505?", "Which code is 5?", "Why is it locked?", "Say something else.")]
    free = infer.generate(model, tok, convs, max_new_tokens=12)
    said = infer.generate(model, tok, convs, max_new_tokens=40, grammars=[span_lark(texts)] * len(convs))
    flat = [re.sub(r"\s+", " ", t) for t in texts]
    inside = lambda s: bool(s) and (s == ABSTAIN or any(s in t for t in flat))  # noqa: E731
    assert not all(inside(split_citations(r["text"])[0]) for r in free)  # the random model's free text is noise
    for r in said:
        answer, cited = split_citations(r["text"])
        assert r["finish_reason"] == "stop" and inside(answer), r["text"]
        assert all(n in (1, 2) for n in cited)


def test_evaluate_copies_spans_when_the_setting_is_on(tiny, tmp_path, tiny_model_dir):
    import yaml

    from conftest import write_workspace
    from taskling.core import tasktype
    from taskling.core.config import load_config
    from taskling.serving.systems import predict_local

    model, tok = tiny
    path = write_workspace(tmp_path, tiny_model_dir)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "codes", "type": "answer", "description": "Name the condition of an error code.",
                   "examples": [{"input": "What is 23503?", "output": "foreign_key_violation"}]}
    path.write_text(yaml.safe_dump(cfg))
    chunks = [chunk("a", TEXTS[0])]
    convs = [open_messages("Answer.", q, chunks, 600) for q in ("What is 23505?", "Tell me a story.", "Hi")]
    outs = {}
    for spans in (True, False):
        c = load_config(path, [f"student.retrieval.spans={str(spans).lower()}"])
        assert c.student.retrieval == RetrievalCfg(spans=spans)
        outs[spans] = [split_citations(r["text"])[0] for r in
                       predict_local(model, tok, "student-open", convs, tasktype.get("answer"), c, [chunks] * 3)]
    flat = re.sub(r"\s+", " ", TEXTS[0])
    inside = lambda a: bool(a) and (a == ABSTAIN or a in flat)  # noqa: E731
    assert all(map(inside, outs[True])), outs[True]
    assert not all(map(inside, outs[False]))  # the same model unconstrained says nothing of the chunk
