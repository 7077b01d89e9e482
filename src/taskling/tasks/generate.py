"""generate: an instruction in, free text out (answer's machinery, other words).

Metric: token F1 against the reference text (ROUGE-L beside it); no exact match,
no citation rate, no check against retrieved chunks: the text is written, not quoted.
"""
from __future__ import annotations

from ..core.tasktype import register
from .answer import FreeText

GENERATE = register(FreeText(name="generate", max_new_tokens=256, first="Instruction", second="Response",
                             exact_match=False, citations=False, retrieval_check=False))
