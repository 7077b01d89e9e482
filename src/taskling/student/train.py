"""The one training loop: LoRA (or full) fine-tuning of the student, in torch with PEFT.

`fit(spec, site)` reads top to bottom: the model and its LoRA, AdamW with a cosine schedule
and warmup, the newest checkpoint resumed, torch.compile where it pays, then each step: this
rank's part of every micro-batch, the completion-only loss (batches.py) scaled by its share of
the micro-batch's tokens, backward, gradients summed over the ranks, clipping, the optimizer
and schedule; a held-out check every `every` steps with early stopping and the best step kept
(`Stopper`); a checkpoint (`step-NNNNNN`: weights, optimizer, schedule, RNG, history) every
train.checkpoint_every steps, on Ctrl-C and at the end.

The same function runs in this process and in every Ray Train worker: the `Site`
(core.executor) is what differs. In one process the collectives are nothing and checkpoints
are folders (`LocalSite`); on workers each rank takes rank::world of every micro-batch, its
loss weighted by its share of the micro-batch's completion tokens, so one all-reduce (sum) of
the gradients gives exactly the single-machine gradient of the whole batch, and checkpoints go
to Ray Train's storage (cluster/train.py). The batch order is fixed by the seed up front, so a
checkpoint plus its step number resumes exactly.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.config import TrainCfg
from ..core.errors import TasklingError
from ..core.executor import STATE, Site
from ..core.progress import bar
from . import infer, scoring
from .batches import collate, completion_loss, eval_loss, token_mass, unwrap
from .models import load_causal_lm, resolve_hf


def default_steps(n_examples: int, batch_size: int) -> int:
    """About four passes over the data, within 30..300 steps. Held-out loss
    picks the best step and stops early (train.patience), so the budget can
    err long: 20 steps left the demo's 51 curated examples under-trained
    (gold 0.46 against 0.54 at 24 steps), while sixty at lr 1e-3 forgot."""
    return max(30, min(300, math.ceil(4 * n_examples / batch_size)))


def default_eval_every(steps: int) -> int:
    return max(1, round(steps / 8))


def pick_device(want: str) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise TasklingError("train.device is 'cuda' but torch sees no CUDA GPU; set train.device: auto")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


class Stopper:
    """Early stopping and best-step choice on the held-out set: first by how many
    held-out answers are right as the student will answer them (classify: the
    best-scored label, as served; otherwise greedy decoding's exact answer, every
    completion token the model's top choice, from the same forward pass as the
    loss), then by loss. Loss alone misleads on small sets: it rises with overconfidence
    while answers still improve (the demo's 11 held-out items chose step 12 of 24
    by loss: gold accuracy 0.39, against 0.59 at step 24). Remembers the best step
    and counts evaluations since it; saved in every checkpoint so a resume decides
    the same."""

    def __init__(self, patience: int | None, state: dict | None = None):
        self.patience = patience
        self.best_loss: float | None = None
        self.best_exact: float | None = None
        self.best_step: int | None = None
        self.since = 0
        if state:
            self.best_loss, self.best_step, self.since = state["best_loss"], state["best_step"], state["since"]
            self.best_exact = state.get("best_exact")

    def update(self, step: int, loss: float, exact: float | None = None) -> bool:
        """Record the held-out `loss` (and exact-answer rate) at `step`; True when it is a new best."""
        better = self.best_loss is None or (
            exact is not None and self.best_exact is not None and exact > self.best_exact + 1e-9) or (
            (exact is None or self.best_exact is None or abs(exact - self.best_exact) <= 1e-9)
            and loss < self.best_loss - 1e-4)
        if better:
            self.best_loss, self.best_exact, self.best_step, self.since = loss, exact, step, 0
            return True
        self.since += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.since >= self.patience

    def state(self) -> dict:
        return {"best_loss": self.best_loss, "best_exact": self.best_exact, "best_step": self.best_step,
                "since": self.since}


COMPILE_MIN_STEPS = 150  # compiling costs ~2 min here and saves ~15-30% a step: worth it from about here


def compile_decoder(model, want: bool | None, steps: int, device: torch.device, console) -> bool:
    """torch.compile the student's decoder stack in place (state-dict keys
    unchanged, so checkpoints and adapters are the same). null compiles for
    long runs only; no C compiler on a CPU machine means no compile."""
    if want is False or (want is None and steps < COMPILE_MIN_STEPS):
        return False
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        console.print("train: train.compile skipped: torch.compile needs a C++ compiler on CPU (apt install g++)")
        return False
    base = unwrap(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None:
        return False
    decoder.compile(dynamic=True)
    return True


def warm_compiled(model, batch: dict, console) -> tuple[float, bool]:
    """Run one forward and backward so torch.compile does its work before the
    clock starts; on failure fall back to eager. Leaves no gradients and the RNG
    as it was, so a compiled run takes the same steps as an eager one.
    Returns the seconds it took and whether the decoder is still compiled."""
    t0 = time.perf_counter()
    rng = torch.get_rng_state()
    ok = True
    try:
        with infer.autocast():
            completion_loss(model, batch).backward()
    except Exception as e:  # a compiler or backend failure: train without it
        unwrap(model).get_decoder()._compiled_call_impl = None
        ok = False
        console.print(f"train: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "training without it")
    finally:
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
    return time.perf_counter() - t0, ok


@dataclass(frozen=True)
class TrainSpec:
    """One training run as every worker gets it (it crosses to Ray Train's workers: plain data)."""

    model: str                       # the student (a name or a folder), loaded where the loop runs
    train: TrainCfg
    data: list[dict]                 # encoded examples (batches.encode)
    held: list[dict]                 # the encoded held-out set
    order: list[list[int]]           # every micro-batch's example indices (batches.batch_order)
    steps: int
    lr: float
    every: int                       # a held-out check every this many steps, when a curve is wanted
    seed: int
    threads: int | None = None
    compile: bool | None = None      # train.compile (null: for long runs only)
    resume_weights: dict | None = None  # loop.train continue: the previous round's adapter weights ...
    resume_from: str | None = None      # ... and the folder they came from
    held_name: str = "eval"             # which curated set `held` is: the label-model dev set or eval
    tails: list[list[int]] | None = None  # classify: each label's answer tokens; the held-out check scores
                                          # them as serving does (scoring.held_out)

    @property
    def curve(self) -> bool:
        """A held-out check every `every` steps when something uses it (early stopping, best checkpoint, or the
        user asked for one); otherwise one at the end, which saves whole forward passes."""
        tc = self.train
        return tc.patience is not None or tc.best_checkpoint or tc.eval_every is not None

    @property
    def result(self) -> str:
        """The folder the trained weights end in: a LoRA adapter, or the whole model after full fine-tuning."""
        return "model" if self.train.full_finetune else "adapter"


@dataclass
class Trained:
    """What a finished training run leaves besides its weights."""

    history: dict                    # loss and held-out curves, tokens, seconds, early-stopping state
    step: int                        # the last step trained
    kept_step: int                   # the step whose weights are the result (the best, or the last)
    device: str
    compiled: bool = False
    compile_seconds: float = 0.0
    trainable: int | None = None     # trainable parameters (known where the model was built)
    cluster: dict | None = None      # what the cluster did: workers, restarts, storage


def fit(spec: TrainSpec, site: Site) -> Trained:
    """Train `spec` at `site`; its weights end in the site's result folder (spec.result)."""
    tc = spec.train
    model, tok, device = build(spec, site)
    params = [p for p in model.parameters() if p.requires_grad]
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(tc.warmup_steps, spec.steps // 4), spec.steps)
    history, start = restore(site, model, opt, sched, tc.full_finetune)
    stopper = Stopper(tc.patience if spec.held else None, history.get("stopper"))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    compiled = compile_decoder(model, spec.compile, spec.steps, device, site.console)
    compile_s = 0.0
    if compiled and start < spec.steps and not stopper.stop:
        site.console.print("train: compiling the decoder (torch.compile), once per run")
        first = collate([spec.data[i] for i in spec.order[start * tc.grad_accum]], pad)
        compile_s, compiled = warm_compiled(model, {k: v.to(device) for k, v in first.items()}, site.console)

    def checkpoint(step: int, loss: float) -> None:
        def write(where: Path) -> None:  # the state holds tensors, numbers and text only: loading it runs no code
            model.save_pretrained(where)
            torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "history": history},
                       where / STATE)
        site.save(f"step-{step:06d}", write, {"step": step, "loss": loss, "tokens": history["tokens"]})

    step = saved = start
    try:
        with bar(site.console) as progress:
            ptask = progress.add_task("train", total=spec.steps, completed=start, info="")
            end = start if stopper.stop else spec.steps  # a resume after an early stop trains no further
            for step in range(start + 1, end + 1):
                t0 = time.perf_counter()
                site.begin_step(step)
                loss = one_step(model, spec, site, opt, sched, params, step, pad, device, history)
                history["seconds"] += time.perf_counter() - t0
                history["loss"].append([step, round(loss, 5)])
                if spec.held and ((spec.curve and step % spec.every == 0) or step == spec.steps):
                    held_out(model, spec, site, stopper, step, pad, history)
                if step % tc.checkpoint_every == 0 or step == spec.steps or stopper.stop:
                    checkpoint(step, loss)
                    saved = step
                tps = history["tokens"] / max(history["seconds"], 1e-9)
                best = (f"  best eval {stopper.best_exact:.0%} exact, loss {stopper.best_loss:.3f} @ "
                        f"{stopper.best_step}" if stopper.best_step else "")
                progress.update(ptask, completed=step, info=f"loss {loss:.3f}  {tps:.0f} tok/s{best}")
                if stopper.stop:
                    break
    except KeyboardInterrupt:
        if step > start and saved != step and len(history["loss"]) == step:
            checkpoint(step, history["loss"][-1][1])
            site.console.print(f"train: interrupted; saved step-{step:06d}, run the same command to resume")
        raise
    last = history["loss"][-1][0] if history["loss"] else 0
    used_best = site.publish(model.save_pretrained, bool(tc.best_checkpoint and stopper.best_step is not None),
                             spec.result)
    return Trained(history, last, stopper.best_step if used_best else last, str(device), compiled,
                   round(compile_s, 1), sum(p.numel() for p in params))


