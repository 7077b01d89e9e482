"""How the generation budget is split over arms, and the jobs that spend it.

An arm is a (topic, label) pair: a region of the documents and, for classify,
the label the teacher is asked to write for. A policy weighs arms; the jobs
are then dealt out in proportion (largest remainder) and interleaved, so a run
stopped early by a budget still covers every arm.

    class Policy(Protocol):
        def weights(self, sizes, feedback) -> {arm: weight}

`sizes` is the number of chunks per arm; `feedback` maps an arm to what the
last rounds learned about it: {"items", "errors"} (the student on the dev set),
"uncertainty" (0..1, the student on unlabelled chunks of the arm), {"tried",
"kept"} (teacher jobs and the examples curation kept from them). The
self-improving loop (loop.py, stages/analyse.py) passes it to spend the next
round where the student fails. `uniform` ignores it.

The learning policies value an arm as its expected error mass per teacher job:

    value = share of the task (uniform weight) x ((1-w) x error + w x uncertainty) x keep rate

with a Beta posterior on the error (its prior pooled over the arm's label, so
an arm seen on two dev items borrows strength from its label) and on the
teacher's keep rate. `thompson` gives each arm its expected share of value
over posterior draws (each job goes where a fresh draw puts the most error
mass); `ucb` uses posterior means plus an exploration bonus that shrinks with
the items seen. Both keep a floor: every arm gets at least `floor` of an equal
share, so an arm never starves on one unlucky estimate.

A person can ask for more budget on an arm (the UI's failures page, or
`boost()`): boosts.jsonl in the workspace's state folder records it with the
round whose results prompted it, and the next round's analyse multiplies that
arm's weight by the boost's factor (BOOST_FACTOR unless given).
"""
from __future__ import annotations

import json
import math
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from ..core.errors import TasklingError
from ..data.pile import Chunk

Arm = tuple  # (topic_id | None, label | None)


def arm_key(arm) -> str:
    """An arm as a JSON-safe dictionary key (manifests count by it; json.loads gives the arm back)."""
    return json.dumps(list(arm))


def arm_name(arm: Arm) -> str:
    topic, label = arm
    return f"topic {topic if topic is not None else '-'} / {label or '-'}"


def arm_label(arm, topics: dict) -> str:
    """An arm in words: its topic's label (or number) and its label."""
    topic, label = arm
    t = topics.get(topic, f"topic {topic}") if topic is not None else "all topics"
    return f"{t} / {label}" if label is not None else t


BOOST_FACTOR = 2.0  # a person's "more budget for this arm": its weight doubles in the next round


def read_boosts(path: Path) -> list[dict]:
    """Every boost recorded in boosts.jsonl (a torn last line from a crash is ignored)."""
    if not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("arm"), list) and len(rec["arm"]) == 2:
            out.append(rec)
    return out


