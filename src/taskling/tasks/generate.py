"""generate: an instruction in, free text out (answer's machinery, other words).

Metric: token F1 against the reference text.
"""
from __future__ import annotations

from ..core.config import TaskCfg
from ..data.pile import Chunk
from .answer import parse_output, pools, score, teacher_eval_messages, teacher_schema, validate  # noqa: F401
from .answer import pair_messages, parse_pair

METRIC = "token_f1"
MAX_NEW_TOKENS = 256
FIRST, SECOND = "Instruction", "Response"


def system_prompt(task: TaskCfg) -> str:
    return task.system_prompt or task.description.strip()


def teacher_messages(task: TaskCfg, job: dict, chunks: list[Chunk]) -> list[dict]:
    return pair_messages(task, job, chunks, FIRST, SECOND)


def parse_teacher(task: TaskCfg, job: dict, text: str, chunks: list[Chunk], finish_reason: str = "stop") -> list[dict]:
    return parse_pair(text, FIRST, SECOND, job, chunks, finish_reason)
