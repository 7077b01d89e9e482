"""The self-improving loop (loop.py, stages/analyse.py, allocate.py): rounds on the
scripted teacher and the tiny random student, the stop
rules, resumption after kill -9, new documents, and that eval, dev and gold
never reach training."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from conftest import kill_at, write_workspace
from taskling.teacher import allocate
from taskling import loop
from taskling.core.config import load_config
from taskling.stages import analyse
from taskling.core.workspace import Context, atomic_write_json, read_jsonl, write_jsonl

QUIET = {"console": Console(stderr=True, quiet=True)}
TASKLING = str(Path(sys.executable).parent / "taskling")
LOOP = dict(loop__rounds=3, budget__examples=60, loop__probe_chunks=12)


def run_loop(path: Path, *sets: str, **ctx) -> dict:
    from taskling.core.config import load_config as lc

    return loop.run(Context(lc(path, list(sets)), **QUIET, **ctx))


def rounds_of(root: Path, run: str = "tiny-router") -> Path:
    return root / "runs" / run


def inputs(path: Path) -> set[str]:
    return {str(r["input"]).strip().lower() for r in read_jsonl(path)}


# -- the loop end to end on the scripted teacher ----------------------------------------------------------------
@pytest.fixture(scope="module")
def three_rounds(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("loop")
    path = write_workspace(root, tiny_model_dir, **LOOP)
    result = run_loop(path)
    return root, result


def test_rounds_are_created_with_manifests_and_a_stop_rule(three_rounds):
    root, result = three_rounds
    run = rounds_of(root)
    for k in range(3):
        for stage in ("generate", "curate", "train", "evaluate") + (("analyse",) if k else ()):
            m = json.loads((run / f"round-{k}" / stage / "manifest.json").read_text())
            assert m["round"] == k, (k, stage)
    assert not (run / "round-0" / "analyse").exists() and not (run / "round-3").exists()
    state = json.loads((run / "loop.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1, 2]
    assert state["stop"]["rule"] == "budget" and "60 of 60" in state["stop"]["reason"]
    assert state["kept"]["round"] == result["kept_round"] == 2
    assert sum(r["examples"] for r in state["rounds"]) == 60
    # later rounds: the analysis planned the jobs, some of them seeded by dev failures
    a1 = json.loads((run / "round-1" / "analyse" / "analysis.json").read_text())
    assert a1["policy"] == "thompson" and a1["arms"] and a1["allocation"]["jobs"] == sum(
        r["jobs_total"] for r in a1["arms"])
    assert a1["uncertainty"]["probed"] > 0
    assert all(0 <= r["uncertainty"] <= 1 for r in a1["arms"] if r["uncertainty"] is not None)
    # failure seeds follow the dev failures the analysis counted (test_failure_seeded_jobs... plants some)
    seeded = [e for e in read_jsonl(run / "round-1" / "generate" / "examples.jsonl") if "seeded_by" in e]
    assert (a1["allocation"]["seeded_jobs"] > 0) == (a1["dev"]["errors"] > 0) == bool(seeded)
    assert all(e["round"] == 1 for e in seeded)
    # the kept round was exported, the report has the rounds
    assert json.loads((run / "export" / "manifest.json").read_text())["round"] == 2
    assert result["rounds"][-1]["round"] == 2 and result["stop"]["rule"] == "budget"


def test_eval_dev_and_gold_never_reach_training(three_rounds):
    root, _ = three_rounds
    run = rounds_of(root)
    evals = [(run / f"round-{k}" / "curate" / "eval.jsonl").read_text() for k in range(3)]
    assert evals[0] == evals[1] == evals[2] and evals[0].strip()  # the eval set never changes
    gold = inputs(root / "gold.jsonl")
    split = json.loads((run / "round-0" / "curate" / "manifest.json").read_text())["split"]
    held = set(split["held_out_units"])
    assert set(split["dev_units"]) < held
    prev: set = set()
    dev_before: list = []
    for k in range(3):
        cur = run / f"round-{k}" / "curate"
        train = read_jsonl(cur / "train.jsonl")
        ids = {r["id"] for r in train}
        assert prev <= ids  # the training set accumulates over rounds
        prev = ids
        dev = read_jsonl(cur / "dev.jsonl")
        assert [d["id"] for d in dev[:len(dev_before)]] == dev_before  # dev only grows
        dev_before = [d["id"] for d in dev]
        blocked = inputs(cur / "eval.jsonl") | inputs(cur / "dev.jsonl") | gold
        assert not {str(r["input"]).strip().lower() for r in train} & blocked, k
        for r in train:
            if r.get("provenance") and r.get("source") != "task example":
                unit = r["provenance"][0]["path"] if split["unit"] == "document" else r["provenance"][0]["chunk"]
                assert unit not in held, (k, r["id"])
    # base and teacher answers on eval and gold are carried over, not recomputed
    for name in ("pred-teacher-gold.jsonl", "pred-base-eval.jsonl"):
        assert (run / "round-2" / "evaluate" / name).read_text() == (run / "round-0" / "evaluate" / name).read_text()


def test_datasets_export_the_kept_round_by_default_and_any_round_asked(three_rounds, tmp_path):
    """taskling export --dataset FORMAT [--round K]: the round the loop kept unless asked; each round's own
    train set, the dev set as the Hub's validation split."""
    import datasets

    from taskling.curation.datasets import export_dataset

    root, result = three_rounds
    ctx = Context(load_config(root / "taskling.yaml", []), **QUIET)
    run = rounds_of(root)
    rows = {k: {s: read_jsonl(run / f"round-{k}" / "curate" / f"{s}.jsonl") for s in ("train", "eval", "dev")}
            for k in (0, 2)}
    assert len(rows[0]["train"]) < len(rows[2]["train"])  # the rounds' sets differ: the export must pick one
    kept = export_dataset(ctx, "hf", out=tmp_path / "kept")
    assert kept["round"] == result["kept_round"] == 2
    ds = datasets.load_dataset(kept["dir"])
    assert {s: ds[s].num_rows for s in ds} == {name: len(rows[2][s]) for s, name in
                                               (("train", "train"), ("eval", "test"), ("dev", "validation"))
                                               if rows[2][s] or s == "train"}
    assert sorted(ds["train"]["id"]) == sorted(r["id"] for r in rows[2]["train"])
    first = export_dataset(ctx, "openai", out=tmp_path / "first", round=0)
    assert first["round"] == 0 and first["rows"]["train"] == len(rows[0]["train"])
    assert len(read_jsonl(tmp_path / "first" / "train.jsonl")) == len(rows[0]["train"])


