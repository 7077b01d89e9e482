"""What every request passes on its way in and out: who may ask, the API key, the size limit and
the metrics.

`Gate` is ASGI middleware in front of the app. A server without an API key answers only requests
addressed to it by a loopback name (Host: 127.0.0.1, localhost, [::1], or serve.allowed_hosts),
so a web page cannot reach it through DNS rebinding; a request whose Origin is another site is
403 whatever the key (no browser page but the server's own may drive it), and a POST must say
Content-Type: application/json (415), which a cross-site form or a `no-cors` fetch cannot send
without the browser asking first. A missing or wrong key is 401 (compared in constant time;
/health stays open for probes), a Content-Length over serve.max_request_kb is 413 before the body
is read. A client that hangs up before its answer is ready has its request cancelled (the model
stops at its next token), streamed or not. Every answer is counted in `Metrics`, served at
/metrics in Prometheus' text format.
"""
from __future__ import annotations

import asyncio
import hmac
import threading
import time
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

from ..core.net import LOOPBACK, host_name, media_type
from .schema import error_body
from .worker import Worker

OPEN_PATHS = ("/health",)  # answered without an API key (load balancers, probes)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REJECTED = {401: "unauthorized", 403: "forbidden", 413: "too_large", 415: "not_json", 499: "client_closed",
            503: "queue_full", 504: "timeout"}


