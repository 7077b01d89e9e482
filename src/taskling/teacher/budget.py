"""How much of the run's teacher budget one round may spend, and how many examples a call asks for.

The generate stage plans its jobs from these and the loop's analysis plans the next round's
with the same numbers: `limits(ctx)` is this round's share of the budgets (its examples, and
what earlier rounds' finished generate stages left of the run's tokens and money).
"""
from __future__ import annotations

import math

from ..core.config import EMBEDDED_MODEL, Config
from ..core.manifests import GenerateManifest
from ..core.workspace import Context


def per_call(cfg: Config) -> int:
    """Examples one teacher call is asked for: one from a weak teacher, four from a capable one."""
    if cfg.generate.examples_per_call:
        return cfg.generate.examples_per_call
    weak = cfg.teacher.backend == "scripted" or cfg.teacher.model == EMBEDDED_MODEL
    return 1 if weak else 4


def round_examples(cfg: Config) -> int:
    """Examples one round asks for: the whole budget in a single pass, else an equal part of it per round."""
    if cfg.loop.rounds == 1:
        return cfg.budget.examples
    return cfg.loop.round_examples or math.ceil(cfg.budget.examples / cfg.loop.rounds)


def spent_before(ctx: Context) -> dict:
    """What earlier rounds of this run spent (their finished generate manifests)."""
    out = {"examples": 0, "teacher_tokens": 0, "cost": 0.0}
    for r in range(ctx.round):
        m = GenerateManifest.read(ctx.stage_dir("generate", r))
        if m is not None:
            out["examples"] += m.counts.examples
            out["teacher_tokens"] += m.counts.teacher_tokens
            out["cost"] += m.counts.cost
    return out


def limits(ctx: Context) -> dict:
    """This round's share of the budgets: its examples, and what is left of the run's tokens and money."""
    b, spent = ctx.cfg.budget, spent_before(ctx)
    return {"examples": max(0, min(round_examples(ctx.cfg), b.examples - spent["examples"])),
            "teacher_tokens": b.teacher_tokens - spent["teacher_tokens"],
            "money": None if b.money is None else b.money - spent["cost"]}
