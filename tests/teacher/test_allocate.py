"""Allocation of the teacher's jobs over arms (teacher/allocate.py): the policies (uniform, thompson,
ucb) against planted feedback, unbiased rounding, the job plan, and boosts; expected values are
worked out by hand or counted over many draws, never taken from the code under test."""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from taskling.core.errors import TasklingError
from taskling.data.pile import Chunk
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


# -- by hand and against a second, plain implementation (what mutation testing showed the tests above let through) --
def _hand_posterior(fb: dict, pooled: tuple[int, int], mass: float) -> dict:
    """One arm's posterior from the module docstring: a Beta(2m + e, 2(1-m) + n - e) error with m the label's
    Laplace-smoothed pooled error rate, a Beta(1 + kept, 1 + tried - kept) keep rate."""
    m = (pooled[0] + 1) / (pooled[1] + 2)
    e, n = fb.get("errors", 0), fb.get("items", 0)
    return {"mass": mass, "err": (2 * m + e, 2 * (1 - m) + n - e),
            "keep": (1 + fb.get("kept", 0), 1 + max(fb.get("tried", 0) - fb.get("kept", 0), 0)),
            "unc": fb.get("uncertainty"), "n": n}


def _floored(shares: dict, floor: float) -> dict:
    total = sum(shares.values())
    return {a: floor / len(shares) + (1 - floor) * v / total for a, v in shares.items()}


FB = {(0, "a"): {"items": 100, "errors": 20, "tried": 30, "kept": 24},
      (1, "a"): {"items": 3, "errors": 2, "uncertainty": 0.9},
      (0, "b"): {"items": 100, "errors": 50, "tried": 2, "kept": 3}}  # kept more than tried: no negative count
SIZES3 = {(0, "a"): 30, (1, "a"): 10, (0, "b"): 5}
MASS3 = {(0, "a"): 0.5 * 30 / 40, (1, "a"): 0.5 * 10 / 40, (0, "b"): 0.5}


# label a pools 22 errors in 103 items, label b 50 in 100
POST3 = {arm: _hand_posterior(FB[arm], (22, 103) if arm[1] == "a" else (50, 100), MASS3[arm]) for arm in FB}


def test_posteriors_default_prior_strength_and_missing_counts():
    got = allocate.posteriors(SIZES3, FB)
    assert set(got) == set(POST3)
    for arm, want in POST3.items():
        assert {k: got[arm][k] for k in ("unc", "n")} == {k: want[k] for k in ("unc", "n")}
        for k in ("mass", "err", "keep"):
            assert got[arm][k] == pytest.approx(want[k]), (arm, k)
    assert POST3[(0, "b")]["keep"] == (4, 1)
    # feedback with no counts at all: nothing seen, a 1/2 prior, an even keep rate
    post = allocate.posteriors({(0, "a"): 1}, {(0, "a"): {"uncertainty": 0.3}})
    assert post == {(0, "a"): {"mass": 1.0, "err": (1.0, 1.0), "keep": (1, 1), "unc": 0.3, "n": 0}}


def test_ucb_by_hand_with_its_default_floor_and_weight():
    want = {}
    for arm, p in POST3.items():
        (ea, eb), (ka, kb) = p["err"], p["keep"]
        err = min(1.0, ea / (ea + eb) + 0.5 * math.sqrt(math.log(203 + 2) / (p["n"] + 1)))  # 203 items seen
        signal = err if p["unc"] is None else 0.5 * err + 0.5 * p["unc"]
        want[arm] = MASS3[arm] * signal * ka / (ka + kb)
    # (1, "a") has seen 3 items: its mean error plus bonus passes 1, and is capped there
    (ea, eb) = POST3[(1, "a")]["err"]
    assert ea / (ea + eb) + 0.5 * math.sqrt(math.log(205) / 4) > 1
    assert allocate.get_policy("ucb").weights(SIZES3, FB) == pytest.approx(_floored(want, 0.25))
    assert allocate.UCB(seed=9).weights(SIZES3, FB) == pytest.approx(_floored(want, 0.25))
    assert allocate.UCB().weights({}, {}) == {}


