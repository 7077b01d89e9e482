"""The `transformers` backend: a local HF folder or GGUF file, batched generation."""
from __future__ import annotations

from ..config import ModelCfg
from .. import infer
from ..models import load_causal_lm, resolve_hf
from . import Capabilities, Request, Result, register


@register("transformers")
class HFBackend:
    capabilities = Capabilities(batching=True, logprobs=True)

    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        infer.set_threads(threads)
        self.name = cfg.model
        self.path = resolve_hf(cfg.model)
        self.model, self.tok = load_causal_lm(self.path)

    def describe(self) -> dict:
        return {"backend": "transformers", "model": self.name}

    def generate(self, requests: list[Request]) -> list[Result]:
        out: list[Result] = []
        # Requests differ in settings only rarely; group the common case.
        for r in requests:
            res = infer.generate(self.model, self.tok, [r.messages], max_new_tokens=r.max_tokens,
                                 temperature=r.temperature, seed=r.seed)[0]
            text = res["text"]
            for s in r.stop:
                text = text.split(s)[0] if s else text
            out.append(Result(text, res["prompt_tokens"], res["completion_tokens"], res["latency_s"]))
        return out

    def close(self) -> None:
        self.model = None
