"""core.executor without Ray: the local pool answers shards in this process and names a worker
that cannot start; a stage that spreads its work through an executor gets the same pile whether
the executor answers one file at a time here or in shards that come back out of order (what a
cluster's nodes do), and the executor's report lands in the manifest."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.executor import LocalExecutor, LocalPool, Shard, in_order
from taskling.core.workspace import Context

QUIET = Console(stderr=True, quiet=True)


class Doubler:
    def __init__(self, fail: str | None = None):
        self.error, self.closed = fail, False

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"pid": os.getpid()}

    def run(self, payload: list[int]) -> list[int]:
        return [2 * x for x in payload]

    def close(self) -> None:
        self.closed = True


def test_the_local_pool_answers_every_shard_here_in_order():
    pool = LocalExecutor().pool("double", Doubler, ())
    got = []
    shards = [Shard(f"s{i}", 2, [i, i + 10]) for i in range(3)]
    pool.map(shards, lambda s, out: got.append((s.id, out)), load=lambda s: s.payload[:1])
    assert got == [("s0", [0]), ("s1", [2]), ("s2", [4])]  # `load` builds what the worker gets
    assert pool.size == 1 and pool.report() is None
    pool.close()
    assert pool.worker.closed


def test_a_worker_that_cannot_start_is_named_at_once():
    with pytest.raises(TasklingError, match="no model here"):
        LocalExecutor().pool("double", Doubler, ("no model here",))


def test_results_in_any_order_come_out_in_order():
    seen = []
    take = in_order(3, lambda i, v: seen.append((i, v)))
    take(2, "c")
    take(0, "a")
    assert seen == [(0, "a")]
    with pytest.raises(TasklingError, match="result 1 of 3 never came back"):
        take.check()
    take(1, "b")
    take.check()
    assert seen == [(0, "a"), (1, "b"), (2, "c")]


class Scattered:
    """A pool like a cluster's: every shard's result comes back, last shard first."""

    def __init__(self, name: str, worker: type, args: tuple):
        self.name, self.tally, self.inner = name, None, LocalPool(name, worker, args)
        self.shards = 0

    size = 2

    def map(self, shards, on_done, load=None) -> None:
        answered = [(s, self.inner.worker.run(load(s) if load else s.payload)) for s in shards]
        for s, out in reversed(answered):
            self.shards += 1
            on_done(s, out)

    def report(self) -> dict:
        return {"pool": self.name, "shards": self.shards}

    def close(self) -> None:
        self.inner.close()


class Spread(LocalExecutor):
    """An executor whose work 'leaves the process': shards of cluster.ingest_files and embed_batch."""

    name, distributed = "spread", True

    def pool(self, name: str, worker: type, args: tuple, per_node: int = 1) -> Scattered:
        return Scattered(name, worker, args)


def test_ingest_in_scattered_shards_builds_the_pile_one_process_builds(tmp_path, tiny_model_dir):
    from taskling.data.pile import Pile
    from taskling.stages import ingest

    def pile_after(name: str, executor) -> tuple:
        (tmp_path / name).mkdir()
        path = write_workspace(tmp_path / name, tiny_model_dir, ingest__embed=True, ingest__topics=2,
                               cluster__ingest_files=2, cluster__embed_batch=7)
        ctx = Context(load_config(path, []), console=QUIET, executor=executor)
        ingest.run(ctx)
        m = json.loads((ctx.stage_dir("ingest") / "manifest.json").read_text())
        with Pile(ctx.ws.pile_db) as p:
            rows = p.db.execute("SELECT d.path, c.id, c.text, c.embedding, c.topic_id FROM chunks c "
                                "JOIN documents d ON d.id = c.doc_id ORDER BY c.id").fetchall()
        vecs = np.stack([np.frombuffer(r[3], dtype="<f2").astype(np.float32) for r in rows if r[3] is not None])
        return [r[:3] + (r[4],) for r in rows], vecs, m

    here, here_vecs, here_m = pile_after("here", LocalExecutor())
    spread, spread_vecs, spread_m = pile_after("spread", Spread())
    assert here == spread  # the same documents, chunk ids and topics, stored in the files' order
    np.testing.assert_allclose(here_vecs, spread_vecs, atol=1e-3)
    assert "cluster" not in here_m
    assert spread_m["cluster"]["convert"] == {"pool": "ingest", "shards": 2}  # 3 files, 2 per shard
    assert spread_m["cluster"]["embed"]["shards"] >= 2
    assert spread_m["counts"] == here_m["counts"]


def test_cpu_threads_are_what_was_asked_else_taskling_threads_else_every_core(monkeypatch):
    from taskling.core.executor import cpu_threads

    monkeypatch.delenv("TASKLING_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu_threads() == 6 and cpu_threads(3) == 3
    monkeypatch.setenv("TASKLING_THREADS", "2")
    assert cpu_threads() == 2 and cpu_threads(3) == 3  # --threads wins over the variable
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("TASKLING_THREADS", bad)
        with pytest.raises(TasklingError, match="TASKLING_THREADS"):
            cpu_threads()


def test_a_model_loaded_without_threads_takes_taskling_threads(monkeypatch):
    """The variable reaches the code that sets torch's threads (infer.set_threads: training, evaluation, serving)."""
    import torch

    from taskling.student import infer

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TASKLING_THREADS", "1")
        infer.set_threads(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("TASKLING_THREADS", "2")
        infer.set_threads(None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
