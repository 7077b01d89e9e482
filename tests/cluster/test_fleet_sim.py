"""bench/fleet_sim.py: the fleet simulation behaves like the model it documents."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fleet_sim.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("fleet_sim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_churn_wastes_nothing_and_takes_the_ideal_time(sim):
    jobs, nodes = 3000, 50
    for batch in (False, True):
        r = sim.simulate_generation(jobs, shard=4, avail=1.0, nodes=nodes, straggler_frac=0, batch=batch)
        ideal_h = jobs * sim.JOB_MEAN_S / nodes / sim.HOUR
        assert r["finished"] and r["deaths"] == 0 and r["busy_deaths"] == 0
        assert r["wasted_node_h"] == pytest.approx(0, abs=1e-9)
        assert ideal_h <= r["completion_h"] < 1.1 * ideal_h
    t = sim.simulate_training(200, workers=16, ckpt_every=50, avail=1.0)
    assert t["finished"] and t["restarts"] == 0 and t["lost_steps"] == 0 and t["wasted_node_h"] == 0
    assert t["completion_h"] * sim.HOUR == pytest.approx(200 * sim.step_seconds(16) + 3 * sim.CKPT_S)


def test_streaming_loses_one_job_per_death_batching_loses_the_shard(sim):
    common = dict(jobs=10000, shard=16, avail=0.5, up_mean=sim.CHURN["spot"], nodes=50, seed=1)
    stream = sim.simulate_generation(**common)
    batch = sim.simulate_generation(batch=True, **common)
    assert stream["busy_deaths"] > 10 and batch["busy_deaths"] > 10
    assert stream["lost_per_death_max"] == 1 and stream["lost_per_death_mean"] == 1
    assert batch["lost_per_death_max"] > 1 and batch["lost_per_death_mean"] > 2
    assert batch["wasted_node_h"] > 3 * stream["wasted_node_h"]
    spec = sim.simulate_generation(batch=True, speculate=True, **common)
    assert spec["finished"] and spec["duplicates"] > 0


def test_frequent_checkpoints_waste_fewer_steps_under_churn(sim):
    def lost(c):
        runs = [sim.simulate_training(400, workers=16, ckpt_every=c, avail=0.8, up_mean=sim.CHURN["spot"], seed=s)
                for s in range(3)]
        assert all(r["finished"] and r["restarts"] > 0 for r in runs)
        return sum(r["lost_steps"] for r in runs)

    assert lost(10) < 0.5 * lost(50)
