"""Automatic label sources for classify (label.auto): votes taskling mines itself from the label
set, the user's examples and the pile, with no rule written by hand. Plain numpy over unit
vectors of one embedder, so each source can be checked on a synthetic pile.

  embedding  label prototypes (a label's name and description, the task's examples of it and the
             label-conditioned inputs the teacher wrote for it) re-estimated on the pile: each
             chunk goes to its nearest prototype and each prototype moves to the mean of its
             chunks, the seed kept in as `anchor` chunks' worth (seeded spherical k-means). An
             input's vote is its nearest refined prototype; it abstains when its margin over the
             runner-up is among the lowest `abstain` share of the pile's own margins (calibrated
             on the pile, never on gold).
  knn        the input's k nearest pile chunks vote with their refined-prototype labels, weighted
             by similarity; it abstains when the winner holds under `min_share` of the weight.
  retrieval  the input's nearest pile chunks vote with the label their document (or, for a
             document without one, their topic) is associated with: the label whose search pool
             (what label-conditioned generation draws from) holds most of the document's chunks,
             and the labels of the task examples whose nearest chunks lie in it.

`PileSpace.load` reads the pile's vectors; `Space.fit` builds the prototypes and the chunk labels
once per curate; `Space.votes` gives every source's votes on a batch of input vectors.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

EMBEDDING, KNN, RETRIEVAL = "embedding", "knn", "retrieval"


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass
class PileSpace:
    """The pile's unique chunks as unit vectors, with each chunk's key, document and topic."""

    keys: list[str]
    docs: list[str]
    topics: list[int | None]
    vectors: np.ndarray

    @classmethod
    def load(cls, pile, dim: int, min_words: int = 0) -> "PileSpace | None":
        """The pile's embedded, unique chunks of at least `min_words` words; None without vectors."""
        from ..data.embed import from_blobs

        ids, blobs = pile.embeddings()
        if not ids:
            return None
        chunks = {c.id: c for c in pile.chunks_by_id(ids)}
        keep = [j for j, i in enumerate(ids) if i in chunks and len(chunks[i].text.split()) >= min_words]
        if not keep:
            return None
        V = from_blobs([blobs[j] for j in keep], dim)
        cs = [chunks[ids[j]] for j in keep]
        return cls([c.key for c in cs], [c.path for c in cs], [c.topic_id for c in cs], unit(V))

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


