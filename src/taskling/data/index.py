"""The exported retrieval index: what an open-book model reads, carried beside it, small.

    size = write_index(ws.pile_db, merged / INDEX_FILE)

It is a copy of the pile in the pile's own schema (`Pile` and `Retriever` open it as they open a pile:
same chunks, same keys, same FTS5 index), holding only what the retriever reads (live documents' chunks,
locators and vectors; no document texts, tables, topics or log), and packed three ways:

- each chunk's text is zlib-compressed on its own (a chunk is read without its neighbours) against a
  dictionary of the pile's most frequent words kept in the index: about 0.39 of the text's bytes on
  the PostgreSQL and SQLite manuals, where compressing chunks alone gives 0.51;
- each vector is 4-bit (two components a byte) with a float32 scale of its own: 196 bytes for
  MiniLM's 384 dimensions instead of 768 in the pile. Within a vector the error is at most half a step
  (the largest component / 14); on the benchmark's gold questions the chunks found are the ones the
  float16 vectors find (docs/benchmarks.md);
- the FTS5 index is merged into one segment and its triggers dropped: the index is read, never
  written (`taskling ingest` updates the workspace's pile, which a served model reads first).

`index_codec` says how it is packed; its `format` row is the index's version. An index exported before
it (no `index_codec`) is a plain copy of the pile and reads as one.
"""
from __future__ import annotations

import sqlite3
import zlib
from collections import Counter
from pathlib import Path

INDEX_FILE = "index.db"  # beside the merged model (export, serving.outputs)
INDEX_FORMAT = 2
DICT_WORDS = 4000  # the pile's most frequent words, the compression dictionary (zlib reads 32 KiB of it)
CODEC_SQL = "CREATE TABLE index_codec (name TEXT PRIMARY KEY, value BLOB NOT NULL)"


class Codec:
    """How an exported index packs chunk texts and vectors (`index_codec`)."""

    def __init__(self, zdict: bytes, dim: int):
        self.zdict, self.dim = zdict, dim  # dim: the vectors' dimensions (0: the pile has none)

    @classmethod
    def of(cls, db: sqlite3.Connection, path: Path | str = "") -> "Codec | None":
        """The codec of the database `db` (at `path`): None for a pile (or an index of before, a plain copy
        of one)."""
        from ..core.errors import TasklingError

        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='index_codec'").fetchone():
            return None
        rows = dict(db.execute("SELECT name, value FROM index_codec").fetchall())
        if str(rows.get("format")) != str(INDEX_FORMAT):
            raise TasklingError(f"{path}: retrieval index format {rows.get('format')!r}, and this taskling reads "
                                f"format {INDEX_FORMAT}: export the model again with this version")
        return cls(bytes(rows["zdict"]), int(rows["dim"]))

    @classmethod
    def for_texts(cls, texts: list[str], dim: int) -> "Codec":
        """A codec for `dim`-dimensional vectors whose dictionary is the most frequent words of `texts`, the
        most frequent last (zlib reaches the end of its dictionary with the shortest distances)."""
        counts = Counter(w for t in texts for w in t.split())
        words = [w for w, _ in counts.most_common(DICT_WORDS)]
        return cls(" ".join(reversed(words)).encode()[-32768:], dim)

    def rows(self) -> list[tuple[str, bytes | str]]:
        return [("format", str(INDEX_FORMAT)), ("text", "zlib"), ("vectors", "int4"), ("dim", str(self.dim)),
                ("zdict", self.zdict)]

    # -- texts ---------------------------------------------------------------
    def pack_text(self, text: str) -> bytes:
        c = zlib.compressobj(9, zdict=self.zdict)
        return c.compress(text.encode()) + c.flush()

    def text(self, packed: bytes | str | None) -> str | None:
        """A chunk's text as written (a str passes unchanged: SQL functions see both)."""
        if not isinstance(packed, bytes):
            return packed
        d = zlib.decompressobj(zdict=self.zdict)
        return (d.decompress(packed) + d.flush()).decode()

    # -- vectors -------------------------------------------------------------
    @staticmethod
    def pack_vector(vector) -> bytes:
        """A float32 scale, then the components in -7..7 (scale units), two to a byte, low nibble first."""
        import numpy as np

        v = np.asarray(vector, dtype=np.float32).ravel()
        top = float(np.abs(v).max())
        scale = top / 7 if top > 0 else 1.0
        q = (np.clip(np.round(v / scale), -7, 7).astype(np.int8) + 8).astype(np.uint8)  # 1..15
        if len(q) % 2:
            q = np.append(q, np.uint8(8))
        return np.float32(scale).tobytes() + (q[0::2] | (q[1::2] << 4)).tobytes()

    def vectors(self, blobs: list[bytes]):
        """Many packed vectors as one float32 matrix (len(blobs) x dim)."""
        import numpy as np

        dim = self.dim
        if not blobs:
            return np.zeros((0, dim), dtype=np.float32)
        data = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), -1)
        scales = data[:, :4].copy().view("<f4")
        packed = data[:, 4:]
        q = np.empty((len(blobs), packed.shape[1] * 2), dtype=np.int8)
        q[:, 0::2] = (packed & 15).astype(np.int8) - 8
        q[:, 1::2] = (packed >> 4).astype(np.int8) - 8
        return q[:, :dim].astype(np.float32) * scales


def write_index(pile_db: Path, dest: Path, packed: bool = True) -> int:
    """The exported index of the pile at `pile_db` (the module's docstring says what it holds), written to
    `dest`; packed=False writes it as export did before format 2, a plain copy (bench/index.py's
    baseline). Returns its size in bytes."""
    dest = Path(dest)
    dest.unlink(missing_ok=True)
    src = sqlite3.connect(pile_db)
    try:
        src.execute("VACUUM INTO ?", (str(dest),))
    finally:
        src.close()
    db = sqlite3.connect(dest)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        with db:
            db.execute("DELETE FROM documents WHERE status != 'ok'")  # their chunks (and FTS rows) go with them
            for table in ("table_rows", "tables", "ingest_log", "topics"):
                db.execute(f"DELETE FROM {table}")
            db.execute("UPDATE documents SET text = '', meta = '{}', warnings = '[]', table_notes = '[]'")
            db.execute("UPDATE chunks SET minhash = NULL")
            if packed:
                pack(db)
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("VACUUM")
    finally:
        db.close()
    return dest.stat().st_size


def pack(db: sqlite3.Connection) -> None:
    """Packs the copy of a pile open in `db` (in its transaction): texts, vectors, FTS5, `index_codec`."""
    from .embed import from_blobs

    for trigger in ("chunks_ai", "chunks_ad"):  # read-only from here: packed texts would corrupt FTS
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP INDEX IF EXISTS chunks_topic")
    rows = db.execute("SELECT id, text, embedding FROM chunks").fetchall()
    dim = next((len(e) // 2 for _, _, e in rows if e is not None), 0)  # the pile's vectors: float16
    codec = Codec.for_texts([t for _, t, _ in rows], dim)
    db.execute(CODEC_SQL)
    db.executemany("INSERT INTO index_codec VALUES (?, ?)", codec.rows())
    db.executemany("UPDATE chunks SET text=?, embedding=? WHERE id=?",
                   [(codec.pack_text(t), None if e is None else codec.pack_vector(from_blobs([e], dim)), i)
                    for i, t, e in rows])
    db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")
