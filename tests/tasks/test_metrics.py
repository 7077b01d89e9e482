"""Evaluation metrics against hand-computed values (and scikit-learn as a cross-check), and
each task type's set of them (TaskType.summarize, TaskType.item_scores)."""
from __future__ import annotations

import json
import math
import random
import statistics
import pytest

from taskling.core import tasktype
from taskling.core.errors import TasklingError
from taskling.core.tasktype import TaskCfg
from taskling.tasks import metrics as M

approx = pytest.approx
LABELS = ["cat", "dog", "bird", "horse"]  # horse never occurs: it must not count in macro-F1
FIELDS = ["name", "city", "year"]
TASKS = {"classify": TaskCfg(name="t", description="d", type="classify", labels=LABELS),
         "extract": TaskCfg(name="t", description="d", type="extract",
                            output_schema={"properties": {f: {"type": "string"} for f in FIELDS}}),
         "answer": TaskCfg(name="t", description="d", type="answer"),
         "generate": TaskCfg(name="t", description="d", type="generate")}


# -- classify ------------------------------------------------------------------------------------------------------
EXPECTED = ["cat", "cat", "cat", "dog", "dog", "bird"]
PREDICTED = ["cat", "dog", None, "dog", "cat", "fish"]  # None and an unknown label are "(none)"


def test_classify_confusion_and_per_class_by_hand():
    m = M.classify_metrics(EXPECTED, PREDICTED, LABELS)
    assert m["confusion"]["labels"] == LABELS
    assert m["confusion"]["predicted_labels"] == LABELS + ["(none)"]
    #             cat dog bird horse (none)
    assert m["confusion"]["matrix"] == [[1, 1, 0, 0, 1],   # cat
                                        [1, 1, 0, 0, 0],   # dog
                                        [0, 0, 0, 0, 1],   # bird
                                        [0, 0, 0, 0, 0]]   # horse
    assert m["accuracy"] == approx(2 / 6)
    pc = m["per_class"]
    assert pc["cat"] == approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})
    assert pc["dog"] == approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # nothing predicted as bird: precision is defined as 0.0, not NaN
    assert pc["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert pc["horse"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # averaged over cat, dog, bird (present), not horse
    assert m["macro_f1"] == approx((0.4 + 0.5 + 0.0) / 3)


def test_classify_label_only_predicted_counts_in_macro_f1():
    m = M.classify_metrics(["a", "a"], ["a", "b"], ["a", "b", "c"])
    # a: P=1 R=.5 F1=2/3; b: predicted once, never expected, F1=0; c absent
    assert m["macro_f1"] == approx((2 / 3 + 0.0) / 2)
    assert m["per_class"]["b"]["precision"] == 0.0


def _sk_case(rng: random.Random):
    labels = [f"l{i}" for i in range(rng.randint(2, 6))]
    n = rng.randint(1, 40)
    used = labels[: rng.randint(1, len(labels))]  # some labels never expected
    exp = [rng.choice(used) for _ in range(n)]
    pred = [e if rng.random() < 0.5 else rng.choice(labels + [None, "other"]) for e in exp]
    return labels, exp, pred


@pytest.mark.parametrize("seed", range(8))
def test_classify_matches_sklearn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    labels, exp, pred = _sk_case(random.Random(seed))
    m = M.classify_metrics(exp, pred, labels)
    sk_pred = [p if p in labels else "(none)" for p in pred]
    present = [lab for lab in labels if lab in exp or lab in sk_pred]
    assert m["macro_f1"] == approx(sk.f1_score(exp, sk_pred, labels=present, average="macro", zero_division=0))
    assert m["accuracy"] == approx(sk.accuracy_score(exp, sk_pred))
    p, r, f, s = sk.precision_recall_fscore_support(exp, sk_pred, labels=labels, zero_division=0)
    for i, lab in enumerate(labels):
        assert m["per_class"][lab] == approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": int(s[i])})
    assert m["confusion"]["matrix"] == sk.confusion_matrix(exp, sk_pred, labels=labels + ["(none)"])[:-1].tolist()


def test_classify_unicode_and_bad_expected_label():
    m = M.classify_metrics(["négatif", "positif"], ["négatif", "négatif"], ["positif", "négatif"])
    assert m["accuracy"] == 0.5
    assert m["per_class"]["négatif"]["precision"] == 0.5
    with pytest.raises(ValueError, match="'neutre'.*item 2"):
        M.classify_metrics(["positif", "neutre"], ["positif", None], ["positif", "négatif"])


def test_classify_empty():
    m = M.classify_metrics([], [], ["a", "b"])
    assert m["accuracy"] is None and m["macro_f1"] is None
    assert m["confusion"]["matrix"] == [[0, 0, 0], [0, 0, 0]]


# -- extract -------------------------------------------------------------------------------------------------------
X_EXPECTED = [{"name": "Ada Lovelace", "city": "London", "year": 1815},
              {"name": "Alan Turing", "city": "Wilmslow", "year": None},
              {"name": "Grace Hopper", "city": "New York", "year": 1906}]
X_PREDICTED = [{"name": "ada  lovelace", "city": "London ", "year": 1815},  # equal after normalisation
               {"name": "Alan Turing", "city": "Manchester"},  # wrong city, year left out (gold is null)
               None]  # did not parse


def test_extract_by_hand():
    m = M.extract_metrics(X_EXPECTED, X_PREDICTED, FIELDS)
    assert m["valid_json"] == approx(2 / 3)
    assert m["exact_match"] == approx(1 / 3)
    # pairs: tp = 3 + 1 (Turing) + 0 = 4; fp = 1 (Manchester); fn = 1 (Wilmslow) + 3 (None prediction)
    assert m["field_f1"] == approx(2 * 4 / (2 * 4 + 1 + 4))
    pf = m["per_field"]
    assert pf["name"] == approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert pf["city"] == approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})
    assert pf["year"] == approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})


