"""Data-parallel LoRA training on the cluster: Ray Train's TorchTrainer (gloo on CPU, NCCL on GPU).

The loop is train.py's, step for step: the same batch order decided up front
from the seed, the same completion-only loss, AdamW, cosine schedule, clipping
and held-out checks. Each of the cluster.train_workers workers takes its share
of every batch (rank::world); its loss is weighted by its share of the
batch's completion tokens and the LoRA gradients are summed with one
all-reduce per step, which is the single-machine gradient of the whole batch. Every
train.checkpoint_every steps rank 0 reports a checkpoint (adapter, optimizer,
scheduler, history) to storage every node can reach (cluster.storage, default
the run's train folder). When a worker dies, FailureConfig restarts the group
from the last checkpoint; dropout draws come from a generator seeded by step
and rank, so a resumed run takes the same steps as one that never stopped.
A driver killed and started again resumes from the newest checkpoint too.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from ..core.config import Config
from ..core.errors import TasklingError
from ..core.workspace import Context, atomic_write_json

STATE = "state.pt"
BEST = "best.safetensors"  # the best held-out step's adapter weights, carried in every checkpoint


def worker_loop(conf: dict) -> None:
    """What every training worker runs (in its own process, on its own node)."""
    import random

    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    from peft.utils import load_peft_weights
    from transformers import get_cosine_schedule_with_warmup

    from ..student import infer
    from ..student.models import load_causal_lm, resolve_hf
    from ..stages.train import Stopper, collate, completion_loss, eval_loss, token_mass

    tc = conf["train"]
    rc = ray.train.get_context()
    rank, world = rc.get_world_rank(), rc.get_world_size()
    infer.set_threads(conf["threads"])
    torch.manual_seed(conf["seed"])
    random.seed(conf["seed"])
    model, tok = load_causal_lm(resolve_hf(conf["model"]))
    lora = LoraConfig(r=tc["lora"]["r"], lora_alpha=tc["lora"]["alpha"], lora_dropout=tc["lora"]["dropout"],
                      target_modules=tc["lora"]["target_modules"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if conf["resume_weights"] is not None:  # loop.train: continue (the weights came from the driver)
        set_peft_model_state_dict(model, conf["resume_weights"])
    peft_model = model
    device = ray.train.torch.get_device()
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps, ga, order, data, held = conf["steps"], tc["grad_accum"], conf["order"], conf["data"], conf["held"]
    opt = torch.optim.AdamW(trainable, lr=conf["lr"], weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(tc["warmup_steps"], steps // 4), steps)
    history: dict = {"loss": [], "eval_loss": [], "tokens": 0, "seconds": 0.0, "stopper": None, "restarts": []}
    start, best_sd = 0, None  # best_sd: the adapter weights of the best held-out step so far
    ck = ray.train.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            state = torch.load(Path(d) / STATE, weights_only=False)
            set_peft_model_state_dict(peft_model, load_peft_weights(d))
            best_sd = load_file(Path(d) / BEST) if (Path(d) / BEST).exists() else None
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = state["history"], state["step"]
        history.setdefault("restarts", []).append(start)
    stopper = Stopper(tc["patience"] if held else None, history.get("stopper"))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    every = conf["every"]
    model.train()
    step = start
    for step in range(start + 1, (start if stopper.stop else steps) + 1):
        t0 = time.perf_counter()
        torch.manual_seed(conf["seed"] * 1_000_003 + step * 1_009 + rank)  # dropout: the same draws after a restart
        loss_sum, ntok = 0.0, 0
        for micro in range(ga):
            mine = order[(step - 1) * ga + micro][rank::world]  # a short batch may leave a rank nothing
            batch = {k: v.to(device) for k, v in collate([data[i] for i in mine], pad).items()} if mine else None
            n_mine = token_mass(batch) if batch is not None else 0
            n_all = torch.tensor([float(n_mine)])
            dist.all_reduce(n_all)  # completion tokens of the whole micro-batch, over all workers
            if n_mine:
                with infer.autocast():
                    loss = completion_loss(model, batch)
                share = n_mine / float(n_all) / ga  # this rank's part of the micro-batch's token mean
                (loss * share).backward()
                loss_sum += float(loss.detach()) * share
                ntok += int(batch["attention_mask"].sum())
        sum_grads(trainable)  # the shares add up to the single-machine gradient of the whole batch
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        both = torch.tensor([loss_sum, float(ntok)])
        dist.all_reduce(both)  # the step's loss (the shares) and all workers' tokens
        loss_sum, ntok = float(both[0]), int(both[1])
        history["tokens"] += ntok
        history["seconds"] += time.perf_counter() - t0
        history["loss"].append([step, round(loss_sum, 5)])
        if held and ((conf["curve"] and step % every == 0) or step == steps):
            got = torch.zeros(2, dtype=torch.float64)  # rank 0 measures, every rank decides the same from it
            if rank == 0:
                got[:] = torch.tensor(eval_loss(peft_model, held, pad, tc["batch_size"]), dtype=torch.float64)
            dist.broadcast(got, 0)
            el, ex = float(got[0]), float(got[1])
            history["eval_loss"].append([step, round(el, 5)])
            history.setdefault("eval_exact", []).append([step, round(ex, 4)])
            if stopper.update(step, el, ex) and tc["best_checkpoint"]:
                best_sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
            history["stopper"] = stopper.state()
        last = step == steps or stopper.stop
        metrics = {"step": step, "loss": loss_sum, "tokens": history["tokens"]}
        if step % tc["checkpoint_every"] == 0 or last:
            if rank == 0:
                tmp = Path(tempfile.mkdtemp(prefix=f"taskling-ck-{step:06d}-")) / "ck"  # on this worker's node
                peft_model.save_pretrained(tmp)
                torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "history": history}, tmp / STATE)
                if best_sd is not None:
                    save_file(best_sd, tmp / BEST)
                (tmp / "step.json").write_text(json.dumps({"step": step, "steps": steps}))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                                 checkpoint_dir_name=f"step-{step:06d}")
                shutil.rmtree(tmp.parent, ignore_errors=True)
            else:
                ray.train.report(metrics, checkpoint_dir_name=f"step-{step:06d}")
        if last:
            break


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


def newest(storage: Path) -> Path | None:
    """The newest whole checkpoint in a run's storage (for a driver that was killed and came back)."""
    done = [p for p in storage.glob("step-*") if (p / STATE).exists() and (p / "step.json").exists()]
    return max(done, key=lambda p: json.loads((p / "step.json").read_text())["step"]) if done else None


