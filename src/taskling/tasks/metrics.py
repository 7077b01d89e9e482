"""Evaluation metrics by kind of answer, with bootstrap intervals; pure Python and numpy.
Each task type picks its set (TaskType.summarize, TaskType.item_scores): labels (classify),
fields (extract) or texts (answer, generate).

  - accuracy: share of items whose predicted label is the expected one.
  - macro_f1: per-label F1 averaged over the labels that occur in the expected
    or the predicted labels, so a rare label weighs as much as a common one.
  - valid_json: share of extract predictions that parsed to a JSON object.
  - exact_match (extract): share of items with every field equal after extract's normalisation.
  - field_f1: micro F1 over (field, value) pairs, a null or empty value being absent.
  - field_accuracy: mean share of fields equal per item (extract's own score).
  - exact_match (answer): SQuAD-style normalised string equality.
  - token_f1: mean bag-of-words F1 between prediction and reference.
  - rouge_l: mean F-measure of the longest common word subsequence.
  - citation_rate: share of predictions whose content words are mostly (60%) in their source.
  - cis: 95% percentile bootstrap intervals, resampling items jointly.
Texts: the open-book abstention ("The documents do not contain the answer.") is an answer of its
own, scoring 1 only against itself and 0 against (and for) every other answer.

Undefined ratios (precision with nothing predicted, recall with no support)
are 0.0, as in scikit-learn with zero_division=0. Empty input gives None, never NaN.
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Callable, Sequence

import numpy as np

from . import norm_value, output_text, parse_json_object, token_f1, words
from .grounding import lexical_support
from .openbook import is_abstention

NONE = "(none)"
CITED_SHARE = 0.6


# -- bootstrap -----------------------------------------------------------------------------------------------------
def _resamples(n: int, reps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        yield rng.integers(0, n, size=n)


def _interval(values: list) -> tuple[float, float]:
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return (math.nan, math.nan)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


def bootstrap_ci(n: int, stat: Callable[[Sequence[int]], float], reps: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of stat over `reps` resamples of range(n) with
    replacement; (nan, nan) when n == 0. stat receives the indices as a numpy
    int array (iterate it for a list, or index a numpy array with it, which is
    what keeps n=2000 fast) and may return None or nan for a resample where it
    is undefined; those resamples are left out."""
    if n == 0 or reps <= 0:
        return (math.nan, math.nan)
    return _interval([stat(idx) for idx in _resamples(n, reps, seed)])