def test_extract_empty_values_are_absent():
    # "" for a present field is a miss only; a value where gold is null is a false positive only
    m = M.extract_metrics([{"a": "x", "b": None}], [{"a": "", "b": "y"}], ["a", "b"])
    assert m["per_field"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_field"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["field_f1"] == 0.0
    # both sides empty everywhere: nothing missed, nothing invented
    assert M.extract_metrics([{"a": None}], [{"a": []}], ["a"])["field_f1"] == 1.0


def test_extract_item_scores_agree_with_task_score():
    task, ext = TASKS["extract"], tasktype.get("extract")
    want = [ext.score(task, p, e) for e, p in zip(X_EXPECTED, X_PREDICTED)]
    assert ext.item_scores(task, X_EXPECTED, X_PREDICTED) == approx(want)
    assert M.field_scores(X_EXPECTED, X_PREDICTED, FIELDS) == approx(want)
    assert want == approx([1.0, 2 / 3, 0.0])
    s = ext.summarize(task, X_EXPECTED, X_PREDICTED)
    assert s["field_accuracy"] == approx(5 / 9)


# -- answer --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b", [("The Eiffel Tower!", "eiffel   tower"), ("an apple.", "Apple"),
                                  ("« Café »", "café"), ("U.S.A.", "usa"), ("Paris, France", "paris france")])
def test_answer_exact_match_normalises(a, b):
    assert M.answer_metrics([a], [b], [None])["exact_match"] == 1.0


def test_answer_exact_match_keeps_words_containing_articles():
    assert M.normalize_answer("Theory of the atom") == "theory of atom"
    assert M.answer_metrics(["theory"], ["the ory"], [None])["exact_match"] == 0.0


def test_rouge_l_known_pairs():
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == approx(5 / 6)
    # LCS "red fox high" = 3: P = 3/4, R = 3/6
    assert M.rouge_l("red fox jumps high", "red big fox very high now") == approx(0.6)
    # order matters for ROUGE-L, not for token F1: LCS is 1 word
    assert M.rouge_l("high fox red jumps", "red big fox very high now") == approx(2 * (1 / 4) * (1 / 6) / (1 / 4 + 1 / 6))
    m = M.answer_metrics(["red big fox very high now"], ["high fox red jumps"], [None])
    assert m["token_f1"] == approx(0.6) and m["rouge_l"] == approx(0.2)


