"""train: LoRA-tune the student on the curated examples (or fine-tune every weight).

The recipe: encode the curated sets through the student's chat template, fix the
budget (steps, held-out checks, learning rate) and the whole batch order from the
seed, then hand the one training loop (student/train.py: completion-only loss,
AdamW with cosine warmup, clipping, early stopping on the held-out set, checkpoints
`checkpoints/step-NNNNNN` that resume exactly after Ctrl-C or kill -9) to the
executor: here, or data-parallel on a cluster's nodes. Writes loss.json and the
manifest.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..core import stage, tasktype
from ..core.errors import TasklingError
from ..core.executor import LocalExecutor
from ..core.manifests import TrainManifest
from ..core.stage import StageSpec
from ..core.workspace import Context, atomic_write_json, earlier, read_jsonl
from ..data.retrieve import Retriever, open_book, retriever_settings, served_settings
from ..student import infer, openbook, scoring
from ..student.batches import batch_order, encode
from ..student.models import load_tokenizer, resolve_hf
from ..student.trained import trained_dir
from ..student.train import Stopper, Trained, TrainSpec, default_eval_every, default_steps, fit
from ..tasks import student_messages

SPEC = StageSpec("train", reads=("task", "student", "train", "seed"), manifest=TrainManifest, needs=("curate",))


def run(ctx: Context) -> TrainManifest:
    cfg = ctx.cfg
    settings: dict = {}
    inputs: dict = {}
    resume_from = None  # the loop's `continue`: start from the last round's adapter, train on the new examples' worth
    if ctx.round > 0 and cfg.loop.train == "continue" and not cfg.train.full_finetune:
        settings["loop"] = {"train": "continue", "continue_steps": cfg.loop.continue_steps}
        inputs |= earlier(ctx, "train", "curate")
        resume_from = trained_dir(ctx.stage_dir("train", ctx.round - 1))
    # Data-parallel workers train LoRA; full fine-tuning stays in this process. Their gradient is the
    # same sum in another order, so a cluster run is a run of its own.
    parallel = ctx.executor.distributed and not cfg.train.full_finetune
    if parallel:
        settings["cluster"] = {"train_workers": cfg.cluster.train_workers, "use_gpu": cfg.cluster.use_gpu}
    opened = open_book(cfg, ctx.ws.pile_db)  # once: with mode auto it reads the pile's size
    if opened:  # the retriever that renders the rows reads the pile through these
        settings["retrieval"] = retriever_settings(cfg)

    def body(out: Path) -> dict:
        spec, tok, enc = plan(ctx, resume_from, opened)
        if resume_from is not None:
            ctx.console.print(f"train: continuing from round {ctx.round - 1}'s adapter")
        executor = ctx.executor if parallel else LocalExecutor()
        done = executor.train(fit, spec, out, ctx.console, f"{ctx.run_id}-round-{ctx.round}")
        tok.save_pretrained(out / spec.result)
        m = summary(ctx, out, spec, done, enc)
        if done.trainable is not None:
            m["counts"]["trainable_params"] = done.trainable
        return m | {"compiled": done.compiled, "compile_seconds": done.compile_seconds} | (
            {"cluster": done.cluster} if done.cluster is not None else {})

    return stage.run(ctx, SPEC, body, settings=settings, inputs=inputs)


def plan(ctx: Context, resume_from: Path | None, opened: bool) -> tuple[TrainSpec, object, list]:
    """The run to train: the encoded sets (open-book when `opened`: data.retrieve.open_book), the budget
    and the batch order. Returns (spec, tokenizer, every encoded train example with None for those too
    long)."""
    cfg, tc = ctx.cfg, ctx.cfg.train
    seed = cfg.seed if tc.seed is None else tc.seed
    tok = load_tokenizer(cfg.student.model)
    system = tasktype.get(cfg.task.type).system_prompt(cfg.task)
    cur = ctx.stage_dir("curate")
    book = Retriever.open(cfg, ctx.ws.pile_db, ctx.threads) if opened else None
    try:
        enc = encoded(tok, system, read_jsonl(cur / "train.jsonl"), tc.max_seq_len, seed, book, cfg, raft=True)
        data = [e for e in enc if e is not None]
        chosen, held_name = selection_set(ctx)
        held = [e for e in encoded(tok, system, chosen, tc.max_seq_len, seed, book, cfg) if e]
        if held_name == "dev" and len(held) < MIN_DEV:  # most dev inputs too long for train.max_seq_len
            held_name = "eval"
            held = [e for e in encoded(tok, system, read_jsonl(cur / "eval.jsonl"), tc.max_seq_len, seed, book, cfg)
                    if e]
    finally:
        if book is not None:
            book.close()
    if not data:
        raise TasklingError(f"train: no example fits train.max_seq_len={tc.max_seq_len} tokens; raise it")
    per_step = tc.batch_size * tc.grad_accum
    steps = tc.steps or default_steps(len(data), per_step)
    weights = None
    if resume_from is not None:
        from peft.utils import load_peft_weights

        new = len(data) - len(read_jsonl(ctx.stage_dir("curate", ctx.round - 1) / "train.jsonl"))
        steps = cfg.loop.continue_steps or max(10, min(steps, math.ceil(4 * max(new, 1) / per_step)))
        weights = load_peft_weights(str(resume_from))
    order = batch_order(len(data), tc.batch_size, steps * tc.grad_accum, [len(d["input_ids"]) for d in data], seed)
    # classify closed-book: the held-out check scores every label, as serving answers (scoring.held_out)
    tails = scoring.label_tails(tok, list(cfg.task.labels)) if cfg.task.type == "classify" and not opened else None
    spec = TrainSpec(model=cfg.student.model, train=tc, data=data, held=held, order=order, steps=steps, tails=tails,
                     lr=tc.lr or (5e-5 if tc.full_finetune else 5e-4), every=tc.eval_every or default_eval_every(steps),
                     seed=seed, threads=ctx.threads, compile=tc.compile, resume_weights=weights, held_name=held_name,
                     resume_from=str(resume_from) if resume_from is not None else None)
    return spec, tok, enc


def encoded(tok, system: str, rows: list[dict], max_len: int, seed: int, book: Retriever | None, cfg,
            raft: bool = False) -> list[dict | None]:
    """Each example encoded closed-book, or (with a retriever) open-book: RAFT-rendered for training
    (`raft`), as evaluation will ask it for the held-out sets. train.max_seq_len bounds the example as it
    is closed-book; what the open book adds (the rule to cite, the documents, each cut to
    student.retrieval.chunk_chars) comes on top: the open-book row is encoded without a bound, and kept
    when its answer and the closed-book prompt (the one prompt tokenized only to measure) fit. An
    open-book row keeps its case (oracle, distractors, unsourced) for the manifest."""
    if book is None:
        return [encode(tok, system, ex, max_len) for ex in rows]
    out = []
    for ex in rows:
        r = openbook.render(ex, book, cfg.student.retrieval, system, seed, raft=raft)
        e = encode(tok, system, {**ex, "output": r["output"]}, None, messages=r["messages"])
        answer = sum(label != -100 for label in e["labels"])
        closed = len(infer.chat_ids(tok, student_messages(system, ex["input"])))
        out.append(e | {"case": r["case"]} if closed + answer <= max_len else None)
    return out


def book_summary(ctx: Context, enc: list) -> dict | None:
    """An open-book run's settings and how its training rows were rendered (None closed-book)."""
    shown = [e for e in enc if e is not None and "case" in e]
    if not shown:
        return None
    rc = ctx.cfg.student.retrieval
    return {"k": rc.k, "p": rc.p, "chunk_chars": rc.chunk_chars, "focus": served_settings(ctx.cfg)["focus"],
            "missing": rc.missing} | openbook.cases(shown)


