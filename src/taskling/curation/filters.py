"""The filters of the curate stage, as plain functions over example dicts.

  - language: a stop-word vote among common languages (only confident calls count);
  - dedup: exact (normalised input), near (MinHash over the input) and
    semantic (embedding cosine) among inputs naming the same identifiers,
    keeping the best-grounded of each group;
  - decontamination: word 6-grams shared with an eval or gold input, or an
    embedding near-duplicate of one (a paraphrase), naming the same identifiers;
  - selection: down to a target size with label balance, then k-center
    greedy on embeddings within each label (the most different first).

Grounding (how well an example is supported by the chunks it cites) depends on the task
type: each TaskType scores it (`grounding`), with the measures in `tasks.grounding`.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from ..data.dedup import DedupIndex
from ..data.retrieve import identifiers
from ..tasks import words
from ..tasks.grounding import ENGLISH_STOP, normalise

STOP = {
    "en": ENGLISH_STOP,
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch".split(),
    "fr": "le la les de des et en un une du est que pour dans qui pas par sur au avec ce".split(),
    "es": "el la de que y en los se del las un por con no una su para es al lo".split(),
    "it": "il di che e la per un in non una sono del della le si con da gli al".split(),
    "nl": "de het een van en in is dat op te zijn met voor niet aan er ook als".split(),
    "pt": "de a o que e do da em um para com não uma os no se na por mais as".split(),
}
STOP_SETS = {k: set(v) for k, v in STOP.items()}


def language_of(text: str, min_hits: int = 3) -> str | None:
    """The language whose stop words the text uses most, when it is clear."""
    ws = words(text)
    votes = Counter({lang: sum(w in s for w in ws) for lang, s in STOP_SETS.items()})
    (best, n), *rest = votes.most_common() or [(None, 0)]
    if n < min_hits or (rest and rest[0][1] * 1.5 >= n):
        return None
    return best


def named(text: str) -> frozenset[str]:
    """The identifiers `text` names (`data.retrieve.identifiers`, any case). Two inputs that name different
    ones are two questions with two answers, however alike they read: "error code 23505" and "error code
    23503" differ in one word to MinHash, n-grams and an embedding. So they are never near or semantic
    duplicates (dedup), nor contamination (contaminated), of each other."""
    return frozenset(w.casefold() for w in identifiers(text))


def dedup(order: list[int], texts: list[str], vectors: np.ndarray | None, near: float, semantic: float,
          groups: list | None = None) -> dict[int, tuple[str, int]]:
    """Duplicates among items visited in `order` (best first): index -> (kind, index of the kept item).

    Near and semantic duplicates name the same identifiers (`named`). Semantic duplicates are looked for
    within an item's group (its label or topic) too: that keeps the check linear in practice on 100k
    candidates."""
    names = [named(t) for t in texts]
    seen: dict[str, int] = {}
    index = DedupIndex(threshold=near)
    kept_by_group: dict = {}
    out: dict[int, tuple[str, int]] = {}
    for i in order:
        key = normalise(texts[i])
        if key in seen:
            out[i] = ("exact duplicate", seen[key])
            continue
        dup = index.check(i, texts[i], accept=lambda j, i=i: names[j] == names[i])
        if dup is not None:
            out[i] = ("near duplicate", dup.of)
            continue
        kept = kept_by_group.setdefault((groups[i] if groups is not None else None, names[i]), [])
        if vectors is not None and kept:
            sims = vectors[kept] @ vectors[i]
            j = int(np.argmax(sims))
            if sims[j] >= semantic:
                out[i] = ("semantic duplicate", kept[j])
                continue
        seen[key] = i
        kept.append(i)
    return out


def shingles(text: str, n: int = 6) -> set[tuple[str, ...]]:
    ws = words(text)
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)} if len(ws) >= n else {tuple(ws)}


def contaminated(texts: list[str], vectors: np.ndarray | None, blocked: list[str],
                 blocked_vectors: np.ndarray | None, cosine: float) -> dict[int, str]:
    """Items that overlap a blocked (eval or gold) text naming the same identifiers (`named`): index ->
    reason. `blocked_vectors` are `blocked`'s, row for row."""
    ids: dict[frozenset[str], int] = {}  # each set of identifiers a number, to compare as arrays
    own = [ids.setdefault(named(t), len(ids)) for t in texts]
    theirs = [ids.setdefault(named(b), len(ids)) for b in blocked]
    grams: dict[int, set] = {}
    for b, n in zip(blocked, theirs):
        grams.setdefault(n, set()).update(shingles(b))
    out: dict[int, str] = {}
    for i, t in enumerate(texts):
        if shingles(t) & grams.get(own[i], set()):
            out[i] = "overlaps eval or gold (n-gram)"
    if vectors is not None and blocked_vectors is not None and len(blocked_vectors):
        rest = [i for i in range(len(texts)) if i not in out]
        own_ids, their_ids = np.array(own), np.array(theirs)
        for b in range(0, len(rest), 2048):
            part = rest[b:b + 2048]
            same = own_ids[part, None] == their_ids[None, :]
            best = np.where(same, vectors[part] @ blocked_vectors.T, -np.inf).max(axis=1)
            for i, s in zip(part, best):
                if s >= cosine:
                    out[i] = "overlaps eval or gold (paraphrase)"
    return out


def k_center(vectors: np.ndarray, k: int, first: int = 0) -> list[int]:
    """k row indices, each the farthest (cosine) from those already chosen."""
    n = len(vectors)
    if k >= n:
        return list(range(n))
    chosen = [first]
    dist = 1.0 - vectors @ vectors[first]
    dist[first] = -np.inf
    while len(chosen) < k:
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, 1.0 - vectors @ vectors[j])
        dist[chosen] = -np.inf
    return chosen


def select(items: list[int], target: int, label_of: Callable[[int], str], vectors: np.ndarray | None,
           quality: Callable[[int], float]) -> list[int]:
    """Down to `target` items: an equal quota per label (leftovers to labels
    with more), then k-center on embeddings within a label (the best-grounded
    first), or the best-grounded when there are no embeddings."""
    if len(items) <= target:
        return items
    by_label: dict[str, list[int]] = {}
    for i in items:
        by_label.setdefault(label_of(i), []).append(i)
    quota = {lab: 0 for lab in by_label}
    left = target
    while left > 0:
        open_ = [lab for lab in by_label if quota[lab] < len(by_label[lab])]
        if not open_:
            break
        share = max(1, left // len(open_))
        # Small labels first while everyone gets a share; single leftovers go to the biggest.
        small_first = left >= len(open_)
        for lab in sorted(open_, key=lambda lb: len(by_label[lb]) * (1 if small_first else -1)):
            take = min(share, len(by_label[lab]) - quota[lab], left)
            quota[lab] += take
            left -= take
            if left == 0:
                break
    chosen: list[int] = []
    for lab, members in by_label.items():
        members = sorted(members, key=lambda i: -quality(i))
        if vectors is None:
            chosen += members[:quota[lab]]
        else:
            picked = k_center(vectors[members], quota[lab])
            chosen += [members[p] for p in picked]
    return sorted(chosen)