def test_lcs_matches_dynamic_programming():
    def dp(a, b):
        t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
        return t[-1][-1]

    rng = random.Random(3)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 80))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 80))]
        assert M.lcs_length(a, b) == dp(a, b)


SOURCE = "The retry limit is configured with max_retries in settings.yaml."


def test_citation_rate():
    preds = ["Set max_retries in settings.yaml to change the retry limit.",  # 5 of 7 content words: cited
             "Restart the server daemon nightly.",  # none found
             "retry limit yaml banana cherry",  # 3 of 5 = 60%: cited (boundary)
             "retry limit banana cherry",  # 2 of 4: not cited
             "anything at all"]  # no source: left out
    m = M.answer_metrics(["x"] * 5, preds, [SOURCE, SOURCE, SOURCE, SOURCE, None])
    assert m["citation_rate"] == approx(2 / 4)
    assert M.answer_metrics(["x"], ["x"], [None])["citation_rate"] is None
    assert M.answer_metrics(["x"], ["x"], None)["citation_rate"] is None


def test_answer_none_prediction_and_unicode():
    m = M.answer_metrics(["Zürich liegt am See", "Größe"], [None, "größe"], [None, None])
    assert m["exact_match"] == 0.5 and m["token_f1"] == 0.5 and m["rouge_l"] == 0.5


def test_item_scores_per_type():
    scores = {t: tasktype.get(t).item_scores for t in TASKS}
    assert scores["classify"](TASKS["classify"], ["cat", "dog", "cat"], ["cat", None, "dog"]) == [1.0, 0.0, 0.0]
    assert scores["answer"](TASKS["answer"], ["red big fox"], ["red fox"]) == approx([0.8])
    assert scores["generate"](TASKS["generate"], ["a b"], [None]) == [0.0]
    with pytest.raises(TasklingError, match="'summarise' is not a task type"):
        tasktype.get("summarise")
    with pytest.raises(ValueError, match="2 expected items but 1"):
        scores["classify"](TASKS["classify"], ["cat", "dog"], ["cat"])


# -- bootstrap -----------------------------------------------------------------------------------------------------
def _scores(n: int, share: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < share) for _ in range(n)]


def test_bootstrap_contains_estimate_and_is_seeded():
    s = _scores(200, 0.7)
    lo, hi = M.mean_ci(s)
    assert lo < statistics.mean(s) < hi
    assert M.mean_ci(s, seed=5) == M.mean_ci(s, seed=5)
    assert M.mean_ci(s, seed=5) != M.mean_ci(s, seed=6)
    # the generic form sees the same resamples, and works with plain-list indexing
    assert M.bootstrap_ci(len(s), lambda idx: sum(s[i] for i in idx) / len(idx)) == approx(M.mean_ci(s))


def test_bootstrap_degenerate_and_empty():
    assert M.mean_ci([1.0] * 30) == (1.0, 1.0)
    assert all(math.isnan(x) for x in M.bootstrap_ci(0, lambda idx: 1.0))
    s = M.label_summary(["a", "b", "a"], ["a", "b", "a"], ["a", "b"], reps=200)
    assert s["cis"] == {"accuracy": [1.0, 1.0], "macro_f1": [1.0, 1.0]}


def test_bootstrap_narrows_with_n():
    small, large = M.mean_ci(_scores(40, 0.6), reps=500), M.mean_ci(_scores(2000, 0.6), reps=500)
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_bootstrap_custom_stat_skips_undefined_resamples():
    vals = [None, 1.0, 2.0]  # a resample of only item 0 has no median
    stat = lambda idx: statistics.median([vals[i] for i in idx if vals[i] is not None] or [math.nan])  # noqa: E731
    lo, hi = M.bootstrap_ci(3, stat, reps=300)
    assert 1.0 <= lo <= hi <= 2.0


