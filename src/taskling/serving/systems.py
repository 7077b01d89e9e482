"""The systems evaluate compares, asked one way: the tuned student, its base (zero- or few-shot)
and the teacher, closed- or open-book (`open_conversations`: the chunks the retriever finds put
in front, the layout the open-book student was trained on). Evaluate's scores and the UI's
playground both prompt through here, so what a person tries in the playground is what the
scores measure.
"""
from __future__ import annotations

from .. import tasks
from ..tasks import openbook
from ..core.config import Config
from ..student import infer, scoring
from ..teacher.backends import Request


def conversations(cfg: Config, task, who: str, items: list[dict]) -> list[list[dict]]:
    """Each item's chat as `who` is asked it: the few-shot teacher prompt, or the student's own."""
    if who.startswith("base-fewshot") or who == "teacher":
        return [task.teacher_eval_messages(cfg.task, it["input"]) for it in items]
    return [tasks.student_messages(task.system_prompt(cfg.task), it["input"]) for it in items]


def predict_local(model, tok, who: str, convs: list[list[dict]], task, cfg: Config,
                  shown: list[list] | None = None) -> list[dict]:
    """A local model's answers (student or base); `-constrained` ones limited to the labels or the schema.
    The tuned student answers a labelled task as it is served (serving.outputs, `taskling try`,
    predict): every label scored as the whole answer, the most likely one chosen; never its free
    text, which a user of the exported student never sees. Open-book answers (`shown`: the chunks each
    conversation holds) are copied from those chunks when student.retrieval.spans says so."""
    decoding = task.decoding(cfg.task)
    if decoding.labels is not None and (who in ("student", "student-open") or who.endswith("-constrained")):
        return scoring.choose(model, tok, convs, list(decoding.labels), batch_size=cfg.evaluate.batch_size)
    schema = decoding.json_schema if who.endswith("-constrained") else None
    grammars = None
    if shown is not None and cfg.student.retrieval.spans and not decoding.constrained:
        chars = cfg.student.retrieval.chunk_chars
        grammars = [openbook.span_lark(openbook.shown_texts(chunks, chars)) for chunks in shown]
    return infer.generate(model, tok, convs, max_new_tokens=task.max_new_tokens, batch_size=cfg.evaluate.batch_size,
                          json_schema=schema, grammars=grammars)


def predict_teacher(backend, convs: list[list[dict]], task) -> list[dict]:
    """The teacher's answers through its backend, greedy."""
    reqs = [Request(c, max_tokens=task.max_new_tokens, temperature=0.0) for c in convs]
    # Cached replies cost nothing now; latency is that of the original call.
    return [{"text": r.text if r.error is None else "", "prompt_tokens": r.prompt_tokens,
             "completion_tokens": r.completion_tokens, "latency_s": r.latency_s, "cost": r.cost}
            for r in backend.generate(reqs)]


def open_conversations(cfg: Config, task, items: list[dict], book,
                       found: list[list] | None = None) -> tuple[list[list[dict]], list[list]]:
    """Each item's open-book chat (the student's prompt with the chunks `book`, a data.retrieve.Retriever,
    finds for its input: the layout it was trained on), and those chunks (`found`: already retrieved)."""
    found = [book.find(str(it["input"])) for it in items] if found is None else found
    system = task.system_prompt(cfg.task)
    return [openbook.open_messages(system, str(it["input"]), ch, book.chunk_chars) for it, ch in zip(items, found)], found


def with_citations(rows: list[dict], found: list[list]) -> None:
    """Open-book answers, in place: the trailing `[n]` taken off the output (kept in raw_output) and
    resolved to the chunks it names (`citations`, each with the span the answer rests on, as /v1/task
    gives them), with the keys of every chunk shown (`retrieved`)."""
    for row, chunks in zip(rows, found):
        text, nums = openbook.split_citations(row["output"])
        row.update(raw_output=row["output"], output=text, citations=openbook.cited_chunks(nums, chunks, text),
                   retrieved=[c.key for c in chunks])
