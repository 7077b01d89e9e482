"""Scale-out on Ray (cluster/): a real Ray cluster on loopback with several worker
nodes on this machine (ray.cluster_utils), started by the tests. A node killed in
the middle of generation costs no example and duplicates none; a training worker
killed mid-run is replaced and training resumes from its checkpoint; the same
task gives the same curated set on one machine and on the cluster."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

# One machine: every Ray process binds and connects on loopback (set before ray is imported).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from conftest import write_workspace  # noqa: E402
from taskling.cluster.local import LocalCluster  # noqa: E402
from taskling.core.config import load_config  # noqa: E402
from taskling.core.workspace import Context, read_jsonl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
QUIET = Console(stderr=True, quiet=True)
@pytest.fixture
def cluster():
    c = LocalCluster(2)
    yield c
    c.close()


def executor_on(c: LocalCluster, cfg):
    from taskling.cluster import RayExecutor

    return RayExecutor(c.address, cfg.cluster)


def stages(path: Path, names: list[str], executor=None, **ctx_opts) -> Context:
    import importlib

    from taskling.core.executor import LocalExecutor

    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET, executor=executor or LocalExecutor(), **ctx_opts)
    for name in names:
        importlib.import_module(f"taskling.stages.{name}").run(ctx)
    return ctx


def test_same_curated_set_on_one_machine_and_on_the_cluster(tmp_path, tiny_model_dir, cluster):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = (write_workspace(tmp_path / w, tiny_model_dir, ingest__embed=True) for w in ("one", "two"))
    solo = stages(one, ["ingest", "generate", "curate"])
    executor = executor_on(cluster, load_config(two, []))
    try:
        spread = stages(two, ["ingest", "generate", "curate"], executor)
    finally:
        executor.close()
    for name in ("generate/examples.jsonl", "curate/train.jsonl", "curate/eval.jsonl"):
        a = read_jsonl(solo.run_dir / "round-0" / name)
        b = read_jsonl(spread.run_dir / "round-0" / name)
        assert a and [(x["input"], x["output"]) for x in a] == [(x["input"], x["output"]) for x in b], name
    # the pile too: converted and embedded on the nodes, stored in the same order
    import numpy as np

    from taskling.data.pile import Pile

    def pile_of(ctx):
        with Pile(ctx.ws.pile_db) as p:
            rows = p.db.execute("SELECT id, text, embedding, topic_id FROM chunks WHERE embedding IS NOT NULL ORDER BY id").fetchall()
        return [r[:2] for r in rows], np.stack([np.frombuffer(r[2], dtype="<f2").astype(np.float32) for r in rows]), [r[3] for r in rows]

    (ta, va, topa), (tb, vb, topb) = pile_of(solo), pile_of(spread)
    assert ta == tb and topa == topb
    np.testing.assert_allclose(va, vb, atol=1e-3)
    ing = json.loads((spread.stage_dir("ingest") / "manifest.json").read_text())["cluster"]
    assert ing["convert"]["shards"] >= 1 and ing["embed"]["shards"] >= 1
    m = json.loads((spread.stage_dir("generate") / "manifest.json").read_text())
    nodes = m["cluster"]["nodes"]
    assert len(nodes) == 2 and all(r["shards"] > 0 for r in nodes)  # both worker nodes did part of it
    assert sum(r["items"] for r in nodes) == m["counts"]["new_calls"]
    assert m["cluster"]["rescheduled_shards"] == 0
    from taskling.report import build as report

    rep = report.build(spread)  # the report shows each stage's per-node work
    assert [p["stage"] for p in rep["cluster"]["pools"]] == ["ingest: convert", "ingest: embed", "generate: teacher"]


def test_a_node_killed_mid_generation_loses_and_duplicates_nothing(tmp_path, tiny_model_dir):
    c = LocalCluster(3, env={"TASKLING_SCRIPTED_DELAY_S": "0.15"})
    try:
        path = write_workspace(tmp_path, tiny_model_dir, budget__examples=60)
        stages(path, ["ingest"])
        cfg = load_config(path, [])
        executor = executor_on(c, cfg)
        journal = Path(tmp_path / "runs" / "tiny-router" / "round-0" / "generate" / "journal.jsonl")
        killed = {}

        def killer():
            while not journal.exists() or journal.read_text().count("\n") < 8:
                time.sleep(0.05)
            killed["at"] = journal.read_text().count("\n")
            c.kill(c.nodes[0])

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        try:
            ctx = stages(path, ["generate"], executor)
        finally:
            executor.close()
        t.join(timeout=5)
        assert "at" in killed
        m = json.loads((ctx.stage_dir("generate") / "manifest.json").read_text())
        assert m["counts"]["examples"] == 60  # the budget, in full
        keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
        assert len(keys) == len(set(keys))  # no job twice
        ids = [e["id"] for e in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")]
        assert len(ids) == len(set(ids)) == 60
        spread = m["cluster"]
        assert spread["rescheduled_shards"] >= 1, spread
        assert spread["lost_items"] <= cfg.cluster.shard_jobs  # at most the one shard the node held
        assert any(e["event"] == "left" for e in spread["events"])
        # every call that was paid for is logged once: the cache has one row per job asked
        from taskling.teacher.calls import CallLog

        with CallLog(ctx.ws.calls_db) as log:
            assert log.totals(purpose="generate")["calls"] == m["counts"]["jobs"]
    finally:
        c.close()


def adapter_weights(ctx: Context) -> dict:
    from safetensors.torch import load_file

    return load_file(ctx.stage_dir("train") / "adapter" / "adapter_model.safetensors")


def test_a_training_worker_killed_mid_run_resumes_from_its_checkpoint(tmp_path, tiny_model_dir):
    import psutil
    import torch

    c = LocalCluster(2)
    try:
        (tmp_path / "a").mkdir()
        path = write_workspace(tmp_path / "a", tiny_model_dir, train__steps=120, train__checkpoint_every=4,
                               train__batch_size=4, budget__examples=40)
        stages(path, ["ingest", "generate", "curate"])
        shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same curated data, a second run of training
        shutil.copytree(tmp_path / "a", tmp_path / "c")  # and a third, on one machine
        solo = stages(tmp_path / "c" / "taskling.yaml", ["train"])
        other = tmp_path / "b" / "taskling.yaml"
        cfg = load_config(path, [])
        executor = executor_on(c, cfg)
        try:
            whole = stages(path, ["train"], executor)
            storage = tmp_path / "b" / "runs" / "tiny-router" / "round-0" / "train" / "ray"
            killed = {}

            def registered() -> int:
                """The newest step Ray Train has registered as a checkpoint (what a restart resumes from)."""
                try:
                    snap = json.loads(next(storage.glob("*/checkpoint_manager_snapshot.json")).read_text())
                    return snap["latest_checkpoint_result"]["metrics"]["step"]
                except (StopIteration, json.JSONDecodeError, KeyError, TypeError):
                    return 0

            def killer():
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and registered() < 8:
                    time.sleep(0.02)
                for p in psutil.process_iter(["cmdline"]):
                    if any("RayTrainWorker" in part for part in (p.info["cmdline"] or [])):
                        killed["pid"] = p.pid
                        p.kill()
                        return

            t = threading.Thread(target=killer, daemon=True)
            t.start()
            again = stages(other, ["train"], executor)
            t.join(timeout=10)
        finally:
            executor.close()
        assert "pid" in killed, "no training worker was found to kill"
        m = json.loads((again.stage_dir("train") / "manifest.json").read_text())
        assert m["cluster"]["restarts"] >= 1 and m["cluster"]["resumed_at_steps"][0] >= 8, m["cluster"]
        assert m["counts"]["steps"] == 120
        w1, w2 = adapter_weights(whole), adapter_weights(again)
        assert w1.keys() == w2.keys()
        for k in w1:  # the same result as the run nobody killed, within float noise
            torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
        loss1 = json.loads((whole.stage_dir("train") / "loss.json").read_text())["loss"]
        loss2 = json.loads((again.stage_dir("train") / "loss.json").read_text())["loss"]
        assert [s for s, _ in loss2] == list(range(1, 121))  # every step once in the history
        assert [v for _, v in loss1] == pytest.approx([v for _, v in loss2], abs=1e-4)
        # two workers, each with part of every batch, take the steps one machine takes (token-weighted gradient)
        loss0 = json.loads((solo.stage_dir("train") / "loss.json").read_text())["loss"]
        diffs = [abs(a - b) for (_, a), (_, b) in zip(loss0, loss1)]
        assert max(diffs) < 5e-3, max(diffs)  # measured: 0.0012 at most over 120 steps
    finally:
        c.close()


def test_predict_shards_rows_over_the_nodes_and_writes_them_in_order(tmp_path, tiny_model_dir, cluster):
    from taskling.cluster import RayExecutor
    from taskling.core.config import ClusterCfg
    from taskling.serving.predict import predict_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "task.json").write_text(json.dumps({"name": "tiny", "type": "classify",
                                                 "labels": ["sqlite", "node", "python"],
                                                 "system_prompt": "Route the question."}))
    rows = [{"id": i, "input": f"question {i} about json_extract and readFile"} for i in range(11)]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    solo = predict_file(src, tmp_path / "solo.jsonl", str(model), tmp_path, QUIET, batch_size=3, threads=1)
    executor = RayExecutor(cluster.address, ClusterCfg())
    try:
        spread = predict_file(src, tmp_path / "spread.jsonl", str(model), tmp_path, QUIET, batch_size=3,
                              threads=1, executor=executor)
    finally:
        executor.close()
    a, b = read_jsonl(tmp_path / "solo.jsonl"), read_jsonl(tmp_path / "spread.jsonl")
    assert [r["id"] for r in b] == list(range(11))  # row order kept though batches finish in any order
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    for x, y in zip(a, b):
        assert x["probability"] == pytest.approx(y["probability"], abs=1e-4)
    assert solo["predicted"] == spread["predicted"] == 11
    # Every batch was a shard answered on the cluster. (Which nodes took part depends on how fast each
    # node's worker loads the model: the pool never waits for a slow one, so "both" is not asserted.)
    nodes = spread["cluster"]["nodes"]
    assert spread["cluster"]["shards"] == 4 and 1 <= len(nodes) <= 2
    assert sum(n["shards"] for n in nodes) == 4 and sum(n["items"] for n in nodes) == 11


def test_without_a_cluster_ray_is_never_imported_and_the_cli_runs_on_a_local_one(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    path = write_workspace(tmp_path, tiny_model_dir)
    code = ("import sys; from rich.console import Console; from taskling.core.config import load_config; "
            "from taskling.core.workspace import Context; from taskling.stages import ingest, generate; "
            f"cfg = load_config({str(path)!r}, []); ctx = Context(cfg, console=Console(quiet=True)); "
            "ingest.run(ctx); generate.run(ctx); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
    # the same stages through the CLI, in a fresh workspace, on a Ray instance it starts on this machine
    (tmp_path / "cli").mkdir()
    write_workspace(tmp_path / "cli", tiny_model_dir)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    taskling = str(Path(sys.executable).parent / "taskling")
    for stage in ("ingest", "generate"):
        cli = subprocess.run([taskling, stage, "--json", "--cluster", "local"], cwd=tmp_path / "cli",
                             capture_output=True, text=True, timeout=300, env=env)
        assert cli.returncode == 0, cli.stderr[-2000:]
    m = json.loads(cli.stdout)
    assert m["cluster"]["shards"] >= 1 and m["counts"]["examples"] == 30
    assert "cluster: local, 1 nodes" in cli.stderr


def test_a_node_that_cannot_do_the_work_is_named_with_its_cause(tmp_path, cluster):
    from taskling.teacher.backends import Request
    from taskling.cluster import RayExecutor
    from taskling.core.config import ClusterCfg, ModelCfg
    from taskling.core.errors import TasklingError

    # every node probes the endpoints: none answers, so no node can be a teacher here
    executor = RayExecutor(cluster.address, ClusterCfg(endpoints=["http://127.0.0.1:9/v1"], wait_for_nodes_s=60))
    try:
        backend = executor.backend(ModelCfg(backend="openai", model="m"))
        assert backend.describe() == {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
        with pytest.raises(TasklingError, match="no node can do this work: ConnectionError: none of cluster.endpoints"):
            backend.generate([Request([{"role": "user", "content": "hi"}])])
        assert len(backend.pool.refused) == 2
        assert {e["event"] for e in backend.pool.events} == {"refused"}
    finally:
        executor.close()
