"""Organise the pile after its files changed: duplicates, embeddings, topics.

  duplicates  exact (normalised text) and near (MinHash LSH) at document and
              chunk level; recorded with what they duplicate, never deleted.
              Later stages sample unique chunks only.
  embeddings  all-MiniLM-L6-v2 (embedded, offline) for unique chunks that
              have none yet, so an incremental ingest embeds only what is new;
              a duplicate is represented by the chunk it copies. The executor's
              workers embed (`EmbedWorker`: here, or on a cluster's nodes) and
              the vectors are stored here as each slice comes back.
  topics      the unique chunks clustered; each topic gets a readable label
              from its distinctive terms, a size and example chunks. Later
              stages spread their samples over topics.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from ..core.config import Config
from ..core.executor import Shard, failure
from ..core.progress import bar
from ..core.workspace import Context
from .pile import Pile

DOC_CHARS_FOR_DEDUP = 200_000  # longer documents are compared on their first 200k characters
SLICE = 2048  # chunks embedded and stored at a time in one process: a kill loses at most one slice


class EmbedWorker:
    """Embeds chunk texts wherever the executor runs it. `progress(n)` (only in this process: a
    callback cannot travel to a node) hears how many texts of the current slice are done."""

    def __init__(self, model: str, threads: int | None, max_tokens: int | None,
                 progress: Callable[[int], None] | None = None):
        self.error, self.progress = None, progress
        try:
            from .embed import Embedder

            self.emb = Embedder(model, threads=threads, max_tokens=max_tokens)
        except Exception as e:  # reported by ready()
            self.error = failure(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"pid": os.getpid()}

    def run(self, texts: list[str]):
        return self.emb.encode(texts, progress=self.progress)


def organise(cfg: Config, pile: Pile, ctx: Context) -> dict:
    from . import dedup

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    docs = [(r[0], r[1][:DOC_CHARS_FOR_DEDUP]) for r in pile.db.execute(
        "SELECT id, text FROM documents WHERE status='ok' AND n_chars > 0 ORDER BY path")]
    doc_dups = dedup.find_duplicates(docs, threshold=cfg.ingest.dedup_threshold)
    pile.set_duplicates("documents", [(d.item, d.of, d.method, round(d.similarity, 4)) for d in doc_dups])
    # Chunks keep their MinHash signature in the pile, so a re-ingest hashes only new chunks.
    index = dedup.DedupIndex(threshold=cfg.ingest.dedup_threshold)  # fixed seed: stored signatures stay comparable
    chunk_dups, new_sigs = [], []
    for cid, sig, text in pile.chunk_signatures():
        if sig is None:
            sig = index.signature(text)
            new_sigs.append((sig, cid))
        dup = index.check(cid, text, signature=sig)
        if dup is not None:
            chunk_dups.append(dup)
    with pile.transaction() as db:
        db.executemany("UPDATE chunks SET minhash=? WHERE id=?", new_sigs)
    pile.set_duplicates("chunks", [(d.item, d.of, d.method, round(d.similarity, 4)) for d in chunk_dups])
    timings["dedup_seconds"] = round(time.perf_counter() - t0, 2)
    out: dict = {"duplicate_documents": len(doc_dups), "duplicate_chunks": len(chunk_dups)}
    if not cfg.ingest.embed:
        return out | {"timings": timings}

    todo = pile.chunks_without_embedding()
    if todo:
        t0 = time.perf_counter()
        spread = embed(cfg, ctx, pile, todo)
        if spread is not None:
            out["cluster"] = spread
        secs = time.perf_counter() - t0
        timings["embed_seconds"] = round(secs, 2)
        timings["embed_chunks_per_s"] = round(len(todo) / max(secs, 1e-9), 1)
    out["embedded_now"] = len(todo)

    t0 = time.perf_counter()
    out["topics"] = cluster_topics(cfg, pile)
    timings["topics_seconds"] = round(time.perf_counter() - t0, 2)
    return out | {"timings": timings}


def embed(cfg: Config, ctx: Context, pile: Pile, todo: list[tuple[int, str]]) -> dict | None:
    """Embed `todo` ([(chunk id, text)]) with the executor's workers and store the vectors as each slice
    comes back. Returns what each node did when they were a cluster's."""
    from .embed import resolve_embedder, to_blob

    ex = ctx.executor
    k = cfg.cluster.embed_batch if ex.distributed else SLICE
    shards = [Shard(f"chunks-{i:07d}", len(todo[i:i + k]), i) for i in range(0, len(todo), k)]
    done_n = [0]
    with bar(ctx.console) as progress:
        task = progress.add_task("embed", total=len(todo), info=resolve_embedder(cfg.ingest.embed_model)[0])

        def done(shard: Shard, vecs) -> None:
            part = todo[shard.payload:shard.payload + k]
            pile.set_embeddings([(cid, to_blob(v)) for (cid, _), v in zip(part, vecs)])
            done_n[0] += len(part)
            progress.update(task, completed=done_n[0])

        tick = None if ex.distributed else (lambda n: progress.update(task, completed=done_n[0] + n))
        pool = ex.pool("embed", EmbedWorker, (cfg.ingest.embed_model, ex.worker_threads(ctx.threads),
                                              cfg.ingest.embed_max_tokens, tick))
        try:
            pool.map(shards, done, load=lambda s: [t for _, t in todo[s.payload:s.payload + k]])
            return pool.report()
        finally:
            pool.close()


def cluster_topics(cfg: Config, pile: Pile) -> int:
    """Cluster the unique chunks; duplicates join the topic of what they copy."""
    from .embed import from_blobs
    from .topics import cluster

    ids, blobs = pile.embeddings()
    dup_of = dict(pile.db.execute("SELECT id, dup_of FROM chunks WHERE dup_of IS NOT NULL").fetchall())
    keep = [k for k, i in enumerate(ids) if i not in dup_of]
    if not keep:
        pile.set_topics([], {}, cfg.ingest.embed_model)
        return 0
    uids = [ids[k] for k in keep]
    vectors = from_blobs([blobs[k] for k in keep], len(blobs[0]) // 2)
    texts = pile.texts(uids)
    topics = cluster(texts, vectors, k=cfg.ingest.topics, seed=cfg.seed)
    assignment: dict[int, int] = {}
    rows = []
    example_ids = [uids[m] for t in topics for m in t.examples]
    keys = {c.id: c.key for c in pile.chunks_by_id(example_ids)}
    for t in topics:
        for m in t.members:
            assignment[uids[m]] = t.id
        rows.append({"id": t.id, "label": t.label, "terms": list(t.terms), "size": t.size,
                     "examples": [keys[uids[m]] for m in t.examples if uids[m] in keys]})
    for item, of in dup_of.items():
        if of in assignment:
            assignment[item] = assignment[of]
    sizes = {}
    for t in assignment.values():
        sizes[t] = sizes.get(t, 0) + 1
    for row in rows:
        row["size"] = sizes.get(row["id"], 0)  # duplicates count where they belong
    pile.set_topics(rows, assignment, cfg.ingest.embed_model)
    return len(rows)
