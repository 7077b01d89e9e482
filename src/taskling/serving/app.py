"""The HTTP app of one served model: its routes and what each one does.

`create_app` builds FastAPI behind the `Gate`; a `Server` holds the model's worker, metrics
and limits and answers GET /v1/models, /health and /metrics and POST /v1/chat/completions,
/v1/completions (whole or streamed) and /v1/task (the task's parsed answer). An open-book model
retrieves first for /v1/task (its input) and /v1/chat/completions (the last user message), through
the one prompt path of `outputs`, and returns the `citations` its answer names: in /v1/task's answer,
and as an extra top-level field of a chat completion (of its last streamed chunk with a choice).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from . import engine as eng
from ..core import tasktype
from ..core.config import ServeCfg
from ..data.retrieve import Retriever
from .gate import Gate, Metrics
from .outputs import cited, open_chat, task_outputs
from .schema import (APIError, ChatRequest, CompletionRequest, TaskRequest, as_api_error, error_body, error_response,
                     parse, read_json, timeout_error)
from .target import Target
from .wire import (Shape, build_conversation, chat_body, completion_body, include_usage, new_id, response_schema,
                   sampling)
from .worker import Job, Worker

DEFAULT_MAX_TOKENS = 256


class Server:
    """The HTTP side of one served model: limits, the worker, metrics and the handlers."""

    def __init__(self, engine: eng.Engine, target: Target, cfg: ServeCfg, api_key: str | None = None,
                 pile_db: Path | None = None):
        self.engine, self.target, self.cfg = engine, target, cfg
        self.pile_db, self.book = pile_db, None  # an open-book model's pile; its retriever opens on the model thread
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

    async def stream(self, fn: Callable[[Job], tuple[eng.Generation, dict]], shape: Shape,
                     prefix: str = "") -> StreamingResponse:
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
                        g, extra = value
                        self.metrics.count_tokens(g.prompt_tokens, g.completion_tokens)
                        for line in shape.end(g, extra):
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

    def retriever(self) -> Retriever | None:
        """An open-book model's retriever (None: closed-book), opened on first use: on the model thread,
        as SQLite connections are used on the thread that opened them."""
        if self.pile_db is not None and self.book is None:
            self.book = Retriever.from_settings(self.info["retrieval"], self.pile_db)
        return self.book

    def chat_prompt(self, conv: list[dict]) -> tuple[list[int], list | None]:
        """The prompt ids of a chat, and the chunks an open-book model retrieved into it (None: closed-book)."""
        book = self.retriever()
        if book is None:
            return self.engine.chat_ids(conv), None
        asked, chunks = open_chat(book, conv)
        return self.engine.chat_ids(asked), chunks

    def generation(self, prompt_of: Callable[[], tuple[list[int], list | None]], s: eng.Sampling, streamed: bool):
        """The model thread's work for one completion: (the generation, the extra top-level fields of the
        response: an open-book answer's `citations`, nothing for a closed-book one)."""
        def fn(job: Job) -> tuple[eng.Generation, dict]:
            ids, chunks = prompt_of()
            g = self.engine.generate(ids, s, job.text if streamed else None, job.cancelled.is_set)
            if not streamed:
                self.metrics.count_tokens(g.prompt_tokens, g.completion_tokens)
            return g, {} if chunks is None else {"citations": cited({"output": g.text}, chunks)["citations"]}
        return fn

    async def chat(self, request: Request):
        req = parse(ChatRequest, await read_json(request, self.cfg.max_request_kb * 1024))
        self.check_model(req.model)
        conv = build_conversation(req.messages, self.info.get("system_prompt"))
        s = sampling(req, self.default_max, self.cfg.max_tokens, response_schema(req.response_format),
                     self.engine.n_vocab)
        fn = self.generation(lambda: self.chat_prompt(conv), s, req.stream)
        if req.stream:
            return await self.stream(fn, Shape(True, self.model_id, include_usage(req)))
        g, extra = await self.run(fn)
        return chat_body(new_id("chatcmpl"), int(time.time()), self.model_id, g) | extra

    async def completions(self, request: Request):
        req = parse(CompletionRequest, await read_json(request, self.cfg.max_request_kb * 1024))
        self.check_model(req.model)
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise APIError(400, "prompt: send one string (a list of several prompts is not supported)",
                           param="prompt")
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        s = sampling(req, 16, self.cfg.max_tokens, n_vocab=self.engine.n_vocab)  # 16: as OpenAI
        fn = self.generation(lambda: (self.engine.text_ids(prompt), None), s, req.stream)
        prefix = prompt if req.echo else ""
        if req.stream:
            return await self.stream(fn, Shape(False, self.model_id, include_usage(req)), prefix)
        g, _ = await self.run(fn)
        return completion_body(new_id("cmpl"), int(time.time()), self.model_id, g, prefix)

    async def task(self, request: Request):
        req = parse(TaskRequest, await read_json(request, self.cfg.max_request_kb * 1024))
        self.check_model(req.model)
        if self.info.get("type") not in tasktype.names():
            raise as_api_error(eng.NoTask(eng.NO_TASK))
        limit = min(req.max_tokens or self.default_max, self.cfg.max_tokens)

        def fn(job: Job) -> dict:
            out = task_outputs(self.engine, self.info, [req.input], limit, book=self.retriever())[0]
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


def create_app(engine: eng.Engine, target: Target, cfg: ServeCfg = ServeCfg(),
               api_key: str | None = None, pile_db: Path | None = None) -> Gate:
    """The ASGI app for one loaded model: FastAPI behind the key/size/metrics gate; an open-book model
    retrieves from the pile at `pile_db` for /v1/task and /v1/chat/completions."""
    srv = Server(engine, target, cfg, api_key, pile_db)

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
