"""Retrieval for the teacher (retrieve.py): FTS5 and embeddings fused by reciprocal rank, the
teacher's answer checked against what it was shown, and evaluate's teacher-retrieval system."""
from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.delimit import BLOCK
from taskling.teacher.backends.scripted import set_script
from taskling.core.config import load_config
from taskling.data.pile import Pile
from taskling.core import tasktype
from taskling.data.retrieve import Retriever, identifiers, retrieve
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


# Each identifier the issue names beside distractors built from its parts: the words of it apart, its
# pieces spaced out, a nearby code, a prefix of it. The chunk that holds the identifier itself must come
# first, whatever the question's punctuation around it.
IDENTIFIERS = """# Settings and errors

## Error 23505

SQLSTATE 23505 unique_violation: the row was refused by a constraint of the table.

## Error 23503

SQLSTATE 23503 foreign_key_violation: a duplicate key value violates a unique constraint, an error code
like unique violation errors, when an insert or update names a missing row. What does the error mean? It means
the key is not unique.

## Code 2350

Code 2350 mean error: what does SQLSTATE 2350 mean? The error class 2350 groups constraint errors and
unique violations.

## Connection limits

The max number of connections is set per role; max connections connections connections: how do I raise the
connection limit? Connections beyond the max are refused, raise the max of connections.

## Server setting

The max_connections setting fixes the number of clients the server accepts at once.

## OpenSSL errors in Node

ERR OSSL EVP UNSUPPORTED: errors are prefixed ERR, OpenSSL ones OSSL, envelope ones EVP; why do I get this
unsupported error when building? An unsupported digest throws an ERR error from OSSL.

## Legacy digests

Node throws ERR_OSSL_EVP_UNSUPPORTED when OpenSSL 3 rejects a legacy algorithm; set the legacy provider.
"""

EXACT = {"23505": "unique_violation: the row was refused",
         "max_connections": "fixes the number of clients",
         "ERR_OSSL_EVP_UNSUPPORTED": "rejects a legacy algorithm"}
QUESTIONS = [("What does SQLSTATE 23505 mean?", "23505"),
             ("What does error `23505` mean?", "23505"),
             ('I get "23505" on insert: what does the error mean?', "23505"),
             ("Error code (23505), what is it?", "23505"),
             ("sqlstate=23505", "23505"),
             ("How do I raise max_connections?", "max_connections"),
             ("How do I raise `max_connections` for more connections?", "max_connections"),
             ("What is 'max_connections'?", "max_connections"),
             ("Why do I get ERR_OSSL_EVP_UNSUPPORTED when building?", "ERR_OSSL_EVP_UNSUPPORTED"),
             ('Why "ERR_OSSL_EVP_UNSUPPORTED" when building?', "ERR_OSSL_EVP_UNSUPPORTED"),
             ("why do i get err_ossl_evp_unsupported, an unsupported error?", "ERR_OSSL_EVP_UNSUPPORTED"),
             # questions in other languages: the name is matched as written, whatever the words around it
             ("Was bedeutet der Fehler 23505 beim Einfügen?", "23505"),
             ("¿Cómo aumento max_connections en el servidor?", "max_connections"),
             ("Что означает ошибка 23505?", "23505"),
             ("错误23505是什么意思？", "23505"),
             ("为什么构建时出现ERR_OSSL_EVP_UNSUPPORTED错误？", "ERR_OSSL_EVP_UNSUPPORTED"),
             ("max_connectionsを増やすには？", "max_connections")]


@pytest.fixture(scope="module")
def identifier_pile(tmp_path_factory, tiny_model_dir):
    """A workspace whose pile (FTS5 and the embedder the tests use) holds IDENTIFIERS; its taskling.yaml."""
    root = tmp_path_factory.mktemp("identifiers")
    path = write_workspace(root, tiny_model_dir, ingest__embed=True, ingest__chunk_tokens=200)  # a section a chunk
    (root / "docs" / "settings.md").write_text(IDENTIFIERS, encoding="utf-8")
    ingest.run(Context(load_config(path, []), console=QUIET))
    return path


@pytest.mark.parametrize("question,ident", QUESTIONS)
def test_the_chunk_naming_an_identifier_exactly_comes_first(identifier_pile, question, ident):
    cfg = load_config(identifier_pile, [])
    with Retriever.open(cfg, Context(cfg, console=QUIET).ws.pile_db) as book:
        found = book.find(question)
        # every distractor is its own chunk, so the exact one wins on its own merits
        assert sum(EXACT[ident] in c.text for c in book.pile.chunks()) == 1
    assert found and EXACT[ident] in found[0].text, [c.text[:60] for c in found]


