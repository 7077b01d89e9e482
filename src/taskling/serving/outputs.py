"""A served model doing its task: the task's answers to inputs, prompted as the student was
trained (task.json's system prompt) and constrained as its task type says (`served_decoding`).

    task_outputs(engine, target.info, ["an input"])   # [{"output": ..., "prompt_tokens": ...}, ...]

An answer that is always a label is scored, not generated: every label's probability as the
whole answer, the most likely one the output. A JSON schema constrains generation and the
output is the parsed object (None, with the text, when max_tokens cut it off); otherwise the
output is the text.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..core import tasktype
from ..core.tasktype import Decoding
from ..data.index import INDEX_FILE
from ..tasks import openbook, student_messages
from .engine import NO_TASK, Engine, Generation, NoTask, Sampling


def served_decoding(info: dict) -> Decoding | None:
    """How task.json's task constrains answers; None when it names no task (no /v1/task)."""
    kind = info.get("type")
    if kind not in tasktype.names():
        return None
    return tasktype.get(kind).served_decoding(info)


def task_messages(info: dict, text: str) -> list[dict]:
    system = info.get("system_prompt")
    return student_messages(system, text) if system else [{"role": "user", "content": text}]


def task_outputs(engine: Engine, info: dict, inputs: list[str], max_tokens: int | None = None,
                 book=None) -> list[dict]:
    """The task's answers to `inputs`: a label with the probability of each (classify), a JSON
    object constrained to the task's schema (extract) or text (answer, generate). With `book` (the
    data.retrieve.Retriever of an open-book model) each input is shown with the chunks it finds, as
    in training, and each answer comes with `citations` (the chunks its trailing [n] names) and
    `documents` (the chunks it was shown)."""
    decoding = served_decoding(info)
    if decoding is None:
        raise NoTask(NO_TASK)
    if book is not None:
        asked = [open_prompt(book, info.get("system_prompt") or "", x) for x in inputs]
        convs = [conv for conv, _ in asked]
        if (info.get("retrieval") or {}).get("spans") and not decoding.constrained:  # copied from the chunks
            limit = max_tokens or info.get("max_new_tokens") or 256
            said = [text_result(engine.generate(engine.chat_ids(conv), Sampling(
                limit, spans=tuple(openbook.shown_texts(ch, book.chunk_chars)))), as_json=False) for conv, ch in asked]
        else:
            said = answers(engine, info, decoding, convs, max_tokens)
        return [cited(r, ch) for r, (_, ch) in zip(said, asked)]
    return answers(engine, info, decoding, [task_messages(info, x) for x in inputs], max_tokens)


def open_prompt(book, system: str, text: str) -> tuple[list[dict], list]:
    """The open-book model's conversation for one input (the chunks `book` finds for it, laid out as in
    training) and those chunks. /v1/task, predict and /v1/chat/completions all ask through here."""
    chunks = book.find(text)
    return openbook.open_messages(system, text, chunks, book.chunk_chars), chunks


def open_chat(book, conv: list[dict]) -> tuple[list[dict], list]:
    """A chat conversation as an open-book model reads it: its last user message retrieved for and
    rendered as /v1/task renders an input (`open_prompt`, under the conversation's system prompt), the
    turns around it kept. A single question is thus the very prompt /v1/task builds. No user message:
    nothing to retrieve for, the conversation as it is."""
    users = [i for i, m in enumerate(conv) if m["role"] == "user"]
    if not users:
        return conv, []
    last = users[-1]
    system = "\n".join(m["content"] for m in conv if m["role"] == "system")
    (rules, question), chunks = open_prompt(book, system, conv[last]["content"])
    before = [m for m in conv[:last] if m["role"] != "system"]
    after = [m for m in conv[last + 1:] if m["role"] != "system"]
    return [rules, *before, question, *after], chunks


def cited(result: dict, chunks: list) -> dict:
    """An open-book answer without its trailing [n], the chunks those numbers name (`citations`, each with
    the `span` of it the answer rests on) and every chunk it was shown (`documents`, numbered as in its
    prompt)."""
    shown = {"documents": openbook.cited_chunks(list(range(1, len(chunks) + 1)), chunks)}
    text = result.get("text") if result.get("output") is None else result["output"]
    if not isinstance(text, str):
        return result | shown | {"citations": []}
    clean, nums = openbook.split_citations(text)
    return result | shown | {"output": clean, "citations": openbook.cited_chunks(nums, chunks, clean)}


def answers(engine: Engine, info: dict, decoding: Decoding, convs: list[list[dict]],
            max_tokens: int | None) -> list[dict]:
    if decoding.labels is not None:
        labels = list(decoding.labels)
        out = []
        for c in convs:
            ids = engine.chat_ids(c)
            out.append({**label_result(labels, engine.label_logprobs(ids, labels)), "prompt_tokens": len(ids),
                        "completion_tokens": 0, "finish_reason": "stop"})  # scored, not generated
        return out
    limit = max_tokens or info.get("max_new_tokens") or 256
    gens = engine.generate_many(convs, Sampling(limit, json_schema=decoding.json_schema))
    return [text_result(g, as_json=decoding.json_schema is not None) for g in gens]


def label_result(labels: list[str], logps: list[float]) -> dict:
    top = max(logps)
    weights = [math.exp(x - top) for x in logps]
    probs = {lab: w / sum(weights) for lab, w in zip(labels, weights)}
    best = max(labels, key=probs.__getitem__)
    return {"output": best, "label": best, "probability": round(probs[best], 6),
            "probabilities": {k: round(v, 6) for k, v in probs.items()}}


def text_result(g: Generation, as_json: bool) -> dict:
    text = g.text.strip()
    out: object = text
    if as_json:
        try:
            out = json.loads(text)
        except json.JSONDecodeError:  # cut off by max_tokens before the object closed
            out = None
    res = {"output": out, "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
           "finish_reason": g.finish_reason}
    return res | ({"text": text} if out is None else {})


def open_book_pile(t, root: Path, console) -> Path | None:
    """The pile an open-book model reads (task.json names its retriever): the workspace's, read live (a
    document ingested after training is found), else the index exported beside the model (a bundle on
    another machine). None for a closed-book model, or (with a note) when there is neither: it then
    answers closed-book."""
    if not t.info.get("retrieval"):
        return None
    pile_db = root / ".taskling" / "pile.db"
    if pile_db.exists():
        return pile_db
    index = (t.path if t.path.is_dir() else t.path.parent) / INDEX_FILE
    if index.exists():
        return index
    console.print(f"[yellow]note:[/] {t.model_id} was trained open-book but neither {root} has a pile ({pile_db}) "
                  f"nor {index.parent} an index ({INDEX_FILE}); it answers without documents", highlight=False,
                  soft_wrap=True)
    return None
