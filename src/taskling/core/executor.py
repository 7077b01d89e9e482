"""How a stage spreads its work: in this process, or over the nodes of a cluster.

A stage never asks where it runs; it hands its heavy work to `ctx.executor`:

  pool(name, Worker, args)        workers made from a plain class that answer shards of items;
                                  every result comes back to the caller, which stays the only
                                  writer (the pile, the call log, the journal)
  train(loop, spec, out, ...)     the one training loop (student.train.fit), here or data-parallel
  backend(mcfg, threads)          a teacher whose requests run on the nodes; None when they run
                                  here (teacher.backends.open_for then opens one in this process)

A worker class is plain Python: `Worker(*args)` loads what it needs once and must not raise (it
keeps the error, see `failure`, and `ready()` reports it as {"error": ...}); `ready() -> dict`;
`run(payload)` answers one shard; an optional `close()` frees what it holds.

The training loop meets its executor through a `Site`: which rank it is and how many there are,
how gradients and figures are summed over the ranks, and where checkpoints go. `LocalSite` is
one process with checkpoint folders; the Ray site lives in taskling.cluster.

`LocalExecutor` does everything in this process. `taskling.cluster` provides the Ray executor,
which the CLI builds for `--cluster` and puts on the context; stages never import the cluster
package.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Protocol

from .errors import TasklingError

STATE = "state.pt"  # a checkpoint folder is whole once it holds this (the optimizer, schedule, RNG and history)
BEST = "best"       # the best held-out step's weights, a folder beside (or inside) the checkpoints


# -- pools of workers ---------------------------------------------------------------------------------------------
@dataclass
class Shard:
    id: str
    items: int                # jobs, requests, files, chunks or rows in it
    payload: Any = None       # what the worker gets (or built by `load` when the shard is sent)
    attempts: int = 0


class Worker(Protocol):
    def ready(self) -> dict: ...

    def run(self, payload: Any) -> Any: ...


class Pool(Protocol):
    name: str
    tally: Callable[[Any], dict] | None  # extra per-node counters from a shard's result (where nodes are counted)

    @property
    def size(self) -> int: ...  # workers ready to take a shard

    def map(self, shards: Iterable[Shard], on_done: Callable[[Shard, Any], None],
            load: Callable[[Shard], Any] | None = None) -> None:
        """Run every shard on some worker; `on_done(shard, result)` here as each comes back. `load(shard)`
        builds a shard's payload when it is sent (a shard sent again is loaded again)."""

    def report(self) -> dict | None:
        """What each node did, what was lost and sent again (for the manifest); None in this process."""

    def close(self) -> None: ...


THREADS_ENV = "TASKLING_THREADS"


def cpu_threads(asked: int | None = None) -> int:
    """The CPU threads for a model's work: what was asked (--threads), else TASKLING_THREADS, else every
    core. The variable is for a machine shared with other work: several runs side by side (or the test
    suite's workers) each take their share instead of all spinning on every core."""
    if asked:
        return asked
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise TasklingError(f"{THREADS_ENV}={env!r}: write a whole number of threads, 1 or more")
        return int(env)
    return max(1, os.cpu_count() or 1)


def failure(e: BaseException) -> str:
    """How a worker that could not start says why: a user-facing error as it is, anything else with its type."""
    return str(e) if isinstance(e, TasklingError) else f"{type(e).__name__}: {e}"


