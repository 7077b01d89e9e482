"""Benchmark taskling ui on a large workspace: time to first render of each page and of a search,
measured in headless Chromium (Playwright on Debian's chromium).

    .venv/bin/python bench/ui.py [--chunks 100000] [--examples 20000] [--repeats 3]

The workspace is synthetic but real in kind: a pile of --chunks chunks in SQLite (FTS5, topics)
written through taskling's Pile, and --examples curated examples in the run's curate output.
Each page is opened in a fresh tab --repeats times; the time is from navigation to the page's
content being visible (median). Target: under 500 ms each on 2 cores.
Writes bench/results/ui.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("json extract sqlite table index query match rank snippet node stream file watch crypto hash python "
         "datetime format parse cursor row factory connection commit rollback trigger view column value").split()


def build(root: Path, n_chunks: int, n_examples: int, seed: int = 0) -> float:
    """A workspace with a big pile and many curated examples; the seconds it took."""
    import yaml

    from taskling.data.pile import Pile
    from taskling.core.workspace import atomic_write_json, write_jsonl

    t0 = time.perf_counter()
    rng = random.Random(seed)
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("placeholder", encoding="utf-8")
    cfg = {"task": {"name": "big", "description": "Route a question to the right manual.", "type": "classify",
                    "labels": {"sqlite": "SQLite", "node": "Node.js", "python": "Python"}},
           "sources": ["docs/*.txt"], "teacher": {"backend": "scripted", "model": "echo-question"}}
    (root / "taskling.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    per_doc = 100
    with Pile(root / ".taskling" / "pile.db") as pile:
        for d in range(n_chunks // per_doc):
            parts, chunks, at = [], [], 0
            for i in range(per_doc):
                text = " ".join(rng.choice(WORDS) for _ in range(60)) + f" doc{d} part{i}.\n"
                chunks.append({"start": at, "end": at + len(text), "n_tokens": 70, "locator": f"section {i}"})
                parts.append(text)
                at += len(text)
            pile.replace_document(f"docs/manual-{d:05d}.txt", f"{d:064x}", "text", "text", at, "".join(parts), chunks)
        ids = [r[0] for r in pile.db.execute("SELECT id FROM chunks")]
        topics = [{"id": t, "label": f"{WORDS[t % len(WORDS)]} {WORDS[(3 * t) % len(WORDS)]}",
                   "terms": [WORDS[(t + k) % len(WORDS)] for k in range(5)], "size": 0, "examples": []}
                  for t in range(40)]
        assign = {cid: rng.randrange(40) for cid in ids}
        for t in assign.values():
            topics[t]["size"] += 1
        pile.set_topics(topics, assign, "synthetic")
        # Vectors for semantic search: random unit vectors of the embedder's width, stored as ingest stores them.
        import numpy as np

        from taskling.data.embed import to_blob

        vecs = np.random.default_rng(seed).standard_normal((len(ids), 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        pile.set_embeddings([(cid, to_blob(v)) for cid, v in zip(ids, vecs)])
    labels = ["sqlite", "node", "python"]
    run = root / "runs" / "big" / "round-0"
    exs = [{"id": f"gen-{i:05d}-0", "input": " ".join(rng.choice(WORDS) for _ in range(12)) + "?",
            "output": rng.choice(labels), "arm": [rng.randrange(40), None], "round": 0, "chunks": [],
            "spans": [], "provenance": [{"path": f"docs/manual-{i % 1000:05d}.txt", "locator": "section 1"}]}
           for i in range(n_examples)]
    for e in exs:
        e["label"] = e["output"]
    (run / "generate").mkdir(parents=True)
    (run / "curate").mkdir(parents=True)
    write_jsonl(run / "generate" / "examples.jsonl", exs)
    write_jsonl(run / "curate" / "train.jsonl", exs[: int(0.8 * n_examples)])
    write_jsonl(run / "curate" / "eval.jsonl", exs[int(0.8 * n_examples): int(0.9 * n_examples)])
    write_jsonl(run / "curate" / "rejected.jsonl", [{**e, "reason": "duplicate"} for e in exs[int(0.9 * n_examples):]])
    atomic_write_json(run / "curate" / "manifest.json", {"counts": {"train": int(0.8 * n_examples)}})
    atomic_write_json(root / "runs" / "big" / "report.json", report(rng, labels, n_examples))
    return round(time.perf_counter() - t0, 1)


def report(rng: random.Random, labels: list[str], n_examples: int) -> dict:
    """A report.json as big as a long run's: 5 rounds, 120 arms, 500 loss points, 200 failures."""
    ci = lambda m: {"metric": m, "ci_low": m - 0.05, "ci_high": m + 0.05, "n": 500}  # noqa: E731
    arms = [{"arm": [t, lab], "name": f"topic {t} / {lab}", "jobs": rng.randrange(5, 40), "seeded_jobs": 2,
             "examples": rng.randrange(5, 60), "kept": rng.randrange(0, 50), "tokens": rng.randrange(1000, 90_000),
             "cost": 0.0} for t in range(40) for lab in labels]
    return {"run_id": "big", "task": {"name": "big", "type": "classify", "metric": "accuracy"},
            "summary": "synthetic report for the UI benchmark",
            "results": {s: {w: ci(rng.random()) for w in ("student", "base", "base-fewshot", "teacher")}
                        for s in ("eval", "gold")},
            "funnel": [{"step": f"step {i}", "count": n_examples - 500 * i} for i in range(8)],
            "training": {"loss": [[i, 2.0 / (1 + i / 50)] for i in range(500)],
                         "eval_loss": [[i, 2.2 / (1 + i / 60)] for i in range(0, 500, 10)]},
            "generation": {"spend_by_arm": arms, "examples_by_arm": {a["name"]: a["examples"] for a in arms}},
            "loop": {"rounds": [{"round": k, "examples": 4000, "train_size": 3000 * (k + 1),
                                 "results": {"eval": {"student": ci(0.5 + k / 20)}}, "arms": arms} for k in range(5)]},
            "failures": [{"set": "eval", "id": f"gen-{i:05d}-0", "input": " ".join(rng.choice(WORDS) for _ in range(12)),
                          "expected": rng.choice(labels), "student": rng.choice(labels), "topic": f"topic {i % 40}",
                          "arm": [i % 40, rng.choice(labels)], "source": "docs/manual-00001.txt"} for i in range(200)]}


