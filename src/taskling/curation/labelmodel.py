"""Label model: one label per item from several weak sources' votes, learned without gold.

Owns Dawid–Skene EM over votes from LLM teachers, keyword/regex rules and
metadata rules, each of which may abstain. `fit` estimates every source's
confusion matrix (and so its accuracy) and the class prior, and gives each item
a posterior over the labels; training uses `model.label(i)` with
`model.confidence(i)` as a weight or threshold. `majority` is the baseline.

Method, and why:
  - Parameters: prior pi[k] and, per source s, confusion C[s][k][l] =
    P(s votes l | true label k, s voted). An abstention says nothing about the
    label, so it contributes nothing to the likelihood (coverage is assumed
    independent of the true label).
  - Smoothing: every confusion row gets Dirichlet pseudo-counts,
    `smoothing / K` in each cell plus another `smoothing` on the diagonal. A
    row with no evidence is then (K+1)/(2K) accurate (0.625 for 4 labels):
    better than chance, so a source with few votes neither dominates nor
    flips labels. The prior gets `smoothing` per label. A row's estimate moves
    by at most about 2 * smoothing / (its votes): nothing with thousands of votes.
  - Initialisation: soft majority vote (each item's vote shares) then an
    M-step. EM only finds the optimum near its start; starting from the
    majority keeps it on the "sources are better than chance" solution and
    away from its label-permuted twins (label switching). If most sources are
    worse than chance the majority is wrong and so is EM; a handful of gold
    items does not fix that from a majority start, init="gold" does.
  - Gold (semi-supervised): gold items' posteriors are clamped to their gold
    label in every E-step, so they count as known truth in the estimates.
  - Abstentions that say something: a keyword rule that only ever votes one
    label tells the model nothing when abstentions are ignored (its confusion
    rows are all "voted that label"), and such rules made the fit worse than
    majority vote. For the sources named in `abstain_sources`, an explicit None
    is an outcome of its own (column K of the confusion), so "fired" against
    "stayed silent" is learned per true label. A missing key is always "not
    applicable" (a metadata rule on an item without that metadata).
  - Stopping: when an iteration raises the objective EM maximises (log-likelihood
    of the votes plus the log of the smoothing prior) by less than `tol` per
    covered item, or after `max_iter` iterations (`converged` False).
  - Everything is vectorised: votes are one-hot (items x sources*labels), so an
    E-step and an M-step are one matrix product each; work is in log space.
    Deterministic: no randomness; ties go to the label listed first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..core.errors import TasklingError

INITS = ("majority", "diagonal", "gold")
BALANCES = ("learn", "uniform")
Z95 = 1.959963984540054
DIGITS = 4


@dataclass
class SourceStats:
    """What the model learned about one source, and what can be counted directly.

    accuracy is P(vote == true label | it voted) from the posteriors (expected
    correct votes / votes). accuracy_ci is a 95% Wilson interval treating those
    expected counts as `votes` Bernoulli trials: it reflects how many votes the
    estimate rests on, not the label model's own uncertainty (it is too narrow
    when the posteriors are unsure or the model is misspecified). overlap and
    conflict are shares of all items, as in Snorkel's LF summary. agreement
    gives a vote credit 1/t when its label is one of t labels tied for most
    votes among the other sources (the expected value of a random tie-break).
    per_label[l]: "accuracy" is the estimated recall C[l][l] (smoothed; mostly
    the smoothing prior when "support", the expected count of true-l items it
    voted on, is small), "precision" is P(true = l | it voted l), None if it
    never voted l. confusion is the smoothed C, rows = true, columns = voted.
    A source that overlaps no other source and no gold item cannot be checked
    against anything: its accuracy then mostly reflects the smoothing prior.
    """

    name: str
    coverage: float
    votes: int
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    measured: float | None
    measured_n: int
    overlap: float
    agreement: float | None
    conflict: float
    per_label: dict[str, dict]
    confusion: list[list[float]]

    def to_json(self) -> dict:
        return {
            "name": self.name, "coverage": _r(self.coverage), "votes": self.votes,
            "accuracy": _r(self.accuracy),
            "accuracy_ci": None if self.accuracy_ci is None else [_r(x) for x in self.accuracy_ci],
            "measured": _r(self.measured), "measured_n": self.measured_n,
            "overlap": _r(self.overlap), "agreement": _r(self.agreement), "conflict": _r(self.conflict),
            "per_label": {lab: {k: (_r(v) if isinstance(v, float) else v) for k, v in d.items()}
                          for lab, d in self.per_label.items()},
            "confusion": [[_r(x) for x in row] for row in self.confusion],
        }


@dataclass
class LabelModel:
    """A fitted label model. posteriors[i] is P(true label | votes on i), in `labels` order.

    covered[i] is True when a source voted on item i or it has a gold label;
    uncovered items have the prior as posterior, label None and confidence 0.0
    (so a confidence threshold drops them).
    """

    labels: list[str]
    sources: list[str]
    prior: dict[str, float]
    stats: list[SourceStats]
    posteriors: np.ndarray
    iterations: int
    converged: bool
    covered: np.ndarray | None = None
    gold: dict[int, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    conf: np.ndarray | None = None   # sources x true x (voted labels + abstain): what `predict` applies

    def predict(self, votes: Sequence[Mapping[str, str | None]]) -> list[tuple[str | None, float]]:
        """(label, confidence) for new items from the fitted confusions and prior (no refit): the
        label model as a classifier on items it was not fitted on (gold, new inputs). An item no
        source voted on gets (None, 0.0)."""
        if self.conf is None:
            raise TasklingError("this label model keeps no confusion matrices to predict with")
        k, s = len(self.labels), len(self.sources)
        _, enc = _encode(votes, self.labels, self.sources, self.settings.get("abstain_sources", ()))
        onehot = _one_hot(enc, k)
        weights = np.log(self.conf).transpose(0, 2, 1).reshape(s * (k + 1), k)
        logp = onehot @ weights + np.log(np.array([self.prior[lab] for lab in self.labels]))
        post = np.exp(logp - logp.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        voted = ((enc >= 0) & (enc < k)).any(axis=1)
        return [(self.labels[int(np.argmax(p))], float(np.max(p))) if v else (None, 0.0)
                for p, v in zip(post, voted)]

    def _covered(self, i: int) -> bool:
        return True if self.covered is None else bool(self.covered[i])

    def label(self, i: int) -> str | None:
        if not self._covered(i):
            return None
        return self.labels[int(np.argmax(self.posteriors[i]))]

    def confidence(self, i: int) -> float:
        return float(np.max(self.posteriors[i])) if self._covered(i) else 0.0

    def assignments(self) -> list[tuple[str | None, float]]:
        """(label, confidence) per item, the same shape as `majority`'s answer."""
        return [(self.label(i), self.confidence(i)) for i in range(len(self.posteriors))]

    def source(self, name: str) -> SourceStats:
        for st in self.stats:
            if st.name == name:
                return st
        raise TasklingError(f"no source {name!r} in the label model; sources are {self.sources}")

    def to_json(self, posteriors: bool = True) -> dict:
        """Everything above, rounded to 4 decimals; posteriors=False leaves the per-item part out."""
        out = {
            "labels": list(self.labels), "sources": list(self.sources),
            "prior": {k: _r(v) for k, v in self.prior.items()},
            "iterations": self.iterations, "converged": self.converged,
            "items": int(len(self.posteriors)),
            "covered": int(len(self.posteriors) if self.covered is None else self.covered.sum()),
            "gold": len(self.gold), "settings": dict(self.settings),
            "stats": [st.to_json() for st in self.stats],
        }
        if posteriors:
            out["posteriors"] = [[_r(x) for x in row] for row in self.posteriors.tolist()]
            out["assignments"] = [[lab, _r(c)] for lab, c in self.assignments()]
        return out