def in_order(total: int, emit: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    """A callback that takes results by index in any order and passes them to `emit` in index order."""
    held: dict[int, Any] = {}
    nxt = [0]

    def take(i: int, value: Any) -> None:
        held[i] = value
        while nxt[0] in held:
            emit(nxt[0], held.pop(nxt[0]))
            nxt[0] += 1

    def check() -> None:
        """After the last shard: every index came (a gap would hold back all that follows)."""
        if nxt[0] != total:
            raise TasklingError(f"cluster: result {nxt[0]} of {total} never came back; run the same command again")
    take.check = check  # type: ignore[attr-defined]
    return take


class LocalPool:
    """One worker in this process, made at once (a worker that cannot start raises here), answering
    the shards one after another in the order given."""

    tally = None

    def __init__(self, name: str, worker: type, args: tuple):
        self.name = name
        self.worker = worker(*args)
        error = self.worker.ready().get("error")
        if error:
            raise TasklingError(error)

    @property
    def size(self) -> int:
        return 1

    def map(self, shards: Iterable[Shard], on_done: Callable[[Shard, Any], None],
            load: Callable[[Shard], Any] | None = None) -> None:
        for shard in shards:
            on_done(shard, self.worker.run(load(shard) if load else shard.payload))

    def report(self) -> dict | None:
        return None

    def close(self) -> None:
        close = getattr(self.worker, "close", None)
        if close is not None:
            close()


# -- where the training loop runs ---------------------------------------------------------------------------------
Write = Callable[[Path], None]  # writes weights (and state) into a folder


class Site(Protocol):
    """Where the one training loop runs: this process, or one rank of data-parallel workers. Every
    method that sums or broadcasts is called by every rank at the same point of the loop."""

    rank: int
    world: int
    console: Any

    def device(self) -> Any: ...  # the torch device the site gives, or None: the loop picks from train.device

    def begin_step(self, step: int) -> None: ...  # before each step (workers reseed dropout: a restart draws the same)

    def share(self, mass: float) -> float | None:
        """This rank's part of a micro-batch's loss mass (completion tokens times weight): 1.0 in one process;
        mass / the sum over ranks on workers; None when this rank has nothing in this micro-batch."""

    def reduce_grads(self, params: list) -> None: ...  # sum the gradients over ranks (nothing to do in one process)

    def total(self, values: list[float]) -> list[float]: ...  # each value summed over ranks

    def from_rank0(self, values: list[float] | None, n: int) -> list[float]: ...  # rank 0's `n` values, on every rank

    def resume(self) -> ContextManager[Path | None]: ...  # the newest whole checkpoint's folder, or None

    def save(self, name: str, write: Write, metrics: dict) -> None: ...  # a checkpoint `name` (step-NNNNNN)

    def keep_best(self, write: Write) -> None: ...  # the weights of a new best held-out step

    def publish(self, write: Write, best: bool, name: str) -> bool:
        """The trained weights as the stage's result (`name`: adapter or model): the best step's when `best`
        and it was kept, else `write`'s. Returns whether the best step's were used."""


class LocalSite:
    """The loop alone in this process: collectives are nothing, checkpoints are folders under
    out/checkpoints (each written to a temp name and renamed: whole or absent; the newest two kept),
    the best step's weights are out/checkpoints/best, and the result is out/<name>."""

    rank, world = 0, 1

    def __init__(self, out: Path, console: Any):
        self.out, self.console = out, console
        self.ckdir = out / "checkpoints"
        self.ckdir.mkdir(parents=True, exist_ok=True)

    def device(self) -> Any:
        return None

    def begin_step(self, step: int) -> None:
        return None

    def share(self, mass: float) -> float | None:
        return 1.0

    def reduce_grads(self, params: list) -> None:
        return None

    def total(self, values: list[float]) -> list[float]:
        return values

    def from_rank0(self, values: list[float] | None, n: int) -> list[float]:
        return list(values or [])

    def resume(self) -> ContextManager[Path | None]:
        done = sorted(p for p in self.ckdir.glob("step-*") if (p / STATE).exists())
        return contextlib.nullcontext(done[-1] if done else None)

    def save(self, name: str, write: Write, metrics: dict) -> None:
        final = self.ckdir / name
        replace_dir(final, write)
        for old in sorted(p for p in self.ckdir.glob("step-*") if p != final)[:-1]:
            shutil.rmtree(old, ignore_errors=True)  # keep the newest two

    def keep_best(self, write: Write) -> None:
        replace_dir(self.ckdir / BEST, write)

    def publish(self, write: Write, best: bool, name: str) -> bool:
        final = self.out / name
        use_best = best and (self.ckdir / BEST).exists()
        shutil.rmtree(final, ignore_errors=True)
        if use_best:
            shutil.copytree(self.ckdir / BEST, final)
        else:
            write(final)
        return use_best


def replace_dir(final: Path, write: Write) -> None:
    """`write` into a temp folder beside `final`, then renamed into place: all of it or none."""
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


# -- executors ----------------------------------------------------------------------------------------------------
TrainLoop = Callable[[Any, Site], Any]  # student.train.fit: (TrainSpec, Site) -> Trained


class Executor(Protocol):
    name: str           # "local", "ray"
    distributed: bool   # True when work leaves this process

    def pool(self, name: str, worker: type, args: tuple, per_node: int = 1) -> Pool: ...

    def worker_threads(self, threads: int | None) -> int | None:
        """Threads each pool worker uses: `threads` here; on a node, what its CPUs for a worker give."""

    def train(self, loop: TrainLoop, spec: Any, out: Path, console: Any, tag: str) -> Any:
        """Run `loop(spec, site)` and return its result (student.train.Trained), with the stage's result
        in `out` (adapter/ or model/). `tag` names the run where checkpoints are shared (run and round)."""

    def backend(self, mcfg: Any, threads: int | None = None) -> Any | None: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Everything in this process: the default."""

    name = "local"
    distributed = False

    def pool(self, name: str, worker: type, args: tuple, per_node: int = 1) -> LocalPool:
        return LocalPool(name, worker, args)

    def worker_threads(self, threads: int | None) -> int | None:
        return threads

    def train(self, loop: TrainLoop, spec: Any, out: Path, console: Any, tag: str) -> Any:
        return loop(spec, LocalSite(out, console))

    def backend(self, mcfg: Any, threads: int | None = None) -> None:
        return None

    def describe(self) -> dict:
        return {"executor": self.name}

    def close(self) -> None:
        return None
