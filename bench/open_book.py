"""Open-book students (issue 27): the student that reads the organisation's documents when it answers,
against the closed-book student, its base and the teacher, on two knowledge tasks over Debian
documentation packages, with gold from the documents' source of truth (bench/doc_tasks.py).

    .venv/bin/python bench/open_book.py [--tasks pgerr,sqlite] [--seeds 0,1,2] [--smoke] [--fresh]
    .venv/bin/python bench/open_book.py --summary [--smoke]      # recompute the summary from the JSON

pgerr   postgresql-doc-15's whole HTML manual (1,173 pages); 40 gold questions about SQLSTATE codes,
        the README benchmark's (bench/weak_teacher.py), answer: the condition name.
sqlite  sqlite3-doc's HTML pages (/usr/share/doc/sqlite3, c3ref/ too); 40 gold questions about result
        code numbers, answer: the symbolic name (SQLITE_BUSY), from rescode.html's code lists.
Every task asks in four phrasings unlike the table's wording and unlike the user's three examples.

The user's setup is a new user's: the task (description, three examples), the folder of pages, and
taskling's defaults for everything else, except what the benchmark sets for time (FOR_TIME, smoke:
SMOKE_FOR_TIME; both written into the JSON) and what tells the systems apart (SYSTEMS). Per task
and seed (`--set seed=S`), two runs in one workspace (one pile, one teacher call cache):
  closed-sS   student.retrieval off (the default): the closed-book student, the teacher few-shot
              closed-book, and the teacher with the 4 chunks the retriever finds in its prompt
  open-sS     student.retrieval on: the open-book student (RAFT-trained, asked with the 4 chunks the
              one retriever finds), its base asked the same way; exported, then served
              (`taskling serve`, llama.cpp, the q8_0 GGUF, 2 threads, one client) for the p95
              latency of /v1/task over the gold questions, retrieval included
Beside them: recall@4 on gold, by document (evaluate's own: a retrieved chunk of the gold item's
source page) and by chunk (a retrieved chunk holds both the question's code and its answer, as the
table row does); where the open-book systems' wrong answers come from (retriever or reader); the
exported index's size against the pile's text (bytes of the documents' extracted text).

Every figure is exact match on gold with its 95% bootstrap CI. Targets (issue 27): open-book student
>= 0.80 and >= teacher open-book + 20 points; recall@4 >= 0.95; p95 <= 1.5 s on 2 cores; index <=
1.5x the pile's text; the whole run <= 40 min. `--summary` gives per task and system the mean over
seeds, a 95% CI over every seed's gold items pooled, the spread (max - min) and the paired
difference open-book student - teacher open-book. Writes bench/results/open_book.json after every
run; `--smoke` (20 pages, 8 gold items, 4 examples asked of the teacher, 6 steps: a check that the
bench works, not a figure) writes bench/results/open_book-smoke.json instead and works in .cache/bench-open-book/smoke.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the taskling CLI it runs is this checkout's, whatever the venv's editable install points at
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
import doc_tasks  # noqa: E402

TASKLING = str(Path(sys.executable).parent / "taskling")
RESULTS = ROOT / "bench" / "results"
K = 4
TARGETS = {"student_open_exact": 0.80, "over_teacher_open": 0.20, "recall_at_4": 0.95, "p95_s": 1.5,
           "index_over_text": 1.5, "minutes": 40}
# What the benchmark sets for time (the rest is taskling's default): only the GGUF `taskling serve`
# serves by default (q8_0) is written, no LoRA GGUF, no Ollama Modelfile.
FOR_TIME = {"export.gguf": ["q8_0"], "export.lora_gguf": False, "export.ollama": None}
SMOKE_FOR_TIME = FOR_TIME | {"budget.examples": 4, "train.steps": 6}
SMOKE_PAGES, SMOKE_GOLD = 20, 8
# What tells the systems apart: the student's retrieval, and which models evaluate asks.
SYSTEMS = {"closed": {"student.retrieval.mode": "off", "evaluate.models": ["student", "teacher"],
                      "evaluate.teacher_retrieval": K},
           "open": {"student.retrieval.mode": "on", "student.retrieval.k": K, "evaluate.models": ["student", "base"]}}
# (run, evaluate's system) -> the name in the results
NAMES = {("closed", "student"): "student closed-book", ("open", "student-open"): "student open-book",
         ("open", "base-open"): "base open-book", ("closed", "teacher"): "teacher closed-book",
         ("closed", "teacher-retrieval"): "teacher open-book",
         ("open", "student"): "open-trained student without documents", ("open", "base"): "base closed-book"}


@dataclass(frozen=True)
class Task:
    name: str
    docs: Path                      # the Debian package's HTML folder
    page: str                       # the page that holds the answers (relative to docs)
    gold: Callable                  # (n, seed) -> (gold (key, answer) pairs, the examples' pairs)
    asks: tuple[str, ...]           # the gold questions' phrasings
    example: str                    # how the user words the three examples
    description: str
    table: dict | None = None       # --supervision tables: the answers' table mapped (taskling's `tables:`)


TASKS = {
    "pgerr": Task("pg-errcodes", doc_tasks.PG_DOCS, doc_tasks.PG_PAGES[0], doc_tasks.pg_gold, doc_tasks.PG_ASK,
                  "What is the condition name of PostgreSQL error code {c}?",
                  "Give the condition name of a PostgreSQL error code (SQLSTATE), as PostgreSQL's error code "
                  "table names it. Answer with the condition name only.", doc_tasks.PG_TABLE),
    "sqlite": Task("sqlite-rescodes", doc_tasks.SQLITE_DOCS, doc_tasks.SQLITE_PAGE, doc_tasks.sqlite_gold,
                   doc_tasks.SQLITE_ASK, "What is the symbolic name of SQLite result code {c}?",
                   "Give the symbolic name (SQLITE_...) of an SQLite result code number, as SQLite's list of "
                   "result codes names it. Answer with the name only."),
}


def pages(task: Task, smoke: bool) -> list[Path]:
    """The HTML pages the user points taskling at: all of them, or (smoke) the answers' page and 19 others."""
    every = sorted(p.relative_to(task.docs) for p in doc_tasks.need(task.docs, "the task's -doc package").rglob("*.html"))
    if not smoke:
        return every
    others = [p for p in every if str(p) != task.page]
    return [Path(task.page), *random.Random(0).sample(others, SMOKE_PAGES - 1)]


