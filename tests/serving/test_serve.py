"""taskling serve and predict on the real embedded student (its f16 GGUF through
llama.cpp), spoken to with the official openai client and httpx over real sockets:
chat and completions (streamed and not), /v1/task for classify and extract, limits
(413, 503, 504, max_tokens), the API key, concurrency, bundles (tampered and hostile
ones refused; tests/e2e serves a real exported one offline), predict with resume; the transformers
backend on the tiny random model; target resolution and the stop-string buffer."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import socket
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from rich.console import Console

from taskling.serving import engine as eng
from taskling.serving import target as targets
from taskling.core.config import ServeCfg
from taskling.core.errors import TasklingError
from taskling.serving.app import create_app
from taskling.serving.outputs import task_outputs
from taskling.serving.serve import check_exposure, prepare
from conftest import serving

QUIET = Console(stderr=True, quiet=True)
LABELS = ["sqlite", "node", "python"]
CLASSIFY = {"name": "dev-router", "type": "classify", "labels": LABELS, "max_new_tokens": 16,
            "system_prompt": "Route the developer question to its manual. Answer with one label: sqlite, node, python.",
            "output_schema": None, "base_model": "smollm2-135m-instruct", "chat_template_kind": "chatml"}
SCHEMA = {"type": "object", "properties": {"city": {"type": ["string", "null"]}, "year": {"type": ["integer", "null"],
          "minimum": 0, "maximum": 3000}}, "required": ["city", "year"], "additionalProperties": False}
EXTRACT = {**CLASSIFY, "name": "city-year", "type": "extract", "labels": [], "output_schema": SCHEMA,
           "max_new_tokens": 48, "system_prompt": "Reply with a JSON object with the fields city and year."}
ASK = [{"role": "user", "content": "Name three colours."}]
CFG = ServeCfg(max_tokens=40, max_request_kb=4)


# -------------------------------------------------------------------------------------------- fixtures
@contextlib.contextmanager
def running(app):
    """A real uvicorn server for `app` on a loopback socket handed to it; its /v1 URL."""
    with serving(app) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def gguf() -> Path:
    from taskling.student.models import resolve_gguf

    return resolve_gguf("smollm2-135m-instruct")


def model_dir(base: Path, gguf: Path, info: dict) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "student.gguf").symlink_to(gguf)
    (base / "task.json").write_text(json.dumps(info))
    return base / "student.gguf"


@pytest.fixture(scope="module")
def classify_gguf(gguf, tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("classify"), gguf, CLASSIFY)


@pytest.fixture(scope="module")
def llama(classify_gguf):
    """One llama.cpp engine shared by every server below (each app has its own worker; the engine's lock
    keeps them from overlapping)."""
    engine = targets.load(targets.resolve(str(classify_gguf), Path(".")))
    yield engine
    engine.close()


def target(path: Path, info: dict) -> targets.Target:
    return targets.Target("llama.cpp", path, info, f"test {path}")


@pytest.fixture(scope="module")
def no_end(llama) -> dict:
    """logit_bias that bans every end-of-turn token: answers run to their max_tokens."""
    return {str(t): -100 for t in llama.stop_ids}


@pytest.fixture(scope="module")
def base_url(llama, classify_gguf):
    with running(create_app(llama, target(classify_gguf, CLASSIFY), CFG)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    # The client's patience is not what these tests measure: llama.cpp's threads spin while they wait for each
    # other, so on two cores shared with another worker's training 40 tokens took over 120 s (a third of loaded
    # runs failed here); pytest's --timeout still bounds a server that never answers.
    return openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=900)


def chat(client, **kw):
    return client.chat.completions.create(**{"model": "dev-router", "messages": ASK, "max_tokens": 24,
                                             "temperature": 0, **kw})


def root_of(url: str) -> str:
    return url.removesuffix("/v1")


slow = pytest.mark.slow  # the tests on the real embedded model


# -------------------------------------------------------------------------------------------- OpenAI API
@slow
def test_models_health_and_metrics(client, base_url):
    assert [m.id for m in client.models.list().data] == ["dev-router"]
    assert client.models.retrieve("dev-router").owned_by == "taskling"
    health = httpx.get(root_of(base_url) + "/health").json()
    assert health["model"] == "dev-router" and health["backend"] == "llama.cpp" and health["task"] == "classify"
    assert health["queue"] == {"waiting": 0, "running": 0, "capacity": 16} and health["uptime_s"] >= 0
    chat(client, max_tokens=4)
    text = httpx.get(root_of(base_url) + "/metrics").text
    assert '# TYPE taskling_requests_total counter' in text
    assert 'taskling_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert 'taskling_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}' in text
    completion = [ln for ln in text.splitlines() if ln.startswith('taskling_tokens_total{kind="completion"}')]
    assert completion and int(completion[0].split()[-1]) > 0
    assert "taskling_queue_depth 0" in text and 'taskling_rejected_total{reason="queue_full"} 0' in text


@slow
def test_chat_completion(client):
    r = chat(client)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "dev-router"
    text = r.choices[0].message.content
    assert isinstance(text, str) and text.strip() and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert chat(client).choices[0].message.content == text  # greedy: the same answer again


@slow
def test_chat_streams_token_by_token(client):
    want = chat(client, max_tokens=32)
    chunks = list(chat(client, max_tokens=32, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == want.choices[0].message.content
    assert len(pieces) >= min(5, want.usage.completion_tokens)  # one event per token, not one blob
    assert chunks[-2].choices[0].finish_reason == want.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.usage.completion_tokens


@slow
def test_completions_streamed_and_not(client):
    r = client.completions.create(model="dev-router", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text and r.usage.completion_tokens <= 8
    parts = list(client.completions.create(model="dev-router", prompt="The capital of France is", max_tokens=8,
                                           temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == r.choices[0].text
    assert parts[-1].choices[0].finish_reason == r.choices[0].finish_reason


@slow
def test_max_tokens_is_capped_and_logit_bias_applies(client, no_end):
    r = chat(client, max_tokens=10_000, logit_bias=no_end)
    assert r.usage.completion_tokens == CFG.max_tokens and r.choices[0].finish_reason == "length"


@slow
def test_stop_strings_cut_the_answer(client, no_end):
    text = chat(client, max_tokens=20, logit_bias=no_end).choices[0].message.content
    stop = text[len(text) // 2:][:3]
    r = chat(client, max_tokens=20, logit_bias=no_end, stop=[stop])
    assert r.choices[0].message.content == text[:text.find(stop)] and r.choices[0].finish_reason == "stop"
    streamed = chat(client, max_tokens=20, logit_bias=no_end, stop=[stop], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == r.choices[0].message.content


@slow
def test_response_format_json_schema(client):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
              "required": ["colour"], "additionalProperties": False}
    r = chat(client, max_tokens=40, response_format={"type": "json_schema",
                                                     "json_schema": {"name": "c", "schema": schema}})
    obj = json.loads(r.choices[0].message.content)
    assert set(obj) == {"colour"} and isinstance(obj["colour"], str)


@slow
def test_concurrent_clients_get_their_own_answers(client):
    """Four clients at once, each streaming one answer and fetching another whole: every
    client gets the answer its prompt gets alone (greedy), none of another's tokens."""
    prompts = [f"Write one sentence about {w}." for w in ("rivers", "violins", "tax law", "penguins")]
    ask = lambda p, **kw: chat(client, messages=[{"role": "user", "content": p}], max_tokens=8, **kw)  # noqa: E731
    alone = [ask(p).choices[0].message.content for p in prompts]
    assert len(set(alone)) == len(prompts)

    def both(p):
        return "".join(c.choices[0].delta.content or "" for c in ask(p, stream=True)), ask(p).choices[0].message.content
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(both, prompts))
    assert together == [(a, a) for a in alone]


