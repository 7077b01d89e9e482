"""taskling serve: a real uvicorn server on a free port, spoken to with the
official openai client, plus unit tests of target resolution and prompting."""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from taskling.errors import TasklingError
from taskling.serve import (Message, ServedModel, apply_stop, build_conversation, create_app, resolve_target,
                            serve)

SYSTEM = "Route the question to the right manual. Answer with one label."
TASK = {"name": "tiny-router", "type": "classify", "system_prompt": SYSTEM, "max_new_tokens": 8}
ASK = [{"role": "user", "content": "How do I read a file in Node.js?"}]
# Greedy answers of the random tiny model are blank lines (stripped to ""), so
# tests that need text sample with a fixed seed.
SAMPLED = dict(temperature=1.0, seed=3, max_tokens=12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory) -> ServedModel:
    folder = tmp_path_factory.mktemp("export") / "merged"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "task.json").write_text(json.dumps(TASK))
    return ServedModel.load(folder)


@pytest.fixture(scope="module")
def base_url(served):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30)


def ask(client, **kw):
    params = dict(model="tiny-router", messages=ASK, max_tokens=5, temperature=0)
    return client.chat.completions.create(**{**params, **kw})


def test_models_lists_the_task_name(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny-router"]
    assert models[0].owned_by == "taskling" and models[0].created > 0


def test_health(base_url):
    r = httpx.get(base_url.removesuffix("/v1") + "/health")
    assert r.json() == {"status": "ok", "model": "tiny-router"}


def test_chat_completion_shape_and_usage(client):
    r = ask(client)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "tiny-router"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 5 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_completion_tokens_limits_the_answer(client):
    r = client.chat.completions.create(model="tiny-router", messages=ASK, max_completion_tokens=2, temperature=0)
    assert r.usage.completion_tokens <= 2


def test_greedy_is_deterministic(client):
    assert ask(client).choices[0].message.content == ask(client).choices[0].message.content


def test_seeded_sampling_is_repeatable_and_seed_matters(client):
    first = ask(client, **SAMPLED).choices[0].message.content
    assert first and first == ask(client, **SAMPLED).choices[0].message.content
    others = {ask(client, **{**SAMPLED, "seed": s}).choices[0].message.content for s in (4, 5)}
    assert others != {first}


def test_stream_matches_non_stream(client):
    want = ask(client, **SAMPLED).choices[0].message.content
    chunks = list(ask(client, **SAMPLED, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert sum(bool(c.choices[0].delta.content) for c in chunks) >= 2  # really streamed in pieces


def test_stream_include_usage_sends_a_usage_chunk(client):
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 5


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, model="gpt-4o")
    assert e.value.body["code"] == "model_not_found" and "gpt-4o" in e.value.body["message"]


def test_n_above_one_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, n=2)
    assert "n must be 1" in e.value.body["message"]


@pytest.mark.parametrize("body", ['{"model": "tiny-router"}', "not json",
                                  '{"model": "tiny-router", "messages": [{"role": "wizard", "content": "hi"}]}'])
def test_malformed_body_is_400_in_openai_shape(base_url, body):
    r = httpx.post(f"{base_url}/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]


def test_stop_string_truncates(client):
    text = ask(client, **SAMPLED).choices[0].message.content
    stop = text[len(text) // 2:][:3]
    assert stop
    r = ask(client, **SAMPLED, stop=[stop])
    assert r.choices[0].message.content == text[:text.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_task_system_prompt_is_sent_when_client_sends_none(client):
    bare = ask(client).usage.prompt_tokens
    explicit = ask(client, messages=[{"role": "system", "content": SYSTEM}, *ASK]).usage.prompt_tokens
    other = ask(client, messages=[{"role": "system", "content": "Hi."}, *ASK]).usage.prompt_tokens
    assert bare == explicit > other


def test_build_conversation_prepends_system_prompt_only_when_missing():
    user = [Message(role="user", content="hello")]
    assert build_conversation(user, SYSTEM) == [{"role": "system", "content": SYSTEM},
                                                {"role": "user", "content": "hello"}]
    own = [Message(role="developer", content="be brief"), *user]
    assert build_conversation(own, SYSTEM)[0] == {"role": "system", "content": "be brief"}
    assert len(build_conversation(own, SYSTEM)) == 2
    assert build_conversation(user, None) == [{"role": "user", "content": "hello"}]
    parts = [Message(role="user", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])]
    assert build_conversation(parts, None)[0]["content"] == "ab"


def test_apply_stop():
    assert apply_stop("alpha beta gamma", ["gamma", " beta"]) == ("alpha", True)
    assert apply_stop("alpha", "zzz") == ("alpha", False)
    assert apply_stop("alpha", None) == ("alpha", False)


def test_serve_refuses_a_busy_port(tiny_model_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TasklingError, match=f"port {port} on 127.0.0.1 is in use"):
            serve(str(tiny_model_dir), tmp_path, "127.0.0.1", port)


def make_export(root: Path, run_id: str, mtime: float) -> Path:
    merged = root / "runs" / run_id / "export" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    os.utime(merged, (mtime, mtime))
    return merged


def test_resolve_target_run_id_folder_and_newest(tmp_path):
    old = make_export(tmp_path, "old-run", 1_000_000)
    new = make_export(tmp_path, "new-run", 2_000_000)
    assert resolve_target("old-run", tmp_path) == old.resolve()
    assert resolve_target(str(new), tmp_path) == new.resolve()
    assert resolve_target(None, tmp_path) == new.resolve()


def test_resolve_target_errors_name_the_path(tmp_path):
    with pytest.raises(TasklingError) as e:
        resolve_target("nope", tmp_path)
    assert str(tmp_path / "runs" / "nope" / "export" / "merged") in str(e.value)
    assert "taskling export" in str(e.value)
    with pytest.raises(TasklingError) as e:
        resolve_target(None, tmp_path)
    assert str(tmp_path / "runs") in str(e.value) and "taskling export" in str(e.value)
