"""answer: a question in, a short answer grounded in the documents out.

The teacher reads a chunk and writes a question it answers and the answer.
Metric: token F1 against the reference answer (exact match, ROUGE-L and the
citation rate beside it). `FreeText` is the machinery of every type whose
answer is free text written from the documents; `generate` is the same class
with other words (instruction in, free text out).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..core.errors import TeacherOutputError
from ..core.tasktype import Decoding, Kind, TaskCfg, register
from ..data.pile import Chunk, Pile
from . import (DATA_RULE, diversity_line, document_block, example_items, examples_schema, locate, norm_value,
    object_schema, output_text, spans_for, task_kind, token_f1, topic_pools)
from . import metrics
from .grounding import text_grounding

ANSWER_HINT = "Answer briefly and only from what you know of the documents."


def like_line(job: dict, noun: str) -> str:
    """Failure-seeded jobs (the loop): a {noun} the student still gets wrong, to write more like it."""
    return f"A model still answers this {noun} badly; write yours in a similar vein: {job['like']}\n" \
        if job.get("like") else ""


def pair_messages(task: TaskCfg, job: dict, chunks: list[Chunk], first: str, second: str) -> list[dict]:
    system = f"You write realistic, varied training data.\n{DATA_RULE}"
    if job["n"] == 1:
        shots = "\n\n".join(f"{first}: {ex.input}\n{second}: {output_text(ex.output)}" for ex in task.examples[:2])
        user = (f"Documentation excerpt:\n{document_block(chunks)}\n\nTask: {task.description.strip()}\n"
                + like_line(job, first.lower()) +
                f"Write one {first.lower()} that the excerpt answers, as {job['persona']} would ask it, "
                f"and its {second.lower()}, in this format:\n\n"
                f"{shots or f'{first}: ...' + chr(10) + f'{second}: ...'}")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    shots = "\n".join(json.dumps({"input": ex.input, "output": output_text(ex.output)}, ensure_ascii=False)
                      for ex in task.examples[:3])
    user = (f"{document_block(chunks)}\n\nTask: {task.description.strip()}\n"
            f"Write {job['n']} different training examples for this task, each answered by the document(s) above: "
            f"an {first.lower()} ('input'), its {second.lower()} ('output') using only what the documents say, and "
            f"the sentence of a document that supports it, copied exactly ('quote'). {diversity_line(job, first.lower())}\n"
            + like_line(job, first.lower())
            + (f"Examples:\n{shots}\n" if shots else "")
            + 'Reply with JSON only: {"examples": [{"input": "...", "output": "...", "quote": "..."}, ...]}')
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_pair(text: str, first: str, second: str, job: dict, chunks: list[Chunk], finish_reason: str) -> list[dict]:
    if job["n"] == 1:
        if not text.strip():
            raise TeacherOutputError("the teacher's reply is empty", kind="empty")
        m = re.search(rf"{first}\s*:\s*(.+?)\s*{second}\s*:\s*(.+)", text, re.S | re.I)
        if not m:
            raise TeacherOutputError(f"the teacher's reply lacks '{first}:' and '{second}:' lines", kind="wrong_fields")
        q, a = m.group(1).strip(), m.group(2).strip()
        return [{"input": q, "output": a, "spans": spans_for(chunks, a)}]
    out = []
    for item in example_items(text, finish_reason):
        q, a = str(item.get("input") or "").strip(), str(item.get("output") or "").strip()
        if q and a:
            out.append({"input": q, "output": a, "spans": spans_for(chunks, item.get("quote"), a)})
    if not out:
        raise TeacherOutputError("the teacher's examples lack 'input' and 'output'", kind="wrong_fields")
    return out


@dataclass(frozen=True)
class FreeText:
    """A type whose answer is free text written from the documents: `first` and `second` name
    input and answer in the teacher's prompts; `hint` ends the default system prompt."""
    name: str
    max_new_tokens: int
    first: str
    second: str
    hint: str | None = None
    exact_match: bool = True      # the set metrics include normalised exact match
    citations: bool = True        # ... and the citation rate against each item's source
    retrieval_check: bool = True  # an answer from retrieved chunks is checked against them
    metric: str = "token_f1"
    teacher_max_tokens: int = 10**6
    min_grounding: float = 0.3
    labelled: bool = False
    structured: bool = False
    judged: bool = True
    one_input_per_chunk: bool = False
    claim: str = "output"         # is the answer what the cited text says?

    def check_task(self, task: TaskCfg) -> str | None:
        return None

    def system_prompt(self, task: TaskCfg) -> str:
        desc = task.description.strip()
        return task.system_prompt or (f"{desc}\n{self.hint}" if self.hint else desc)

    def pools(self, task: TaskCfg, pile: Pile, pool_per_label: int) -> dict[tuple, list[Chunk]]:
        return topic_pools(pile)

    def teacher_schema(self, task: TaskCfg, job: dict) -> dict | None:
        if job["n"] == 1:
            return None
        item = object_schema({"input": {"type": "string"}, "output": {"type": "string"}, "quote": {"type": "string"}})
        return examples_schema(item, job["n"])

    def teacher_messages(self, task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
        return pair_messages(task, job, chunks, self.first, self.second)

    def teacher_eval_messages(self, task: TaskCfg, input_text: str) -> list[dict]:
        # Every free-text type asks the teacher (and the few-shot base) with answer's hint, generate
        # too: evaluate's teacher and base-fewshot figures were measured so.
        system = task.system_prompt or f"{task.description.strip()}\n{ANSWER_HINT}"
        msgs = [{"role": "system", "content": system}]
        for ex in task.examples:
            msgs += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": output_text(ex.output)}]
        return msgs + [{"role": "user", "content": input_text}]

    def parse_teacher(self, task: TaskCfg, job: dict, text: str, chunks: list[Chunk],
                      finish_reason: str = "stop") -> list[dict]:
        return parse_pair(text, self.first, self.second, job, chunks, finish_reason)

    def validate(self, task: TaskCfg, ex: dict, min_words: int, max_words: int) -> str | None:
        for part in ("input", "output"):
            n = len(str(ex[part]).split())
            if n < (min_words if part == "input" else 1):
                return f"{part} too short"
            if n > max_words:
                return f"{part} longer than {max_words} words"
        return None

    def parse_output(self, task: TaskCfg, text: str) -> str:
        return text.strip()

    def split_key(self, task: TaskCfg, ex: dict) -> str:
        return str((ex.get("arm") or [None])[0])

    def grounding(self, task: TaskCfg, ex: dict, source: str, similarity: float | None = None) -> float:
        return text_grounding(str(ex["output"]), source, similarity)

    def check_retrieved(self, task: TaskCfg, parsed: Any, chunks: list[Chunk]) -> tuple[Any, dict]:
        """`supported` when the answer's words are found in one span of the retrieved text."""
        if not self.retrieval_check or not isinstance(parsed, str) or not parsed.strip():
            return parsed, {"supported": None, "dropped": []}
        text = " ".join(c.text for c in chunks).lower()
        return parsed, {"supported": locate(chunks, parsed) is not None or parsed.strip().lower() in text,
                        "dropped": []}

    def kinds(self, task: TaskCfg, rows: list[dict]) -> list[Kind]:
        """The training examples, their distinct answers (a student trained on one reply gives it to
        everything) and the source documents they come from."""
        said = self.second.lower()
        outs = len({norm_value(output_text(r.get("output"))) for r in rows})
        docs = len({p.get("path") for r in rows for p in (r.get("provenance") or [])[:1]})
        return [task_kind(rows),
                Kind(f"distinct {said}s", outs, "min_distinct_outputs",
                     f"{outs} distinct {said}(s) among {len(rows)} generated training example(s)",
                     "the teacher repeats one reply: a stronger teacher, or raise teacher.temperature"),
                Kind("source documents", docs, "min_documents",
                     f"the generated training examples come from {docs} source document(s)",
                     "add documents, or raise budget.examples")]

    def decoding(self, task: TaskCfg) -> Decoding:
        return Decoding()

    def served_decoding(self, info: dict) -> Decoding:
        return Decoding()

    def score(self, task: TaskCfg, pred: Any, gold: Any) -> float:
        return token_f1(pred or "", output_text(gold))

    def item_scores(self, task: TaskCfg, expected: list, predicted: list) -> list[float]:
        return metrics.text_scores(expected, predicted)

    def summarize(self, task: TaskCfg, expected: list, predicted: list, sources: list | None = None, *,
                  seed: int = 0, reps: int = 1000) -> dict:
        return metrics.text_summary(expected, predicted, sources, exact_match=self.exact_match,
                                    citations=self.citations, seed=seed, reps=reps)


ANSWER = register(FreeText(name="answer", max_new_tokens=128, first="Question", second="Answer", hint=ANSWER_HINT))