def workspace(root: Path, key: str, smoke: bool, n_gold: int, tables: bool = False) -> dict:
    """The user's folder of pages, gold.jsonl and the task's taskling.yaml as a dict (defaults elsewhere);
    with `tables`, the answers' table mapped to examples as well (smoke: no teacher paraphrase)."""
    task = TASKS[key]
    picked, shots = task.gold(n_gold, 0)  # one gold set for every seed: seeds vary what taskling draws
    docs = root / "docs"
    if not docs.exists():
        tmp = root / "docs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for rel in pages(task, smoke):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(task.docs / rel, tmp / rel)
        tmp.rename(docs)
    gold = doc_tasks.asked(picked, task.asks, source=f"docs/{task.page}")
    (root / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold), encoding="utf-8")
    return {"task": {"name": task.name, "type": "answer", "description": task.description,
                     "examples": [{"input": task.example.format(c=c), "output": a} for c, a in shots]},
            "sources": ["docs"]} | ({"tables": [mapped(task.table, smoke)]} if tables else {})


def mapped(table: dict, smoke: bool) -> dict:
    """The task's table mapping for --supervision tables (bench/weak_teacher.py's: every row trained on),
    without the teacher's paraphrases in a smoke run."""
    return table | ({"paraphrase": 0} if smoke else {})


# --supervision tables: train with no held-out set. Held-out table rows are all dropped by curate as
# overlapping a task example (their questions differ from the examples' only in the code), and the
# teacher's own examples may all be duplicates, so train would stop at its floor of one eval item.
TABLES_SETS = {"train.min_eval": 0}


def with_sets(cfg: dict, sets: dict) -> dict:
    """`cfg` with dotted settings put in (as `--set` would)."""
    out = json.loads(json.dumps(cfg))
    for dotted, value in sets.items():
        *head, last = dotted.split(".")
        node = out
        for h in head:
            node = node.setdefault(h, {})
        node[last] = value
    return out


class Failed(Exception):
    pass


