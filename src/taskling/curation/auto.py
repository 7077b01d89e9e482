"""The automatic label sources of curate (label.auto), put together for the label model: the
embedding, kNN and retrieval labellers over the pile (autolabel.py) and the keyword rules mined
per label (mined.py). `collect` returns their names and their votes on every item, and what was
fitted (the pile's label shares, the mined rules) for the manifest and the report.

What each source starts from: the label names and descriptions, the task's examples, the inputs
the teacher wrote for a label (label-conditioned generation) and the pile; never gold labels.
Without embeddings (ingest.embed: false) only the mined rules vote.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import autolabel, mined
from .. import tasks
from . import rules as rulemod
from ..core.config import Config
from ..core.workspace import Context
from ..data.pile import Pile

def active(cfg: Config) -> bool:
    """Whether the automatic sources run: classify, label.auto on, and the pile embedded (ingest.embed,
    curate.embed). The embedding sources carry them; keyword rules mined alone from a weak teacher's
    inputs say little more than the label it was asked for, and dropped good examples as unsure."""
    from ..core import tasktype

    embed = cfg.curate.embed if cfg.curate.embed is not None else cfg.ingest.embed
    return bool(cfg.label.auto.any and embed and tasktype.get(cfg.task.type).labelled)


def class_balance(cfg: Config) -> str:
    """The label model's class prior: label.class_balance, or with "auto" fixed uniform when the automatic
    sources vote (learned from their votes it starved a label on the Debian task of bench/classify.py in
    3 of 3 seeds: prior 0.004-0.09 for a label that is a sixth of the pile) and learned from the
    hand-written sources' votes otherwise (a label that never occurs needs it: tests/stages/test_weak.py)."""
    if cfg.label.class_balance != "auto":
        return cfg.label.class_balance
    return "uniform" if active(cfg) else "learn"


def wanted(cfg: Config) -> bool:
    """Whether curate runs the label model: hand-written rules or LLM labellers, or the automatic sources."""
    return bool(cfg.label.rules or cfg.label.teachers or active(cfg))


def pile_input_count(cfg: Config) -> int:
    """generate.pile_inputs, or its default: 600 pile chunks for classify with label.auto (enough for a
    training set and the label-model dev set), none otherwise."""
    if cfg.generate.pile_inputs is not None:
        return cfg.generate.pile_inputs
    return 600 if active(cfg) else 0


