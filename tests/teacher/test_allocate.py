"""Allocation of the teacher's jobs over arms (teacher/allocate.py): the policies (uniform, thompson,
ucb) against planted feedback, unbiased rounding, the job plan, and boosts; expected values are
worked out by hand or counted over many draws, never taken from the code under test."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from taskling.core.errors import TasklingError
from taskling.teacher import allocate

ARMS = [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
SIZES = {a: 10 for a in ARMS}


def test_learning_policies_favour_the_arm_that_fails_and_keep_a_floor():
    fb = {a: {"items": 10, "errors": 1, "tried": 10, "kept": 9} for a in ARMS}
    fb[(1, "b")] = {"items": 10, "errors": 9, "tried": 10, "kept": 9}  # the planted weak arm
    for name in ("thompson", "ucb"):
        w = allocate.get_policy(name, seed=3, floor=0.2).weights(SIZES, fb)
        assert sum(w.values()) == pytest.approx(1.0)
        assert max(w, key=w.get) == (1, "b"), (name, w)
        assert w[(1, "b")] > 2 * w[(0, "a")]
        assert min(w.values()) >= 0.2 / len(ARMS) - 1e-9  # nothing starves
    uniform = allocate.get_policy("uniform").weights(SIZES, fb)
    assert set(uniform.values()) == {0.25}
    # a teacher that never gets an arm right is a poor place to spend: the keep rate lowers its weight
    fb2 = {a: {"items": 10, "errors": 5, "tried": 20, "kept": 18} for a in ARMS}
    fb2[(0, "a")] = {"items": 10, "errors": 5, "tried": 20, "kept": 1}
    w2 = allocate.get_policy("thompson", seed=3).weights(SIZES, fb2)
    assert w2[(0, "a")] < min(w2[a] for a in ARMS if a != (0, "a"))
    # uncertainty on unlabelled chunks counts when there are no dev items
    fb3 = {a: {"uncertainty": 0.1} for a in ARMS} | {(0, "b"): {"uncertainty": 0.9}}
    w3 = allocate.get_policy("ucb", uncertainty_weight=1.0).weights(SIZES, fb3)
    assert max(w3, key=w3.get) == (0, "b")
    # an arm seen on few items borrows its label's error rate (pooled prior)
    post = allocate.posteriors(SIZES, {(0, "a"): {"items": 40, "errors": 36}})
    a, b = post[(1, "a")]["err"]
    assert a / (a + b) > 0.8
    with pytest.raises(Exception, match="loop.policy 'greedy' is unknown"):
        allocate.get_policy("greedy", "loop.policy")


def test_split_random_is_unbiased_and_exact():
    w = {"x": 0.55, "y": 0.3, "z": 0.1, "t": 0.05}
    rng = random.Random(0)
    totals = Counter()
    for _ in range(4000):
        c = allocate.split_random(7, w, rng)
        assert sum(c.values()) == 7 and all(v >= 0 for v in c.values())
        totals.update(c)
    for k, v in w.items():  # each arm gets its share on average, even the one below one job a round
        assert totals[k] / 4000 == pytest.approx(7 * v, rel=0.05)
    assert allocate.split_random(0, w, rng) == {k: 0 for k in sorted(w)}


def test_arm_names_keys_and_labels():
    assert allocate.arm_key((3, "node")) == '[3, "node"]' and allocate.arm_key([None, None]) == "[null, null]"
    assert allocate.arm_name((3, "node")) == "topic 3 / node" and allocate.arm_name((None, None)) == "topic - / -"
    topics = {3: "streams"}
    assert allocate.arm_label((3, "node"), topics) == "streams / node"
    assert allocate.arm_label((4, "node"), topics) == "topic 4 / node"
    assert allocate.arm_label((None, "node"), topics) == "all topics / node"
    assert allocate.arm_label((3, None), topics) == "streams"


def test_uniform_splits_by_label_then_by_each_labels_chunks():
    sizes = {(0, "a"): 30, (1, "a"): 10, (0, "b"): 5}
    w = allocate.get_policy("uniform").weights(sizes, {})
    assert w == pytest.approx({(0, "a"): 0.5 * 30 / 40, (1, "a"): 0.5 * 10 / 40, (0, "b"): 0.5})
    # without labels: an equal share per topic, whatever its size
    w = allocate.get_policy("uniform").weights({(0, None): 30, (1, None): 10}, {})
    assert w == pytest.approx({(0, None): 0.5, (1, None): 0.5})


def test_posteriors_by_hand():
    sizes = {(0, "a"): 10, (1, "a"): 10, (0, "b"): 20}
    fb = {(0, "a"): {"items": 4, "errors": 3, "tried": 10, "kept": 7, "uncertainty": 0.4},
          (1, "a"): {"items": 2, "errors": 1}}
    post = allocate.posteriors(sizes, fb, prior_strength=2.0)
    m = (3 + 1 + 1) / (4 + 2 + 2)  # label a's pooled error rate, Laplace-smoothed: 5/8
    assert post[(0, "a")]["err"] == pytest.approx((2 * m + 3, 2 * (1 - m) + 4 - 3))
    assert post[(1, "a")]["err"] == pytest.approx((2 * m + 1, 2 * (1 - m) + 2 - 1))
    assert post[(0, "b")]["err"] == pytest.approx((2 * 0.5, 2 * 0.5))  # no feedback on label b: 1/2
    assert post[(0, "a")]["keep"] == (8, 4) and post[(1, "a")]["keep"] == (1, 1)
    assert post[(0, "a")]["unc"] == 0.4 and post[(1, "a")]["unc"] is None
    assert (post[(0, "a")]["n"], post[(1, "a")]["n"], post[(0, "b")]["n"]) == (4, 2, 0)
    assert post[(0, "b")]["mass"] == pytest.approx(0.5) and post[(0, "a")]["mass"] == pytest.approx(0.25)


def test_mix_and_floor_by_hand():
    assert allocate.mix(0.2, None, 0.5) == 0.2 and allocate.mix(0.2, 0.6, 0.25) == pytest.approx(0.3)
    assert allocate.floored({}, 0.2) == {}
    assert allocate.floored({"x": 0.0, "y": 0.0}, 0.2) == {"x": 0.5, "y": 0.5}
    assert allocate.floored({"x": 3.0, "y": 1.0}, 0.2) == pytest.approx({"x": 0.1 + 0.8 * 0.75, "y": 0.1 + 0.8 * 0.25})


def test_split_is_largest_remainder_and_exact():
    assert allocate.split(10, {"x": 0.5, "y": 0.3, "z": 0.2}) == {"x": 5, "y": 3, "z": 2}
    got = allocate.split(7, {"x": 0.5, "y": 0.25, "z": 0.25})
    assert sum(got.values()) == 7 and got["x"] in (3, 4) and all(v >= 1 for v in got.values())
    assert sum(allocate.split(0, {"x": 1.0}).values()) == 0


def test_policies_are_seeded_and_unknown_options_named():
    fb = {a: {"items": 10, "errors": 2 + 2 * i, "tried": 10, "kept": 8} for i, a in enumerate(ARMS)}
    for name in ("thompson", "ucb"):
        one = allocate.get_policy(name, seed=5).weights(SIZES, fb)
        assert allocate.get_policy(name, seed=5).weights(SIZES, fb) == one  # the same seed, the same shares
        assert sum(one.values()) == pytest.approx(1.0)
        assert max(one, key=one.get) == ARMS[-1]  # the most errors
    w = allocate.get_policy("thompson", seed=1, floor=1.0).weights(SIZES, fb)
    assert w == pytest.approx({a: 0.25 for a in ARMS})  # floor 1: everyone the equal share
    assert allocate.get_policy("ucb", floor=1.0).weights(SIZES, fb) == pytest.approx({a: 0.25 for a in ARMS})


def test_boosts_are_recorded_once_and_apply_to_the_next_round_of_their_run(tmp_path):
    path = tmp_path / "sub" / "boosts.jsonl"
    assert allocate.read_boosts(path) == [] and allocate.boosts_for(path, 1) == {}
    rec = allocate.boost(path, (2, "node"), after_round=0, note="from the UI", run="r1")
    assert rec["arm"] == [2, "node"] and rec["after_round"] == 0 and rec["factor"] == 2.0
    assert rec["run"] == "r1" and rec["note"] == "from the UI" and rec["at"]
    assert allocate.boost(path, [2, "node"], after_round=0, run="r1") == rec  # asking twice is one boost
    allocate.boost(path, (3, "sqlite"), after_round=0, factor=3)  # any run
    allocate.boost(path, (2, "node"), after_round=0, run="r2")  # another run's
    allocate.boost(path, (4, "python"), after_round=1, run="r1")  # a later round
    with open(path, "a") as f:
        f.write('{"arm": [9, "torn"\n["not", "a", "record"]\n{"arm": "x"}\n')  # a torn line and junk: skipped
    assert len(allocate.read_boosts(path)) == 4
    assert allocate.boosts_for(path, 1, "r1") == {(2, "node"): 2.0, (3, "sqlite"): 3.0}
    assert allocate.boosts_for(path, 1, "r2") == {(2, "node"): 2.0, (3, "sqlite"): 3.0}
    assert allocate.boosts_for(path, 1) == {(3, "sqlite"): 3.0}
    assert allocate.boosts_for(path, 2, "r1") == {(4, "python"): 2.0}
    for bad in (0, -1, float("inf"), "2"):
        with pytest.raises(TasklingError, match="positive number"):
            allocate.boost(path, (1, "x"), after_round=0, factor=bad)
    with pytest.raises(TasklingError, match=r"an arm is \[topic, label\]"):
        allocate.boost(path, (1, "x", 2), after_round=0)
