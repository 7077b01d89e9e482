"""kill -9 `taskling run` mid-stage, run it again: it finishes with the same
counts, data and losses as a run that was never interrupted."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_workspace

SETTINGS = dict(train__steps=120, train__checkpoint_every=10)
TASKLING = str(Path(sys.executable).parent / "taskling")


def run_cli(root: Path) -> dict:
    proc = subprocess.run([TASKLING, "run", "--json"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def snapshot(root: Path) -> dict:
    run = root / "runs" / "tiny-router"
    out = {}
    for stage in ("ingest", "generate", "curate", "train", "evaluate"):
        m = json.loads((run / "round-0" / stage / "manifest.json").read_text())
        out[stage] = {"fingerprint": m["fingerprint"], "counts": m["counts"]}
    for name in ("generate/examples.jsonl", "curate/train.jsonl", "curate/eval.jsonl", "train/loss.json"):
        out[name] = (run / "round-0" / name).read_text()
    metrics = json.loads((run / "round-0" / "evaluate" / "metrics.json").read_text())["results"]
    timing = ("items_per_s", "latency_ms", "cpu_seconds_per_1k")  # wall-clock figures differ run to run
    out["metrics"] = {s: {w: {k: v for k, v in r.items() if k not in timing} for w, r in per.items()}
                      for s, per in metrics.items()}
    out["export"] = json.loads((run / "export" / "manifest.json").read_text())["counts"]
    out["calls"] = sqlite3.connect(root / ".taskling" / "calls.db").execute("SELECT count(*) FROM calls").fetchone()[0]
    out["chunks"] = sqlite3.connect(root / ".taskling" / "pile.db").execute("SELECT count(*) FROM chunks").fetchone()[0]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("reference")
    write_workspace(root, tiny_model_dir, **SETTINGS)
    run_cli(root)
    return snapshot(root)


def kill_when(root: Path, ready, timeout: float = 600) -> None:
    proc = subprocess.Popen([TASKLING, "run"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "taskling run finished before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("point", ["mid-train", "between-stages"])
def test_kill_9_then_rerun_gives_the_same_result(point, reference, tmp_path, tiny_model_dir):
    ref = reference
    write_workspace(tmp_path, tiny_model_dir, **SETTINGS)
    ck = tmp_path / "runs" / "tiny-router" / "round-0" / "train" / "checkpoints"
    if point == "mid-train":
        kill_when(tmp_path, lambda: (ck / "step-000010" / "state.pt").exists())
        assert not (ck.parent / "manifest.json").exists()
    else:  # just after curate finished, whatever the next stage has begun
        kill_when(tmp_path, lambda: (ck.parent.parent / "curate" / "manifest.json").exists())
    result = run_cli(tmp_path)
    assert snapshot(tmp_path) == ref
    assert result["stages"]["ingest"]["skipped"] and result["stages"]["curate"]["skipped"]
