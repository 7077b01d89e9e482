"""serve: the tuned student behind an OpenAI-compatible HTTP API.

    taskling serve [RUN | MODEL.gguf | MODEL_FOLDER | BUNDLE.tar] [--host H] [--port N]
                   [--backend llama.cpp|transformers] [--quant q8_0] [--api-key KEY]

Endpoints: GET /v1/models, POST /v1/chat/completions and /v1/completions (streamed
token by token as server-sent events, or not), POST /v1/task ({"input": ...} → the
task's parsed answer: a label with its probability, a JSON object valid against the
task's schema, or text), GET /health, GET /metrics (Prometheus). Any OpenAI client
works with base_url=http://HOST:PORT/v1. The student is prompted as it was trained:
the task's system prompt is added when the client sends none; decoding is greedy
unless a temperature is given.

One worker thread owns the model and answers requests in arrival order; at most
serve.queue wait (more get 503), each has serve.timeout_s from arrival (then 504) and
at most serve.max_tokens new tokens; bodies above serve.max_request_kb get 413. A
non-loopback address needs an API key (Authorization: Bearer, compared in constant
time). No request field names a file: the model is chosen when the server starts.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from . import engine as eng
from ..core.config import ServeCfg
from ..core.errors import TasklingError

DEFAULT_MAX_TOKENS = 256
OPEN_PATHS = ("/health",)  # answered without an API key (load balancers, probes)


# -------------------------------------------------------------------------------------------- requests
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict | None = None


class Common(BaseModel):
    """Fields both completion endpoints take; unknown ones (user, top_k...) are ignored."""
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int | None = 1
    logit_bias: dict[str, float] | None = None


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None


class CompletionRequest(Common):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None


class TaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # our own endpoint: a misspelt field is an error
    input: str = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_body(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(error_body(e.status, e.message, e.type, e.code, e.param), status_code=e.status)


def parse(model: type[BaseModel], body: object) -> BaseModel:
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        errs = [(".".join(str(x) for x in err["loc"]) or "body", err["msg"]) for err in e.errors()[:3]]
        raise APIError(400, "; ".join(f"{where}: {msg}" for where, msg in errs), param=errs[0][0]) from None
    if getattr(req, "n", 1) not in (None, 1):
        raise APIError(400, "n must be 1: this server returns one choice per request", param="n")
    if getattr(req, "logprobs", None):
        raise APIError(400, "logprobs are not available from this server", param="logprobs")
    if getattr(req, "suffix", None):
        raise APIError(400, "suffix (insertion) is not supported", param="suffix")
    return req


async def read_json(request: Request, limit: int) -> object:
    """The body as JSON; 413 past `limit` bytes even without a Content-Length."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is larger than {limit // 1024} KB (serve.max_request_kb)",
                           code="request_too_large")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise APIError(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise APIError(400, f"the request body is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") \
            from None


def build_conversation(messages: list[Message], system_prompt: str | None) -> list[dict]:
    """Chat-template messages; the task's system prompt goes first when the client sent none."""
    conv = []
    for m in messages:
        text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        conv.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    if system_prompt and not any(m["role"] == "system" for m in conv):
        conv.insert(0, {"role": "system", "content": system_prompt})
    return conv


def response_schema(fmt: ResponseFormat | None) -> dict | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    schema = (fmt.json_schema or {}).get("schema")
    if not isinstance(schema, dict):
        raise APIError(400, "response_format.json_schema.schema must be a JSON schema object",
                       param="response_format")
    return schema


def sampling(req: Common, default_max: int, cap: int, schema: dict | None = None) -> eng.Sampling:
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens or default_max
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    try:
        bias = {int(k): max(-100.0, min(100.0, v)) for k, v in (req.logit_bias or {}).items()}
    except ValueError:
        raise APIError(400, "logit_bias keys must be token ids", param="logit_bias") from None
    return eng.Sampling(min(asked, cap), req.temperature or 0.0, req.top_p or 1.0, req.seed or 0, stops, schema,
                        bias)


# -------------------------------------------------------------------------------------------- the worker
class Job:
    """One request's work for the model thread, and the events it sends back to the
    event loop: ("text", piece) while generating, then ("done", result) or ("error", exc)."""

    def __init__(self, fn: Callable[["Job"], object], loop: asyncio.AbstractEventLoop, timeout_s: float):
        self.fn, self.loop = fn, loop
        self.deadline = time.monotonic() + timeout_s
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def emit(self, kind: str, value: object = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def text(self, piece: str) -> None:
        self.emit("text", piece)

    async def next(self) -> tuple[str, object]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(self.events.get(), left)


class Worker:
    """The thread that owns the model. Requests run one at a time in arrival order (a
    llama.cpp context, like torch generation with a global seed, is not thread-safe);
    at most `capacity` wait, and a cancelled request (timed out, client gone) is skipped
    or stopped at its next token."""

    def __init__(self, engine: eng.Engine, capacity: int):
        self.engine = engine
        self.capacity = capacity
        self.jobs: queue.Queue = queue.Queue(maxsize=capacity)
        self.running = 0
        self.thread = threading.Thread(target=self._loop, name="taskling-model", daemon=True)
        self.thread.start()

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(503, f"the server is busy: {self.capacity} requests are already waiting (serve.queue); "
                           "retry shortly", type_="server_error", code="queue_full") from None

    def stop(self) -> None:
        self.jobs.put(None)

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            self.running = 1
            try:
                with self.engine.lock:
                    job.emit("done", job.fn(job))
            except Exception as e:  # handed to the request, which turns it into an HTTP error
                job.emit("error", e)
            finally:
                self.running = 0


def as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, eng.PromptTooLong):
        return APIError(400, str(e), code="context_length_exceeded", param="messages")
    if isinstance(e, eng.NoTask):
        return APIError(400, str(e), code="no_task")
    if isinstance(e, TasklingError):
        return APIError(400, str(e))
    traceback.print_exception(e, file=sys.stderr)
    return APIError(500, f"internal error ({type(e).__name__}); see the server's log", type_="server_error")


def timeout_error(seconds: float) -> APIError:
    return APIError(504, f"the request did not finish within {seconds:g} s (serve.timeout_s)", type_="server_error",
                    code="timeout")


# -------------------------------------------------------------------------------------------- metrics
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REJECTED = {401: "unauthorized", 413: "too_large", 503: "queue_full", 504: "timeout"}


def label(**kv) -> str:
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Metrics:
    """Counters for /metrics (Prometheus text format), updated from any thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list] = {}    # endpoint -> [bucket counts..., sum, count]
        self.tokens = {"prompt": 0, "completion": 0}
        self.rejected = dict.fromkeys(REJECTED.values(), 0)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            row = self.latency.setdefault(endpoint, [0] * len(BUCKETS) + [0.0, 0])
            for i, b in enumerate(BUCKETS):
                row[i] += seconds <= b
            row[-2] += seconds
            row[-1] += 1
            if status in REJECTED:
                self.rejected[REJECTED[status]] += 1

    def count_tokens(self, prompt: int, completion: int) -> None:
        with self.lock:
            self.tokens["prompt"] += prompt
            self.tokens["completion"] += completion

    def render(self, worker: Worker, model: str, backend: str) -> str:
        out = []

        def family(name: str, kind: str, help_: str, rows: list[tuple[str, object]]) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
            out.extend(f"{name}{labels} {value}" for labels, value in rows)

        with self.lock:
            family("taskling_requests_total", "counter", "HTTP requests answered, by endpoint and status.",
                   [(label(endpoint=e, status=s), n) for (e, s), n in sorted(self.requests.items())])
            family("taskling_request_duration_seconds", "histogram", "Time from request to last byte.", [])
            for e, row in sorted(self.latency.items()):
                name = "taskling_request_duration_seconds"
                out.extend(f"{name}_bucket{label(endpoint=e, le=b)} {row[i]}" for i, b in enumerate(BUCKETS))
                out += [f"{name}_bucket{label(endpoint=e, le='+Inf')} {row[-1]}",
                        f"{name}_sum{label(endpoint=e)} {round(row[-2], 6)}", f"{name}_count{label(endpoint=e)} {row[-1]}"]
            family("taskling_tokens_total", "counter", "Tokens read (prompt) and written (completion).",
                   [(label(kind=k), v) for k, v in self.tokens.items()])
            family("taskling_rejected_total", "counter", "Requests refused: no key, too large, queue full, timeout.",
                   [(label(reason=k), v) for k, v in self.rejected.items()])
        family("taskling_queue_depth", "gauge", "Requests waiting for the model.", [("", worker.waiting)])
        family("taskling_requests_running", "gauge", "Requests the model is working on.", [("", worker.running)])
        family("taskling_queue_capacity", "gauge", "Requests allowed to wait (serve.queue).", [("", worker.capacity)])
        family("taskling_uptime_seconds", "gauge", "Seconds since the server started.",
               [("", round(time.time() - self.started, 3))])
        family("taskling_model_info", "gauge", "The model served.", [(label(model=model, backend=backend), 1)])
        return "\n".join(out) + "\n"


class Gate:
    """ASGI middleware in front of every request: the API key, the Content-Length limit,
    and the metrics (status and time to the last byte, streamed answers included)."""

    def __init__(self, app, metrics: Metrics, api_key: str | None, max_bytes: int, endpoints: set[str]):
        self.app, self.metrics, self.max_bytes, self.endpoints = app, metrics, max_bytes, endpoints
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, state = time.perf_counter(), {"status": 500, "recorded": False}

        def record() -> None:
            state["recorded"] = True
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.observe(endpoint, state["status"], time.perf_counter() - t0)

        async def watch(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") and not state["recorded"]:
                record()  # before the last byte leaves: a client that saw the answer finds it counted
            await send(message)

        try:
            refusal = self.refuse(scope)
            await (refusal or self.app)(scope, receive, watch)
        finally:
            if not state["recorded"]:
                record()

    def refuse(self, scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        if self.key and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                what = "Incorrect API key provided" if given else "No API key provided"
                return JSONResponse(error_body(401, f"{what}: send the server's key as 'Authorization: Bearer KEY'",
                                               code="invalid_api_key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        size = headers.get(b"content-length", b"0")
        if size.isdigit() and int(size) > self.max_bytes:
            return JSONResponse(error_body(413, f"the request body is larger than {self.max_bytes // 1024} KB "
                                                "(serve.max_request_kb)", code="request_too_large"), status_code=413)
        return None


# -------------------------------------------------------------------------------------------- responses
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(g: eng.Generation) -> dict:
    return {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens}


def finish(g: eng.Generation) -> str:
    return "length" if g.finish_reason in ("length", "cancelled") else "stop"


def chat_body(rid: str, created: int, model: str, g: eng.Generation) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text}, "finish_reason": finish(g),
                         "logprobs": None}], "usage": usage(g)}


def completion_body(rid: str, created: int, model: str, g: eng.Generation, prefix: str = "") -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": prefix + g.text, "finish_reason": finish(g), "logprobs": None}],
            "usage": usage(g)}


class Shape:
    """How one streamed answer's chunks look (chat or text completion)."""

    def __init__(self, chat: bool, model: str, include_usage: bool):
        self.chat, self.model, self.include_usage = chat, model, include_usage
        self.id, self.created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())

    def event(self, choices: list, **extra) -> str:
        obj = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": choices, **extra}
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    def piece(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            return self.event([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])
        return self.event([{"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}])

    def end(self, g: eng.Generation) -> list[str]:
        out = [self.piece(None, finish(g))]
        if self.include_usage:  # OpenAI's stream_options.include_usage: a last chunk with no choices
            out.append(self.event([], usage=usage(g)))
        return out + ["data: [DONE]\n\n"]


# -------------------------------------------------------------------------------------------- the app
class Server:
    """The HTTP side of one served model: limits, the worker, metrics and the handlers."""

    def __init__(self, engine: eng.Engine, target: eng.Target, cfg: ServeCfg, api_key: str | None = None):
        self.engine, self.target, self.cfg = engine, target, cfg
        self.info, self.model_id = target.info, target.model_id
        self.worker = Worker(engine, cfg.queue)
        self.metrics = Metrics()
        self.created = int(target.path.stat().st_mtime)
        self.default_max = int(self.info.get("max_new_tokens") or DEFAULT_MAX_TOKENS)
        self.api_key = api_key

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_id:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{self.model_id}'",
                           code="model_not_found", param="model")

    async def run(self, fn: Callable[[Job], object]) -> object:
        """Queue `fn` for the model and wait for its result (504 past the deadline)."""
        job = Job(fn, asyncio.get_running_loop(), self.cfg.timeout_s)
        self.worker.submit(job)
        try:
            while True:
                kind, value = await job.next()
                if kind == "done":
                    return value
                if kind == "error":
                    raise as_api_error(value)
        except asyncio.TimeoutError:
            raise timeout_error(self.cfg.timeout_s) from None
        finally:
            job.cancelled.set()

    async def stream(self, fn: Callable[[Job], eng.Generation], shape: Shape, prefix: str = "") -> StreamingResponse:
        """Queue a generation and stream its text as it comes. Errors before the first
        token are plain HTTP errors; after it, an error event ends the stream."""
        job = Job(fn, asyncio.get_running_loop(), self.cfg.timeout_s)
        self.worker.submit(job)
        try:
            first = await job.next()
        except asyncio.TimeoutError:
            job.cancelled.set()
            raise timeout_error(self.cfg.timeout_s) from None
        if first[0] == "error":
            raise as_api_error(first[1])

        async def events():
            event = first
            try:
                yield shape.piece(None, role=True) if shape.chat else shape.piece(prefix)
                while True:
                    kind, value = event
                    if kind == "text":
                        yield shape.piece(value)
                    elif kind == "done":
                        self.metrics.count_tokens(value.prompt_tokens, value.completion_tokens)
                        for line in shape.end(value):
                            yield line
                        return
                    else:
                        e = as_api_error(value)
                        yield f"data: {json.dumps(error_body(e.status, e.message, e.type, e.code))}\n\n"
                        return
                    event = await job.next()
            except asyncio.TimeoutError:
                e = timeout_error(self.cfg.timeout_s)
                yield f"data: {json.dumps(error_body(504, e.message, e.type, e.code))}\n\n"
            finally:
                job.cancelled.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def generation(self, ids_of: Callable[[], list[int]], s: eng.Sampling, streamed: bool):
        def fn(job: Job) -> eng.Generation:
            g = self.engine.generate(ids_of(), s, job.text if streamed else None, job.cancelled.is_set)
            if not streamed:
                self.metrics.count_tokens(g.prompt_tokens, g.completion_tokens)
            return g
        return fn

    async def chat(self, request: Request):
        req = parse(ChatRequest, await read_json(request, self.cfg.max_request_kb * 1024))
        self.check_model(req.model)
        conv = build_conversation(req.messages, self.info.get("system_prompt"))
        s = sampling(req, self.default_max, self.cfg.max_tokens, response_schema(req.response_format))
        fn = self.generation(lambda: self.engine.chat_ids(conv), s, req.stream)
        if req.stream:
            return await self.stream(fn, Shape(True, self.model_id, include_usage(req)))
        g = await self.run(fn)
        return chat_body(new_id("chatcmpl"), int(time.time()), self.model_id, g)

    async def completions(self, request: Request):
        req = parse(CompletionRequest, await read_json(request, self.cfg.max_request_kb * 1024))
        self.check_model(req.model)
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise APIError(400, "prompt: send one string (a list of several prompts is not supported)",
                           param="prompt")
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        s = sampling(req, 16, self.cfg.max_tokens)  # 16: OpenAI's default for completions
        fn = self.generation(lambda: self.engine.text_ids(prompt), s, req.stream)
        prefix = prompt if req.echo else ""
        if req.stream:
            return await self.stream(fn, Shape(False, self.model_id, include_usage(req)), prefix)
        g = await self.run(fn)
        return completion_body(new_id("cmpl"), int(time.time()), self.model_id, g, prefix)

    async def task(self, request: Request):
        req = parse(TaskRequest, await read_json(request, self.cfg.max_request_kb * 1024))
        self.check_model(req.model)
        if self.info.get("type") not in eng.TASK_TYPES:
            raise as_api_error(eng.NoTask(eng.NO_TASK))
        limit = min(req.max_tokens or self.default_max, self.cfg.max_tokens)

        def fn(job: Job) -> dict:
            out = eng.task_outputs(self.engine, self.info, [req.input], limit)[0]
            self.metrics.count_tokens(out["prompt_tokens"], out["completion_tokens"])
            return out

        out = await self.run(fn)
        p, c = out.pop("prompt_tokens"), out.pop("completion_tokens")
        return {"id": new_id("task"), "object": "task.result", "created": int(time.time()), "model": self.model_id,
                "type": self.info.get("type"), **out,
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_id, "backend": self.engine.backend,
                "file": self.target.path.name, "task": self.info.get("type"),
                "uptime_s": round(time.time() - self.metrics.started, 1),
                "queue": {"waiting": self.worker.waiting, "running": self.worker.running,
                          "capacity": self.worker.capacity}}

    def models(self) -> dict:
        return {"object": "list", "data": [self.model_card()]}

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "taskling"}


def include_usage(req: Common) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))


