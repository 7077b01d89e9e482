"""The student: section of taskling.yaml (`StudentCfg`), and open- or closed-book: whether the student reads the organisation's documents when it answers.

`student.retrieval` in taskling.yaml (`RetrievalCfg`): closed-book, the student answers from what
training put in its weights; open-book, every input is shown with the k pile chunks the retriever
(data/retrieve.py `Retriever`) finds for it, and the student is trained RAFT-style to answer from
them, cite the one it used as `[n]`, and say `ABSTAIN` when none holds the answer. `is_open`
decides it for a task; the libraries that act on it are `data.retrieve` (the retriever),
`tasks` (the one prompt layout and the citations) and `student.openbook` (the training rows).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What an open-book student says when its documents do not hold the answer: one sentence, trained
# and scored as an answer of its own (evaluate's abstention figures match it exactly).
ABSTAIN = "The documents do not contain the answer."
EMBEDDED_MODEL = "smollm2-135m-instruct"  # the student (and teacher) taskling ships with
OPEN_TYPES = ("answer", "extract")  # the types `auto` opens: their answers are facts in the documents


class RetrievalCfg(BaseModel):
    """student.retrieval: `mode: on` trains and runs the student open-book, `off` closed-book, `auto`
    open-book for answer and extract tasks when the pile holds documents (never classify or generate)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "on", "off"] = "off"
    k: int = Field(4, ge=1, le=20)                # chunks shown with each input
    p: float = Field(0.8, ge=0, le=1)             # training: the share of examples whose source chunk is among them
    chunk_chars: int = Field(600, ge=40, le=20000)  # each chunk is cut to this many characters (at a word)
    focus: int | None = Field(2, ge=0, le=100)    # answer tasks: each chunk shown as its paragraph (a table's
                                                  # row) that best matches the input, with up to this many
                                                  # either side (data.retrieve.focus); null: from its start
    missing: Literal["abstain", "memory"] = "abstain"  # training target when only distractors are shown:
                                                  # ABSTAIN, or the answer all the same (from memory)
    spans: bool = False                           # answer tasks: the answer is copied from the chunks shown
                                                  # (constrained decoding: a run of their words, a citation, or
                                                  # ABSTAIN), so a name that is in no chunk cannot be produced

    @field_validator("mode", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        # YAML reads on/off/yes/no as booleans
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def is_open(rc: RetrievalCfg, task_type: str, has_documents: bool) -> bool:
    """Whether a task's student is open-book: `on` always (over an empty pile it is shown no documents
    and answers as closed-book), `off` never, `auto` for answer and extract when the pile has documents."""
    if rc.mode == "auto":
        return task_type in OPEN_TYPES and has_documents
    return rc.mode == "on"


class StudentCfg(BaseModel):
    """student: the small model that is tuned, and whether it reads the documents when it answers."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = EMBEDDED_MODEL
    retrieval: RetrievalCfg = RetrievalCfg()
