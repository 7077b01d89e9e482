"""kill -9 `taskling run` mid-stage, run it again: it finishes with the same
counts, data and losses as a run that was never interrupted."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import kill_at, write_workspace

# Short, but the kill still lands mid-training: after a checkpoint and before the stage ends, checked with
# the process frozen before the kill (conftest.kill_at).
SETTINGS = dict(train__steps=24, train__checkpoint_every=4)
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


def kill_when(root: Path, ready) -> None:
    proc = subprocess.Popen([TASKLING, "run"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    kill_at(proc, ready)


@pytest.mark.parametrize("point", ["mid-train", "between-stages"])
def test_kill_9_then_rerun_gives_the_same_result(point, reference, tmp_path, tiny_model_dir):
    ref = reference
    write_workspace(tmp_path, tiny_model_dir, **SETTINGS)
    ck = tmp_path / "runs" / "tiny-router" / "round-0" / "train" / "checkpoints"
    if point == "mid-train":
        # after a checkpoint, before the stage's manifest: mid-training, whichever step it is at
        kill_when(tmp_path, lambda: any(ck.glob("step-*/state.pt")) and not (ck.parent / "manifest.json").exists())
        assert not (ck.parent / "adapter").exists()
    else:  # just after curate finished, whatever the next stage has begun
        kill_when(tmp_path, lambda: (ck.parent.parent / "curate" / "manifest.json").exists())
    result = run_cli(tmp_path)
    assert snapshot(tmp_path) == ref
    assert result["stages"]["ingest"]["skipped"] and result["stages"]["curate"]["skipped"]
