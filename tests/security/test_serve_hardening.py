"""taskling serve under attack, each test built from the attack it stops (issue 23): a schema whose
grammar would take the machine or crash the model thread, DNS rebinding and cross-site requests,
bodies that are valid JSON but no text (lone surrogates, deep nesting, NaN), logit_bias ids the
model does not have, a client that leaves before its answer, timed-out requests that would keep
their place in the queue. Everything runs on the real embedded student through real HTTP."""
from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import serving

from taskling.core.config import ServeCfg
from taskling.serving import target as targets
from taskling.serving.app import create_app
from taskling.serving.limits import MAX_REPEAT, check_schema, gbnf_depth
from taskling.serving.schema import APIError, loads
from taskling.serving.wire import logit_bias

INFO = {"name": "dev-router", "type": "classify", "labels": ["sqlite", "node", "python"], "max_new_tokens": 8,
        "system_prompt": "Route the question: sqlite, node or python.", "chat_template_kind": "chatml"}
ASK = {"model": "dev-router", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from taskling.student.models import resolve_gguf

    folder = tmp_path_factory.mktemp("model")
    (folder / "student.gguf").symlink_to(resolve_gguf("smollm2-135m-instruct"))
    (folder / "task.json").write_text(json.dumps(INFO))
    t = targets.resolve(str(folder / "student.gguf"), Path("."))
    e = targets.load(t)
    yield e, t
    e.close()


@pytest.fixture(scope="module")
def url(engine):
    e, t = engine
    with serving(create_app(e, t, ServeCfg(max_tokens=400, queue=2, timeout_s=900))) as u:  # no 504 at any load
        yield u


def post(url: str, body, **headers) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + "/v1/chat/completions", content=data, timeout=120,
                      headers={"Content-Type": "application/json", **headers})


# ---------------------------------------------------------------------------------------- grammar size
@pytest.mark.parametrize("schema,needle", [
    ({"type": "array", "items": {"type": "integer"}, "minItems": 10_000_000}, "minItems"),   # the issue's ~1 GB
    ({"type": "string", "maxLength": 1200}, "maxLength"),        # llama.cpp's parser overflowed its stack here
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}, "maxItems": 5000}}},
     "maxItems"),
    ({"type": "string", "pattern": "^a{300}$"}, "pattern"),
    ({"type": "string", "pattern": "^((a{100}){100}){100}$"}, "in all"),
    ({"type": "string", "pattern": "(" * 40 + "a" + ")" * 40}, "nests"),
    ({"$ref": "https://example.org/schema.json"}, "nothing is fetched"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}, "values"),
])
def test_a_schema_past_the_grammar_limits_is_refused_before_any_engine_sees_it(schema, needle):
    with pytest.raises(APIError) as e:
        check_schema(schema)
    assert e.value.status == 400 and needle in e.value.message and e.value.param == "response_format"


def test_ordinary_schemas_pass_and_the_depth_measure_ignores_literals():
    check_schema({"type": "object", "properties": {"city": {"type": ["string", "null"], "maxLength": MAX_REPEAT},
                                                   "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20}},
                  "required": ["city"], "additionalProperties": False})
    assert gbnf_depth('root ::= "((((" [(] x\nx ::= ("a" ("b")?)?') == 2


@pytest.mark.slow
def test_the_issue_s_schema_is_a_400_and_the_server_lives_on(url):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "items": {"type": "integer"}, "minItems": 10_000_000}}}
    r = post(url, {**ASK, "response_format": fmt})
    assert r.status_code == 400 and r.json()["error"]["code"] == "schema_too_complex"
    crash = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 5000}}}
    assert post(url, {**ASK, "response_format": crash}).status_code == 400
    ok = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 40}}}
    r = post(url, {**ASK, "response_format": ok, "max_tokens": 6})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith('"')
    assert httpx.get(url + "/health").json()["status"] == "ok"


