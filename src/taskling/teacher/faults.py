"""An OpenAI-compatible server that misbehaves on purpose, for tests and
benchmarks of taskling's teacher client.

`FaultServer` answers `POST /v1/chat/completions` like a small teacher, except
that a seeded random share of requests fail the way real endpoints fail:

    429           rate limited, with a Retry-After header
    500, 503      server error, overloaded
    slow          answers only after `slow_s` (the client should time out first)
    drop          closes the connection without sending a response
    truncated     200 whose body stops halfway (Content-Length promises more)
    malformed     200 with an HTML body that is not JSON
    wrong_fields  200 with JSON that has no "choices"
    empty         a normal completion whose content is ""

It also answers 401 (wrong key), 404 (unknown model) and 400 (bad body). Reply
text comes from `reply(request)` or from a toy teacher that copies runs of words
out of the request's <document>, so answers are grounded and deterministic.

    python -m taskling.teacher.faults --port 8000 --rate 429=0.1 --rate 500=0.05 --latency 0.05
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import socket
import socketserver
import sys
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULTS = ("429", "500", "503", "slow", "drop", "truncated", "malformed", "wrong_fields", "empty")
OUTCOMES = ("ok", *FAULTS, "unauthorized", "unknown_model", "bad_request")
ERRORS = {  # outcome: status, message, type, code
    "429": (429, "Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    "500": (500, "The server had an error while processing your request.", "server_error", None),
    "503": (503, "The engine is currently overloaded, please try again later.", "server_error", "overloaded"),
    "unauthorized": (401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
}
DOCUMENT = re.compile(r"<document(-[0-9a-f]+|)(?:\s[^>]*)?>(.*?)</document\1>", re.DOTALL)  # as core.delimit.BLOCK


def _text(content: Any) -> str:
    """A message's text, whether a string or a list of OpenAI content parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


class _Source:
    """Exact runs of consecutive words of a text, at hash-derived offsets."""

    def __init__(self, text: str, digest: str):
        self.text, self.spans = text, [m.span() for m in re.finditer(r"\S+", text)]
        self.rng = random.Random(int(digest, 16))
        self.starts: list[int] = []
        self.enum_next: dict[int, int] = {}

    def run(self, lo: int, hi: int) -> str:
        n = len(self.spans)
        if n <= lo:
            return self.text[self.spans[0][0]:self.spans[-1][1]] if n else ""
        if not self.starts:  # every run starts at a fresh offset until all are used
            self.starts = list(range(n - lo + 1))
            self.rng.shuffle(self.starts)
        s = self.starts.pop()
        e = min(s + self.rng.randint(lo, hi), n)
        return self.text[self.spans[s][0]:self.spans[e - 1][1]]

    def word(self) -> str:
        if not self.spans:
            return "it"
        w = self.text[slice(*self.spans[self.rng.randrange(len(self.spans))])]
        return re.sub(r"^\W+|\W+$", "", w) or w

    def pick(self, schema: dict) -> Any:
        """Enum values rotate from a hash-derived start, so array items differ."""
        options = schema["enum"]
        k = self.enum_next.get(id(schema), self.rng.randrange(len(options)))
        self.enum_next[id(schema)] = k + 1
        return options[k % len(options)]


