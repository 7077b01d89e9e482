"""serve: the tuned student behind an OpenAI-compatible HTTP API.

    taskling serve [RUN | MODEL.gguf | MODEL_FOLDER | BUNDLE.tar] [--host H] [--port N]
                   [--backend llama.cpp|transformers] [--quant q8_0] [--api-key KEY]

Endpoints: GET /v1/models, POST /v1/chat/completions and /v1/completions (streamed
token by token as server-sent events, or not), POST /v1/task ({"input": ...} → the
task's parsed answer: a label with its probability, a JSON object valid against the
task's schema, or text), GET /health, GET /metrics (Prometheus). An open-book model retrieves
from the workspace's pile (or its exported index) first, for /v1/task's input and for a chat's last
user message alike, and returns the `citations` its answer names: in /v1/task's answer, and in an
extra top-level `citations` field of a chat completion (streamed: on the chunk with the
finish_reason; a closed-book model's have none; docs/guide.md). Any OpenAI client
works with base_url=http://HOST:PORT/v1. The student is prompted as it was trained:
the task's system prompt is added when the client sends none; decoding is greedy
unless a temperature is given.

One worker thread owns the model and answers requests in arrival order; at most
serve.queue wait (more get 503), each has serve.timeout_s from arrival (then 504) and
at most serve.max_tokens new tokens; bodies above serve.max_request_kb get 413. A
non-loopback address needs an API key (Authorization: Bearer, compared in constant
time); a keyless server answers only to loopback Host names (and serve.allowed_hosts),
never to another site's Origin, and only JSON POSTs (gate). A response_format schema is
measured before it becomes a grammar (limits). No request field names a file: the
model is chosen when the server starts. --port 0 takes a free port and prints it.

This module starts the server (configuration, safety checks, loading); the app and its routes
are `app`'s, request shapes and errors `schema`'s, OpenAI's response format `wire`'s, the model
thread `worker`'s, and the key, size limit and metrics `gate`'s.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

from pydantic import ValidationError

from ..core.config import ServeCfg
from ..core.errors import TasklingError
from ..core.net import hostport, listen
from .app import create_app
from .outputs import open_book_pile
from .target import load, resolve


def serve_config(config: Path, sets: list[str] | None) -> tuple[ServeCfg, Path]:
    """serve.* settings and the workspace root: from taskling.yaml when there is one,
    else the defaults with --set serve.KEY=VALUE applied."""
    from ..core.config import format_error, apply_overrides, load_config

    if config.exists():
        cfg = load_config(config, sets or [])
        return cfg.serve, cfg.root
    data = apply_overrides({}, sets or [], config)
    other = sorted(set(data) - {"serve"})
    if other:
        raise TasklingError(f"--set {other[0]}...: without a task file ({config} not found) only serve.* "
                            "settings apply")
    try:
        return ServeCfg.model_validate(data.get("serve", {})), Path.cwd()
    except ValidationError as e:
        errs = [format_error(Path("--set"), {**err, "loc": ("serve", *err["loc"])}) for err in e.errors()]
        raise TasklingError("\n".join(errs)) from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def api_key_for(cfg: ServeCfg, flag: str | None) -> str | None:
    return flag or os.environ.get("TASKLING_API_KEY") or cfg.api_key or None


def check_exposure(host: str, api_key: str | None) -> None:
    if api_key or is_loopback(host):
        return
    raise TasklingError(f"refusing to listen on {host} without an API key: anyone who can reach this machine "
                        "could use the model and its CPU. Pass --api-key KEY (or set TASKLING_API_KEY, or "
                        "serve.api_key), or keep the default --host 127.0.0.1")


def check_port(host: str, port: int) -> None:
    listen(host, port).close()


def prepare(target: str | None, root: Path, cfg: ServeCfg, backend: str | None = None,
            api_key: str | None = None, threads: int | None = None, console=None):
    """Everything before listening: safety checks, the model loaded, the app built."""
    from rich.console import Console

    console = console or Console(stderr=True)
    key = api_key_for(cfg, api_key)
    check_exposure(cfg.host, key)
    check_port(cfg.host, cfg.port)
    t = resolve(target, Path(root), backend or cfg.backend, cfg.quant, explicit=backend is not None, sha256=cfg.sha256)
    for note in t.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    with console.status(f"loading {t.path.name} ({t.backend})"):
        engine = load(t, threads)
    app = create_app(engine, t, cfg, key, open_book_pile(t, Path(root), console))
    app.allow_hosts(*cfg.allowed_hosts)
    return app, t, key


def serve(target: str | None, root: Path, cfg: ServeCfg = ServeCfg(), backend: str | None = None,
          api_key: str | None = None, threads: int | None = None, console=None) -> None:
    """Load the model and serve it until Ctrl-C."""
    import uvicorn
    from rich.console import Console

    console = console or Console(stderr=True)
    app, t, key = prepare(target, root, cfg, backend, api_key, threads, console)
    sock = listen(cfg.host, cfg.port)
    url = f"http://{hostport(cfg.host, sock.getsockname()[1])}/v1"
    auth = ' -H "Authorization: Bearer $TASKLING_API_KEY"' if key else ""
    body = json.dumps({"input": "YOUR INPUT"}) if t.info.get("type") else \
        json.dumps({"model": t.model_id, "messages": [{"role": "user", "content": "Hello"}]})
    path = "task" if t.info.get("type") else "chat/completions"
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"serving {t.model_id} from {t.source} ({t.path.name}, {t.backend}) at {url}")
    say(f"try: curl {url}/{path}{auth} -H 'Content-Type: application/json' -d '{body}'")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