def test_a_finished_loop_is_not_redone_and_more_rounds_continue_it(three_rounds, tmp_path, cli):
    root, first = three_rounds
    ws = tmp_path / "copy"
    shutil.copytree(root, ws)
    again = run_loop(ws / "taskling.yaml")
    assert all(v["skipped"] for k, v in again["stages"].items() if k != "export")
    assert again["rounds"] == first["rounds"]
    res = cli("export", cwd=ws)  # a stage command after the loop acts on the round the loop exported
    assert res.exit_code == 0, res.output
    assert json.loads((rounds_of(ws) / "export" / "manifest.json").read_text())["round"] == first["kept_round"]
    sets = ["loop.rounds=4", "budget.examples=80", "loop.round_examples=20", "loop.patience=10"]
    # `taskling analyse` plans the next round and shows why; the loop then goes on from that plan
    res = cli("analyse", *[x for s in sets for x in ("--set", s)], cwd=ws)
    assert res.exit_code == 0, res.output
    assert "thompson" in res.output and "uncertai" in res.output  # the table (wrapped to the terminal's width)
    plan = json.loads((rounds_of(ws) / "round-3" / "analyse" / "manifest.json").read_text())
    assert plan["round"] == 3 and plan["allocation"]["jobs"] == sum(a["jobs_total"] for a in plan["arms"])
    more = run_loop(ws / "taskling.yaml", *sets)
    assert more["stages"]["analyse@3"]["skipped"]
    assert [r["round"] for r in more["rounds"]] == [0, 1, 2, 3]
    assert more["rounds"][:3] == first["rounds"][:3]  # finished rounds are kept as they are
    assert (rounds_of(ws) / "round-3" / "analyse" / "manifest.json").exists()


# -- a planted weak arm ---------------------------------------------------------------------------------------------
def plant_dev_failures(root: Path) -> list[dict]:
    """After round 0: a dev set of examples the student got wrong (every 'node' item) or right (the rest),
    as evaluate would have recorded it. Returns the planted dev items."""
    r0 = rounds_of(root) / "round-0"
    by_label: dict = {}
    for ex in read_jsonl(r0 / "generate" / "examples.jsonl"):
        by_label.setdefault(ex["label"], []).append(ex)
    dev = [dict(ex, id=f"planted-{label}-{i}") for label in ("node", "python", "sqlite")
           for i, ex in enumerate(by_label[label][:4])]
    write_jsonl(r0 / "curate" / "dev.jsonl", dev)
    write_jsonl(r0 / "evaluate" / "pred-student-dev.jsonl",
                [{"id": d["id"], "output": "python" if d["label"] == "node" else d["label"]} for d in dev])
    scores = json.loads((r0 / "evaluate" / "scores.json").read_text())
    scores["dev"] = {"student": [0.0 if d["label"] == "node" else 1.0 for d in dev]}
    atomic_write_json(r0 / "evaluate" / "scores.json", scores)
    return dev