def test_identifiers_are_the_words_with_a_digit_an_underscore_or_backticks():
    q = "Why does `createHash` give ERR_OSSL_EVP_UNSUPPORTED (code 23505, step 2) and __init__ or _ or ___?"
    assert identifiers(q) == ["createHash", "ERR_OSSL_EVP_UNSUPPORTED", "23505", "__init__"]
    assert identifiers("How do I raise the max connections?") == []
    # words joined by dots are one name: a version, an address, a dotted path in backticks
    assert identifiers("Is v2.1 on python 3.11 at 192.168.0.1 hit, as in `os.path.join`, unlike v2 or e.g. 2.?") == [
        "v2.1", "3.11", "192.168.0.1", "os.path.join"]


def test_a_dotted_version_matches_itself_not_a_longer_one(tmp_path):
    """FTS5 alone: `v2.1` is one name. The chunks about v2.10 and v2.1.3 say "v2" and "1" more often than
    the one about v2.1, which comes first all the same."""
    texts = ["Release v2.10: v2 branch, fix 1, fix 1 again; v2.10 is the v2 line's tenth release.",
             "Release v2.1.3: v2 branch, 1 fix on top of v2.1.2, for the v2 1 series.",
             "In v2.1 the cache flag was renamed to keep_cache."]
    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/releases.md", texts)
        found = retrieve(pile, "What changed in v2.1?", k=3)
        stop = retrieve(pile, "What changed in keep_cache, since v2.1.", k=1)  # the full stop is not part of it
    assert found[0].text == texts[2] and stop[0].text == texts[2]


def add_parts(pile: Pile, path: str, texts: list[str]) -> None:
    """One document at `path` whose chunks are `texts`, one each."""
    text = "\n\n".join(texts)
    spans, at = [], 0
    for i, t in enumerate(texts):
        spans.append({"start": at, "end": at + len(t), "n_tokens": len(t.split()), "locator": f"part {i}"})
        at += len(t) + 2
    pile.replace_document(path, "0" * 64, "md", "text", len(text), text, spans)


def test_years_and_ordinals_are_words_not_identifiers_unless_backticked():
    """A number prose writes (a year, a decade, an ordinal) says when, not which thing: codes stay codes."""
    assert identifiers("What changed in 2019 and since the 1990s, on the 3rd and the 21st of May?") == []
    assert identifiers("In 2023 we got 23505, E1000, HTTP 404, port 5432, 2350 and max_connections") == [
        "23505", "E1000", "404", "5432", "2350", "max_connections"]
    assert identifiers("What does `2006` mean, and FY2019 or 2019a?") == ["2006", "FY2019", "2019a"]
    assert identifiers("Years 1899 and 2100 are out of range") == ["1899", "2100"]


def test_a_year_in_the_question_does_not_outrank_the_chunk_that_answers_it(tmp_path):
    """FTS5 alone: the chunk about the connection limit answers the question; the one that says 2023
    does not, and a year is not a name to demand."""
    texts = ["Release notes 2023: the build moved to meson and old platforms were dropped.",
             "Raise the connection limit with the max_connections setting, then restart the server."]
    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/notes.md", texts)
        found = retrieve(pile, "We upgraded in 2023: how do I raise the connection limit?", k=2)
        quoted = retrieve(pile, "We upgraded in `2023`: how do I raise the connection limit?", k=2)
    assert [c.text for c in found] == texts[::-1]
    assert [c.text for c in quoted] == texts  # backticks make it a name to match


def test_a_chunk_holding_the_identifier_is_found_past_the_rankings_depth(tmp_path):
    """FTS5 alone, 40 chunks that say "max" and "connections" more often than the one that names
    max_connections: BM25 ranks that one below its candidates' depth, and it still comes first."""
    texts = [f"Part {i}: max connections, the max of connections per pool {i}, connections max." for i in range(40)]
    texts.append("The max_connections setting fixes how many clients the server accepts.")
    texts.append("The max_connections_per_role setting is another one.")
    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/pool.md", texts)
        assert "max_connections setting" not in " ".join(c.text for c, _ in pile.search("max_connections", 30))
        found = retrieve(pile, "How do I raise max_connections?", k=2)
    assert found[0].text == texts[40] and found[1].text != texts[41]  # a longer name is not the name