def _r(x):
    return None if x is None else round(float(x), DIGITS)


# -- input -----------------------------------------------------------------------------------------------------------
def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if len(labels) < 2:
        raise TasklingError(f"a label model needs at least 2 labels, got {labels}")
    for lab in labels:
        if not isinstance(lab, str):
            raise TasklingError(f"labels must be strings, got {lab!r} in {labels}")
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise TasklingError(f"labels are listed more than once: {dupes}")
    return labels


def _encode(votes: Sequence[Mapping[str, str | None]], labels: list[str],
            sources: Sequence[str] | None, abstain_sources: Sequence[str] = ()) -> tuple[list[str], np.ndarray]:
    """Votes as an int matrix items x sources: the label's index, -1 for no vote, or K (the
    number of labels) for an explicit abstention of a source in `abstain_sources`.

    Without `sources`, they are the names in order of first appearance (an
    abstaining entry counts, so a source that never voted still gets a row).
    """
    if sources is None:
        seen: dict[str, None] = {}
        for i, row in enumerate(votes):
            if not isinstance(row, Mapping):
                raise TasklingError(f"item {i}: votes must map a source name to a label, got {type(row).__name__}")
            seen.update(dict.fromkeys(row))
        sources = list(seen)
    else:
        sources = list(sources)
        dupes = sorted({s for s in sources if sources.count(s) > 1})
        if dupes:
            raise TasklingError(f"sources are listed more than once: {dupes}")
    col = {s: j for j, s in enumerate(sources)}
    index = {lab: k for k, lab in enumerate(labels)}
    modelled = {col[s] for s in abstain_sources if s in col}
    enc = np.full((len(votes), len(sources)), -1, dtype=np.int64)
    for i, row in enumerate(votes):
        if not isinstance(row, Mapping):
            raise TasklingError(f"item {i}: votes must map a source name to a label, got {type(row).__name__}")
        for s, v in row.items():
            j = col.get(s)
            if v is None:
                if j in modelled:
                    enc[i, j] = len(labels)
                continue
            if j is None:
                raise TasklingError(f"item {i}: source {s!r} is not one of the sources {sources}")
            k = index.get(v) if isinstance(v, str) else None
            if k is None:
                raise TasklingError(f"item {i}: source {s!r} voted {v!r}, which is not one of the labels {labels}")
            enc[i, j] = k
    return sources, enc