def test_allocation_shifts_towards_a_planted_weak_arm(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir, loop__rounds=2, budget__examples=60, loop__probe_chunks=0,
                           loop__failure_share=0.0, loop__floor=0.1)
    first = run_loop(path, "loop.target=0")  # the target rule stops it after round 0
    assert first["stop"]["rule"] == "target" and len(first["rounds"]) == 1
    assert not (rounds_of(tmp_path) / "round-1").exists()
    # Plant a dev set on which the student fails every "node" item and gets every other one right.
    plant_dev_failures(tmp_path)
    second = run_loop(path)
    assert [r["round"] for r in second["rounds"]] == [0, 1] and second["stop"]["rule"] in ("rounds", "budget")
    a = json.loads((rounds_of(tmp_path) / "round-1" / "analyse" / "analysis.json").read_text())
    per_label = Counter()
    for r in a["arms"]:
        per_label[r["label"]] += r["jobs_total"]
    assert per_label["node"] > per_label["python"] and per_label["node"] > per_label["sqlite"], per_label
    assert per_label["node"] > a["allocation"]["jobs"] / 2
    assert a["dev"] == {"items": 12, "errors": 4, "error_rate": round(4 / 12, 4)}
    node = [r for r in a["arms"] if r["label"] == "node"]
    assert all(r["error_mean"] > 0.5 for r in node) and "node" in a["why"][0]
    # the generated examples followed the plan
    made1 = Counter(e["label"] for e in read_jsonl(rounds_of(tmp_path) / "round-1" / "generate" / "examples.jsonl"))
    assert made1["node"] == max(made1.values())


def test_failure_seeded_jobs_copy_no_held_out_chunk(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir, loop__rounds=2, budget__examples=40, loop__failure_share=1.0,
                           loop__probe_chunks=0)
    assert run_loop(path, "loop.target=0")["stop"]["rule"] == "target"  # round 0 only
    planted = plant_dev_failures(tmp_path)
    failed = {d["id"] for d in planted if d["label"] == "node"}
    run_loop(path)
    run = rounds_of(tmp_path)
    a = json.loads((run / "round-1" / "analyse" / "analysis.json").read_text())
    split = json.loads((run / "round-0" / "curate" / "manifest.json").read_text())["split"]
    dev = {d["id"]: d for d in planted}
    seeded = a["allocation"]["seeded"]
    assert a["dev"]["errors"] == len(failed) == 4
    assert seeded and len(seeded) <= analyse.SEEDS_PER_FAILURE * len(failed)
    from taskling.data.pile import Pile

    with Pile(tmp_path / ".taskling" / "pile.db") as pile:
        for s in seeded:
            assert s["of"] in failed and s["like"] == dev[s["of"]]["input"]  # only failures seed, as they were
            for key in s["chunks"]:
                c = pile.chunk(key)
                assert (c.path if split["unit"] == "document" else c.key) not in split["held_out_units"]
    made = [e for e in read_jsonl(run / "round-1" / "generate" / "examples.jsonl") if "seeded_by" in e]
    assert made and {e["seeded_by"] for e in made} <= failed


# -- stop rules ----------------------------------------------------------------------------------------------------
def fake_round(ctx: Context, k: int, eval_scores: list[float], examples: int = 10) -> dict:
    ev = ctx.stage_dir("evaluate", k)
    ev.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ev / "scores.json", {"eval": {"student": eval_scores}})
    m = sum(eval_scores) / len(eval_scores)
    return {"round": k, "examples": examples, "teacher_tokens": 100, "cost": 0.0, "metric": "accuracy",
            "results": {"eval": {"student": {"metric": m, "ci_low": m, "ci_high": m, "n": len(eval_scores)}}}}


