"""Organise the pile after its files changed: duplicates, embeddings, topics.

  duplicates  exact (normalised text) and near (MinHash LSH) at document and
              chunk level; recorded with what they duplicate, never deleted.
              Later stages sample unique chunks only.
  embeddings  all-MiniLM-L6-v2 (embedded, offline) for unique chunks that
              have none yet, so an incremental ingest embeds only what is new;
              a duplicate is represented by the chunk it copies.
  topics      the unique chunks clustered; each topic gets a readable label
              from its distinctive terms, a size and example chunks. Later
              stages spread their samples over topics.
"""
from __future__ import annotations

import time


from ..core.config import Config
from .pile import Pile
from ..core.progress import bar
from ..core.workspace import Context

DOC_CHARS_FOR_DEDUP = 200_000  # longer documents are compared on their first 200k characters


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
        from .embed import Embedder, to_blob

        t0 = time.perf_counter()
        emb = Embedder(cfg.ingest.embed_model, threads=ctx.threads, max_tokens=cfg.ingest.embed_max_tokens)
        with bar(ctx.console) as progress:
            task = progress.add_task("embed", total=len(todo), info=emb.name)
            if getattr(ctx, "cluster", None) is not None:  # on the nodes, stored here as shards come back
                from ..cluster.ingest import embed

                out["cluster"] = embed(ctx, cfg, pile, todo, progress, task)
            else:
                step = 2048  # store as we go: a kill loses at most one slice
                for i in range(0, len(todo), step):
                    part = todo[i:i + step]
                    base = i
                    vecs = emb.encode([t for _, t in part],
                                      progress=lambda n, b=base: progress.update(task, completed=b + n))
                    pile.set_embeddings([(cid, to_blob(v)) for (cid, _), v in zip(part, vecs)])
        secs = time.perf_counter() - t0
        timings["embed_seconds"] = round(secs, 2)
        timings["embed_chunks_per_s"] = round(len(todo) / max(secs, 1e-9), 1)
    out["embedded_now"] = len(todo)

    t0 = time.perf_counter()
    out["topics"] = cluster_topics(cfg, pile)
    timings["topics_seconds"] = round(time.perf_counter() - t0, 2)
    return out | {"timings": timings}


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
