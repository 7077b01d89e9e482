"""A pool of Ray actors that follows the cluster's membership, and the shards it runs.

One or more actors are pinned to each live node (a node that joins gets its
own at the next refresh; actors are never restarted elsewhere, so a node that
leaves takes only its actors). `Pool.map` hands shards to idle actors; when an
actor's node or process dies, the shard it held goes back to the front of the
queue, up to cluster.max_reschedules times. Results come back to the driver,
which is the only writer of the journal, the call log and the pile, so work a
dead node may still have finished is dropped there by its idempotent key.

A worker class is plain Python with `ready() -> dict` and `run(payload)`;
its __init__ must not raise (it stores the error and ready() reports it):
core.executor says what a worker and a pool are; this is the Ray pool.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..core.errors import TasklingError
from ..core.executor import Shard

REFRESH_S = 2.0  # how often the pool looks for nodes that joined or left
START_TRIES = 3  # a node whose workers die this often while starting is left out


@dataclass
class Member:
    handle: Any
    node: str
    address: str
    info: dict = field(default_factory=dict)
    busy: Any = None          # (ref, shard, t0) while it works


def node_row(stats: dict, node: str, address: str) -> dict:
    return stats.setdefault(node, {"node": node[:12], "address": address, "workers": 0, "shards": 0, "items": 0,
                                   "busy_s": 0.0, "lost_shards": 0, "lost_items": 0, "left": False})


class Pool:
    """Workers of one kind on the live nodes of the executor's cluster (core.executor.Pool)."""

    def __init__(self, executor, name: str, worker: type, args: tuple, per_node: int = 1):
        self.executor, self.ray, self.name = executor, executor.ray, name
        self.ccfg = executor.ccfg
        self.cls = self.ray.remote(num_cpus=self.ccfg.cpus_per_worker, max_restarts=0, max_task_retries=0)(worker)
        self.args, self.per_node = args, per_node
        self.members: list[Member] = []
        self.starting: list[tuple[Member, Any]] = []  # workers loading their model, with their ready() ref
        self.stats: dict[str, dict] = {}      # per node
        self.rescheduled: list[dict] = []     # one row per shard moved off a dead worker
        self.events: list[dict] = []          # nodes joining and leaving, as the pool saw them
        self.checked = 0.0
        self.t0 = time.monotonic()
        self.tally: Callable[[Any], dict] | None = None  # extra per-node counters from a shard's result
        self.refused: dict[str, str] = {}       # nodes that cannot do this pool's work, and why
        self.failed_starts: dict[str, int] = {}  # workers that died while starting, per node
        self.queue: deque = deque()

    # -- membership -----------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Start workers on nodes that joined (they become members once loaded), drop those on nodes that left."""
        if not force and time.monotonic() - self.checked < REFRESH_S:
            return
        self.checked = time.monotonic()
        from ray.exceptions import RayError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {n["id"]: n for n in self.executor.nodes(self.ccfg.cpus_per_worker)}
        for m in [m for m in self.members if m.node not in alive]:
            if m.busy is not None:  # its shard goes back to the queue, first in line
                ref, shard, _ = m.busy
                m.busy = None
                self.lost(m, shard, "its node left the cluster")
            else:
                self.drop(m, "its node left the cluster")
        have: dict[str, int] = {}
        for m in self.members + [m for m, _ in self.starting]:
            have[m.node] = have.get(m.node, 0) + 1
        for nid, n in alive.items():
            if nid in self.refused:
                continue
            room = min(self.per_node, max(1, int(n["cpus"] // self.ccfg.cpus_per_worker)))
            for _ in range(room - have.get(nid, 0)):
                h = self.cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote(
                    *self.args)
                m = Member(h, nid, n["address"])
                self.starting.append((m, h.ready.remote()))
        if not self.starting:
            return
        # Wait a little for the first workers (nothing else can run yet); later ones join when ready.
        refs = [r for _, r in self.starting]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0.0 if self.members else 5.0)
        done = set(ready)
        for m, ref in [x for x in self.starting if x[1] in done]:
            self.starting.remove((m, ref))
            try:
                info = self.ray.get(ref)
            except RayError as e:  # its node left while it started (the next refresh sees that), or it cannot start
                if m.node in alive:
                    self.failed_starts[m.node] = self.failed_starts.get(m.node, 0) + 1
                    if self.failed_starts[m.node] >= START_TRIES:
                        self.refuse(m, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
                continue
            if info.get("error"):  # this node cannot do the work (a missing model, an unreachable teacher...)
                self.refuse(m, info["error"])
                continue
            m.info = info
            self.members.append(m)
            row = node_row(self.stats, m.node, m.address)
            row["workers"] += 1
            row["left"] = False
            row.update({k: v for k, v in info.items() if k in ("endpoint", "pid")})
            self.events.append({"t": round(time.monotonic() - self.t0, 2), "node": m.node[:12], "event": "joined"})
        for m, ref in [x for x in self.starting if x[0].node not in alive]:  # never started: its node is gone
            self.starting.remove((m, ref))
            self.stop(m)

    def refuse(self, m: Member, why: str) -> None:
        """Leave a node out of this pool for good, and say why; the others go on."""
        self.refused[m.node] = why
        self.events.append({"t": round(time.monotonic() - self.t0, 2), "node": m.node[:12], "event": "refused",
                            "why": why})
        if self.executor.console is not None:
            self.executor.console.print(f"[yellow]cluster {self.name}: node {m.node[:12]} ({m.address}) left out: "
                                       f"{why}[/]", highlight=False, soft_wrap=True)
        self.stop(m)

    def stop(self, m: Member) -> None:
        try:
            self.ray.kill(m.handle, no_restart=True)
        except Exception:  # already gone with its node
            pass

    def drop(self, m: Member, why: str) -> None:
        if m in self.members:
            self.members.remove(m)
            node_row(self.stats, m.node, m.address)["left"] = True
            self.events.append({"t": round(time.monotonic() - self.t0, 2), "node": m.node[:12], "event": "left",
                                "why": why})
        self.stop(m)

    def wait_for_members(self, settle_s: float = 30.0) -> None:
        """Until some worker is ready, and those still loading are ready too or `settle_s` has passed."""
        t0 = time.monotonic()
        deadline = t0 + self.ccfg.wait_for_nodes_s
        while not self.members or self.starting:
            self.refresh(force=True)
            if self.members and (not self.starting or time.monotonic() - t0 > settle_s):
                return
            alive = {n["id"] for n in self.executor.nodes(self.ccfg.cpus_per_worker)}
            if not self.members and not self.starting and alive and alive <= set(self.refused):
                why = "; ".join(sorted({w for n, w in self.refused.items() if n in alive}))[:1500]
                raise TasklingError(f"cluster {self.name}: no node can do this work: {why}")
            if time.monotonic() > deadline:
                raise TasklingError(f"cluster {self.name}: no live node with {self.ccfg.cpus_per_worker:g} CPU "
                                    f"joined within cluster.wait_for_nodes_s={self.ccfg.wait_for_nodes_s:g} s; "
                                    "add nodes with 'ray start --address ...' (docs/scale-out.md)")
            time.sleep(1.0)

    @property
    def size(self) -> int:
        return len(self.members)

    # -- work -----------------------------------------------------------------------------------------------
    def map(self, shards: Iterable[Shard], on_done: Callable[[Shard, Any], None],
            load: Callable[[Shard], Any] | None = None) -> None:
        """Run every shard on some worker; `on_done(shard, result)` on the driver as each comes back."""
        from ray.exceptions import RayError, RayTaskError

        queue = self.queue = deque(shards)
        while queue or any(m.busy for m in self.members):
            self.refresh()
            if not self.members:
                self.wait_for_members(settle_s=0.0)
            for m in self.members:
                if m.busy is None and queue:
                    shard = queue.popleft()
                    payload = load(shard) if load else shard.payload
                    m.busy = (m.handle.run.remote(payload), shard, time.monotonic())
            busy = {m.busy[0]: m for m in self.members if m.busy}
            if not busy:
                continue
            ready, _ = self.ray.wait(list(busy), num_returns=1, timeout=1.0)
            for ref in ready:
                m = busy[ref]
                _, shard, t0 = m.busy
                m.busy = None
                try:
                    out = self.ray.get(ref)
                except RayTaskError as e:  # the work itself raised: a bug or bad input, not a lost node
                    cause = getattr(e, "cause", None) or e
                    if isinstance(cause, TasklingError):
                        raise TasklingError(str(cause)) from None
                    raise TasklingError(f"cluster {self.name}: shard {shard.id} failed on node {m.node[:12]}: "
                                        f"{type(cause).__name__}: {cause}") from None
                except RayError as e:  # the worker, its node or its result is gone: send the shard again
                    self.lost(m, shard, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
                    continue
                row = node_row(self.stats, m.node, m.address)
                row["shards"] += 1
                row["items"] += shard.items
                row["busy_s"] += time.monotonic() - t0
                for k, v in (self.tally(out) if self.tally else {}).items():
                    row[k] = row.get(k, 0) + v
                on_done(shard, out)

    def lost(self, m: Member, shard: Shard, why: str) -> None:
        """`m` died holding `shard`: drop the worker, send the shard again (first in line)."""
        row = node_row(self.stats, m.node, m.address)
        row["lost_shards"] += 1
        row["lost_items"] += shard.items
        self.drop(m, why)
        shard.attempts += 1
        self.rescheduled.append({"shard": shard.id, "items": shard.items, "from_node": m.node[:12], "why": why,
                                 "attempt": shard.attempts})
        if shard.attempts > self.ccfg.max_reschedules:
            raise TasklingError(f"cluster {self.name}: shard {shard.id} was lost {shard.attempts} times "
                                f"(last: {why}); over cluster.max_reschedules={self.ccfg.max_reschedules}")
        self.queue.appendleft(shard)

    def report(self) -> dict:
        nodes = [{**r, "busy_s": round(r["busy_s"], 2)} for r in sorted(self.stats.values(), key=lambda r: r["node"])]
        return {"pool": self.name, "nodes": nodes, "workers": len(self.members),
                "shards": sum(r["shards"] for r in nodes), "rescheduled_shards": len(self.rescheduled),
                "lost_items": sum(r["lost_items"] for r in nodes), "rescheduled": self.rescheduled[-50:],
                "refused": {n[:12]: w for n, w in self.refused.items()},
                "events": self.events[-100:]}

    def close(self) -> None:
        for m in list(self.members) + [m for m, _ in self.starting]:
            self.stop(m)
        self.members.clear()
        self.starting.clear()

