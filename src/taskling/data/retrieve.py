"""Retrieval for the teacher: the pile chunks most relevant to an input, by words and by meaning.

    hits = retrieve(pile, "What does SQLSTATE 23505 mean?", k=3, embedder=emb)

FTS5 (BM25) and embedding cosine each rank the pile; reciprocal rank fusion (RRF, k=60)
merges the two lists, so a chunk that is near the top of either comes first and one near
the top of both comes before it. Without embeddings (ingest.embed: false) it is FTS5 alone.

For task types that check it (TaskType.retrieval_check: answer, extract), evaluate's
`teacher-retrieval` system asks the teacher with these chunks in its prompt
(`tasks.with_context`), then checks its answer against them (TaskType.check_retrieved). So
the report shows what the teacher knows *with* the documents, the bar the student, which
answers without them, has to reach.
"""
from __future__ import annotations

from .pile import Chunk, Pile

# Words that match nearly every chunk: left out of the FTS5 query (BM25 would rank on them when a
# question shares no content word with the documents, and that ranking would count in the fusion).
STOP = frozenset("""a an and are as at be by can do does for from how i in is it its me my of on or so that the
this to was what when where which who why will with you your""".split())
RRF_K = 60          # the usual constant: rank 1 scores 1/61, rank 10 scores 1/70
CANDIDATES = 30     # each ranking's depth before fusion


def retrieve(pile: Pile, query: str, k: int = 3, embedder=None) -> list[Chunk]:
    """The `k` chunks nearest to `query` (FTS5 and embeddings fused by reciprocal rank)."""
    if k <= 0 or not query.strip():
        return []
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    content = " ".join(w for w in query.split() if w.lower().strip("?,.!:;\"'()") not in STOP) or query
    rankings = [pile.search(content, CANDIDATES)]
    if embedder is not None:
        rankings.append(pile.nearest(embedder.encode([query])[0], CANDIDATES))
    for ranking in rankings:
        for rank, (c, _) in enumerate(ranking):
            scores[c.key] = scores.get(c.key, 0.0) + 1.0 / (RRF_K + rank + 1)
            chunks[c.key] = c
    # equal fused scores (first by words and first by meaning): meaning decides, as BM25 over a
    # query without a shared content word ranks on its stop words
    by_meaning = {c.key: r for r, (c, _) in enumerate(rankings[-1])} if embedder is not None else {}
    best = sorted(scores, key=lambda key: (-round(scores[key], 12), by_meaning.get(key, CANDIDATES), key))[:k]
    return [chunks[key] for key in best]
