"""What a task is and what its type changes: the task: section of taskling.yaml (`TaskCfg`),
the contract every task type implements (`TaskType`), how a type's answers are constrained when
decoding (`Decoding`), what it needs enough training examples of (`Kind`, curation.enough's
floors) and the one registry of types by name that config, curation, evaluation
and serving read (`register`, `get`, `names`).

The built-in types (classify, extract, answer, generate) live in `taskling.tasks`, one module
each, and register themselves when that package is imported; `taskling/__init__` imports it, so
they are known before any config is validated. Adding a type is one module in `tasks/` that
calls `register`. TaskCfg lives here, not in `config`, because validating it needs the registry
and the registry's contract needs it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import TasklingError


class ExamplePair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input: str
    output: Union[str, dict[str, Any]]


class TaskCfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str
    type: str                  # a registered task type: classify | extract | answer | generate
    labels: dict[str, str] = {}
    output_schema: dict[str, Any] | None = None
    examples: list[ExamplePair] = []
    system_prompt: str | None = None
    input_noun: str = "input"  # what an input is called in teacher prompts: "question", "support ticket"

    @model_validator(mode="before")
    @classmethod
    def _labels_as_dict(cls, data: Any) -> Any:
        # A plain list of labels is allowed; descriptions default to the name.
        if isinstance(data, dict) and isinstance(data.get("labels"), list):
            data = {**data, "labels": {str(x): str(x) for x in data["labels"]}}
        return data

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in _TYPES:
            raise ValueError(unknown(value))
        return value

    @model_validator(mode="after")
    def _type_needs(self) -> "TaskCfg":
        why = _TYPES[self.type].check_task(self)
        if why:
            raise ValueError(why)
        return self


@dataclass(frozen=True)
class Decoding:
    """How a task's answer is constrained when decoding: scored as one of `labels` (the
    answer is always a label), generated as JSON valid against `json_schema`, or free text
    (neither)."""
    labels: tuple[str, ...] | None = None
    json_schema: dict | None = None

    @property
    def constrained(self) -> bool:
        return self.labels is not None or self.json_schema is not None


@dataclass(frozen=True)
class Kind:
    """One kind of output a task type needs enough training examples of, counted over the generated
    training examples: `name` ("label 'billing'", "field 'date'", "distinct answers"), the count `n`,
    the train setting it must reach (`floor`: "min_per_label"), what it `says` below that floor and
    what to do about it (`todo`)."""
    name: str
    n: int
    floor: str
    says: str
    todo: str


class TaskType(Protocol):
    """Everything a task type changes. Every method takes the task (taskling.yaml's task:)
    first; a type holds no state of its own. Where a parameter is a pile (`data.pile.Pile`) or
    chunks (`data.pile.Chunk`), the implementations in `tasks/` say so in their annotations
    (core may not import data)."""

    name: str                  # the task.type that selects it
    metric: str                # the headline metric (a key of `summarize`'s result)
    max_new_tokens: int        # the longest answer the student writes
    teacher_max_tokens: int    # cap on the teacher's reply when it writes one example per call
    min_grounding: float       # curate's default floor on `grounding` (curate.min_grounding)
    labelled: bool             # answers are one of task.labels (examples carry a "label")
    structured: bool           # answers are JSON objects of task.output_schema's fields
    judged: bool               # evaluate's LLM judge scores the answers (free text)
    retrieval_check: bool      # evaluate's teacher-retrieval answers are checked against the chunks
    one_input_per_chunk: bool  # an example's input is a chunk's text: k examples per call need k chunks
    claim: str                 # what grounding compares with the source: "input", "output" or "values"

    # -- the task file --------------------------------------------------------------------------
    def check_task(self, task: TaskCfg) -> str | None:
        """Why the task: section does not describe a task of this type, or None."""

    # -- prompts --------------------------------------------------------------------------------
    def system_prompt(self, task: TaskCfg) -> str:
        """The student's system prompt (training, evaluation, export, serving)."""

    def pools(self, task: TaskCfg, pile, pool_per_label: int) -> dict[tuple, list]:
        """Arms (topic, label or None) -> the pile chunks the teacher writes examples from."""

    def teacher_schema(self, task: TaskCfg, job: dict) -> dict | None:
        """The JSON schema of the teacher's reply to a generation job, when it has one."""

    def teacher_messages(self, task: TaskCfg, job: dict, chunks: list) -> list[dict]:
        """The conversation that asks the teacher for a job's examples from these chunks."""

    def teacher_eval_messages(self, task: TaskCfg, input_text: str) -> list[dict]:
        """How the teacher (or an untuned model, few-shot) is asked to do the task itself."""

    # -- parsing and checking -------------------------------------------------------------------
    def parse_teacher(self, task: TaskCfg, job: dict, text: str, chunks: list,
                      finish_reason: str = "stop") -> list[dict]:
        """The examples in a teacher's reply; raises TeacherOutputError with a kind."""

    def validate(self, task: TaskCfg, ex: dict, min_words: int, max_words: int) -> str | None:
        """Why a generated example is not a valid one, or None."""

    def parse_output(self, task: TaskCfg, text: str) -> Any:
        """A model's answer as the type compares it (a label, a dict of fields, text); None
        when it does not parse."""

    def split_key(self, task: TaskCfg, ex: dict) -> str:
        """What curation balances the selection over and looks for semantic duplicates within."""

    def grounding(self, task: TaskCfg, ex: dict, source: str, similarity: float | None = None) -> float:
        """0..1: how well the example's claim is supported by its cited source text (and, where
        given, the embedding similarity of the claim to it)."""

    def check_retrieved(self, task: TaskCfg, parsed: Any, chunks: list) -> tuple[Any, dict]:
        """An answer constrained to retrieved chunks: (answer, {"supported": ..., "dropped": [...]})."""

    def kinds(self, task: TaskCfg, rows: list[dict]) -> list[Kind]:
        """What the student needs enough of, counted over curate's generated training examples
        (`rows`), each against its floor (curation.enough): per label, per field, distinct answers."""

    # -- decoding -------------------------------------------------------------------------------
    def decoding(self, task: TaskCfg) -> Decoding:
        """How the student's answer is constrained (evaluate's constrained systems, task.json)."""

    def served_decoding(self, info: dict) -> Decoding:
        """The same, read back from an export's task.json."""

    # -- scoring --------------------------------------------------------------------------------
    def score(self, task: TaskCfg, pred: Any, gold: Any) -> float:
        """0..1 for one parsed answer against its reference."""

    def item_scores(self, task: TaskCfg, expected: list, predicted: list) -> list[float]:
        """`score` over a set, as the headline metric averages it."""

    def summarize(self, task: TaskCfg, expected: list, predicted: list, sources: list | None = None, *,
                  seed: int = 0, reps: int = 1000) -> dict:
        """Every metric of the type over a set, with "n" and bootstrap "cis" (plain JSON)."""


# -- the registry ---------------------------------------------------------------------------------------------------
_TYPES: dict[str, TaskType] = {}
_T = TypeVar("_T")


def register(task_type: _T) -> _T:
    """Make a task type selectable by its name (task.type); returns it, for `X = register(...)`."""
    name = task_type.name  # type: ignore[attr-defined]
    if name in _TYPES and _TYPES[name] != task_type:
        raise ValueError(f"task type '{name}' is registered twice")
    _TYPES[name] = task_type  # type: ignore[assignment]
    return task_type


def names() -> list[str]:
    return sorted(_TYPES)


def unknown(name: object) -> str:
    """The message for a task type nobody registered: the nearest name, and all of them."""
    near = difflib.get_close_matches(str(name), names(), n=1)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"{name!r} is not a task type{hint} (use one of {', '.join(names())})"


def get(name: str) -> TaskType:
    """The task type registered as `name`; TasklingError naming the nearest one when unknown."""
    try:
        return _TYPES[name]
    except (KeyError, TypeError):
        raise TasklingError(unknown(name)) from None