def serve(root: Path):
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.ui import start
    from taskling.core.workspace import Context

    server, url, _ = start(Context(load_config(root / "taskling.yaml", []), console=Console(stderr=True, quiet=True)))
    return server, url


def timed(browser, url: str, ready: str, action=None) -> float:
    page = browser.new_page()
    try:
        if action is None:
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector(ready, timeout=60_000)
            return (time.perf_counter() - t0) * 1000
        page.goto(url)
        page.wait_for_selector("#q, #examples .ex.sel")
        t0 = time.perf_counter()
        action(page)
        page.wait_for_selector(ready, timeout=60_000)
        return (time.perf_counter() - t0) * 1000
    finally:
        page.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--examples", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ui.json")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    tmp = Path(tempfile.mkdtemp(prefix="taskling-ui-bench-"))
    try:
        built = build(tmp / "ws", args.chunks, args.examples)
        print(f"workspace: {args.chunks} chunks, {args.examples} examples in {built} s", flush=True)
        server, url = serve(tmp / "ws")

        def search(page):
            page.fill("#q", "json extract rank")
            page.press("#q", "Enter")

        def semantic(page):
            page.select_option("#mode", "semantic")
            page.fill("#q", "how do I pull a value out of a JSON column")
            page.press("#q", "Enter")

        def by_arm(page):
            page.select_option("#f-arm", index=5)

        cases = {"pile (topics)": (url + "/#/pile", "#topics .tile", None),
                 "pile search (FTS5)": (url + "/#/pile", "#hits .hit", search),
                 "pile search (semantic)": (url + "/#/pile", "#hits .hit", semantic),
                 "examples (first page)": (url + "/#/examples", "#examples .ex.sel", None),
                 "examples (filtered by arm)": (url + "/#/examples", "#examples[data-query*='arm=%5B'] .ex",
                                                by_arm),
                 "runs (5 rounds, 120 arms)": (url + "/#/runs", "#run-body svg", None),
                 "failures (200)": (url + "/#/failures", ".failure >> nth=199", None),
                 "playground (page)": (url + "/#/play", "#play-input", None)}
        rows = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                timed(browser, url + "/#/examples", "#examples .ex.sel")  # warm: the first read of 20k examples
                # warm: the embedder's first load (~2 s, once per server) and the first read of the vectors
                timed(browser, url + "/#/pile", "#hits .hit", semantic)
                for name, (u, ready, action) in cases.items():
                    ms = [timed(browser, u, ready, action) for _ in range(args.repeats)]
                    rows[name] = {"median_ms": round(statistics.median(ms), 1), "all_ms": [round(x, 1) for x in ms],
                                  "under_500ms": statistics.median(ms) < 500}
                    print(f"{name}: {rows[name]['median_ms']} ms (runs {rows[name]['all_ms']})", flush=True)
            finally:
                browser.close()
        server.should_exit = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"benchmark": "ui", "command": "python bench/ui.py " + " ".join(sys.argv[1:]),
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "workspace": {"chunks": args.chunks, "examples": args.examples, "build_s": built},
           "pages": rows, "target": "under 500 ms each", "met": all(r["under_500ms"] for r in rows.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}; target met: {res['met']}")


if __name__ == "__main__":
    main()
