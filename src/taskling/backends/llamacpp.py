"""The `llamacpp` backend: a local GGUF through llama-cpp-python (the default).

Embedded models are run from their f16 conversion (see models.py).
"""
from __future__ import annotations

import os
import time

from ..config import ModelCfg
from ..errors import TasklingError
from ..models import resolve_gguf
from . import Capabilities, Request, Result, register


@register("llamacpp")
class LlamaCppBackend:
    capabilities = Capabilities(batching=False, logprobs=True, json_schema=True)

    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        from llama_cpp import Llama

        self.name = cfg.model
        self.path = resolve_gguf(cfg.model)
        try:
            self.llm = Llama(model_path=str(self.path), n_ctx=cfg.n_ctx, n_threads=threads or os.cpu_count(),
                             verbose=False, seed=0)
        except ValueError as e:
            raise TasklingError(f"{self.path}: llama.cpp could not load it ({e})") from None

    def describe(self) -> dict:
        return {"backend": "llamacpp", "model": self.name, "file": self.path.name, "bytes": self.path.stat().st_size}

    def generate(self, requests: list[Request]) -> list[Result]:
        out = []
        for r in requests:
            t0 = time.perf_counter()
            resp = self.llm.create_chat_completion(
                messages=r.messages, max_tokens=r.max_tokens, temperature=r.temperature,
                seed=r.seed, stop=list(r.stop) or None)
            usage = resp.get("usage", {})
            out.append(Result(resp["choices"][0]["message"]["content"] or "", usage.get("prompt_tokens", 0),
                              usage.get("completion_tokens", 0), time.perf_counter() - t0))
        return out

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