def test_stop_rules_fire_in_order(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir, loop__rounds=10, loop__patience=2, budget__examples=1000)
    ctx = Context(load_config(path), **QUIET)
    low, mid, high = [0] * 30 + [1] * 10, [0] * 20 + [1] * 20, [1] * 35 + [0] * 5
    h = [fake_round(ctx, 0, low)]
    assert loop.stop_rule(ctx, h) is None
    h.append(fake_round(ctx, 1, high))  # a clear gain
    assert loop.gain(ctx, h)["significant"]
    assert loop.stop_rule(ctx, h) is None
    h.append(fake_round(ctx, 2, high))
    assert loop.stop_rule(ctx, h) is None  # one flat round is within patience
    h.append(fake_round(ctx, 3, high[:-1] + [1]))  # +1 item: a raw gain, not a significant one
    rule = loop.stop_rule(ctx, h)
    assert rule["rule"] == "plateau" and "no significant gain in the last 2 rounds" in rule["reason"]
    # kept round: the last, unless an earlier one is significantly better
    assert loop.kept_round(ctx, h)[0] == 3
    h2 = [fake_round(ctx, 0, low), fake_round(ctx, 1, high), fake_round(ctx, 2, mid)]
    for k, s in enumerate((low, high, mid)):
        fake_round(ctx, k, s)
    assert loop.kept_round(ctx, h2)[0] == 1
    # target, then budgets, then rounds
    ctx2 = Context(load_config(path, ["loop.target=0.8"]), **QUIET)
    assert loop.stop_rule(ctx2, [fake_round(ctx2, 0, high)])["rule"] == "target"
    ctx3 = Context(load_config(path, ["budget.examples=20"]), **QUIET)
    assert "example budget" in loop.stop_rule(ctx3, [fake_round(ctx3, 0, low, examples=25)])["reason"]
    ctx4 = Context(load_config(path, ["budget.teacher_tokens=150"]), **QUIET)
    assert "token budget" in loop.stop_rule(ctx4, [fake_round(ctx4, 0, low), fake_round(ctx4, 1, mid)])["reason"]
    ctx5 = Context(load_config(path), deadline=time.monotonic() - 1, **QUIET)
    assert "wall-time" in loop.stop_rule(ctx5, [fake_round(ctx5, 0, low)])["reason"]
    ctx6 = Context(load_config(path, ["loop.rounds=1"]), **QUIET)
    assert loop.stop_rule(ctx6, [fake_round(ctx6, 0, low)])["rule"] == "rounds"
    with pytest.raises(Exception, match="loop.policy 'best' is unknown"):
        loop.run(Context(load_config(path, ["loop.policy=best"]), **QUIET))


# -- kill -9 and resume ---------------------------------------------------------------------------------------------
KILL_SETS = ["loop.rounds=3", "budget.examples=45", "train.steps=12", "train.checkpoint_every=2",
             "loop.probe_chunks=6"]


