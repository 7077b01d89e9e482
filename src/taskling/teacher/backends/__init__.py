"""Teacher and judge backends: a small Protocol, a registry, and the cache.

A backend turns chat requests into text. `open_backend(cfg.teacher)` builds
one by name in this process; `open_for(ctx.executor, cfg.teacher, ctx.threads)`
is how a stage opens one: the executor's own when its requests run on the
nodes of a cluster, else `open_backend`'s. `Logged` wraps any backend so each
call is looked up in and written to the call log (calls.db) first, making
re-runs free and auditable.

A backend reports each finished request through `on_result(i, result)` as
soon as it has it, so a call paid for is logged before the next one returns:
a kill loses at most the calls still in flight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..calls import CallLog, call_key
from ...core.config import ModelCfg, Price
from ...core.errors import TasklingError, TeacherUnavailable


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    max_tokens: int = 160
    temperature: float = 0.0
    seed: int = 0          # also tells apart samples of the same prompt
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None  # constrain the reply to this JSON schema where the backend can

    def as_dict(self) -> dict:
        d = {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": self.temperature,
             "seed": self.seed, "stop": list(self.stop)}
        return d | ({"json_schema": self.json_schema} if self.json_schema is not None else {})


@dataclass
class Result:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str = "stop"       # stop | length
    error: str | None = None          # set when no usable reply came back after all retries
    error_kind: str | None = None     # timeout | connection | rate_limit | server_error | malformed | wrong_fields | bad_request
    cost: float = 0.0
    usage_estimated: bool = False     # the server gave no token counts; estimated from characters
    attempts: list[dict] = field(default_factory=list)  # failed attempts before this result: kind, status, detail, body


@dataclass(frozen=True)
class Capabilities:
    batching: bool = False      # several requests are worth sending together
    logprobs: bool = False
    json_schema: bool = False   # replies can be constrained to a JSON schema (grammar)
    concurrency: int = 1        # requests in flight at once


OnResult = Callable[[int, Result], None]


class Backend(Protocol):
    capabilities: Capabilities

    def describe(self) -> dict: ...

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Result]: ...

    def close(self) -> None: ...


REGISTRY: dict[str, Callable[[ModelCfg, int | None], Backend]] = {}


def register(name: str):
    def deco(factory):
        REGISTRY[name] = factory
        return factory
    return deco


MODULES = {"llamacpp": "llamacpp", "transformers": "hf", "openai": "openai_compat", "scripted": "scripted"}


def open_backend(cfg: ModelCfg, threads: int | None = None) -> Backend:
    # Import only the module that registers this backend: `hf` pulls in torch (about a second), which
    # an openai teacher never needs (a cluster starts a teacher worker per node and stage).
    import importlib

    if cfg.backend in MODULES:
        importlib.import_module(f"{__name__}.{MODULES[cfg.backend]}")
    if cfg.backend not in REGISTRY:
        raise TasklingError(f"teacher.backend '{cfg.backend}' is unknown; use one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[cfg.backend](cfg, threads)


def open_for(executor, mcfg: ModelCfg, threads: int | None = None) -> Backend:
    """The backend for `mcfg` as a stage uses it: the executor's, whose requests run on the nodes
    (core.executor.Executor.backend), or one opened here when the work stays in this process."""
    remote = executor.backend(mcfg, threads)
    return remote if remote is not None else open_backend(mcfg, threads)


def run_each(requests: list[Request], one: Callable[[Request], Result], on_result: OnResult | None) -> list[Result]:
    """For backends that answer one request at a time: call, report, collect."""
    out = []
    for i, r in enumerate(requests):
        res = one(r)
        if on_result:
            on_result(i, res)
        out.append(res)
    return out


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters per token) when a server reports none."""
    return max(1, round(len(text) / 4)) if text else 0


@dataclass
class Logged:
    """Any backend, with every call cached in and logged to calls.db, priced."""

    inner: Backend
    log: CallLog
    purpose: str = "generate"
    price: Price = field(default_factory=Price)
    stats: dict = field(default_factory=lambda: {"calls": 0, "cached": 0, "failed": 0, "retries": 0,
                                                 "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})

    def __post_init__(self) -> None:
        # Before the stage spends anything: a backend that can ask its server whether it is there does,
        # so a server that is down stops the stage in seconds (and the failure is in `taskling log --errors`).
        probe = getattr(self.inner, "probe", None)
        if callable(probe):
            self.guard(probe)

    def guard(self, fn: Callable[[], object]) -> object:
        """fn(); a teacher found unavailable is logged to calls.db's errors before it stops the stage."""
        try:
            return fn()
        except TeacherUnavailable as e:
            self.log.put_error("-", self.inner.describe(), self.purpose,
                               {"kind": "unavailable", "status": None, "detail": str(e), "body": ""})
            raise

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def describe(self) -> dict:
        return self.inner.describe()

    def cost(self, res: Result) -> float:
        return (res.prompt_tokens * self.price.input_per_mtok + res.completion_tokens * self.price.output_per_mtok) / 1e6

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Result]:
        model_id = self.inner.describe()
        keys = [call_key(model_id, r.as_dict()) for r in requests]
        out: list[Result | None] = [None] * len(requests)
        todo = []
        for i, k in enumerate(keys):
            hit = self.log.get(k)
            if hit is None:
                todo.append(i)
                continue
            out[i] = Result(**hit, cached=True)
            self.stats["cached"] += 1
            if on_result:
                on_result(i, out[i])

        def record(j: int, res: Result) -> None:
            i = todo[j]
            res.cost = self.cost(res)
            for a in res.attempts:
                self.log.put_error(keys[i], model_id, self.purpose, a)
            self.log.put(keys[i], model_id, self.purpose, requests[i].as_dict(), res)
            out[i] = res
            self.stats["calls"] += 1
            self.stats["failed"] += res.error is not None
            self.stats["retries"] += len(res.attempts)
            self.stats["prompt_tokens"] += res.prompt_tokens
            self.stats["completion_tokens"] += res.completion_tokens
            self.stats["cost"] += res.cost
            if on_result:
                on_result(i, res)

        if todo:
            self.guard(lambda: self.inner.generate([requests[i] for i in todo], on_result=record))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.inner.close()