def test_a_question_full_of_numbers_looks_up_only_its_first_identifiers(tmp_path, monkeypatch):
    """Each identifier is one more search of the pile: a pasted log of numbers is capped, so an answer
    stays quick (the first ones still count)."""
    from taskling.data import retrieve as retrieval

    text = "Error 10001 means the disk is full."
    with Pile(tmp_path / "pile.db") as pile:
        pile.replace_document("docs/log.md", "0" * 64, "md", "text", len(text), text,
                              [{"start": 0, "end": len(text), "n_tokens": 8, "locator": "line 1"}])
        looked = []
        real = Pile.holding
        monkeypatch.setattr(Pile, "holding", lambda self, word, limit=20: looked.append(word) or real(self, word, limit))
        found = retrieve(pile, " ".join(str(10001 + i) for i in range(20)), k=1)
    assert looked == [str(10001 + i) for i in range(retrieval.MOST_IDENTIFIERS)] and found[0].text == text


def code_table(n: int = 40) -> str:
    """A table of n error codes as ingest renders an HTML table: a row a line, a blank line between."""
    return "\n\n".join(f" | {53000 + 100 * i} | condition_{i}_{'xyz'[i % 3]}" for i in range(n))


def test_focus_shows_the_row_the_question_names_with_its_neighbours_and_keeps_the_offsets(tmp_path):
    """The row of 56000 is past the chunk's first 600 characters, where a cut from the start ends; the
    focused chunk is that row and two rows either side, a piece of the document at its own offsets."""
    from taskling.data.retrieve import focus

    text = code_table()
    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/errors.html", ["Error codes", text])
        found = retrieve(pile, "What condition is SQLSTATE 56000?", k=1)
        assert found[0].text == text and text.index("56000") > 600
        shown = focus(found[0], "What condition is SQLSTATE 56000?", 2, 600)
    assert [r.split("|")[1].strip() for r in shown.text.split("\n\n")] == ["55800", "55900", "56000", "56100", "56200"]
    assert text[shown.start_char - found[0].start_char:shown.end_char - found[0].start_char] == shown.text
    assert shown.key == found[0].key and shown.end_char - shown.start_char == len(shown.text)
    one = focus(found[0], "What condition is SQLSTATE 56000?", 0, 600)
    assert one.text == text.split("\n\n")[30].strip() == "| 56000 | condition_30_x"
    narrow = focus(found[0], "What condition is SQLSTATE 56000?", 2, 70)  # the budget bounds the neighbours
    assert "56000" in narrow.text and len(narrow.text) <= 70


def test_focus_leaves_a_chunk_as_it_is_without_a_shared_word_or_when_off():
    from taskling.data.pile import Chunk
    from taskling.data.retrieve import focus

    c = Chunk(1, "k:0", 1, "docs/a.md", "0" * 64, 100, 100 + len(code_table()), "lines 1-80", code_table())
    assert focus(c, "How do I bake bread?", 2, 600) is c
    assert focus(c, "What is 53400?", None, 600) is c
    # words count when no identifier matches, the rarest most: `xyz` ends every third row, condition_3 one row
    word = focus(c, "Which row says condition_3_x?", 0, 600)
    assert word.text.strip() == "| 53300 | condition_3_x"


def test_focus_keeps_hard_wrapped_paragraphs_whole_and_focuses_a_long_one_by_its_lines():
    """Markdown keeps its line wraps: a paragraph is the unit, so the fix 7 lines below the heading that
    names the code is shown with it. A table written a row a line (no blank lines) and longer than the
    budget is focused by its lines."""
    from taskling.data.pile import Chunk
    from taskling.data.retrieve import focus

    md = ("## disk_full (SQLSTATE 53100)\n\nThe server could not write a file because\nthe volume it writes to "
          "has no room left.\nThis happens during checkpoints,\nwhen temporary files grow,\nor when WAL "
          "piles up\nbehind a slow archive.\nTo recover, free space on the volume\nand restart the server.")
    c = Chunk(1, "k:0", 1, "docs/a.md", "0" * 64, 0, len(md), "lines 1-10", md)
    assert focus(c, "How do I recover from SQLSTATE 53100?", 2, 600).text == md
    rows = "\n".join(f"| {53000 + 100 * i} | condition_{i} |" for i in range(60))
    t = Chunk(1, "k:1", 1, "docs/t.md", "0" * 64, 0, len(rows), "lines 1-60", rows)
    shown = focus(t, "What is 55000?", 1, 600)
    assert shown.text == "| 54900 | condition_19 |\n| 55000 | condition_20 |\n| 55100 | condition_21 |"


def test_focus_is_for_questions_an_extract_input_is_shown_whole(tmp_path, tiny_model_dir):
    from taskling.data.retrieve import served_settings

    answer = load_config(write_workspace(tmp_path / "a", tiny_model_dir, task__type="answer"), [])
    extract = load_config(write_workspace(tmp_path / "e", tiny_model_dir, task__type="extract",
                                          task__output_schema={"type": "object", "properties": {
                                              "code": {"type": "string"}}}), [])
    assert served_settings(answer)["focus"] == 2 and served_settings(extract)["focus"] is None