def pile_input_words(cfg: Config) -> int:
    """How many words of a chunk a pile input keeps: generate.pile_input_words, or about 2.5 times the
    task examples' median length (inputs that look like the user's), 32..128."""
    if cfg.generate.pile_input_words is not None:
        return cfg.generate.pile_input_words
    lengths = sorted(len(ex.input.split()) for ex in cfg.task.examples)
    return 64 if not lengths else max(32, min(128, round(2.5 * lengths[len(lengths) // 2])))


@dataclass
class Auto:
    """What the automatic sources found: source names, votes per item, rules mined, manifest info."""

    names: list[str] = field(default_factory=list)
    votes: list[dict] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)        # mined keyword rules (label.rules entries)
    abstaining: list[str] = field(default_factory=list)    # sources whose silence is an outcome (rules)
    info: dict = field(default_factory=dict)
    seconds_per_item: float | None = None


def label_texts(cfg: Config, candidates: list[dict], pool_texts: dict[str, list[str]]) -> dict[str, list[tuple[str, float]]]:
    """Per label, the texts its words are mined from, with weights: its name and description and the
    task's examples of it count three times, the teacher's inputs for it and its pool's chunks once."""
    out: dict[str, list[tuple[str, float]]] = {lab: [(f"{lab.replace('-', ' ')} {desc}", 3.0)]
                                               for lab, desc in cfg.task.labels.items()}
    for ex in cfg.task.examples:
        out[ex.output].append((ex.input, 3.0))
    for ex in candidates:
        lab = (ex.get("arm") or [None, None])[1]
        if ex.get("source") not in ("pile", "table") and lab in out:
            out[lab].append((str(ex["input"]), 1.0))
    for lab, texts in pool_texts.items():
        out[lab] += [(t, 1.0) for t in texts]
    return out


def pools_by_label(cfg: Config, pile: Pile) -> dict[str, list]:
    from ..core import tasktype

    out: dict[str, list] = {lab: [] for lab in cfg.task.labels}
    for (_, lab), cs in tasktype.get(cfg.task.type).pools(cfg.task, pile, cfg.generate.pool_per_label).items():
        out[lab] += cs
    return out


def seeds(cfg: Config, embedder, candidates: list[dict], vecs: np.ndarray | None) -> tuple[list, list, list]:
    """Prototype seeds per label (name and description, examples, the mean of the teacher's inputs for
    it, one weight each) and the examples as (vector, label index) for the retrieval association."""
    labels = list(cfg.task.labels)
    D = embedder.encode([f"{lab.replace('-', ' ')}: {desc}" for lab, desc in cfg.task.labels.items()])
    E = embedder.encode([ex.input for ex in cfg.task.examples]) if cfg.task.examples else None
    rows: list[list[np.ndarray]] = [[D[j]] for j in range(len(labels))]
    for i, ex in enumerate(cfg.task.examples):
        rows[labels.index(ex.output)].append(E[i])
    if vecs is not None:
        for j, lab in enumerate(labels):
            mine = [i for i, ex in enumerate(candidates) if ex.get("source") not in ("pile", "table")
                    and (ex.get("arm") or [None, None])[1] == lab]
            if mine:
                rows[j].append(autolabel.unit(vecs[mine].mean(axis=0)))
    examples = [(E[i], labels.index(ex.output)) for i, ex in enumerate(cfg.task.examples)] if E is not None else []
    return [np.stack(r) for r in rows], [[1.0] * len(r) for r in rows], examples


def ask_words(cfg: Config, ctx: Context) -> dict[str, str]:
    """The teacher's reply, per label, to "which words are typical of it" (label.auto.teacher_words): one
    call per label through the call log (purpose label:words), cached like every teacher call."""
    from ..core.config import Price
    from ..teacher.backends import Logged, Request, open_for
    from ..teacher.calls import CallLog

    labels = list(cfg.task.labels)
    reqs = [Request(mined.words_prompt(lab, cfg.task.labels[lab], cfg.task.input_noun), max_tokens=96,
                    temperature=0.0) for lab in labels]
    with CallLog(ctx.ws.calls_db) as log:
        backend = Logged(open_for(ctx.executor, cfg.teacher, ctx.threads), log, purpose="label:words",
                         price=cfg.budget.prices.get(cfg.teacher.model, Price()))
        try:
            res = backend.generate(reqs)
        finally:
            backend.close()
    return {lab: (r.text if r.error is None else "") for lab, r in zip(labels, res)}


def collect(cfg: Config, ctx: Context, items: list[dict], vecs: np.ndarray | None, embedder,
            n_candidates: int, taken: set[str] = frozenset()) -> Auto:
    """Every automatic source's votes on `items` (candidates first, then gold inputs); `vecs` their unit
    input vectors (None without embeddings). Mined rules (keywords mined per label, and the words the
    teacher calls typical of each) named like one in `taken` are left out."""
    auto, a = Auto(votes=[{} for _ in items]), cfg.label.auto
    labels = list(cfg.task.labels)
    candidates = items[:n_candidates]
    t0 = time.perf_counter()
    with Pile(ctx.ws.pile_db) as pile:
        pools = pools_by_label(cfg, pile)
        use_vecs = embedder is not None and vecs is not None and (a.embedding or a.knn or a.retrieval)
        space = autolabel.PileSpace.load(pile, embedder.dim, tasks.chunk_floor(cfg.task)) if use_vecs else None
        background = mined.document_counts(c.text for c in pile.chunks(unique=True)) \
            if a.keywords or a.teacher_words else Counter()
    if space is not None:
        idx = space.index()
        seed_rows, weights, examples = seeds(cfg, embedder, candidates, vecs[:n_candidates])
        pool_keys = {labels.index(lab): [c.key for c in cs] for lab, cs in pools.items()}
        fitted = autolabel.Space.fit(labels, space, seed_rows, weights, pool_keys, examples)
        which = [s for s, on in ((autolabel.EMBEDDING, a.embedding), (autolabel.KNN, a.knn),
                                 (autolabel.RETRIEVAL, a.retrieval)) if on]
        own = [idx.get((ex.get("chunks") or [None])[0]) if ex.get("source") == "pile" else None for ex in items]
        for row, v in zip(auto.votes, fitted.votes(vecs, own, which)):
            row.update(v)
        auto.names += which
        auto.info["pile"] = fitted.info
    if space is None:  # no pile vectors after all: nothing automatic votes (see `active`)
        return auto
    if a.keywords:
        texts = label_texts(cfg, candidates, {lab: [c.text for c in cs] for lab, cs in pools.items()})
        words = mined.mine(labels, texts, background, per_label=a.keywords_per_label)
        auto.rules = mined.as_rules(words, set(taken))
        auto.info["mined_words"] = words
    if a.teacher_words:
        said = mined.teacher_words(ask_words(cfg, ctx), background, per_label=a.keywords_per_label)
        auto.rules += mined.as_rules(said, set(taken), prefix=mined.WORDS_PREFIX)
        auto.info["teacher_words"] = {lab: [w["word"] for w in ws] for lab, ws in said.items()}
    if auto.rules:
        compiled = rulemod.compile_rules(auto.rules, labels)
        for row, rv in zip(auto.votes, rulemod.votes(compiled, items)):
            row.update(rv)
        auto.names += [r["name"] for r in auto.rules]
        auto.abstaining = [r["name"] for r in auto.rules]
    auto.seconds_per_item = (time.perf_counter() - t0) / max(len(items), 1)
    return auto
