"""Scale-out on Ray (cluster/): a real Ray cluster on loopback with worker nodes on this machine
(ray.cluster_utils), started once for the module; a test that needs another node adds it and takes
it away again. A node killed while it holds a shard costs that shard only and duplicates no job; a
training worker of this cluster killed mid-run is replaced and training resumes from its checkpoint;
the same task gives the same curated set on one machine and on the cluster; each kind of teacher a
node can ask (its own GGUF, its TASKLING_TEACHER_URL, the nearest of cluster.endpoints) answers; and
`taskling run --cluster local` starts a Ray of its own, never joining one already running here.

Nothing here asserts what depends on the machine's load: which node takes which shard, or when."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
QUIET = Console(stderr=True, quiet=True)
TASKLING = str(Path(sys.executable).parent / "taskling")


@pytest.fixture(scope="module")
def cluster():
    """Two one-CPU worker nodes for the whole module (tests that add a node remove it before they end)."""
    c = LocalCluster(2)
    yield c
    c.close()


def executor_on(c: LocalCluster, cfg):
    from taskling.cluster import RayExecutor

    return RayExecutor(c.address, cfg.cluster if hasattr(cfg, "cluster") else cfg)


def stages(path: Path, names: list[str], executor=None, **ctx_opts) -> Context:
    import importlib

    from taskling.core.executor import LocalExecutor

    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET, executor=executor or LocalExecutor(), **ctx_opts)
    for name in names:
        importlib.import_module(f"taskling.stages.{name}").run(ctx)
    return ctx


def node_ids(c: LocalCluster) -> set[str]:
    return {n.node_id[:12] for n in c.nodes}


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
            rows = p.db.execute("SELECT id, text, embedding, topic_id FROM chunks WHERE embedding IS NOT NULL "
                                "ORDER BY id").fetchall()
        return [r[:2] for r in rows], np.stack([np.frombuffer(r[2], dtype="<f2").astype(np.float32) for r in rows]), \
            [r[3] for r in rows]

    (ta, va, topa), (tb, vb, topb) = pile_of(solo), pile_of(spread)
    assert ta == tb and topa == topb
    np.testing.assert_allclose(va, vb, atol=1e-3)
    ing = json.loads((spread.stage_dir("ingest") / "manifest.json").read_text())["cluster"]
    assert ing["convert"]["shards"] >= 1 and ing["embed"]["shards"] >= 1
    m = json.loads((spread.stage_dir("generate") / "manifest.json").read_text())
    nodes = m["cluster"]["nodes"]
    # Every request went out in a shard answered by a node of this cluster (which node takes how many depends
    # on how fast each starts: not asserted).
    assert nodes and {r["node"] for r in nodes} <= node_ids(cluster)
    assert sum(r["items"] for r in nodes) == m["counts"]["new_calls"] > 0 and sum(r["shards"] for r in nodes) >= 1
    assert m["cluster"]["rescheduled_shards"] == 0
    from taskling.report import build as report

    rep = report.build(spread)  # the report shows each stage's per-node work
    assert [p["stage"] for p in rep["cluster"]["pools"]] == ["ingest: convert", "ingest: embed", "generate: teacher"]


def doomed_script(marker: str):
    """A scripted teacher for the node-kill test. On the doomed node (TASKLING_TEST_DOOMED in its environment)
    the first request marks the file and never returns: that node holds a shard until it is killed. Every
    other node waits for the mark before answering, so the doomed node surely holds a shard at the kill."""
    def script(messages: list[dict]) -> str:
        from taskling.teacher.backends.scripted import BUILTIN

        if os.environ.get("TASKLING_TEST_DOOMED"):
            Path(marker).write_text(str(os.getpid()))
            time.sleep(3600)
        while not os.path.exists(marker):
            time.sleep(0.01)
        return BUILTIN["echo-question"](messages)
    return script


def test_a_node_killed_mid_generation_loses_one_shard_and_duplicates_nothing(tmp_path, tiny_model_dir, cluster):
    from taskling.teacher.backends import scripted

    marker = tmp_path / "doomed-holds-a-shard"
    cluster.add(1, env={"TASKLING_TEST_DOOMED": "1"})
    doomed = cluster.nodes[-1]
    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=60)
    stages(path, ["ingest"])
    cfg = load_config(path, [])
    executor = executor_on(cluster, cfg)
    killed = {}

    def killer():
        while not marker.exists():
            time.sleep(0.01)
        killed["pid"] = int(marker.read_text() or 0)
        cluster.kill(doomed)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    scripted.set_script(doomed_script(str(marker)))
    try:
        ctx = stages(path, ["generate"], executor)
    finally:
        scripted.set_script(None)
        executor.close()
        t.join(timeout=60)
        if doomed in cluster.nodes:  # the kill never came: leave the module's cluster as it was
            cluster.kill(doomed)
    assert "pid" in killed
    m = json.loads((ctx.stage_dir("generate") / "manifest.json").read_text())
    assert m["counts"]["examples"] == 60  # the budget, in full
    journal = ctx.stage_dir("generate") / "journal.jsonl"
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys))  # no job twice
    ids = [e["id"] for e in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")]
    assert len(ids) == len(set(ids)) == 60
    spread = m["cluster"]
    # exactly the shard the doomed node held was lost and sent again; nothing else
    assert spread["rescheduled_shards"] == 1 and spread["rescheduled"][0]["from_node"] == doomed.node_id[:12]
    assert 1 <= spread["lost_items"] <= cfg.cluster.shard_jobs
    assert any(e["event"] == "left" and e["node"] == doomed.node_id[:12] for e in spread["events"])
    # every call that was paid for is logged once: the cache has one row per job asked
    from taskling.teacher.calls import CallLog

    with CallLog(ctx.ws.calls_db) as log:
        assert log.totals(purpose="generate")["calls"] == m["counts"]["jobs"]


def adapter_weights(ctx: Context) -> dict:
    from safetensors.torch import load_file

    return load_file(ctx.stage_dir("train") / "adapter" / "adapter_model.safetensors")


STEPS = 40  # long enough that a kill after the step-8 checkpoint lands mid-run, short enough to be quick


def test_a_training_worker_killed_mid_run_resumes_from_its_checkpoint(tmp_path, tiny_model_dir, cluster):
    import torch

    (tmp_path / "a").mkdir()
    path = write_workspace(tmp_path / "a", tiny_model_dir, train__steps=STEPS, train__checkpoint_every=4,
                           train__batch_size=4, budget__examples=40)
    stages(path, ["ingest", "generate", "curate"])
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same curated data, a second run of training
    shutil.copytree(tmp_path / "a", tmp_path / "c")  # and a third, on one machine
    solo = stages(tmp_path / "c" / "taskling.yaml", ["train"])
    other = tmp_path / "b" / "taskling.yaml"
    cfg = load_config(path, [])
    executor = executor_on(cluster, cfg)
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
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and registered() < 8:
                time.sleep(0.02)
            # a training worker of this cluster, found under its own nodes: never another process on the machine
            for p in cluster.processes(named="RayTrainWorker"):
                killed["pid"] = p.pid
                p.kill()
                return

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        again = stages(other, ["train"], executor)
        t.join(timeout=10)
    finally:
        executor.close()
    assert "pid" in killed, "no training worker of this cluster was found to kill"
    m = json.loads((again.stage_dir("train") / "manifest.json").read_text())
    # it was killed mid-run: the group restarted from a checkpoint past step 8 and before the last step
    assert m["cluster"]["restarts"] >= 1 and 8 <= m["cluster"]["resumed_at_steps"][0] < STEPS, m["cluster"]
    assert m["counts"]["steps"] == STEPS
    w1, w2 = adapter_weights(whole), adapter_weights(again)
    assert w1.keys() == w2.keys()
    for k in w1:  # the same result as the run nobody killed, within float noise
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    loss1 = json.loads((whole.stage_dir("train") / "loss.json").read_text())["loss"]
    loss2 = json.loads((again.stage_dir("train") / "loss.json").read_text())["loss"]
    assert [s for s, _ in loss2] == list(range(1, STEPS + 1))  # every step once in the history
    assert [v for _, v in loss1] == pytest.approx([v for _, v in loss2], abs=1e-4)
    # two workers, each with part of every batch, take the steps one machine takes (token-weighted gradient)
    loss0 = json.loads((solo.stage_dir("train") / "loss.json").read_text())["loss"]
    diffs = [abs(a - b) for (_, a), (_, b) in zip(loss0, loss1)]
    assert len(diffs) == STEPS and max(diffs) < 5e-3, max(diffs)  # measured: 0.0012 at most over 120 steps


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
    assert spread["cluster"]["shards"] == 4 and {n["node"] for n in nodes} <= node_ids(cluster)
    assert sum(n["shards"] for n in nodes) == 4 and sum(n["items"] for n in nodes) == 11


def test_without_a_cluster_ray_is_never_imported(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir)
    code = ("import sys; from rich.console import Console; from taskling.core.config import load_config; "
            "from taskling.core.workspace import Context; from taskling.stages import ingest, generate; "
            f"cfg = load_config({str(path)!r}, []); ctx = Context(cfg, console=Console(quiet=True)); "
            "ingest.run(ctx); generate.run(ctx); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def niceness_of_a_task() -> int:
    import ray

    return ray.get(ray.remote(lambda: os.nice(0)).remote())


def test_a_ray_started_here_works_at_the_runs_priority(cluster):
    """Ray renices its workers to 15 by default: beside any busy process at normal priority (another job, the
    other pytest worker) they got a twentieth of the CPU. This module's cluster and `--cluster local`'s own Ray
    run them at the priority of the run that started them."""
    assert niceness_of_a_task() == os.nice(0)
    code = ("import os, ray; from taskling.cluster import RayExecutor; from taskling.core.config import ClusterCfg; "
            "ex = RayExecutor('local', ClusterCfg()); "
            "print('niceness', ray.get(ray.remote(lambda: os.nice(0)).remote()), os.nice(0)); ex.close()")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    worker, driver = out.stdout.split("niceness")[-1].split()
    assert worker == driver


def test_run_cluster_local_runs_every_stage_on_a_ray_of_its_own(tmp_path, tiny_model_dir, cluster):
    """`taskling run --cluster local`, the real CLI, while this module's cluster runs on the same machine (and
    has written its address where `ray.init()` would find it): the run starts its own one-node Ray."""
    write_workspace(tmp_path, tiny_model_dir, train__steps=4, train__checkpoint_every=2)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    proc = subprocess.run([TASKLING, "run", "--json", "--cluster", "local"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cluster: local, 1 nodes" in proc.stderr  # its own Ray, not the module's cluster of 2 worker nodes
    result = json.loads(proc.stdout)
    assert result["results"]["gold"]["student"]["n"] == 6
    run = tmp_path / "runs" / "tiny-router" / "round-0"
    gen = json.loads((run / "generate" / "manifest.json").read_text())
    assert gen["cluster"]["shards"] >= 1 and gen["counts"]["examples"] == 30
    assert not {r["node"] for r in gen["cluster"]["nodes"]} & node_ids(cluster)
    train = json.loads((run / "train" / "manifest.json").read_text())
    assert train["cluster"]["workers"] == 2 and train["counts"]["steps"] == 4  # Ray Train, data-parallel
    assert (tmp_path / "runs" / "tiny-router" / "export" / "manifest.json").exists()


# -- the teacher on each node ------------------------------------------------------------------------------------
def ask(backend, n: int) -> list:
    from taskling.teacher.backends import Request

    return backend.generate([Request([{"role": "user", "content": f'<document id="1">Rivers flow into the sea '
                                        f'number {i} and lakes hold still water.</document> Ask about it.'}],
                                     max_tokens=12, seed=i) for i in range(n)])


def test_each_node_asks_its_own_url_or_the_nearest_endpoint_that_answers(cluster):
    """Node A and B (this module's) have no teacher of their own: each probes cluster.endpoints and uses the
    one that answers. Node C names its own server in TASKLING_TEACHER_URL and uses that."""
    from taskling.core.config import ClusterCfg, ModelCfg
    from taskling.teacher.faults import FaultServer

    with FaultServer(model="toy-teacher") as live, FaultServer(model="toy-teacher") as own:
        dead = "http://127.0.0.1:9/v1"  # nothing listens on port 9
        cluster.add(1, env={"TASKLING_TEACHER_URL": own.url})
        mine = cluster.nodes[-1]
        executor = executor_on(cluster, ClusterCfg(endpoints=[dead, live.url], shard_jobs=2))
        try:
            backend = executor.backend(ModelCfg(backend="openai", model="toy-teacher"))
            backend.pool.wait_for_members(settle_s=600)  # every node's worker ready before the first shard
            members = {m.node[:12]: m.info for m in backend.pool.members}
            assert set(members) == node_ids(cluster)
            results = ask(backend, 12)  # 6 shards for 3 idle workers: each gets one at once
            stats = backend.cluster_stats()
        finally:
            executor.close()
            cluster.kill(mine)
        assert all(r.error is None and r.text for r in results)
        assert members[mine.node_id[:12]]["endpoint"] == own.url
        assert {info["endpoint"] for n, info in members.items() if n != mine.node_id[:12]} == {live.url}
        assert all(set(info["probed_ms"]) == {live.url} for n, info in members.items() if n != mine.node_id[:12])
        assert own.stats["ok"] >= 1 and live.stats["ok"] >= 1 and own.stats["ok"] + live.stats["ok"] == 12
        by_node = {r["node"]: r for r in stats["nodes"]}
        assert by_node[mine.node_id[:12]]["endpoint"] == own.url and by_node[mine.node_id[:12]]["items"] >= 2
        assert sum(r["items"] for r in stats["nodes"]) == 12


@pytest.mark.timeout(1200)
def test_each_node_runs_its_own_gguf_teacher(cluster):
    """The embedded teacher (llama.cpp on SmolLM2's GGUF) loaded on every node; requests answered there."""
    from taskling.core.config import ClusterCfg, EMBEDDED_MODEL, ModelCfg

    executor = executor_on(cluster, ClusterCfg(shard_jobs=1))
    try:
        backend = executor.backend(ModelCfg(backend="llamacpp", model=EMBEDDED_MODEL, max_tokens=12))
        backend.pool.wait_for_members(settle_s=900)
        members = {m.node[:12]: m.info for m in backend.pool.members}
        results = ask(backend, 4)
        stats = backend.cluster_stats()
    finally:
        executor.close()
    assert set(members) == node_ids(cluster)
    assert backend.describe()["backend"] == "llamacpp" and all(i["endpoint"] == "local" for i in members.values())
    assert all(i["model"] == backend.describe() for i in members.values())  # the same file on every node
    assert all(r.error is None and r.text.strip() and r.completion_tokens > 0 for r in results)
    assert sum(r["items"] for r in stats["nodes"]) == 4 and all(r["shards"] >= 1 for r in stats["nodes"])


def test_a_node_that_cannot_do_the_work_is_named_with_its_cause(cluster):
    from taskling.cluster import RayExecutor
    from taskling.core.config import ClusterCfg, ModelCfg
    from taskling.core.errors import TasklingError
    from taskling.teacher.backends import Request

    # every node probes the endpoints: none answers, so no node can be a teacher here
    executor = RayExecutor(cluster.address, ClusterCfg(endpoints=["http://127.0.0.1:9/v1"], wait_for_nodes_s=60))
    try:
        backend = executor.backend(ModelCfg(backend="openai", model="m"))
        assert backend.describe() == {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
        with pytest.raises(TasklingError, match="no node can do this work: ConnectionError: none of cluster.endpoints"):
            backend.generate([Request([{"role": "user", "content": "hi"}])])
        assert len(backend.pool.refused) == len(cluster.nodes) == 2
        assert {e["event"] for e in backend.pool.events} == {"refused"}
    finally:
        executor.close()
