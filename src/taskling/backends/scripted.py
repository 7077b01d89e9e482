"""The `scripted` backend for tests: answers come from a Python function.

    set_script(lambda messages: "a reply")   # before open_backend(...)
"""
from __future__ import annotations

from typing import Callable

from ..config import ModelCfg
from . import Capabilities, Request, Result, register

_SCRIPT: Callable[[list[dict]], str] = lambda messages: ""


def set_script(fn: Callable[[list[dict]], str]) -> None:
    global _SCRIPT
    _SCRIPT = fn


@register("scripted")
class ScriptedBackend:
    capabilities = Capabilities(batching=True)

    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        self.name = cfg.model
        self.calls = 0

    def describe(self) -> dict:
        return {"backend": "scripted", "model": self.name}

    def generate(self, requests: list[Request]) -> list[Result]:
        self.calls += len(requests)
        out = []
        for r in requests:
            text = _SCRIPT(r.messages)
            out.append(Result(text, sum(len(m["content"].split()) for m in r.messages), len(text.split()), 0.0))
        return out

    def close(self) -> None:
        pass