def create_app(engine: eng.Engine, target: eng.Target, cfg: ServeCfg = ServeCfg(),
               api_key: str | None = None) -> Gate:
    """The ASGI app for one loaded model: FastAPI behind the key/size/metrics gate."""
    srv = Server(engine, target, cfg, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        srv.worker.stop()

    app = FastAPI(title=f"taskling: {srv.model_id}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.server = srv

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return error_response(e)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        return error_response(APIError(e.status_code, str(e.detail), code=str(e.status_code)))

    @app.exception_handler(Exception)
    async def _bug(request, e: Exception):
        return error_response(as_api_error(e))

    app.get("/health")(srv.health)
    app.get("/v1/models")(srv.models)

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        srv.check_model(name)
        return srv.model_card()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(srv.metrics.render(srv.worker, srv.model_id, engine.backend),
                                 media_type="text/plain; version=0.0.4")

    app.post("/v1/chat/completions")(srv.chat)
    app.post("/v1/completions")(srv.completions)
    app.post("/v1/task")(srv.task)
    endpoints = {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/task"}
    return Gate(app, srv.metrics, api_key, cfg.max_request_kb * 1024, endpoints)


# -------------------------------------------------------------------------------------------- start-up
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


def prepare(target: str | None, root: Path, cfg: ServeCfg, backend: str | None = None,
            api_key: str | None = None, threads: int | None = None, console=None):
    """Everything before listening: safety checks, the model loaded, the app built."""
    from rich.console import Console

    console = console or Console(stderr=True)
    key = api_key_for(cfg, api_key)
    check_exposure(cfg.host, key)
    check_port(cfg.host, cfg.port)
    t = eng.resolve(target, Path(root), backend or cfg.backend, cfg.quant, explicit=backend is not None)
    for note in t.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    with console.status(f"loading {t.path.name} ({t.backend})"):
        engine = eng.load(t, threads)
    return create_app(engine, t, cfg, key), t, key


def serve(target: str | None, root: Path, cfg: ServeCfg = ServeCfg(), backend: str | None = None,
          api_key: str | None = None, threads: int | None = None, console=None) -> None:
    """Load the model and serve it until Ctrl-C."""
    import uvicorn
    from rich.console import Console

    console = console or Console(stderr=True)
    app, t, key = prepare(target, root, cfg, backend, api_key, threads, console)
    url = f"http://{cfg.host}:{cfg.port}/v1"
    auth = ' -H "Authorization: Bearer $TASKLING_API_KEY"' if key else ""
    body = json.dumps({"input": "YOUR INPUT"}) if t.info.get("type") else \
        json.dumps({"model": t.model_id, "messages": [{"role": "user", "content": "Hello"}]})
    path = "task" if t.info.get("type") else "chat/completions"
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"serving {t.model_id} from {t.source} ({t.path.name}, {t.backend}) at {url}")
    say(f"try: curl {url}/{path}{auth} -H 'Content-Type: application/json' -d '{body}'")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
