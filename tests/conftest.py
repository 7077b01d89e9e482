"""Shared fixtures: a tiny random Llama with a ChatML tokenizer, built here
(never downloaded), a workspace with a small task and documents, one headless
Chromium per test module, servers on sockets handed to them, and `need` for what
set-up installs (a test fails without it, never skips silently)."""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Inductor's compiled kernels are kept between runs (and shared with the processes tests start).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                                     / "taskling" / "inductor"))


def pytest_configure(config):
    """Each pytest worker's share of the cores for the models it and the processes it starts run (taskling's
    TASKLING_THREADS; OpenMP's default for any other torch use), set once xdist has said how many workers
    there are. Two workers on two cores, each running llama.cpp and torch on every core, spin-wait for
    threads the other holds: the shared real SmolLM2 run took 428 s beside the kill and Gemma tests at the
    default threads, 122 s at one thread each (alone: 96 s)."""
    if not hasattr(config, "workerinput"):  # one process, or xdist's controller (its workers inherit its env)
        return
    share = str(max(1, (os.cpu_count() or 1) // config.workerinput["workercount"]))
    os.environ.setdefault("TASKLING_THREADS", share)  # unless the person running the tests chose
    os.environ.setdefault("OMP_NUM_THREADS", share)


# What set-up installs for the tests (scripts/setup.sh). A test that needs one fails without it; it
# is skipped only when the person running the tests names it here, e.g. TASKLING_TESTS_WITHOUT=chromium.
WITHOUT = "TASKLING_TESTS_WITHOUT"


def need(thing: str, present: bool, how: str) -> None:
    """Fail the test when `thing` is missing, saying how to get it; skip it (naming it) only when opted out."""
    if present:
        return
    if thing in {x.strip() for x in os.environ.get(WITHOUT, "").split(",")}:
        pytest.skip(f"{thing} is missing and {WITHOUT} names it: this test did not run")
    pytest.fail(f"{thing} is missing: {how} (or set {WITHOUT}={thing} to skip what needs it)", pytrace=False)


def chromium_path() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium (Debian's, driven by Playwright) per test module; each test opens its pages. Module,
    not session: Playwright's sync API runs one instance per thread at a time, and tests/ui still starts its own."""
    exe = chromium_path()
    need("chromium", exe is not None, "run scripts/setup.sh as root (it installs Debian's chromium), or "
         "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def at_a_terminal() -> None:
    """Popen's preexec_fn for a command a test stops with Ctrl-C: SIGINT as a terminal's foreground command
    gets it (default action, not blocked). A suite started as a background job (as `.ci/run` was here) has
    SIGINT ignored, and its commands inherit that: the clean-clone run hung on a Ctrl-C no command heard."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1"):
    """A real uvicorn server for `app` in a thread, on a socket bound here and handed to it (the kernel picks
    the port and nothing can take it before the server listens); yields http://host:port."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # `sock` is ours already; this waits until the server listens on it
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The json_extract function returns a value from a JSON document in SQLite.",
    "Full-text search uses the MATCH operator and the bm25 ranking function.",
    "Use fs.readFile to read a file in Node.js, and fs.watch to watch it.",
    "createHash computes a sha256 digest; randomBytes returns random data.",
    "A timedelta is a duration; strftime formats a datetime as text.",
    "Connection.execute runs SQL; row_factory changes how rows come back.",
    "How do I route a question to the right manual? Answer with one label.",
] * 20


def build_tiny_model(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama + ChatML BPE tokenizer saved as an HF folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


DOCS = {
    "docs/sqlite.md": "# SQLite\n\n" + "\n\n".join(
        f"## Section {i}\n\nThe sqlite json_extract function reads a value at a path from a JSON document. "
        f"FTS5 tables answer MATCH queries ranked by bm25, and the snippet function {i} shows context. "
        f"Use json_set to change one key and json_each to walk an array in query number {i}."
        for i in range(8)),
    "docs/node.html": "<html><head><title>Node</title></head><body><h1>Node.js</h1>" + "".join(
        f"<h2>Part {i}</h2><p>The node fs module reads files with readFile and writes them with writeFile. "
        f"Streams from createReadStream pipe data; fs.watch notices changes in folder {i}. "
        f"The crypto module hashes data with createHash and makes keys with randomBytes {i}.</p>"
        for i in range(8)) + "</body></html>",
    "docs/python.txt": "Python\n======\n\n" + "\n\n".join(
        f"The python datetime module has date, time and timedelta types. strftime formats a datetime {i} "
        f"and strptime parses text. The sqlite3 module connects with connect and runs SQL with execute; "
        f"row_factory shapes the rows that come back from cursor number {i}."
        for i in range(8)),
}

GOLD = [
    {"input": "How do I read a value from a JSON column with json_extract?", "output": "sqlite"},
    {"input": "How do I rank FTS5 MATCH results with bm25?", "output": "sqlite"},
    {"input": "How do I read a file with readFile in node?", "output": "node"},
    {"input": "How do I hash data with createHash in node crypto?", "output": "node"},
    {"input": "How do I format a datetime with strftime in python?", "output": "python"},
    {"input": "How do I add a timedelta to a date in python?", "output": "python"},
]


def write_workspace(root: Path, model_dir: Path, teacher: str = "echo-question", **extra) -> Path:
    """A tiny classify task over three documents (md, html, txt), the tiny
    model as student and a built-in scripted teacher. Returns taskling.yaml."""
    import json

    import yaml

    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD), encoding="utf-8")
    cfg = {
        "task": {"name": "tiny-router", "description": "Route a developer question to the right manual.",
                 "type": "classify",
                 "labels": {"sqlite": "SQLite json_extract, FTS5 MATCH, bm25",
                            "node": "Node.js fs readFile, crypto createHash",
                            "python": "Python datetime strftime, sqlite3 connect"},
                 "input_noun": "developer question",
                 "examples": [{"input": "How do I change a key with json_set?", "output": "sqlite"},
                              {"input": "How do I watch a folder with fs.watch?", "output": "node"}]},
        "sources": ["docs/*.md", "docs/*.html", "docs/*.txt"],
        "teacher": {"backend": "scripted", "model": teacher},
        "student": {"model": str(model_dir)},
        "budget": {"examples": 30},
        "ingest": {"chunk_tokens": 64, "embed": False},
        "generate": {"pool_per_label": 6},
        "train": {"steps": 6, "batch_size": 4, "checkpoint_every": 2, "max_seq_len": 128},
        "evaluate": {"max_items": 8, "batch_size": 4},
        # The tiny tokenizer is not one llama.cpp's converter knows: GGUF export is tested on the real student.
        "export": {"gguf": [], "lora_gguf": False, "ollama": None},
        "seed": 1,
    }
    for dotted, value in extra.items():
        node = cfg
        *head, last = dotted.split("__")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    path = root / "taskling.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


EVIL = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned=2\"> The json_extract trick, in HTML."


@pytest.fixture(scope="session")
def ui_workspace(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny workspace (embeddings on, plus a document that holds <script>) run through ingest, generate,
    curate, train and evaluate, with its report: what `taskling ui` shows. Shared read-only by the UI tests;
    one that changes it works on a copy. Returns its taskling.yaml."""
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.core.workspace import Context
    from taskling.report import build as report
    from taskling.stages import curate, evaluate, generate, ingest, train

    root = tmp_path_factory.mktemp("ui")
    path = write_workspace(root, tiny_model_dir, ingest__embed=True)
    (root / "docs" / "evil.txt").write_text(EVIL * 3, encoding="utf-8")
    ctx = Context(load_config(path, []), console=Console(stderr=True, quiet=True))
    for stage in (ingest, generate, curate, train, evaluate):
        stage.run(ctx)
    report.write(ctx)
    return path


@pytest.fixture
def workspace(tmp_path, tiny_model_dir) -> Path:
    """A fresh tiny workspace; returns its taskling.yaml."""
    return write_workspace(tmp_path, tiny_model_dir)


@pytest.fixture
def cli(monkeypatch):
    """Run the taskling CLI in this process: cli("generate", "--json", cwd=root)."""
    from typer.testing import CliRunner

    from taskling.cli import app

    runner = CliRunner()

    def invoke(*args, cwd=None):
        if cwd:
            monkeypatch.chdir(cwd)
        return runner.invoke(app, list(args), catch_exceptions=False)
    return invoke


def kill_at(proc, ready, timeout: float = 900, group: bool = True) -> None:
    """SIGKILL `proc` (its process group: started with start_new_session=True) the moment `ready()` holds.
    The process is frozen (SIGSTOP) and `ready()` asked again before the kill, so the kill lands on exactly
    that state at any load; fails if the process ends first."""
    import signal
    import time

    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the process finished before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        if ready():
            send(signal.SIGSTOP)
            if ready():
                break
            send(signal.SIGCONT)
        time.sleep(0.005)
    send(signal.SIGKILL)
    proc.wait()


def listening_port(proc, timeout: float = 300) -> int:
    """The TCP port the server process `proc` (started with --port 0) listens on, read from the kernel's
    table of its sockets: the port it bound, so nothing can take it in between. Fails if it ends first."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited ({proc.returncode}) before it listened"
        assert time.monotonic() < deadline, f"the server did not listen within {timeout:.0f} s"
        try:
            ports = [c.laddr.port for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            ports = []
        if ports:
            return ports[0]
        time.sleep(0.1)


def one_line_error(result, *needles):
    """The command failed with a one-line 'error:' message holding every needle, no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert lines, result.output
    for n in needles:
        assert n in result.output, result.output
