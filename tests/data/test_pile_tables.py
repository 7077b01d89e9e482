"""The pile stores a document's tables with it: written in the document's transaction, read back by
document with the chunk (and topic) that holds each row, replaced with the document, gone with it;
an older pile, which has no tables, is rebuilt."""
from __future__ import annotations

import json
import sqlite3

from taskling.data.formats import Table
from taskling.data.pile import SCHEMA_VERSION, Pile, chunk_key

TEXT = "Codes\n\n| code | meaning |\n| E1 | Disk full |\n\nMore\n\n| E2 | Net down |"
CHUNKS = [{"start": 0, "end": 42, "n_tokens": 8, "locator": "Codes"},
          {"start": 44, "end": len(TEXT), "n_tokens": 6, "locator": "More"}]


def codes(chunks=(0, 1)) -> Table:
    return Table("Codes", ["code", "meaning"], [["E1", "Disk full"], ["E2", "Net down", "extra"]],
                 ["table 1, row 1", "table 1, row 2"], chunks=list(chunks))


def store(pile: Pile, path: str = "data/codes.md", sha: str = "a" * 64, **kw) -> int:
    return pile.replace_document(path, sha, "markdown", "test", len(TEXT), TEXT, CHUNKS, **kw)


def test_tables_round_trip_with_their_chunks_and_notes(tmp_path):
    with Pile(tmp_path / "pile.db") as pile:
        other = Table(None, [], [["1", "2"]], ["row 1"])  # no header, a row placed in no chunk
        doc = store(pile, tables=[codes(), other], table_notes=["1 line(s) are not valid JSON; left out"])
        pile.set_topics([{"id": 7, "label": "t", "terms": [], "size": 1, "examples": []}],
                        {pile.chunk(chunk_key("data/codes.md", "a" * 64, 1)).id: 7}, "m")
        first, second = pile.tables(doc)
        assert (first.index, first.name, first.header, first.rows, first.locators) == (
            1, "Codes", ["code", "meaning"], [["E1", "Disk full"], ["E2", "Net down", "extra"]],
            ["table 1, row 1", "table 1, row 2"])
        assert first.chunks == [chunk_key("data/codes.md", "a" * 64, 0), chunk_key("data/codes.md", "a" * 64, 1)]
        assert first.topics == [None, 7]
        assert (second.index, second.name, second.header, second.chunks, second.topics) == (2, None, [], [None], [None])
        (row,) = pile.documents()
        assert row["id"] == doc and json.loads(row["table_notes"]) == ["1 line(s) are not valid JSON; left out"]
        assert pile.paths_with_tables(5) == ["data/codes.md"]


def test_tables_are_replaced_with_their_document_and_leave_with_it(tmp_path):
    with Pile(tmp_path / "pile.db") as pile:
        store(pile, tables=[codes()])
        store(pile, "pack.zip", "c" * 64)
        store(pile, "pack.zip!/codes.md", "d" * 64, parent="pack.zip", tables=[codes(), codes()])
        doc = store(pile, sha="b" * 64, tables=[codes((1, None))])  # the file changed: ingested again
        (t,) = pile.tables(doc)
        assert t.chunks == [chunk_key("data/codes.md", "b" * 64, 1), None]
        assert pile.db.execute("SELECT count(*) FROM tables").fetchone()[0] == 3
        store(pile, "pack.zip", "e" * 64)  # a new archive: its old members and their tables go
        pile.mark_gone(["data/codes.md"])
        assert pile.db.execute("SELECT count(*) FROM tables").fetchone()[0] == 0
        assert pile.db.execute("SELECT count(*) FROM table_rows").fetchone()[0] == 0
        assert pile.tables(doc) == [] and pile.paths_with_tables(5) == []


def test_an_older_pile_is_rebuilt_with_tables(tmp_path):
    path = tmp_path / "pile.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE documents (id INTEGER PRIMARY KEY, path TEXT); INSERT INTO documents(path) "
                     "VALUES ('old.csv'); PRAGMA user_version=2;")
    db.close()
    with Pile(path) as pile:
        assert pile.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert pile.documents() == []
        doc = store(pile, tables=[codes()])
        assert [t.rows for t in pile.tables(doc)] == [codes().rows]
