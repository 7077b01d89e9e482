"""predict: the tuned student over a CSV or JSONL file of inputs.

CSV needs an `input` column (other columns are kept); JSONL needs an `input`
key. Writes JSONL with `prediction` (the parsed answer) and `raw` (the text).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from . import infer
from .errors import TasklingError
from .models import load_causal_lm
from .progress import bar
from .workspace import read_jsonl, write_jsonl


def read_inputs(path: Path) -> list[dict]:
    if not path.exists():
        raise TasklingError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise TasklingError(f"{path}: not a readable UTF-8 CSV ({e})") from None
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = read_jsonl(path)
    else:
        raise TasklingError(f"{path}: use a .csv (with an 'input' column) or a .jsonl file")
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not str(r.get("input", "")).strip():
            raise TasklingError(f"{path}: row {n} has no 'input'")
    return rows


def predict_file(path: Path, output: Path | None, target: str | None, root: Path, console: Console) -> dict:
    from .serve import resolve_target

    model_dir = resolve_target(target, root)
    info = json.loads((model_dir / "task.json").read_text()) if (model_dir / "task.json").exists() else {}
    rows = read_inputs(path)
    model, tok = load_causal_lm(model_dir)
    system = info.get("system_prompt")
    convs = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": str(r["input"])}]
             for r in rows]
    outs = []
    with bar(console) as progress:
        t = progress.add_task("predict", total=len(convs), info="")
        for b in range(0, len(convs), 32):
            outs += infer.generate(model, tok, convs[b:b + 32], max_new_tokens=info.get("max_new_tokens", 128))
            progress.update(t, completed=len(outs))
    parse = None
    if info.get("type") == "classify":
        from types import SimpleNamespace

        from .tasks import classify

        labelled = SimpleNamespace(labels={lab: lab for lab in info.get("labels", [])})
        parse = lambda text: classify.parse_output(labelled, text)  # noqa: E731  same parser as evaluate
    result = [{**r, "prediction": parse(o["text"]) if parse else o["text"], "raw": o["text"]} for r, o in zip(rows, outs)]
    output = output or path.with_suffix(".predictions.jsonl")
    write_jsonl(output, result)
    console.print(f"predict: {len(result)} rows -> {output}")
    return {"rows": len(result), "output": str(output), "model": str(model_dir)}