def test_focus_cuts_a_line_longer_than_the_budget_around_its_match():
    from taskling.data.pile import Chunk
    from taskling.data.retrieve import focus

    words = " ".join(f"word{i}" for i in range(300))
    text = f"{words} the max_connections setting limits clients {words}"
    c = Chunk(1, "k:0", 1, "docs/a.md", "0" * 64, 0, len(text), "line 1", text)
    shown = focus(c, "How do I raise max_connections?", 2, 200)
    assert "max_connections setting" in shown.text and len(shown.text) <= 200
    assert text[shown.start_char:shown.end_char] == shown.text
    assert not shown.text.startswith(" ") and re.fullmatch(r"word\d+", shown.text.split()[0])


def test_the_retriever_shows_focused_chunks_and_a_model_exported_before_focus_reads_from_the_start(tmp_path):
    text = code_table()
    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/errors.html", ["Error codes", text])
    settings = {"k": 1, "chunk_chars": 600, "embed_model": None}
    with Retriever.from_settings(settings | {"focus": 1}, tmp_path / "pile.db") as book:
        assert [r.split("|")[1].strip() for r in book.find("SQLSTATE 56000?")[0].text.split("\n\n")] == [
            "55900", "56000", "56100"]
    with Retriever.from_settings(settings, tmp_path / "pile.db") as old:  # task.json without `focus`
        assert old.focus is None and old.find("SQLSTATE 56000?")[0].text == text


def test_vector_search_reads_the_vectors_once_and_again_when_the_pile_changes(tmp_path, monkeypatch):
    """nearest() keeps the vectors between queries (a served model asks many), and sees a chunk embedded
    after the first query, whether this connection or another (an ingest beside `taskling serve`) wrote it."""
    import numpy as np

    from taskling.data.embed import to_blob

    def unit(i: int) -> np.ndarray:
        v = np.zeros(8, dtype=np.float32)
        v[i] = 1.0
        return v

    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/a.md", ["alpha part", "beta part"])
        ids = [c.id for c in pile.chunks(unique=True)]
        pile.set_embeddings([(ids[0], to_blob(unit(0))), (ids[1], to_blob(unit(1)))])
        reads = []
        real = Pile.embeddings
        monkeypatch.setattr(Pile, "embeddings", lambda self, ids=None: reads.append(1) or real(self, ids))
        assert pile.nearest(unit(1), 1)[0][0].text == "beta part"
        assert pile.nearest(unit(0), 1)[0][0].text == "alpha part" and len(reads) == 1
        with Pile(tmp_path / "pile.db") as other:  # another process's ingest
            add_parts(other, "docs/b.md", ["gamma part"])
            new = [c.id for c in other.chunks(unique=True) if c.text == "gamma part"][0]
            other.set_embeddings([(new, to_blob(unit(2)))])
        assert pile.nearest(unit(2), 1)[0][0].text == "gamma part" and len(reads) == 2
        pile.set_embeddings([(ids[0], to_blob(unit(3)))])  # this connection's own change
        assert pile.nearest(unit(3), 1)[0][0].text == "alpha part" and len(reads) == 3


def test_a_rare_identifier_outranks_a_common_one(tmp_path):
    """"sqlite3_step() returned 2579": 40 chunks name sqlite3_step, one holds 2579. Counting identifiers
    alike, a chunk naming sqlite3_step ties with the code's and may come first; weighted by how rare each
    is in the pile, the code's chunk comes first, and focus shows its line, not the function's."""
    from taskling.data.retrieve import name_weights

    texts = [f"Part {i}: sqlite3_step() returns SQLITE_ROW while rows remain, then SQLITE_DONE." for i in range(40)]
    texts.append("sqlite3_step() is described elsewhere.\n\nSQLITE_CONSTRAINT_ROWID (2579)\n\nSQLITE_NOTICE_RBU (795)")
    with Pile(tmp_path / "pile.db") as pile:
        add_parts(pile, "docs/rescode.html", texts)
        q = "My sqlite3_step() call returned 2579. Which result code is that?"
        w = name_weights(pile, q)
        found = retrieve(pile, q, k=1)
    assert w["2579"] > 3 * w["sqlite3_step"] and found[0].text == texts[40]
    with Retriever.from_settings({"k": 1, "chunk_chars": 600, "focus": 0}, tmp_path / "pile.db") as book:
        assert book.find(q)[0].text == "SQLITE_CONSTRAINT_ROWID (2579)"
        assert book.shown(found[0], q).text == "SQLITE_CONSTRAINT_ROWID (2579)"
