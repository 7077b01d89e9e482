"""How well a source supports what an example or an answer claims, for every task type.

  - a text claim (classify's input, answer's and generate's output): the share of its content
    words (3+ letters, not stop words) found in the source, averaged with the embedding
    similarity of claim and source where curate has one (`text_grounding`);
  - values (extract's output): the share of non-empty values found in the source, compared
    as lowercase words (`value_support`).

Curate scores examples with these (TaskType.grounding) and evaluate's citation rate counts an
answer as cited when `lexical_support` reaches 60%.
"""
from __future__ import annotations

from . import words

ENGLISH_STOP = "the and of to in is that it for on with as are this be by or from at an not was which you can".split()
CONTENT_STOP = set(ENGLISH_STOP) | set("how what when where why who does do did can could should would use using i my me "
                                       "we".split())


def normalise(text: str) -> str:
    """The text as its lowercase words, one space apart."""
    return " ".join(words(text))


def content(text: str) -> set[str]:
    return {w for w in words(text) if len(w) >= 3 and w not in CONTENT_STOP}


def lexical_support(claim: str, source: str) -> float:
    """Share of the claim's content words that occur in the source."""
    c = content(claim)
    if not c:
        return 0.0
    return len(c & content(source)) / len(c)


def value_support(output: dict, source: str) -> float:
    """Share of an extraction's non-empty values found in the source (normalised)."""
    vals = [v for v in output.values() if v not in (None, "", [])] if isinstance(output, dict) else []
    if not vals:
        return 0.0
    src = f" {normalise(source)} "
    found = 0
    for v in vals:
        items = v if isinstance(v, list) else [v]
        found += all(f" {normalise(x)} " in src for x in items if normalise(x)) and any(normalise(x) for x in items)
    return found / len(vals)


def text_grounding(claim: str, source: str, similarity: float | None = None) -> float:
    """0..1: lexical support of a text claim, averaged with its embedding similarity when given."""
    lex = lexical_support(claim, source)
    if similarity is None:
        return round(lex, 4)
    return round(0.5 * lex + 0.5 * max(0.0, similarity), 4)
