"""OpenAI's wire format on both sides of the engine.

A request becomes what the engine takes: the chat-template conversation with the task's system
prompt (`build_conversation`), a JSON schema from response_format that the engine turns into a
grammar (`response_schema`, measured first by `limits`), and the `Sampling` (`sampling`: logit_bias
ids must be tokens of the model, values within OpenAI's -100..100). A `Generation` becomes what the
client reads: a chat or text completion body, or the server-sent events of a streamed answer
(`Shape`), usage included when stream_options asks for it.
"""
from __future__ import annotations

import json
import time
import uuid

from . import engine as eng
from .limits import check_schema
from .schema import APIError, Common, Message, ResponseFormat


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
    check_schema(schema)
    return schema


def sampling(req: Common, default_max: int, cap: int, schema: dict | None = None,
             n_vocab: int | None = None) -> eng.Sampling:
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens or default_max
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    # llama.cpp seeds are 32-bit; any integer a client sends maps onto one, the same one each time
    return eng.Sampling(min(asked, cap), req.temperature or 0.0, req.top_p or 1.0, (req.seed or 0) % 2**32, stops,
                        schema, logit_bias(req.logit_bias or {}, n_vocab))


def logit_bias(given: dict[str, float], n_vocab: int | None) -> dict[int, float]:
    """OpenAI's logit_bias as {token id: bias}; an id the model does not have, or a value outside
    -100..100, is a 400 (never wrapped to another token or quietly dropped)."""
    out = {}
    for key, value in given.items():
        if not (key.isascii() and key.isdigit()) or len(key) > 12:
            raise APIError(400, f"logit_bias: {key[:40]!r} is not a token id (a whole number from 0)",
                           param="logit_bias")
        tid = int(key)
        if n_vocab is not None and tid >= n_vocab:
            raise APIError(400, f"logit_bias: token id {tid} is out of range: this model's tokens are 0..{n_vocab - 1}",
                           param="logit_bias")
        if not -100 <= value <= 100:
            raise APIError(400, f"logit_bias: the bias {value} of token {tid} is outside -100..100", param="logit_bias")
        out[tid] = float(value)
    return out


def include_usage(req: Common) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))


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

    def piece(self, text: str | None, finish_reason: str | None = None, role: bool = False, **extra) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            return self.event([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra)
        return self.event([{"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}],
                          **extra)

    def end(self, g: eng.Generation, extra: dict | None = None) -> list[str]:
        """The closing chunks: the one with the finish reason (carrying `extra`, an open-book answer's
        citations, once the whole text is known), the usage chunk when asked for, [DONE]."""
        out = [self.piece(None, finish(g), **(extra or {}))]
        if self.include_usage:  # OpenAI's stream_options.include_usage: a last chunk with no choices
            out.append(self.event([], usage=usage(g)))
        return out + ["data: [DONE]\n\n"]