def _encode_gold(gold: Mapping[int, str] | None, labels: list[str], n: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for i, lab in (gold or {}).items():
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
            raise TasklingError(f"gold item {i!r} is out of range: there are {n} items (0..{n - 1})")
        if lab not in labels:
            raise TasklingError(f"gold item {i}: label {lab!r} is not one of the labels {labels}")
        out[int(i)] = labels.index(lab)
    return out


def _one_hot(enc: np.ndarray, k: int) -> np.ndarray:
    """items x (sources*(labels+1)), column s*(K+1) + l is 1 where source s voted label l
    (l = K: it abstained, for a source whose abstentions are modelled)."""
    n, s = enc.shape
    out = np.zeros((n, s * (k + 1)))
    rows, cols = np.nonzero(enc >= 0)
    out[rows, cols * (k + 1) + enc[rows, cols]] = 1.0
    return out


def _label_counts(onehot: np.ndarray, s: int, k: int) -> np.ndarray:
    """items x labels: how many sources voted each label (abstentions left out)."""
    return onehot.reshape(len(onehot), s, k + 1)[:, :, :k].sum(axis=1)


# -- baseline --------------------------------------------------------------------------------------------------------
def majority(votes: Sequence[Mapping[str, str | None]], labels: Sequence[str],
             sources: Sequence[str] | None = None) -> list[tuple[str | None, float]]:
    """Per item, the most-voted label and its share of the votes; (None, 0.0) with no votes.

    A tie goes to the label listed first in `labels`.
    """
    labels = _check_labels(labels)
    sources, enc = _encode(votes, labels, sources)
    counts = _label_counts(_one_hot(enc, len(labels)), len(sources), len(labels))
    total = counts.sum(axis=1)
    top = counts.argmax(axis=1)  # first maximum: the earliest label wins a tie
    return [(labels[top[i]], float(counts[i, top[i]] / total[i])) if total[i] else (None, 0.0)
            for i in range(len(enc))]


# -- EM --------------------------------------------------------------------------------------------------------------
NEVER = 1e-12  # the abstain column of a source whose abstentions are not modelled: never observed


def _pseudo_counts(k: int, smoothing: float, modelled: np.ndarray) -> np.ndarray:
    """sources x true x (voted labels + abstain): Dirichlet pseudo-counts; a modelled source's
    abstain column gets as much as one wrong label, so silence starts out uninformative."""
    base = np.full((k, k + 1), smoothing / k)
    base[:, :k] += np.eye(k) * smoothing
    alpha = np.broadcast_to(base, (len(modelled), k, k + 1)).copy()
    alpha[~modelled, :, k] = NEVER
    return alpha


def _m_step(onehot, post, covered, alpha, s, k, smoothing, learn_prior):
    # expected[s, true, voted] = sum_i post[i, true] * onehot[i, s, voted]  (voted K: abstained)
    expected = (onehot.T @ post).reshape(s, k + 1, k).transpose(0, 2, 1)
    conf = expected + alpha
    conf /= conf.sum(axis=2, keepdims=True)
    if learn_prior:
        prior = post[covered].sum(axis=0) + smoothing
        prior /= prior.sum()
    else:
        prior = np.full(k, 1.0 / k)
    return expected, conf, prior


def _e_step(onehot, conf, prior, gold_idx, gold_lab, s, k):
    """Posteriors, and the log-likelihood of all votes (gold items: of their votes and gold label)."""
    # weights[s*K + voted, true] = log C[s, true, voted]: one product sums every vote's log-likelihood
    weights = np.log(conf).transpose(0, 2, 1).reshape(s * (k + 1), k)
    logp = onehot @ weights + np.log(prior)
    top = logp.max(axis=1, keepdims=True)
    post = np.exp(logp - top)
    total = post.sum(axis=1, keepdims=True)
    post /= total
    item_ll = (top + np.log(total))[:, 0]
    item_ll[gold_idx] = logp[gold_idx, gold_lab]
    post[gold_idx] = 0.0
    post[gold_idx, gold_lab] = 1.0
    return post, float(item_ll.sum())


def _objective(loglik, conf, prior, alpha, smoothing, learn):
    """What each EM step increases: the votes' log-likelihood plus the log of the smoothing prior."""
    obj = loglik + float((alpha * np.log(conf)).sum())
    return obj + smoothing * float(np.log(prior).sum()) if learn else obj


def fit(votes: Sequence[Mapping[str, str | None]], labels: Sequence[str], *,
        sources: Sequence[str] | None = None, gold: Mapping[int, str] | None = None,
        max_iter: int = 200, tol: float = 1e-6, smoothing: float = 1.0,
        init: str = "majority", class_balance: str = "learn", abstain_sources: Sequence[str] = ()) -> LabelModel:
    """Fit a Dawid–Skene label model to `votes` (votes[i][source] = label, or None/missing to abstain).

    gold maps item index -> known label; those items are clamped in EM and give
    each source a `measured` accuracy. init "majority" starts from soft majority
    vote, "diagonal" from every source at the smoothing prior's accuracy, "gold"
    from the parameters the gold items alone give (use it when the majority may
    be wrong more often than right: it keeps EM on the gold side of label switching).
    class_balance "learn" estimates the prior, "uniform" fixes it. For the sources in
    `abstain_sources`, an explicit None is evidence (see the module docstring).
    """
    labels = _check_labels(labels)
    if init not in INITS:
        raise TasklingError(f"init must be one of {list(INITS)}, got {init!r}")
    if class_balance not in BALANCES:
        raise TasklingError(f"class_balance must be one of {list(BALANCES)}, got {class_balance!r}")
    if not smoothing > 0:
        raise TasklingError(f"smoothing must be > 0 (it keeps every probability non-zero), got {smoothing}")
    if max_iter < 1:
        raise TasklingError(f"max_iter must be at least 1, got {max_iter}")
    sources, enc = _encode(votes, labels, sources, abstain_sources)
    n, s, k = len(enc), len(sources), len(labels)
    modelled = np.array([name in set(abstain_sources) for name in sources], dtype=bool)
    gold_k = _encode_gold(gold, labels, n)
    gold_idx = np.array(sorted(gold_k), dtype=np.int64)
    gold_lab = np.array([gold_k[i] for i in gold_idx.tolist()], dtype=np.int64)

    onehot = _one_hot(enc, k)
    voted = (enc >= 0) & (enc < k)
    counts = _label_counts(onehot, s, k)
    covered = voted.any(axis=1)
    covered[gold_idx] = True
    alpha = _pseudo_counts(k, smoothing, modelled)
    learn = class_balance == "learn"

    if init == "majority":
        post = np.full((n, k), 1.0 / k)
        has = counts.sum(axis=1) > 0
        post[has] = counts[has] / counts[has].sum(axis=1, keepdims=True)
        post[gold_idx] = 0.0
        post[gold_idx, gold_lab] = 1.0
    elif init == "diagonal":
        conf = alpha / alpha.sum(axis=2, keepdims=True)
        post, _ = _e_step(onehot, conf, np.full(k, 1.0 / k), gold_idx, gold_lab, s, k)
    else:  # "gold": parameters from the gold items alone, so a wrong majority cannot orient EM
        if not len(gold_idx):
            raise TasklingError('init "gold" needs gold labels: pass gold={item index: label}')
        gold_post = np.eye(k)[gold_lab]
        _, conf, prior = _m_step(onehot[gold_idx], gold_post, np.ones(len(gold_idx), dtype=bool),
                                 alpha, s, k, smoothing, learn)
        post, _ = _e_step(onehot, conf, prior, gold_idx, gold_lab, s, k)

    # stop on the objective, not the parameters: where the data cannot tell parameters apart
    # (items with a single voter, a lone source) they drift for thousands of steps without
    # changing the fit
    scale = max(int(covered.sum()), 1)
    converged, it, last = False, 0, -math.inf
    for it in range(1, max_iter + 1):
        _, conf, prior = _m_step(onehot, post, covered, alpha, s, k, smoothing, learn)
        post, loglik = _e_step(onehot, conf, prior, gold_idx, gold_lab, s, k)
        obj = _objective(loglik, conf, prior, alpha, smoothing, learn)
        if (obj - last) / scale < tol:
            converged = True
            break
        last = obj

    # confusion and prior as used for the posteriors; expected counts from the posteriors
    expected, _, _ = _m_step(onehot, post, covered, alpha, s, k, smoothing, learn)
    stats = _stats(sources, labels, enc, voted, counts, expected, conf, gold_idx, gold_lab, modelled)
    return LabelModel(
        labels=labels, sources=sources, prior={lab: float(p) for lab, p in zip(labels, prior)},
        stats=stats, posteriors=post, iterations=it, converged=converged, covered=covered,
        gold={int(i): labels[g] for i, g in zip(gold_idx.tolist(), gold_lab.tolist())},
        settings={"max_iter": max_iter, "tol": tol, "smoothing": smoothing, "init": init,
                  "class_balance": class_balance, "abstain_sources": [x for x in sources if x in set(abstain_sources)]},
        conf=conf,
    )


# -- per-source report -----------------------------------------------------------------------------------------------
def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed over n trials (n > 0)."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    # the interval always holds p; rounding can leave an end a hair past it (5.6e-17 above p = 0 at n = 3)
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


def _stats(sources, labels, enc, voted, counts, expected, conf, gold_idx, gold_lab, modelled) -> list[SourceStats]:
    n = len(enc)
    per_item = voted.sum(axis=1)
    out = []
    for j, name in enumerate(sources):
        mine = voted[:, j]
        nv = int(mine.sum())
        lab = enc[mine, j]
        # the other sources' votes on the items this one voted on
        others = counts[mine].copy()
        others[np.arange(nv), lab] -= 1
        n_others = per_item[mine] - 1
        overlapping = n_others > 0
        top = others.max(axis=1, initial=0)
        tied = (others == top[:, None]).sum(axis=1)
        credit = (others[np.arange(nv), lab] == top) / np.maximum(tied, 1)
        disagree = (n_others - others[np.arange(nv), lab]) > 0

        g_mine = voted[gold_idx, j]
        measured_n = int(g_mine.sum())
        measured = float((enc[gold_idx[g_mine], j] == gold_lab[g_mine]).mean()) if measured_n else None

        k = len(labels)
        correct = float(np.trace(expected[j][:, :k]))
        acc = correct / nv if nv else None
        support = expected[j][:, :k].sum(axis=1)
        given_vote = conf[j][:, :k] / conf[j][:, :k].sum(axis=1, keepdims=True)  # P(voted l | true, it voted)
        per_label = {}
        for li, lname in enumerate(labels):
            lv = int((lab == li).sum())
            per_label[lname] = {
                "accuracy": float(given_vote[li, li]) if nv else None,
                "precision": float(expected[j, li, li] / lv) if lv else None,
                "votes": lv,
                "support": float(support[li]),
                **({"fires": float(1.0 - conf[j, li, k])} if modelled[j] else {}),  # P(it votes | true label)
            }
        out.append(SourceStats(
            name=name, coverage=nv / n if n else 0.0, votes=nv,
            accuracy=acc, accuracy_ci=wilson(acc, nv) if nv else None,
            measured=measured, measured_n=measured_n,
            overlap=int(overlapping.sum()) / n if n else 0.0,
            agreement=float(credit[overlapping].mean()) if overlapping.any() else None,
            conflict=int(disagree.sum()) / n if n else 0.0,
            per_label=per_label, confusion=given_vote.tolist(),
        ))
    return out