def build(spec: TrainSpec, site: Site):
    """The student with its LoRA (or every weight trainable) on the site's device, seeded: (model, tok, device)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    tc = spec.train
    infer.set_threads(spec.threads)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    device = site.device()
    device = pick_device(tc.device) if device is None else device
    model, tok = load_causal_lm(resolve_hf(spec.model))
    if tc.full_finetune:
        model.requires_grad_(True)
    else:
        lora = LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout,
                          target_modules=tc.lora.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        if spec.resume_weights is not None:
            set_peft_model_state_dict(model, spec.resume_weights)
        infer.cast_weights(model, frozen_only=True)  # the base's weights as autocast reads them: the same sums, sooner
    model.to(device)
    model.train()
    return model, tok, device


def restore(site: Site, model, opt, sched, full: bool) -> tuple[dict, int]:
    """The newest checkpoint's weights, optimizer, schedule and RNG into place: (history, its step)."""
    history: dict = {"loss": [], "eval_loss": [], "tokens": 0, "seconds": 0.0, "stopper": None}
    with site.resume() as ck:
        if ck is None:
            return history, 0
        state = load_state(ck)
        if full:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(ck / "model.safetensors"), strict=False)
        else:
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights

            set_peft_model_state_dict(model, load_peft_weights(str(ck)))
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    history, start = state["history"], state["step"]
    history.setdefault("restarts", []).append(start)
    site.console.print(f"train: resuming from step-{start:06d}")
    return history, start