def mean_ci(scores: list[float], reps: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Interval of the mean of per-item scores; same resamples as bootstrap_ci."""
    arr = np.asarray(scores, dtype=float)
    return bootstrap_ci(len(arr), lambda idx: arr[idx].mean(), reps, seed)


def paired_diff_ci(new: list[float], old: list[float], confidence: float = 0.95, reps: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean of new - old over the same items and its central bootstrap interval (items resampled
    in pairs, so the shared difficulty of an item cancels): (difference, low, high)."""
    a, b = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_diff_ci needs two equally long, non-empty score lists ({len(a)} vs {len(b)})")
    d = a - b
    means = [d[idx].mean() for idx in _resamples(len(d), reps, seed)]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


def _intervals(n: int, stats: dict[str, Callable], reps: int, seed: int) -> dict[str, tuple[float, float]]:
    """Several stats on the same resamples: one pass, items resampled jointly."""
    if n == 0 or reps <= 0:
        return {k: (math.nan, math.nan) for k in stats}
    values: dict[str, list] = {k: [] for k in stats}
    for idx in _resamples(n, reps, seed):
        for k, f in stats.items():
            values[k].append(f(idx))
    return {k: _interval(v) for k, v in values.items()}


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _check_lengths(expected, predicted, what: str = "predicted") -> None:
    if len(expected) != len(predicted):
        raise ValueError(f"{len(expected)} expected items but {len(predicted)} {what}; they must pair up one to one")


# -- classify ------------------------------------------------------------------------------------------------------
def _codes(expected: list[str], predicted: list[str | None], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Expected as label indices, predicted as indices with len(labels) for "(none)"."""
    index = {lab: i for i, lab in enumerate(labels)}
    for i, e in enumerate(expected):
        if e not in index:
            raise ValueError(f"expected label {e!r} (item {i + 1}) is not one of the labels {labels}; "
                             "add it to the task's labels or fix the item")
    exp = np.array([index[e] for e in expected], dtype=np.int64)
    pred = np.array([index.get(p, len(labels)) if p is not None else len(labels) for p in predicted], dtype=np.int64)
    return exp, pred


def _confusion(exp: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(exp * (k + 1) + pred, minlength=k * (k + 1)).reshape(k, k + 1)


def _macro_f1(cm: np.ndarray) -> float | None:
    k = cm.shape[0]
    tp = np.diag(cm[:, :k]).astype(float)
    support, npred = cm.sum(axis=1), cm[:, :k].sum(axis=0)
    present = (support > 0) | (npred > 0)
    if not present.any():
        return None
    prec = np.divide(tp, npred, out=np.zeros(k), where=npred > 0)
    rec = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
    return float(f1[present].mean())


def classify_metrics(expected: list[str], predicted: list[str | None], labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-label precision/recall/F1 and the confusion matrix.

    A prediction that is None or not one of `labels` counts as "(none)": wrong,
    and a miss for the expected label, but no label's false positive. Macro-F1
    averages over the labels that occur in the expected or predicted labels
    (scikit-learn's convention when it infers the labels), so a label nobody
    used does not pull it to 0. Precision with nothing predicted and recall
    with no support are 0.0, as is F1 when both are 0.
    """
    _check_lengths(expected, predicted)
    labels = list(dict.fromkeys(labels))
    exp, pred = _codes(expected, predicted, labels)
    k = len(labels)
    cm = _confusion(exp, pred, k)
    per_class = {}
    for i, lab in enumerate(labels):
        tp, npred, support = int(cm[i, i]), int(cm[:, i].sum()), int(cm[i].sum())
        p, r = _ratio(tp, npred), _ratio(tp, support)
        per_class[lab] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": support}
    n = len(expected)
    return {"accuracy": float((exp == pred).mean()) if n else None, "macro_f1": _macro_f1(cm),
            "per_class": per_class,
            "confusion": {"labels": labels, "predicted_labels": labels + [NONE], "matrix": cm.tolist()}}


# -- extract -------------------------------------------------------------------------------------------------------
def _as_dict(value) -> dict | None:
    if isinstance(value, str):
        value = parse_json_object(value)
    return value if isinstance(value, dict) else None


def _field_names(fields, expected: list) -> list[str]:
    """The schema's fields, else every field any reference uses (in first-seen order)."""
    if fields:
        return list(fields)
    return list(dict.fromkeys(k for e in expected for k in (_as_dict(e) or {})))


def _present(value) -> str | None:
    """The normalised value, or None when it is null or empty (absent)."""
    if value is None or value == [] or value == {}:
        return None
    return norm_value(value) or None


def _extract_items(expected: list, predicted: list, names: list[str]) -> dict[str, np.ndarray]:
    """Per item: parsed?, all fields equal?, and per-field pair counts (true
    positive, false positive, false negative)."""
    n, m = len(expected), len(names)
    out = {"valid": np.zeros(n), "exact": np.zeros(n),
           "tp": np.zeros((n, m)), "fp": np.zeros((n, m)), "fn": np.zeros((n, m))}
    for i, (e, p) in enumerate(zip(expected, predicted)):
        gold, pred = _as_dict(e) or {}, _as_dict(p)
        out["valid"][i] = pred is not None
        pred = pred or {}
        same = [norm_value(pred.get(k)) == norm_value(gold.get(k)) for k in names]
        out["exact"][i] = out["valid"][i] and all(same)
        for j, k in enumerate(names):
            g, q = _present(gold.get(k)), _present(pred.get(k))
            out["tp"][i, j] = g is not None and g == q
            out["fp"][i, j] = q is not None and g != q
            out["fn"][i, j] = g is not None and g != q
    return out


def _micro_f1(tp: float, fp: float, fn: float) -> float:
    # No pair on either side: nothing to find and nothing invented, a match
    # (as tasks.token_f1 scores two empty strings).
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def extract_metrics(expected: list[dict], predicted: list[dict | None], fields: list[str]) -> dict:
    """Valid JSON share, exact match, micro field F1 and per-field P/R/F1.

    Values compare after extract's normalisation (case, spaces). A null, empty
    string or empty list counts as absent: predicting it for a present field is
    a miss, and a value where the reference has none is a false positive; a
    wrong value is both. Fields outside `fields` are ignored; with no fields,
    the references' own keys are used. A None prediction is never an exact match.
    """
    _check_lengths(expected, predicted)
    names = _field_names(fields, expected)
    it = _extract_items(expected, predicted, names)
    n = len(expected)
    tp, fp, fn = it["tp"].sum(axis=0), it["fp"].sum(axis=0), it["fn"].sum(axis=0)
    per_field = {}
    for j, k in enumerate(names):
        p, r = _ratio(tp[j], tp[j] + fp[j]), _ratio(tp[j], tp[j] + fn[j])
        per_field[k] = {"precision": float(p), "recall": float(r), "f1": float(_f1(p, r)),
                        "support": int(tp[j] + fn[j])}
    return {"valid_json": float(it["valid"].mean()) if n else None,
            "exact_match": float(it["exact"].mean()) if n else None,
            "field_f1": float(_micro_f1(tp.sum(), fp.sum(), fn.sum())) if n else None,
            "per_field": per_field}


# -- answer and generate -------------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation (any Unicode P*
    character and ASCII symbols), drop a/an/the, collapse whitespace."""
    text = str(text or "").lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", text).split())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004):
    one big-integer step per token of b, fast enough for long generations."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(pred: str, gold: str) -> float:
    """ROUGE-L F-measure (beta=1) on lowercase word tokens; two empty texts match."""
    p, g = words(pred or ""), words(gold or "")
    if not p or not g:
        return float(p == g)
    lcs = lcs_length(p, g)
    return _f1(lcs / len(p), lcs / len(g))


def cites(pred: str, source: str) -> bool:
    """At least 60% of the prediction's content words (3+ letters, not stop
    words, as curate's grounding counts them) occur in the source. A
    prediction without content words cites nothing."""
    return lexical_support(pred or "", source or "") >= CITED_SHARE


def abstention_aware(score: Callable[[str, str], float], pred: str, gold: str) -> float:
    """`score` of an answer, except that "the documents do not contain the answer" (an open-book
    student's abstention, tasks.openbook) is an answer of its own: right (1) only where it is expected,
    wrong (0) elsewhere, and any other answer to an item that expects it is wrong."""
    said, wanted = is_abstention(pred), is_abstention(gold)
    return float(said and wanted) if said or wanted else score(pred, gold)


def exact(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def _answer_items(expected: list, predicted: list, sources: list | None) -> dict[str, np.ndarray]:
    golds = [output_text(e) for e in expected]
    preds = [p or "" for p in predicted]
    srcs = sources if sources is not None else [None] * len(golds)
    return {"exact_match": np.array([abstention_aware(exact, p, g) for p, g in zip(preds, golds)]),
            "token_f1": np.array([abstention_aware(token_f1, p, g) for p, g in zip(preds, golds)]),
            "rouge_l": np.array([abstention_aware(rouge_l, p, g) for p, g in zip(preds, golds)]),
            "cited": np.array([math.nan if s is None else float(cites(p, s)) for p, s in zip(preds, srcs)])}


def _mean(arr: np.ndarray) -> float | None:
    """Mean over the defined (non-nan) entries; None when there are none."""
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if len(arr) else None


def answer_metrics(expected: list[str], predicted: list[str], sources: list[str | None]) -> dict:
    """Normalised exact match, mean token F1, mean ROUGE-L and citation rate.

    citation_rate counts only items with a source (None sources are left out)
    and is None when no item has one. A None prediction is an empty answer.
    """
    _check_lengths(expected, predicted)
    if sources is not None:
        _check_lengths(expected, sources, "sources")
    it = _answer_items(expected, predicted, sources)
    return {"exact_match": _mean(it["exact_match"]), "token_f1": _mean(it["token_f1"]),
            "rouge_l": _mean(it["rouge_l"]), "citation_rate": _mean(it["cited"])}


# -- per item and all together, by kind of answer -----------------------------------------------------------------
def label_scores(expected: list, predicted: list) -> list[float]:
    """1/0 per item: the predicted label is the expected one."""
    _check_lengths(expected, predicted)
    return [float(p is not None and p == e) for e, p in zip(expected, predicted)]


def field_scores(expected: list, predicted: list, fields: list[str] | None = None) -> list[float]:
    """Per item, the share of fields equal after normalisation (the reference's own keys
    when no fields are given); 0.0 for an item with no fields at all."""
    _check_lengths(expected, predicted)
    out = []
    for e, p in zip(expected, predicted):
        gold, pred = _as_dict(e) or {}, _as_dict(p) or {}
        names = list(fields or []) or list(gold)
        out.append(sum(norm_value(pred.get(k)) == norm_value(gold.get(k)) for k in names) / len(names) if names
                   else 0.0)
    return out


def text_scores(expected: list, predicted: list) -> list[float]:
    """Token F1 per item; a None prediction is an empty answer."""
    _check_lengths(expected, predicted)
    return [abstention_aware(token_f1, p or "", output_text(e)) for e, p in zip(expected, predicted)]


def _clean(x):
    """JSON-safe: numpy scalars to Python, NaN to None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _summary(n: int, out: dict, stats: dict[str, Callable], seed: int, reps: int) -> dict:
    """The metrics with "n" and "cis": {metric: [lo, hi]}, bootstrapping items jointly so
    macro-F1 and field F1 get real intervals; undefined values are None (plain JSON)."""
    cis = _intervals(n, stats, reps, seed)
    return _clean({"n": n, **out, "cis": {k: list(v) for k, v in cis.items()}})


def label_summary(expected: list[str], predicted: list, labels=None, *, seed: int = 0, reps: int = 1000) -> dict:
    """classify_metrics with intervals for accuracy and macro-F1; without labels, the sorted
    expected labels."""
    _check_lengths(expected, predicted)
    labels = list(labels) if labels else sorted(set(expected))
    out = classify_metrics(expected, predicted, labels)
    exp, pred = _codes(expected, predicted, out["confusion"]["labels"])
    k = len(out["confusion"]["labels"])
    stats = {"accuracy": lambda idx: (exp[idx] == pred[idx]).mean(),
             "macro_f1": lambda idx: _macro_f1(_confusion(exp[idx], pred[idx], k))}
    return _summary(len(expected), out, stats, seed, reps)


def field_summary(expected: list, predicted: list, fields=None, *, seed: int = 0, reps: int = 1000) -> dict:
    """extract_metrics plus field_accuracy (the mean of field_scores), each with an interval."""
    _check_lengths(expected, predicted)
    n = len(expected)
    names = _field_names(fields, expected)
    out = extract_metrics(expected, predicted, names)
    it = _extract_items(expected, predicted, names)
    share = np.array(field_scores(expected, predicted, fields))
    out["field_accuracy"] = float(share.mean()) if n else None
    tp, fp, fn = it["tp"].sum(axis=1), it["fp"].sum(axis=1), it["fn"].sum(axis=1)
    stats = {"valid_json": lambda idx: it["valid"][idx].mean(),
             "exact_match": lambda idx: it["exact"][idx].mean(),
             "field_f1": lambda idx: _micro_f1(tp[idx].sum(), fp[idx].sum(), fn[idx].sum()),
             "field_accuracy": lambda idx: share[idx].mean()}
    return _summary(n, out, stats, seed, reps)


def text_summary(expected: list, predicted: list, sources: list | None = None, *, exact_match: bool = True,
                 citations: bool = True, seed: int = 0, reps: int = 1000) -> dict:
    """token_f1 and rouge_l with intervals; with `exact_match` the normalised exact match too,
    with `citations` the citation rate over the items that have a source (None without any)."""
    _check_lengths(expected, predicted)
    if not citations:
        sources = None
    elif sources is not None:
        _check_lengths(expected, sources, "sources")
    it = _answer_items(expected, predicted, sources)
    keys = ("exact_match", "token_f1", "rouge_l") if exact_match else ("token_f1", "rouge_l")
    out = {k: _mean(it[k]) for k in keys}
    stats = {k: (lambda idx, a=it[k]: a[idx].mean()) for k in keys}
    if citations:
        out["citation_rate"] = _mean(it["cited"])
        stats["citation_rate"] = lambda idx: _mean(it["cited"][idx])
    return _summary(len(expected), out, stats, seed, reps)