def test_macro_f1_gets_a_real_interval():
    rng = random.Random(1)
    labels = ["a", "b", "c"]
    exp = [rng.choice(labels) for _ in range(300)]
    pred = [e if rng.random() < 0.7 else rng.choice(labels + [None]) for e in exp]
    s = M.label_summary(exp, pred, labels, reps=300)
    lo, hi = s["cis"]["macro_f1"]
    assert lo < s["macro_f1"] < hi and hi - lo > 0.02


# -- each task type's set ------------------------------------------------------------------------------------------
CASES = {
    "classify": dict(expected=EXPECTED, predicted=PREDICTED),
    "extract": dict(expected=X_EXPECTED, predicted=X_PREDICTED),
    "answer": dict(expected=["Zürich", "in settings.yaml"], predicted=[None, "max_retries in settings.yaml"],
                   sources=[None, SOURCE]),
    "generate": dict(expected=["a long text", "ünïcode"], predicted=["a text", None], sources=[SOURCE, SOURCE]),
}
HEADLINES = {"classify": {"accuracy", "macro_f1"}, "extract": {"valid_json", "exact_match", "field_f1", "field_accuracy"},
             "answer": {"exact_match", "token_f1", "rouge_l", "citation_rate"}, "generate": {"token_f1", "rouge_l"}}


@pytest.mark.parametrize("task_type", list(CASES))
def test_summarize_is_plain_json(task_type):
    kind, task = tasktype.get(task_type), TASKS[task_type]
    s = kind.summarize(task, **CASES[task_type], reps=200)
    assert set(s["cis"]) == HEADLINES[task_type] and kind.metric in s["cis"]
    assert s["n"] == len(CASES[task_type]["expected"])
    for k, (lo, hi) in s["cis"].items():
        assert 0.0 <= lo <= s[k] <= hi <= 1.0, k
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    empty = kind.summarize(task, [], [], sources=[], reps=200)
    assert all(empty[k] is None and empty["cis"][k] == [None, None] for k in HEADLINES[task_type])
    json.dumps(empty, allow_nan=False)


def test_the_headline_metric_is_the_mean_item_score():
    for task_type, case in CASES.items():
        kind, task = tasktype.get(task_type), TASKS[task_type]
        scores = kind.item_scores(task, case["expected"], case["predicted"])
        assert kind.summarize(task, **case, reps=50)[kind.metric] == approx(statistics.mean(scores)), task_type


def test_summarize_answer_without_sources_has_no_citation_rate():
    s = tasktype.get("answer").summarize(TASKS["answer"], ["x", "y"], ["x", "z"], reps=100)
    assert s["exact_match"] == 0.5 and s["citation_rate"] is None and s["cis"]["citation_rate"] == [None, None]
    json.dumps(s, allow_nan=False)


def test_bootstrap_is_a_95_percent_interval():
    # 200 ones and 200 zeros: the normal approximation gives 0.5 +- 1.96 * 0.025
    lo, hi = M.mean_ci([1.0, 0.0] * 200)
    assert lo == approx(0.5 - 0.049, abs=0.008) and hi == approx(0.5 + 0.049, abs=0.008)


def test_paired_difference_interval():
    old = [0, 1, 0, 1, 0, 0, 1, 0, 0, 1] * 6
    better = [1, 1, 1, 1, 0, 1, 1, 1, 0, 1] * 6
    d, lo, hi = M.paired_diff_ci(better, old, 0.9)
    assert d == pytest.approx(0.4) and lo > 0 and hi <= 1
    d, lo, hi = M.paired_diff_ci(old, old)
    assert d == lo == hi == 0
    with pytest.raises(ValueError):
        M.paired_diff_ci([1], [1, 0])


