"""The review queue: every generated example with what the last curate made of it.

`candidates(curate_dir)` is what `taskling curate --export` writes for a person to review and
what the UI's examples page lists: kept (train or eval) or dropped (with its reason).
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import TasklingError
from ..core.manifests import CurateManifest
from ..core.workspace import read_jsonl


def candidates(curate_dir: Path) -> list[dict]:
    """Every generated example with its status after the curate stage in `curate_dir`."""
    if CurateManifest.read(curate_dir) is None:
        raise TasklingError("curate has not finished yet; run 'taskling curate' before exporting a review file")
    rows = [{**ex, "status": "kept"} for name in ("train.jsonl", "eval.jsonl") for ex in read_jsonl(curate_dir / name)]
    rows += [{**ex, "status": "dropped"} for ex in read_jsonl(curate_dir / "rejected.jsonl")]
    # the task's own examples are edited in taskling.yaml, not here
    return sorted((ex for ex in rows if ex.get("source") != "task example"), key=lambda ex: ex["id"])