# ---------------------------------------------------------------------------------------- who may ask
@pytest.mark.slow
def test_dns_rebinding_cross_site_and_non_json_posts_are_refused(url):
    port = url.rsplit(":", 1)[1]
    rebound = httpx.get(url + "/v1/models", headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 403 and "dev-router" not in rebound.text
    assert post(url, ASK, Host=f"attacker.example:{port}").status_code == 403
    assert post(url, ASK, Origin="http://attacker.example").status_code == 403
    assert post(url, ASK, Origin="null").status_code == 403
    # the blind CSRF of the issue: a form or no-cors fetch can only send text/plain and friends
    r = httpx.post(url + "/v1/chat/completions", content=json.dumps(ASK), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert post(url, ASK, Origin=f"http://127.0.0.1:{port}").status_code == 200     # its own page
    assert httpx.get(url + "/v1/models", headers={"Host": f"localhost:{port}"}).status_code == 200
    metrics = httpx.get(url + "/metrics").text
    assert 'taskling_rejected_total{reason="forbidden"} 4' in metrics
    assert 'taskling_rejected_total{reason="not_json"} 1' in metrics


def test_a_proxy_name_is_allowed_only_when_configured(engine):
    e, t = engine
    app = create_app(e, t, ServeCfg())
    scope = {"type": "http", "path": "/health", "method": "GET", "headers": [(b"host", b"api.internal:443")]}
    assert app.refuse(scope).status_code == 403
    app.allow_hosts("api.internal")
    assert app.refuse(scope) is None
    keyed = create_app(e, t, ServeCfg(), api_key="k")  # a key defeats rebinding: any Host, the key decides
    assert keyed.refuse(scope) is None


# ---------------------------------------------------------------------------------------- bad bodies are 4xx
@pytest.mark.parametrize("raw,needle", [
    (b'{"model": "dev-router", "messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
    (b'{"model": "dev-router", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "NaN"),
    (b"[" * 1000 + b"]" * 1000, "deeper"),
    (b"[" * 100_000 + b"]" * 100_000, "deeper"),
    (b'{"a": ' * 70 + b"1" + b"}" * 70, "deeper"),
])
def test_bodies_that_are_json_but_not_text_are_400(raw, needle):
    with pytest.raises(APIError) as e:
        loads(raw)
    assert e.value.status == 400 and needle in e.value.message


@pytest.mark.slow
def test_the_same_bodies_over_http_are_400_never_500(url):
    for raw in (b'{"model": "dev-router", "messages": [{"role": "user", "content": "\\udfff"}]}',
                b"[" * 1000 + b"]" * 1000, b'{"model": "dev-router", "messages": [], "seed": 1e400}'):
        assert post(url, raw).status_code == 400, raw[:60]
    big_seed = post(url, {**ASK, "seed": 2**63})
    assert big_seed.status_code == 200, big_seed.text  # any 64-bit seed maps onto llama.cpp's 32 bits


def test_logit_bias_ids_must_be_tokens_of_the_model_and_values_in_range():
    assert logit_bias({"5": -100, "7": 3.5}, 10) == {5: -100.0, 7: 3.5}
    for bad, needle in (({"-1": 1}, "not a token id"), ({"x": 1}, "not a token id"), ({"١": 1}, "not a token id"),
                        ({"10": 1}, "out of range"), ({"3": 101}, "outside -100..100"),
                        ({"3": float("nan")}, "outside")):
        with pytest.raises(APIError, match=needle):
            logit_bias(bad, 10)


@pytest.mark.slow
def test_logit_bias_out_of_range_is_a_400_over_http(url, engine):
    assert post(url, {**ASK, "logit_bias": {"-1": 5}}).status_code == 400
    r = post(url, {**ASK, "logit_bias": {str(engine[0].n_vocab): 5}})
    assert r.status_code == 400 and "out of range" in r.json()["error"]["message"]


# ---------------------------------------------------------------------------------------- clients that leave
def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(name)


@pytest.mark.slow
def test_a_non_streamed_request_stops_generating_when_its_client_leaves(url, engine):
    """The client hangs up mid-generation; the model thread must be free again long before the
    400 tokens it was asked for could have been written (no end token allowed)."""
    e, _ = engine
    body = json.dumps({**ASK, "max_tokens": 400, "logit_bias": {str(t): -100 for t in e.stop_ids}}).encode()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    before = metric(url, 'taskling_tokens_total{kind="completion"}')
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        while metric(url, "taskling_requests_running") == 0:  # the model is working on it
            time.sleep(0.05)
    while metric(url, "taskling_requests_running") == 1:
        time.sleep(0.05)
    assert 'taskling_rejected_total{reason="client_closed"} 1' in httpx.get(url + "/metrics").text
    # the model stopped where the client left: a whole answer would have added 400 tokens
    assert metric(url, 'taskling_tokens_total{kind="completion"}') - before < 400


def test_timed_out_requests_leave_the_queue():
    import asyncio

    from taskling.serving.worker import Job, Worker

    class Slow:
        lock = contextlib.nullcontext()

    async def main():
        loop = asyncio.get_running_loop()
        w = Worker(Slow(), capacity=2)
        gate = asyncio.Event()
        busy = Job(lambda job: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(), loop, 30)
        w.submit(busy)                        # the model thread is held by this one
        while w.running == 0:
            await asyncio.sleep(0.01)
        stale = [Job(lambda job: None, loop, 0.05) for _ in range(2)]
        for j in stale:
            w.submit(j)
        with pytest.raises(APIError) as full:
            w.submit(Job(lambda job: None, loop, 30))
        assert full.value.status == 503
        await asyncio.sleep(0.1)              # both waiting jobs are past their deadline now
        assert w.waiting == 0
        w.submit(Job(lambda job: None, loop, 30))  # their places are free: no 503
        gate.set()
        w.stop()
    asyncio.run(main())
