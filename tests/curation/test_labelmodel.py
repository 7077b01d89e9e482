"""The label model against synthetic sources of known accuracy, and hand-counted tiny examples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from taskling.core.errors import TasklingError
from taskling.curation import labelmodel as lm
from taskling.curation.labelmodel import fit, majority

approx = pytest.approx
ABCD = ["a", "b", "c", "d"]
PRIOR = (0.4, 0.3, 0.2, 0.1)
ACCURACY = (0.9, 0.75, 0.6, 0.45, 0.35)  # the last two are still above chance (0.25)
COVERAGE = (0.5, 0.7, 0.9, 0.9, 0.9)


def synthetic(seed, n=2000, labels=ABCD, prior=PRIOR, accuracy=ACCURACY, coverage=COVERAGE):
    """True labels and votes from sources s0, s1...; a wrong vote is uniform over the wrong labels."""
    rng = np.random.default_rng(seed)
    k = len(labels)
    truth = rng.choice(k, size=n, p=prior)
    votes = [{} for _ in range(n)]
    for s, (acc, cov) in enumerate(zip(accuracy, coverage)):
        on = rng.random(n) < cov
        right = rng.random(n) < acc
        voted = np.where(right, truth, (truth + rng.integers(1, k, size=n)) % k)
        for i in np.nonzero(on)[0]:
            votes[i][f"s{s}"] = labels[voted[i]]
    return [labels[t] for t in truth], votes


def hit_rate(predicted, truth):
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


# -- recovery without gold -------------------------------------------------------------------------------------------
def test_recovers_source_accuracies_and_prior_and_beats_majority():
    truth, votes = synthetic(seed=0)
    model = fit(votes, ABCD)
    assert model.converged and model.iterations > 1
    for s, true_acc in enumerate(ACCURACY):
        st = model.source(f"s{s}")
        assert st.accuracy == approx(true_acc, abs=0.05), st.name
        lo, hi = st.accuracy_ci
        assert lo < st.accuracy < hi and hi - lo < 0.1
    for label, p in zip(ABCD, PRIOR):
        assert model.prior[label] == approx(p, abs=0.05)
    lm = hit_rate([model.label(i) for i in range(len(truth))], truth)
    mv = hit_rate([lab for lab, _ in majority(votes, ABCD)], truth)
    # measured at seed 0: 0.818 vs 0.757; over seeds 0..49 the margin was never below 0.037
    assert lm >= mv + 0.03
    # confidence means something: the confident half is more often right than the rest
    conf = np.array([model.confidence(i) for i in range(len(truth))])
    right = np.array([model.label(i) == truth[i] for i in range(len(truth))])
    assert right[conf >= np.median(conf)].mean() > right[conf < np.median(conf)].mean() + 0.1


def test_structured_confusion_is_recovered():
    labels = ["A", "B", "C"]
    rng = np.random.default_rng(1)
    n = 1500
    truth, votes = synthetic(seed=1, n=n, labels=labels, prior=(1 / 3,) * 3,
                             accuracy=(0.75, 0.75, 0.75), coverage=(0.8, 0.8, 0.8))
    for i in range(n):
        if rng.random() < 0.9:  # says B whenever the truth is A, else right
            votes[i]["flip"] = "B" if truth[i] == "A" else truth[i]
    model = fit(votes, labels)
    st = model.source("flip")
    conf = np.array(st.confusion)
    assert conf[0, 1] > 0.95 and conf[0, 0] < 0.05  # true A -> voted B
    assert conf[1, 1] > 0.95 and conf[2, 2] > 0.95
    assert st.per_label["A"]["accuracy"] < 0.05 and st.per_label["A"]["votes"] == 0
    assert st.per_label["A"]["precision"] is None
    assert st.per_label["B"]["precision"] == approx(0.5, abs=0.05)  # half its B votes are really A
    measured = np.mean([votes[i]["flip"] == truth[i] for i in range(n) if "flip" in votes[i]])
    assert st.accuracy == approx(measured, abs=0.03)
    # its B vote is evidence for A or B, not a plain B vote: the model beats majority
    lm = hit_rate([model.label(i) for i in range(n)], truth)
    mv = hit_rate([lab for lab, _ in majority(votes, labels)], truth)
    assert lm > mv + 0.02


def test_deterministic_and_independent_of_source_order():
    _, votes = synthetic(seed=2, n=300)
    one = fit(votes, ABCD)
    again = fit(votes, ABCD)
    assert np.array_equal(one.posteriors, again.posteriors)
    flipped = fit(votes, ABCD, sources=["s4", "s3", "s2", "s1", "s0"])
    assert flipped.sources == ["s4", "s3", "s2", "s1", "s0"]
    assert np.allclose(one.posteriors, flipped.posteriors, atol=1e-8)
    assert one.source("s2").accuracy == approx(flipped.source("s2").accuracy, abs=1e-8)
    diagonal = fit(votes, ABCD, init="diagonal")
    assert np.mean([one.label(i) == diagonal.label(i) for i in range(300)]) > 0.98
    uniform = fit(votes, ABCD, class_balance="uniform")
    assert uniform.prior == approx(dict.fromkeys(ABCD, 0.25))


# -- gold ------------------------------------------------------------------------------------------------------------
def test_gold_is_clamped_and_measured_is_plain_accuracy_on_gold():
    truth, votes = synthetic(seed=3, n=800)
    free = fit(votes, ABCD)
    gold = {i: truth[i] for i in range(0, 800, 20)}  # 40 gold items
    wrong_before = [i for i in gold if free.label(i) != gold[i]]
    assert wrong_before  # otherwise the clamping below proves nothing
    model = fit(votes, ABCD, gold=gold)
    assert all(model.label(i) == lab for i, lab in gold.items())
    assert all(model.confidence(i) == 1.0 for i in gold)
    assert model.gold == gold
    for s in range(5):
        name = f"s{s}"
        on_gold = [i for i in gold if name in votes[i]]
        st = model.source(name)
        assert st.measured_n == len(on_gold)
        assert st.measured == approx(np.mean([votes[i][name] == gold[i] for i in on_gold]))
    assert free.source("s0").measured is None and free.source("s0").measured_n == 0


def test_gold_calibrates_a_lone_source():
    # one source alone cannot be checked against anything: without gold its estimate is
    # the smoothing prior's idea, not the data's; gold pulls it to what gold measures
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 400)
    said = np.where(rng.random(400) < 0.7, truth, 1 - truth)
    labels = ["no", "yes"]
    votes = [{"rule": labels[v]} for v in said]
    gold = {i: labels[truth[i]] for i in range(50)}
    blind = fit(votes, labels).source("rule")
    st = fit(votes, labels, gold=gold).source("rule")
    assert st.measured == approx(np.mean(said[:50] == truth[:50])) and st.measured_n == 50
    assert abs(st.accuracy - st.measured) < 0.03  # measured at seed 4: 0.556 vs 0.54
    assert abs(blind.accuracy - st.measured) > 0.2  # 0.792 without gold


def test_gold_init_survives_sources_worse_than_chance():
    # three of four sources are right less often than chance, so the majority is mostly wrong
    # and EM from it settles on the label-switched solution; init="gold" keeps the true one
    labels = ["p", "q"]
    truth, votes = synthetic(seed=7, n=1000, labels=labels, prior=(0.5, 0.5),
                             accuracy=(0.35, 0.35, 0.4, 0.8), coverage=(1, 1, 1, 1))
    gold = {i: truth[i] for i in range(20)}
    switched = fit(votes, labels, gold=gold)
    anchored = fit(votes, labels, gold=gold, init="gold")
    assert hit_rate([switched.label(i) for i in range(1000)], truth) < 0.5
    assert hit_rate([anchored.label(i) for i in range(1000)], truth) > 0.75
    # near-chance sources say little, so the estimates are looser than in the first test
    # (measured at seed 7: 0.743 and 0.32)
    assert anchored.source("s3").accuracy == approx(0.8, abs=0.08)
    assert anchored.source("s0").accuracy == approx(0.35, abs=0.08)
    # the report shows what went wrong in the first fit: estimate far from measured
    assert abs(switched.source("s3").accuracy - switched.source("s3").measured) > 0.3
    with pytest.raises(TasklingError, match='init "gold" needs gold labels'):
        fit(votes, labels, init="gold")


# -- counts on a tiny example ----------------------------------------------------------------------------------------
TINY = [
    {"a": "pos", "b": "pos", "c": "neg"},
    {"a": "pos", "b": None},
    {"b": "neg", "c": "neg"},
    {"a": "neg", "c": "pos"},
    {},
    {"c": "pos"},
]


def test_coverage_overlap_conflict_agreement_by_hand():
    model = fit(TINY, ["pos", "neg"], sources=["a", "b", "c", "never"])
    a, b, c, never = model.stats
    assert (a.votes, b.votes, c.votes, never.votes) == (3, 2, 4, 0)
    assert a.coverage == approx(3 / 6) and b.coverage == approx(2 / 6) and c.coverage == approx(4 / 6)
    assert a.overlap == approx(2 / 6) and b.overlap == approx(2 / 6) and c.overlap == approx(3 / 6)
    assert a.conflict == approx(2 / 6) and b.conflict == approx(1 / 6) and c.conflict == approx(2 / 6)
    # item 0: a's others are b=pos, c=neg, a tie, so half credit; item 3: c says pos, a neg
    assert a.agreement == approx((0.5 + 0) / 2)
    assert b.agreement == approx((0.5 + 1) / 2)
    assert c.agreement == approx((0 + 1 + 0) / 3)
    assert a.per_label["pos"]["votes"] == 2 and a.per_label["neg"]["votes"] == 1
    assert never.coverage == 0 and never.accuracy is None and never.accuracy_ci is None
    assert never.agreement is None and never.overlap == 0 and never.conflict == 0
    # nobody voted on item 4: no label, no confidence, the prior as posterior
    assert model.label(4) is None and model.confidence(4) == 0.0
    assert model.posteriors[4] == approx([model.prior["pos"], model.prior["neg"]])
    assert model.label(1) == "pos" and model.label(2) == "neg"


def test_majority_shares_and_ties():
    assert majority(TINY, ["pos", "neg"]) == [
        ("pos", approx(2 / 3)), ("pos", 1.0), ("neg", 1.0),
        ("pos", 0.5),  # a tie goes to the label listed first
        (None, 0.0), ("pos", 1.0)]
    assert majority(TINY, ["neg", "pos"])[3] == ("neg", 0.5)


# -- degenerate cases ------------------------------------------------------------------------------------------------
def test_one_source_follows_its_votes_with_finite_confidence():
    labels = ["x", "y", "z"]
    said = ["x", "y", "x", "z", "x", "y"] * 10
    model = fit([{"only": v} for v in said], labels)
    assert np.isfinite(model.posteriors).all()
    assert [model.label(i) for i in range(len(said))] == said
    conf = [model.confidence(i) for i in range(len(said))]
    assert all(0.5 < c < 1.0 for c in conf)
    # the posterior is the vote weighed by the source's estimated confusion and the prior
    cm, pr = np.array(model.stats[0].confusion), np.array([model.prior[lab] for lab in labels])
    expect = pr * cm[:, 0] / (pr * cm[:, 0]).sum()
    assert model.posteriors[0] == approx(expect, abs=1e-5)


def test_everyone_abstains():
    model = fit([{"a": None}, {}, {"b": None}], ["p", "q"])
    assert model.sources == ["a", "b"]
    assert np.isfinite(model.posteriors).all()
    assert model.prior == approx({"p": 0.5, "q": 0.5})
    assert [model.label(i) for i in range(3)] == [None, None, None]
    assert all(st.accuracy is None and st.coverage == 0 for st in model.stats)
    assert model.converged
    empty = fit([], ["p", "q"])
    assert empty.posteriors.shape == (0, 2) and empty.stats == []


def test_label_never_voted_and_source_stuck_on_one_label():
    labels = ["a", "b", "c", "unused"]
    truth, votes = synthetic(seed=5, n=600, labels=labels, prior=(0.5, 0.3, 0.2, 0.0),
                             accuracy=(0.85, 0.75, 0.7), coverage=(0.9, 0.9, 0.9))
    for v in votes:  # synthetic errors can land on "unused": keep it truly unvoted
        for s, lab in list(v.items()):
            if lab == "unused":
                del v[s]
    baseline = fit(votes, labels)
    for v in votes:
        v["stuck"] = "a"
    model = fit(votes, labels)
    assert np.isfinite(model.posteriors).all()
    assert model.prior["unused"] < 0.01
    assert "unused" not in {model.label(i) for i in range(600)}
    stuck = model.source("stuck")
    # votes "a" whatever the truth, so its vote is no evidence ("unused" keeps the smoothing prior)
    assert all(row[0] > 0.95 for row in stuck.confusion[:3])
    assert stuck.accuracy == approx(model.prior["a"], abs=0.03)
    same = np.mean([model.label(i) == baseline.label(i) for i in range(600)])
    assert same > 0.98


def test_bad_input_names_the_source_and_item():
    labels = ["pos", "neg"]
    with pytest.raises(TasklingError, match=r"item 1: source 'kw' voted 'maybe'"):
        fit([{"kw": "pos"}, {"llm": "neg", "kw": "maybe"}], labels)
    with pytest.raises(TasklingError, match=r"item 0: source 'kw' voted 'maybe'"):
        majority([{"kw": "maybe"}], labels)
    with pytest.raises(TasklingError, match=r"item 0: source 'other' is not one of the sources"):
        fit([{"other": "pos"}], labels, sources=["kw"])
    with pytest.raises(TasklingError, match="at least 2 labels"):
        fit([{"kw": "pos"}], ["pos"])
    with pytest.raises(TasklingError, match=r"gold item 0: label 'spam' is not one of the labels"):
        fit([{"kw": "pos"}], labels, gold={0: "spam"})
    with pytest.raises(TasklingError, match=r"gold item 5 is out of range: there are 1 items"):
        fit([{"kw": "pos"}], labels, gold={5: "pos"})
    with pytest.raises(TasklingError, match=r"gold item -1 is out of range"):
        fit([{"kw": "pos"}], labels, gold={-1: "pos"})
    with pytest.raises(TasklingError, match=r"item 1: votes must map"):
        fit([{"kw": "pos"}, "pos"], labels)
    with pytest.raises(TasklingError, match="init must be one of"):
        fit([{"kw": "pos"}], labels, init="random")
    with pytest.raises(TasklingError, match="smoothing must be > 0"):
        fit([{"kw": "pos"}], labels, smoothing=0)


# -- report ----------------------------------------------------------------------------------------------------------
def test_to_json_is_json_and_rounded():
    truth, votes = synthetic(seed=6, n=200)
    model = fit(votes + [{}], ABCD, gold={0: truth[0]})
    out = model.to_json()
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["labels"] == ABCD and back["items"] == 201 and back["covered"] == 200 and back["gold"] == 1
    assert len(back["posteriors"]) == 201 and back["assignments"][200] == [None, 0.0]
    assert back["stats"][0]["accuracy_ci"][0] <= back["stats"][0]["accuracy"]

    def floats(x):
        if isinstance(x, float):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from floats(v)
        elif isinstance(x, list):
            for v in x:
                yield from floats(v)

    values = list(floats({k: v for k, v in back.items() if k != "settings"}))
    assert len(values) > 1000
    assert all(round(v, 4) == v for v in values)
    assert "posteriors" not in model.to_json(posteriors=False)


def test_keyword_rules_that_vote_one_label_or_nothing_help_when_their_silence_is_modelled():
    """One rule per label that fires mostly on its own label: ignoring abstentions makes such
    rules useless to Dawid-Skene (worse than majority); modelling them (abstain_sources) wins."""
    rng = np.random.default_rng(3)
    k, n = 5, 1500
    labels = [f"l{i}" for i in range(k)]
    y = rng.choice(k, size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    votes = []
    for t in y:
        v = {f"kw{r}": (labels[r] if rng.random() < (0.6 if t == r else 0.05) else None) for r in range(k)}
        for name, acc in (("llm1", 0.45), ("llm2", 0.35)):
            v[name] = labels[t] if rng.random() < acc else labels[rng.choice([j for j in range(k) if j != t])]
        votes.append(v)
    truth = [labels[t] for t in y]
    score = lambda got: float(np.mean([a[0] == b for a, b in zip(got, truth)]))  # noqa: E731
    maj = score(lm.majority(votes, labels))
    plain = score(lm.fit(votes, labels).assignments())
    rules = [f"kw{r}" for r in range(k)]
    model = lm.fit(votes, labels, abstain_sources=rules)
    assert plain < maj < score(model.assignments()) - 0.04, (plain, maj, score(model.assignments()))
    kw0 = model.source("kw0").per_label
    # P(fires | true label) is learned: high on its own label, low elsewhere (the true rates are 0.6 and
    # 0.05; the estimate of 0.6 runs low because items no source can place drift to the largest label)
    assert kw0["l0"]["fires"] > 0.35 and max(kw0[lab]["fires"] for lab in labels[1:]) < 0.12
    assert model.settings["abstain_sources"] == rules
    # a missing key is "not applicable" and never counts as silence
    partial = [dict(v) for v in votes]
    for v in partial[::2]:
        del v["kw0"]
    assert lm.fit(partial, labels, abstain_sources=rules).source("kw0").votes < model.source("kw0").votes


# -- predict: the fitted model as a classifier ----------------------------------------------------------------------
def test_predict_on_the_fitted_items_gives_their_posteriors():
    truth, votes = synthetic(seed=7, n=400)
    model = fit(votes + [{}], ABCD)
    got = model.predict(votes + [{}])
    assert got[-1] == (None, 0.0)  # nobody voted: no label
    for i in range(len(votes)):  # no refit, the same confusions and prior: the same answer as the fit's E-step
        lab, conf = got[i]
        assert lab == model.label(i) and conf == approx(model.confidence(i), abs=1e-6)
    assert hit_rate([lab for lab, _ in got[:-1]], truth) > 0.75


def test_predict_by_hand_for_one_vote_and_for_two():
    model = fit(TINY, ["pos", "neg"], sources=["a", "b", "c"])
    prior = np.array([model.prior["pos"], model.prior["neg"]])
    ca, cc = np.array(model.source("a").confusion), np.array(model.source("c").confusion)
    # one vote: prior times P(a says neg | true), normalised
    want = prior * ca[:, 1] / (prior * ca[:, 1]).sum()
    (lab, conf), = model.predict([{"a": "neg"}])
    assert lab == ["pos", "neg"][int(np.argmax(want))] and conf == approx(want.max(), abs=1e-6)
    # two votes multiply; an abstention and an unknown-to-this-item source add nothing
    both = prior * ca[:, 0] * cc[:, 1]
    both /= both.sum()
    (lab, conf), = model.predict([{"a": "pos", "c": "neg", "b": None}])
    assert lab == ["pos", "neg"][int(np.argmax(both))] and conf == approx(both.max(), abs=1e-6)
    with pytest.raises(TasklingError, match=r"item 0: source 'kw' voted 'maybe'|source 'kw'"):
        model.predict([{"kw": "maybe"}])


def test_predict_reads_a_modelled_silence_and_needs_the_confusions():
    labels = ["pos", "neg"]
    votes = [{"kw": "pos" if i % 2 == 0 else None, "llm": "pos" if i % 2 == 0 else "neg"} for i in range(40)]
    model = fit(votes, labels, abstain_sources=["kw"])
    # the rule fires on every "pos" item: its silence beside an llm "pos" is evidence against "pos"
    alone, with_silence, only_silence = model.predict([{"llm": "pos"}, {"llm": "pos", "kw": None}, {"kw": None}])
    assert alone[0] == "pos" and (with_silence[0] == "neg" or with_silence[1] < alone[1] - 0.05)
    assert only_silence == (None, 0.0)  # a silence alone is no vote: the item is not covered
    model.conf = None
    with pytest.raises(TasklingError, match="no confusion matrices"):
        model.predict([{"kw": "pos"}])


def test_wilson_interval_by_hand():
    assert lm.wilson(0.5, 100) == approx((0.40383, 0.59617), abs=1e-5)
    assert lm.wilson(0.0, 10) == approx((0.0, 0.27753), abs=1e-5)
    assert lm.wilson(1.0, 10) == approx((0.72247, 1.0), abs=1e-5)
    assert lm.wilson(0.8, 25) == approx((0.60869, 0.91139), abs=1e-5)
    assert lm.wilson(0.8, 25, z=1.0) == approx((0.70917, 0.86775), abs=1e-5)


def test_to_json_carries_every_field_of_every_source_rounded():
    model = fit(TINY, ["pos", "neg"], sources=["a", "b", "c", "never"], gold={1: "pos"})
    out = json.loads(json.dumps(model.to_json()))
    assert (out["iterations"], out["converged"], out["items"], out["covered"], out["gold"]) == \
        (model.iterations, model.converged, 6, 5, 1)
    assert out["prior"] == {k: round(v, 4) for k, v in model.prior.items()}
    assert out["sources"] == ["a", "b", "c", "never"] and out["labels"] == ["pos", "neg"]
    for st, js in zip(model.stats, out["stats"]):
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        assert js == {"name": st.name, "coverage": r(st.coverage), "votes": st.votes, "accuracy": r(st.accuracy),
                      "accuracy_ci": None if st.accuracy_ci is None else [r(x) for x in st.accuracy_ci],
                      "measured": r(st.measured), "measured_n": st.measured_n, "overlap": r(st.overlap),
                      "agreement": r(st.agreement), "conflict": r(st.conflict),
                      "per_label": {lab: {k: (r(v) if isinstance(v, float) else v) for k, v in d.items()}
                                    for lab, d in st.per_label.items()},
                      "confusion": [[r(x) for x in row] for row in st.confusion]}
    a = out["stats"][0]
    assert (a["votes"], a["coverage"], a["measured_n"], a["measured"]) == (3, 0.5, 1, 1.0)
    assert a["per_label"]["pos"]["votes"] == 2 and a["per_label"]["neg"]["votes"] == 1
    assert out["assignments"][4] == [None, 0.0] and out["assignments"][1][0] == "pos"
    with pytest.raises(TasklingError, match="no source 'z'"):
        model.source("z")


# -- against a second, plain implementation (what mutation testing showed the tests above let through) -------------
def reference_fit(votes, labels, sources, *, gold=None, max_iter=200, tol=1e-6, smoothing=1.0, init="majority",
                  learn=True, abstain=()):
    """Dawid-Skene as the module docstring states it, one item, source and label at a time in plain Python:
    Dirichlet pseudo-counts smoothing/K per cell plus smoothing on the diagonal (a modelled source's silence
    as one wrong label, anyone else's never: 1e-12), the prior smoothed by `smoothing` over the covered items,
    gold items clamped, EM from the soft majority (or the smoothing prior, or the gold items' own counts),
    stopped when the objective rises by less than tol per covered item."""
    import math

    gold = {i: labels.index(g) for i, g in (gold or {}).items()}
    n, k = len(votes), len(labels)

    def outcome(i, s):
        v = votes[i].get(s, "missing")
        if v == "missing" or (v is None and s not in abstain):
            return None
        return k if v is None else labels.index(v)

    obs = [[(s, outcome(i, s)) for s in sources if outcome(i, s) is not None] for i in range(n)]
    covered = [any(o < k for _, o in obs[i]) or i in gold for i in range(n)]
    scale = max(sum(covered), 1)

    def alpha(s, t, o):
        if o == k:
            return smoothing / k if s in abstain else 1e-12
        return smoothing / k + (smoothing if o == t else 0.0)

    def m_step(post, items):
        conf = {}
        for s in sources:
            for t in range(k):
                row = [alpha(s, t, o) + sum(post[i][t] for i in items if (s, o) in obs[i]) for o in range(k + 1)]
                conf[s, t] = [x / sum(row) for x in row]
        counts = [sum(post[i][t] for i in items if covered[i]) + smoothing for t in range(k)] if learn else [1.0] * k
        return conf, [c / sum(counts) for c in counts]

    def e_step(conf, prior):
        post, ll = [], 0.0
        for i in range(n):
            logp = [math.log(prior[t]) + sum(math.log(conf[s, t][o]) for s, o in obs[i]) for t in range(k)]
            if i in gold:
                ll += logp[gold[i]]
                post.append([float(t == gold[i]) for t in range(k)])
                continue
            top = max(logp)
            z = sum(math.exp(x - top) for x in logp)
            ll += top + math.log(z)
            post.append([math.exp(x - top) / z for x in logp])
        return post, ll

    def objective(ll, conf, prior):
        obj = ll + sum(alpha(s, t, o) * math.log(conf[s, t][o]) for s in sources for t in range(k) for o in range(k + 1))
        return obj + smoothing * sum(math.log(p) for p in prior) if learn else obj

    if init == "majority":
        post = []
        for i in range(n):
            c = [sum(o == t for _, o in obs[i]) for t in range(k)]
            post.append([float(t == gold[i]) for t in range(k)] if i in gold else
                        [x / sum(c) for x in c] if sum(c) else [1.0 / k] * k)
    elif init == "diagonal":
        post, _ = e_step({(s, t): [alpha(s, t, o) / sum(alpha(s, t, x) for x in range(k + 1)) for o in range(k + 1)]
                          for s in sources for t in range(k)}, [1.0 / k] * k)
    else:
        post = [[float(t == gold.get(i)) for t in range(k)] for i in range(n)]
        gold_conf, gold_prior = m_step(post, sorted(gold))
        post, _ = e_step(gold_conf, gold_prior)
    last, converged = -math.inf, False
    for it in range(1, max_iter + 1):
        conf, prior = m_step(post, range(n))
        post, ll = e_step(conf, prior)
        obj = objective(ll, conf, prior)
        if (obj - last) / scale < tol:
            converged = True
            break
        last = obj
    voted_conf = {key: [x / sum(row[:k]) for x in row[:k]] for key, row in conf.items()}
    return {"post": post, "prior": prior, "conf": voted_conf, "iterations": it, "converged": converged, "obs": obs}


def _small_votes(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    labels = ["x", "y", "z"]
    truth = rng.integers(0, 3, n)
    votes = []
    for t in truth:
        v = {}
        for name, acc, cov in (("s0", 0.8, 0.7), ("s1", 0.6, 0.8), ("s2", 0.5, 0.9)):
            if rng.random() < cov:
                v[name] = labels[t] if rng.random() < acc else labels[(t + rng.integers(1, 3)) % 3]
        v["kw"] = "y" if (t == 1 and rng.random() < 0.7) or rng.random() < 0.1 else None  # fires mostly on y
        if rng.random() < 0.1:
            del v["kw"]  # not applicable here
        votes.append(v)
    votes[3] = {}  # nobody
    votes[5] = {"kw": None}  # only a silence
    return labels, [labels[t] for t in truth], votes


@pytest.mark.parametrize("case", [
    dict(max_iter=1), dict(max_iter=3, smoothing=0.5), dict(), dict(init="diagonal", learn=False),
    dict(abstain=("kw",)), dict(abstain=("kw",), smoothing=2.0, max_iter=4), dict(gold=True), dict(gold=True, init="gold"),
    dict(gold=True, init="gold", abstain=("kw",), learn=False, tol=1e-3)])
def test_fit_matches_a_plain_dawid_skene(case):
    labels, truth, votes = _small_votes(11)
    case = dict(case)
    if case.pop("gold", False):
        case["gold"] = {i: truth[i] for i in (0, 7, 12, 20, 25)}
    sources = ["s0", "s1", "s2", "kw"]
    want = reference_fit(votes, labels, sources, **case)
    args = {k: v for k, v in case.items() if k not in ("learn", "abstain")}
    model = fit(votes, labels, sources=sources, class_balance="learn" if case.get("learn", True) else "uniform",
                abstain_sources=list(case.get("abstain", ())), **args)
    assert (model.iterations, model.converged) == (want["iterations"], want["converged"])
    assert model.posteriors.tolist() == [approx(row, abs=1e-9) for row in want["post"]]
    assert [model.prior[lab] for lab in labels] == approx(want["prior"], abs=1e-12)
    for s in sources:
        assert model.source(s).confusion == [approx(want["conf"][s, t], abs=1e-9) for t in range(3)], s
        # accuracy: the posterior weight of each vote's own label, over its votes
        mine = [(i, o) for i, ob in enumerate(want["obs"]) for src, o in ob if src == s and o < 3]
        assert model.source(s).accuracy == approx(sum(want["post"][i][o] for i, o in mine) / len(mine), abs=1e-9)
        for t, lab in enumerate(labels):
            pl = model.source(s).per_label[lab]
            on_t = [i for i, o in mine if o == t]
            assert pl["votes"] == len(on_t)
            assert pl["support"] == approx(sum(want["post"][i][t] for i, _ in mine), abs=1e-9)
            assert pl["precision"] == (approx(sum(want["post"][i][t] for i in on_t) / len(on_t), abs=1e-9)
                                       if on_t else None)
    assert model.label(3) is None and model.label(5) is None and model.confidence(5) == 0.0


def test_the_smoothing_prior_alone_and_the_report_of_settings():
    # a source with no votes keeps the smoothing prior: (K+1)/(2K) on the diagonal of what it votes
    model = fit(TINY, ["pos", "neg"], sources=["a", "b", "c", "never", "rule"], abstain_sources=["rule", "ghost"])
    assert model.source("never").confusion == [approx([0.75, 0.25]), approx([0.25, 0.75])]
    assert model.source("never").per_label["pos"]["accuracy"] is None and "fires" not in \
        model.source("never").per_label["pos"]
    # a modelled source never seen: its silence is one wrong label's worth, 1/2 / (1/2 + 1 + 1/2 + 1/2)
    assert [model.source("rule").per_label[lab]["fires"] for lab in ("pos", "neg")] == approx([0.8, 0.8])
    assert model.settings == {"max_iter": 200, "tol": 1e-6, "smoothing": 1.0, "init": "majority",
                              "class_balance": "learn", "abstain_sources": ["rule"]}
    assert model.to_json(posteriors=False)["settings"] == model.settings
    four = fit([{"s": "a"}, {}], ABCD, sources=["s", "quiet"])
    assert np.diag(four.source("quiet").confusion) == approx([5 / 8] * 4)  # 0.625 for 4 labels


def test_a_model_built_by_hand_counts_every_item_as_covered():
    model = lm.LabelModel(labels=["p", "q"], sources=["s"], prior={"p": 0.5, "q": 0.5}, stats=[],
                          posteriors=np.array([[0.2, 0.8], [0.6, 0.4]]), iterations=1, converged=True)
    assert model.assignments() == [("q", 0.8), ("p", 0.6)]
    out = model.to_json()
    assert (out["items"], out["covered"], out["gold"], out["settings"]) == (2, 2, 0, {})
    assert out["assignments"] == [["q", 0.8], ["p", 0.6]] and out["posteriors"] == [[0.2, 0.8], [0.6, 0.4]]


def test_more_bad_input_messages():
    labels = ["pos", "neg"]
    with pytest.raises(TasklingError, match=r"^labels must be strings, got 3 in \['pos', 3\]$"):
        fit([], ["pos", 3])
    with pytest.raises(TasklingError, match=r"^labels are listed more than once: \['pos'\]$"):
        majority([], ["pos", "neg", "pos"])
    with pytest.raises(TasklingError, match=r"^a label model needs at least 2 labels, got \['pos'\]$"):
        fit([], ["pos"])
    with pytest.raises(TasklingError, match=r"^sources are listed more than once: \['kw'\]$"):
        fit([{"kw": "pos"}], labels, sources=["kw", "llm", "kw"])
    with pytest.raises(TasklingError, match=r"^item 0: votes must map a source name to a label, got list$"):
        fit([["pos"]], labels, sources=["kw"])
    with pytest.raises(TasklingError, match=r"^item 1: votes must map a source name to a label, got str$"):
        majority([{"kw": "pos"}, "pos"], labels)
    with pytest.raises(TasklingError, match=r"^item 0: source 'kw' voted 1, which is not one of the labels"):
        fit([{"kw": 1}], labels)
    with pytest.raises(TasklingError, match=r"^gold item True is out of range: there are 2 items \(0\.\.1\)$"):
        fit([{"kw": "pos"}, {}], labels, gold={True: "pos"})
    assert fit([{"kw": "pos"}, {}], labels, gold={np.int64(1): "neg"}).gold == {1: "neg"}
    with pytest.raises(TasklingError, match=r"^init must be one of \['majority', 'diagonal', 'gold'\], got 'random'$"):
        fit([{"kw": "pos"}], labels, init="random")
    with pytest.raises(TasklingError, match=r"^class_balance must be one of \['learn', 'uniform'\], got 'auto'$"):
        fit([{"kw": "pos"}], labels, class_balance="auto")
    with pytest.raises(TasklingError, match=r"^smoothing must be > 0 \(it keeps every probability non-zero\), got -1"):
        fit([{"kw": "pos"}], labels, smoothing=-1)
    with pytest.raises(TasklingError, match=r"^max_iter must be at least 1, got 0$"):
        fit([{"kw": "pos"}], labels, max_iter=0)
    assert fit([{"kw": "pos"}], labels, max_iter=1).iterations == 1
    with pytest.raises(TasklingError, match=r"^no source 'z' in the label model; sources are \['kw'\]$"):
        fit([{"kw": "pos"}], labels).source("z")


def test_wilson_stays_within_zero_and_one():
    for n in range(1, 200):  # at p = 1 the upper end computes to a hair over 1 for some n (16, 40, ...)
        for p in (0.0, 1.0, 1 / n):
            lo, hi = lm.wilson(p, n)
            assert 0.0 <= lo <= p <= hi <= 1.0, (p, n)


def _hand_model(n_sources: int) -> "lm.LabelModel":
    """Sources that are right 9 times in 10 on two labels, built by hand (no fit, no settings)."""
    conf = np.tile(np.array([[0.9, 0.1, 1e-12], [0.1, 0.9, 1e-12]]), (n_sources, 1, 1))
    return lm.LabelModel(labels=["p", "q"], sources=[f"s{i}" for i in range(n_sources)], prior={"p": 0.5, "q": 0.5},
                         stats=[], posteriors=np.zeros((0, 2)), iterations=0, converged=True, conf=conf)


def test_predict_in_log_space_row_by_row_and_without_settings():
    model = _hand_model(1000)
    all_p = {f"s{i}": "p" for i in range(1000)}
    split = {f"s{i}": "p" if i % 2 else "q" for i in range(1000)}  # log-likelihood about -1200 for either label
    (lab, conf), (lab2, conf2) = model.predict([all_p, split])
    assert lab == "p" and conf == approx(1.0)
    assert (lab2, conf2) == ("p", approx(0.5))  # a tie: the first label, at one half; never nan
    one = _hand_model(2)
    assert one.predict([{"s0": "q", "s1": "q"}]) == [("q", approx(0.81 / 0.82))]
    model.conf = None
    with pytest.raises(TasklingError, match=r"^this label model keeps no confusion matrices to predict with$"):
        model.predict([all_p])


def test_report_keeps_counts_whole_and_majority_keeps_to_its_sources():
    js = fit(TINY, ["pos", "neg"], sources=["a", "b", "c"]).to_json()
    a = js["stats"][0]
    assert type(a["votes"]) is int and type(a["measured_n"]) is int
    assert all(type(d["votes"]) is int for d in a["per_label"].values())
    with pytest.raises(TasklingError, match=r"^item 0: source 'x' is not one of the sources \['kw'\]$"):
        majority([{"x": "pos"}], ["pos", "neg"], sources=["kw"])
    assert majority([{"kw": "neg"}], ["pos", "neg"], sources=["kw", "other"]) == [("neg", 1.0)]


def test_no_items_and_the_last_index_plus_one():
    st = fit([], ["p", "q"], sources=["a"]).stats[0]
    assert (st.coverage, st.overlap, st.conflict, st.votes, st.accuracy) == (0.0, 0.0, 0.0, 0, None)
    with pytest.raises(TasklingError, match=r"^gold item 2 is out of range: there are 2 items \(0\.\.1\)$"):
        fit([{"kw": "pos"}, {}], ["pos", "neg"], gold={2: "pos"})
    with pytest.raises(TasklingError, match=r'^init "gold" needs gold labels: pass gold=\{item index: label\}$'):
        fit([{"kw": "pos"}], ["pos", "neg"], init="gold")


def test_a_vote_that_is_no_label_at_all_and_a_fit_on_one_item():
    with pytest.raises(TasklingError, match=r"^item 0: source 'kw' voted \['pos'\], which is not one of the labels"):
        fit([{"kw": ["pos"]}], ["pos", "neg"])
    # one covered item: the stopping rule divides the objective's rise by 1, not by more
    votes = [{"a": "x", "b": "y", "c": "x"}, {}]
    for tol in (1e-3, 1e-4, 1e-6):
        want = reference_fit(votes, ["x", "y"], ["a", "b", "c"], tol=tol)
        model = fit(votes, ["x", "y"], tol=tol)
        assert (model.iterations, model.converged) == (want["iterations"], want["converged"]), tol
        assert model.posteriors.tolist() == [approx(row, abs=1e-9) for row in want["post"]]
