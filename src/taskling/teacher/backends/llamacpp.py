"""The `llamacpp` backend: a local GGUF through llama-cpp-python (the default).

Embedded models are run from the GGUF resolve_gguf picks (see models.py). A
GGUF without a chat template (a base model such as Gemma 3 270M) is prompted
with models.PLAIN_TEMPLATE, as training and export do, and its reply stops at
the next "User:" turn. A JSON schema on a request becomes a llama.cpp grammar,
so the reply is valid JSON of that shape. llama-cpp-python's high-level API
decodes one sequence at a time; with `teacher.concurrency` above 1 (the default 4)
requests are decoded together instead, one sequence each on one context
(llamabatch.py), with the same prompts, samplers and stops.
"""
from __future__ import annotations

import dataclasses
import time

from ...core.config import ModelCfg
from ...core.errors import TasklingError
from ...core.executor import cpu_threads
from ...student.models import PLAIN_TEMPLATE, resolve_gguf
from . import Capabilities, OnResult, Request, Result, register, run_each

PLAIN_STOPS = ["\nUser:"]  # a base model goes on to write the next turn itself


@register("llamacpp")
class LlamaCppBackend:
    capabilities = Capabilities(batching=False, logprobs=True, json_schema=True)

    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        from llama_cpp import Llama

        self.name = cfg.model
        self.json_mode = cfg.json_mode
        self.path = resolve_gguf(cfg.model)
        try:
            n = cpu_threads(threads)  # prompt processing too: llama-cpp-python's default for it is every core
            self.llm = Llama(model_path=str(self.path), n_ctx=cfg.n_ctx, n_threads=n, n_threads_batch=n,
                             verbose=False, seed=0)
        except ValueError as e:
            raise TasklingError(f"{self.path}: llama.cpp could not load it ({e})") from None
        # Without a template in the file llama-cpp-python silently falls back to llama-2's [INST] format.
        self.formatter = None if "tokenizer.chat_template" in self.llm.metadata else plain_formatter(self.llm)
        self.stops = PLAIN_STOPS if self.formatter else []
        if self.formatter:
            from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

            self.llm.chat_handler = chat_formatter_to_chat_completion_handler(self.formatter)
        self.batched = None
        render = self.formatter or template_formatter(self.llm)
        if cfg.concurrency > 1 and render is not None:
            from .llamabatch import BatchDecoder

            self.batched = BatchDecoder(self.llm, cfg.concurrency, cfg.n_ctx, n, render)
            self.capabilities = Capabilities(batching=True, logprobs=True, json_schema=True,
                                             concurrency=cfg.concurrency)

    def describe(self) -> dict:
        return {"backend": "llamacpp", "model": self.name, "file": self.path.name, "bytes": self.path.stat().st_size}

    def _one(self, r: Request) -> Result:
        t0 = time.perf_counter()
        extra = {}
        if r.json_schema is not None and self.json_mode:
            extra["response_format"] = {"type": "json_object", "schema": r.json_schema}
        try:
            resp = self.llm.create_chat_completion(
                messages=r.messages, max_tokens=r.max_tokens, temperature=r.temperature,
                seed=r.seed, stop=list(r.stop) + self.stops or None, **extra)
        except ValueError as e:  # prompt longer than the context window, bad grammar...
            return Result("", latency_s=time.perf_counter() - t0, error=f"llama.cpp refused the request: {e}",
                          error_kind="bad_request")
        usage = resp.get("usage", {})
        choice = resp["choices"][0]
        return Result(choice["message"]["content"] or "", usage.get("prompt_tokens", 0),
                      usage.get("completion_tokens", 0), time.perf_counter() - t0,
                      finish_reason=choice.get("finish_reason") or "stop")

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Result]:
        if self.batched is not None:
            return self.batched.generate(requests, on_result, self.json_mode, self.stops)
        return run_each(requests, self._one, on_result)

    def close(self) -> None:
        if self.batched is not None:
            self.batched.close()
        self.llm.close() if hasattr(self.llm, "close") else None


def template_formatter(llm):
    """The chat formatter create_chat_completion uses for a GGUF whose own template it renders (as
    llama_cpp.Llama builds it), or None when it maps the template to a named format of its own."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if template is None or llm.chat_format != "chat_template.default":
        return None
    eos, bos = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(template=template, eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                               bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
                               stop_token_ids=[eos])


def plain_formatter(llm):
    """models.PLAIN_TEMPLATE as a llama-cpp-python chat formatter, ended by the model's EOS.
    The template writes no BOS: the prompt is tokenized with the model's own special tokens
    (Gemma needs its BOS, without it the reply degenerates into repeated turns)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", "replace") if token != -1 else ""

    eos = llm.token_eos()
    jinja = Jinja2ChatFormatter(PLAIN_TEMPLATE, eos_token=text(eos), bos_token=text(llm.token_bos()),
                                stop_token_ids=[eos] if eos != -1 else None)

    def render(**kwargs):
        return dataclasses.replace(jinja(**kwargs), added_special=False)
    return render
