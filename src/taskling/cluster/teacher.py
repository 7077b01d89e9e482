"""RemoteBackend: a teacher Backend whose requests run in shards on the cluster's nodes.

Wrapped in `Logged` like any backend, so the driver looks every request up in
the call log first and logs each answer as its shard comes back: a re-run on
the cluster replays the cache for free, and so does a single-machine re-run
of a cluster run (the model's identity does not name the node that answered).
Each node's `TeacherWorker` opens the node's own backend: the server named by
TASKLING_TEACHER_URL on that node, else the nearest of cluster.endpoints.
"""
from __future__ import annotations

import os
import sys
import time

from ..core.config import ModelCfg
from ..core.errors import TasklingError
from ..core.executor import Shard, failure
from ..teacher.backends import Capabilities, OnResult, Request, Result
from . import node_override, threads_for


def nearest(mcfg: ModelCfg, endpoints: list[str], timeout: float = 2.0) -> tuple[ModelCfg, dict]:
    """The endpoint of `endpoints` that answers GET /models fastest from this node (openai backend only)."""
    if mcfg.backend != "openai" or not endpoints:
        return mcfg, {}
    import httpx

    seen = {}
    for url in endpoints:
        t0 = time.perf_counter()
        try:
            r = httpx.get(url.rstrip("/") + "/models", timeout=timeout)
            if r.status_code < 500:
                seen[url] = round((time.perf_counter() - t0) * 1000, 2)
        except httpx.HTTPError:
            continue
    if not seen:
        if mcfg.base_url:
            return mcfg, {"probed_ms": {}}
        raise ConnectionError(f"none of cluster.endpoints answers from this node: {', '.join(endpoints)}")
    best = min(seen, key=seen.get)
    return mcfg.model_copy(update={"base_url": best}), {"probed_ms": seen}


class TeacherWorker:
    """Teacher requests on one node, through the node's own backend."""

    def __init__(self, mcfg: dict, threads: int, endpoints: list[str], script=None):
        self.error, self.backend, self.probe = None, None, {}
        try:
            from ..teacher.backends import open_backend, scripted

            if script is not None:
                scripted.set_script(script)
            cfg = node_override(ModelCfg(**mcfg))  # the node's own server wins over the nearest endpoint
            if cfg.base_url == mcfg.get("base_url"):
                cfg, self.probe = nearest(cfg, endpoints)
            self.endpoint = cfg.base_url or "local"
            self.backend = open_backend(cfg, threads)
        except Exception as e:  # reported by ready()
            self.error = failure(e)

    def ready(self) -> dict:
        if self.error:
            return {"error": self.error}
        import ray

        caps = self.backend.capabilities
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "endpoint": self.endpoint,
                "model": self.backend.describe(),
                "caps": {"logprobs": caps.logprobs, "json_schema": caps.json_schema}, **self.probe}

    def run(self, requests: list[dict]):
        return self.backend.generate([Request(**{**r, "stop": tuple(r.get("stop", ()))}) for r in requests])


def openai_identity(mcfg: ModelCfg, ccfg) -> dict:
    """The same identity whichever endpoint a node picked (and the same as on one machine)."""
    url = mcfg.base_url or (ccfg.endpoints[0] if ccfg.endpoints else "per-node")
    return {"backend": "openai", "model": mcfg.model, "base_url": url.rstrip("/")}


IDENTITY = {"openai": openai_identity,
            "scripted": lambda mcfg, ccfg: {"backend": "scripted", "model": mcfg.model}}


class RemoteBackend:
    def __init__(self, executor, mcfg: ModelCfg, threads: int | None = None):
        ccfg = executor.ccfg
        script = None
        if mcfg.backend == "scripted":
            from ..teacher.backends import scripted

            script = scripted._SCRIPT
            mod = sys.modules.get(getattr(script, "__module__", "") or "")
            if script is not None and mod is not None and not mod.__name__.startswith("taskling"):
                from ray import cloudpickle  # a test's script: its module is not importable on the workers

                cloudpickle.register_pickle_by_value(mod)
        self.cfg, self.ccfg = mcfg, ccfg
        self.pool = executor.pool(f"teacher {mcfg.backend}:{mcfg.model}", TeacherWorker,
                                 (mcfg.model_dump(mode="json"), threads_for(ccfg.cpus_per_worker),
                                  list(ccfg.endpoints), script), per_node=ccfg.workers_per_node or 1)
        self.pool.tally = lambda results: {"retries": sum(len(r.attempts) for r in results),
                                           "failed": sum(r.error is not None for r in results)}
        self.sent = 0
        known = IDENTITY.get(mcfg.backend)
        if known is not None:  # no worker needed to name the model: a fully cached re-run needs no node
            self.model = known(mcfg, ccfg)
            caps = {"logprobs": mcfg.backend == "openai", "json_schema": mcfg.backend == "openai" and mcfg.json_mode}
            workers = len(executor.nodes(ccfg.cpus_per_worker)) * (ccfg.workers_per_node or 1)
        else:  # a local model: its identity (file, size) comes from a node that loaded it
            self.pool.wait_for_members()
            first = self.pool.members[0].info
            self.model, caps, workers = dict(first["model"]), first["caps"], self.pool.size
        self.caps = caps
        self.capabilities = self.capacity(workers)

    def capacity(self, workers: int) -> Capabilities:
        """What the cluster offers with `workers` teacher workers: shard_jobs requests in flight on each."""
        return Capabilities(batching=True, logprobs=self.caps["logprobs"], json_schema=self.caps["json_schema"],
                            concurrency=max(1, workers * self.ccfg.shard_jobs))

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

        if not self.pool.members:
            self.pool.wait_for_members()
        self.pool.map(shards, done, load=lambda s: s.payload[1])
        if any(r is None for r in out):  # the pool gives every shard back or fails: this is a bug if it happens
            raise TasklingError(f"cluster {self.pool.name}: {sum(r is None for r in out)} teacher answers never came back")
        self.capabilities = self.capacity(self.pool.size)  # nodes may have joined or left
        return out  # type: ignore[return-value]

    def cluster_stats(self) -> dict:
        return self.pool.report()

    def close(self) -> None:
        self.pool.close()
