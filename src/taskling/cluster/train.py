"""Data-parallel training on the cluster: the one training loop (student/train.py) in Ray Train's
TorchTrainer workers (gloo on CPU, NCCL on GPU). Only the plumbing around the loop lives here.

`RaySite` is how the loop meets Ray Train (core.executor.Site): each of the cluster.train_workers
workers takes its share of every batch (rank::world), its loss weighted by its share of the
batch's completion tokens, and the LoRA gradients are summed with one all-reduce per step, which
is the single-machine gradient of the whole batch. Every train.checkpoint_every steps rank 0
reports a checkpoint (adapter, optimizer, scheduler, RNG, history, the best step's adapter) to
storage every node can reach (cluster.storage, default the run's train folder). When a worker
dies, FailureConfig restarts the group from the last checkpoint; dropout draws come from a
generator seeded by step and rank, so a resumed run takes the same steps as one that never
stopped. A driver killed and started again resumes from the newest checkpoint too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from ..core.errors import TasklingError
from ..core.executor import BEST, STATE, TrainLoop, Write, replace_dir
from ..core.workspace import atomic_write_json
from ..student.train import Trained, TrainSpec, load_state

STEP = "step.json"  # the step a checkpoint in storage holds, readable without torch


class RaySite:
    """One rank of the data-parallel group, as the training loop sees it. The best held-out step's
    adapter waits in a folder on this worker's node and travels inside every checkpoint."""

    def __init__(self, spec: TrainSpec):
        import ray.train
        import ray.train.torch

        rc = ray.train.get_context()
        self.rank, self.world = rc.get_world_rank(), rc.get_world_size()
        self.seed, self.steps = spec.seed, spec.steps
        self.dev = ray.train.torch.get_device()
        self.console = Console(stderr=True, quiet=True)  # a worker's output reaches nobody
        self.best = Path(tempfile.mkdtemp(prefix="taskling-best-")) / BEST

    def device(self):
        return self.dev

    def begin_step(self, step: int) -> None:
        import torch

        torch.manual_seed(self.seed * 1_000_003 + step * 1_009 + self.rank)  # dropout: the same draws after a restart

    def share(self, mass: float) -> float | None:
        import torch
        import torch.distributed as dist

        whole = torch.tensor([float(mass)], device=self.dev)
        dist.all_reduce(whole)  # completion tokens of the whole micro-batch, over all workers
        return mass / float(whole) if mass else None

    def reduce_grads(self, params: list) -> None:
        sum_grads(params)

    def total(self, values: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        both = torch.tensor(values, device=self.dev)
        dist.all_reduce(both)
        return [float(v) for v in both.cpu()]

    def from_rank0(self, values: list[float] | None, n: int) -> list[float]:
        import torch
        import torch.distributed as dist

        got = torch.zeros(n, dtype=torch.float64, device=self.dev)
        if self.rank == 0:
            got[:] = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(got, 0)
        return [float(v) for v in got.cpu()]

    @contextlib.contextmanager
    def resume(self) -> Iterator[Path | None]:
        import ray.train

        ck = ray.train.get_checkpoint()  # set after a restart, or when a killed driver came back
        if ck is None:
            yield None
            return
        with ck.as_directory() as d:
            if (Path(d) / BEST).exists():
                replace_dir(self.best, lambda tmp: shutil.copytree(Path(d) / BEST, tmp))
            yield Path(d)

    def save(self, name: str, write: Write, metrics: dict) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report(metrics, checkpoint_dir_name=name)
            return
        tmp = Path(tempfile.mkdtemp(prefix=f"taskling-{name}-")) / "ck"  # on this worker's node
        write(tmp)
        if self.best.exists():
            shutil.copytree(self.best, tmp / BEST)
        (tmp / STEP).write_text(json.dumps({"step": metrics["step"], "steps": self.steps}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)), checkpoint_dir_name=name)
        shutil.rmtree(tmp.parent, ignore_errors=True)

    def keep_best(self, write: Write) -> None:
        if self.rank == 0:
            replace_dir(self.best, write)

    def publish(self, write: Write, best: bool, name: str) -> bool:
        """Nothing to write here: the driver publishes from the last checkpoint, which holds these weights."""
        used = best and self.best.exists()
        shutil.rmtree(self.best.parent, ignore_errors=True)
        return used


def sum_grads(params: list) -> None:
    """All-reduce (sum) the gradients of `params` in one flat buffer; a rank that had no example adds zeros."""
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def worker(conf: dict) -> None:
    """What every training worker runs (in its own process, on its own node): the one loop, at its rank."""
    conf["loop"](conf["spec"], RaySite(conf["spec"]))


