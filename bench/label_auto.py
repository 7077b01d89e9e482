"""The shipped example's student on gold with the automatic label sources (label.auto, the default)
against the previous default (label.auto: false, the example's previous settings), seed by seed.

    .venv/bin/python bench/label_auto.py [--data-seeds 0] [--train-seeds 0,1,2] [--arms auto,default] [--resume]
        [--set train.steps=100] [--out bench/results/label_auto-steps100.json]

Both arms run in one workspace (a copy of examples/devdocs-router under .cache/bench-label-auto),
so they share the pile and the teacher's call cache: with the same data seed the teacher writes
the same questions for both, and the arms differ only in what taskling does with them. Each data
seed runs ingest, generate and curate with the example's own settings (`--set seed=D`); then
each training seed trains and evaluates on that same data (`--set train.seed=T`; the first is
the data seed itself, as a user's run has it). The systems that do not depend on training (base,
base few-shot, teacher, label model) are evaluated with the first training seed only. The first
run starts from an empty workspace (models cached, no call cache): its stage times are what the
demo costs on this machine (loaded by whatever else runs; the load average is recorded).

Per arm and system: each run's gold figure with its 95% bootstrap CI, and the mean over runs with
a 95% CI from the gold items of every run pooled (items resampled), and the spread (max - min).
The paired difference auto - default for the student over the same gold items and seeds. Writes
bench/results/label_auto.json after every run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
EXAMPLE = ROOT / "examples" / "devdocs-router"
RESULTS = ROOT / "bench" / "results" / "label_auto.json"
TASKLING = str(Path(sys.executable).parent / "taskling")
STAGES = ("ingest", "generate", "curate", "train", "evaluate")
# The previous default: no automatic sources, and the example's settings before them (steps chosen
# from the data size, held-out loss about eight times a run).
PREVIOUS = {"label": {"auto": False}}
PREVIOUS_DROP = {"train": ("steps", "eval_every")}


def workspace(work: Path, fresh: bool) -> Path:
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("taskling.yaml", "gold.jsonl", "docs"):
        src, dst = EXAMPLE / name, work / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    cfg = yaml.safe_load((EXAMPLE / "taskling.yaml").read_text(encoding="utf-8"))
    for section, keys in PREVIOUS_DROP.items():
        for k in keys:
            cfg.get(section, {}).pop(k, None)
    cfg.update(PREVIOUS)
    (work / "default.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return work


def taskling(root: Path, config: str, stage: str, run: str, sets: list[str]) -> float:
    t0 = time.perf_counter()
    args = [a for kv in sets for a in ("--set", kv)]
    proc = subprocess.run([TASKLING, stage, "--config", config, "--run", run, *args, "--json"],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"taskling {stage} --run {run} failed in {root}:\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - t0, 1)


def one_run(root: Path, arm: str, data_seed: int, train_seed: int, first: bool, extra: list[str] = ()) -> dict:
    """The data stages (cached after the first training seed), then training and evaluation."""
    config = "taskling.yaml" if arm == "auto" else "default.yaml"
    run = f"{arm}-s{data_seed}"
    sets = [f"seed={data_seed}"] + ([] if train_seed == data_seed else [f"train.seed={train_seed}"])
    seconds = {stage: taskling(root, config, stage, run, sets) for stage in STAGES[:-2]}
    sets += list(extra)  # --set: what training and evaluation change (the data stages keep the example's)
    seconds["train"] = taskling(root, config, "train", run, sets)
    only = [] if first else ["evaluate.models=[student]"]
    seconds["evaluate"] = taskling(root, config, "evaluate", run, sets + only)
    rnd = root / "runs" / run / "round-0"
    ev = json.loads((rnd / "evaluate" / "manifest.json").read_text())
    tr = json.loads((rnd / "train" / "manifest.json").read_text())
    cur = json.loads((rnd / "curate" / "manifest.json").read_text())
    scores = json.loads((rnd / "evaluate" / "scores.json").read_text())["gold"]
    gold = ev["results"]["gold"]
    return {"data_seed": data_seed, "train_seed": train_seed, "seconds": seconds, "load_average": os.getloadavg(),
            "gold": {w: {k: gold[w][k] for k in ("metric", "ci_low", "ci_high", "n")} for w in gold},
            "gold_scores": scores,
            "train": {"examples": cur["counts"]["train"], "dev": cur["counts"].get("dev"),
                      "kept_step": tr["best_step"], "steps": tr["counts"]["steps"],
                      "selection": (tr.get("selection") or {}).get("rule")},
            "label_model": {k: (cur.get("label_model") or {}).get(k) for k in ("items", "relabelled", "dropped_unsure")}}


def summary(res: dict) -> dict:
    """Per arm and system: the mean over seeds, its 95% CI over the pooled gold items, the seed spread;
    per seed the paired student difference auto - default."""
    from taskling.tasks.metrics import mean_ci, paired_diff_ci

    out: dict = {}
    for arm, seeds in res["arms"].items():
        systems = sorted({w for r in seeds.values() for w in r["gold_scores"]})
        out[arm] = {}
        for w in systems:
            per = [r["gold"][w]["metric"] for r in seeds.values() if w in r["gold"]]
            pooled = [s for r in seeds.values() for s in r["gold_scores"].get(w, [])]
            lo, hi = mean_ci(pooled)
            out[arm][w] = {"mean": round(sum(per) / len(per), 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                           "seeds": len(per), "spread": round(max(per) - min(per), 4), "per_seed": per}
    both = set(res["arms"].get("auto", {})) & set(res["arms"].get("default", {}))
    if both:
        new = [s for k in sorted(both) for s in res["arms"]["auto"][k]["gold_scores"]["student"]]
        old = [s for k in sorted(both) for s in res["arms"]["default"][k]["gold_scores"]["student"]]
        d, lo, hi = paired_diff_ci(new, old)
        out["student_auto_minus_default"] = {"diff": round(d, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                                             "seeds": sorted(both), "n": len(new)}
    return out


def save(res: dict, path: Path = RESULTS) -> None:
    from taskling.core.workspace import atomic_write_json

    res["summary"] = summary(res)
    atomic_write_json(path, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-seeds", default="0")
    ap.add_argument("--train-seeds", default="0,1,2")
    ap.add_argument("--arms", default="auto,default")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-label-auto")
    ap.add_argument("--keep", action="store_true", help="reuse the workspace (and its call cache) of an earlier run")
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs already in bench/results/label_auto.json and run only the missing ones "
                         "(implies --keep)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for training and evaluation only (e.g. train.steps=100); repeatable")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the results go (default %(default)s)")
    a = ap.parse_args()
    results = a.out
    root = workspace(a.work, fresh=not (a.keep or a.resume))
    res = {"benchmark": "label_auto", "command": "python bench/label_auto.py " + " ".join(sys.argv[1:]),
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {"cpus": os.cpu_count()},
           "arms": json.loads(results.read_text())["arms"] if a.resume and results.exists() else {},
           "sets": a.set}
    t0 = time.perf_counter()
    for d in [int(x) for x in a.data_seeds.split(",")]:
        for t in (int(x) for x in a.train_seeds.split(",")):  # arms side by side, seed by seed
            for arm in a.arms.split(","):
                done = res["arms"].setdefault(arm, {})
                if f"d{d}-t{t}" in done:
                    continue
                # The systems training does not change are scored once per data seed.
                first = not any(r["data_seed"] == d for r in done.values())
                r = one_run(root, arm, d, t, first=first, extra=a.set)
                done[f"d{d}-t{t}"] = r
                figs = ", ".join(f"{w} {v['metric']:.3f}" for w, v in r["gold"].items() if v["metric"] is not None)
                print(f"[{time.perf_counter() - t0:5.0f} s] {arm} data seed {d} train seed {t}: {figs}; "
                      f"stages {r['seconds']}", flush=True)
                save(res, results)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