# -- against a second, plain implementation (what mutation testing showed the tests above let through) -----------
def _ref_interval(stat, n: int, reps: int = 1000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap written out: `reps` draws of n indices with numpy's generator at `seed`,
    undefined (None or nan) draws left out."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        v = stat(rng.integers(0, n, size=n))
        if v is not None and not math.isnan(v):
            vals.append(v)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    return float(lo), float(hi)


def _hand_macro_f1(exp: list, pred: list) -> float | None:
    """Macro F1 over the labels that occur on either side ("(none)" is never one), by counting."""
    labels = {e for e in exp} | {p for p in pred if p != "(none)"}
    if not labels:
        return None
    f1s = []
    for lab in labels:
        tp = sum(e == lab and p == lab for e, p in zip(exp, pred))
        npred, support = sum(p == lab for p in pred), sum(e == lab for e in exp)
        prec, rec = (tp / npred if npred else 0.0), (tp / support if support else 0.0)
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1s) / len(f1s)


def test_mean_and_paired_intervals_are_the_percentiles_of_seeded_resamples():
    rng = random.Random(2)
    s = [rng.random() for _ in range(50)]  # continuous: one resample more or another seed moves the percentiles
    mean = lambda idx: sum(s[i] for i in idx) / len(idx)  # noqa: E731
    assert M.mean_ci(s) == approx(_ref_interval(mean, 50))  # defaults: 1000 resamples, seed 0
    assert M.mean_ci(s, reps=300, seed=4) == approx(_ref_interval(mean, 50, 300, 4))
    assert M.bootstrap_ci(50, mean) == approx(_ref_interval(mean, 50))
    assert M.bootstrap_ci(50, mean, reps=200, seed=9) == approx(_ref_interval(mean, 50, 200, 9))
    # a resample that is all item 0 must be possible: with [1, 0] the top of the interval is 1
    assert M.mean_ci([1.0, 0.0]) == (0.0, 1.0)
    new, old = _scores(40, 0.7, seed=3), _scores(40, 0.5, seed=4)
    diff = [a - b for a, b in zip(new, old)]
    dmean = lambda idx: sum(diff[i] for i in idx) / len(idx)  # noqa: E731
    d, lo, hi = M.paired_diff_ci(new, old)  # defaults: 95%, 2000 resamples, seed 0
    assert d == approx(sum(diff) / 40) and (lo, hi) == approx(_ref_interval(dmean, 40, 2000, 0, 0.95))
    d, lo, hi = M.paired_diff_ci(new, old, 0.8, reps=500, seed=3)
    assert (lo, hi) == approx(_ref_interval(dmean, 40, 500, 3, 0.8))
    with pytest.raises(ValueError, match=r"paired_diff_ci needs two equally long, non-empty score lists \(1 vs 2\)"):
        M.paired_diff_ci([1], [1, 0])
    with pytest.raises(ValueError, match=r"\(0 vs 0\)"):
        M.paired_diff_ci([], [])


def test_bootstrap_edges_one_item_one_resample_none():
    assert M.bootstrap_ci(1, lambda idx: 0.25) == (0.25, 0.25)  # one item is a sample, not "no data"
    assert M.bootstrap_ci(4, lambda idx: 0.5, reps=1) == (0.5, 0.5)
    assert all(math.isnan(x) for x in M.bootstrap_ci(4, lambda idx: 0.5, reps=0))
    assert all(math.isnan(x) for x in M.bootstrap_ci(4, lambda idx: None))  # never defined
    # None (like nan) marks a resample left out: draws without item 0 are undefined here
    stat = lambda idx: 1.0 if 0 in list(idx) else None  # noqa: E731
    assert M.bootstrap_ci(3, stat, reps=50) == (1.0, 1.0)
    s = M.label_summary(["a", "b"], ["a", "a"], ["a", "b"], reps=0)
    assert s["cis"] == {"accuracy": [None, None], "macro_f1": [None, None]} and s["accuracy"] == 0.5