MIN_DEV = 50  # a dev set smaller than this decides no better than the eval set: use eval then


def selection_set(ctx: Context) -> tuple[list[dict], str]:
    """What picks the step (and stops early): the label-model-labelled dev set when curate made one of at
    least MIN_DEV items (label.auto.dev_items; never gold), else the held-out eval set. (items, name)"""
    cur = ctx.stage_dir("curate")
    dev = read_jsonl(cur / "dev.jsonl") if (cur / "dev.jsonl").exists() else []
    if len(dev) >= MIN_DEV:
        return dev, "dev"
    return read_jsonl(cur / "eval.jsonl"), "eval"


def selection(ctx: Context, spec: TrainSpec, history: dict, kept: int, last: int) -> dict:
    """The selection rule and its curve, as the report shows it."""
    name = spec.held_name
    what = ("pile inputs labelled by the label model, never trained on, never gold" if name == "dev"
            else "the held-out eval set")
    right = ("held-out items whose best-scored label is theirs (as served)" if history.get("held_measure") == "scored"
             else "exact held-out answers")
    rule = (f"the step with the most {right} on {name} (n={len(spec.held)}: {what}), "
            f"ties broken by held-out loss, checked every {spec.every} steps"
            + (f"; stops after {spec.train.patience} checks without a better one" if spec.train.patience else "")
            if spec.train.best_checkpoint else "the last step")
    return {"set": name, "n": len(spec.held), "rule": rule, "kept_step": kept, "last_step": last,
            "curve": [{"step": s, "exact": e, "loss": l} for (s, e), (_, l) in
                      zip(history.get("eval_exact", []), history.get("eval_loss", []))]}


