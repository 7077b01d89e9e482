"""export: the tuned student as files the user owns, under runs/<id>/export/.

    merged/    base + LoRA merged, safetensors, tokenizer with chat template,
               task.json (system prompt, type): loads in plain transformers
    adapter/   the PEFT LoRA adapter alone

Verification: the merged folder is loaded back with plain transformers and
its greedy answers on held-out items must equal the tuned model's answers
from the evaluate stage.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import Config
from .. import infer, tasks
from ..errors import TasklingError
from ..models import dir_size_mb
from .train import load_trained, trained_dir
from ..workspace import Context, atomic_write_json, read_jsonl, run_stage, upstream

VERIFY_ITEMS = 8


def run(cfg: Config, ctx: Context) -> dict:
    settings = {k: cfg.section(k) for k in ("task", "student")}
    inputs = upstream(ctx, "train", "evaluate")

    def body(out: Path) -> dict:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        infer.set_threads(ctx.threads)
        task = tasks.get(cfg.task)
        trained = trained_dir(ctx)
        merged_model, tok = load_trained(ctx, cfg.student.model)
        merged = out / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        merged_model.save_pretrained(merged, safe_serialization=True)
        tok.save_pretrained(merged)
        info = {"name": cfg.task.name, "type": cfg.task.type, "system_prompt": task.system_prompt(cfg.task),
                "labels": list(cfg.task.labels), "max_new_tokens": task.MAX_NEW_TOKENS,
                "base_model": cfg.student.model}
        atomic_write_json(merged / "task.json", info)
        adapter = out / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        if trained.name == "adapter":  # full fine-tuning has no adapter: the merged model is the model
            shutil.copytree(trained, adapter)

        # Verify with a fresh, plain transformers load: what a user would do.
        ev = ctx.stage_dir("evaluate")
        src = "eval" if (ev / "pred-student-eval.jsonl").exists() else "gold"
        expected = read_jsonl(ev / f"pred-student-{src}.jsonl")[:VERIFY_ITEMS]
        items = (read_jsonl(ctx.stage_dir("curate") / "eval.jsonl") if src == "eval"
                 else [json.loads(x) for x in ctx.ws.gold.read_text().splitlines() if x.strip()])[:len(expected)]
        plain = AutoModelForCausalLM.from_pretrained(merged)
        plain_tok = AutoTokenizer.from_pretrained(merged)
        outs = infer.generate(plain, plain_tok, [tasks.student_messages(info["system_prompt"], it["input"])
                                                 for it in items], max_new_tokens=task.MAX_NEW_TOKENS)
        same = sum(o["text"] == e["output"] for o, e in zip(outs, expected))
        if same < len(expected):
            ctx.console.print(f"[yellow]export: {same}/{len(expected)} greedy answers of the merged model match "
                              f"the evaluated student (bf16 rounding can flip near-ties)[/]")
        if expected and same == 0:
            raise TasklingError(f"{merged}: the merged model answers differently from the trained one on every "
                                "checked item; the export is not trustworthy")
        artifacts = [{"name": "merged model (safetensors, transformers)", "path": str(merged),
                      "size_mb": dir_size_mb(merged)},
                     *([{"name": "LoRA adapter (PEFT)", "path": str(adapter), "size_mb": dir_size_mb(adapter)}]
                       if adapter.exists() else [])]
        ctx.console.print(f"export: {merged} ({artifacts[0]['size_mb']} MB), adapter {adapter}; "
                          f"verified {same}/{len(expected)} greedy answers")
        return {"counts": {"verified": same, "checked": len(expected)}, "artifacts": artifacts,
                "verified": f"{same}/{len(expected)} greedy outputs of the reloaded merged model match the evaluated student",
                "outputs": ["merged/model.safetensors", "merged/task.json", "adapter/adapter_model.safetensors"]}

    return run_stage(ctx, "export", settings, inputs, body)
