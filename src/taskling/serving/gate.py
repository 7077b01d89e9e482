"""What every request passes on its way in and out: the API key, the size limit and the metrics.

`Gate` is ASGI middleware in front of the app: a missing or wrong key is 401 (compared in
constant time; /health stays open for probes), a Content-Length over serve.max_request_kb is 413
before the body is read, and every answer is counted in `Metrics`, served at /metrics in
Prometheus' text format.
"""
from __future__ import annotations

import hmac
import threading
import time

from fastapi.responses import JSONResponse

from .schema import error_body
from .worker import Worker

OPEN_PATHS = ("/health",)  # answered without an API key (load balancers, probes)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REJECTED = {401: "unauthorized", 413: "too_large", 503: "queue_full", 504: "timeout"}


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
            family("taskling_rejected_total", "counter", "Requests refused: no key, too large, queue full, timeout.",
                   [(label(reason=k), v) for k, v in self.rejected.items()])
        family("taskling_queue_depth", "gauge", "Requests waiting for the model.", [("", worker.waiting)])
        family("taskling_requests_running", "gauge", "Requests the model is working on.", [("", worker.running)])
        family("taskling_queue_capacity", "gauge", "Requests allowed to wait (serve.queue).", [("", worker.capacity)])
        family("taskling_uptime_seconds", "gauge", "Seconds since the server started.",
               [("", round(time.time() - self.started, 3))])
        family("taskling_model_info", "gauge", "The model served.", [(label(model=model, backend=backend), 1)])
        return "\n".join(out) + "\n"


class Gate:
    """ASGI middleware in front of every request: the API key, the Content-Length limit,
    and the metrics (status and time to the last byte, streamed answers included)."""

    def __init__(self, app, metrics: Metrics, api_key: str | None, max_bytes: int, endpoints: set[str]):
        self.app, self.metrics, self.max_bytes, self.endpoints = app, metrics, max_bytes, endpoints
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, state = time.perf_counter(), {"status": 500, "recorded": False}

        def record() -> None:
            state["recorded"] = True
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.observe(endpoint, state["status"], time.perf_counter() - t0)

        async def watch(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") and not state["recorded"]:
                record()  # before the last byte leaves: a client that saw the answer finds it counted
            await send(message)

        try:
            refusal = self.refuse(scope)
            await (refusal or self.app)(scope, receive, watch)
        finally:
            if not state["recorded"]:
                record()

    def refuse(self, scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
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
        return None
