"""The `openai` backend: any OpenAI-compatible server (vLLM, Ollama, llama.cpp
server, hosted APIs). One line in taskling.yaml:

    teacher: {backend: openai, base_url: http://127.0.0.1:11434/v1, model: qwen2.5:7b}

Requests go out concurrently (`teacher.concurrency` in flight) over one
keep-alive connection pool. A request that meets a 429, a 5xx, a timeout, a
dropped connection or a reply that is not a chat completion is retried with
exponential backoff and jitter, waiting as long as a Retry-After header asks.
When the server looks down (several failures in a row) a circuit breaker
stops all traffic, probes with one request now and then, and gives up after
`teacher.down_after_s` without burning the retry budget of every request,
saying every few seconds that it waits. Before any work, `probe()` asks the
server's /models once, so a server that is not there stops the stage in
seconds. A wrong API key or an unknown model stops at once with a plain
message; Ctrl-C cancels what is in flight and closes the pool quietly.

Document text leaves the machine only when `teacher.allow_remote` says so.
"""
from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import os
import random
import socket
import sys
import time
from typing import Callable
from urllib.parse import urlparse

from ...core.config import ModelCfg
from ...core.errors import TasklingError, TeacherUnavailable
from . import Capabilities, OnResult, Request, Result, estimate_tokens, register

BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
BREAKER_FAILURES = 5            # failures in a row (across requests) that open the circuit
BREAKER_COOLDOWN_S = (1.0, 30.0)  # first pause, longest pause while open
RETRYABLE = {"timeout", "connection", "rate_limit", "server_error", "malformed", "wrong_fields"}
WAIT_NOTICE_S = 5.0             # while the circuit is open, a line this often says so
PROBE_TIMEOUT_S = 5.0           # the probe before a stage: connect and read within this


def is_local(url: str) -> bool:
    """Whether `url` points at this machine (loopback, localhost or one of its own names/addresses)."""
    host = (urlparse(url).hostname or "").lower()
    if host in ("localhost", "ip6-localhost") or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
        if ip.is_loopback:
            return True
    except ValueError:
        ip = None
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    if host in names:
        return True
    if ip is not None:
        try:
            own = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            own = set()
        return host in own
    return False


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Breaker:
    """Closed → open after BREAKER_FAILURES failures in a row; while open every
    request waits; after a cooldown one probe goes through (half-open); its
    success closes the circuit, its failure re-opens it with a longer pause.
    A 429's Retry-After pauses everyone for that long too."""

    def __init__(self, down_after_s: float, url: str, say: Callable[[str], None] | None = None):
        self.down_after_s, self.url = down_after_s, url
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.noticed = 0.0         # monotonic time of the last waiting line
        self.failures = 0
        self.open_until = 0.0      # monotonic time before which nobody sends
        self.down_since: float | None = None
        self.cooldown = BREAKER_COOLDOWN_S[0]
        self.probing = False
        self.opened = 0            # times the circuit opened (reported)
        self.paused_s = 0.0
        self.last = ""             # the latest failure, for the message when giving up

    async def wait(self) -> bool:
        """Wait until a request may go; True when it is the half-open probe."""
        while True:
            now = time.monotonic()
            if self.down_since is not None and now - self.down_since > self.down_after_s:
                raise TeacherUnavailable(
                    f"teacher server {self.url} has not answered properly for {self.down_after_s:.0f} s "
                    f"(last: {self.last[:300]}); stopped. "
                    "Every finished call is kept in .taskling/calls.db: start the server and run the same command again")
            if self.down_since is not None and now - self.noticed >= WAIT_NOTICE_S:
                # Silence while waiting looks like a hang: say what is waited for, and for how long at most.
                self.noticed = now
                if now - self.down_since >= 1.0:
                    self.say(f"teacher server {self.url} not answering for {now - self.down_since:.0f} s "
                             f"(last: {self.last[:120]}); waiting up to teacher.down_after_s="
                             f"{self.down_after_s:.0f} s, Ctrl-C to stop")
            if now < self.open_until:
                pause = min(self.open_until - now, 1.0)
                self.paused_s += pause
                await asyncio.sleep(pause)
                continue
            if self.down_since is None:
                return False
            if not self.probing:
                self.probing = True
                return True
            await asyncio.sleep(0.05)

    def success(self, probe: bool) -> None:
        self.failures = 0
        if self.down_since is not None:
            self.down_since, self.cooldown = None, BREAKER_COOLDOWN_S[0]
        if probe:
            self.probing = False

    def failure(self, kind: str, probe: bool) -> None:
        if probe:
            self.probing = False
        if kind == "rate_limit":
            return  # the server is up, only busy; handled by pause()
        self.failures += 1
        if self.failures >= BREAKER_FAILURES or probe:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
                self.opened += 1
            else:
                self.cooldown = min(self.cooldown * 2, BREAKER_COOLDOWN_S[1])
            self.open_until = max(self.open_until, now + self.cooldown)

    def pause(self, seconds: float) -> None:
        self.open_until = max(self.open_until, time.monotonic() + seconds)