def fit(cfg: Config, ctx: Context, out: Path, *, data: list, held: list, order: list, steps: int, lr: float,
        every: int, seed: int, resume_from: Path | None) -> dict:
    """Train on the cluster; leaves out/adapter and returns the history and what the cluster did."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cc, tc = cfg.cluster, cfg.train
    if tc.batch_size < cc.train_workers:
        raise TasklingError(f"cluster.train_workers={cc.train_workers} is more than train.batch_size="
                            f"{tc.batch_size}: every worker needs at least one example per step; raise "
                            "train.batch_size or lower cluster.train_workers")
    remote = cc.storage is not None and "://" in cc.storage  # s3://, gs://...: Ray Train's filesystems
    storage = cc.storage if remote else str(Path(cc.storage).expanduser() if cc.storage else out / "ray")
    # The run's checkpoints belong to exactly this training (workspace, data, settings): another run
    # in the same shared storage, or this one after a change, never resumes from them.
    what = json.dumps([str(out.resolve()), tc.model_dump(mode="json"), cfg.student.model, steps, lr, seed, order,
                       [d["input_ids"] for d in data], str(resume_from)], sort_keys=True)
    name = f"{ctx.run_id}-round-{ctx.round}-{hashlib.sha256(what.encode()).hexdigest()[:12]}"
    where = f"{storage.rstrip('/')}/{name}"
    resume_weights = None
    if resume_from is not None:
        from safetensors.torch import load_file

        resume_weights = load_file(Path(resume_from) / "adapter_model.safetensors")
    conf = {"train": tc.model_dump(mode="json"), "model": cfg.student.model, "data": data, "held": held,
            "order": order, "steps": steps, "lr": lr, "every": every, "seed": seed, "resume_weights": resume_weights,
            "threads": max(1, int(cc.cpus_per_train_worker)),
            "curve": tc.patience is not None or tc.best_checkpoint or tc.eval_every is not None}
    again = None if remote else newest(Path(where))
    if again is not None:  # Ray Train restores from the run's storage by itself; say so
        ctx.console.print(f"train: resuming the cluster run from its checkpoint {again.name}")
    trainer = TorchTrainer(
        worker_loop, train_loop_config=conf,
        scaling_config=ScalingConfig(num_workers=cc.train_workers, use_gpu=cc.use_gpu,
                                     resources_per_worker={"CPU": cc.cpus_per_train_worker}),
        run_config=RunConfig(name=name, storage_path=storage, failure_config=FailureConfig(max_failures=cc.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    t0 = time.perf_counter()
    ctx.console.print(f"train: {cc.train_workers} data-parallel workers on the cluster "
                      f"({'NCCL, GPU' if cc.use_gpu else 'gloo, CPU'}), {steps} steps")
    try:
        result = trainer.fit()
    except Exception as e:  # Ray Train gives up after max_failures
        why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[-1200:]
        raise TasklingError(f"train: the cluster run failed ({type(e).__name__}: {why}); "
                            f"checkpoints are in {where}; run the same command to resume") from None
    if result.checkpoint is None:
        raise TasklingError(f"train: the cluster run ended without a checkpoint; see {where}")
    import torch

    final = out / "adapter"
    shutil.rmtree(final, ignore_errors=True)
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE, weights_only=False)
        shutil.copytree(d, final, ignore=shutil.ignore_patterns(STATE, "step.json", BEST))
        best_step = (state["history"].get("stopper") or {}).get("best_step")
        use_best = cfg.train.best_checkpoint and best_step is not None and (Path(d) / BEST).exists()
        if use_best:  # the same keys save_pretrained writes: a drop-in adapter
            shutil.copyfile(Path(d) / BEST, final / "adapter_model.safetensors")
    history = state["history"]
    spread = {"workers": cc.train_workers, "backend": "nccl" if cc.use_gpu else "gloo",
              "restarts": len(history.get("restarts", [])), "resumed_at_steps": history.get("restarts", []),
              "storage": where, "wall_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "cluster.json", spread)
    return {"history": history, "step": state["step"], "kept_step": best_step if use_best else state["step"],
            "cluster": spread}
