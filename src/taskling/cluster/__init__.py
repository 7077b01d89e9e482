"""Scale-out on Ray: the same stages, their work spread over the nodes of a cluster.

    taskling run --cluster HOST:6379        # or cluster.address in taskling.yaml; "local" starts Ray here

`connect` gives the `RayExecutor` (core.executor.Executor) that the CLI puts on the
context; stages reach the cluster only through it. Nothing imports ray until
`connect` is called, so a single-machine run never starts or loads it. What
changes on a cluster is who does the heavy part of each stage:

  ingest     files are converted and chunked by workers on the nodes, chunks are
             embedded there too (executor.pool); the driver is the pile's one writer
  generate   teacher requests go out in shards (executor.backend: RemoteBackend); each
             node asks its own teacher (a local GGUF, or the nearest of
             cluster.endpoints); the driver logs every call and journals every job, so
             a shard lost with its node is sent again and any duplicate answer is
             dropped by key
  evaluate   the teacher's answers the same way
  train      the one training loop in Ray Train data-parallel workers, with
             checkpoints in shared storage (executor.train; train.py)
  predict    rows answered in shards by workers that each load the model

Per-node work, work lost with dead nodes and rescheduled shards are kept by
the pool (pool.py) and land in each stage's manifest and the report.

May import every library room (core, data, tasks, student, teacher, curation, serving,
report); never the stages, the UI or the CLI, which reach it only through core.executor.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.config import ClusterCfg, ModelCfg
from ..core.errors import TasklingError
from ..core.executor import TrainLoop

# What every worker process needs whatever node it runs on: never download weights.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# A Ray started here (--cluster local, LocalCluster) does this run's work, as a run without --cluster does in
# its own process: its workers run at the run's priority. Ray's default renices every worker to 15, for nodes
# shared with other tenants; here one busy process at normal priority beside them (a second job, a build) took
# them from 1.3 s to 24 s for the same work (measured on 2 cores).
OWN_RAY = {"worker_niceness": 0}


class RayExecutor:
    """A connection to a Ray cluster, and the work a stage spreads over it: pools of workers
    pinned to the live nodes (pool.py), the training loop data-parallel (train.py) and teachers
    on the nodes (teacher.py)."""

    name = "ray"
    distributed = True

    def __init__(self, address: str, ccfg: ClusterCfg, console=None):
        if address == "local":  # one machine: every Ray process on loopback (read when ray is first imported)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:  # pragma: no cover - ray ships with taskling's set-up
            raise TasklingError("--cluster needs Ray: pip install 'ray[train]'") from None
        self.ray, self.ccfg, self.address, self.console = ray, ccfg, address, console
        self.owns = not ray.is_initialized()
        if self.owns:
            env = {"env_vars": WORKER_ENV}
            try:
                if address == "local":  # a Ray of our own: never one already running here (RAY_ADDRESS, the last one)
                    ray.init(address="local", include_dashboard=False, log_to_driver=False, namespace="taskling",
                             runtime_env=env, _system_config=OWN_RAY)
                else:
                    ray.init(address=address, log_to_driver=False, namespace="taskling", runtime_env=env)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise TasklingError(f"--cluster {address}: cannot connect to a Ray cluster there ({e}); start one "
                                    "with 'ray start --head' (see docs/scale-out.md)") from None
        self.pools: list = []

    def nodes(self, cpus: float = 0.0) -> list[dict]:
        """Live nodes with at least `cpus` CPUs: {id, address, cpus}."""
        return [{"id": n["NodeID"], "address": n.get("NodeManagerAddress", ""), "cpus": n["Resources"].get("CPU", 0)}
                for n in self.ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= max(cpus, 1e-9)]

    def describe(self) -> dict:
        nodes = self.nodes()
        return {"executor": self.name, "address": self.address, "nodes": len(nodes),
                "cpus": sum(n["cpus"] for n in nodes)}

    def pool(self, name: str, worker: type, args: tuple, per_node: int = 1):
        from .pool import Pool

        p = Pool(self, name, worker, args, per_node)
        self.pools.append(p)
        return p

    def worker_threads(self, threads: int | None) -> int:
        return threads_for(self.ccfg.cpus_per_worker)

    def train(self, loop: TrainLoop, spec: Any, out: Path, console: Any, tag: str) -> Any:
        """`loop` in cluster.train_workers Ray Train workers (gloo on CPU, NCCL on GPU)."""
        from .train import train

        return train(self, loop, spec, out, console, tag)

    def backend(self, mcfg: ModelCfg, threads: int | None = None):
        """A teacher backend whose requests run on the cluster's nodes."""
        from .teacher import RemoteBackend

        return RemoteBackend(self, mcfg, threads)

    def close(self) -> None:
        for p in self.pools:
            p.close()
        self.pools.clear()
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()


def connect(address: str | None, ccfg: ClusterCfg, console=None) -> RayExecutor | None:
    """The executor on the cluster at `address` (or cluster.address); None for a single machine."""
    address = address or ccfg.address
    if not address:
        return None
    return RayExecutor(address, ccfg, console)


def threads_for(cpus: float) -> int:
    """Torch threads for a worker given `cpus` CPUs."""
    return max(1, int(cpus)) if cpus >= 1 else 1


def node_override(mcfg: ModelCfg) -> ModelCfg:
    """A node may name its own teacher server: TASKLING_TEACHER_URL in the node's environment."""
    url = os.environ.get("TASKLING_TEACHER_URL")
    return mcfg.model_copy(update={"base_url": url}) if url and mcfg.backend == "openai" else mcfg