def newest(storage: Path) -> Path | None:
    """The newest whole checkpoint in a run's storage (for a driver that was killed and came back)."""
    done = [p for p in storage.glob("step-*") if (p / STATE).exists() and (p / STEP).exists()]
    return max(done, key=lambda p: json.loads((p / STEP).read_text())["step"]) if done else None


def storage_of(executor, spec: TrainSpec, out: Path, tag: str) -> tuple[str, str, bool]:
    """(storage path, the run's name in it, whether it is remote). The run's checkpoints belong to exactly
    this training (workspace, data, settings): another run in the same shared storage, or this one after
    a change, never resumes from them."""
    cc = executor.ccfg
    remote = cc.storage is not None and "://" in cc.storage  # s3://, gs://...: Ray Train's filesystems
    storage = cc.storage if remote else str(Path(cc.storage).expanduser() if cc.storage else out / "ray")
    what = json.dumps([str(out.resolve()), spec.train.model_dump(mode="json"), spec.model, spec.steps, spec.lr,
                       spec.seed, spec.order, [d["input_ids"] for d in spec.data], str(spec.resume_from)],
                      sort_keys=True)
    return storage, f"{tag}-{hashlib.sha256(what.encode()).hexdigest()[:12]}", remote


def train(executor, loop: TrainLoop, spec: TrainSpec, out: Path, console: Any, tag: str) -> Trained:
    """`loop` on the cluster; leaves out/adapter and returns the history and what the cluster did."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cc, tc = executor.ccfg, spec.train
    if tc.batch_size < cc.train_workers:
        raise TasklingError(f"cluster.train_workers={cc.train_workers} is more than train.batch_size="
                            f"{tc.batch_size}: every worker needs at least one example per step; raise "
                            "train.batch_size or lower cluster.train_workers")
    storage, name, remote = storage_of(executor, spec, out, tag)
    where = f"{storage.rstrip('/')}/{name}"
    # Each worker trains eager with its CPUs: compiling would cost every worker minutes, again at each restart.
    spec = dataclasses.replace(spec, threads=max(1, int(cc.cpus_per_train_worker)), compile=False)
    again = None if remote else newest(Path(where))
    if again is not None:  # Ray Train restores from the run's storage by itself; say so
        console.print(f"train: resuming the cluster run from its checkpoint {again.name}")
    trainer = TorchTrainer(
        worker, train_loop_config={"loop": loop, "spec": spec},
        scaling_config=ScalingConfig(num_workers=cc.train_workers, use_gpu=cc.use_gpu,
                                     resources_per_worker={"CPU": cc.cpus_per_train_worker}),
        run_config=RunConfig(name=name, storage_path=storage, failure_config=FailureConfig(max_failures=cc.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    t0 = time.perf_counter()
    console.print(f"train: {cc.train_workers} data-parallel workers on the cluster "
                  f"({'NCCL, GPU' if cc.use_gpu else 'gloo, CPU'}), {spec.steps} steps")
    try:
        result = trainer.fit()
    except Exception as e:  # Ray Train gives up after max_failures
        why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[-1200:]
        raise TasklingError(f"train: the cluster run failed ({type(e).__name__}: {why}); "
                            f"checkpoints are in {where}; run the same command to resume") from None
    if result.checkpoint is None:
        raise TasklingError(f"train: the cluster run ended without a checkpoint; see {where}")
    state, used_best = publish(result.checkpoint, tc.best_checkpoint, out / spec.result)
    history = state["history"]
    spread = {"workers": cc.train_workers, "backend": "nccl" if cc.use_gpu else "gloo",
              "restarts": len(history.get("restarts", [])), "resumed_at_steps": history.get("restarts", []),
              "storage": where, "wall_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "cluster.json", spread)
    best_step = (history.get("stopper") or {}).get("best_step")
    return Trained(history, state["step"], best_step if used_best else state["step"], "cluster", cluster=spread)


def publish(checkpoint, best: bool, final: Path) -> tuple[dict, bool]:
    """The last checkpoint's weights (or its best step's) into `final`: (its state, whether the best was used)."""
    shutil.rmtree(final, ignore_errors=True)
    with checkpoint.as_directory() as d:
        d = Path(d)
        state = load_state(d)
        use_best = best and (state["history"].get("stopper") or {}).get("best_step") is not None and (d / BEST).exists()
        if use_best:
            shutil.copytree(d / BEST, final)
        else:
            shutil.copytree(d, final, ignore=shutil.ignore_patterns(STATE, STEP, BEST))
    return state, use_best
