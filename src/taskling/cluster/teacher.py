"""RemoteBackend: a teacher Backend whose requests run in shards on the cluster's nodes.

Wrapped in `Logged` like any backend, so the driver looks every request up in
the call log first and logs each answer as its shard comes back: a re-run on
the cluster replays the cache for free, and so does a single-machine re-run
of a cluster run (the model's identity does not name the node that answered).
"""
from __future__ import annotations

import sys

from ..backends import Capabilities, OnResult, Request, Result
from ..config import ModelCfg
from . import worker_threads
from .pool import Shard
from .workers import TeacherWorker


class RemoteBackend:
    def __init__(self, session, mcfg: ModelCfg, threads: int | None = None):
        ccfg = session.ccfg
        script = None
        if mcfg.backend == "scripted":
            from ..backends import scripted

            script = scripted._SCRIPT
            mod = sys.modules.get(getattr(script, "__module__", "") or "")
            if script is not None and mod is not None and not mod.__name__.startswith("taskling"):
                from ray import cloudpickle  # a test's script: its module is not importable on the workers

                cloudpickle.register_pickle_by_value(mod)
        self.cfg, self.ccfg = mcfg, ccfg
        self.pool = session.pool(f"teacher {mcfg.backend}:{mcfg.model}", TeacherWorker,
                                 (mcfg.model_dump(mode="json"), worker_threads(ccfg.cpus_per_worker),
                                  list(ccfg.endpoints), script), per_node=ccfg.workers_per_node or 1)
        self.pool.tally = lambda results: {"retries": sum(len(r.attempts) for r in results),
                                           "failed": sum(r.error is not None for r in results)}
        self.pool.wait_for_members()
        first = self.pool.members[0].info
        self.model = dict(first["model"])
        if mcfg.backend == "openai":  # the same identity whichever endpoint a node picked
            self.model["base_url"] = (mcfg.base_url or ccfg.endpoints[0]).rstrip("/")
        caps = first["caps"]
        self.capabilities = Capabilities(batching=True, logprobs=caps["logprobs"], json_schema=caps["json_schema"],
                                         concurrency=max(1, self.pool.size * ccfg.shard_jobs))
        self.sent = 0

    def describe(self) -> dict:
        return self.model

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Result]:
        out: list[Result | None] = [None] * len(requests)
        k = self.ccfg.shard_jobs
        shards = [Shard(f"r{self.sent + i:06d}", len(requests[i:i + k]), (i, [r.as_dict() for r in requests[i:i + k]]))
                  for i in range(0, len(requests), k)]
        self.sent += len(requests)

        def done(shard: Shard, results: list[Result]) -> None:
            start = shard.payload[0]
            for j, res in enumerate(results):
                out[start + j] = res
                if on_result:
                    on_result(start + j, res)

        self.pool.map(shards, done, load=lambda s: s.payload[1])
        self.capabilities = Capabilities(batching=True, logprobs=self.capabilities.logprobs,
                                         json_schema=self.capabilities.json_schema,
                                         concurrency=max(1, self.pool.size * k))
        return out  # type: ignore[return-value]

    def cluster_stats(self) -> dict:
        return self.pool.report()

    def close(self) -> None:
        self.pool.close()
