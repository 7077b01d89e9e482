"""Benchmark: the shipped demo from a fresh workspace, timed per stage, with the
tuned student, its base and the teacher scored side by side on the gold set.

    .venv/bin/python bench/bench_demo.py      (or: make bench)

Writes bench/results/demo.json. Model conversions cached under
~/.cache/taskling are reused (they are timed separately as 'prepare').
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from run_demo import run_demo  # noqa: E402


def main() -> None:
    t0 = time.perf_counter()
    from taskling.student.models import resolve_gguf, resolve_hf

    resolve_hf("smollm2-135m-instruct")
    resolve_gguf("smollm2-135m-instruct")
    prepare = round(time.perf_counter() - t0, 1)
    with tempfile.TemporaryDirectory(prefix="taskling-bench-") as tmp:
        result = run_demo(Path(tmp) / "devdocs-router", fresh=True)
        report = json.loads(Path(result["report_json"]).read_text())
    out = {
        "benchmark": "demo (examples/devdocs-router), fresh workspace",
        "command": ".venv/bin/python bench/bench_demo.py",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "prepare_models_seconds": prepare,
        "wall_seconds": result["wall_seconds"],
        "stages_seconds": {k: v["seconds"] for k, v in result["stages"].items()},
        "results": result["results"],
        "funnel": report.get("funnel"),
        "split": report.get("split"),
        "training": {k: report.get("training", {}).get(k) for k in ("steps", "tokens_per_s", "seconds")},
        "summary": report.get("summary"),
    }
    dest = ROOT / "bench" / "results" / "demo.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    gold = result["results"].get("gold", {})
    print(json.dumps({"wall_seconds": out["wall_seconds"], "stages": out["stages_seconds"],
                      "gold": {w: r["metric"] for w, r in gold.items()}}, indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
