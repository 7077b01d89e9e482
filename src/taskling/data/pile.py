"""The pile: every document and chunk, with provenance, in one SQLite file.

.taskling/pile.db (WAL, FTS5):
  documents    path (archive members and attachments as "outer.zip!/inner.pdf"),
               sha256, format, converter and version, parent and relation,
               warnings, extracted text, status (ok | partial | gone),
               duplicate-of (exact or near, with similarity)
  chunks       char offsets into the document text, locator, token count,
               MinHash signature, embedding, topic, duplicate-of
  chunks_fts   FTS5 index over chunk text
  topics       clusters of chunks: label, distinctive terms, size, examples
  tables       the tables its converter read from a document: number, name, header
  table_rows   their rows: locator, cells, the chunk that holds the row
  ingest_log   what happened to each file, and why
The pile is derived from the sources: an older schema is rebuilt, not migrated.
A document, its chunks and its tables are written in one transaction.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .formats import Table
from .index import Codec

SCHEMA_VERSION = 3
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
    parent_id INTEGER REFERENCES documents(id) ON DELETE CASCADE,
    relation TEXT NOT NULL DEFAULT '',          -- '' | member | attachment
    warnings TEXT NOT NULL DEFAULT '[]',        -- JSON list
    meta TEXT NOT NULL DEFAULT '{}',            -- JSON: title, Message-IDs, ...
    dup_of INTEGER,                             -- documents.id of the first copy
    dup_method TEXT,                            -- exact | near
    dup_similarity REAL,
    status TEXT NOT NULL DEFAULT 'ok',          -- ok | partial (children pending) | gone
    table_notes TEXT NOT NULL DEFAULT '[]',     -- JSON list: what reading its tables left out, and why
    ingested_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_parent ON documents(parent_id);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,                   -- <hash of path+sha256>:<ordinal>, stable for unchanged files
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    locator TEXT NOT NULL,                      -- page, slide, sheet!range, heading path, Message-ID, lines
    text TEXT NOT NULL,
    minhash BLOB,
    embedding BLOB,
    topic_id INTEGER,
    dup_of INTEGER,                             -- chunks.id of the first copy
    dup_method TEXT,
    dup_similarity REAL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ord);
CREATE INDEX IF NOT EXISTS chunks_topic ON chunks(topic_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    terms TEXT NOT NULL,                        -- JSON list
    size INTEGER NOT NULL,
    examples TEXT NOT NULL,                     -- JSON list of chunk keys
    embed_model TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tables (
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,                       -- the table's number in its document, from 1
    name TEXT,                                  -- sheet, caption or nearest heading
    header TEXT NOT NULL,                       -- JSON list; [] when the first row is data
    UNIQUE (doc_id, ord)
);
CREATE TABLE IF NOT EXISTS table_rows (
    table_id INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    locator TEXT NOT NULL,                      -- row 14, 'Sheet1' row 5, record 3, line 3, table 2, row 14
    cells TEXT NOT NULL,                        -- JSON list of cell texts
    chunk_ord INTEGER,                          -- chunks.ord of the document's chunk that holds the row
    PRIMARY KEY (table_id, ord)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingest_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    action TEXT NOT NULL,                       -- added | updated | unchanged | gone | skipped | warning
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
    format: str = ""
    topic_id: int | None = None

    def provenance(self) -> dict:
        return {
            "chunk": self.key,
            "path": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "start_char": self.start_char,
            "end_char": self.end_char,
            "locator": self.locator,
        }


@dataclass(frozen=True)
class PileTable:
    """A document's table as the pile holds it: its number in the document (from 1), name, header
    and rows of cell texts with their locators; per row, the key of the chunk that holds it (None
    when none does) and that chunk's topic."""
    index: int
    name: str | None
    header: list[str]
    rows: list[list[str]]
    locators: list[str]
    chunks: list[str | None]
    topics: list[int | None]


def findable(word: str) -> bool:
    """Whether Pile.holding can look `word` up: letters, digits and underscores, dots between. For any
    other word it finds nothing, which says nothing about the pile."""
    return bool(word.strip("_.")) and all(ch.isalnum() or ch in "_." for ch in word)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def chunk_key(path: str, sha256: str, ordinal: int) -> str:
    digest = hashlib.sha256((path + "\0" + sha256).encode()).hexdigest()
    return f"{digest[:16]}:{ordinal}"