def taskling(root: Path, config: str, stage: str, run: str, seed: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([TASKLING, stage, "--config", config, "--run", run, "--set", f"seed={seed}", "--json"],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise Failed(f"taskling {stage} --config {config} --run {run} failed in {root}:\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - t0, 1)


def exact_scores(root: Path, config: str, evaluate_dir: Path) -> dict[str, list[float]]:
    """Per evaluate system, 0/1 exact match (evaluate's: normalised, the abstention an answer of its own)
    on each gold item, from its saved answers."""
    from taskling.core import tasktype
    from taskling.core.config import load_config
    from taskling.core.workspace import read_jsonl
    from taskling.tasks import metrics, output_text

    cfg = load_config(root / config, [])
    kind = tasktype.get("answer")
    gold = read_jsonl(root / "gold.jsonl")
    out = {}
    for pred in sorted(evaluate_dir.glob("pred-*-gold.jsonl")):
        said = [kind.parse_output(cfg.task, r["output"]) for r in read_jsonl(pred)]
        out[pred.name[len("pred-"):-len("-gold.jsonl")]] = [
            metrics.abstention_aware(metrics.exact, str(s or ""), output_text(g["output"])) for s, g in zip(said, gold)]
    return out


def retriever_recall(root: Path, task: Task) -> dict:
    """recall@4 of the open-book student's retriever (the open run's settings, the one `Retriever`) on gold:
    by chunk, a retrieved chunk holds both the question's code and its answer (as the table row does);
    by document, a retrieved chunk comes from the answers' page (evaluate's own measure). Needs no student."""
    from taskling.core.config import load_config
    from taskling.core.workspace import read_jsonl
    from taskling.data.retrieve import Retriever, holds_word
    from taskling.tasks.openbook import recall_at_k

    gold = read_jsonl(root / "gold.jsonl")
    picked, _ = task.gold(len(gold), 0)
    cfg = load_config(root / "taskling.yaml", [])
    with Retriever.open(cfg, root / ".taskling" / "pile.db", 2) as book:
        shown = [book.find(g["input"]) for g in gold]
    hits = [any(holds_word(c.text, code) and holds_word(c.text, answer) for c in chunks)
            for (code, answer), chunks in zip(picked, shown)]
    return {"k": K, "by_chunk": round(sum(hits) / len(hits), 4), "by_document": recall_at_k(gold, shown, K)["recall"],
            "n": len(hits), "missed": [g["input"] for g, h in zip(gold, hits) if not h]}


def text_bytes(pile_db: Path) -> int:
    """The pile's text: bytes of the extracted text of its live documents."""
    db = sqlite3.connect(f"file:{pile_db}?mode=ro", uri=True)
    try:
        return db.execute("SELECT coalesce(sum(length(CAST(text AS BLOB))), 0) FROM documents "
                          "WHERE status='ok'").fetchone()[0]
    finally:
        db.close()


def serve_latency(root: Path, run: str, items: list[dict]) -> dict:
    """/v1/task through `taskling serve RUN` (its defaults: llama.cpp, the q8_0 GGUF), 2 threads, one
    client, one warm-up request; each gold question timed from request to answer, retrieval included."""
    import httpx
    from serve import Server, free_port

    srv = Server("taskling serve", [TASKLING, "serve", run, "--port", str(free_port()), "--threads", "2"],
                 model=run, cwd=root, log=root / f"serve-{run}.log")
    try:
        lat, said = [], []
        with httpx.Client(timeout=600) as http:
            http.post(f"{srv.url}/v1/task", json={"input": items[0]["input"]}).raise_for_status()
            for it in items:
                t0 = time.perf_counter()
                r = http.post(f"{srv.url}/v1/task", json={"input": it["input"]})
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()
                j = r.json()
                said.append({"output": j.get("output"), "cited": [c.get("path") for c in j.get("citations") or []]})
        health = httpx.get(f"{srv.url}/health", timeout=30).json()
    finally:
        srv.stop()
    lat.sort()
    n = len(lat)
    from taskling.tasks import metrics

    right = [metrics.exact(str(s["output"] or ""), it["output"]) for s, it in zip(said, items)]
    return {"how": f"taskling serve {run}, /v1/task, {health.get('backend')} ({health.get('file')}), 2 threads, "
                   "one client, one warm-up request", "n": n, "p50_s": round(lat[n // 2], 3),
            "p95_s": round(lat[min(n - 1, round(0.95 * (n - 1)))], 3), "max_s": round(lat[-1], 3),
            "served_exact": round(sum(right) / n, 4), "answers": said}


def index_size(root: Path, run: str) -> dict:
    man = json.loads((root / "runs" / run / "export" / "manifest.json").read_text())  # export is the run's, not a round's
    art = next((a for a in man["artifacts"] if a["name"].startswith("retrieval index")), None)
    text = text_bytes(root / ".taskling" / "pile.db")
    if art is None:
        return {"index_mb": None, "text_mb": round(text / 2**20, 3), "ratio": None, "note": "no index exported"}
    size = (root / "runs" / run / "export" / art["file"]).stat().st_size
    return {"index_mb": art["size_mb"], "index_bytes": size, "text_bytes": text, "ratio": round(size / text, 3)}


def systems_of(scores: dict[str, dict[str, list[float]]]) -> dict:
    from taskling.tasks.metrics import mean_ci

    out = {}
    for (run, w), name in NAMES.items():
        sc = scores.get(run, {}).get(w)
        if sc:
            lo, hi = mean_ci(sc)
            out[name] = {"exact_match": round(sum(sc) / len(sc), 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                         "n": len(sc)}
    return out


def one_seed(root: Path, task: Task, base: dict, seed: int, for_time: dict, log, tag: str = "",
             kinds: tuple[str, ...] = ("closed", "open")) -> dict:
    """The closed- and open-book runs of one seed (`kinds`), each stage as the CLI runs it; what failed is
    recorded. recall@4 is the retriever's own, measured whether or not a student came out."""
    out: dict = {"seconds": {}, "scores": {}}
    for kind in kinds:
        config = "closed.yaml" if kind == "closed" else "taskling.yaml"
        (root / config).write_text(yaml.safe_dump(with_sets(base, for_time | SYSTEMS[kind]), sort_keys=False),
                                   encoding="utf-8")
        run = f"{kind}{tag}-s{seed}"
        stages = ["ingest", "generate", "curate", "train", "evaluate"] + (["export"] if kind == "open" else [])
        secs = out["seconds"].setdefault(kind, {})
        try:
            for stage in stages:
                secs[stage] = taskling(root, config, stage, run, seed)
                log(f"  {task.name} seed {seed} {run}: {stage} {secs[stage]} s")
        except Failed as e:
            out.setdefault("failed", {})[kind] = str(e)
            log(f"  {task.name} seed {seed} {run}: FAILED\n{str(e)[-1500:]}")
        rd = root / "runs" / run / "round-0"
        if (rd / "evaluate" / "manifest.json").exists():
            out["scores"][kind] = exact_scores(root, config, rd / "evaluate")
            ev = json.loads((rd / "evaluate" / "manifest.json").read_text())
            out.setdefault("token_f1", {})[kind] = {w: r["metric"] for w, r in ev["results"]["gold"].items()}
            if kind == "open":
                gold_ret = (ev.get("retrieval") or {}).get("gold") or {}
                out["evaluate_recall_at_4_by_document"] = gold_ret.get("recall")
                out["open_book_errors"] = gold_ret.get("errors")
        if (rd / "curate" / "manifest.json").exists():
            cur = json.loads((rd / "curate" / "manifest.json").read_text())
            out.setdefault("train_examples", {})[kind] = cur["counts"].get("train")
        if (rd / "train" / "manifest.json").exists():
            tr = json.loads((rd / "train" / "manifest.json").read_text())
            out.setdefault("train", {})[kind] = {"steps": tr["counts"].get("steps"), "kept_step": tr.get("best_step")} | (
                {"open_book": tr["open_book"]} if tr.get("open_book") else {})
        if kind == "open" and (root / "runs" / run / "export" / "manifest.json").exists():
            out["index"] = index_size(root, run)
            from taskling.core.workspace import read_jsonl

            try:
                out["latency"] = serve_latency(root, run, read_jsonl(root / "gold.jsonl"))
            except (SystemExit, Exception) as e:  # noqa: BLE001 - a server that will not start is a finding
                out.setdefault("failed", {})["serve"] = str(e)[-1500:]
    if (root / ".taskling" / "pile.db").exists():
        out["recall_at_4"] = retriever_recall(root, task)
    out["systems"] = systems_of(out["scores"])
    return out


def pile_stats(root: Path) -> dict:
    pile_db = root / ".taskling" / "pile.db"
    if not pile_db.exists():
        return {}
    from taskling.data.pile import Pile

    with Pile(pile_db) as pile:
        s = pile.stats()
    return {k: s[k] for k in ("documents", "chunks", "tokens", "chars")} | {"text_bytes": text_bytes(pile_db)}


def summary(res: dict) -> dict:
    """Per task and system: the mean over seeds, a 95% CI over every seed's gold items pooled, the seed
    spread; recall@4, p95 latency and index ratio over seeds; the targets' checks."""
    from taskling.tasks.metrics import mean_ci, paired_diff_ci

    out: dict = {}
    for key, per in res.get("tasks", {}).items():
        seeds = per.get("seeds", {})
        rows: dict = {}
        pooled: dict[str, list[float]] = {}
        for s in seeds.values():
            for (run, w), name in NAMES.items():
                sc = s.get("scores", {}).get(run, {}).get(w)
                if sc:
                    pooled.setdefault(name, []).extend(sc)
                    rows.setdefault(name, []).append(round(sum(sc) / len(sc), 4))
        task: dict = {"systems": {}}
        for name, per_seed in rows.items():
            lo, hi = mean_ci(pooled[name])
            task["systems"][name] = {"mean": round(sum(per_seed) / len(per_seed), 4), "ci_low": round(lo, 4),
                                     "ci_high": round(hi, 4), "seeds": len(per_seed),
                                     "spread": round(max(per_seed) - min(per_seed), 4), "per_seed": per_seed}
        both = [s for s in seeds.values() if s.get("scores", {}).get("open", {}).get("student-open")
                and s.get("scores", {}).get("closed", {}).get("teacher-retrieval")]
        if both:
            new = [x for s in both for x in s["scores"]["open"]["student-open"]]
            old = [x for s in both for x in s["scores"]["closed"]["teacher-retrieval"]]
            d, lo, hi = paired_diff_ci(new, old)
            task["student_open_minus_teacher_open"] = {"diff": round(d, 4), "ci_low": round(lo, 4),
                                                       "ci_high": round(hi, 4), "n": len(new)}

        def over(get):
            vals = [v for s in seeds.values() if (v := get(s)) is not None]
            return {"mean": round(sum(vals) / len(vals), 4), "min": min(vals), "max": max(vals),
                    "seeds": len(vals)} if vals else None
        task["recall_at_4_by_chunk"] = over(lambda s: (s.get("recall_at_4") or {}).get("by_chunk"))
        task["recall_at_4_by_document"] = over(lambda s: (s.get("recall_at_4") or {}).get("by_document"))
        task["p95_s"] = over(lambda s: (s.get("latency") or {}).get("p95_s"))
        task["index_over_text"] = over(lambda s: (s.get("index") or {}).get("ratio"))
        sys_ = task["systems"]
        so, to = sys_.get("student open-book"), sys_.get("teacher open-book")
        rec, p95, idx = task["recall_at_4_by_chunk"], task["p95_s"], task["index_over_text"]
        task["targets_met"] = {  # None: not measured (no student, no export)
            "student_open_exact": None if so is None else so["mean"] >= TARGETS["student_open_exact"],
            "over_teacher_open": None if so is None or to is None
            else so["mean"] - to["mean"] >= TARGETS["over_teacher_open"],
            "recall_at_4": None if rec is None else rec["mean"] >= TARGETS["recall_at_4"],
            "p95_s": None if p95 is None else p95["max"] <= TARGETS["p95_s"],
            "index_over_text": None if idx is None else idx["max"] <= TARGETS["index_over_text"]}
        out[key] = task
    # the stages' time summed over every task, seed and run recorded (invocations merged: not one wall clock)
    total = sum(float(t) for per in res.get("tasks", {}).values() for s in per.get("seeds", {}).values()
                for stages in s.get("seconds", {}).values() for t in stages.values())
    if total:
        out["minutes"] = round(total / 60, 1)
        out["within_minutes_target"] = total / 60 <= TARGETS["minutes"]
    return out


def merged(prev: dict, new: dict) -> dict:
    """One seed's results from two invocations (`--kinds closed` then `--kinds open`, say): what is kept
    per run kind is merged kind by kind, the rest taken from the newer where it has it."""
    out = prev | new
    for key in ("seconds", "scores", "token_f1", "train_examples", "train", "failed"):
        if isinstance(prev.get(key), dict) and isinstance(new.get(key), dict):
            out[key] = prev[key] | new[key]
    out["systems"] = systems_of(out.get("scores", {}))
    return out


def save(res: dict, path: Path) -> None:
    from taskling.core.workspace import atomic_write_json

    res["summary"] = summary(res)
    atomic_write_json(path, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="pgerr,sqlite")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--gold", type=int, default=40, help=f"gold questions per task (smoke: {SMOKE_GOLD})")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_PAGES} pages, {SMOKE_GOLD} gold items, "
                    f"{SMOKE_FOR_TIME['train.steps']} steps, seed 0: "
                    "checks that the bench runs (writes open_book-smoke.json)")
    ap.add_argument("--work", type=Path, default=None, help="workspaces (default .cache/bench-open-book[/smoke])")
    ap.add_argument("--fresh", action="store_true", help="delete the workspaces first (else their caches are reused)")
    ap.add_argument("--summary", action="store_true", help="only recompute the summary from the results JSON")
    ap.add_argument("--supervision", choices=("examples", "tables"), default="examples",
                    help="examples: the user's three examples and the teacher (a new user's setup: taskling finds "
                         "the table or passages holding the examples' answers by itself, generate.discover); tables: "
                         "the answers' table mapped too (taskling's tables:, pgerr only; runs *-tables-sS, "
                         "results open_book-tables*.json)")
    ap.add_argument("--kinds", default="closed,open",
                    help="the runs per seed: closed (closed-book student, teacher closed- and open-book) and open "
                         "(open-book student, base open-book, export, serve); only open: the teacher's figures "
                         "do not depend on the seed")
    ap.add_argument("--tag", default="", help="appended to the run names (open<TAG>-sS), so runs under other "
                                              "settings or code sit beside earlier ones in one workspace")
    a = ap.parse_args()
    tables = a.supervision == "tables"
    kinds = tuple(k for k in ("closed", "open") if k in a.kinds.split(","))
    out = RESULTS / f"open_book{'-tables' if tables else ''}{a.tag}{'-smoke' if a.smoke else ''}.json"
    if a.summary:
        res = json.loads(out.read_text())
        save(res, out)
        print(json.dumps(res["summary"], indent=1))
        return
    work = a.work or ROOT / ".cache" / "bench-open-book" / ("smoke" if a.smoke else "")
    if a.fresh and work.exists():
        shutil.rmtree(work)
    seeds = [0] if a.smoke and a.seeds == "0,1,2" else [int(s) for s in a.seeds.split(",")]
    n_gold = SMOKE_GOLD if a.smoke and a.gold == 40 else a.gold
    for_time = SMOKE_FOR_TIME if a.smoke else FOR_TIME
    res = {"benchmark": "open_book", "size": "smoke" if a.smoke else "full",
           "command": "python bench/open_book.py " + " ".join(sys.argv[1:]),
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                       "nice": os.nice(0)},
           "settings": {"set_for_time": for_time, "systems": SYSTEMS, "k": K, "gold_per_task": n_gold,
                        "seeds": seeds, "kinds": kinds, "tag": a.tag, "supervision": a.supervision, "set_for_supervision": TABLES_SETS if tables else {},
                        "everything_else": "taskling's defaults"},
           "targets": TARGETS, "tasks": {}}
    if out.exists() and not a.fresh:  # earlier invocations' tasks and seeds stay, merged with this one's
        earlier = json.loads(out.read_text())
        res["tasks"] = earlier.get("tasks", {})
        res["invocations"] = earlier.get("invocations", []) + [{k: earlier[k] for k in ("command", "when", "seconds")
                                                                 if k in earlier}]
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    for key in a.tasks.split(","):
        if tables and TASKS[key].table is None:
            res["tasks"][key] = {"skipped": "no table holds its answers (taskling's tables: maps HTML tables)"}
            log(f"{key}: skipped with --supervision tables: no table to map")
            continue
        root = work / key
        root.mkdir(parents=True, exist_ok=True)
        base = workspace(root, key, a.smoke, n_gold, tables)
        per = res["tasks"].setdefault(key, {"pages": len(pages(TASKS[key], a.smoke)), "gold": n_gold, "seeds": {}})
        for seed in seeds:
            r = one_seed(root, TASKS[key], base, seed, for_time | (TABLES_SETS if tables else {}), log,
                         ("-tables" if tables else "") + a.tag, kinds)
            per["seeds"][str(seed)] = merged(per["seeds"].get(str(seed), {}), r)
            per["pile"] = pile_stats(root)
            log(f"{key} seed {seed}: " + ", ".join(f"{n} {v['exact_match']:.2f}" for n, v in r["systems"].items())
                + f"; recall@4 {r.get('recall_at_4')}; p95 {(r.get('latency') or {}).get('p95_s')} s; "
                  f"index/text {(r.get('index') or {}).get('ratio')}")
            res["seconds"] = round(time.perf_counter() - t0, 1)
            save(res, out)
    log(f"wrote {out}")
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