class Fatal(Exception):
    pass


@register("openai")
class OpenAIBackend:
    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        if not cfg.base_url:
            raise TasklingError("teacher.base_url is required for the openai backend, e.g. http://127.0.0.1:11434/v1")
        if not is_local(cfg.base_url) and not cfg.allow_remote:
            raise TasklingError(
                f"teacher.base_url {cfg.base_url} is not on this machine: taskling will not send your documents "
                "there unless taskling.yaml says so with teacher.allow_remote: true")
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if cfg.api_key_env and not key:
            raise TasklingError(f"teacher.api_key_env: the environment variable {cfg.api_key_env} is not set")
        self.cfg, self.name, self.base_url = cfg, cfg.model, cfg.base_url.rstrip("/")
        self.key = key
        self.capabilities = Capabilities(batching=True, logprobs=True, json_schema=cfg.json_mode,
                                         concurrency=cfg.concurrency)
        # How a JSON schema is asked for; servers differ, so fall back on a 400 once and remember.
        self.schema_styles = ["json_schema", "json_object", "none"] if cfg.json_mode else ["none"]
        self.breaker = Breaker(cfg.down_after_s, self.base_url)
        self.loop = asyncio.new_event_loop()
        self.client = None
        self.rng = random.Random(0)

    def describe(self) -> dict:
        return {"backend": "openai", "model": self.name, "base_url": self.base_url}

    def probe(self) -> None:
        """Ask the server's /models once, within seconds: a server that cannot be reached raises
        TeacherUnavailable now rather than after teacher.down_after_s of retries. Any HTTP reply means the
        server is there (its errors are judged on the first real request); a slow one is only mentioned."""
        import httpx

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        limit = min(PROBE_TIMEOUT_S, self.cfg.timeout_s)
        try:
            httpx.get(f"{self.base_url}/models", headers=headers, timeout=httpx.Timeout(limit))
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            why = "connection refused" if "refused" in str(e).lower() else (str(e) or type(e).__name__)
            raise TeacherUnavailable(
                f"teacher server {self.base_url} cannot be reached ({why}); start it, or fix teacher.base_url "
                "in taskling.yaml, then run the same command again") from None
        except httpx.TimeoutException:
            self.breaker.say(f"teacher server {self.base_url} took over {limit:g} s to list its models; "
                             "going on (a line follows every few seconds while it does not answer)")
        except httpx.HTTPError:
            pass  # an odd reply is still a reply: the first real request judges it

    def health(self) -> dict:
        return {"circuit_opened": self.breaker.opened, "paused_s": round(self.breaker.paused_s, 1),
                "schema_style": self.schema_styles[0]}

    # -- one request -----------------------------------------------------------------------------------------
    def _body(self, r: Request) -> dict:
        body = {"model": self.name, "messages": r.messages, "max_tokens": r.max_tokens,
                "temperature": r.temperature, "seed": r.seed}
        if r.stop:
            body["stop"] = list(r.stop)
        style = self.schema_styles[0]
        if r.json_schema is not None and style == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": r.json_schema, "strict": True}}
        elif r.json_schema is not None and style == "json_object":
            body["response_format"] = {"type": "json_object", "schema": r.json_schema}
        return body

    def _fatal(self, status: int, text: str) -> str | None:
        msg = _error_message(text)
        if status in (401, 403):
            where = f"the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env else \
                "no API key was sent (set teacher.api_key_env)"
            return f"teacher server {self.base_url} refused the API key (HTTP {status}: {msg}); check {where}"
        if status == 404:
            if "model" in msg.lower():
                return f"teacher server {self.base_url} does not know the model '{self.name}' ({msg}); check teacher.model"
            return (f"teacher server {self.base_url} has no /chat/completions (HTTP 404); "
                    "teacher.base_url usually ends in /v1")
        return None

    async def _one(self, r: Request) -> Result:
        import httpx

        attempts: list[dict] = []
        t_start = time.perf_counter()
        while True:
            probe = await self.breaker.wait()
            style = self.schema_styles[0]
            body = self._body(r)
            t0 = time.perf_counter()
            status, text, kind, detail, retry_after = None, "", None, "", None
            try:
                resp = await self.client.post("/chat/completions", json=body)
                status, text = resp.status_code, resp.text
            except httpx.TimeoutException:
                kind, detail = "timeout", f"no reply within {self.cfg.timeout_s:g} s"
            except httpx.TransportError as e:
                kind, detail = "connection", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if kind is None and status == 200:
                try:
                    data = json.loads(text)
                    choice = data["choices"][0]
                    content = choice["message"]["content"] or ""
                except json.JSONDecodeError:
                    kind, detail = "malformed", "the reply is not JSON (truncated or an error page)"
                except (KeyError, IndexError, TypeError):
                    kind, detail = "wrong_fields", "the reply is JSON but not a chat completion (no choices[0].message)"
                else:
                    self.breaker.success(probe)
                    usage = data.get("usage") or {}
                    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
                    estimated = p is None or c is None
                    if estimated:
                        p = estimate_tokens(" ".join(str(m.get("content", "")) for m in r.messages))
                        c = estimate_tokens(content)
                    return Result(content, int(p), int(c), time.perf_counter() - t0,
                                  finish_reason=choice.get("finish_reason") or "stop",
                                  usage_estimated=estimated, attempts=attempts)
            elif kind is None:
                fatal = self._fatal(status, text)
                if fatal:
                    raise Fatal(fatal)
                if status == 429:
                    kind, retry_after = "rate_limit", retry_after_s(resp.headers.get("retry-after"))
                    detail = "rate limited" + (f"; Retry-After {retry_after:g} s" if retry_after is not None else "")
                    if retry_after is not None:
                        self.breaker.pause(retry_after)
                elif ("response_format" in body and len(self.schema_styles) > 1 and (
                        "response_format" in text or (status in (400, 422) and "schema" in text.lower()))):
                    # The server does not take this way of asking for JSON: try the next, remember it.
                    if self.schema_styles[0] == style:  # (another request may have moved on already)
                        self.schema_styles.pop(0)
                    self.breaker.success(probe)
                    continue
                elif status >= 500:
                    kind, detail = "server_error", f"HTTP {status}: {_error_message(text)}"
                else:
                    self.breaker.success(probe)
                    return Result(text, latency_s=time.perf_counter() - t_start, attempts=attempts,
                                  error=f"HTTP {status}: {_error_message(text)}", error_kind="bad_request")
            self.breaker.failure(kind, probe)
            self.breaker.last = detail
            # A probe failing while the circuit is open costs this request no retry: the server is down.
            attempts.append({"kind": kind, "status": status, "detail": detail, "body": text, "probe": probe})
            if sum(not a["probe"] for a in attempts) > self.cfg.max_retries:
                last = attempts.pop()
                return Result(text, latency_s=time.perf_counter() - t_start, attempts=attempts,
                              error=f"{detail} (after {len(attempts) + 1} attempts)", error_kind=last["kind"])
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (len(attempts) - 1)) * self.rng.uniform(0.5, 1.5)
            await asyncio.sleep(max(delay, retry_after or 0.0))

    # -- a batch ---------------------------------------------------------------------------------------------
    async def _all(self, requests: list[Request], on_result: OnResult | None) -> list[Result]:
        import httpx

        if self.client is None:
            n = self.cfg.concurrency
            headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
            self.client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers,
                timeout=httpx.Timeout(self.cfg.timeout_s, connect=min(10.0, self.cfg.timeout_s)),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
        sem = asyncio.Semaphore(self.cfg.concurrency)
        out: list[Result | None] = [None] * len(requests)

        async def run(i: int) -> None:
            async with sem:
                out[i] = await self._one(requests[i])
            if on_result:
                on_result(i, out[i])

        tasks = [asyncio.ensure_future(run(i)) for i in range(len(requests))]
        try:
            await asyncio.gather(*tasks)
        except Fatal as e:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise TeacherUnavailable(str(e)) from None
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return out  # type: ignore[return-value]

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Result]:
        main = asyncio.ensure_future(self._all(requests, on_result), loop=self.loop)
        try:
            return self.loop.run_until_complete(main)
        except KeyboardInterrupt:
            # Ctrl-C lands outside the coroutine: cancel it here, inside the loop, so no task or connection
            # is left to complain later about a closed loop; the CLI then prints its one line.
            main.cancel()
            self.loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
            self.close()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self.client is not None:
            self.loop.run_until_complete(self.client.aclose())
            self.client = None
        self.loop.close()


def _error_message(text: str) -> str:
    """The message of an OpenAI-style error body, or the start of the body."""
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (json.JSONDecodeError, AttributeError):
        pass
    return text.strip()[:200] or "(empty body)"
