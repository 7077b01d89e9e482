"""The embedded teacher decodes several requests together (teacher.concurrency sequences on one
llama.cpp context, teacher/backends/llamabatch.py) and answers each as the one-at-a-time path
(llama-cpp-python's create_chat_completion) does: the same prompt, the same text at temperature 0;
JSON schemas, stop strings and max_tokens honoured; a prompt too long for the context
refused alone; each result reported once as it finishes; the call log as before. On the real
SmolLM2-135M-Instruct GGUF."""
from __future__ import annotations

import json
import sqlite3

import pytest

from taskling.core.config import ModelCfg
from taskling.teacher.backends import Logged, Request, open_backend
from taskling.teacher.calls import CallLog

pytestmark = pytest.mark.slow

SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "topic": {"enum": ["sqlite", "node"]}},
          "required": ["question", "topic"]}


def ask(text: str, **kw) -> Request:
    return Request(messages=[{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": text}], **({"max_tokens": 24} | kw))


REQUESTS = [
    ask("What is 2+2? Answer briefly.", temperature=0.0),
    ask("Name three Python datetime classes.", temperature=0.0),
    ask("Write one question a developer might ask about SQLite JSON functions, as JSON.", temperature=0.0,
        json_schema=SCHEMA, max_tokens=48),
    ask("Name three Python datetime classes.", temperature=0.0, stop=(":",)),
    ask("Say hello in French.", temperature=0.8, seed=7),
    ask("Say hello in French.", temperature=0.8, seed=8),
    ask("What does fs.readFile do in Node.js?", temperature=0.8, seed=1, max_tokens=6),
]


@pytest.fixture(scope="module")
def backends():
    one = open_backend(ModelCfg(concurrency=1, n_ctx=512), 1)
    many = open_backend(ModelCfg(concurrency=3, n_ctx=512), 1)
    yield one, many
    one.close()
    many.close()


def test_batched_decoding_answers_each_request_as_one_at_a_time_does(backends):
    one, many = backends
    assert one.batched is None and not one.capabilities.batching
    assert many.batched is not None and many.capabilities.concurrency == 3
    seen: list[int] = []
    together = many.generate(REQUESTS, on_result=lambda i, r: seen.append(i))
    alone = one.generate(REQUESTS)
    assert sorted(seen) == list(range(len(REQUESTS)))  # each reported once, as it finished
    for r, a, b in zip(REQUESTS, alone, together):
        assert b.error is None and b.latency_s > 0 and b.prompt_tokens == a.prompt_tokens  # the same prompt
        if r.temperature == 0:  # greedy: the same answer (a draw may part once the sums round another way)
            assert (b.text, b.finish_reason, b.completion_tokens) == (a.text, a.finish_reason, a.completion_tokens), r
    reply = json.loads(together[2].text)  # the schema's grammar held
    assert set(reply) == {"question", "topic"} and reply["topic"] in ("sqlite", "node")
    cut = together[3].text  # the answer of request 1, cut before the stop string
    assert cut and ":" not in cut and together[1].text.startswith(cut + ":") and together[3].finish_reason == "stop"
    assert together[4].text and together[5].text and together[4].text != together[5].text  # two seeds: two draws
    assert together[6].finish_reason == "length" and together[6].completion_tokens == 6


def test_a_prompt_too_long_for_the_context_is_refused_alone(backends):
    _, many = backends
    long = ask("word " * 700, temperature=0.0)
    out = many.generate([REQUESTS[0], long, REQUESTS[1]])
    assert out[1].error_kind == "bad_request" and "exceed context window" in out[1].error
    assert out[0].error is None and out[2].error is None and out[0].text and out[2].text


def test_the_call_log_records_each_batched_call_once_and_a_rerun_is_served_from_it(backends, tmp_path):
    _, many = backends
    log = CallLog(tmp_path / "calls.db")
    logged = Logged(many, log)
    first = logged.generate(REQUESTS[:4])
    assert logged.stats["calls"] == 4 and logged.stats["completion_tokens"] == sum(r.completion_tokens for r in first)
    again = Logged(many, log).generate(REQUESTS[:4])
    assert all(r.cached for r in again) and [r.text for r in again] == [r.text for r in first]
    n = sqlite3.connect(tmp_path / "calls.db").execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert n == 4
