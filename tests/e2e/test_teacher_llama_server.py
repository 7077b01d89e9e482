"""generate with the `openai` backend against a real llama.cpp server
(llama-cpp-python's own OpenAI-compatible server) running the embedded
SmolLM2-135M-Instruct: JSON-schema requests, token usage from the server,
several examples per call, and a re-run served from the cache."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import pytest

from conftest import listening_port, write_workspace
from taskling.core.config import EMBEDDED_MODEL
from taskling.core.executor import cpu_threads
from taskling.student.models import resolve_gguf

pytestmark = pytest.mark.slow
THREADS = str(cpu_threads())  # TASKLING_THREADS: this worker's share of the cores (conftest)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama-cpp-python's server on port 0: the kernel picks the port, and its table of the process's sockets
    says which (conftest.listening_port)."""
    # llama.cpp logs the whole model load to stderr: to a file, a pipe would fill and block it.
    path = tmp_path_factory.mktemp("llama-server") / "stderr.log"
    log = open(path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_gguf(EMBEDDED_MODEL)),
         "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", "0", "--n_ctx", "2048",
         "--n_threads", THREADS, "--n_threads_batch", THREADS], stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        url = f"http://127.0.0.1:{listening_port(proc)}/v1"
    except AssertionError as e:
        proc.kill()
        pytest.fail(f"llama_cpp.server: {e}: {path.read_text(errors='replace')[-2000:]}")
    assert httpx.get(f"{url}/models", timeout=30).status_code == 200
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_generate_through_a_real_llama_cpp_server(cli, tmp_path, tiny_model_dir, llama_server):
    write_workspace(tmp_path, tiny_model_dir, teacher__backend="openai", teacher__model="smollm2",
                    teacher__base_url=llama_server, teacher__concurrency=1, teacher__max_tokens=100,
                    teacher__temperature=0.7, generate__examples_per_call=2, budget__examples=6)
    assert cli("ingest", cwd=tmp_path).exit_code == 0
    r = cli("generate", "--json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    # The server takes JSON as {"type": "json_object", "schema": ...}: taskling fell back to it and kept it.
    assert m["teacher_health"]["schema_style"] == "json_object"
    assert m["counts"]["examples"] >= 1 and m["counts"]["new_calls"] >= 1
    db = sqlite3.connect(tmp_path / ".taskling" / "calls.db")
    rows = db.execute("SELECT prompt_tokens, completion_tokens, usage_estimated, response FROM calls "
                      "WHERE error IS NULL").fetchall()
    assert rows and all(p > 50 and c > 0 and not est for p, c, est, _ in rows)  # usage from the server
    for line in (tmp_path / "runs/tiny-router/round-0/generate/examples.jsonl").read_text().splitlines():
        ex = json.loads(line)
        assert ex["output"] == ex["label"] and ex["input"].strip() and ex["chunks"]
    # Same settings again: everything from the cache, the server is not asked.
    r = cli("generate", "--force", "--json", cwd=tmp_path)
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"]["new_calls"] == 0
