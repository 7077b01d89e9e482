"""How the generation budget is split over arms, and the jobs that spend it.

An arm is a (topic, label) pair: a region of the documents and, for classify,
the label the teacher is asked to write for. A policy weighs arms; the jobs
are then dealt out in proportion (largest remainder) and interleaved, so a run
stopped early by a budget still covers every arm.

    class Policy(Protocol):
        def weights(self, sizes, feedback) -> {arm: weight}

`sizes` is the number of chunks per arm; `feedback` maps an arm to what the last round learned about it (for example
{"items": 40, "errors": 12}); the self-improving loop passes it to spend the
next round where the student fails. `uniform` ignores it: every label gets
the same share.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Protocol

from .errors import TasklingError
from .pile import Chunk

Arm = tuple  # (topic_id | None, label | None)


def arm_name(arm: Arm) -> str:
    topic, label = arm
    return f"topic {topic if topic is not None else '-'} / {label or '-'}"


class Policy(Protocol):
    def weights(self, sizes: dict[Arm, int], feedback: dict[Arm, dict]) -> dict[Arm, float]: ...


POLICIES: dict[str, Callable[[], Policy]] = {}


def register(name: str):
    def deco(cls):
        POLICIES[name] = cls
        return cls
    return deco


@register("uniform")
class Uniform:
    """Equal share per label. Without labels, an equal share per topic (coverage
    of the whole pile). With labels, a label's share follows its chunks: its
    pool holds the chunks most relevant to it, and splitting evenly over topics
    would overweight a topic that has one marginal hit."""

    def weights(self, sizes: dict[Arm, int], feedback: dict[Arm, dict]) -> dict[Arm, float]:
        per_label: dict = {}
        for (topic, label), n in sizes.items():
            per_label.setdefault(label, {})[topic] = n
        out = {}
        for label, topics in per_label.items():
            total = sum(topics.values())
            for topic, n in topics.items():
                share = 1.0 / len(topics) if label is None else n / total
                out[(topic, label)] = share / len(per_label)
        return out


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise TasklingError(f"generate.policy '{name}' is unknown; use one of {', '.join(sorted(POLICIES))}")
    return POLICIES[name]()


def split(total: int, weights: dict[Arm, float]) -> dict[Arm, int]:
    """Whole job counts per arm in proportion to weights (largest remainder)."""
    wsum = sum(max(w, 0.0) for w in weights.values())
    if total <= 0 or wsum <= 0:
        return {a: 0 for a in weights}
    exact = {a: total * max(w, 0.0) / wsum for a, w in weights.items()}
    counts = {a: math.floor(x) for a, x in exact.items()}
    rest = total - sum(counts.values())
    for a in sorted(exact, key=lambda a: (counts[a] - exact[a], str(a)))[:rest]:
        counts[a] += 1
    return counts


def plan_jobs(pools: dict[Arm, list[Chunk]], n_jobs: int, per_call: int, policy: Policy,
              rng: random.Random, personas: list[str], difficulties: list[str], chunks_per_job: int = 1,
              feedback: dict[Arm, dict] | None = None) -> list[dict]:
    """n_jobs teacher jobs: arm, chunk keys, persona, difficulty, examples wanted.

    Chunks are drawn without replacement within an arm until it runs out;
    arms are interleaved so any prefix of the list is spread over all arms."""
    arms = sorted((a for a, cs in pools.items() if cs), key=str)
    if not arms:
        return []
    counts = split(n_jobs, policy.weights({a: len(pools[a]) for a in arms}, feedback or {}))
    decks = {}
    for a in arms:
        deck = list(pools[a])
        rng.shuffle(deck)
        decks[a] = deck
    queues: dict[Arm, list[list[str]]] = {}
    for a in arms:
        deck, picks = decks[a], []
        for j in range(counts[a]):
            picks.append([deck[(j * chunks_per_job + k) % len(deck)].key
                          for k in range(min(chunks_per_job, len(deck)))])
        queues[a] = picks
    order: list[Arm] = []
    rounds = max(counts.values(), default=0)
    for r in range(rounds):
        layer = [a for a in arms if r < counts[a]]
        rng.shuffle(layer)
        order += layer
    taken = {a: 0 for a in arms}
    jobs = []
    for i, a in enumerate(order):
        chunk_keys = queues[a][taken[a]]
        taken[a] += 1
        job = {"index": i, "arm": list(a), "chunks": chunk_keys, "n": per_call,
               "persona": personas[i % len(personas)] if personas else "a typical user",
               "difficulty": difficulties[(i // max(1, len(personas))) % len(difficulties)] if difficulties else "medium"}
        if a[1] is not None:
            job["label"] = a[1]
        jobs.append(job)
    return jobs