def _instance(schema: dict, src: _Source, root: dict, depth: int = 0) -> Any:
    """A value that validates against a (simple) JSON schema."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and depth < 8:
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return _instance(node, src, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return src.pick(schema)
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _instance(options[0], src, root, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if t == "object":
        return {k: _instance(v, src, root, depth + 1) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = schema["minItems"] if "minItems" in schema else min(3, schema.get("maxItems", 3))
        return [_instance(schema.get("items", {}), src, root, depth + 1) for _ in range(n)]
    if t == "string":
        return src.run(6, 12)
    return {"integer": 1, "number": 1, "boolean": True}.get(t)


def toy_reply(request: dict, digest: str) -> str:
    """The built-in teacher: words copied from the first <document> of the last
    user message (or the whole message), shaped by `response_format`."""
    users = [m for m in request.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    last = _text(users[-1].get("content")) if users else ""
    doc = DOCUMENT.search(last)
    src = _Source(doc.group(2) if doc else last, digest)
    fmt = request.get("response_format") or {}
    fmt = fmt if isinstance(fmt, dict) else {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else fmt.get("schema")
    if isinstance(schema, dict):
        return json.dumps(_instance(schema, src, schema))
    if fmt.get("type") == "json_object":
        return json.dumps({"text": src.run(6, 12)})
    return f"Question: How do I use {src.word()} with {src.word()}?\nAnswer: {src.run(8, 8)}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # room for 64+ clients connecting at once
    owner: FaultServer

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn, a DNS lookup that can hang offline
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client that gave up is normal here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from real endpoints
    timeout = 60  # idle keep-alive connections end eventually
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the second 40 ms
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # outcomes are in FaultServer.stats and .log

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.owner._lock:
            self.server.owner._conns.discard(self.connection)
        super().finish()

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)

    def _authorized(self) -> bool:
        key = self.server.owner.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def do_GET(self) -> None:
        fs, path = self.server.owner, self.path.split("?")[0].rstrip("/")
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models" and not self._authorized():
            self._error(*ERRORS["unauthorized"])
        elif path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": fs.model, "object": "model", "created": 0, "owned_by": "taskling-faults"}]})
        else:
            self._error(404, f"Unknown path {self.path}", "invalid_request_error", "not_found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"Unknown path {self.path}", "invalid_request_error", "not_found")
        fs = self.server.owner
        with fs._lock:
            fs._in_flight += 1
            fs._stats["max_in_flight"] = max(fs._stats["max_in_flight"], fs._in_flight)
        try:
            self._chat(fs, body)
        finally:
            with fs._lock:
                fs._in_flight -= 1

    def _chat(self, fs: FaultServer, body: bytes) -> None:
        fp = hashlib.sha256(body).hexdigest()
        if not self._authorized():
            fs._record(fp, "unauthorized")
            return self._error(*ERRORS["unauthorized"])
        try:
            req = json.loads(body)
        except ValueError:
            req = None
        messages = req.get("messages") if isinstance(req, dict) else None
        problem = ("the body is not a JSON object" if not isinstance(req, dict) else
                   "'messages' must be a non-empty list" if not isinstance(messages, list) or not messages else
                   "streaming is not supported by the fault server" if req.get("stream") else None)
        if problem or not isinstance(req, dict) or not isinstance(messages, list):
            fs._record(fp, "bad_request")
            return self._error(400, problem or "bad request", "invalid_request_error", None)
        if req.get("model") != fs.model:
            fs._record(fp, "unknown_model")
            return self._error(404, f"The model '{req.get('model')}' does not exist", "invalid_request_error",
                               "model_not_found")
        outcome = fs._draw()
        fs._record(fp, outcome)
        if outcome in ERRORS:
            return self._error(*ERRORS[outcome], headers={"Retry-After": fs.retry_after} if outcome == "429" else None)
        if outcome == "drop":
            self.close_connection = True
            return self.connection.shutdown(socket.SHUT_RDWR)
        if outcome == "malformed":
            return self._send(200, b"<html>upstream error</html>")
        text = "" if outcome == "empty" else fs.reply(req) if fs.reply else toy_reply(req, fp)
        if outcome == "wrong_fields":
            return self._json(200, {"id": f"chatcmpl-{fp[:24]}", "object": "chat.completion", "result": text})
        p = sum(len(_text(m.get("content")).split()) for m in messages if isinstance(m, dict))
        c = len(text.split())
        time.sleep(fs.slow_s if outcome == "slow" else fs.latency_s + fs.per_token_s * c)
        completion = {"id": f"chatcmpl-{fp[:24]}", "object": "chat.completion", "created": int(time.time()),
                      "model": fs.model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                      "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}
        data = json.dumps(completion).encode()
        if outcome == "truncated":
            self.close_connection = True
            return self._send(200, data[:len(data) // 2], length=len(data))
        self._send(200, data)


class FaultServer:
    """The server, its fault rates, and what it did: `stats` (counts by outcome,
    plus "max_in_flight") and `log` (one row per chat request)."""

    def __init__(self, rates: dict[str, float] | None = None, *, seed: int = 0, latency_s: float = 0.0,
                 per_token_s: float = 0.0, slow_s: float = 5.0, retry_after: str = "1", model: str = "toy-teacher",
                 api_key: str | None = None, reply: Callable[[dict], str] | None = None, port: int = 0):
        self.latency_s, self.per_token_s, self.slow_s, self.retry_after = latency_s, per_token_s, slow_s, retry_after
        self.model, self.api_key, self.reply, self.port = model, api_key, reply, port
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rates: dict[str, float] = {}
        self._stats = dict.fromkeys((*OUTCOMES, "max_in_flight"), 0)
        self._log: list[dict] = []
        self._in_flight = 0
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.set_rates(rates or {})

    def set_rates(self, rates: dict[str, float]) -> None:
        unknown = [k for k in rates if k not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULTS)}")
        if any(p < 0 for p in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {rates}")
        with self._lock:
            self._rates = dict(rates)

    def _draw(self) -> str:
        with self._lock:
            x = self._rng.random()
            for name, p in self._rates.items():
                if x < p:
                    return name
                x -= p
        return "ok"

    def _record(self, fp: str, outcome: str) -> None:
        with self._lock:
            self._stats[outcome] += 1
            self._log.append({"fingerprint": fp, "outcome": outcome, "t": time.monotonic()})

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    @property
    def log(self) -> list[dict]:
        with self._lock:
            return [dict(row) for row in self._log]

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the fault server is not running; call start() first")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FaultServer:
        self._httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:  # so kept-alive clients see the server go away
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m taskling.teacher.faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--rate", action="append", default=[], metavar="FAULT=P",
                    help=f"share of requests that fail this way (repeatable); faults: {', '.join(FAULTS)}")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every normal reply")
    ap.add_argument("--per-token", type=float, default=0.0, help="seconds added per completion word")
    ap.add_argument("--slow", type=float, default=5.0, help="seconds a 'slow' reply takes")
    ap.add_argument("--retry-after", default="1", help="Retry-After header of 429 replies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key-env", metavar="VAR", help="require the key held in this environment variable")
    ap.add_argument("--model", default="toy-teacher")
    args = ap.parse_args(argv)
    rates: dict[str, float] = {}
    for item in args.rate:
        name, _, p = item.partition("=")
        try:
            rates[name] = float(p)
        except ValueError:
            ap.error(f"--rate {item!r}: expected FAULT=P, e.g. 429=0.1")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        ap.error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    try:
        srv = FaultServer(rates, seed=args.seed, latency_s=args.latency, per_token_s=args.per_token,
                          slow_s=args.slow, retry_after=args.retry_after, model=args.model, api_key=api_key,
                          port=args.port).start()
    except (ValueError, OSError) as e:  # a bad rate, or the port is taken
        ap.error(str(e))
    # Ctrl-C stops it whatever it inherited: a process started from a background job has SIGINT ignored, and
    # one started by a process that blocked SIGINT (Ray's launcher does, in its children) has it blocked.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:  # from the first line on: a Ctrl-C right after it stops the server as one later does
        print(f"fault server at {srv.url} (model {srv.model}); Ctrl-C to stop", flush=True)
        # Woken twice a second: Ctrl-C may reach another of the process's threads (the server's), which leaves
        # a wait without a timeout blocked; Python runs the handler when this thread wakes.
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    print(json.dumps({k: v for k, v in srv.stats.items() if v}), flush=True)


if __name__ == "__main__":
    main()