def _thompson_by_hand(sizes, feedback, seed, floor, w, draws=2000):
    import numpy as np

    post = allocate.posteriors(sizes, feedback)
    arms = sorted(post, key=str)
    rng = np.random.default_rng(seed)
    cols = []
    for a in arms:
        err = rng.beta(*post[a]["err"], size=draws)
        keep = rng.beta(*post[a]["keep"], size=draws)
        signal = err if post[a]["unc"] is None else (1 - w) * err + w * post[a]["unc"]
        cols.append(post[a]["mass"] * signal * keep)
    value = np.stack(cols, axis=1)
    shares = (value / value.sum(axis=1, keepdims=True)).mean(axis=0)
    return _floored({a: float(shares[j]) for j, a in enumerate(arms)}, floor)


def test_thompson_is_the_mean_share_of_2000_seeded_draws():
    assert allocate.Thompson().weights(SIZES3, FB) == pytest.approx(_thompson_by_hand(SIZES3, FB, 0, 0.25, 0.5))
    got = allocate.get_policy("thompson", seed=4, floor=0.1, uncertainty_weight=0.8).weights(SIZES3, FB)
    assert got == pytest.approx(_thompson_by_hand(SIZES3, FB, 4, 0.1, 0.8))
    assert allocate.Thompson().weights({}, {}) == {}


def test_policy_registry_and_the_uniform_policy_ignore_options():
    with pytest.raises(TasklingError, match=r"^generate.policy 'greedy' is unknown; use one of thompson, ucb, uniform$"):
        allocate.get_policy("greedy")
    assert isinstance(allocate.get_policy("uniform", seed=3, floor=0.5), allocate.Uniform)
    assert allocate.get_policy("ucb", floor=1.0).floor == 1.0


def test_floored_one_arm_and_mix_extremes():
    assert allocate.floored({"x": 2.0}, 0.2) == {"x": 1.0}
    assert allocate.floored({"x": 0.0, "y": -1.0}, 0.2) == {"x": 0.5, "y": 0.5}
    assert allocate.mix(0.2, 0.6, 0.0) == 0.2 and allocate.mix(0.2, 0.6, 1.0) == 0.6


class _FixedDraw:
    def __init__(self, u: float):
        self.u = u

    def random(self) -> float:
        return self.u


def test_split_random_by_hand():
    w = {"x": 0.5, "y": 0.25, "z": 0.25}
    # 3 jobs: exact 1.5, 0.75, 0.75; x's whole job, and two dealt at u and u + 1 over the fractions laid end to
    # end, x up to 0.5, y up to 1.25, z up to 2.0 (an arm gets a job when its end passes the point)
    assert allocate.split_random(3, w, _FixedDraw(0.0)) == {"x": 2, "y": 1, "z": 0}
    assert allocate.split_random(3, w, _FixedDraw(0.3)) == {"x": 2, "y": 0, "z": 1}
    assert allocate.split_random(3, w, _FixedDraw(0.5)) == {"x": 1, "y": 1, "z": 1}  # x ends at 0.5: not past it
    # 5 jobs: exact 2.5, 1.25, 1.25; one dealt at u over 0.5 | 0.75 | 1.0
    assert allocate.split_random(5, w, _FixedDraw(0.2)) == {"x": 3, "y": 1, "z": 1}
    assert allocate.split_random(5, w, _FixedDraw(0.6)) == {"x": 2, "y": 2, "z": 1}
    assert allocate.split_random(5, w, _FixedDraw(0.8)) == {"x": 2, "y": 1, "z": 2}
    # a negative weight is no weight; all weights at or below zero: nothing
    assert allocate.split_random(4, {"x": 1.0, "y": -3.0}, _FixedDraw(0.5)) == {"x": 4, "y": 0}
    assert allocate.split_random(4, {"x": 0.0, "y": -3.0}, _FixedDraw(0.5)) == {"x": 0, "y": 0}
    assert allocate.split_random(-1, w, _FixedDraw(0.5)) == {"x": 0, "y": 0, "z": 0}


