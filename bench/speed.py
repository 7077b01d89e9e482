"""The line at the speed of the hardware (issue 24): what batching buys, each side by side in one run.

    .venv/bin/python bench/speed.py [--parts teacher,train,scoring] [--calls WORKSPACE/.taskling/calls.db]
        [--requests 16] [--rounds 2]

1. teacher: the embedded teacher (SmolLM2-135M-Instruct, f16 GGUF) answering the same requests one at a
   time (teacher.concurrency 1: llama-cpp-python's create_chat_completion, the previous path) and
   decoded together (concurrency 4 and 8: teacher/backends/llamabatch.py). The requests are real ones:
   the generate stage's, read from a call log (default: the shipped example's bench workspace,
   .cache/bench-label-auto, when bench/label_auto.py has run; else developer questions). Completion
   tokens/s per arm, arms alternated `--rounds` times; and at temperature 0 whether the batched answers
   are the one-at-a-time ones, request by request. Target (issue 24): >= 2.5x at 8.
2. train: a LoRA training step (bf16 autocast, batch 8) on the shipped example's rows through its chat
   template, with the rows' shared prefix (the system prompt) run once (student/batches.py) and with
   every row run whole (the previous path): seconds per step, median of the steps, alternated.
3. scoring: every label of the shipped example scored on its 54 gold questions (student/scoring.py),
   the prompts' common prefix run once vs every prompt whole: items/s.

No call cache is used (every request is decoded). Writes bench/results/speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
EXAMPLE = ROOT / "examples" / "devdocs-router"
RESULTS = ROOT / "bench" / "results" / "speed.json"
CALLS = ROOT / ".cache" / "bench-label-auto" / ".taskling" / "calls.db"
QUESTIONS = ["How do I read a JSON value from a SQLite column?", "How do I rank full-text search results?",
             "How do I parse a date string in Python?", "How do I read a file line by line in Node.js?",
             "How do I hash a password in Node.js?", "How do I use placeholders with sqlite3 in Python?",
             "How do I list the files in a folder in Node.js?", "How do I add days to a datetime in Python?"]


def logged_requests(path: Path, n: int) -> list:
    """Up to n of the generate stage's requests from a call log, in the order they were made."""
    from taskling.teacher.backends import Request

    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute("SELECT request FROM calls WHERE purpose = 'generate' ORDER BY rowid LIMIT ?", (n,)).fetchall()
    out = []
    for (raw,) in rows:
        r = json.loads(raw)
        out.append(Request(messages=r["messages"], max_tokens=r["max_tokens"], temperature=r["temperature"],
                           seed=r["seed"], stop=tuple(r.get("stop", ())), json_schema=r.get("json_schema")))
    return out


def bench_teacher(calls: Path, n: int, rounds: int) -> dict:
    from taskling.core.config import ModelCfg
    from taskling.teacher.backends import Request, open_backend

    reqs = logged_requests(calls, n)
    source = str(calls) if reqs else "developer questions (no call log found)"
    if not reqs:
        reqs = [Request(messages=[{"role": "user", "content": QUESTIONS[i % 8] + f" (case {i})"}], max_tokens=160,
                        temperature=0.8, seed=i) for i in range(n)]
    arms = {c: open_backend(ModelCfg(concurrency=c), None) for c in (1, 4, 8)}
    runs: dict = {c: [] for c in arms}
    try:
        for _ in range(rounds):
            for c, backend in arms.items():
                t0 = time.perf_counter()
                res = backend.generate(reqs)
                wall = time.perf_counter() - t0
                tokens = sum(r.completion_tokens for r in res)
                runs[c].append({"seconds": round(wall, 2), "completion_tokens": tokens,
                                "tokens_per_s": round(tokens / wall, 1)})
                print(f"teacher concurrency {c}: {tokens} tokens in {wall:.1f} s ({tokens / wall:.1f}/s)", flush=True)
        greedy = [Request(**{**r.__dict__, "temperature": 0.0, "max_tokens": 48}) for r in reqs[:8]]
        alone = arms[1].generate(greedy)
        same = {c: sum(a.text == b.text for a, b in zip(alone, arms[c].generate(greedy))) for c in (4, 8)}
    finally:
        for b in arms.values():
            b.close()
    rate = {c: statistics.median(x["tokens_per_s"] for x in runs[c]) for c in runs}
    return {"requests": len(reqs), "source": source, "runs": {str(c): v for c, v in runs.items()},
            "tokens_per_s": {str(c): rate[c] for c in rate},
            "speedup": {str(c): round(rate[c] / rate[1], 2) for c in (4, 8)},
            "greedy_same_answers": {str(c): f"{same[c]}/{len(greedy)}" for c in same}, "target_at_8": 2.5}


