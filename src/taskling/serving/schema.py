"""What a client may send, and the errors it gets back, in OpenAI's shapes.

The request bodies of /v1/chat/completions, /v1/completions and /v1/task as pydantic models
(`parse` checks one and refuses what this server cannot do: n > 1, logprobs, suffix), the body
read under serve.max_request_kb (`read_json`: UTF-8 JSON no deeper than MAX_JSON_DEPTH, no NaN,
no lone surrogate), and `APIError`, which every refusal and failure becomes:
{"error": {"message", "type", "param", "code"}} with its HTTP status. Bad input is always a 4xx.
"""
from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import engine as eng
from ..core.errors import TasklingError

MAX_JSON_DEPTH = 64            # nesting of a request body; OpenAI's own bodies need 5
MAX_STOPS = 4                  # as OpenAI: stop strings per request
MAX_BIAS = 300                 # as OpenAI: logit_bias entries per request
SURROGATE = re.compile("[\ud800-\udfff]")  # only a lone one survives json.loads: no text may carry it


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
    seed: int | None = Field(None, ge=-2**63, lt=2**64)
    stop: str | list[str] | None = Field(None, max_length=MAX_STOPS)
    stream: bool = False
    stream_options: dict | None = None
    n: int | None = 1
    logit_bias: dict[str, float] | None = Field(None, max_length=MAX_BIAS)


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
    """The body as JSON; 413 past `limit` bytes even without a Content-Length, 400 for anything
    that is not plain UTF-8 JSON of reasonable depth (see `check_json`)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is larger than {limit // 1024} KB (serve.max_request_kb)",
                           code="request_too_large")
    return loads(bytes(body))


def loads(body: bytes) -> object:
    """`body` as JSON under this server's rules; APIError(400) names what is wrong."""
    def no_constant(name: str):
        raise APIError(400, f"the request body is not valid JSON ({name} is not a JSON number)")

    try:
        value = json.loads(body, parse_constant=no_constant)
    except UnicodeDecodeError:
        raise APIError(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise APIError(400, f"the request body is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") \
            from None
    except RecursionError:  # the C scanner stops far below what would hurt, but not below what we allow
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    check_json(value)
    return value


def check_json(value: object) -> None:
    """Refuse (400) JSON nested deeper than MAX_JSON_DEPTH or holding a lone UTF-16 surrogate
    ("\\ud800" is valid JSON but no text: it cannot be encoded, tokenised or answered)."""
    stack: list[tuple[object, str, int]] = [(value, "body", 1)]
    while stack:
        v, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels (at {where})")
        if isinstance(v, str):
            if SURROGATE.search(v):
                raise APIError(400, f"{where}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text; "
                                    "send the character's full pair or UTF-8", param=where)
        elif isinstance(v, dict):
            for k, x in v.items():
                if SURROGATE.search(k):
                    raise APIError(400, f"{where}: a key holds a lone UTF-16 surrogate", param=where)
                stack.append((x, f"{where}.{k[:40]}"[:120], depth + 1))  # a place to name, kept short
        elif isinstance(v, list):
            stack.extend((x, f"{where}[{i}]"[:120], depth + 1) for i, x in enumerate(v))


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
