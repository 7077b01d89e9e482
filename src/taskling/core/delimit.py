"""Documents handed to an LLM as delimited data that the documents themselves cannot end.

A prompt puts each excerpt between `<document id="1">` and `</document>` (tasks.document_block).
Inside an excerpt, anything that reads as a `<document` or `</document` tag once normalised
(`defuse`: HTML entities decoded, NFKC so that fullwidth `＜／ｄｏｃｕｍｅｎｔ＞` is `</document>`,
zero-width characters dropped, blanks inside the tag ignored) has its `<` shown as `‹`, so it is
text, not a tag, to any reader: a near-miss spelling cannot close the block either.
"""
from __future__ import annotations

import html
import re
import unicodedata

INVISIBLE = frozenset("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
                      "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
                      "\u3164\ufeff\uffa0")
ENTITY = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};?)")
TAG = re.compile(r"<\s*/?\s*document", re.IGNORECASE)
SAFE_LT = "\u2039"  # ‹


def normalised(text: str) -> tuple[str, list[int]]:
    """`text` as a reader may see it (entities decoded, NFKC, invisible characters dropped) and, for
    each character of it, the index in `text` where it came from."""
    out: list[str] = []
    src: list[int] = []
    i = 0
    for m in ENTITY.finditer(text):
        expand(text[i:m.start()], i, out, src)
        decoded = html.unescape(m.group(0))
        if decoded != m.group(0):
            for ch in unicodedata.normalize("NFKC", decoded):
                if ch not in INVISIBLE:
                    out.append(ch)
                    src.append(m.start())
        else:
            expand(m.group(0), m.start(), out, src)
        i = m.end()
    expand(text[i:], i, out, src)
    return "".join(out), src


def expand(part: str, at: int, out: list[str], src: list[int]) -> None:
    for k, ch in enumerate(part):
        if ch in INVISIBLE:
            continue
        norm = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        for c in norm:
            if c not in INVISIBLE:
                out.append(c)
                src.append(at + k)


def defuse(text: str) -> str:
    """`text` with every tag look-alike of <document or </document made plain text (its '<' as '‹')."""
    if "document" not in text.lower() and not any(ord(c) > 127 or c == "&" for c in text):
        return text  # the common case: nothing could read as the tag
    norm, src = normalised(text)
    starts = []  # [a, b): the original characters that read as a tag's '<' (and invisible ones after it)
    for m in TAG.finditer(norm):
        j = m.start()
        starts.append((src[j], src[j + 1] if j + 1 < len(src) else len(text)))
    if not starts:
        return text
    out, pos = [], 0
    for a, b in starts:
        out.append(text[pos:a])
        out.append(SAFE_LT)
        pos = max(b, a + 1)
    out.append(text[pos:])
    return "".join(out)