def boost(path: Path, arm, after_round: int, factor: float = BOOST_FACTOR, note: str | None = None,
          run: str | None = None) -> dict:
    """Ask for more budget on `arm` in the round after `after_round` (of `run`, or of any run);
    asking again is a no-op."""
    if not (isinstance(factor, (int, float)) and factor > 0 and math.isfinite(factor)):
        raise TasklingError(f"a boost factor must be a positive number, not {factor!r}")
    if not (isinstance(arm, (list, tuple)) and len(arm) == 2):
        raise TasklingError(f"an arm is [topic, label], not {arm!r}")
    arm = list(arm)
    for rec in read_boosts(path):
        if rec["arm"] == arm and rec.get("after_round") == after_round and rec.get("run") == run:
            return rec
    rec = {"arm": arm, "after_round": int(after_round), "factor": float(factor), **({"run": run} if run else {}),
           "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **({"note": note} if note else {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return rec


def boosts_for(path: Path, round: int, run: str | None = None) -> dict[Arm, float]:
    """The weight factors analyse applies in `round` of `run`: the boosts asked after round-1's results."""
    out: dict[Arm, float] = {}
    for rec in read_boosts(path):
        if rec.get("after_round") == round - 1 and rec.get("run") in (None, run):
            a = tuple(rec["arm"])
            out[a] = out.get(a, 1.0) * float(rec.get("factor", BOOST_FACTOR))
    return out


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


def posteriors(sizes: dict[Arm, int], feedback: dict[Arm, dict], prior_strength: float = 2.0) -> dict[Arm, dict]:
    """Per arm: task share (`mass`), error Beta(a, b) with a prior pooled over the arm's label, keep-rate
    Beta(a, b), uncertainty (or None) and dev items seen (`n`)."""
    mass = Uniform().weights(sizes, feedback)
    by_group: dict = {}
    for arm, f in feedback.items():
        g = by_group.setdefault(arm[1], [0, 0])
        g[0] += f.get("errors", 0)
        g[1] += f.get("items", 0)
    out = {}
    for arm in sizes:
        f = feedback.get(arm, {})
        ge, gn = by_group.get(arm[1], (0, 0))
        m = (ge + 1) / (gn + 2)  # the label's pooled error rate, Laplace-smoothed
        e, n = f.get("errors", 0), f.get("items", 0)
        kept, tried = f.get("kept", 0), f.get("tried", 0)
        out[arm] = {"mass": mass[arm], "err": (prior_strength * m + e, prior_strength * (1 - m) + n - e),
                    "keep": (1 + kept, 1 + max(tried - kept, 0)), "unc": f.get("uncertainty"), "n": n}
    return out


def mix(err, unc: float | None, w: float):
    """An arm's failure signal: the error, blended with the student's uncertainty where it was probed."""
    return err if unc is None else (1 - w) * err + w * unc


def floored(shares: dict[Arm, float], floor: float) -> dict[Arm, float]:
    """Shares normalised so that every arm gets at least `floor` of an equal share."""
    total, n = sum(shares.values()), len(shares)
    if n == 0:
        return {}
    if total <= 0:
        return {a: 1.0 / n for a in shares}
    return {a: floor / n + (1 - floor) * v / total for a, v in shares.items()}


@register("thompson")
class Thompson:
    draws = 2000
    learns = True  # reads feedback: get_policy passes it the options below

    def __init__(self, seed: int = 0, floor: float = 0.25, uncertainty_weight: float = 0.5):
        self.seed, self.floor, self.w = seed, floor, uncertainty_weight

    def weights(self, sizes: dict[Arm, int], feedback: dict[Arm, dict]) -> dict[Arm, float]:
        import numpy as np

        post = posteriors(sizes, feedback)
        arms = sorted(post, key=str)
        if not arms:
            return {}
        rng = np.random.default_rng(self.seed)
        value = np.empty((self.draws, len(arms)))
        for j, a in enumerate(arms):
            p = post[a]
            err = rng.beta(*p["err"], size=self.draws)
            keep = rng.beta(*p["keep"], size=self.draws)
            value[:, j] = p["mass"] * mix(err, p["unc"], self.w) * keep
        shares = (value / np.maximum(value.sum(axis=1, keepdims=True), 1e-12)).mean(axis=0)
        return floored({a: float(shares[j]) for j, a in enumerate(arms)}, self.floor)


@register("ucb")
class UCB:
    c = 0.5
    learns = True

    def __init__(self, seed: int = 0, floor: float = 0.25, uncertainty_weight: float = 0.5):
        self.floor, self.w = floor, uncertainty_weight

    def weights(self, sizes: dict[Arm, int], feedback: dict[Arm, dict]) -> dict[Arm, float]:
        post = posteriors(sizes, feedback)
        total = sum(p["n"] for p in post.values())
        shares = {}
        for a, p in post.items():
            (ea, eb), (ka, kb) = p["err"], p["keep"]
            err = min(1.0, ea / (ea + eb) + self.c * math.sqrt(math.log(total + 2) / (p["n"] + 1)))
            shares[a] = p["mass"] * mix(err, p["unc"], self.w) * ka / (ka + kb)
        return floored(shares, self.floor)


def get_policy(name: str, key: str = "generate.policy", **options) -> Policy:
    """A policy by name (`key`: where the user set it); `options` (seed, floor, uncertainty_weight)
    reach the learning policies."""
    if name not in POLICIES:
        raise TasklingError(f"{key} '{name}' is unknown; use one of {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    return cls(**options) if getattr(cls, "learns", False) else cls()


def split_random(total: int, weights: dict[Arm, float], rng: random.Random) -> dict[Arm, int]:
    """Whole job counts per arm, unbiased: each arm gets the floor of its exact
    share and the rest is dealt by systematic sampling on the fractions, so an
    arm whose share is below one job still gets one now and then (over rounds it
    receives its share; largest remainder would starve it every time)."""
    wsum = sum(max(w, 0.0) for w in weights.values())
    arms = sorted(weights, key=str)
    if total <= 0 or wsum <= 0:
        return {a: 0 for a in arms}
    exact = {a: total * max(weights[a], 0.0) / wsum for a in arms}
    counts = {a: math.floor(exact[a]) for a in arms}
    rest = total - sum(counts.values())
    u, acc, j = rng.random(), 0.0, 0
    for a in arms:
        acc += exact[a] - counts[a]
        while j < rest and acc > u + j:
            counts[a] += 1
            j += 1
    return counts


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


def plan_jobs(pools: dict[Arm, list[Chunk]], n_jobs: int, per_call: int, policy: Policy | None,
              rng: random.Random, personas: list[str], difficulties: list[str], chunks_per_job: int = 1,
              feedback: dict[Arm, dict] | None = None, counts: dict[Arm, int] | None = None,
              used: set[str] | None = None, seen: set[str] | None = None) -> list[dict]:
    """n_jobs teacher jobs: arm, chunk keys, persona, difficulty, examples wanted.

    Chunks are drawn without replacement within an arm until it runs out; in a
    later round, chunks new to the pile (not in `seen`, the earlier rounds'
    pools) come first and chunks earlier rounds wrote from (`used`) last. Arms
    are interleaved so any prefix of the list is spread over all arms.
    `counts` (jobs per arm, decided elsewhere: the loop's analysis) replaces
    the policy, which may then be None."""
    arms = sorted((a for a, cs in pools.items() if cs), key=str)
    if not arms:
        return []
    if counts is None:
        counts = split(n_jobs, policy.weights({a: len(pools[a]) for a in arms}, feedback or {}))
    counts = {a: counts.get(a, 0) for a in arms}
    decks = {}
    for a in arms:
        deck = list(pools[a])
        rng.shuffle(deck)
        if used or seen:  # stable sort: each group stays shuffled
            deck.sort(key=lambda c: (seen is not None and c.key in seen, used is not None and c.key in used))
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