# -------------------------------------------------------------------------------------------- /v1/task
@slow
def test_task_classify_returns_a_label_with_probabilities(base_url):
    r = httpx.post(f"{base_url}/task", json={"input": "How do I read a file with fs.readFile in Node.js?"},
                   timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "classify" and out["label"] in LABELS and out["output"] == out["label"]
    probs = out["probabilities"]
    assert set(probs) == set(LABELS) and math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
    assert out["probability"] == max(probs.values()) == probs[out["label"]]
    assert out["usage"]["prompt_tokens"] > 10


def valid(obj, schema: dict) -> bool:
    """Just enough JSON-schema checking for SCHEMA (no jsonschema package here)."""
    types = {"string": str, "integer": int, "null": type(None)}
    props = schema["properties"]
    return (isinstance(obj, dict) and set(obj) == set(props) == set(schema["required"])
            and all(isinstance(obj[k], tuple(types[t] for t in p["type"])) for k, p in props.items())
            and (obj["year"] is None or 0 <= obj["year"] <= 3000))


@slow
def test_task_extract_returns_json_valid_against_the_schema(llama, tmp_path):
    path = model_dir(tmp_path / "extract", llama_path(llama), EXTRACT)
    with running(create_app(llama, target(path, EXTRACT), CFG)) as url:
        for text in ("Ada moved to Paris in 1842.", "No place or date here at all!"):
            r = httpx.post(f"{url}/task", json={"input": text}, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["type"] == "extract" and valid(r.json()["output"], SCHEMA), r.json()


def llama_path(llama) -> Path:
    return Path(llama.llm.model_path).resolve()


@slow
def test_task_errors(base_url, llama, tmp_path):
    r = httpx.post(f"{base_url}/task", json={"inptu": "x"})
    assert r.status_code == 400 and "inptu" in r.json()["error"]["message"]
    r = httpx.post(f"{base_url}/task", json={"input": "x", "model": "other"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    bare = targets.Target("llama.cpp", llama_path(llama), {}, "bare")
    with running(create_app(llama, bare, CFG)) as url:
        r = httpx.post(f"{url}/task", json={"input": "hello"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "no_task" and "task.json" in r.text


# -------------------------------------------------------------------------------------------- limits
@slow
@pytest.mark.parametrize("body, needle", [("not json", "not valid JSON"),
                                          ('{"model": "dev-router"}', "messages"),
                                          ('{"model": "dev-router", "messages": [{"role": "wizard"}]}', "role"),
                                          ('{"model": "dev-router", "messages": [{"role": "user", "content": "x"}], '
                                           '"n": 2}', "n must be 1")])
def test_malformed_requests_are_400_in_openai_shape(base_url, body, needle):
    r = httpx.post(f"{base_url}/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"]


@slow
def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, model="gpt-4o")
    assert e.value.body["code"] == "model_not_found" and "gpt-4o" in e.value.body["message"]


@slow
def test_large_bodies_are_413_with_or_without_content_length(base_url):
    big = json.dumps({"model": "dev-router", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    r = httpx.post(f"{base_url}/chat/completions", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{base_url}/chat/completions", content=iter([big[:3000], big[3000:]]),
                   headers={"Content-Type": "application/json"})  # chunked: no Content-Length
    assert r.status_code == 413 and "serve.max_request_kb" in r.json()["error"]["message"]


def wait_for(url: str, **want) -> None:
    deadline = time.monotonic() + 60
    while {k: v for k, v in httpx.get(url).json()["queue"].items() if k in want} != want:
        assert time.monotonic() < deadline, f"queue never reached {want}"
        time.sleep(0.01)


@slow
def test_full_queue_is_503_and_late_requests_504(llama, classify_gguf, no_end):
    """queue=1: one request runs, one waits, the third is refused at once; the two that
    run out of serve.timeout_s end with a timeout (504, or an error event mid-stream)."""
    long = {"model": "dev-router", "messages": ASK, "max_tokens": 4000, "logit_bias": no_end, "temperature": 0}
    app = create_app(llama, target(classify_gguf, CLASSIFY), ServeCfg(queue=1, timeout_s=3, max_tokens=4000))
    with running(app) as url, httpx.Client(timeout=60) as http, ThreadPoolExecutor(2) as pool:
        health = root_of(url) + "/health"

        def streamed():
            with http.stream("POST", f"{url}/chat/completions", json={**long, "stream": True}) as r:
                return r.status_code, [ln for ln in r.iter_lines() if ln]
        first = pool.submit(streamed)
        wait_for(health, running=1)
        second = pool.submit(http.post, f"{url}/chat/completions", json=long)
        wait_for(health, waiting=1)
        third = http.post(f"{url}/chat/completions", json=long)
        assert third.status_code == 503
        assert third.json()["error"]["code"] == "queue_full" and "serve.queue" in third.json()["error"]["message"]
        status, lines = first.result()
        assert status == 200 and len(lines) > 2 and '"code": "timeout"' in lines[-1]
        assert second.result().status_code == 504 and second.result().json()["error"]["code"] == "timeout"
        metrics = httpx.get(root_of(url) + "/metrics").text
        assert 'taskling_rejected_total{reason="queue_full"} 1' in metrics
        assert 'taskling_rejected_total{reason="timeout"} 1' in metrics
        wait_for(health, running=0, waiting=0)


# -------------------------------------------------------------------------------------------- safety
@slow
def test_api_key_is_required_when_set(llama, classify_gguf):
    with running(create_app(llama, target(classify_gguf, CLASSIFY), CFG, api_key="s3cret-key")) as url:
        bad = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.models.list()
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        assert httpx.post(f"{url}/task", json={"input": "hi"}).status_code == 401  # no key at all
        assert httpx.get(root_of(url) + "/metrics").status_code == 401
        assert httpx.get(root_of(url) + "/health").status_code == 200  # probes stay open
        good = openai.OpenAI(base_url=url, api_key="s3cret-key", max_retries=0)
        assert chat(good, max_tokens=2).usage.completion_tokens > 0


def test_non_loopback_address_needs_a_key(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("TASKLING_API_KEY", raising=False)
    for host in ("0.0.0.0", "::"):
        with pytest.raises(TasklingError, match="refusing to listen on .* without an API key"):
            prepare(None, tmp_path, ServeCfg(host=host))  # refused before any port is tried
    check_exposure("127.0.0.1", None)
    check_exposure("localhost", None)
    check_exposure("0.0.0.0", "a-key")
    from conftest import one_line_error

    one_line_error(cli("serve", "--host", "0.0.0.0", cwd=tmp_path), "without an API key", "--api-key")


# -------------------------------------------------------------------------------------------- bundles
def add(tar: tarfile.TarFile, name: str, data: bytes, **kw) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    for k, v in kw.items():
        setattr(ti, k, v)
    tar.addfile(ti, io.BytesIO(data))


def make_bundle(path: Path, model: Path | bytes, info: dict = CLASSIFY, tamper: dict | None = None,
                extra=None) -> Path:
    """A bundle as `taskling export --bundle` writes it (optionally altered after the sums were taken)."""
    texts = {"task.json": json.dumps(info).encode(),
             "serve.json": json.dumps({"backend": "llama.cpp", "model": "model.gguf", "quant": "f16"}).encode()}
    digest = hashlib.sha256(model if isinstance(model, bytes) else model.read_bytes()).hexdigest()
    sums = [f"{digest}  model.gguf"] + [f"{hashlib.sha256(b).hexdigest()}  {n}" for n, b in texts.items()]
    texts = {**texts, **(tamper or {}), "SHA256SUMS": ("\n".join(sums) + "\n").encode()}
    with tarfile.open(path, "w") as tar:
        for name, data in texts.items():
            add(tar, name, data)
        if isinstance(model, bytes):
            add(tar, "model.gguf", model)
        else:
            tar.add(model, arcname="model.gguf")
        if extra:
            extra(tar)
    return path


def test_tampered_bundle_is_refused_naming_the_member(tmp_path):
    fake = b"GGUF not really a model"
    bundle = make_bundle(tmp_path / "b.tar", fake, tamper={"task.json": json.dumps({**CLASSIFY, "name": "x"}).encode()})
    with pytest.raises(TasklingError, match=r"member 'task.json' does not match its SHA256SUMS"):
        targets.open_bundle(bundle, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-unpacked is left to be served later
    unlisted = make_bundle(tmp_path / "c.tar", fake, extra=lambda t: add(t, "notes.txt", b"hi"))
    with pytest.raises(TasklingError, match=r"member 'notes.txt' is not listed in SHA256SUMS"):
        targets.open_bundle(unlisted, cache=tmp_path / "cache")
    ok = targets.open_bundle(make_bundle(tmp_path / "d.tar", fake), cache=tmp_path / "cache")
    assert ok.backend == "llama.cpp" and ok.path.name == "model.gguf" and ok.model_id == "dev-router"


@pytest.mark.parametrize("member, why", [
    (dict(name="/tmp/evil.txt"), "has an absolute path"),
    (dict(name="../evil.txt"), "points outside the bundle"),
    (dict(name="model/../../evil.txt"), "points outside the bundle"),
    (dict(name="link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a symbolic link"),
    (dict(name="hard", type=tarfile.LNKTYPE, linkname="task.json"), "is a hard link"),
    (dict(name="dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3), "is a device"),
    (dict(name="pipe", type=tarfile.FIFOTYPE), "is a FIFO"),
])
def test_hostile_bundle_members_are_refused(tmp_path, member, why):
    def hostile(tar):
        ti = tarfile.TarInfo(member["name"])
        for k, v in member.items():
            setattr(ti, k, v)
        tar.addfile(ti, io.BytesIO(b"") if ti.isreg() else None)
    bundle = make_bundle(tmp_path / "h.tar", b"GGUF", extra=hostile)
    with pytest.raises(TasklingError) as e:
        targets.open_bundle(bundle, cache=tmp_path / "cache")
    assert f"member '{member['name']}' {why}" in str(e.value) and str(bundle) in str(e.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_not_a_bundle(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x1f\x8b" + b"0" * 600)
    with pytest.raises(TasklingError, match="not a readable uncompressed tar bundle"):
        targets.open_bundle(junk, cache=tmp_path / "cache")


# -------------------------------------------------------------------------------------------- predict
def predict(path, model, **kw):
    from taskling.serving.predict import predict_file

    return predict_file(path, kw.pop("output", None), str(model), Path("."), QUIET, batch_size=2, **kw)


@slow
def test_predict_csv_keeps_columns_and_resumes(classify_gguf, tmp_path):
    src = tmp_path / "questions.csv"
    questions = ["How do I read a file in node?", "How do I use strftime in python?",
                 "How do I rank FTS5 results with bm25?", "How do I hash with createHash?", "What is a timedelta?"]
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "input"])
        w.writerows([[i, q] for i, q in enumerate(questions)])
    out = tmp_path / "questions.predictions.csv"
    # A run killed after its first batch, in the middle of writing a row: the first row's prediction is
    # marked so that a recomputed row would show.
    out.write_text('id,input,prediction,probability\r\n0,How do I read a file in node?,MARK,0.5\r\n'
                   '1,How do I use strftime in python?,pyth')
    res = predict(src, classify_gguf)
    rows = list(csv.DictReader(open(out, newline="")))
    assert res["skipped"] == 1 and res["predicted"] == 4 and res["rows"] == 5
    assert [r["id"] for r in rows] == [str(i) for i in range(5)] and [r["input"] for r in rows] == questions
    assert rows[0]["prediction"] == "MARK" and all(r["prediction"] in LABELS for r in rows[1:])
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    again = predict(src, classify_gguf)
    assert again["predicted"] == 0 and again["skipped"] == 5


@slow
def test_predict_jsonl_and_a_foreign_output_is_refused(classify_gguf, tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"input": q, "n": i}) + "\n" for i, q in
                           enumerate(["How do I watch a folder in node?", "How do I connect to sqlite3?"])))
    res = predict(src, classify_gguf)
    rows = [json.loads(x) for x in (tmp_path / "q.predictions.jsonl").read_text().splitlines()]
    assert res["predicted"] == 2 and [r["n"] for r in rows] == [0, 1]
    assert all(r["prediction"] in LABELS and set(r["probabilities"]) == set(LABELS) for r in rows)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"input": "something else"}) + "\n" + json.dumps({"input": "and more"}) + "\n")
    with pytest.raises(TasklingError, match="row 1 is not the answer to row 1 of the input"):
        predict(other, classify_gguf, output=tmp_path / "q.predictions.jsonl")
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    with pytest.raises(TasklingError, match="row 1 has no 'input'"):
        predict(bad, classify_gguf)


# -------------------------------------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-export") / "merged"
    folder.mkdir()
    for p in tiny_model_dir.iterdir():
        (folder / p.name).symlink_to(p)
    info = {**CLASSIFY, "name": "tiny-router"}
    (folder / "task.json").write_text(json.dumps(info))
    t = targets.resolve(str(folder), Path("."))
    return targets.load(t), t


def test_transformers_backend_chat_stream_and_task(tiny):
    engine, t = tiny
    assert t.backend == "transformers"
    sampled = dict(model="tiny-router", messages=ASK, temperature=1.0, seed=3, max_tokens=12)
    with running(create_app(engine, t, CFG)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        want = client.chat.completions.create(**sampled).choices[0].message.content
        assert want and want == client.chat.completions.create(**sampled).choices[0].message.content
        chunks = list(client.chat.completions.create(**sampled, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
        out = httpx.post(f"{url}/task", json={"input": "How do I hash data?"}, timeout=60).json()
        assert out["label"] in LABELS and math.isclose(sum(out["probabilities"].values()), 1, abs_tol=1e-4)
    # A schema whose every valid object is short: constrained decoding must close it within max_tokens,
    # so even random weights give an object valid against it (a cut-off answer would be None: a failure here).
    short = {**SCHEMA, "properties": {"city": {"type": ["string", "null"], "enum": ["Paris", "Rome", None]},
                                      "year": SCHEMA["properties"]["year"]}}
    for text in ("Ada moved to Paris in 1842.", "Nothing here."):
        ext = task_outputs(engine, {**EXTRACT, "output_schema": short}, [text], max_tokens=120)[0]
        assert ext["finish_reason"] == "stop" and valid(ext["output"], short), ext
        assert ext["output"]["city"] in ("Paris", "Rome", None)


# -------------------------------------------------------------------------------------------- open book
BOOK = {"name": "tiny-book", "type": "answer", "max_new_tokens": 16, "output_schema": None, "labels": [],
        "system_prompt": "Answer the developer's question from the manual.", "chat_template_kind": "chatml",
        "retrieval": {"k": 2, "chunk_chars": 300, "missing": "abstain", "embed": False, "embed_model": None,
                      "embed_max_tokens": None}}
HASH = "How do I hash data with createHash in node crypto?"


class Reader:
    """An engine that notes every conversation it is asked to read (what the model is prompted with) and
    answers each with one fixed text, streamed word by word."""

    backend, n_ctx, n_vocab = "scripted", 4096, 1000

    def __init__(self, answer: str):
        import threading

        self.answer, self.lock, self.read = answer, threading.Lock(), []

    def chat_ids(self, messages: list[dict]) -> list[int]:
        self.read.append(messages)
        return list(range(len(json.dumps(messages)) // 4))

    def generate(self, ids, s, on_text=None, cancelled=None) -> eng.Generation:
        words = self.answer.split(" ")
        for i, w in enumerate(words):
            if on_text:
                on_text(w if i == 0 else " " + w)
        return eng.Generation(self.answer, len(ids), len(words), "stop")

    def generate_many(self, convs, s) -> list[eng.Generation]:
        return [self.generate(self.chat_ids(c), s) for c in convs]


@pytest.fixture(scope="module")
def book_pile(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny workspace's documents ingested (words only): the pile an open-book model reads."""
    from conftest import write_workspace
    from taskling.core.config import load_config
    from taskling.core.workspace import Context
    from taskling.stages import ingest

    root = tmp_path_factory.mktemp("book")
    ctx = Context(load_config(write_workspace(root, tiny_model_dir), []), console=QUIET)
    ingest.run(ctx)
    return ctx.ws.pile_db


def test_open_book_chat_reads_what_the_task_endpoint_reads_and_returns_its_citations(book_pile, tmp_path):
    """/v1/chat/completions on an open-book model puts the chunks the retriever finds for the last user
    message in the prompt, the very prompt /v1/task builds for it, and returns the citations /v1/task
    returns, in the extra top-level field `citations`, streamed on the chunk that finishes the answer (the
    old chat answered closed-book: no documents in the prompt, no field)."""
    engine = Reader("createHash and makes keys with randomBytes [1]")
    path = model_dir(tmp_path / "book", Path(__file__), BOOK)  # the file is never loaded: the engine is scripted
    with running(create_app(engine, target(path, BOOK), CFG, None, book_pile)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
        task = httpx.post(f"{url}/task", json={"input": HASH}, timeout=120).json()
        r = client.chat.completions.create(model="tiny-book", messages=[{"role": "user", "content": HASH}],
                                           temperature=0)
        asked_task, asked_chat = engine.read[-2:]
        parts = list(client.chat.completions.create(model="tiny-book", messages=[{"role": "user", "content": HASH}],
                                                    temperature=0, stream=True, stream_options={"include_usage": True}))
    assert asked_chat == asked_task and asked_chat[0]["content"].startswith(BOOK["system_prompt"])
    assert asked_chat[1]["content"].count("<document-") == 2 and "createHash" in asked_chat[1]["content"]
    assert engine.read[-1] == asked_chat  # streamed, the same prompt
    cites = r.model_extra["citations"]
    assert cites == task["citations"] and [c["n"] for c in cites] == [1]
    assert cites[0]["path"] == "docs/node.html" and cites[0]["locator"] and cites[0]["chunk"]
    assert cites[0]["span"]["text"] == "createHash and makes keys with randomBytes"  # where in it the answer is
    assert r.choices[0].message.content == engine.answer  # the text as generated, its [1] too (streamed alike)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == engine.answer
    carried = [p for p in parts if "citations" in (p.model_extra or {})]
    assert len(carried) == 1 and carried[0].choices[0].finish_reason == "stop"
    assert carried[0].model_extra["citations"] == cites and parts[-1].usage is not None


def test_closed_book_chat_is_unchanged(tmp_path):
    """A closed-book model's chat reads the conversation as sent (the task's system prompt first) and its
    answer, whole or streamed, has no `citations` (passes on the old code: it guards the old behaviour)."""
    engine = Reader("Use createHash.")
    info = {k: v for k, v in BOOK.items() if k != "retrieval"}
    path = model_dir(tmp_path / "closed", Path(__file__), info)
    with running(create_app(engine, target(path, info), CFG)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
        r = client.chat.completions.create(model="tiny-book", messages=[{"role": "user", "content": HASH}])
        parts = list(client.chat.completions.create(model="tiny-book", messages=[{"role": "user", "content": HASH}],
                                                    stream=True))
    asked = [{"role": "system", "content": BOOK["system_prompt"]}, {"role": "user", "content": HASH}]
    assert engine.read == [asked, asked]
    assert "citations" not in r.model_extra and r.choices[0].message.content == "Use createHash."
    assert not any("citations" in (p.model_extra or {}) for p in parts)


# -------------------------------------------------------------------------------------------- units
def export(root: Path, run: str, ggufs: list[str], merged: bool = True) -> Path:
    out = root / "runs" / run / "export"
    (out / "gguf").mkdir(parents=True)
    for q in ggufs:
        (out / "gguf" / f"dev-router-{q}.gguf").write_bytes(b"GGUF")
    (out / "gguf" / "task.json").write_text(json.dumps(CLASSIFY))
    if merged:
        (out / "merged").mkdir()
        (out / "merged" / "config.json").write_text("{}")
    finished(out)
    return out


def finished(export_dir: Path) -> None:
    """The manifest.json a finished export leaves (serve takes no export without it)."""
    from taskling.core.manifests import ExportManifest

    m = ExportManifest(run_id="x", round=0, fingerprint="f", settings={}, inputs={}, outputs=[], digest="d",
                       started="2026-01-01T00:00:00+00:00", seconds=1.0, versions={}, artifacts=[], verified_on="",
                       failed=[], counts={"artifacts": 0, "checked_items": 0, "failed": 0}, tolerance=0.0,
                       student_metric=None)
    (export_dir / "manifest.json").write_text(m.model_dump_json())


def test_resolve_runs_files_and_fallbacks(tmp_path):
    full = export(tmp_path, "full", ["f16", "q8_0", "q4_k_m", "lora-f16"])
    t = targets.resolve("full", tmp_path)
    assert (t.backend, t.path.name, t.notes, t.model_id) == ("llama.cpp", "dev-router-q8_0.gguf", (), "dev-router")
    assert targets.resolve("full", tmp_path, quant="q4_k_m").path.name == "dev-router-q4_k_m.gguf"
    assert targets.resolve("full", tmp_path, "transformers").path == (full / "merged").resolve()
    f16 = targets.resolve("full", tmp_path, quant="q5_k_m")
    assert f16.path.name == "dev-router-f16.gguf" and "dev-router-q5_k_m.gguf was not exported" in f16.notes[0]
    export(tmp_path, "nogguf", [])
    t = targets.resolve("nogguf", tmp_path)
    assert t.backend == "transformers" and "holds no GGUF" in t.notes[0]
    with pytest.raises(TasklingError, match="no GGUF file exported"):
        targets.resolve("nogguf", tmp_path, explicit=True)
    os.utime(full / "gguf", (1, 1))
    os.utime(full, (1, 1))
    assert targets.resolve(None, tmp_path).source.startswith("run nogguf")
    one = full / "gguf" / "dev-router-f16.gguf"
    assert targets.resolve(str(one), tmp_path).info["name"] == "dev-router"
    with pytest.raises(TasklingError, match="runs on llama.cpp; --backend transformers"):
        targets.resolve(str(one), tmp_path, "transformers", explicit=True)


def test_resolve_errors_name_what_is_missing(tmp_path):
    with pytest.raises(TasklingError) as e:
        targets.resolve("nope", tmp_path)
    assert str(tmp_path / "runs" / "nope" / "export") in str(e.value) and "taskling export" in str(e.value)
    with pytest.raises(TasklingError, match="no exported model in"):
        targets.resolve(None, tmp_path)
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "task.json").write_text("{oops")
    with pytest.raises(TasklingError, match=r"task.json: not valid JSON"):
        targets.resolve(str(bad), tmp_path)


def test_stop_text_never_sends_a_stop_string():
    sent: list[str] = []
    s = eng.StopText(("END", "\n\n"), sent.append)
    for piece in ["Hel", "lo E", "N", "x and E", "ND more"]:
        if s.add(piece):
            break
    assert s.finish() == "Hello ENx and " == "".join(sent)
    assert eng.StopText((), None).add("anything") is False


def test_serve_refuses_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TasklingError, match=f"port {port} on 127.0.0.1 is in use"):
            prepare(None, tmp_path, ServeCfg(port=port))


def test_span_answers_through_llama_cpp_copy_the_chunks_shown(llama):
    """An open-book answer task with student.retrieval.spans (task.json's retrieval.spans): the real
    SmolLM2 through llama.cpp answers with a run of the shown chunks' words (or the abstention), cited;
    the same model unconstrained makes up text that is in no chunk."""
    from taskling.core.openbook import ABSTAIN
    from taskling.data.pile import Chunk

    texts = ["SQLSTATE 23505 is unique_violation: a row broke a unique constraint.",
             "The condition of code 08006 is connection_failure, a lost connection."]
    chunks = [Chunk(n, f"k{n}", n, f"docs/{n}.md", "sha", 0, len(t), f"section {n}", t) for n, t in enumerate(texts, 1)]

    class Book:
        chunk_chars = 300

        def find(self, query: str):
            return chunks

    info = {"type": "answer", "system_prompt": "Answer with the condition name of the error code.", "max_new_tokens": 24}
    asks = ["What is the condition name of error 23505?", "Write a poem about the sea.", "Which code means a lost connection?"]
    spans = task_outputs(llama, info | {"retrieval": {"spans": True}}, asks, book=Book())
    free = task_outputs(llama, info | {"retrieval": {"spans": False}}, asks, book=Book())
    flat = " ".join(texts)
    inside = lambda out: bool(out) and (out == ABSTAIN or out in flat)  # noqa: E731
    assert all(inside(o["output"]) for o in spans), [o["output"] for o in spans]
    assert any(o["output"] != ABSTAIN for o in spans)  # (measured: the first answer is a whole run of chunk 2)
    assert all(c["span"] is not None for o in spans for c in o["citations"])  # a citation names the chunk copied
    assert not all(inside(o["output"]) for o in free), [o["output"] for o in free]
