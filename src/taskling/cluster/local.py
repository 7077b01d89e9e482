"""A Ray cluster of several nodes on this one machine, on loopback: for the tests, the benchmark
and for trying node failures before there is a real cluster.

    c = LocalCluster(3)              # a head without CPUs and 3 one-CPU worker nodes
    ctx = Context(cfg, executor=RayExecutor(c.address, cfg.cluster))
    c.kill(c.nodes[0])               # a node dies the hard way, mid-task
    c.processes(named="RayTrainWorker")   # the processes of this cluster's nodes (never another's)
    c.close()

Ray's own test utilities (ray.cluster_utils) start the nodes; every process binds to
127.0.0.1, and a dead node is noticed within about two seconds.
"""
from __future__ import annotations

import os
import time

# Notice a dead node fast (Ray's defaults take much longer; fine for real clusters, slow for tests).
FAST_FAILURE = {"health_check_period_ms": 500, "health_check_failure_threshold": 4, "health_check_timeout_ms": 500}


class LocalCluster:
    """A head without CPUs (only the driver talks to it) and `n` worker nodes of `cpus` CPUs each."""

    def __init__(self, n: int, env: dict | None = None, cpus: int = 1):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only; read at ray's import
        import ray
        from ray.cluster_utils import Cluster

        from . import OWN_RAY, WORKER_ENV

        t0 = time.perf_counter()
        self.saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})  # worker nodes inherit it, and so do their workers
        self.ray, self.cpus = ray, cpus
        self.c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1",
            "_system_config": FAST_FAILURE | OWN_RAY, "include_log_monitor": False})
        self.nodes = []
        self.add(n)
        ray.init(address=self.c.address, log_to_driver=False, namespace="taskling", runtime_env={"env_vars": WORKER_ENV})
        self.startup_s = round(time.perf_counter() - t0, 2)

    @property
    def address(self) -> str:
        return self.c.address

    def add(self, k: int = 1, env: dict | None = None) -> float:
        """Add `k` worker nodes, with `env` in their environment only (a node's own TASKLING_TEACHER_URL, say);
        the seconds until they are up."""
        t0 = time.perf_counter()
        for _ in range(k):
            self.nodes.append(self.c.add_node(num_cpus=self.cpus, node_ip_address="127.0.0.1",
                                              env_vars=dict(env) if env else None))
        self.c.wait_for_nodes()
        return round(time.perf_counter() - t0, 2)

    def processes(self, node=None, named: str = "") -> list:
        """The live processes this cluster started on `node` (every worker node when None) whose command
        line holds `named` (a Ray actor's class, e.g. RayTrainWorker): never a process of another cluster."""
        import psutil

        found = []
        for n in [node] if node is not None else self.nodes:
            try:
                raylet = psutil.Process(n.all_processes["raylet"][0].process.pid)
                kids = raylet.children(recursive=True)
            except psutil.NoSuchProcess:  # the node is gone
                continue
            for p in kids:
                try:
                    if named in " ".join(p.cmdline()):
                        found.append(p)
                except psutil.NoSuchProcess:
                    pass
        return found

    def kill(self, node) -> None:
        """Kill a node the hard way: its worker processes first (mid-task), then its raylet."""
        import psutil

        raylet = node.all_processes["raylet"][0].process.pid
        for child in psutil.Process(raylet).children(recursive=True):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.c.remove_node(node, allow_graceful=False)
        self.nodes.remove(node)

    def close(self) -> None:
        try:
            self.ray.shutdown()
        finally:
            self.c.shutdown()
            for k, v in self.saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