def summary(ctx: Context, out: Path, spec: TrainSpec, done: Trained, enc: list) -> dict:
    """loss.json, the closing line and the manifest of a finished training run (here or on a cluster)."""
    tc, history, kept = spec.train, done.history, done.kept_step
    stopper = Stopper(tc.patience if spec.held else None, history.get("stopper"))
    last = history["loss"][-1][0] if history["loss"] else 0
    stop_reason = None
    if stopper.stop:
        stop_reason = (f"held-out answers and loss did not improve for {tc.patience} evaluations after step "
                       f"{stopper.best_step}; stopped at step {last} of {spec.steps}")
    tps = history["tokens"] / max(history["seconds"], 1e-9)
    atomic_write_json(out / "loss.json", {"loss": history["loss"], "eval_loss": history["eval_loss"],
                                          "eval_exact": history.get("eval_exact", []), "best_step": kept})
    final = history["loss"][-1][1] if history["loss"] else None
    ctx.console.print(f"train: {last} steps on {len(spec.data)} examples, final loss {final}, {tps:.0f} tokens/s"
                      + (f"; kept step {kept} (held-out: {stopper.best_exact:.0%} exact answers, loss "
                         f"{stopper.best_loss:.4f})" if kept != last else "")
                      + (f"; {stop_reason}" if stop_reason else ""))
    precision = "bf16-autocast" if infer.bf16_supported() and os.environ.get("TASKLING_FP32") != "1" else "fp32"
    return {"counts": {"steps": last, "planned_steps": spec.steps, "examples": len(spec.data),
                       "skipped_too_long": len(enc) - len(spec.data)},
            "final_loss": final, "eval_loss": history["eval_loss"][-1][1] if history["eval_loss"] else None,
            "best_step": kept, "best_eval_loss": stopper.best_loss, "best_eval_exact": stopper.best_exact,
            "eval_exact": history["eval_exact"][-1][1] if history.get("eval_exact") else None,
            "stopped_early": stopper.stop, "selection": selection(ctx, spec, history, kept, last),
            "stop_reason": stop_reason, "eval_every": spec.every, "lr": spec.lr, "device": done.device,
            "mode": "full" if tc.full_finetune else "lora", "continued_from": spec.resume_from,
            "tokens_per_s": round(tps, 1), "train_seconds": round(history["seconds"], 1),
            "precision": precision, "base_model": str(resolve_hf(spec.model)), "open_book": book_summary(ctx, enc),
            "outputs": [f"{spec.result}/{'model' if tc.full_finetune else 'adapter_model'}.safetensors",
                        "loss.json"]}
