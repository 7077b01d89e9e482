"""The `openai` backend: any OpenAI-compatible server (vLLM, Ollama, llama.cpp
server, hosted APIs). One line in taskling.yaml:

    teacher: {backend: openai, base_url: http://127.0.0.1:11434/v1, model: qwen2.5:7b}
"""
from __future__ import annotations

import os
import time

from ..config import ModelCfg
from ..errors import TasklingError
from . import Capabilities, Request, Result, register


@register("openai")
class OpenAIBackend:
    capabilities = Capabilities(batching=False, logprobs=True, json_schema=True)

    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        import openai

        if not cfg.base_url:
            raise TasklingError("teacher.base_url is required for the openai backend, e.g. http://127.0.0.1:11434/v1")
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "none"
        if cfg.api_key_env and not key:
            raise TasklingError(f"teacher.api_key_env: the environment variable {cfg.api_key_env} is not set")
        self.name, self.base_url = cfg.model, cfg.base_url
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "none", max_retries=5, timeout=120)

    def describe(self) -> dict:
        return {"backend": "openai", "model": self.name, "base_url": self.base_url}

    def generate(self, requests: list[Request]) -> list[Result]:
        import openai

        out = []
        for r in requests:
            t0 = time.perf_counter()
            try:
                resp = self.client.chat.completions.create(
                    model=self.name, messages=r.messages, max_tokens=r.max_tokens, temperature=r.temperature,
                    seed=r.seed, stop=list(r.stop) or None)
            except openai.APIConnectionError:
                raise TasklingError(f"teacher server {self.base_url} is not reachable; start it or fix teacher.base_url") from None
            except openai.APIStatusError as e:
                raise TasklingError(f"teacher server {self.base_url} answered {e.status_code}: {e.message}") from None
            u = resp.usage
            out.append(Result(resp.choices[0].message.content or "", u.prompt_tokens if u else 0,
                              u.completion_tokens if u else 0, time.perf_counter() - t0))
        return out

    def close(self) -> None:
        self.client.close()
