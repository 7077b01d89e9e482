"""Topics of a pile: k-means over the chunk embeddings, each cluster named by
the words that set it apart (class-based TF-IDF, as BERTopic does).

Why this and not something cleverer: it is deterministic for a seed, takes
seconds for 100k chunks on a CPU, and the labels are plain words from the
documents ("json_extract / fts5 / bm25"), which is what a person scanning a
report or steering generation needs.

Each Topic carries its unit-length centroid, so chunks ingested later can
be placed with `assign(vectors, centroids(topics))` without re-clustering;
re-cluster when many new chunks have arrived, since ids and labels are only
stable for the same input and seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Words of letters, digits and underscores, at least 3 long, with at least
# one letter: "json_extract", "utf8" and "sha256" stay, "2024" and "__" go.
TOKEN_PATTERN = r"(?u)\b(?=\w*[^\W\d_])\w{3,}\b"
# Instruction-prose verbs that sklearn's English list keeps but that never
# tell one topic from another ("let the bread cool", "use the flag").
EXTRA_STOP_WORDS = frozenset({"let", "lets", "use", "uses", "used", "using", "make", "makes", "need", "needs",
                              "like", "just", "want", "way", "does", "did", "doing", "add", "adds", "allow",
                              "allows", "able", "note"})
N_TERMS = 5
N_EXAMPLES = 3
_MINIBATCH_FROM = 20_000  # above this many texts, MiniBatchKMeans


@dataclass
class Topic:
    """One cluster. members and examples are indices into the texts given
    to cluster(); examples are the (up to 3) members nearest the centroid,
    nearest first; centroid is the unit-length mean direction."""
    id: int
    label: str
    terms: list[str]
    members: list[int]
    examples: list[int]
    size: int
    centroid: list[float] = field(default_factory=list, repr=False)


def default_k(n: int) -> int:
    """About sqrt(n/2) topics, 2 to 50; a single topic under 4 texts."""
    if n < 4:
        return 1 if n else 0
    return max(2, min(50, round(math.sqrt(n / 2))))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cluster(texts: list[str], vectors: np.ndarray, k: int | None = None, seed: int = 0) -> list[Topic]:
    """Topics for `texts` (row i of `vectors` embeds texts[i]), largest first
    with ids 0..k-1 in that order. `k` defaults to default_k(len(texts)) and
    is lowered to the number of distinct vectors. The same inputs and seed
    give the same topics."""
    n = len(texts)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"vectors must have one row per text: got {vectors.shape} for {n} texts")
    if n == 0:
        return []
    x = _unit(vectors)
    k = default_k(n) if k is None else k
    if k < 1:
        raise ValueError("k must be at least 1")
    k = min(k, n)
    if k > 1:
        k = min(k, len(np.unique(x.round(5), axis=0)))
    if k == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        labels = _kmeans(x, k, seed)

    # Empty clusters can only come from k-means giving up on one; drop them.
    groups = [np.flatnonzero(labels == c) for c in range(k)]
    groups = [g for g in groups if len(g)]
    groups.sort(key=lambda g: (-len(g), g[0]))
    terms = _class_terms(texts, groups)
    topics = []
    for tid, members in enumerate(groups):
        centroid = _unit(x[members].mean(axis=0))
        sims = x[members] @ centroid
        nearest = members[np.lexsort((members, -sims))][:N_EXAMPLES]
        words = terms[tid]
        topics.append(Topic(id=tid, label=" / ".join(words[:3]) or f"topic {tid}", terms=words,
                            members=members.tolist(), examples=nearest.tolist(), size=len(members),
                            centroid=[float(v) for v in centroid]))
    return topics


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels. Plain k-means (3 restarts) up to 20k texts, mini-batch
    beyond, where a full Lloyd pass over every vector per iteration starts
    to cost minutes on two cores."""
    import warnings

    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    if len(x) > _MINIBATCH_FROM:
        km = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed)
    else:
        km = KMeans(n_clusters=k, n_init=3, random_state=seed)
    with warnings.catch_warnings():
        # "fewer distinct clusters than k": handled by dropping empty ones.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return km.fit_predict(x)


def _class_terms(texts: list[str], groups: list[np.ndarray]) -> list[list[str]]:
    """Up to N_TERMS distinctive words per group, by c-TF-IDF: a word's
    share of the group's words times log(1 + average words per group / the
    word's count over all groups). Words found in only one text of a group
    of several rank after those found in two or more, so one odd document
    (an id, a typo) does not name the whole topic."""
    from scipy import sparse
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    if len(texts) == 0:
        return [[] for _ in groups]
    # The 50k most frequent words: enough for any label, and keeps the
    # dense groups x words matrices small on a 100k-chunk pile.
    vec = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words=sorted(ENGLISH_STOP_WORDS | EXTRA_STOP_WORDS),
                          lowercase=True, max_features=50_000, dtype=np.float64)
    try:
        counts = vec.fit_transform(texts)
    except ValueError:  # no words at all (empty or numeric texts)
        return [[] for _ in groups]
    vocab = vec.get_feature_names_out()
    rows = np.concatenate(groups)
    cols = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    onehot = sparse.csr_matrix((np.ones(len(rows)), (cols, rows)), shape=(len(groups), len(texts)))
    tf = np.asarray((onehot @ counts).todense())                   # groups x vocab word counts
    df = np.asarray((onehot @ (counts > 0).astype(np.float64)).todense())  # texts containing the word
    totals = tf.sum(axis=1, keepdims=True)
    avg_words = totals.mean()
    idf = np.log1p(avg_words / np.maximum(tf.sum(axis=0), 1))
    score = tf / np.maximum(totals, 1) * idf
    out = []
    for gi, g in enumerate(groups):
        cand = np.flatnonzero(score[gi] > 0)
        rare = df[gi, cand] < (2 if len(g) > 1 else 1)
        # (enough texts, score, alphabetical) so ties break the same way every run
        cand = cand[np.lexsort((cand, -score[gi, cand], rare))]
        chosen: list[str] = []
        for j in cand:
            word = str(vocab[j])
            if not any(_same_word(word, c) for c in chosen):
                chosen.append(word)
                if len(chosen) == N_TERMS:
                    break
        out.append(chosen)
    return out


def _same_word(a: str, b: str) -> bool:
    """Plural variants ("function"/"functions", "class"/"classes",
    "query"/"queries") would waste a label slot."""
    def forms(w: str) -> set[str]:
        return {w, w + "s", w + "es"} | ({w[:-1] + "ies"} if w.endswith("y") else set())
    return b in forms(a) or a in forms(b)


def centroids(topics: list[Topic]) -> np.ndarray:
    """The topics' centroids as a (k x dim) float32 matrix, row i = topic i."""
    if not topics:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray([t.centroid for t in topics], dtype=np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """For each vector, the row of the nearest centroid by cosine (for the
    Topic list cluster() returned, that row is the topic id). How chunks
    ingested after clustering join an existing topic."""
    c = _unit(np.asarray(centroids))
    v = np.asarray(vectors)
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    if c.ndim != 2 or len(c) == 0:
        raise ValueError("assign() needs at least one centroid")
    return np.argmax(_unit(v) @ c.T, axis=1).astype(np.int64)
