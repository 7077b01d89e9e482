"""serve: the tuned student behind an OpenAI-compatible HTTP API.

    taskling serve [RUN_ID | MODEL_FOLDER] [--host H] [--port N]

Endpoints: GET /v1/models, POST /v1/chat/completions (stream or not), GET /health.
Any OpenAI client works with base_url=http://HOST:PORT/v1. The student is
prompted as it was trained: its task's system prompt is added when the client
sends none, and decoding is greedy unless a temperature is given.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from . import infer
from .errors import TasklingError

DEFAULT_MAX_TOKENS = 256
STREAM_CHUNKS = 8


def resolve_target(target: str | None, root: Path) -> Path:
    """The exported model folder for a run id, a folder path, or the newest run."""
    hint = "run 'taskling export' first or pass a model folder"
    if target is None:
        found = [p.parent for p in root.glob("runs/*/export/merged/config.json")]
        if not found:
            raise TasklingError(f"no exported model found in {root / 'runs'}/*/export/merged; {hint}")
        return max(found, key=lambda p: p.stat().st_mtime).resolve()
    run = root / "runs" / target / "export" / "merged"
    if (run / "config.json").exists():
        return run.resolve()
    path = Path(target).expanduser()
    if (path / "config.json").exists():
        return path.resolve()
    raise TasklingError(f"'{target}' is neither an exported run ({run}) nor a model folder "
                        f"({path / 'config.json'} not found); {hint}")


@dataclass
class ServedModel:
    """A loaded student and its task; generation is serialised by `lock`."""

    model: object
    tok: object
    path: Path
    info: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: Path) -> "ServedModel":
        from .models import load_causal_lm

        task_file = path / "task.json"
        try:
            info = json.loads(task_file.read_text()) if task_file.exists() else {}
        except json.JSONDecodeError as e:
            raise TasklingError(f"{task_file}: not valid JSON ({e.msg} at line {e.lineno}); "
                                "re-run 'taskling export'") from None
        model, tok = load_causal_lm(path)
        return cls(model, tok, path, info)

    @property
    def model_id(self) -> str:
        return self.info.get("name") or self.path.name

    @property
    def created(self) -> int:
        return int(self.path.stat().st_mtime)

    def complete(self, messages: list[dict], max_tokens: int, temperature: float, seed: int) -> dict:
        with self.lock:  # torch generation is not re-entrant, and the seed is global
            return infer.generate(self.model, self.tok, [messages], max_new_tokens=max_tokens,
                                  temperature=temperature, seed=seed, batch_size=1)[0]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # top_p, user, ... are accepted and ignored
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int | None = 1
    stop: str | list[str] | None = None


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def build_conversation(messages: list[Message], system_prompt: str | None) -> list[dict]:
    """Chat-template messages; the task's system prompt goes first when the client sent none."""
    conv = []
    for m in messages:
        text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        conv.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    if system_prompt and not any(m["role"] == "system" for m in conv):
        conv.insert(0, {"role": "system", "content": system_prompt})
    return conv


def apply_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else stop or []
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def parse_request(body: object) -> ChatRequest:
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise APIError(400, f"{where}: {first['msg']}", param=where) from None
    if (req.n or 1) != 1:
        raise APIError(400, "n must be 1: this server returns one choice per request", param="n")
    return req


def run_chat(served: ServedModel, req: ChatRequest) -> dict:
    """Generate one answer; returns the fields both response shapes need."""
    if req.model != served.model_id:
        raise APIError(404, f"The model '{req.model}' does not exist; this server serves '{served.model_id}'",
                       code="model_not_found", param="model")
    conv = build_conversation(req.messages, served.info.get("system_prompt"))
    max_tokens = req.max_completion_tokens or req.max_tokens or served.info.get("max_new_tokens") or DEFAULT_MAX_TOKENS
    out = served.complete(conv, max_tokens, req.temperature or 0.0, req.seed or 0)
    text, stopped = apply_stop(out["text"], req.stop)
    usage = {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"],
             "total_tokens": out["prompt_tokens"] + out["completion_tokens"]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": served.model_id,
            "text": text, "finish_reason": "stop" if stopped else out["finish_reason"], "usage": usage}


def completion_body(r: dict) -> dict:
    return {"id": r["id"], "object": "chat.completion", "created": r["created"], "model": r["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r["text"]},
                         "finish_reason": r["finish_reason"], "logprobs": None}],
            "usage": r["usage"]}


def stream_events(r: dict, include_usage: bool) -> list[str]:
    """SSE lines: a role chunk, a few content chunks, the finish chunk, [DONE]."""
    def event(choices: list, **extra) -> str:
        obj = {"id": r["id"], "object": "chat.completion.chunk", "created": r["created"], "model": r["model"],
               "choices": choices, **extra}
        return f"data: {json.dumps(obj)}\n\n"

    def chunk(delta: dict, finish: str | None = None) -> str:
        return event([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

    words = re.findall(r"\S+\s*|\s+", r["text"])
    step = max(1, -(-len(words) // STREAM_CHUNKS))
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": "".join(words[i:i + step])}) for i in range(0, len(words), step)]
    events.append(chunk({}, r["finish_reason"]))
    if include_usage:  # OpenAI's stream_options.include_usage: a last chunk with no choices
        events.append(event([], usage=r["usage"]))
    return events + ["data: [DONE]\n\n"]


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse({"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}},
                        status_code=e.status)


def create_app(served: ServedModel) -> FastAPI:
    """The FastAPI app for one served model."""
    app = FastAPI(title=f"taskling: {served.model_id}", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return error_response(e)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        return error_response(APIError(e.status_code, str(e.detail), code=str(e.status_code)))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.model_id}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.model_id, "object": "model",
                                            "created": served.created, "owned_by": "taskling"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "the request body is not valid JSON") from None
        req = parse_request(body)
        result = await run_in_threadpool(run_chat, served, req)
        if not req.stream:
            return completion_body(result)
        usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(iter(stream_events(result, usage)), media_type="text/event-stream")

    return app


def check_port(host: str, port: int) -> None:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise TasklingError(f"cannot use host '{host}' ({e.strerror}); pass --host 127.0.0.1") from None
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError:
            raise TasklingError(f"port {port} on {host} is in use; pass --port N or stop the other server") from None


def serve(target: str | None, root: Path, host: str = "127.0.0.1", port: int = 8000, console=None) -> None:
    """Load the student and serve it until Ctrl-C."""
    import uvicorn
    from rich.console import Console

    console = console or Console(stderr=True)
    path = resolve_target(target, Path(root))
    check_port(host, port)
    infer.set_threads(None)
    served = ServedModel.load(path)
    url = f"http://{host}:{port}/v1"
    body = json.dumps({"model": served.model_id, "messages": [{"role": "user", "content": "Hello"}]})
    console.print(f"serving {served.model_id} ({path}) at {url}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"try: curl {url}/chat/completions -H 'Content-Type: application/json' -d '{body}'",
                  markup=False, highlight=False, soft_wrap=True)
    uvicorn.run(create_app(served), host=host, port=port, log_level="warning")
