"""Teacher and judge backends: a small Protocol, a registry, and the cache.

A backend turns chat requests into text. `open_backend(cfg.teacher)` builds
one by name; `Logged` wraps any backend so each call is looked up in and
written to the call log (calls.db) first, making re-runs free and auditable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..calls import CallLog, call_key
from ..config import ModelCfg
from ..errors import TasklingError


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    max_tokens: int = 160
    temperature: float = 0.0
    seed: int = 0          # also tells apart samples of the same prompt
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "seed": self.seed, "stop": list(self.stop)}


@dataclass
class Result:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class Capabilities:
    batching: bool = False
    logprobs: bool = False
    json_schema: bool = False


class Backend(Protocol):
    capabilities: Capabilities

    def describe(self) -> dict: ...

    def generate(self, requests: list[Request]) -> list[Result]: ...

    def close(self) -> None: ...


REGISTRY: dict[str, Callable[[ModelCfg, int | None], Backend]] = {}


def register(name: str):
    def deco(factory):
        REGISTRY[name] = factory
        return factory
    return deco


def open_backend(cfg: ModelCfg, threads: int | None = None) -> Backend:
    # Import the modules that register themselves; heavy imports stay inside them.
    from . import llamacpp, hf, openai_compat, scripted  # noqa: F401

    if cfg.backend not in REGISTRY:
        raise TasklingError(f"teacher.backend '{cfg.backend}' is unknown; use one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[cfg.backend](cfg, threads)


@dataclass
class Logged:
    """Any backend, with every call cached in and logged to calls.db."""

    inner: Backend
    log: CallLog
    purpose: str = "generate"
    stats: dict = field(default_factory=lambda: {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0})

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def describe(self) -> dict:
        return self.inner.describe()

    def generate(self, requests: list[Request]) -> list[Result]:
        model_id = self.inner.describe()
        keys = [call_key(model_id, r.as_dict()) for r in requests]
        out: list[Result | None] = []
        todo = []
        for i, k in enumerate(keys):
            hit = self.log.get(k)
            out.append(Result(**hit, cached=True) if hit else None)
            if hit is None:
                todo.append(i)
            else:
                self.stats["cached"] += 1
        if todo:
            fresh = self.inner.generate([requests[i] for i in todo])
            for i, res in zip(todo, fresh):
                self.log.put(keys[i], model_id, self.purpose, requests[i].as_dict(), res.__dict__)
                out[i] = res
                self.stats["calls"] += 1
                self.stats["prompt_tokens"] += res.prompt_tokens
                self.stats["completion_tokens"] += res.completion_tokens
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.inner.close()
