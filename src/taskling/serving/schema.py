"""What a client may send, and the errors it gets back, in OpenAI's shapes.

The request bodies of /v1/chat/completions, /v1/completions and /v1/task as pydantic models
(`parse` checks one and refuses what this server cannot do: n > 1, logprobs, suffix), the body
read under serve.max_request_kb (`read_json`), and `APIError`, which every refusal and failure
becomes: {"error": {"message", "type", "param", "code"}} with its HTTP status.
"""
from __future__ import annotations

import json
import sys
import traceback
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import engine as eng
from ..core.errors import TasklingError


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
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int | None = 1
    logit_bias: dict[str, float] | None = None


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
    """The body as JSON; 413 past `limit` bytes even without a Content-Length."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is larger than {limit // 1024} KB (serve.max_request_kb)",
                           code="request_too_large")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise APIError(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise APIError(400, f"the request body is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") \
            from None


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
