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
