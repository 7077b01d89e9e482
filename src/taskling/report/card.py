"""Hugging Face metadata for the export's model card, so `huggingface-cli upload` of runs/<id>/export
publishes a correct page.

    text = card.front_matter(ctx) + model_card_body      # what stages/export.py writes as README.md
    meta, body = card.parse(Path("runs/x/export/README.md").read_text())

The front matter holds base_model (the Hub id of an embedded or local base, where known), license
(hub.license, else the base model's), pipeline_tag and library_name, tags, datasets (hub.dataset
names where the exported dataset folder is published; default the task's name) and a
`model-index` with the tuned student's metrics on every evaluated set (eval, gold), each with its
95% bootstrap interval and n in `args`: the same figures as the evaluate manifest and report.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..core.config import Config
from ..core.manifests import EvaluateManifest, TrainManifest
from ..core.workspace import Context

# Embedded students: their Hub id and licence id.
BASES = {"smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
         "gemma3-270m": ("google/gemma-3-270m", "gemma")}
HUB_TASKS = {"classify": "text-classification", "answer": "question-answering", "extract": "text-generation",
             "generate": "text-generation"}
SYSTEM = "student"  # the model the card describes


def base_model(model: str) -> str | None:
    """The base's Hub id: an embedded model's, or a local HF folder's `_name_or_path` when it names one."""
    if model in BASES:
        return BASES[model][0]
    cfg = Path(model).expanduser() / "config.json"
    try:
        name = json.loads(cfg.read_text()).get("_name_or_path") if cfg.is_file() else None
    except (OSError, ValueError):
        name = None
    return name if isinstance(name, str) and name.count("/") == 1 and not Path(name).exists() else None


def licence(cfg: Config) -> str:
    if cfg.hub.license:
        return cfg.hub.license
    return BASES[cfg.student.model][1] if cfg.student.model in BASES else "other"


def model_index(cfg: Config, ev: EvaluateManifest | None) -> list[dict]:
    """One result per evaluated set: the student's every metric with its interval and n."""
    results = []
    for split, per in (ev.results if ev else {}).items():
        r = per.get(SYSTEM)
        if r is None or r.metric is None:
            continue
        metrics = []
        for name, value in r.metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            ci = r.cis.get(name) if isinstance(r.cis.get(name), (list, tuple)) else None
            args = {"n": r.n, "confidence": 0.95, **({"ci_low": ci[0], "ci_high": ci[1]} if ci else {})}
            metrics.append({"type": name, "value": value, "name": f"{name} ({split}, n={r.n})", "args": args,
                            "verified": False})
        results.append({"task": {"type": HUB_TASKS.get(cfg.task.type, "text-generation"), "name": cfg.task.type},
                        "dataset": {"name": f"{cfg.task.name} {split} set", "type": dataset_id(cfg),
                                    "split": split},
                        "metrics": metrics})
    return [{"name": cfg.task.name, "results": results}] if results else []


def dataset_id(cfg: Config) -> str:
    return cfg.hub.dataset or cfg.task.name


def meta(ctx: Context, gguf: bool = False) -> dict[str, Any]:
    """The card's metadata from the finished stages of `ctx`'s round."""
    cfg = ctx.cfg
    ev = EvaluateManifest.read(ctx.stage_dir("evaluate"))
    tr = TrainManifest.read(ctx.stage_dir("train"))
    out: dict[str, Any] = {}
    base = base_model(cfg.student.model)
    if base:
        out["base_model"] = base
    out |= {"license": licence(cfg), "library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": list(dict.fromkeys(["taskling", cfg.task.type, HUB_TASKS.get(cfg.task.type, "text-generation"),
                                        "lora" if not tr or tr.mode == "lora" else "full-finetune",
                                        *(["gguf"] if gguf else []), *cfg.hub.tags])),
            "datasets": [dataset_id(cfg)]}
    index = model_index(cfg, ev)
    if index:
        out["model-index"] = index
    return out


def render(data: dict) -> str:
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n\n"


def front_matter(ctx: Context, gguf: bool = False) -> str:
    """The YAML block that opens the export's README.md."""
    return render(meta(ctx, gguf))


def parse(text: str) -> tuple[dict, str]:
    """(front matter, body) of a card; ({}, text) when it has none."""
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 4)
    if end < 0:
        return {}, text
    data = yaml.safe_load(text[4:end]) or {}
    return (data if isinstance(data, dict) else {}), text[end + 5:].lstrip("\n")
