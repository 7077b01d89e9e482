"""gold.jsonl: the examples a person checked, never trained on and always evaluated.

`load_gold(cfg, path)` reads and checks them (curate decontaminates against them, evaluate
scores on them, export verifies on them when there is no held-out set).
"""
from __future__ import annotations

from pathlib import Path

from ..core import tasktype
from ..core.config import Config
from ..core.errors import TasklingError
from ..core.workspace import read_jsonl


def load_gold(cfg: Config, path: Path) -> list[dict]:
    """gold.jsonl rows, checked: each needs input and output (a label for classify)."""
    if not path.exists():
        return []
    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "input" not in row or "output" not in row:
            raise TasklingError(f"{path}: item {n} needs 'input' and 'output' keys")
        if tasktype.get(cfg.task.type).labelled and row["output"] not in cfg.task.labels:
            raise TasklingError(f"{path}: item {n} has output {row['output']!r}, not one of the labels "
                                f"{', '.join(cfg.task.labels)}")
        row.setdefault("id", f"gold-{n:03d}")
    return rows
