"""Documents handed to an LLM as delimited data that the documents themselves cannot end.

A prompt puts each excerpt between `<document-KEY id="1">` and `</document-KEY>` (tasks.document_block),
where KEY (`nonce`) is a per-call key drawn from the call's own excerpts: a document cannot know the
key of the block it sits in, since the key changes with every character of it, so it cannot spell the
block's closing tag; the key is a digest, not a random draw, so a repeated call is the same prompt and
the call cache still answers it. Inside an excerpt, as a second line of defence, anything that reads as a `<document` or `</document` tag once normalised
(`defuse`: HTML entities decoded, NFKC so that fullwidth `＜／ｄｏｃｕｍｅｎｔ＞` is `</document>`,
zero-width characters dropped, blanks inside the tag ignored) has its `<` shown as `‹`, so it is
text, not a tag, to any reader: a near-miss spelling cannot close the block either.

A chat template's control tokens are defused the same way (`<|im_end|>`, `<|im_start|>`, `<|eot_id|>`:
anything opening `<|`, and Gemma's `<start_of_turn>`, `<end_of_turn>`, Llama 2's `<s>`, `</s>`): a
tokenizer reads those strings in a message's text as the tokens themselves, so a chunk that spelled
`<|im_end|><|im_start|>system` would end the user's turn and open a system turn of its own, outside
every document block. So are the turn markers in square brackets of Mistral's tokenizers (`[INST]`,
`[/INST]`, `[SYSTEM_PROMPT]`, `[/SYSTEM_PROMPT]`, `[TOOL_CALLS]`, `[AVAILABLE_TOOLS]`, `[TOOL_RESULTS]`,
`[TOOL_CONTENT]` and their closing forms) and Llama 2's `<<SYS>>`, `<</SYS>>`: their `[` is shown as
`⁅` (their `<` as `‹`). Brackets that mark nothing (`[1]`, `[x]`, `[NOTE]`) stay as they are.
"""
from __future__ import annotations

import hashlib
import html
import re
import unicodedata

INVISIBLE = frozenset("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
                      "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
                      "\u3164\ufeff\uffa0")
ENTITY = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};?)")
TAG = re.compile(r"<\s*/?\s*document|<\s*\||<\s*/?\s*(?:start_of_turn|end_of_turn|s)\s*>|<\s*<\s*/?\s*SYS\s*>\s*>"
                 r"|\[\s*/?\s*(?:INST|SYSTEM_PROMPT|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS|TOOL_CONTENT)\s*\]",
                 re.IGNORECASE)
SAFE_LT = "\u2039"  # ‹
SAFE_LSQB = "\u2045"  # ⁅ (NFKC keeps it: a reader that folds text does not get the '[' back)
# A block as tasks.document_block writes it, for code that reads a prompt back (the scripted and toy
# teachers): group 1 is the key, group 2 the text; the closing tag must carry the same key.
BLOCK = re.compile(r"<document(-[0-9a-f]+|)(?:\s[^>]*)?>(.*?)</document\1>", re.DOTALL)


def nonce(texts: list[str]) -> str:
    """The key of one call's document tags: 8 hex digits of a digest of every excerpt of the call."""
    h = hashlib.blake2b(digest_size=4, person=b"taskling-doc")
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


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
    """`text` with every tag look-alike of <document or </document, and every chat control token or turn
    marker, made plain text (its opening '<' as '‹', its '[' as '⁅')."""
    if "<" not in text and "[" not in text and not any(ord(c) > 127 or c == "&" for c in text):
        return text  # the common case: nothing could read as a tag
    norm, src = normalised(text)
    # (a, b, safe): text[a:b] reads as a tag's '<' or '[' (with the invisible characters after it); safe
    # shows instead
    starts = []
    for m in TAG.finditer(norm):
        j = m.start()
        safe = SAFE_LT if norm[j] == "<" else SAFE_LSQB
        starts.append((src[j], src[j + 1] if j + 1 < len(src) else len(text), safe))
    if not starts:
        return text
    out, pos = [], 0
    for a, b, safe in starts:
        out.append(text[pos:a])
        out.append(safe)
        pos = max(b, a + 1)
    out.append(text[pos:])
    return "".join(out)