def test_split_largest_remainder_by_hand():
    # exact 3.5, 1.75, 1.75: floors 3, 1, 1 and the two left go to the largest remainders
    assert allocate.split(7, {"x": 0.5, "y": 0.25, "z": 0.25}) == {"x": 3, "y": 2, "z": 2}
    # a tie goes to the arm that sorts first
    assert allocate.split(10, {"z": 1, "y": 1, "x": 1}) == {"z": 3, "y": 3, "x": 4}
    assert allocate.split(3, {"x": 2.0, "y": -1.0}) == {"x": 3, "y": 0}
    assert allocate.split(3, {"x": -2.0}) == {"x": 0} and allocate.split(-3, {"x": 1.0}) == {"x": 0}


def chunk(key: str, topic=None) -> Chunk:
    return Chunk(id=0, key=key, doc_id=1, path="d.md", sha256="0" * 64, start_char=0, end_char=1, locator="", text="x",
                 topic_id=topic)


def test_plan_jobs_order_chunks_personas_and_counts_by_hand():
    A, B, D = (0, "a"), (1, None), (3, "d")
    pools = {A: [chunk(k) for k in ("a2", "a0", "a1")], B: [chunk("b1"), chunk("b0")], (2, "c"): [],
             D: [chunk("d0")]}
    # new chunks first, then the ones earlier rounds saw, those they wrote from last: a0, a1, a2 and b0, b1
    jobs = allocate.plan_jobs(pools, 0, 7, None, random.Random(1), ["p1", "p2", "p3"], ["easy", "hard"],
                              chunks_per_job=2, counts={A: 4, B: 1, (9, "z"): 5}, used={"a2"},
                              seen={"a1", "a2", "b1"})
    assert [j["index"] for j in jobs] == [0, 1, 2, 3, 4] and {j["n"] for j in jobs} == {7}
    assert {tuple(jobs[0]["arm"]), tuple(jobs[1]["arm"])} == {A, B}  # round one holds every arm with a job
    assert [tuple(j["arm"]) for j in jobs[2:]] == [A, A, A]
    assert [j["chunks"] for j in jobs if tuple(j["arm"]) == A] == [["a0", "a1"], ["a2", "a0"], ["a1", "a2"],
                                                                   ["a0", "a1"]]
    assert [j["chunks"] for j in jobs if tuple(j["arm"]) == B] == [["b0", "b1"]]
    assert [j["persona"] for j in jobs] == ["p1", "p2", "p3", "p1", "p2"]
    assert [j["difficulty"] for j in jobs] == ["easy", "easy", "easy", "hard", "hard"]
    assert all(j["label"] == "a" for j in jobs if tuple(j["arm"]) == A)
    assert all("label" not in j for j in jobs if tuple(j["arm"]) == B)
    # more chunks per job than the arm has: each chunk once; no personas or difficulties: the defaults
    jobs = allocate.plan_jobs(pools, 0, 1, None, random.Random(1), [], ["e", "m", "h"], chunks_per_job=3,
                              counts={B: 1, D: 3})
    assert sorted(jobs[0]["chunks"] if jobs[0]["arm"] == [1, None] else jobs[1]["chunks"]) == ["b0", "b1"]
    assert [j["persona"] for j in jobs] == ["a typical user"] * 4
    assert [j["difficulty"] for j in jobs] == ["e", "m", "h", "e"]
    assert {j["difficulty"] for j in allocate.plan_jobs(pools, 0, 1, None, random.Random(1), ["p"], [],
                                                        counts={D: 2})} == {"medium"}
    assert allocate.plan_jobs({(0, "a"): []}, 5, 1, allocate.Uniform(), random.Random(0), ["p"], ["e"]) == []


def test_plan_jobs_puts_new_chunks_first_with_seen_alone():
    keys = [f"c{i}" for i in range(12)]
    pool = {(0, "a"): [chunk(k) for k in keys]}
    for seed in range(5):
        jobs = allocate.plan_jobs(pool, 0, 1, None, random.Random(seed), ["p"], ["e"], counts={(0, "a"): 2},
                                  seen=set(keys) - {"c7"})
        assert jobs[0]["chunks"] == ["c7"], seed


def test_plan_jobs_follows_the_policy_over_pool_sizes():
    pools = {(0, "a"): [chunk(f"x{i}") for i in range(3)], (1, "a"): [chunk("y0")], (0, "b"): [chunk("z0"), chunk("z1")]}
    # uniform: label a's half split 3:1 over its topics by chunks, label b's half whole: 3, 1, 4 of 8
    jobs = allocate.plan_jobs(pools, 8, 1, allocate.Uniform(), random.Random(0), ["p"], ["e"])
    assert Counter(tuple(j["arm"]) for j in jobs) == {(0, "a"): 3, (1, "a"): 1, (0, "b"): 4}
    jobs = allocate.plan_jobs(pools, 8, 1, allocate.Thompson(), random.Random(0), ["p"], ["e"], feedback=None)
    assert len(jobs) == 8


