"""The fault server: what httpx and the official openai client see for a normal
reply, a JSON-schema reply, each fault, auth and model errors, and load."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import at_a_terminal
from taskling.teacher.faults import FAULTS, FaultServer, main

DOC = ("The json_extract function returns a value from a JSON document in SQLite. Full-text search uses the "
       "MATCH operator and the bm25 ranking function to order results by relevance.\nConnection.execute runs "
       "SQL; row_factory changes how rows come back, and executemany repeats one statement for many rows.")
MESSAGES = [{"role": "system", "content": "Write one question a user could ask about the document."},
            {"role": "user", "content": f'Here is a document.\n<document id="7" source="sqlite.md">{DOC}</document>'}]
SCHEMA = {"type": "object", "required": ["question", "kind", "tags", "pairs"], "properties": {
    "question": {"type": "string"},
    "kind": {"type": "string", "enum": ["howto", "reference", "concept"]},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    "pairs": {"type": "array", "minItems": 4, "items": {"type": "object", "properties": {
        "answer": {"type": ["string", "null"]}, "label": {"enum": ["yes", "no", "maybe"]}}}},
    "score": {"type": "integer"}, "grounded": {"type": "boolean"}, "version": {"const": 2}}}


def chat(**extra) -> bytes:
    return json.dumps({"model": "toy-teacher", "messages": MESSAGES, **extra}).encode()


def post(srv: FaultServer, body: bytes, timeout: float = 5.0, **headers: str) -> httpx.Response:
    return httpx.post(srv.url + "/chat/completions", content=body, timeout=timeout,
                      headers={"Content-Type": "application/json", **headers})


def client(srv: FaultServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=kw.pop("api_key", "x"), max_retries=0, **kw)


def test_normal_completion_has_content_grounded_in_the_document_and_usage():
    with FaultServer() as srv:
        models = client(srv).models.list()
        r = client(srv).chat.completions.create(model="toy-teacher", messages=MESSAGES)
        again = client(srv).chat.completions.create(model="toy-teacher", messages=MESSAGES)
    assert [m.id for m in models.data] == ["toy-teacher"]
    text = r.choices[0].message.content
    question, answer = text.split("\nAnswer: ")
    assert question.startswith("Question: How do I use ") and answer in DOC and len(answer.split()) == 8
    assert again.choices[0].message.content == text  # deterministic from the request
    prompt_words = sum(len(m["content"].split()) for m in MESSAGES)
    assert r.usage.prompt_tokens == prompt_words
    assert r.usage.completion_tokens == len(text.split())
    assert r.usage.total_tokens == prompt_words + len(text.split())
    assert r.choices[0].finish_reason == "stop" and r.model == "toy-teacher"
    assert srv.stats["ok"] == 2


def test_json_schema_reply_validates_against_the_schema():
    fmt = {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA}}
    with FaultServer() as srv:
        r = client(srv).chat.completions.create(model="toy-teacher", messages=MESSAGES, response_format=fmt)
    obj = json.loads(r.choices[0].message.content)
    assert set(obj) == set(SCHEMA["properties"])
    assert obj["kind"] in SCHEMA["properties"]["kind"]["enum"]
    assert len(obj["tags"]) == 2 and len(obj["pairs"]) == 4
    assert all(set(p) == {"answer", "label"} and p["label"] in ("yes", "no", "maybe") for p in obj["pairs"])
    assert len({p["label"] for p in obj["pairs"]}) > 1  # enum picks vary across array items
    strings = [obj["question"], *obj["tags"], *(p["answer"] for p in obj["pairs"])]
    assert all(isinstance(s, str) and s in DOC and 6 <= len(s.split()) <= 12 for s in strings), strings
    assert len(set(strings)) == len(strings)  # each from its own offset
    assert (obj["score"], obj["grounded"], obj["version"]) == (1, True, 2)


def test_json_object_reply_with_and_without_a_schema():
    with FaultServer() as srv:
        plain = json.loads(post(srv, chat(response_format={"type": "json_object"})).json()
                           ["choices"][0]["message"]["content"])
        shaped = json.loads(post(srv, chat(response_format={"type": "json_object", "schema": SCHEMA})).json()
                            ["choices"][0]["message"]["content"])
    assert set(plain) == {"text"} and plain["text"] in DOC
    assert set(shaped) == set(SCHEMA["properties"])


def test_a_reply_function_replaces_the_toy_teacher():
    seen = []
    with FaultServer(reply=lambda req: seen.append(req) or "forty two") as srv:
        r = client(srv).chat.completions.create(model="toy-teacher", messages=MESSAGES, temperature=0.3, seed=5)
    assert r.choices[0].message.content == "forty two" and r.usage.completion_tokens == 2
    assert seen[0]["temperature"] == 0.3 and seen[0]["messages"] == MESSAGES


@pytest.mark.parametrize("fault", ["429", "500", "503"])
def test_error_faults_give_status_and_openai_error_body(fault):
    with FaultServer({fault: 1.0}, retry_after="7") as srv:
        r = post(srv, chat())
    assert r.status_code == int(fault)
    assert set(r.json()["error"]) >= {"message", "type", "code"}
    if fault == "429":
        assert r.headers["Retry-After"] == "7" and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert srv.stats[fault] == 1 and srv.stats["ok"] == 0


def test_slow_fault_makes_the_client_time_out():
    with FaultServer({"slow": 1.0}, slow_s=0.6) as srv:
        with pytest.raises(httpx.ReadTimeout):
            post(srv, chat(), timeout=0.15)
        with pytest.raises(openai.APITimeoutError):
            client(srv, timeout=0.15).chat.completions.create(model="toy-teacher", messages=MESSAGES)
    assert srv.stats["slow"] == 2


def test_drop_fault_closes_the_connection_without_a_response():
    with FaultServer({"drop": 1.0}) as srv:
        with pytest.raises(httpx.TransportError):
            post(srv, chat())
        with pytest.raises(openai.APIConnectionError):
            client(srv).chat.completions.create(model="toy-teacher", messages=MESSAGES)
    assert srv.stats["drop"] == 2


def test_truncated_fault_sends_half_a_body():
    import socket

    with FaultServer({"truncated": 1.0}) as srv:
        # httpx sees the promised length broken: the connection closes before the body is whole
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete|without sending complete"):
            post(srv, chat())
        # on the wire: a 200 whose Content-Length promises twice what comes before the close
        host, port = srv.url.split("//")[1].split("/")[0].split(":")
        body = chat()
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    head, _, sent = raw.partition(b"\r\n\r\n")
    promised = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert len(sent) == promised // 2 and sent.startswith(b'{"')  # the first half of a completion
    with pytest.raises(json.JSONDecodeError):
        json.loads(sent)
    assert srv.stats["truncated"] == 2


def test_malformed_wrong_fields_and_empty_faults():
    with FaultServer({"malformed": 1.0}) as srv:
        r = post(srv, chat())
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.content)
        srv.set_rates({"wrong_fields": 1.0})
        r = post(srv, chat())
        assert r.status_code == 200 and "choices" not in r.json() and r.json()["result"]
        srv.set_rates({"empty": 1.0})
        r = client(srv).chat.completions.create(model="toy-teacher", messages=MESSAGES)
        assert r.choices[0].message.content == "" and r.usage.completion_tokens == 0
        srv.set_rates({})
        assert post(srv, chat()).json()["choices"][0]["message"]["content"]
    assert {k: srv.stats[k] for k in ("malformed", "wrong_fields", "empty", "ok")} == dict.fromkeys(
        ("malformed", "wrong_fields", "empty", "ok"), 1)


def test_wrong_key_unknown_model_and_bad_bodies_are_refused():
    with FaultServer({"500": 1.0}, api_key="sekrit") as srv:
        with pytest.raises(openai.AuthenticationError) as e:
            client(srv, api_key="wrong").chat.completions.create(model="toy-teacher", messages=MESSAGES)
        assert e.value.code == "invalid_api_key"
        assert post(srv, chat()).status_code == 401  # no key at all
        assert httpx.get(srv.url + "/models").status_code == 401
        assert httpx.get(srv.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
        ok = {"Authorization": "Bearer sekrit"}
        with pytest.raises(openai.NotFoundError) as e:
            client(srv, api_key="sekrit").chat.completions.create(model="gpt-9", messages=MESSAGES)
        assert e.value.code == "model_not_found" and "gpt-9" in str(e.value)
        assert post(srv, b"not json", **ok).status_code == 400
        assert post(srv, json.dumps({"model": "toy-teacher", "messages": []}).encode(), **ok).status_code == 400
        streamed = post(srv, chat(stream=True), **ok)
        assert streamed.status_code == 400 and "streaming is not supported" in streamed.json()["error"]["message"]
        assert post(srv, chat(), **ok).status_code == 500  # faults come only after the checks
    stats = srv.stats
    assert (stats["unauthorized"], stats["unknown_model"], stats["bad_request"], stats["500"]) == (2, 1, 3, 1)


def test_stats_and_log_match_what_the_client_saw():
    bodies = [chat(seed=i) for i in range(40)]
    with FaultServer({"429": 0.3, "503": 0.2}, seed=1) as srv:
        with httpx.Client(timeout=5) as http:
            codes = [http.post(srv.url + "/chat/completions", content=b,
                               headers={"Content-Type": "application/json"}).status_code for b in bodies]
    seen = {"ok": codes.count(200), "429": codes.count(429), "503": codes.count(503)}
    assert all(n > 0 for n in seen.values()) and sum(seen.values()) == 40
    assert {k: srv.stats[k] for k in seen} == seen
    log = srv.log
    assert [row["fingerprint"] for row in log] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert [row["outcome"] for row in log] == [{200: "ok", 429: "429", 503: "503"}[c] for c in codes]
    assert all(a["t"] <= b["t"] for a, b in zip(log, log[1:]))


def outcomes(seed: int, n: int = 30) -> list[str]:
    with FaultServer({"429": 0.2, "500": 0.2, "empty": 0.2}, seed=seed) as srv, httpx.Client(timeout=5) as http:
        for _ in range(n):
            http.post(srv.url + "/chat/completions", content=chat(), headers={"Content-Type": "application/json"})
    return [row["outcome"] for row in srv.log]


def test_rates_are_reproducible_with_the_same_seed():
    first = outcomes(seed=3)
    assert outcomes(seed=3) == first
    assert outcomes(seed=4) != first
    assert set(first) == {"ok", "429", "500", "empty"}


def test_bad_rates_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="unknown fault '404'.*429"):
        FaultServer({"404": 0.5})
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultServer({"429": 0.7, "500": 0.5})
    assert set(FAULTS) <= set(FaultServer().stats)


def test_concurrent_requests_overlap():
    with FaultServer(latency_s=0.2) as srv, httpx.Client(timeout=10) as http:
        def one(i: int) -> int:
            return http.post(srv.url + "/chat/completions", content=chat(seed=i),
                             headers={"Content-Type": "application/json"}).status_code
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(one, range(32)))
    assert codes == [200] * 32
    assert srv.stats["ok"] == 32 and srv.stats["max_in_flight"] > 1


def test_cli_serves_and_rejects_bad_rates(capsys):
    with pytest.raises(SystemExit):
        main(["--rate", "nope=0.5"])
    assert "unknown fault 'nope'" in capsys.readouterr().err
    proc = subprocess.Popen([sys.executable, "-m", "taskling.teacher.faults", "--port", "0", "--rate", "503=1"],
                            stdout=subprocess.PIPE, text=True, preexec_fn=at_a_terminal)
    try:
        url = proc.stdout.readline().split()[3]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert httpx.post(url + "/chat/completions", content=chat(), timeout=5).status_code == 503
        proc.send_signal(signal.SIGINT)
        assert json.loads(proc.communicate(timeout=120)[0])["503"] == 1  # its stats on the way out
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def deaf_to_ctrl_c() -> None:
    """In the child before it starts: SIGINT ignored (as in a background job) and blocked (as Ray's launcher leaves it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def test_ctrl_c_stops_the_cli_though_it_inherited_sigint_ignored_and_blocked():
    proc = subprocess.Popen([sys.executable, "-m", "taskling.teacher.faults", "--port", "0"], stdout=subprocess.PIPE,
                            text=True, preexec_fn=deaf_to_ctrl_c)
    try:
        assert proc.stdout.readline().startswith("fault server at http://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip() == "{}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_stops_the_cli_whichever_of_its_threads_it_reaches():
    """The kernel gives a process's Ctrl-C to any of its threads. Sent to the server's thread, it left the
    main thread blocked for ever in a wait without a timeout (seen once in a loaded `make test`)."""
    import ctypes
    import os

    proc = subprocess.Popen([sys.executable, "-m", "taskling.teacher.faults", "--port", "0"], stdout=subprocess.PIPE,
                            text=True, preexec_fn=at_a_terminal)
    try:
        assert proc.stdout.readline().startswith("fault server at http://127.0.0.1:")
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert others, "the server runs in a thread of its own"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(234, proc.pid, others[0], signal.SIGINT) == 0  # tgkill(2) on x86-64: that thread only
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip() == "{}"  # stopped, its (empty) stats on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
