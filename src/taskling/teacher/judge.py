"""The LLM judge and the self-consistency check of the curate stage.

Judge: any backend (often the teacher) reads one example with the source it
cites and scores it 1-5 on a rubric (task fit, correctness against the
source, clarity) with a short reason, as JSON (schema-constrained where the
backend can). An example whose mean score is under the threshold is dropped
with the judge's reason. A reply that does not parse leaves the example
unjudged (kept, and counted).

Self-consistency: the teacher is asked to do the task itself on the
example's input, `samples` times at a sampling temperature; the example is
kept only when every answer agrees with its output (the task's own metric
reaches 0.5: the same label, the same fields, a close answer).

Calls go through the call log (purpose "judge" / "consistency"), so re-runs
cost nothing and `taskling log --purpose judge` shows them.
"""
from __future__ import annotations

from ..core import tasktype
from .backends import Request
from ..tasks import DATA_RULE, document_block, object_schema, output_text, parse_json_loose

CRITERIA = ("task_fit", "correct", "clear")
SCHEMA = object_schema({"task_fit": {"type": "integer", "minimum": 1, "maximum": 5},
                        "correct": {"type": "integer", "minimum": 1, "maximum": 5},
                        "clear": {"type": "integer", "minimum": 1, "maximum": 5},
                        "reason": {"type": "string"}})


def messages(task_cfg, ex: dict, chunks: list) -> list[dict]:
    user = (f"{document_block(chunks) if chunks else '(no source)'}\n\n"
            f"Task of the model being trained: {task_cfg.description.strip()}\n"
            f"Training example:\nINPUT: {ex['input']}\nOUTPUT: {output_text(ex['output'])}\n\n"
            "Score the example from 1 (bad) to 5 (excellent) on: task_fit (is it a realistic example of this task?), "
            "correct (is the output right according to the source above?), clear (is it unambiguous and well "
            "written?), and give a one-sentence reason. "
            'Reply with JSON only: {"task_fit": n, "correct": n, "clear": n, "reason": "..."}')
    return [{"role": "system", "content": f"You are a strict reviewer of training data.\n{DATA_RULE}"},
            {"role": "user", "content": user}]


def parse(text: str) -> dict | None:
    """{"score": mean 1..5, per-criterion scores, "reason"} or None when unusable."""
    val = parse_json_loose(text)
    if not isinstance(val, dict):
        return None
    scores = {}
    for c in CRITERIA:
        try:
            scores[c] = min(5.0, max(1.0, float(val[c])))
        except (KeyError, TypeError, ValueError):
            return None
    return {"score": round(sum(scores.values()) / len(scores), 3), **scores,
            "reason": str(val.get("reason", "")).strip()[:300]}


def judge(backend, task_cfg, examples: list[dict], chunks_of, max_tokens: int = 120) -> list[dict | None]:
    """One verdict (or None) per example; `chunks_of(ex)` gives its cited chunks."""
    reqs = [Request(messages(task_cfg, ex, chunks_of(ex)), max_tokens=max_tokens, temperature=0.0,
                    json_schema=SCHEMA) for ex in examples]
    return [parse(r.text) if r.error is None else None for r in backend.generate(reqs)]


def consistent(backend, task_cfg, examples: list[dict], samples: int = 2, temperature: float = 0.7,
               max_tokens: int | None = None) -> list[bool]:
    """Whether each example's output agrees with `samples` answers of the teacher to its input."""
    task = tasktype.get(task_cfg.type)
    reqs = [Request(task.teacher_eval_messages(task_cfg, ex["input"]), max_tokens=max_tokens or task.max_new_tokens,
                    temperature=temperature, seed=s) for ex in examples for s in range(samples)]
    res = backend.generate(reqs)
    out = []
    for i, ex in enumerate(examples):
        answers = res[i * samples:(i + 1) * samples]
        out.append(all(r.error is None and task.score(task_cfg, task.parse_output(task_cfg, r.text), ex["output"]) >= 0.5
                       for r in answers))
    return out


# -- judging a model's answers (evaluate, for answer and generate tasks) ------------------------------------------
ANSWER_SCHEMA = object_schema({"score": {"type": "integer", "minimum": 1, "maximum": 5}, "reason": {"type": "string"}})
PAIR_SCHEMA = object_schema({"better": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}})


def _answer_messages(task_cfg, item: dict, answer: str, chunks: list) -> list[dict]:
    ref = f"Reference answer: {output_text(item['output'])}\n" if item.get("output") is not None else ""
    user = (f"{document_block(chunks) if chunks else '(no source)'}\n\nTask: {task_cfg.description.strip()}\n"
            f"INPUT: {item['input']}\n{ref}ANSWER TO SCORE: {answer}\n\n"
            "Score the answer from 1 (wrong or useless) to 5 (correct, complete and clear), judged against the "
            'source and the reference. Reply with JSON only: {"score": n, "reason": "..."}')
    return [{"role": "system", "content": f"You are a strict grader.\n{DATA_RULE}"}, {"role": "user", "content": user}]


def _pair_messages(task_cfg, item: dict, a: str, b: str, chunks: list) -> list[dict]:
    user = (f"{document_block(chunks) if chunks else '(no source)'}\n\nTask: {task_cfg.description.strip()}\n"
            f"INPUT: {item['input']}\nANSWER A: {a}\nANSWER B: {b}\n\n"
            "Which answer does the task better, judged against the source? "
            'Reply with JSON only: {"better": "A" or "B" or "tie", "reason": "..."}')
    return [{"role": "system", "content": f"You are a strict grader.\n{DATA_RULE}"}, {"role": "user", "content": user}]


def rate(backend, task_cfg, items: list[dict], answers: list[str], chunks_of, max_tokens: int = 80) -> list[float | None]:
    """A 1-5 judge score per answer (None when the judge's reply does not parse)."""
    reqs = [Request(_answer_messages(task_cfg, it, a, chunks_of(it)), max_tokens=max_tokens, temperature=0.0,
                    json_schema=ANSWER_SCHEMA) for it, a in zip(items, answers)]
    out = []
    for r in backend.generate(reqs):
        val = parse_json_loose(r.text) if r.error is None else None
        try:
            out.append(min(5.0, max(1.0, float(val["score"]))))
        except (KeyError, TypeError, ValueError):
            out.append(None)
    return out


def compare(backend, task_cfg, items: list[dict], first: list[str], second: list[str], chunks_of,
            max_tokens: int = 80) -> list[float | None]:
    """Per item, how often `first` beats `second`: each pair is judged twice with the answers in both
    orders (judges favour a position), a win 1, a tie 0.5; the mean of the usable verdicts, or None."""
    reqs = []
    for it, a, b in zip(items, first, second):
        ch = chunks_of(it)
        reqs += [Request(_pair_messages(task_cfg, it, a, b, ch), max_tokens=max_tokens, temperature=0.0,
                         json_schema=PAIR_SCHEMA),
                 Request(_pair_messages(task_cfg, it, b, a, ch), max_tokens=max_tokens, temperature=0.0,
                         json_schema=PAIR_SCHEMA)]
    res = backend.generate(reqs)
    out = []
    for i in range(len(items)):
        wins = []
        for r, first_is in ((res[2 * i], "A"), (res[2 * i + 1], "B")):
            val = parse_json_loose(r.text) if r.error is None else None
            verdict = str(val.get("better", "")).strip().upper() if isinstance(val, dict) else ""
            if verdict in ("A", "B"):
                wins.append(1.0 if verdict == first_is else 0.0)
            elif verdict == "TIE":
                wins.append(0.5)
        out.append(sum(wins) / len(wins) if wins else None)
    return out
