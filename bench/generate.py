"""Benchmark the teacher side of generation, side by side with the baselines.

    .venv/bin/python bench/generate.py [--requests 400] [--concurrency 8] [--prompts 8]

1. llamacpp: taskling's `llamacpp` backend (through the call log, as the stage
   uses it) against raw llama-cpp-python `create_chat_completion` on the same
   prompts and model (the embedded SmolLM2-135M-Instruct, f16): completion
   tokens/s. Runs alternate A/B twice to even out drift. Target: >= 90%.
2. openai: taskling's `openai` backend against a plain asyncio client (httpx,
   a semaphore) and the official AsyncOpenAI client at the same concurrency,
   against the same local server (taskling.teacher.faults in its own process, 50 ms
   per reply, no faults): requests/s. Target: >= 90% of the plain client.
3. dry-run: `taskling generate --dry-run` in one workspace, the real
   `taskling generate` in a fresh copy (cold cache), embedded teacher, the
   shipped example's documents: estimated vs real teacher tokens and seconds.
   Target: within 25%.

Writes bench/results/generate.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TASKLING = str(Path(sys.executable).parent / "taskling")
EXAMPLE = ROOT / "examples" / "devdocs-router"
QUESTIONS = ["How do I read a JSON value from a SQLite column?", "How do I rank full-text search results?",
             "How do I parse a date string in Python?", "How do I read a file line by line in Node.js?",
             "How do I hash a password in Node.js?", "How do I use placeholders with sqlite3 in Python?",
             "How do I list the files in a folder in Node.js?", "How do I add days to a datetime in Python?"]


def prompts(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "You answer developer questions briefly."},
             {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" (case {i})"}] for i in range(n)]


# -- 1. llamacpp ----------------------------------------------------------------------------------------------
def bench_llamacpp(n: int, max_tokens: int) -> dict:
    from llama_cpp import Llama

    from taskling.teacher.backends import Logged, Request, open_backend
    from taskling.teacher.calls import CallLog
    from taskling.core.config import EMBEDDED_MODEL, ModelCfg
    from taskling.student.models import resolve_gguf

    threads = os.cpu_count() or 1
    path = resolve_gguf(EMBEDDED_MODEL)
    raw = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False, seed=0)
    ours_inner = open_backend(ModelCfg(backend="llamacpp", model=EMBEDDED_MODEL), threads)
    msgs = prompts(n)

    def run_raw() -> tuple[int, float]:
        t0, toks = time.perf_counter(), 0
        for i, m in enumerate(msgs):
            r = raw.create_chat_completion(messages=m, max_tokens=max_tokens, temperature=0.0, seed=i)
            toks += r["usage"]["completion_tokens"]
        return toks, time.perf_counter() - t0

    def run_ours(rep: int) -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as d, CallLog(Path(d) / "calls.db") as log:
            ours = Logged(ours_inner, log)
            reqs = [Request(m, max_tokens=max_tokens, temperature=0.0, seed=i) for i, m in enumerate(msgs)]
            t0 = time.perf_counter()
            res = ours.generate(reqs)
            return sum(r.completion_tokens for r in res), time.perf_counter() - t0

    run_raw()  # warm-up (page cache, first-call allocations)
    raw_runs, our_runs = [], []
    for rep in range(2):
        raw_runs.append(run_raw())
        our_runs.append(run_ours(rep))
    raw.close()
    ours_inner.close()
    tps = lambda runs: sum(t for t, _ in runs) / sum(s for _, s in runs)  # noqa: E731
    out = {"prompts": n, "max_tokens": max_tokens, "threads": threads, "model": path.name,
           "raw_tokens_per_s": round(tps(raw_runs), 1), "taskling_tokens_per_s": round(tps(our_runs), 1)}
    out["ratio"] = round(out["taskling_tokens_per_s"] / out["raw_tokens_per_s"], 3)
    return out


# -- 2. openai ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "taskling.teacher.faults", "--port", str(port), "--latency", str(latency)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the fault server did not start")


def body(i: int) -> dict:
    m = prompts(i + 1)[i]
    m[-1]["content"] += f'\n<document id="1">Row {i}: the json_extract function reads a value at a path.</document>'
    return {"model": "toy-teacher", "messages": m, "max_tokens": 64, "temperature": 0.0, "seed": i}


async def plain_httpx(url: str, n: int, conc: int) -> float:
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=conc)) as client:
        async def one(i):
            async with sem:
                r = await client.post("/chat/completions", json=body(i))
                r.json()["choices"][0]["message"]["content"]
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


async def plain_openai(url: str, n: int, conc: int) -> float:
    import openai

    sem = asyncio.Semaphore(conc)
    async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0) as client:
        async def one(i):
            async with sem:
                b = body(i)
                await client.chat.completions.create(**b)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


def ours_openai(url: str, n: int, conc: int, offset: int) -> float:
    from taskling.teacher.backends import Logged, Request, open_backend
    from taskling.teacher.calls import CallLog
    from taskling.core.config import ModelCfg

    backend = open_backend(ModelCfg(backend="openai", model="toy-teacher", base_url=url, concurrency=conc))
    reqs = []
    for i in range(n):
        b = body(i)
        reqs.append(Request(b["messages"], max_tokens=64, temperature=0.0, seed=offset + i))
    with tempfile.TemporaryDirectory() as d, CallLog(Path(d) / "calls.db") as log:
        t0 = time.perf_counter()
        Logged(backend, log).generate(reqs)
        secs = time.perf_counter() - t0
    backend.close()
    return secs


def bench_openai(n: int, conc: int, latency: float) -> dict:
    proc, url = start_server(latency)
    try:
        asyncio.run(plain_httpx(url, conc * 2, conc))  # warm-up
        runs: dict[str, list[float]] = {"plain_httpx": [], "plain_async_openai": [], "taskling": []}
        for rep in range(2):
            runs["plain_httpx"].append(asyncio.run(plain_httpx(url, n, conc)))
            runs["plain_async_openai"].append(asyncio.run(plain_openai(url, n, conc)))
            runs["taskling"].append(ours_openai(url, n, conc, offset=rep * n))
    finally:
        proc.terminate()
        proc.wait()
    out = {"requests": n, "concurrency": conc, "server_latency_s": latency,
           "ideal_requests_per_s": round(conc / latency, 1)}
    for k, v in runs.items():
        out[f"{k}_requests_per_s"] = round(n * len(v) / sum(v), 1)
    out["ratio_vs_plain_httpx"] = round(out["taskling_requests_per_s"] / out["plain_httpx_requests_per_s"], 3)
    return out


# -- 3. dry-run estimate --------------------------------------------------------------------------------------
def cli(args: list[str], cwd: Path) -> dict:
    p = subprocess.run([TASKLING, *args, "--json"], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if p.returncode != 0:
        raise SystemExit(f"taskling {' '.join(args)} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def bench_dry_run(examples: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        a = Path(d) / "a"
        shutil.copytree(EXAMPLE, a, ignore=shutil.ignore_patterns(".taskling", "runs"))
        sets = ["--set", f"budget.examples={examples}", "--set", "ingest.embed=false"]
        cli(["ingest", *sets], a)
        b = Path(d) / "b"
        shutil.copytree(a, b, ignore=shutil.ignore_patterns("calls.db*"))
        est = cli(["generate", "--dry-run", *sets], a)  # b was copied before: its cache is cold
        t0 = time.perf_counter()
        real = cli(["generate", *sets], b)
        wall = time.perf_counter() - t0
    e = est["estimate"]
    out = {"examples": examples, "sample_jobs": est["sample_jobs"],
           "estimated": {"teacher_tokens": e["teacher_tokens"], "seconds": e["seconds"], "jobs": est["jobs_estimated"]},
           "real": {"teacher_tokens": real["counts"]["teacher_tokens"], "seconds": round(real["seconds"], 1),
                    "jobs": real["counts"]["jobs"], "command_wall_s": round(wall, 1)}}
    out["token_error"] = round(e["teacher_tokens"] / out["real"]["teacher_tokens"] - 1, 3)
    out["time_error"] = round(e["seconds"] / out["real"]["seconds"] - 1, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--examples", type=int, default=30)
    ap.add_argument("--only", choices=["llamacpp", "openai", "dry-run"])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dest = ROOT / "bench" / "results" / "generate.json"
    res = json.loads(dest.read_text()) if dest.exists() and args.only else {}
    res.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "bench/generate.py " + " ".join(sys.argv[1:])})
    if args.only in (None, "llamacpp"):
        res["llamacpp"] = bench_llamacpp(args.prompts, args.max_tokens)
        print("llamacpp", json.dumps(res["llamacpp"]), flush=True)
    if args.only in (None, "openai"):
        res["openai"] = bench_openai(args.requests, args.concurrency, args.latency)
        print("openai", json.dumps(res["openai"]), flush=True)
    if args.only in (None, "dry-run"):
        res["dry_run"] = bench_dry_run(args.examples)
        print("dry-run", json.dumps(res["dry_run"]), flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
