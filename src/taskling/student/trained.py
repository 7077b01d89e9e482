"""The student a train stage left: where it is and how to load it.

A train stage's folder holds `adapter/` (a LoRA adapter) or, after full fine-tuning,
`model/` (every weight). Evaluate, export, the loop's analysis and the UI's playground load it
the same way: one plain transformers model with the LoRA merged in.
"""
from __future__ import annotations

from pathlib import Path

from .models import load_causal_lm, resolve_hf


def trained_dir(train_dir: Path) -> Path:
    """The train stage's result in `train_dir`: a LoRA adapter folder, or a whole model after full fine-tuning."""
    return train_dir / "model" if (train_dir / "model" / "config.json").exists() else train_dir / "adapter"


def load_trained(train_dir: Path, base_model: str):
    """The tuned student as one plain transformers model (LoRA merged in) and its tokenizer."""
    path = trained_dir(train_dir)
    if path.name == "model":
        return load_causal_lm(path)
    from peft import PeftModel

    model, tok = load_causal_lm(resolve_hf(base_model))
    return PeftModel.from_pretrained(model, path).merge_and_unload(), tok
