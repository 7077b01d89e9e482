"""The `scripted` backend for tests: answers come from a Python function.

    set_script(lambda messages: "a reply")   # before open_backend(...)

Without a script set in the process (e.g. when the real CLI runs in a
subprocess) the model name picks a built-in script:
  echo-question  writes a question from words of the quoted document excerpt,
                 and answers a classification prompt with the label whose
                 name shares most words with the input (a toy teacher);
  garbage        replies with nothing usable (for error-path tests).

TASKLING_SCRIPTED_DELAY_S in the environment makes every answer take that
long (a stand-in for a real teacher's latency, e.g. in the cluster tests).
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Callable

from ...core.config import ModelCfg
from ...core.delimit import BLOCK
from ...core.errors import TasklingError
from . import Capabilities, OnResult, Request, Result, register, run_each

Script = Callable[[list[dict]], str]
_SCRIPT: Script | None = None


def set_script(fn: Script | None) -> None:
    global _SCRIPT
    _SCRIPT = fn


def _echo_question(messages: list[dict]) -> str:
    text = messages[-1]["content"]
    quoted = BLOCK.search(text)
    if quoted is None:  # asked to do the task: pick the label named most like the input
        labels = re.findall(r"^- ([\w.-]+):", messages[0]["content"], re.M)
        if not labels:
            return "I do not know."
        words = set(re.findall(r"\w+", text.lower()))
        return max(labels, key=lambda lab: (len(words & set(re.findall(r"\w+", lab.lower()))), -labels.index(lab)))
    words = [w for w in re.findall(r"[A-Za-z_]{4,}", quoted.group(2))]
    if not words:
        return ""
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    picked = [words[(h >> (8 * i)) % len(words)] for i in range(4)]
    return f"How do I use {picked[0]} with {picked[1]} and {picked[2]} {picked[3]}?"


BUILTIN: dict[str, Script] = {"echo-question": _echo_question, "garbage": lambda messages: "\n\n"}


@register("scripted")
class ScriptedBackend:
    capabilities = Capabilities(batching=True)

    def __init__(self, cfg: ModelCfg, threads: int | None = None):
        self.name = cfg.model
        self.calls = 0
        if _SCRIPT is None and cfg.model not in BUILTIN:
            raise TasklingError(f"teacher.model '{cfg.model}' is not a built-in script of the scripted backend; "
                                f"use one of {', '.join(BUILTIN)}")
        self.script = _SCRIPT or BUILTIN[cfg.model]

    def describe(self) -> dict:
        return {"backend": "scripted", "model": self.name}

    def _one(self, r: Request) -> Result:
        self.calls += 1
        delay = float(os.environ.get("TASKLING_SCRIPTED_DELAY_S") or 0)
        if delay > 0:
            time.sleep(delay)
        text = self.script(r.messages)
        return Result(text, sum(len(m["content"].split()) for m in r.messages), len(text.split()), 0.0)

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Result]:
        return run_each(requests, self._one, on_result)

    def close(self) -> None:
        pass