def cli_run(root: Path) -> dict:
    proc = subprocess.run([TASKLING, "run", "--json"] + [x for s in KILL_SETS for x in ("--set", s)], cwd=root,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def comparable(root: Path) -> dict:
    run = rounds_of(root)
    out = {}
    for k in range(3):
        for name in ("generate/examples.jsonl", "curate/train.jsonl", "curate/dev.jsonl", "analyse/analysis.json",
                     "train/loss.json", "evaluate/scores.json"):
            p = run / f"round-{k}" / name
            if p.exists():
                out[f"{k}/{name}"] = p.read_text()
    state = json.loads((run / "loop.json").read_text())
    out["loop"] = [{k: v for k, v in r.items() if k != "seconds"} for r in state["rounds"]], state["stop"]
    return out


def test_kill_9_in_a_later_round_then_rerun_gives_the_same_result(tmp_path, tiny_model_dir):
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    for r in (ref_root, root):
        r.mkdir()
        write_workspace(r, tiny_model_dir)
    cli_run(ref_root)
    proc = subprocess.Popen([TASKLING, "run"] + [x for s in KILL_SETS for x in ("--set", s)], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    train1 = rounds_of(root) / "round-1" / "train"
    # mid-training of round 1: after a checkpoint, before the stage's manifest
    kill_at(proc, lambda: any(train1.glob("checkpoints/step-*/state.pt")) and not (train1 / "manifest.json").exists())
    assert not (rounds_of(root) / "round-1" / "train" / "manifest.json").exists()
    result = cli_run(root)
    assert "generate" not in result["stages"]  # round 0 was recorded as finished: kept as it is
    assert result["stages"]["analyse@1"]["skipped"] and result["stages"]["generate@1"]["skipped"]
    assert not result["stages"]["train@1"]["skipped"]
    assert comparable(root) == comparable(ref_root)


# -- new documents -----------------------------------------------------------------------------------------------------
def test_new_documents_get_budget_in_the_next_round(tmp_path, tiny_model_dir, cli):
    path = write_workspace(tmp_path, tiny_model_dir, loop__rounds=2, budget__examples=40, loop__probe_chunks=0,
                           generate__pool_per_label=40)
    run_loop(path)
    new = tmp_path / "docs" / "node-streams.md"
    new.write_text("# Node.js streams\n\n" + "\n\n".join(
        f"In Node.js the fs module reads a file with readFile and writes one with writeFile, and a stream from "
        f"createReadStream pipes large files {i} without loading them whole; the crypto module digests each stream "
        f"chunk with createHash, and fs.watch reports a renamed or changed file {i} in the watched folder."
        for i in range(12)), encoding="utf-8")
    res = cli("ingest", "--json", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    more = run_loop(path, "loop.rounds=3", "budget.examples=60", "loop.round_examples=20", "loop.patience=10")
    assert [r["round"] for r in more["rounds"]] == [0, 1, 2]
    cited = {p["path"] for e in read_jsonl(rounds_of(tmp_path) / "round-2" / "generate" / "examples.jsonl")
             for p in e["provenance"]}
    assert "docs/node-streams.md" in cited  # fresh chunks are drawn first
    earlier = {p["path"] for k in (0, 1) for e in read_jsonl(rounds_of(tmp_path) / f"round-{k}" / "generate" /
                                                             "examples.jsonl") for p in e["provenance"]}
    assert "docs/node-streams.md" not in earlier


# -- a person's "more budget for this arm" -------------------------------------------------------------------------
def test_a_boosted_arm_gets_twice_its_weight_in_the_next_round_only(tmp_path, tiny_model_dir, cli):
    path = write_workspace(tmp_path, tiny_model_dir, loop__rounds=2, budget__examples=40, loop__probe_chunks=0,
                           loop__failure_share=0.0)
    assert run_loop(path, "loop.target=0")["stop"]["rule"] == "target"
    plan = rounds_of(tmp_path) / "round-1" / "analyse" / "manifest.json"
    assert cli("analyse", cwd=tmp_path).exit_code == 0
    before = {tuple(r["arm"]): r for r in json.loads(plan.read_text())["arms"]}
    arm, other = sorted(before, key=str)[:2]
    ws = Context(load_config(path, []), **QUIET).ws
    rec = allocate.boost(ws.boosts, arm, after_round=0, note="from the UI")
    assert allocate.boost(ws.boosts, arm, after_round=0) == rec  # asking twice is one boost
    allocate.boost(ws.boosts, other, after_round=5)  # for a later round: not applied now
    res = cli("analyse", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    after = {tuple(r["arm"]): r for r in json.loads(plan.read_text())["arms"]}
    ratio = lambda rows: rows[arm]["weight"] / rows[other]["weight"]  # noqa: E731
    assert ratio(after) == pytest.approx(2 * ratio(before), rel=0.01)
    assert after[arm]["boost"] == 2.0 and after[other]["boost"] is None
    assert sum(r["weight"] for r in after.values()) == pytest.approx(1.0, abs=0.01)
    assert allocate.boosts_for(ws.boosts, 1) == {arm: 2.0} and allocate.boosts_for(ws.boosts, 2) == {}
    with pytest.raises(Exception, match="positive number"):
        allocate.boost(ws.boosts, arm, after_round=0, factor=0)


# -- loop.train: continue ----------------------------------------------------------------------------------------
def test_train_continue_starts_round_1_from_round_0s_adapter(tmp_path, tiny_model_dir, cli):
    """`loop.train: continue` through the real CLI: round 1 trains on from round 0's adapter. Round 0 trains
    hard (a high learning rate on a tiny model), so a round that started from it begins near round 0's final
    loss, while one retrained from the base would begin near round 0's first."""
    write_workspace(tmp_path, tiny_model_dir, loop__rounds=2, budget__examples=40, loop__probe_chunks=0,
                    loop__train="continue", train__steps=30, train__lr=0.05, train__patience=None,
                    train__best_checkpoint=False, train__checkpoint_every=10)
    res = cli("run", "--json", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    run = rounds_of(tmp_path)
    m0, m1 = (json.loads((run / f"round-{k}" / "train" / "manifest.json").read_text()) for k in (0, 1))
    assert m0["continued_from"] is None
    assert m1["continued_from"] == str(run / "round-0" / "train" / "adapter")
    assert m1["settings"]["loop"]["train"] == "continue"
    l0, l1 = (json.loads((run / f"round-{k}" / "train" / "loss.json").read_text())["loss"] for k in (0, 1))
    first0, last0, first1 = l0[0][1], l0[-1][1], l1[0][1]
    assert last0 < first0 - 0.2, (first0, last0, first1)  # round 0 learned
    assert first1 < (first0 + last0) / 2, (first0, last0, first1)  # round 1 began where round 0 ended
    state = json.loads((run / "loop.json").read_text())
    assert [r.get("continued") for r in state["rounds"]] == [False, True]
