"""train: LoRA-tune the student on the curated examples, in an explicit torch loop.

Loss only on the completion tokens; length-grouped batches; bf16 autocast
where the CPU has it; AdamW with cosine schedule and warmup; gradient
clipping. The whole batch order is fixed by the seed up front, so a
checkpoint (`checkpoints/step-NNNNNN`: adapter, optimizer, scheduler, RNG,
loss history) plus the step number is enough to resume exactly, after
Ctrl-C (which saves one) or kill -9 (which loses at most checkpoint_every steps).
"""
from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from ..core.config import Config
from ..student import infer
from .. import tasks
from ..core.errors import TasklingError
from ..student.models import load_causal_lm, load_tokenizer, resolve_hf
from ..core.progress import bar
from ..core.workspace import Context, atomic_write_json, earlier, read_jsonl, run_stage, upstream


def encode(tok, system: str, ex: dict, max_len: int) -> dict | None:
    """Prompt and completion ids through the chat template; labels mask the prompt."""
    msgs = tasks.student_messages(system, ex["input"])
    prompt = infer.chat_ids(tok, msgs)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": tasks.output_text(ex["output"])}],
                                   tokenize=True)
    full = list(full if isinstance(full, list) else full["input_ids"])
    if full[:len(prompt)] != prompt:
        # Templates that render the prompt differently once an answer follows:
        # fall back to prompt + answer tokens + end-of-turn.
        full = prompt + tok(tasks.output_text(ex["output"]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(full) > max_len:
        return None
    out = {"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt):]}
    if ex.get("weight") is not None and float(ex["weight"]) != 1.0:  # the label model's confidence (label.weight)
        out["weight"] = float(ex["weight"])
    return out


def batch_order(n: int, batch_size: int, steps: int, lengths: list[int], seed: int) -> list[list[int]]:
    """Every step's example indices, decided up front: shuffled epochs, with
    batches drawn from runs of similar length so little compute goes to padding."""
    rng = random.Random(seed)
    order: list[list[int]] = []
    while len(order) < steps:
        idx = list(range(n))
        rng.shuffle(idx)
        window = batch_size * 8
        for w in range(0, n, window):
            part = sorted(idx[w:w + window], key=lambda i: lengths[i])
            batches = [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
            rng.shuffle(batches)
            order.extend(batches)
    return order[:steps]


def collate(items: list[dict], pad_id: int) -> dict:
    width = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        labels[i, :n] = torch.tensor(x["labels"])
        mask[i, :n] = 1
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if any("weight" in x for x in items):  # only then: unweighted batches stay exactly as they were
        out["weights"] = torch.tensor([x.get("weight", 1.0) for x in items], dtype=torch.float32)
    return out


def token_mass(batch: dict) -> float:
    """What a batch's loss is a mean over: its completion tokens, each counted with its example's weight."""
    per_row = (batch["labels"][:, 1:] != -100).sum(dim=1).float()
    return float((per_row * batch["weights"]).sum()) if "weights" in batch else float(per_row.sum())


def _mean(losses: torch.Tensor, batch: dict, keep: torch.Tensor) -> torch.Tensor:
    """Per-token losses at the `keep` positions to one number: the plain mean, or weighted by example."""
    if "weights" not in batch:
        return losses.mean()
    w = batch["weights"].to(losses.device)[:, None].expand_as(keep)[keep]
    return (losses * w).sum() / w.sum().clamp_min(1e-8)


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
    held-out answers greedy decoding would get exactly right (every completion
    token the model's top choice, from the same forward pass as the loss), then
    by loss. Loss alone misleads on small sets: it rises with overconfidence
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


def _base(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def completion_loss(model, batch: dict, exact: list | None = None) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens only. The output head runs
    on just those positions (a few per example for classify), not on every
    position of the vocabulary-wide logits: the same loss for a fraction of the
    head's compute and memory. Models without a separate decoder fall back to
    full logits. With `exact` (a list), appends per example whether every
    completion token is the model's top choice: greedy decoding's exact answer."""
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    base = _base(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if exact is not None:
            hit = (logits[:, :-1].argmax(-1) == targets) | ~keep
            exact.extend(bool(h) for h in hit.all(dim=1))
        flat = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 targets.reshape(-1), ignore_index=-100, reduction="none")
        return _mean(flat.view_as(targets)[keep], batch, keep)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = head(hidden[:, :-1][keep]).float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    if exact is not None:
        hit = torch.ones_like(targets, dtype=torch.bool)
        hit[keep] = logits.argmax(-1) == targets[keep]
        exact.extend(bool(h) for h in hit.all(dim=1))
    return _mean(torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none"), batch, keep)


@torch.no_grad()
def eval_loss(model, data: list[dict], pad_id: int, batch_size: int) -> tuple[float, float] | None:
    """Mean completion-token loss over `data` (the held-out set), and the share
    of its examples greedy decoding would answer exactly."""
    if not data:
        return None
    device = next(model.parameters()).device
    model.eval()
    total, count, exact = 0.0, 0.0, []
    data = sorted(data, key=lambda e: len(e["input_ids"]))  # similar lengths together: little padding
    for b in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate(data[b:b + batch_size], pad_id).items()}
        # A compiled decoder would compile a second, inference-only graph for this: not worth it.
        with infer.autocast(), torch.compiler.set_stance("force_eager"):
            loss = completion_loss(model, batch, exact)
        n = token_mass(batch)
        total += float(loss) * n
        count += n
    model.train()
    return total / max(count, 1), sum(exact) / len(exact)


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
    base = _base(model)
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
        _base(model).get_decoder()._compiled_call_impl = None
        ok = False
        console.print(f"train: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "training without it")
    finally:
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
    return time.perf_counter() - t0, ok


def latest_checkpoint(ckdir: Path) -> Path | None:
    done = sorted(p for p in ckdir.glob("step-*") if (p / "state.pt").exists())
    return done[-1] if done else None


def save_dir(model, final: Path) -> None:
    """model.save_pretrained into a temp folder renamed into place: all of it or none."""
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def save_checkpoint(ckdir: Path, step: int, model, opt, sched, history: dict) -> None:
    """Weights, optimizer, scheduler, RNG and history (with the early-stopping
    state); the step number is the data position, since the batch order is fixed."""
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "history": history},
               tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(p for p in ckdir.glob("step-*") if p != final)[:-1]:
        shutil.rmtree(old, ignore_errors=True)  # keep the newest two


def trained_dir(ctx: Context, round: int | None = None) -> Path:
    """The train stage's result: a LoRA adapter folder, or a whole model after full fine-tuning."""
    out = ctx.stage_dir("train", round)
    return out / "model" if (out / "model" / "config.json").exists() else out / "adapter"


def load_trained(ctx: Context, base_model: str, round: int | None = None):
    """The tuned student as one plain transformers model (LoRA merged in) and its tokenizer."""
    path = trained_dir(ctx, round)
    if path.name == "model":
        return load_causal_lm(path)
    from peft import PeftModel

    model, tok = load_causal_lm(resolve_hf(base_model))
    return PeftModel.from_pretrained(model, path).merge_and_unload(), tok


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    settings = {k: cfg.section(k) for k in ("task", "student", "train")} | {"seed": cfg.seed}
    inputs = upstream(ctx, "curate")
    resume_from = None  # the loop's `continue`: start from the last round's adapter, train on the new examples' worth
    if ctx.round > 0 and cfg.loop.train == "continue" and not cfg.train.full_finetune:
        settings["loop"] = {"train": "continue", "continue_steps": cfg.loop.continue_steps}
        inputs |= earlier(ctx, "train", "curate")
        resume_from = trained_dir(ctx, ctx.round - 1)

    def body(out: Path) -> dict:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from peft.utils import load_peft_weights
        from transformers import get_cosine_schedule_with_warmup

        infer.set_threads(ctx.threads)
        tc = cfg.train
        seed = cfg.seed if tc.seed is None else tc.seed
        torch.manual_seed(seed)
        random.seed(seed)
        device = pick_device(tc.device)
        task = tasks.get(cfg.task)
        system = task.system_prompt(cfg.task)
        on_cluster = ctx.cluster is not None and not tc.full_finetune  # data-parallel on Ray, the same loop
        if on_cluster:  # the workers load the model; here only the tokenizer encodes the data
            model, tok = None, load_tokenizer(cfg.student.model)
        else:
            model, tok = load_causal_lm(resolve_hf(cfg.student.model))
        cur = ctx.stage_dir("curate")
        enc = [encode(tok, system, ex, tc.max_seq_len) for ex in read_jsonl(cur / "train.jsonl")]
        data = [e for e in enc if e is not None]
        held = [e for e in (encode(tok, system, ex, tc.max_seq_len) for ex in read_jsonl(cur / "eval.jsonl")) if e]
        if not data:
            raise TasklingError(f"train: no example fits train.max_seq_len={tc.max_seq_len} tokens; raise it")
        steps = tc.steps or default_steps(len(data), tc.batch_size * tc.grad_accum)
        if resume_from is not None:
            new = len(data) - len(read_jsonl(ctx.stage_dir("curate", ctx.round - 1) / "train.jsonl"))
            steps = cfg.loop.continue_steps or max(10, min(steps, math.ceil(4 * max(new, 1) / (tc.batch_size * tc.grad_accum))))
        every = tc.eval_every or default_eval_every(steps)
        lr = tc.lr or (5e-5 if tc.full_finetune else 5e-4)
        order = batch_order(len(data), tc.batch_size, steps * tc.grad_accum, [len(d["input_ids"]) for d in data],
                            seed)
        if on_cluster:
            from ..cluster.train import fit

            done = fit(cfg, ctx, out, data=data, held=held, order=order, steps=steps, lr=lr, every=every, seed=seed,
                       resume_from=resume_from)
            h = done["history"]
            stopper = Stopper(tc.patience if held else None, h.get("stopper"))
            tok.save_pretrained(out / "adapter")
            return summary(ctx, out, out / "adapter", h, stopper, steps, done["kept_step"], data, enc, lr, every,
                           "cluster", resume_from, cfg) | {"compiled": False, "compile_seconds": 0.0,
                                                           "cluster": done["cluster"]}
        if tc.full_finetune:
            model.requires_grad_(True)
        else:
            lora = LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout,
                              target_modules=tc.lora.target_modules, task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
            if resume_from is not None:
                set_peft_model_state_dict(model, load_peft_weights(str(resume_from)))
                ctx.console.print(f"train: continuing from round {ctx.round - 1}'s adapter")
        model.to(device)
        model.train()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        sched = get_cosine_schedule_with_warmup(opt, min(tc.warmup_steps, steps // 4), steps)
        ckdir = out / "checkpoints"
        ckdir.mkdir(exist_ok=True)
        history: dict = {"loss": [], "eval_loss": [], "tokens": 0, "seconds": 0.0, "stopper": None}
        start = 0
        if (ck := latest_checkpoint(ckdir)) is not None:
            state = torch.load(ck / "state.pt", weights_only=False)
            if tc.full_finetune:
                from safetensors.torch import load_file

                model.load_state_dict(load_file(ck / "model.safetensors"), strict=False)
            else:
                set_peft_model_state_dict(model, load_peft_weights(str(ck)))
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            history, start = state["history"], state["step"]
            ctx.console.print(f"train: resuming from {ck.name}")
        stopper = Stopper(tc.patience if held else None, history.get("stopper"))
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # A held-out curve every `every` steps when something uses it (early stopping, best checkpoint, or
        # the user asked for one); otherwise one held-out loss at the end, which saves whole forward passes.
        curve = tc.patience is not None or tc.best_checkpoint or tc.eval_every is not None
        compiled = compile_decoder(model, tc.compile, steps, device, ctx.console)
        compile_s = 0.0
        if compiled and start < steps and not stopper.stop:
            ctx.console.print("train: compiling the decoder (torch.compile), once per run")
            first = collate([data[i] for i in order[start * tc.grad_accum]], pad)
            compile_s, compiled = warm_compiled(model, {k: v.to(device) for k, v in first.items()}, ctx.console)
        step = start
        try:
            with bar(ctx.console) as progress:
                ptask = progress.add_task("train", total=steps, completed=start, info="")
                end = start if stopper.stop else steps  # a resume after an early stop trains no further
                for step in range(start + 1, end + 1):
                    t0 = time.perf_counter()
                    loss_sum, ntok = 0.0, 0
                    for micro in range(tc.grad_accum):
                        batch = collate([data[i] for i in order[(step - 1) * tc.grad_accum + micro]], pad)
                        batch = {k: v.to(device) for k, v in batch.items()}
                        with infer.autocast():
                            loss = completion_loss(model, batch)  # only the completion tokens count
                        (loss / tc.grad_accum).backward()
                        loss_sum += float(loss.detach()) / tc.grad_accum
                        ntok += int(batch["attention_mask"].sum())
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    history["tokens"] += ntok
                    history["seconds"] += time.perf_counter() - t0
                    history["loss"].append([step, round(loss_sum, 5)])
                    if held and ((curve and step % every == 0) or step == steps):
                        el, ex = eval_loss(model, held, pad, tc.batch_size)
                        history["eval_loss"].append([step, round(el, 5)])
                        history.setdefault("eval_exact", []).append([step, round(ex, 4)])
                        if stopper.update(step, el, ex) and tc.best_checkpoint:
                            save_dir(model, ckdir / "best")
                        history["stopper"] = stopper.state()
                    if step % tc.checkpoint_every == 0 or step == steps or stopper.stop:
                        save_checkpoint(ckdir, step, model, opt, sched, history)
                    tps = history["tokens"] / max(history["seconds"], 1e-9)
                    best = (f"  best eval {stopper.best_exact:.0%} exact, loss {stopper.best_loss:.3f} @ "
                            f"{stopper.best_step}" if stopper.best_step else "")
                    progress.update(ptask, completed=step, info=f"loss {loss_sum:.3f}  {tps:.0f} tok/s{best}")
                    if stopper.stop:
                        break
        except KeyboardInterrupt:
            if step > start and not (ckdir / f"step-{step:06d}").exists() and len(history["loss"]) == step:
                save_checkpoint(ckdir, step, model, opt, sched, history)
                ctx.console.print(f"train: interrupted; saved step-{step:06d}, run the same command to resume")
            raise
        last = history["loss"][-1][0] if history["loss"] else 0
        final_dir = out / ("model" if tc.full_finetune else "adapter")
        use_best = tc.best_checkpoint and stopper.best_step is not None and (ckdir / "best").exists()
        shutil.rmtree(final_dir, ignore_errors=True)
        if use_best:
            shutil.copytree(ckdir / "best", final_dir)
        else:
            model.save_pretrained(final_dir)
        tok.save_pretrained(final_dir)
        m = summary(ctx, out, final_dir, history, stopper, steps, stopper.best_step if use_best else last, data,
                    enc, lr, every, str(device), resume_from, cfg)
        m["counts"]["trainable_params"] = trainable
        return m | {"compiled": compiled, "compile_seconds": round(compile_s, 1)}

    if ctx.cluster is not None and not cfg.train.full_finetune:  # data-parallel: a different gradient
        settings["cluster"] = {"train_workers": cfg.cluster.train_workers, "use_gpu": cfg.cluster.use_gpu}
    return run_stage(ctx, "train", settings, inputs, body)


def summary(ctx: Context, out: Path, final_dir: Path, history: dict, stopper: Stopper, steps: int, kept_step: int,
            data: list, enc: list, lr: float, every: int, device: str, resume_from: Path | None, cfg: Config) -> dict:
    """loss.json, the closing line and the manifest of a finished training run (local or on the cluster)."""
    tc = cfg.train
    last = history["loss"][-1][0] if history["loss"] else 0
    stop_reason = None
    if stopper.stop:
        stop_reason = (f"held-out answers and loss did not improve for {tc.patience} evaluations after step "
                       f"{stopper.best_step}; stopped at step {last} of {steps}")
    use_best = kept_step != last
    tps = history["tokens"] / max(history["seconds"], 1e-9)
    atomic_write_json(out / "loss.json", {"loss": history["loss"], "eval_loss": history["eval_loss"],
                                          "eval_exact": history.get("eval_exact", []), "best_step": kept_step})
    final = history["loss"][-1][1] if history["loss"] else None
    ctx.console.print(f"train: {last} steps on {len(data)} examples, final loss {final}, {tps:.0f} tokens/s"
                      + (f"; kept step {kept_step} (held-out: {stopper.best_exact:.0%} exact answers, loss "
                         f"{stopper.best_loss:.4f})" if use_best else "")
                      + (f"; {stop_reason}" if stop_reason else ""))
    precision = "bf16-autocast" if infer.bf16_supported() and os.environ.get("TASKLING_FP32") != "1" else "fp32"
    return {"counts": {"steps": last, "planned_steps": steps, "examples": len(data),
                       "skipped_too_long": len(enc) - len(data)},
            "final_loss": final, "eval_loss": history["eval_loss"][-1][1] if history["eval_loss"] else None,
            "best_step": kept_step, "best_eval_loss": stopper.best_loss, "best_eval_exact": stopper.best_exact,
            "eval_exact": history["eval_exact"][-1][1] if history.get("eval_exact") else None,
            "stopped_early": stopper.stop,
            "stop_reason": stop_reason, "eval_every": every, "lr": lr, "device": device,
            "mode": "full" if tc.full_finetune else "lora",
            "continued_from": str(resume_from) if resume_from is not None else None,
            "tokens_per_s": round(tps, 1), "train_seconds": round(history["seconds"], 1),
            "precision": precision, "base_model": str(resolve_hf(cfg.student.model)),
            "outputs": [f"{final_dir.name}/{'model' if tc.full_finetune else 'adapter_model'}.safetensors",
                        "loss.json"]}