def prototypes(seeds: Sequence[np.ndarray], weights: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """One unit vector per label from its seed vectors (rows): their (weighted) mean."""
    out = []
    for j, S in enumerate(seeds):
        S = np.atleast_2d(S)
        w = np.ones(len(S)) if weights is None else np.asarray(weights[j], dtype=np.float64)
        out.append((S * w[:, None]).sum(axis=0))
    return unit(np.stack(out))


def margins(S: np.ndarray) -> np.ndarray:
    """Per row: best similarity minus the runner-up's."""
    if S.shape[1] < 2:
        return np.full(len(S), np.inf)
    top2 = np.partition(S, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def refine(P: np.ndarray, V: np.ndarray, iters: int = 3, anchor: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes re-estimated on the pile (seeded spherical k-means): (centroids, chunk labels).
    A label whose prototype wins no chunk keeps its seed."""
    C = P.copy()
    assign = (V @ C.T).argmax(axis=1) if len(V) else np.zeros(0, dtype=int)
    for _ in range(iters):
        sums = np.zeros_like(C)
        np.add.at(sums, assign, V)
        new = unit(sums + anchor * P)
        if np.allclose(new, C, atol=1e-6):
            break
        C = new
        assign = (V @ C.T).argmax(axis=1)
    return C, assign


def knn_scores(X: np.ndarray, V: np.ndarray, labels: np.ndarray, k_labels: int, k: int,
               own: Sequence[int | None] | None = None, block: int = 512) -> np.ndarray:
    """Per input, per label: the similarity-weighted share of its k nearest labelled chunks (label -1:
    no label, not counted); an input's own chunk (`own`) is left out of its neighbours."""
    out = np.zeros((len(X), k_labels))
    ok = labels >= 0
    if not ok.any() or not len(X):
        return out
    Vl, ll = V[ok], labels[ok]
    remap = np.full(len(V), -1)
    remap[np.nonzero(ok)[0]] = np.arange(int(ok.sum()))
    kk = min(k + 1, len(Vl))
    for b in range(0, len(X), block):
        S = X[b:b + block] @ Vl.T
        if own is not None:
            for r, o in enumerate(own[b:b + block]):
                if o is not None and remap[o] >= 0:
                    S[r, remap[o]] = -np.inf
        top = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk < Vl.shape[0] else np.argsort(-S, axis=1)[:, :kk]
        for r in range(len(top)):
            idx = top[r][np.argsort(-S[r, top[r]])][:k]
            sims = np.clip(S[r, idx], 0.0, None)
            sims = np.where(np.isfinite(sims), sims, 0.0)
            np.add.at(out[b + r], ll[idx], sims)
    tot = out.sum(axis=1, keepdims=True)
    return np.divide(out, tot, out=np.zeros_like(out), where=tot > 0)


def associations(space: PileSpace, n_labels: int, pools: dict[int, list[str]],
                 examples: Sequence[tuple[np.ndarray, int]] = (), per_example: int = 10,
                 example_weight: float = 2.0, purity: float = 0.5) -> np.ndarray:
    """Each pile chunk's label from its document's (else its topic's) association with the labels:
    the share of each label's search pool in the document, plus the documents of the chunks nearest
    to each task example. -1 where neither the document nor the topic leans to one label."""
    doc_w: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(n_labels))
    top_w: dict[int | None, np.ndarray] = defaultdict(lambda: np.zeros(n_labels))
    idx = space.index()
    for lab, keys in pools.items():
        hits = [idx[k] for k in keys if k in idx]
        for i in hits:  # each pool weighs 1 in all, so a label with a long pool does not win by length
            doc_w[space.docs[i]][lab] += 1.0 / len(hits)
            top_w[space.topics[i]][lab] += 1.0 / len(hits)
    for vec, lab in examples:
        near = np.argsort(-(space.vectors @ vec))[:per_example]
        for i in near:
            doc_w[space.docs[i]][lab] += example_weight / per_example
            top_w[space.topics[i]][lab] += example_weight / per_example

    def lean(w: np.ndarray | None) -> int:
        if w is None or w.sum() <= 0:
            return -1
        j = int(w.argmax())
        return j if w[j] / w.sum() >= purity else -1
    doc_lab = {d: lean(w) for d, w in doc_w.items()}
    top_lab = {t: lean(w) for t, w in top_w.items() if t is not None}
    out = np.full(len(space.keys), -1)
    for i, (d, t) in enumerate(zip(space.docs, space.topics)):
        out[i] = doc_lab.get(d, -1)
        if out[i] < 0:
            out[i] = top_lab.get(t, -1)
    return out


@dataclass
class Space:
    """The fitted automatic sources: refined prototypes, the pile's labels under them and under the
    document/topic association, and the embedding source's abstain threshold."""

    labels: list[str]
    space: PileSpace
    seeds: np.ndarray
    centroids: np.ndarray
    chunk_labels: np.ndarray         # refined-prototype label of each pile chunk
    assoc_labels: np.ndarray         # document/topic association label of each pile chunk (-1: none)
    threshold: float                 # the embedding source's margin below which it abstains
    k: int = 10
    min_share: float = 0.5
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, labels: list[str], space: PileSpace, seeds: Sequence[np.ndarray],
            seed_weights: Sequence[Sequence[float]] | None, pools: dict[int, list[str]],
            examples: Sequence[tuple[np.ndarray, int]] = (), iters: int = 3, anchor: float = 5.0,
            abstain: float = 0.1, k: int = 10) -> "Space":
        P = prototypes(seeds, seed_weights)
        C, assign = refine(P, space.vectors, iters, anchor)
        m = margins(space.vectors @ C.T)
        thr = float(np.quantile(m, abstain)) if len(m) and abstain > 0 else 0.0
        assoc = associations(space, len(labels), pools, examples)
        shares = np.bincount(assign, minlength=len(labels)) / max(len(assign), 1)
        info = {"pile_chunks": len(space.keys), "pile_share": {lab: round(float(s), 4) for lab, s in zip(labels, shares)},
                "associated_chunks": int((assoc >= 0).sum()), "abstain_margin": round(thr, 5),
                "moved": {lab: round(float(P[j] @ C[j]), 4) for j, lab in enumerate(labels)}}
        return cls(labels, space, P, C, assign, assoc, thr, k, info=info)

    def votes(self, X: np.ndarray, own: Sequence[int | None] | None = None,
              which: Sequence[str] = (EMBEDDING, KNN, RETRIEVAL)) -> list[dict[str, str]]:
        """Each source's vote on each row of X (unit vectors); a source that abstains leaves its key out."""
        out: list[dict[str, str]] = [{} for _ in range(len(X))]
        if not len(X):
            return out
        K = len(self.labels)
        if EMBEDDING in which:
            S = X @ self.centroids.T
            best, m = S.argmax(axis=1), margins(S)
            for r in range(len(X)):
                if m[r] >= self.threshold:
                    out[r][EMBEDDING] = self.labels[best[r]]
        for name, lab in ((KNN, self.chunk_labels), (RETRIEVAL, self.assoc_labels)):
            if name not in which:
                continue
            sc = knn_scores(X, self.space.vectors, lab, K, self.k, own)
            for r in range(len(X)):
                j = int(sc[r].argmax())
                if sc[r, j] >= self.min_share:
                    out[r][name] = self.labels[j]
        return out