def test_boosts_multiply_default_and_survive_torn_lines(tmp_path):
    path = tmp_path / "boosts.jsonl"
    allocate.boost(path, (1, "x"), after_round=2, factor=0.5, note="café")
    assert "café" in path.read_text(encoding="utf-8")  # written as text, not escaped
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"arm": [1, "x"], "after_round": 2\n')  # torn: skipped, and the lines after it still read
        f.write('{"arm": [1, "x"], "after_round": 2}\n')  # no factor: the default doubling
        f.write('{"arm": [1, "x", 3], "after_round": 2}\n{"arm": [2], "after_round": 2}\n')  # not arms
    assert [r.get("factor") for r in allocate.read_boosts(path)] == [0.5, None]
    assert allocate.boosts_for(path, 3) == {(1, "x"): 0.5 * 2.0}
    allocate.boost(path, (1, "x"), after_round=2, factor=3.0, run="r")
    assert allocate.boosts_for(path, 3, "r") == {(1, "x"): pytest.approx(0.5 * 2.0 * 3.0)}
    assert allocate.boosts_for(path, 2, "r") == {} and allocate.boosts_for(path, 4, "r") == {}
    rec = allocate.boost(path, [1, "x"], after_round=5.0, factor=1)
    assert rec["after_round"] == 5 and type(rec["after_round"]) is int and type(rec["factor"]) is float
    assert "note" not in rec and "run" not in rec and len(rec["at"]) == len("2026-01-01T00:00:00+00:00")
    for bad in ([1], "ab", None):
        with pytest.raises(TasklingError, match=r"an arm is \[topic, label\], not"):
            allocate.boost(path, bad, after_round=0)


def test_rounding_edges_and_arms_with_and_without_a_topic(tmp_path):
    # one job goes to the largest remainder (1.8 against 1.2), not to the smallest total
    assert allocate.split(3, {"x": 0.6, "y": 0.4}) == {"x": 2, "y": 1}
    assert allocate.split(1, {"x": 0.7, "y": 0.3}) == {"x": 1, "y": 0}
    assert allocate.split_random(1, {"x": 0.7, "y": 0.3}, _FixedDraw(0.5)) == {"x": 1, "y": 0}
    # weights need not sum to 1: 2:1:1 is 0.5, 0.25, 0.25
    assert allocate.split_random(3, {"x": 2.0, "y": 1.0, "z": 1.0}, _FixedDraw(0.0)) == {"x": 2, "y": 1, "z": 0}
    # 2.1, 2.1, 2.8: the fractions add up to a hair over 1 in floating point; still 7 jobs, not 8
    assert allocate.split_random(7, {"x": 0.3, "y": 0.3, "z": 0.4}, _FixedDraw(0.0)) == {"x": 3, "y": 2, "z": 2}
    # an arm over all topics (None) beside arms of one topic: ordered by name, never compared as values
    sizes = {(None, "a"): 4, (0, "a"): 4, (12, "b"): 4}
    assert set(allocate.split_random(5, dict.fromkeys(sizes, 1.0), _FixedDraw(0.5))) == set(sizes)
    assert sum(allocate.Thompson().weights(sizes, {}).values()) == pytest.approx(1.0)
    pools = {arm: [chunk(f"{arm}{i}", arm[0]) for i in range(2)] for arm in sizes}
    jobs = allocate.plan_jobs(pools, 6, 1, allocate.Uniform(), random.Random(0), ["p"], ["e"])
    assert len(jobs) == 6 and {tuple(j["arm"]) for j in jobs} == set(sizes)
    # a boost file in a folder that does not exist yet, two levels down
    rec = allocate.boost(tmp_path / "state" / "run" / "boosts.jsonl", (0, "a"), after_round=0)
    assert allocate.read_boosts(tmp_path / "state" / "run" / "boosts.jsonl") == [rec]