def test_label_summary_intervals_and_values_by_hand():
    exp = ["a", "b", "c", "a", "b", "a", "c", "a", "b", "b", "a", "c"]
    pred = ["a", "b", "a", None, "b", "a", "c", "b", "b", "x", "a", "c"]
    norm = [p if p in ("a", "b", "c") else "(none)" for p in pred]
    acc = lambda idx: sum(exp[i] == norm[i] for i in idx) / len(idx)  # noqa: E731
    f1 = lambda idx: _hand_macro_f1([exp[i] for i in idx], [norm[i] for i in idx])  # noqa: E731
    s = M.label_summary(exp, pred)  # no labels given: the sorted expected labels
    assert s["confusion"]["labels"] == ["a", "b", "c"] and s["n"] == 12
    assert s["accuracy"] == approx(8 / 12) and s["macro_f1"] == approx(f1(range(12)))
    assert s["cis"]["accuracy"] == approx(list(_ref_interval(acc, 12)))
    assert s["cis"]["macro_f1"] == approx(list(_ref_interval(f1, 12)))
    s = M.label_summary(exp, pred, ["c", "b", "a", "d"], seed=7, reps=300)
    assert s["confusion"]["labels"] == ["c", "b", "a", "d"]
    assert s["cis"]["macro_f1"] == approx(list(_ref_interval(f1, 12, 300, 7)))
    assert type(s["accuracy"]) is float and type(s["confusion"]["matrix"][0][0]) is int
    # a label listed twice counts once
    twice = M.classify_metrics(["a", "b"], ["a", "a"], ["a", "b", "a"])
    assert twice["confusion"]["labels"] == ["a", "b"] and twice["confusion"]["matrix"] == [[1, 0, 0], [1, 0, 0]]


# the extract case item by item: parsed, all equal, (tp, fp, fn) pairs, share of fields equal
X_ITEMS = [(1, 1, (3, 0, 0), 1.0), (1, 0, (1, 1, 1), 2 / 3), (0, 0, (0, 0, 3), 0.0)]


def test_field_summary_intervals_by_hand():
    valid = lambda idx: sum(X_ITEMS[i][0] for i in idx) / len(idx)  # noqa: E731
    exact = lambda idx: sum(X_ITEMS[i][1] for i in idx) / len(idx)  # noqa: E731
    share = lambda idx: sum(X_ITEMS[i][3] for i in idx) / len(idx)  # noqa: E731

    def micro(idx):
        tp, fp, fn = (sum(X_ITEMS[i][2][c] for i in idx) for c in range(3))
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0

    for fields in (FIELDS, None):  # without fields: the references' own keys
        s = M.field_summary(X_EXPECTED, X_PREDICTED, fields, seed=2, reps=400)
        assert s["n"] == 3 and list(s["per_field"]) == FIELDS
        assert (s["valid_json"], s["exact_match"], s["field_f1"], s["field_accuracy"]) == approx(
            (2 / 3, 1 / 3, 8 / 13, 5 / 9))
        for key, stat in (("valid_json", valid), ("exact_match", exact), ("field_f1", micro), ("field_accuracy", share)):
            assert s["cis"][key] == approx(list(_ref_interval(stat, 3, 400, 2))), key
    s = M.field_summary(X_EXPECTED, X_PREDICTED)  # default resamples
    assert s["cis"]["field_f1"] == approx(list(_ref_interval(micro, 3)))
    empty = M.field_summary([], [], FIELDS)
    assert empty["field_accuracy"] is None and empty["cis"]["field_accuracy"] == [None, None]


def test_extract_reads_json_text_and_takes_fields_from_the_references():
    expected = ['{"who": "Ada", "when": "1815"}', {"who": "Alan", "where": "Wilmslow", "tags": []}]
    predicted = ['{"who": "ada", "when": "1816"}', "not json at all"]
    m = M.extract_metrics(expected, predicted, [])
    assert list(m["per_field"]) == ["who", "when", "where", "tags"]  # first seen, over the references
    assert m["valid_json"] == 0.5 and m["exact_match"] == 0.0
    # pairs: who tp 1 fn 1; when fp 1 fn 1; where fn 1; tags (an empty list) absent: tp 1, fp 1, fn 3
    assert m["field_f1"] == approx(2 * 1 / (2 * 1 + 1 + 3))
    assert m["per_field"]["who"] == approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_field"]["tags"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # an empty object is absent like null: predicting {} where the reference has {} is no pair at all
    m = M.extract_metrics([{"a": {}, "b": "x"}], [{"a": {}, "b": "x"}], ["a", "b"])
    assert m["per_field"]["a"]["support"] == 0 and m["field_f1"] == 1.0 and m["exact_match"] == 1.0
    assert M.field_scores(expected, predicted) == approx([0.5, 0.0])  # the reference's own keys
    assert M.field_scores([{}], [{"a": 1}]) == [0.0]  # no fields at all
    assert M.field_scores([{"a": 1}], ['{"a": 1, "b": 2}'], ["a", "b"]) == [0.5]
    with pytest.raises(ValueError, match="2 expected items but 1 predicted; they must pair up one to one"):
        M.extract_metrics([{}, {}], [{}], [])