def label(**kv) -> str:
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Metrics:
    """Counters for /metrics (Prometheus text format), updated from any thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list] = {}    # endpoint -> [bucket counts..., sum, count]
        self.tokens = {"prompt": 0, "completion": 0}
        self.rejected = dict.fromkeys(REJECTED.values(), 0)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            row = self.latency.setdefault(endpoint, [0] * len(BUCKETS) + [0.0, 0])
            for i, b in enumerate(BUCKETS):
                row[i] += seconds <= b
            row[-2] += seconds
            row[-1] += 1
            if status in REJECTED:
                self.rejected[REJECTED[status]] += 1

    def count_tokens(self, prompt: int, completion: int) -> None:
        with self.lock:
            self.tokens["prompt"] += prompt
            self.tokens["completion"] += completion

    def render(self, worker: Worker, model: str, backend: str) -> str:
        out = []

        def family(name: str, kind: str, help_: str, rows: list[tuple[str, object]]) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
            out.extend(f"{name}{labels} {value}" for labels, value in rows)

        with self.lock:
            family("taskling_requests_total", "counter", "HTTP requests answered, by endpoint and status.",
                   [(label(endpoint=e, status=s), n) for (e, s), n in sorted(self.requests.items())])
            family("taskling_request_duration_seconds", "histogram", "Time from request to last byte.", [])
            for e, row in sorted(self.latency.items()):
                name = "taskling_request_duration_seconds"
                out.extend(f"{name}_bucket{label(endpoint=e, le=b)} {row[i]}" for i, b in enumerate(BUCKETS))
                out += [f"{name}_bucket{label(endpoint=e, le='+Inf')} {row[-1]}",
                        f"{name}_sum{label(endpoint=e)} {round(row[-2], 6)}", f"{name}_count{label(endpoint=e)} {row[-1]}"]
            family("taskling_tokens_total", "counter", "Tokens read (prompt) and written (completion).",
                   [(label(kind=k), v) for k, v in self.tokens.items()])
            family("taskling_rejected_total", "counter", "Requests refused or given up: foreign host or origin, no "
                   "key, too large, not JSON, client gone, queue full, timeout.",
                   [(label(reason=k), v) for k, v in self.rejected.items()])
        family("taskling_queue_depth", "gauge", "Requests waiting for the model.", [("", worker.waiting)])
        family("taskling_requests_running", "gauge", "Requests the model is working on.", [("", worker.running)])
        family("taskling_queue_capacity", "gauge", "Requests allowed to wait (serve.queue).", [("", worker.capacity)])
        family("taskling_uptime_seconds", "gauge", "Seconds since the server started.",
               [("", round(time.time() - self.started, 3))])
        family("taskling_model_info", "gauge", "The model served.", [(label(model=model, backend=backend), 1)])
        return "\n".join(out) + "\n"


class Gate:
    """ASGI middleware in front of every request: host, origin and content type, the API key,
    the Content-Length limit, a client that leaves, and the metrics (status and time to the
    last byte, streamed answers included)."""

    def __init__(self, app, metrics: Metrics, api_key: str | None, max_bytes: int, endpoints: set[str],
                 hosts: tuple[str, ...] = ()):
        self.app, self.metrics, self.max_bytes, self.endpoints = app, metrics, max_bytes, endpoints
        self.key = f"Bearer {api_key}".encode() if api_key else None
        self.hosts = set(LOOPBACK)
        self.allow_hosts(*hosts)

    def allow_hosts(self, *names: str) -> None:
        """More names a keyless server answers to (serve.allowed_hosts: a proxy's name in front of it)."""
        self.hosts |= {host_name(n if n.count(":") <= 1 or n.startswith("[") else f"[{n}]") for n in names}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, state = time.perf_counter(), {"status": 500, "recorded": False, "answered": False}

        def record() -> None:
            state["recorded"] = True
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.observe(endpoint, state["status"], time.perf_counter() - t0)

        async def watch(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["answered"] = True
                if not state["recorded"]:
                    record()  # before the last byte leaves: a client that saw the answer finds it counted
            await send(message)

        try:
            refusal = self.refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, watch)
            else:
                await self.until_client_leaves(scope, receive, watch, state)
        finally:
            if not state["recorded"]:
                record()

    async def until_client_leaves(self, scope, receive, send, state: dict) -> None:
        """Run the app; once it has read the whole body, wait for the client to hang up meanwhile,
        and if it does before the answer is complete, cancel the app (its job is cancelled in turn)."""
        body_read = asyncio.Event()
        gone = asyncio.Event()

        async def tracked():
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body"):
                body_read.set()
            return message

        async def wrapped_receive():
            if body_read.is_set():  # the watcher owns the socket's receive channel now
                await gone.wait()
                return {"type": "http.disconnect"}
            return await tracked()

        async def watcher():
            await body_read.wait()
            while not gone.is_set():
                if (await receive())["type"] == "http.disconnect":
                    gone.set()

        app = asyncio.ensure_future(self.app(scope, wrapped_receive, send))
        helpers = [asyncio.ensure_future(watcher()), asyncio.ensure_future(gone.wait())]
        try:
            await asyncio.wait({app, helpers[1]}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done() and not state["answered"]:
                state["status"] = 499  # nginx's "client closed request": nobody is left to answer
                app.cancel()
            try:
                await app
            except asyncio.CancelledError:
                if not gone.is_set():
                    raise
        finally:
            for task in (*helpers, app):
                if not task.done():
                    task.cancel()

    def refuse(self, scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.key and host and host_name(host) not in self.hosts:
            return forbidden(f"this server answers requests to {sorted(self.hosts)[0]} (or another loopback name) "
                             f"only, not to '{host[:80]}'; a proxy's name goes in serve.allowed_hosts")
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and (not host or urlsplit(origin).netloc.lower() != host.lower()):
            return forbidden(f"requests from web pages of {origin[:80]} are refused: only this server's own "
                             "pages, and clients that are not browsers, may call it")
        if self.key and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                what = "Incorrect API key provided" if given else "No API key provided"
                return JSONResponse(error_body(401, f"{what}: send the server's key as 'Authorization: Bearer KEY'",
                                               code="invalid_api_key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        size = headers.get(b"content-length", b"0")
        if size.isdigit() and int(size) > self.max_bytes:
            return JSONResponse(error_body(413, f"the request body is larger than {self.max_bytes // 1024} KB "
                                                "(serve.max_request_kb)", code="request_too_large"), status_code=413)
        if scope["method"] == "POST" and media_type(headers) != b"application/json":
            return JSONResponse(error_body(415, "send the request body as JSON with 'Content-Type: application/json'",
                                           code="unsupported_media_type"), status_code=415)
        return None


def forbidden(message: str) -> JSONResponse:
    return JSONResponse(error_body(403, message, code="forbidden"), status_code=403)
