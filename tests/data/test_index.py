"""The exported retrieval index (data/index.py): a packed copy of the pile that the retriever reads as it
reads the pile, finding the same chunks."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.workspace import Context
from taskling.data.index import Codec, write_index
from taskling.data.pile import Pile
from taskling.data.retrieve import Retriever, holds_word, identifiers, served_settings
from taskling.stages import ingest

QUIET = Console(stderr=True, quiet=True)

SETTINGS = """# Settings and errors

## Error 23505

SQLSTATE 23505 unique_violation: the row was refused by a unique constraint of the table.

## Error 23503

SQLSTATE 23503 foreign_key_violation: an insert or update names a row that is missing.

## Connections

`max_connections` sets how many clients may connect at once. Raising it costs shared memory.

## Ünïcode — 名前

Les données « accentuées » restent telles quelles: naïve café, 東京, Ελληνικά.
"""

QUERIES = ["What does SQLSTATE 23505 mean?", "sqlstate=23503", "How do I raise max_connections?",
           "computing a message digest of some bytes in javascript", "json_extract path JSON document",
           "naïve café 東京", "how many clients may connect"]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model_dir):
    """A workspace's pile (FTS5 and vectors) and its exported index; the retriever settings of an answer task."""
    root = tmp_path_factory.mktemp("index")
    path = write_workspace(root, tiny_model_dir, ingest__embed=True, ingest__chunk_tokens=200)
    (root / "docs" / "settings.md").write_text(SETTINGS, encoding="utf-8")
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    ingest.run(ctx)
    index = root / "index.db"
    size = write_index(ctx.ws.pile_db, index)
    return ctx.ws.pile_db, index, size, served_settings(cfg) | {"focus": 2}  # as an answer task's


def test_the_index_holds_the_pile_s_chunks_and_finds_what_the_pile_finds(indexed):
    pile_db, index, size, settings = indexed
    assert size == index.stat().st_size
    with Pile(pile_db) as pile, Pile(index) as packed:
        assert packed.codec is not None and pile.codec is None
        assert packed.chunks() == pile.chunks()  # texts, keys, offsets, locators: as in the pile
        some = pile.chunks()[1]
        assert packed.chunk(some.key) == some and packed.texts([some.id]) == [some.text]
        assert [c for c, _ in packed.holding("max_connections")] == [c for c, _ in pile.holding("max_connections")]
        assert [c for c, _ in packed.search("unique constraint")] == [c for c, _ in pile.search("unique constraint")]
    with Retriever.from_settings(settings, pile_db) as a, Retriever.from_settings(settings, index) as b:
        for q in QUERIES:
            x, y = a.find(q), b.find(q)
            # 4-bit vectors may swap near-ties (eight chunks of one page within 0.02 of each other here;
            # a question about nothing in the pile meets only ties): all but one chunk are the same
            assert len({c.key for c in x} & {c.key for c in y}) >= len(x) - 1, q
            if len(names := identifiers(q)) == 1 and len(b.pile.holding(names[0])) == 1:  # the one holder first
                assert holds_word(y[0].text, names[0]) and y[0] == x[0], q
            shown = {c.key: c.text for c in x}  # a chunk both find is shown alike, focused on the question
            assert all(c.text == shown[c.key] for c in y if c.key in shown), q
        assert "23505" in b.find(QUERIES[0])[0].text


def test_the_index_is_packed_read_only_and_smaller_than_a_copy_of_the_pile(indexed, tmp_path):
    pile_db, index, _, _ = indexed
    plain = tmp_path / "plain.db"
    with sqlite3.connect(pile_db) as db:
        db.execute("VACUUM INTO ?", (str(plain),))
    with sqlite3.connect(index) as db:
        kinds = {type(t) for t, in db.execute("SELECT text FROM chunks")}
        widths = {len(e) for e, in db.execute("SELECT embedding FROM chunks WHERE embedding IS NOT NULL")}
        dim = int(db.execute("SELECT value FROM index_codec WHERE name='dim'").fetchone()[0])
        triggers = db.execute("SELECT count(*) FROM sqlite_master WHERE type='trigger'").fetchone()[0]
        assert db.execute("SELECT count(*) FROM documents WHERE text != ''").fetchone()[0] == 0
    assert kinds == {bytes} and widths == {4 + (dim + 1) // 2} and triggers == 0
    text_bytes = sum(len(c.text.encode()) for c in Pile(pile_db).chunks())
    packed_text = sum(len(t) for t, in sqlite3.connect(index).execute("SELECT text FROM chunks"))
    assert packed_text < 0.8 * text_bytes and index.stat().st_size < plain.stat().st_size


def test_an_index_exported_before_packing_reads_as_a_pile(indexed, tmp_path):
    """An index of an earlier taskling is a plain copy of the pile (no index_codec): it reads as one."""
    pile_db, _, _, settings = indexed
    old = tmp_path / "old-index.db"
    with sqlite3.connect(pile_db) as db:
        db.execute("VACUUM INTO ?", (str(old),))
    with Retriever.from_settings(settings, pile_db) as a, Retriever.from_settings(settings, old) as b:
        assert b.pile.codec is None
        assert [c.key for c in b.find(QUERIES[2])] == [c.key for c in a.find(QUERIES[2])]


def test_an_index_of_another_format_is_refused_with_what_to_do(indexed, tmp_path):
    _, index, _, _ = indexed
    future = tmp_path / "future.db"
    future.write_bytes(index.read_bytes())
    with sqlite3.connect(future) as db:
        db.execute("UPDATE index_codec SET value='99' WHERE name='format'")
    with pytest.raises(TasklingError, match="future.db: retrieval index format '99'.*export the model again"):
        Pile(future)


@pytest.mark.parametrize("dim", [384, 7, 1])
def test_a_packed_vector_is_within_half_a_step_of_the_vector(dim):
    rng = np.random.default_rng(dim)
    vs = rng.normal(size=(20, dim)).astype(np.float32)
    vs /= np.linalg.norm(vs, axis=1, keepdims=True)
    codec = Codec(b"", dim)
    got = codec.vectors([codec.pack_vector(v) for v in vs])
    assert got.shape == (20, dim)
    steps = np.abs(vs).max(axis=1, keepdims=True) / 7
    assert np.all(np.abs(got - vs) <= steps / 2 + 1e-6)
    if dim == 384:  # cosines to the originals: the order of neighbours survives all but near-ties
        cos = (got * vs).sum(axis=1) / np.linalg.norm(got, axis=1)
        assert cos.min() > 0.98
    zero = codec.vectors([codec.pack_vector(np.zeros(dim, dtype=np.float32))])
    assert not zero.any()


def test_packed_texts_come_back_as_written():
    texts = ["", "plain words", "naïve café 東京 — ✓\n\n\ttabs and\r\nlines", "x" * 5000]
    codec = Codec.for_texts(texts, 0)
    assert [codec.text(codec.pack_text(t)) for t in texts] == texts
    assert codec.text("already text") == "already text" and codec.text(None) is None