def test_text_summary_switches_and_intervals_by_hand():
    exp = ["red fox", "the blue sky", "green", "x y"]
    pred = ["red fox", "blue sky", None, "y x"]
    f1 = [1.0, 0.8, 0.0, 1.0]  # bag of words: "the" counts, order does not
    rl = [1.0, 0.8, 0.0, 0.5]  # LCS of "y x" against "x y" is one word
    em = [1.0, 1.0, 0.0, 0.0]  # "the" is dropped by the normalisation
    srcs = ["red fox den", None, None, "nothing here"]
    cited = [1.0, None, None, 0.0]
    s = M.text_summary(exp, pred, srcs, seed=1, reps=300)
    assert (s["exact_match"], s["token_f1"], s["rouge_l"], s["citation_rate"]) == approx((0.5, 0.7, 0.575, 0.5))
    for key, per in (("exact_match", em), ("token_f1", f1), ("rouge_l", rl)):
        assert s["cis"][key] == approx(list(_ref_interval(lambda idx, a=per: sum(a[i] for i in idx) / len(idx),
                                                           4, 300, 1))), key

    def cite(idx):
        got = [cited[i] for i in idx if cited[i] is not None]
        return sum(got) / len(got) if got else None

    assert s["cis"]["citation_rate"] == approx(list(_ref_interval(cite, 4, 300, 1)))
    plain = M.text_summary(exp, pred, srcs, exact_match=False, citations=False, reps=50)
    assert set(plain) == {"n", "token_f1", "rouge_l", "cis"} and set(plain["cis"]) == {"token_f1", "rouge_l"}
    # without citations the sources are not read, so a short list is no error
    assert M.text_summary(exp, pred, ["x"], citations=False, reps=10)["n"] == 4
    with pytest.raises(ValueError, match="4 expected items but 1 sources"):
        M.text_summary(exp, pred, ["x"], reps=10)
    with pytest.raises(ValueError, match="4 expected items but 3 sources"):
        M.answer_metrics(exp, pred, srcs[:3])
    assert M.text_scores(exp, pred) == approx(f1)


def test_answer_normalisation_and_empty_texts():
    assert M.normalize_answer(None) == "" and M.normalize_answer("") == ""
    assert M.normalize_answer("$5 (net)") == "5 net"  # an ASCII symbol that is not Unicode punctuation
    assert M.normalize_answer("The  End — «fin»") == "end fin"
    assert M.rouge_l("", "") == 1.0 and M.rouge_l(None, None) == 1.0
    assert M.rouge_l("word", "") == 0.0 and M.rouge_l("", "word") == 0.0
    assert M.lcs_length([], [1]) == 0 and M.lcs_length([1], []) == 0
    assert M.cites(None, SOURCE) is False and M.cites("retry limit", None) is False
    assert M.cites("retry limit", SOURCE) is True
    assert M.label_scores(["a", "b", None], ["a", None, None]) == [1.0, 0.0, 0.0]  # None never matches
    with pytest.raises(ValueError, match="'neutre' .*; add it to the task's labels or fix the item$"):
        M.classify_metrics(["neutre"], ["a"], ["a", "b"])