class Pile:
    """A connection to pile.db; each file's change is one transaction."""

    def __init__(self, path: Path):
        self.path = path
        self._vectors: tuple | None = None  # (the pile's state, chunk ids, their vectors): nearest()'s cache
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:  # only then: opening a current pile writes nothing (readers stay readers)
            self._drop_all()
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.codec = Codec.of(self.db, path)  # an exported index packs texts and vectors (data.index); a pile does not
        if self.codec is not None:
            self.db.create_function("chunk_text", 1, self.codec.text, deterministic=True)
        self._text = "c.text" if self.codec is None else "chunk_text(c.text)"
        self._chunk_sql = ("SELECT c.id, c.key, c.doc_id, d.path, d.sha256, c.start_char, c.end_char, c.locator,"
                           f" {self._text}, d.format, c.topic_id FROM chunks c JOIN documents d ON d.id=c.doc_id"
                           " WHERE d.status='ok'")

    def _drop_all(self) -> None:
        """An older pile: drop everything (it is rebuilt from the sources)."""
        rows = self.db.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table','trigger','index')"
            " AND name NOT LIKE 'sqlite_%'").fetchall()
        shadows = {n for t, n in rows if t == "table" and n.startswith("chunks_fts_")}
        with self.db:
            for kind in ("trigger", "index", "table"):
                for t, n in rows:
                    if t == kind and n not in shadows and not n.startswith("sqlite_autoindex"):
                        self.db.execute(f'DROP {kind.upper()} IF EXISTS "{n}"')

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

    # -- documents ---------------------------------------------------------
    def document(self, path: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM documents WHERE path=?", (path,)).fetchone()

    def replace_document(self, path: str, sha256: str, fmt: str, converter: str, size: int, text: str,
                         chunks: list[dict], *, parent: str | None = None, relation: str = "",
                         warnings: list[str] | None = None, meta: dict | None = None,
                         signatures: list[bytes | None] | None = None, status: str = "ok",
                         tables: list[Table] | None = None, table_notes: list[str] | None = None) -> int:
        """Insert or replace a document, its chunks, its tables and everything it contained, in one
        transaction. A table's `chunks` are ordinals into `chunks`."""
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE path=? OR path LIKE ? ESCAPE '\\'",
                       (path, _like_prefix(path + "!/")))
            parent_id = None
            if parent is not None:
                row = db.execute("SELECT id FROM documents WHERE path=?", (parent,)).fetchone()
                parent_id = row[0] if row else None
            cur = db.execute(
                "INSERT INTO documents(path, sha256, format, converter, size, n_chars, text, parent_id, relation,"
                " warnings, meta, status, table_notes, ingested_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (path, sha256, fmt, converter, size, len(text), text, parent_id, relation,
                 json.dumps(warnings or []), json.dumps(meta or {}, default=str), status,
                 json.dumps(table_notes or [], ensure_ascii=False), now()),
            )
            doc_id = cur.lastrowid
            sigs = signatures or [None] * len(chunks)
            db.executemany(
                "INSERT INTO chunks(key, doc_id, ord, start_char, end_char, n_tokens, locator, text, minhash)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [(chunk_key(path, sha256, i), doc_id, i, c["start"], c["end"], c["n_tokens"], c["locator"],
                  text[c["start"]:c["end"]], sig) for i, (c, sig) in enumerate(zip(chunks, sigs))],
            )
            for n, t in enumerate(tables or [], 1):
                table_id = db.execute("INSERT INTO tables(doc_id, ord, name, header) VALUES (?,?,?,?)",
                                      (doc_id, n, t.name, json.dumps(t.header, ensure_ascii=False))).lastrowid
                placed = t.chunks or [None] * len(t.rows)
                db.executemany("INSERT INTO table_rows(table_id, ord, locator, cells, chunk_ord) VALUES (?,?,?,?,?)",
                               [(table_id, k, loc, json.dumps(cells, ensure_ascii=False), at)
                                for k, (loc, cells, at) in enumerate(zip(t.locators, t.rows, placed), 1)])
        return doc_id

    def set_status(self, path: str, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE documents SET status=? WHERE path=?", (status, path))

    def mark_gone(self, paths: list[str]) -> None:
        """Sources that disappeared: their chunks go, the document row stays as 'gone'."""
        with self.transaction() as db:
            for p in paths:
                db.execute("DELETE FROM documents WHERE path LIKE ? ESCAPE '\\'", (_like_prefix(p + "!/"),))
                db.execute("DELETE FROM chunks WHERE doc_id IN (SELECT id FROM documents WHERE path=?)", (p,))
                db.execute("DELETE FROM tables WHERE doc_id IN (SELECT id FROM documents WHERE path=?)", (p,))
                db.execute("UPDATE documents SET status='gone', dup_of=NULL WHERE path=?", (p,))

    def log(self, path: str, action: str, detail: str = "") -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO ingest_log(at, path, action, detail) VALUES (?,?,?,?)", (now(), path, action, detail))

    def live_paths(self, top_level_only: bool = True) -> list[str]:
        sql = "SELECT path FROM documents WHERE status!='gone'" + (" AND parent_id IS NULL" if top_level_only else "")
        return [r[0] for r in self.db.execute(sql + " ORDER BY path")]

    def documents(self) -> list[sqlite3.Row]:
        """Live documents in path order: id, path, sha256, format, parent_id and table_notes (a JSON list)."""
        return self.db.execute("SELECT id, path, sha256, format, parent_id, table_notes FROM documents"
                               " WHERE status='ok' ORDER BY path").fetchall()

    def snapshot(self) -> list[tuple[str, str]]:
        """(path, sha256) of every live document: what later stages depend on."""
        return [tuple(r) for r in self.db.execute("SELECT path, sha256 FROM documents WHERE status='ok' ORDER BY path")]

    # -- duplicates, embeddings, topics --------------------------------------
    def chunk_signatures(self) -> list[tuple[int, bytes | None, str]]:
        return [tuple(r) for r in self.db.execute(
            "SELECT c.id, c.minhash, c.text FROM chunks c JOIN documents d ON d.id=c.doc_id"
            " WHERE d.status='ok' ORDER BY d.path, c.ord")]

    def set_duplicates(self, table: str, rows: list[tuple[int, int, str, float]]) -> None:
        """Record (item, of, method, similarity); everything else is marked not a duplicate."""
        assert table in ("chunks", "documents")
        with self.transaction() as db:
            db.execute(f"UPDATE {table} SET dup_of=NULL, dup_method=NULL, dup_similarity=NULL")
            db.executemany(f"UPDATE {table} SET dup_of=?, dup_method=?, dup_similarity=? WHERE id=?",
                           [(of, method, sim, item) for item, of, method, sim in rows])

    def chunks_without_embedding(self) -> list[tuple[int, str]]:
        return [tuple(r) for r in self.db.execute(
            "SELECT c.id, c.text FROM chunks c JOIN documents d ON d.id=c.doc_id"
            " WHERE d.status='ok' AND c.embedding IS NULL AND c.dup_of IS NULL ORDER BY c.id")]

    def set_embeddings(self, rows: list[tuple[int, bytes]]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE chunks SET embedding=? WHERE id=?", [(b, i) for i, b in rows])

    def embeddings(self, ids: list[int] | None = None) -> tuple[list[int], list[bytes]]:
        """(chunk ids, embedding blobs) of live chunks, all of them or only `ids`."""
        sql = ("SELECT c.id, c.embedding FROM chunks c JOIN documents d ON d.id=c.doc_id"
               " WHERE d.status='ok' AND c.embedding IS NOT NULL")
        if ids is None:
            rows = self.db.execute(sql + " ORDER BY c.id").fetchall()
        else:
            rows = []
            for i in range(0, len(ids), 900):
                part = ids[i:i + 900]
                rows += self.db.execute(sql + f" AND c.id IN ({','.join('?' * len(part))})", part).fetchall()
            rows.sort(key=lambda r: r[0])
        return [r[0] for r in rows], [r[1] for r in rows]

    def texts(self, ids: list[int]) -> list[str]:
        found = {}
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            q = f"SELECT c.id, {self._text} FROM chunks c WHERE c.id IN ({','.join('?' * len(part))})"
            found.update(dict(self.db.execute(q, part).fetchall()))
        return [found[i] for i in ids]

    def set_topics(self, topics: list[dict], assignment: dict[int, int], embed_model: str) -> None:
        """Replace all topics: dicts with id, label, terms, size, examples (chunk keys)."""
        with self.transaction() as db:
            db.execute("DELETE FROM topics")
            db.execute("UPDATE chunks SET topic_id=NULL")
            db.executemany("INSERT INTO topics(id, label, terms, size, examples, embed_model) VALUES (?,?,?,?,?,?)",
                           [(t["id"], t["label"], json.dumps(t["terms"]), t["size"], json.dumps(t["examples"]),
                             embed_model) for t in topics])
            db.executemany("UPDATE chunks SET topic_id=? WHERE id=?", [(t, c) for c, t in assignment.items()])

    def topics(self) -> list[dict]:
        return [{"id": r["id"], "label": r["label"], "terms": json.loads(r["terms"]), "size": r["size"],
                 "examples": json.loads(r["examples"])}
                for r in self.db.execute("SELECT * FROM topics ORDER BY size DESC, id")]

    # -- reading -------------------------------------------------------------
    def stats(self) -> dict:
        q = self.db.execute
        by_format = {r[0]: {"documents": r[1], "chunks": r[2]} for r in q(
            "SELECT d.format, count(DISTINCT d.id), count(c.id) FROM documents d LEFT JOIN chunks c ON c.doc_id=d.id"
            " WHERE d.status='ok' GROUP BY d.format ORDER BY d.format")}
        return {
            "documents": q("SELECT count(*) FROM documents WHERE status='ok'").fetchone()[0],
            "gone": q("SELECT count(*) FROM documents WHERE status='gone'").fetchone()[0],
            "chunks": q("SELECT count(*) FROM chunks").fetchone()[0],
            "tokens": q("SELECT coalesce(sum(n_tokens),0) FROM chunks").fetchone()[0],
            "chars": q("SELECT coalesce(sum(n_chars),0) FROM documents WHERE status='ok'").fetchone()[0],
            "duplicate_documents": q("SELECT count(*) FROM documents WHERE status='ok' AND dup_of IS NOT NULL").fetchone()[0],
            "duplicate_chunks": q("SELECT count(*) FROM chunks WHERE dup_of IS NOT NULL").fetchone()[0],
            "embedded_chunks": q("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL").fetchone()[0],
            "topics": q("SELECT count(*) FROM topics").fetchone()[0],
            "by_format": by_format,
        }

    def chunks(self, unique: bool = False) -> list[Chunk]:
        """Live chunks in document order; unique=True leaves out duplicates of other chunks."""
        sql = self._chunk_sql + (" AND c.dup_of IS NULL" if unique else "")
        return [Chunk(*r) for r in self.db.execute(sql + " ORDER BY d.path, c.ord")]

    def chunk(self, key: str) -> Chunk | None:
        r = self.db.execute(self._chunk_sql + " AND c.key=?", (key,)).fetchone()
        return Chunk(*r) if r else None

    def chunks_by_id(self, ids: list[int]) -> list[Chunk]:
        out = {}
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            for r in self.db.execute(self._chunk_sql + f" AND c.id IN ({','.join('?' * len(part))})", part):
                out[r[0]] = Chunk(*r)
        return [out[i] for i in ids if i in out]

    def search(self, query: str, limit: int = 20) -> list[tuple[Chunk, float]]:
        """FTS5 search, best first; the query is reduced to plain words joined by OR."""
        words = [w for w in "".join(ch if ch.isalnum() else " " for ch in query).split() if len(w) > 1]
        if not words:
            return []
        return self._matching(" OR ".join(f'"{w}"' for w in dict.fromkeys(words)), "", (), limit)

    def holding(self, word: str, limit: int = 20) -> list[tuple[Chunk, float]]:
        """Live chunks whose text holds `word` (a run of letters, digits and underscores, dots between:
        `v2.1`) as it is written, any case, best by BM25 first. FTS5 splits `max_connections` and `v2.1`
        into two words, so it finds them as a phrase; LIKE keeps the chunks where they stand joined as
        `word` spells them."""
        if not findable(word):
            return []
        return self._matching(f'"{word}"', f" AND {self._text} LIKE ? ESCAPE '\\'", (_like_infix(word),), limit)

    def _matching(self, match: str, where: str, args: tuple, limit: int) -> list[tuple[Chunk, float]]:
        rows = self.db.execute(
            "SELECT c.id, c.key, c.doc_id, d.path, d.sha256, c.start_char, c.end_char, c.locator,"
            f" {self._text}, d.format, c.topic_id, bm25(chunks_fts) AS score"
            " FROM chunks_fts JOIN chunks c ON c.id=chunks_fts.rowid"
            f" JOIN documents d ON d.id=c.doc_id WHERE chunks_fts MATCH ? AND d.status='ok'{where}"
            " ORDER BY score LIMIT ?",
            (match, *args, limit),
        ).fetchall()
        return [(Chunk(*r[:11]), -r[11]) for r in rows]

    def nearest(self, vector, limit: int = 20) -> list[tuple[Chunk, float]]:
        """Embedding search: live chunks by cosine similarity to `vector`, best first."""
        import numpy as np

        from .embed import from_blobs

        # The vectors are read once and kept until the pile changes (a commit by this connection or,
        # PRAGMA data_version, by another: an ingest while a model serves), not read again per query.
        state = (self.db.execute("PRAGMA data_version").fetchone()[0], self.db.total_changes)
        if self._vectors is None or self._vectors[0] != state:
            ids, blobs = self.embeddings()
            if not ids:
                mat = None
            elif self.codec is None:  # a pile: float16
                mat = from_blobs(blobs, len(blobs[0]) // 2)
            else:  # an exported index: packed (data.index)
                mat = self.codec.vectors(blobs)
            self._vectors = (state, ids, mat)
        _, ids, mat = self._vectors
        if not ids:
            return []
        sims = mat @ np.asarray(vector, dtype=np.float32)
        top = np.argsort(-sims)[:limit]
        chunks = {c.id: c for c in self.chunks_by_id([ids[i] for i in top])}
        return [(chunks[ids[i]], float(sims[i])) for i in top if ids[i] in chunks]

    # -- tables --------------------------------------------------------------
    def tables(self, doc_id: int) -> list[PileTable]:
        """A document's tables in order, each row with the chunk that holds it and that chunk's topic."""
        rows = self.db.execute(
            "SELECT t.ord AS n, t.name, t.header, r.locator, r.cells, c.key, c.topic_id FROM tables t"
            " JOIN table_rows r ON r.table_id=t.id LEFT JOIN chunks c ON c.doc_id=t.doc_id AND c.ord=r.chunk_ord"
            " WHERE t.doc_id=? ORDER BY t.ord, r.ord", (doc_id,))
        out: list[PileTable] = []
        for r in rows:
            if not out or out[-1].index != r["n"]:
                out.append(PileTable(r["n"], r["name"], json.loads(r["header"]), [], [], [], []))
            t = out[-1]
            t.rows.append(json.loads(r["cells"]))
            t.locators.append(r["locator"])
            t.chunks.append(r["key"])
            t.topics.append(r["topic_id"])
        return out

    def paths_with_tables(self, limit: int) -> list[str]:
        """The first `limit` live documents, by path, that hold a table."""
        return [r[0] for r in self.db.execute(
            "SELECT path FROM documents d WHERE status='ok' AND EXISTS (SELECT 1 FROM tables t WHERE t.doc_id=d.id)"
            " ORDER BY path LIMIT ?", (limit,))]

    def log_rows(self, limit: int = 100) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM ingest_log ORDER BY id DESC LIMIT ?", (limit,))]


def _like_prefix(prefix: str) -> str:
    return _like_escaped(prefix) + "%"


def _like_infix(text: str) -> str:
    return "%" + _like_escaped(text) + "%"


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
