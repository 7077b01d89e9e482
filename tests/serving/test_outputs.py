"""A served model's task, without a model: task.json checked against the task-type registry, and
the task's answers shaped by its decoding constraint (labels scored, JSON parsed, text as is)."""
from __future__ import annotations

import json
import math

import pytest

from taskling.core.errors import TasklingError
from taskling.serving.engine import Generation, NoTask, Sampling
from taskling.serving.outputs import served_decoding, task_outputs
from taskling.serving.target import read_task

SCHEMA = {"type": "object", "properties": {"code": {"type": ["string", "null"]}}}


class Scripted:
    """An engine that answers from a script: label log-probabilities, or fixed texts."""

    def __init__(self, logps: list[float] | None = None, text: str = ""):
        self.logps, self.text, self.asked = logps, text, []

    def chat_ids(self, messages: list[dict]) -> list[int]:
        self.asked.append(messages)
        return [1, 2, 3]

    def label_logprobs(self, ids: list[int], labels: list[str]) -> list[float]:
        return self.logps

    def generate_many(self, convs: list[list[dict]], s: Sampling) -> list[Generation]:
        self.asked.append((convs, s))
        return [Generation(self.text, 5, 2, "stop") for _ in convs]


def write(tmp_path, info: dict):
    p = tmp_path / "task.json"
    p.write_text(json.dumps(info))
    return p


def test_task_json_names_a_registered_type(tmp_path):
    assert read_task(tmp_path / "none.json") == {}
    assert read_task(write(tmp_path, {"name": "x"})) == {"name": "x"}  # no task: chat endpoints only
    with pytest.raises(TasklingError, match=r"type 'clasify' is not a task type; did you mean 'classify'"):
        read_task(write(tmp_path, {"type": "clasify"}))
    with pytest.raises(TasklingError, match="a classify task needs a list of at least two 'labels'"):
        read_task(write(tmp_path, {"type": "classify", "labels": ["only"]}))
    assert served_decoding({}) is None and served_decoding({"type": "answer"}).constrained is False


def test_a_label_is_scored_with_the_probability_of_each():
    engine = Scripted(logps=[math.log(0.2), math.log(0.8)])
    info = {"type": "classify", "labels": ["a", "b"], "system_prompt": "Route it."}
    out = task_outputs(engine, info, ["x"])[0]
    assert out["output"] == out["label"] == "b" and out["probability"] == pytest.approx(0.8)
    assert out["completion_tokens"] == 0 and engine.asked[0][0] == {"role": "system", "content": "Route it."}


def test_json_is_constrained_and_parsed_and_text_is_kept():
    engine = Scripted(text=' {"code": "E1"} ')
    out = task_outputs(engine, {"type": "extract", "output_schema": SCHEMA}, ["a", "b"], max_tokens=40)
    assert [o["output"] for o in out] == [{"code": "E1"}] * 2
    convs, s = engine.asked[0]
    assert s.json_schema == SCHEMA and s.max_tokens == 40 and convs[0] == [{"role": "user", "content": "a"}]
    cut = task_outputs(Scripted(text='{"code": "E'), {"type": "extract"}, ["a"])[0]
    assert cut["output"] is None and cut["text"] == '{"code": "E'
    engine = Scripted(text="Use json_extract. ")
    out = task_outputs(engine, {"type": "answer", "max_new_tokens": 64}, ["q"])[0]
    assert out["output"] == "Use json_extract." and "text" not in out
    assert engine.asked[0][1] == Sampling(64)
    with pytest.raises(NoTask):
        task_outputs(engine, {}, ["q"])


# -------------------------------------------------------------------------------------------- open book
def chunk(n: int, text: str, start: int = 0):
    from taskling.data.pile import Chunk

    return Chunk(n, f"k{n}", n, f"docs/{n}.md", "sha", start, start + len(text), f"section {n}", text)


class Book:
    """A retriever that finds the same chunks for every query, and notes the queries."""

    chunk_chars = 300

    def __init__(self, chunks):
        self.chunks, self.asked = chunks, []

    def find(self, query: str):
        self.asked.append(query)
        return self.chunks


CODES = [chunk(1, "Class 08 covers connection exceptions such as 08006 connection_failure.", 100),
         chunk(2, "SQLSTATE 23505 is unique_violation: a row broke a unique constraint.", 400)]


def test_a_citation_carries_the_span_of_its_chunk_the_answer_rests_on():
    """Each citation says where in the cited chunk the answer sits (in the document's characters), or
    null when the chunk holds none of it (the span is new: citations named only document and locator)."""
    engine = Scripted(text="unique_violation [2][1]")
    out = task_outputs(engine, {"type": "answer", "system_prompt": "Answer."}, ["What is 23505?"], book=Book(CODES))[0]
    assert out["output"] == "unique_violation" and [c["n"] for c in out["citations"]] == [2, 1]
    span = out["citations"][0]["span"]
    text = CODES[1].text
    assert span == {"start": 400 + text.index("unique_violation"), "end": 400 + text.index(":"),
                    "text": "unique_violation", "match": "exact"}
    assert out["citations"][1]["span"] is None  # chunk 1 does not hold the answer: the citation is unsupported
    assert all("span" not in d for d in out["documents"])  # the chunks shown, cited or not
    abstained = task_outputs(Scripted(text="The documents do not contain the answer."), {"type": "answer"}, ["q"],
                             book=Book(CODES))[0]
    assert abstained["citations"] == []


def test_an_open_book_chat_reads_its_last_question_as_the_task_endpoint_reads_an_input():
    """The last user message is retrieved for and rendered by the one open-book prompt (task_outputs'),
    under the client's system prompt; earlier turns stay as they were, with no documents of their own."""
    from taskling.serving.outputs import open_chat, open_prompt
    from taskling.tasks.openbook import open_messages

    book = Book(CODES)
    one = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "What is 23505?"}]
    engine = Scripted(text="x")
    task_outputs(engine, {"type": "answer", "system_prompt": "Answer."}, ["What is 23505?"], book=book)
    assert open_chat(book, one) == (engine.asked[0][0][0], CODES)  # the very prompt /v1/task sends
    assert open_prompt(book, "Answer.", "What is 23505?")[0] == open_messages("Answer.", "What is 23505?", CODES, 300)
    turns = [{"role": "user", "content": "What is 08006?"}, {"role": "assistant", "content": "connection_failure"},
             {"role": "system", "content": "Be brief."}, {"role": "user", "content": "And 23505?"}]
    conv, found = open_chat(book, turns)
    rules, question = open_messages("Be brief.", "And 23505?", CODES, 300)
    assert conv == [rules, *turns[:2], question] and found == CODES and book.asked[-1] == "And 23505?"
    assert open_chat(book, [{"role": "system", "content": "Answer."}]) == ([{"role": "system", "content": "Answer."}],
                                                                           [])
