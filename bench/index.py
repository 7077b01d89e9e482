"""The exported retrieval index, packed (data/index.py) against the plain copy of the pile exported
before it, side by side on the open-book benchmark's workspaces (bench/open_book.py makes them):

    .venv/bin/python bench/index.py [--work .cache/bench-open-book] [--tasks pgerr,sqlite] [--run RUN]

For each task: both indexes written from the same pile (bytes, over the pile's text, the seconds to
write); then the open-book retriever (the workspace's settings, `Retriever.open`) over the pile, the
plain index and the packed one, on the gold questions and the held-out questions of `--run`'s curate
stage: how often the packed index finds the same chunks as the pile (the same set, in the same order,
shown alike), recall@4 on gold by chunk as bench/open_book.py counts it, and the milliseconds per
question; last, what a user gets: `--run`'s open-book student (its merged model, transformers) answering
the gold questions on a machine without the workspace, reading the plain index and then the packed one
(exact match). Writes bench/results/index.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
import open_book  # noqa: E402

from taskling.core.config import load_config  # noqa: E402
from taskling.core.workspace import read_jsonl  # noqa: E402
from taskling.data.index import write_index  # noqa: E402
from taskling.data.retrieve import Retriever, holds_word  # noqa: E402


def found(root: Path, db: Path, questions: list[str]) -> tuple[list[list], list[float]]:
    """What the open-book retriever over `db` finds for each question, and the seconds each took."""
    cfg = load_config(root / "taskling.yaml", [])  # as bench/open_book.py's retriever_recall: k 4, the defaults
    shown, secs = [], []
    with Retriever.open(cfg, db, 2) as book:
        book.find(questions[0])  # the embedder and the vectors loaded
        for q in questions:
            t0 = time.perf_counter()
            shown.append(book.find(q))
            secs.append(time.perf_counter() - t0)
    return shown, secs


def answers(run_dir: Path, index: Path, gold: list[dict], where: Path) -> dict:
    """The run's exported open-book student, answering `gold` from `index` alone (no workspace)."""
    import taskling
    from taskling.tasks import metrics

    model = where / "model"
    shutil.rmtree(where, ignore_errors=True)
    model.mkdir(parents=True)
    for f in (run_dir / "export" / "merged").iterdir():
        if f.name != "index.db":
            (model / f.name).symlink_to(f.resolve())
    shutil.copy(index, model / "index.db")
    (where / "empty").mkdir()
    with taskling.load_model(model, root=where / "empty", backend="transformers") as m:
        got = m.predict([g["input"] for g in gold])
    right = [metrics.exact(str(p.output or ""), g["output"]) for p, g in zip(got, gold)]
    return {"exact": round(sum(right) / len(right), 4), "n": len(right), "right": right}


def one_task(key: str, root: Path, run: str | None, out_dir: Path) -> dict:
    task = open_book.TASKS[key]
    pile_db = root / ".taskling" / "pile.db"
    text = open_book.text_bytes(pile_db)
    gold = read_jsonl(root / "gold.jsonl")
    picked, _ = task.gold(len(gold), 0)
    held = read_jsonl(root / "runs" / run / "round-0" / "curate" / "eval.jsonl") if run else []
    questions = [g["input"] for g in gold] + [str(e["input"]) for e in held]
    res = {"text_bytes": text, "questions": len(questions), "gold": len(gold), "indexes": {}}
    dbs = {"pile": pile_db}
    for name in ("plain", "packed"):  # plain: the index export wrote before packing, the baseline
        dest = out_dir / f"{key}-{name}.db"
        t0 = time.perf_counter()
        size = write_index(pile_db, dest, packed=name == "packed")
        res["indexes"][name] = {"bytes": size, "over_text": round(size / text, 3),
                                "write_s": round(time.perf_counter() - t0, 2)}
        dbs[name] = dest
    shown = {}
    for name, db in dbs.items():
        shown[name], secs = found(root, db, questions)
        hits = [any(holds_word(c.text, code) and holds_word(c.text, answer) for c in chunks)
                for (code, answer), chunks in zip(picked, shown[name][:len(gold)])]
        res.setdefault("retrieval", {})[name] = {"recall_at_4_gold_by_chunk": round(sum(hits) / len(hits), 4),
                                                 "ms_median": round(1000 * statistics.median(secs), 1)}
    for name in ("plain", "packed"):
        pairs = list(zip(shown["pile"], shown[name]))
        res["retrieval"][name] |= {
            "same_set_as_pile": round(sum({c.key for c in a} == {c.key for c in b} for a, b in pairs) / len(pairs), 4),
            "same_order_as_pile": round(sum([c.key for c in a] == [c.key for c in b] for a, b in pairs) / len(pairs), 4),
            "same_shown_as_pile": round(sum([c.text for c in a] == [c.text for c in b] for a, b in pairs) / len(pairs), 4),
            "shared_chunks_mean": round(statistics.mean(len({c.key for c in a} & {c.key for c in b})
                                                        for a, b in pairs), 3)}
    if run and (root / "runs" / run / "export" / "merged" / "index.db").exists():
        said = {name: answers(root / "runs" / run, dbs[name], gold, out_dir / f"{key}-{name}-served")
                for name in ("plain", "packed")}
        res["answers"] = {"run": run, "backend": "transformers, merged model, no workspace"} | {
            name: {k: v for k, v in a.items() if k != "right"} for name, a in said.items()}
        res["answers"]["same_right"] = round(sum(x == y for x, y in zip(said["plain"]["right"], said["packed"]["right"]))
                                             / len(gold), 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / ".cache" / "bench-open-book"))
    ap.add_argument("--tasks", default="pgerr,sqlite")
    ap.add_argument("--run", default=None, help="a run whose held-out questions are asked too and whose student "
                                                "answers gold (default: each workspace's newest exported run)")
    a = ap.parse_args()
    out_dir = Path(a.work) / "index-bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "index", "command": " ".join(["bench/index.py", *sys.argv[1:]]),
               "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tasks": {}}
    for key in a.tasks.split(","):
        root = Path(a.work) / key
        run = a.run or next((p.parent.parent.parent.name for p in sorted(
            (root / "runs").glob("*/export/merged/index.db"), key=lambda p: p.stat().st_mtime, reverse=True)), None)
        results["tasks"][key] = one_task(key, root, run, out_dir) | {"run": run}
        print(key, json.dumps(results["tasks"][key]), flush=True)
    dest = ROOT / "bench" / "results" / "index.json"
    dest.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
