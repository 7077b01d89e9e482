"""Ingestion on the cluster: files converted and chunks embedded by workers on the nodes.

The driver reads each file (so nodes need no access to the sources), sends
cluster.ingest_files of them per shard, and stores what comes back in the
files' own order, so the pile is the one a single machine would build: the
same documents, chunk ids and topics. Embeddings come back in shards of
cluster.embed_batch chunks and are stored as they arrive (a kill loses at
most the shards in flight).
"""
from __future__ import annotations

from pathlib import Path

from . import worker_threads
from .pool import Shard, in_order
from .workers import EmbedWorker, IngestWorker


def convert_files(ctx, ing, files: list[Path], snapshot: list[tuple], progress, task) -> dict:
    """Convert and chunk `files` on the cluster; `ing` (data.ingest.Ingester) stores them in order."""
    cc = ctx.cluster.ccfg
    pool = ctx.cluster.pool("ingest", IngestWorker, (ing.cfg.model_dump(mode="json"),))
    k = cc.ingest_files
    shards = [Shard(f"files-{i:06d}", len(files[i:i + k]), i) for i in range(0, len(files), k)]

    loaded: dict[str, list] = {}  # a shard sent again (its node died) is not read, or judged, twice

    def load(shard: Shard) -> list:
        """Read the shard's files that need converting (unchanged, unreadable and too large are settled here)."""
        if shard.id not in loaded:
            work = []
            at = slice(shard.payload, shard.payload + k)
            for f, (rel, sha, size) in zip(files[at], snapshot[at]):
                data = ing.read(f, rel, sha, size)
                if data is not None:
                    work.append((rel, data, sha))
            loaded[shard.id] = work
        return loaded[shard.id]

    def store(_: int, prepared: list) -> None:
        for items in prepared:
            ing.store(items)

    ordered = in_order(len(shards), store)

    def done(shard: Shard, prepared: list) -> None:
        loaded.pop(shard.id, None)
        ordered(shard.payload // k, prepared)
        progress.advance(task, shard.items)
        progress.update(task, info=f"{pool.size} nodes converting")

    try:
        pool.map(shards, done, load=load)
        ordered.check()
        return pool.report()
    finally:
        pool.close()


def embed(ctx, cfg, pile, todo: list[tuple[int, str]], progress, task) -> dict:
    """Embed `todo` ([(chunk id, text)]) on the cluster and store the vectors."""
    from ..data.embed import to_blob

    cc = ctx.cluster.ccfg
    pool = ctx.cluster.pool("embed", EmbedWorker, (cfg.ingest.embed_model, worker_threads(cc.cpus_per_worker),
                                                   cfg.ingest.embed_max_tokens))
    k = cc.embed_batch
    shards = [Shard(f"chunks-{i:07d}", len(todo[i:i + k]), i) for i in range(0, len(todo), k)]
    done_n = [0]

    def done(shard: Shard, vecs) -> None:
        part = todo[shard.payload:shard.payload + k]
        pile.set_embeddings([(cid, to_blob(v)) for (cid, _), v in zip(part, vecs)])
        done_n[0] += len(part)
        progress.update(task, completed=done_n[0], info=f"{pool.size} nodes embedding")

    try:
        pool.map(shards, done, load=lambda s: [t for _, t in todo[s.payload:s.payload + k]])
        return pool.report()
    finally:
        pool.close()