def test_summary_defaults_over_many_items_and_one_resample():
    # 30 extract items built so that each one's pairs are known: fields f0..f3, item i gets the first i % 5 right,
    # invents a value for field f4 (not in the reference) on every third item, and leaves the rest out
    names = ["f0", "f1", "f2", "f3", "f4"]
    exp = [{f"f{j}": f"v{i}-{j}" for j in range(4)} for i in range(30)]
    pred = [{**{f"f{j}": f"v{i}-{j}" for j in range(i % 5)}, **({"f4": "made up"} if i % 3 == 0 else {})}
            for i in range(30)]
    tp = [min(i % 5, 4) for i in range(30)]
    fp = [int(i % 3 == 0) for i in range(30)]
    fn = [4 - t for t in tp]

    def micro(idx):
        a, b, c = (sum(x[i] for i in idx) for x in (tp, fp, fn))
        return 2 * a / (2 * a + b + c) if a + b + c else 1.0

    s = M.field_summary(exp, pred, names)
    assert s["field_f1"] == approx(micro(range(30)))
    assert s["cis"]["field_f1"] == approx(list(_ref_interval(micro, 30)))  # 1000 resamples at seed 0
    # token F1 of a prefix of the reference: 2m / (m + k) for m of k words
    gold = [" ".join(f"w{j}" for j in range(2 + i % 7)) for i in range(30)]
    said = [" ".join(f"w{j}" for j in range(i % 3)) for i in range(30)]
    f1 = [2 * (i % 3) / (i % 3 + 2 + i % 7) for i in range(30)]
    t = M.text_summary(gold, said, citations=False)
    assert t["token_f1"] == approx(sum(f1) / 30)
    assert t["cis"]["token_f1"] == approx(list(_ref_interval(lambda idx: sum(f1[i] for i in idx) / len(idx), 30)))
    one = M.label_summary(["a", "b", "a"], ["a", "a", "a"], reps=1, seed=3)
    assert all(lo == hi and lo is not None for lo, hi in one["cis"].values())  # one resample: one value


def test_extract_fields_given_are_the_only_fields_and_odd_predictions_are_invalid():
    exp = [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    pred = [{"a": "1", "b": "9"}, [1, 2]]  # a list is no object
    m = M.extract_metrics(exp, pred, ["a"])
    assert list(m["per_field"]) == ["a"] and m["exact_match"] == 0.5 and m["valid_json"] == 0.5
    assert m["field_f1"] == approx(2 * 1 / (2 * 1 + 0 + 1))
    s = M.field_summary(exp, pred, ["a"], reps=20)
    assert s["field_accuracy"] == 0.5 and list(s["per_field"]) == ["a"] and s["exact_match"] == 0.5
    assert M.extract_metrics(exp, [5, None], ["a", "b"])["valid_json"] == 0.0
    empty = M.extract_metrics([], [], ["a"])
    assert (empty["valid_json"], empty["exact_match"], empty["field_f1"]) == (None, None, None)


def test_a_missing_answer_matches_an_empty_reference():
    assert M.text_scores(["", "x"], [None, None]) == [1.0, 0.0]
    m = M.answer_metrics([""], [None], [None])
    assert (m["exact_match"], m["token_f1"], m["rouge_l"]) == (1.0, 1.0, 1.0)


def test_the_abstention_is_an_answer_of_its_own_in_every_text_metric():
    """An open-book student's "The documents do not contain the answer." scores 1 only where the item expects
    it; said elsewhere, or missed where it is expected, it scores 0 even where plain word overlap is high.
    Expected values by hand: the other items are exact matches (1) or share no word (0)."""
    abstain = "The documents do not contain the answer."
    expected = [abstain, "The documents do not contain it", abstain, "json_extract", "json_extract"]
    predicted = ["the documents do NOT contain the answer [2]", abstain,
                 "the documents contain the answer", "json_extract", "bm25"]
    want = [1.0, 0.0, 0.0, 1.0, 0.0]
    assert M.text_scores(expected, predicted) == want
    got = M.answer_metrics(expected, predicted, [None] * 5)
    for name in ("exact_match", "token_f1", "rouge_l"):
        assert got[name] == pytest.approx(sum(want) / 5), name
    # Without the rule, plain overlap would have scored items 2 and 3 well above 0.
    assert M.token_f1(predicted[1], expected[1]) > 0.5 and M.token_f1(predicted[2], expected[2]) > 0.5
