"""The pile: every document and chunk, with provenance, in one SQLite file.

.taskling/pile.db (WAL, FTS5): documents (path, sha256, format, converter,
extracted text, status), chunks (char offsets into that text, locator,
token count), chunks_fts for search, ingest_log for what happened to each file.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    converter TEXT NOT NULL,
    size INTEGER NOT NULL,
    n_chars INTEGER NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok',          -- ok | gone
    ingested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,                   -- <sha256[:16]>:<ordinal>, stable for unchanged files
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    locator TEXT NOT NULL,                      -- heading path or line range
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS ingest_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    action TEXT NOT NULL,                       -- added | updated | unchanged | gone | error
    detail TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class Chunk:
    id: int
    key: str
    doc_id: int
    path: str
    sha256: str
    start_char: int
    end_char: int
    locator: str
    text: str

    def provenance(self) -> dict:
        return {
            "chunk": self.key,
            "path": self.path,
            "sha256": self.sha256,
            "start_char": self.start_char,
            "end_char": self.end_char,
            "locator": self.locator,
        }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Pile:
    """A connection to pile.db; each file's change is one transaction."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Pile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.db:
            yield self.db

    def document(self, path: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM documents WHERE path=?", (path,)).fetchone()

    def replace_document(self, path: str, sha256: str, fmt: str, converter: str, size: int,
                         text: str, chunks: list[dict]) -> int:
        """Insert or replace a document and its chunks in one transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE path=?", (path,))
            cur = db.execute(
                "INSERT INTO documents(path, sha256, format, converter, size, n_chars, text, status, ingested_at)"
                " VALUES (?,?,?,?,?,?,?,'ok',?)",
                (path, sha256, fmt, converter, size, len(text), text, now()),
            )
            doc_id = cur.lastrowid
            db.executemany(
                "INSERT INTO chunks(key, doc_id, ord, start_char, end_char, n_tokens, locator, text)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [(f"{sha256[:16]}:{i}", doc_id, i, c["start"], c["end"], c["n_tokens"], c["locator"],
                  text[c["start"]:c["end"]]) for i, c in enumerate(chunks)],
            )
        return doc_id

    def mark_gone(self, paths: list[str]) -> None:
        with self.transaction() as db:
            for p in paths:
                db.execute("DELETE FROM chunks WHERE doc_id IN (SELECT id FROM documents WHERE path=?)", (p,))
                db.execute("UPDATE documents SET status='gone' WHERE path=?", (p,))

    def log(self, path: str, action: str, detail: str = "") -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO ingest_log(at, path, action, detail) VALUES (?,?,?,?)", (now(), path, action, detail))

    def live_paths(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM documents WHERE status='ok' ORDER BY path")]

    def stats(self) -> dict:
        q = self.db.execute
        by_format = {r[0]: r[1] for r in q("SELECT format, count(*) FROM documents WHERE status='ok' GROUP BY format")}
        return {
            "documents": q("SELECT count(*) FROM documents WHERE status='ok'").fetchone()[0],
            "gone": q("SELECT count(*) FROM documents WHERE status='gone'").fetchone()[0],
            "chunks": q("SELECT count(*) FROM chunks").fetchone()[0],
            "tokens": q("SELECT coalesce(sum(n_tokens),0) FROM chunks").fetchone()[0],
            "chars": q("SELECT coalesce(sum(n_chars),0) FROM documents WHERE status='ok'").fetchone()[0],
            "by_format": by_format,
        }

    def snapshot(self) -> list[tuple[str, str]]:
        """(path, sha256) of every live document: what later stages depend on."""
        return [tuple(r) for r in self.db.execute("SELECT path, sha256 FROM documents WHERE status='ok' ORDER BY path")]

    _CHUNK_SQL = ("SELECT c.id, c.key, c.doc_id, d.path, d.sha256, c.start_char, c.end_char, c.locator, c.text "
                  "FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.status='ok'")

    def chunks(self) -> list[Chunk]:
        return [Chunk(*r) for r in self.db.execute(self._CHUNK_SQL + " ORDER BY d.path, c.ord")]

    def chunk(self, key: str) -> Chunk | None:
        r = self.db.execute(self._CHUNK_SQL + " AND c.key=?", (key,)).fetchone()
        return Chunk(*r) if r else None

    def search(self, query: str, limit: int = 20) -> list[tuple[Chunk, float]]:
        """FTS5 search, best first; the query is reduced to plain words joined by OR."""
        words = [w for w in "".join(ch if ch.isalnum() else " " for ch in query).split() if len(w) > 1]
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in dict.fromkeys(words))
        rows = self.db.execute(
            "SELECT c.id, c.key, c.doc_id, d.path, d.sha256, c.start_char, c.end_char, c.locator, c.text,"
            " bm25(chunks_fts) AS score FROM chunks_fts JOIN chunks c ON c.id=chunks_fts.rowid"
            " JOIN documents d ON d.id=c.doc_id WHERE chunks_fts MATCH ? AND d.status='ok'"
            " ORDER BY score LIMIT ?",
            (match, limit),
        ).fetchall()
        return [(Chunk(*r[:9]), -r[9]) for r in rows]
