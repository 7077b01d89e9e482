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
import random
import shutil
import time
from pathlib import Path

import torch

from ..config import Config
from .. import infer, tasks
from ..errors import TasklingError
from ..models import load_causal_lm, resolve_hf
from ..progress import bar
from ..workspace import Context, atomic_write_json, read_jsonl, run_stage, upstream


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
    return {"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt):]}


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
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def default_steps(n_examples: int, batch_size: int) -> int:
    """About three passes over the data, within 10..300 steps: enough to learn the
    format and the mapping, short of where a small model starts to forget."""
    return max(10, min(300, math.ceil(3 * n_examples / batch_size)))


@torch.no_grad()
def eval_loss(model, data: list[dict], pad_id: int, batch_size: int) -> float | None:
    if not data:
        return None
    model.eval()
    total, count = 0.0, 0
    for b in range(0, len(data), batch_size):
        batch = collate(data[b:b + batch_size], pad_id)
        with infer.autocast():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    model.train()
    return total / max(count, 1)


def latest_checkpoint(ckdir: Path) -> Path | None:
    done = sorted(p for p in ckdir.glob("step-*") if (p / "state.pt").exists())
    return done[-1] if done else None


def save_checkpoint(ckdir: Path, step: int, model, opt, sched, history: dict) -> None:
    """Write to a temp folder and rename, so a kill leaves either all of it or none."""
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


def run(cfg: Config, ctx: Context) -> dict:
    settings = {k: cfg.section(k) for k in ("task", "student", "train")} | {"seed": cfg.seed}
    inputs = upstream(ctx, "curate")

    def body(out: Path) -> dict:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from peft.utils import load_peft_weights

        infer.set_threads(ctx.threads)
        tc = cfg.train
        seed = cfg.seed if tc.seed is None else tc.seed
        torch.manual_seed(seed)
        random.seed(seed)
        task = tasks.get(cfg.task)
        system = task.system_prompt(cfg.task)
        model, tok = load_causal_lm(resolve_hf(cfg.student.model))
        cur = ctx.stage_dir("curate")
        enc = [encode(tok, system, ex, tc.max_seq_len) for ex in read_jsonl(cur / "train.jsonl")]
        data = [e for e in enc if e is not None]
        held = [e for e in (encode(tok, system, ex, tc.max_seq_len) for ex in read_jsonl(cur / "eval.jsonl")) if e]
        if not data:
            raise TasklingError(f"train: no example fits train.max_seq_len={tc.max_seq_len} tokens; raise it")
        steps = tc.steps or default_steps(len(data), tc.batch_size * tc.grad_accum)
        order = batch_order(len(data), tc.batch_size, steps * tc.grad_accum, [len(d["input_ids"]) for d in data],
                            seed)
        lora = LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout,
                          target_modules=tc.lora.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        model.train()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.lr, weight_decay=0.0)
        from transformers import get_cosine_schedule_with_warmup

        sched = get_cosine_schedule_with_warmup(opt, min(tc.warmup_steps, steps // 4), steps)
        ckdir = out / "checkpoints"
        ckdir.mkdir(exist_ok=True)
        history: dict = {"loss": [], "eval_loss": [], "tokens": 0, "seconds": 0.0}
        start = 0
        if (ck := latest_checkpoint(ckdir)) is not None:
            state = torch.load(ck / "state.pt", weights_only=False)
            set_peft_model_state_dict(model, load_peft_weights(str(ck)))
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            history, start = state["history"], state["step"]
            ctx.console.print(f"train: resuming from {ck.name}")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        step = start
        try:
            with bar(ctx.console) as progress:
                ptask = progress.add_task("train", total=steps, completed=start, info="")
                for step in range(start + 1, steps + 1):
                    t0 = time.perf_counter()
                    loss_sum, ntok = 0.0, 0
                    for micro in range(tc.grad_accum):
                        batch = collate([data[i] for i in order[(step - 1) * tc.grad_accum + micro]], pad)
                        with infer.autocast():
                            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                        # Completion-only loss: shift, and count only unmasked targets.
                        targets = batch["labels"][:, 1:]
                        loss = torch.nn.functional.cross_entropy(
                            logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
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
                    if step % tc.checkpoint_every == 0 or step == steps:
                        el = eval_loss(model, held, pad, tc.batch_size)
                        if el is not None:
                            history["eval_loss"].append([step, round(el, 5)])
                        save_checkpoint(ckdir, step, model, opt, sched, history)
                    tps = history["tokens"] / max(history["seconds"], 1e-9)
                    progress.update(ptask, completed=step, info=f"loss {loss_sum:.3f}  {tps:.0f} tok/s")
        except KeyboardInterrupt:
            if step > start and not (ckdir / f"step-{step:06d}").exists() and len(history["loss"]) == step:
                save_checkpoint(ckdir, step, model, opt, sched, history)
                ctx.console.print(f"train: interrupted; saved step-{step:06d}, run the same command to resume")
            raise
        adapter = out / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        model.save_pretrained(adapter)
        tok.save_pretrained(adapter)
        tps = history["tokens"] / max(history["seconds"], 1e-9)
        atomic_write_json(out / "loss.json", {"loss": history["loss"], "eval_loss": history["eval_loss"]})
        final = history["loss"][-1][1] if history["loss"] else None
        ctx.console.print(f"train: {steps} steps on {len(data)} examples, final loss {final}, {tps:.0f} tokens/s")
        return {"counts": {"steps": steps, "examples": len(data), "skipped_too_long": len(enc) - len(data),
                           "trainable_params": trainable},
                "final_loss": final, "eval_loss": history["eval_loss"][-1][1] if history["eval_loss"] else None,
                "tokens_per_s": round(tps, 1), "train_seconds": round(history["seconds"], 1),
                "precision": "bf16-autocast" if infer.bf16_supported() else "fp32",
                "base_model": str(resolve_hf(cfg.student.model)),
                "outputs": ["adapter/adapter_model.safetensors", "loss.json"]}

    return run_stage(ctx, "train", settings, inputs, body)