def load_state(ck: Path) -> dict:
    """A checkpoint's state.pt, loaded as data only (tensors, numbers, text, lists, dicts): a planted file
    cannot run code here."""
    import pickle

    try:
        return torch.load(ck / STATE, weights_only=True)
    except pickle.UnpicklingError as e:
        raise TasklingError(f"{ck / STATE}: not a checkpoint taskling wrote: it holds objects that could run code "
                            f"when loaded ({str(e).splitlines()[-1][:200]}); delete {ck} to resume from the one "
                            "before it") from None


def one_step(model, spec: TrainSpec, site: Site, opt, sched, params: list, step: int, pad: int, device,
             history: dict) -> float:
    """One optimizer step over train.grad_accum micro-batches, this rank's part of each; the step's loss."""
    ga = spec.train.grad_accum
    loss_sum, ntok = 0.0, 0
    for micro in range(ga):
        mine = spec.order[(step - 1) * ga + micro][site.rank::site.world]  # a short batch may leave a rank nothing
        batch = {k: v.to(device) for k, v in collate([spec.data[i] for i in mine], pad).items()} if mine else None
        share = site.share(token_mass(batch) if batch is not None else 0.0)
        if share is None:
            continue
        with infer.autocast():
            loss = completion_loss(model, batch)  # only the completion tokens count
        (loss * share / ga).backward()  # this rank's part of the micro-batch's token mean
        loss_sum += float(loss.detach()) * share / ga
        ntok += int(batch["attention_mask"].sum())
    site.reduce_grads(params)  # the shares add up to the single-machine gradient of the whole batch
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    loss_sum, tokens = site.total([loss_sum, float(ntok)])  # the step's loss and every rank's tokens
    history["tokens"] += int(tokens)
    return loss_sum


def held_out(model, spec: TrainSpec, site: Site, stopper: Stopper, step: int, pad: int, history: dict) -> None:
    """Rank 0 measures the held-out set; every rank decides the same from its figures."""
    mine = None
    if site.rank == 0:
        scored = scoring.held_out(model, spec.held, spec.tails, pad, spec.train.batch_size) if spec.tails else None
        mine = list(scored or eval_loss(model, spec.held, pad, spec.train.batch_size))
        history["held_measure"] = "scored" if scored else "greedy"
    el, ex = site.from_rank0(mine, 2)
    history["eval_loss"].append([step, round(el, 5)])
    history.setdefault("eval_exact", []).append([step, round(ex, 4)])
    if stopper.update(step, el, ex) and spec.train.best_checkpoint:
        site.keep_best(model.save_pretrained)
    history["stopper"] = stopper.state()