def example_rows():
    """The shipped example's task, its examples as training rows (repeated to a batch), and its gold."""
    import yaml

    from taskling.core.config import TaskCfg

    cfg = yaml.safe_load((EXAMPLE / "taskling.yaml").read_text())
    task = TaskCfg(**cfg["task"])
    gold = [json.loads(x) for x in (EXAMPLE / "gold.jsonl").read_text().splitlines() if x.strip()]
    return task, gold


def alternate(arms: dict, repeat: int) -> dict:
    """Each arm's callable run `repeat` times, the arms alternated; seconds per run."""
    times: dict = {k: [] for k in arms}
    for _ in range(repeat):
        for k, fn in arms.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def bench_train(steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from taskling.core import tasktype
    from taskling.core.config import EMBEDDED_MODEL
    from taskling.student import batches, infer
    from taskling.student.models import load_causal_lm, resolve_hf

    task, gold = example_rows()
    system = tasktype.get("classify").system_prompt(task)
    model, tok = load_causal_lm(resolve_hf(EMBEDDED_MODEL))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    rows = [batches.encode(tok, system, g, 384) for g in gold[:8]]
    batch = batches.collate(rows, tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    shared = batches.shared_prefix

    def step(share: bool):
        def run():
            batches.shared_prefix = shared if share else (lambda b, d: 0)
            try:
                with infer.autocast():
                    loss = batches.completion_loss(model, batch)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            finally:
                batches.shared_prefix = shared
        return run

    step(True)()  # warm-up
    step(False)()
    times = alternate({"whole rows": step(False), "shared prefix": step(True)}, steps)
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    p = shared(batch, batches.unwrap(model).get_decoder())
    return {"batch": list(batch["input_ids"].shape), "shared_tokens": p, "seconds_per_step": med,
            "speedup": round(med["whole rows"] / med["shared prefix"], 2), "steps_each": steps}


def bench_scoring(repeat: int) -> dict:
    from taskling import tasks
    from taskling.core import tasktype
    from taskling.core.config import EMBEDDED_MODEL
    from taskling.student import scoring
    from taskling.student.models import load_causal_lm, resolve_hf

    task, gold = example_rows()
    system = tasktype.get("classify").system_prompt(task)
    model, tok = load_causal_lm(resolve_hf(EMBEDDED_MODEL))
    model.eval()
    convs = [tasks.student_messages(system, g["input"]) for g in gold]
    common = scoring.common_prefix
    got: dict = {}

    def arm(share: bool):
        def run():
            scoring.common_prefix = common if share else (lambda m, p, d: (None, p))
            try:
                got[share] = scoring.label_scores(model, tok, convs, list(task.labels), batch_size=8)
            finally:
                scoring.common_prefix = common
        return run

    times = alternate({"whole prompts": arm(False), "shared prefix": arm(True)}, repeat)
    rate = {k: round(len(convs) / statistics.median(v), 2) for k, v in times.items()}
    agree = float((got[True].argmax(1) == got[False].argmax(1)).mean())
    return {"items": len(convs), "items_per_s": rate, "speedup": round(rate["shared prefix"] / rate["whole prompts"], 2),
            "same_label_chosen": round(agree, 3)}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="teacher,train,scoring")
    ap.add_argument("--calls", type=Path, default=CALLS)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    res = {"benchmark": "speed", "command": "python bench/speed.py " + " ".join(sys.argv[1:]),
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {"cpus": os.cpu_count()},
           "load_average_start": os.getloadavg()}
    parts = a.parts.split(",")
    if "teacher" in parts:
        res["teacher"] = bench_teacher(a.calls, a.requests, a.rounds)
    if "train" in parts:
        res["train"] = bench_train(6)
    if "scoring" in parts:
        res["scoring"] = bench_scoring(3)
    res["load_average_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k in ("teacher", "train", "scoring")}, indent=1))


if __name__ == "__main__":
    main()
