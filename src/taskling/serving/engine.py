"""The engine contract of `taskling serve` and `taskling predict`: what every engine does and
the values it speaks in.

Both engines (`llama`: a GGUF through llama.cpp; `hf`: an HF folder through transformers)
expose the same few methods: prompt ids for a chat or a text, generation of one prompt with
text streamed as it comes and a cancel flag, a batch of conversations, and the
log-probability of each label as the whole answer (a label task's answer is always a label,
with a probability). Neither is thread-safe: callers hold `engine.lock`. `target` finds what
to serve and loads its engine; `outputs` runs its task.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..core.errors import TasklingError


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None         # constrain the answer to JSON valid against this
    logit_bias: dict[int, float] = field(default_factory=dict)
    spans: tuple[str, ...] | None = None    # constrain the answer to a run of these texts' words, a citation
                                            # [n] of one of them, or the abstention (tasks.openbook.span_rules)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str                      # stop | length | cancelled


OnText = Callable[[str], None]
Cancelled = Callable[[], bool]


class PromptTooLong(TasklingError):
    pass



class NoTask(TasklingError):
    pass


NO_TASK = ("this model has no task.json saying what its task is; serve an export (runs/<id>/export) or a "
           "bundle, or put the export's task.json beside the model")


class StopText:
    """Text as it is generated, cut at the first stop string; what is passed on to `emit`
    never includes a stop string or the start of one still being written."""

    def __init__(self, stops: tuple[str, ...], emit: OnText | None):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.emit, self.text, self.sent, self.stopped = emit, "", 0, False

    def add(self, piece: str) -> bool:
        """Append; True when a stop string has ended the text."""
        self.text += piece
        cuts = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if cuts:
            self.text, self.stopped = self.text[:min(cuts)], True
            self._send(len(self.text))
            return True
        self._send(len(self.text) - self.hold)
        return False

    def finish(self) -> str:
        self._send(len(self.text))
        return self.text

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            if self.emit:
                self.emit(self.text[self.sent:upto])
            self.sent = upto


class Engine(Protocol):
    backend: str
    lock: threading.Lock
    n_ctx: int
    n_vocab: int                            # token ids are 0..n_vocab-1 (logit_bias is checked against it)

    def chat_ids(self, messages: list[dict]) -> list[int]: ...

    def text_ids(self, text: str) -> list[int]: ...

    def generate(self, ids: list[int], s: Sampling, on_text: OnText | None = None,
                 cancelled: Cancelled | None = None) -> Generation: ...

    def generate_many(self, convs: list[list[dict]], s: Sampling) -> list[Generation]: ...

    def label_logprobs(self, ids: list[int], labels: list[str]) -> list[float]: ...

    def close(self) -> None: ...


def room(ids: list[int], n_ctx: int, max_tokens: int) -> int:
    """How many tokens the answer may have; a prompt that leaves none is an error."""
    left = n_ctx - len(ids)
    if left <= 0:
        raise PromptTooLong(f"the prompt has {len(ids)} tokens; this model's context holds {n_ctx} "
                            "(prompt and answer together)")
    return min(max_tokens, left)
