"""Structure-aware chunking: segments (pages, slides, row blocks, messages,
code units, sections) are never mixed in one chunk; inside a segment,
paragraphs are packed up to a token budget, starting anew at headings.
Offsets are char offsets into the document's extracted text. Placing a
document's table rows in the chunks that hold them (`place_tables`) is here
too, so a row example cites a chunk curate can check it against.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable

from .formats import Extracted, Table

SEARCH_AHEAD = 64   # chunks looked through for a row that has no offset in the text

CountTokens = Callable[[list[str]], list[int]]


def chunk_document(ex: Extracted, max_tokens: int, count_tokens: CountTokens) -> tuple[str, list[dict]]:
    """The document text and its chunks: start, end (char offsets into the
    text), n_tokens and a locator such as "Install > Linux (lines 40-61)",
    "page 3 > Results", "Sheet1!A1:F40", "def parse (lines 10-42) part 2"."""
    text, spans = ex.text()
    chunks: list[dict] = []
    for seg, (s0, s1) in zip(ex.segments, spans):
        if s1 <= s0:
            continue
        pieces = chunk_text(text[s0:s1], max_tokens, count_tokens)
        for k, c in enumerate(pieces, 1):
            if not seg.locator:  # one running text: heading path and line range
                loc = c["locator"]
            elif seg.kind == "code":
                loc = seg.locator + (f" part {k}" if len(pieces) > 1 else "")
            else:
                loc = seg.locator + (f" > {c['heading']}" if c["heading"] else "")
                loc += f" part {k}" if len(pieces) > 1 and not c["heading"] else ""
            chunks.append({"start": s0 + c["start"], "end": s0 + c["end"], "n_tokens": c["n_tokens"], "locator": loc})
    return text, chunks


@dataclass
class Block:
    start: int
    end: int
    heading: tuple[int, str] | None  # (level, title) when the block is a heading


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^*+#])\1{2,}\s*$")
_RST_LEVEL = {"=": 1, "-": 2, "~": 3, "^": 4}


def _blocks(text: str) -> list[Block]:
    blocks = []
    for m in re.finditer(r"(?:[^\n]|\n(?!\s*\n))+", text):
        s, e = m.start(), m.end()
        body = m.group(0).strip()
        if not body:
            continue
        lines = body.split("\n")
        heading = None
        if h := _MD_HEADING.match(lines[0]):
            heading = (len(h.group(1)), h.group(2))
        elif len(lines) >= 2 and _RST_UNDERLINE.match(lines[1]) and len(lines[1].strip()) >= len(lines[0].strip()) > 0:
            heading = (_RST_LEVEL.get(lines[1][0], 3), lines[0].strip())
        blocks.append(Block(s, e, heading))
    return blocks


def chunk_text(text: str, max_tokens: int, count_tokens: Callable[[list[str]], list[int]]) -> list[dict]:
    """Pack paragraphs into chunks of at most max_tokens, starting anew at headings.

    Returns dicts with start, end (char offsets into text), n_tokens and a
    locator naming the heading path and the line range.
    """
    blocks = _blocks(text)
    if not blocks:
        return []
    sizes = count_tokens([text[b.start:b.end] for b in blocks])
    pieces: list[tuple[int, int, int, tuple[int, str] | None]] = []
    for b, n in zip(blocks, sizes):
        if n <= max_tokens:
            pieces.append((b.start, b.end, n, b.heading))
            continue
        # An oversized paragraph (a long table or code listing): cut it into
        # windows of roughly max_tokens, at line ends where possible.
        chars_per_token = max(1.0, (b.end - b.start) / n)
        width = int(max_tokens * chars_per_token * 0.9)
        s = b.start
        while s < b.end:
            e = min(b.end, s + width)
            if e < b.end:
                cut = text.rfind("\n", s + width // 2, e)
                if cut <= s:  # no line end: cut after a sentence, else between words
                    cut = max(text.rfind(". ", s + width // 2, e), text.rfind(" ", s + width // 2, e))
                e = cut + 1 if cut > s else e
            pieces.append((s, e, count_tokens([text[s:e]])[0], None))
            s = e
    chunks: list[dict] = []
    path: list[tuple[int, str]] = []
    cur: list[tuple[int, int, int]] = []
    only_headings = True  # a heading never ends up alone in a chunk
    cur_path = ""

    def flush() -> None:
        if cur:
            start, end = cur[0][0], cur[-1][1]
            line0 = text.count("\n", 0, start) + 1
            line1 = line0 + text.count("\n", start, end)
            loc = f"{cur_path} (lines {line0}-{line1})" if cur_path else f"lines {line0}-{line1}"
            chunks.append({"start": start, "end": end, "n_tokens": sum(p[2] for p in cur), "locator": loc,
                           "heading": cur_path})
            cur.clear()

    for s, e, n, heading in pieces:
        used = sum(p[2] for p in cur)
        if heading is not None:
            level, title = heading
            if level <= 3 and used > max_tokens // 4:
                flush()
            path[:] = [h for h in path if h[0] < level] + [(level, title[:80])]
        if used + n > max_tokens and not only_headings:
            flush()
        if not cur:
            cur_path = " > ".join(t for _, t in path)
            only_headings = True
        cur.append((s, e, n))
        only_headings = only_headings and heading is not None
    flush()
    return chunks


def place_tables(tables: list[Table], text: str, chunks: list[dict]) -> None:
    """Sets each table's `chunks`: per row, the ordinal of the chunk that holds it (None when none
    does), found by the row's offset in the text (pipe tables), else as the next chunk, in order, whose
    text has every one of the row's plain values. A table without a name takes the heading of the
    chunk that holds its first row ("Setup > Codes (lines 3-9)" -> "Codes")."""
    starts = [c["start"] for c in chunks]
    texts = [_squash(text[c["start"]:c["end"]]) for c in chunks]
    cursor = 0

    def by_offset(offset: int) -> int | None:
        i = bisect_right(starts, offset) - 1
        return i if i >= 0 and offset < chunks[i]["end"] else None

    def by_values(cells: list[str]) -> int | None:
        nonlocal cursor
        # JSON-encoded values are flattened differently in the text: they cannot be looked for
        needles = [_squash(c)[:200] for c in cells if c.strip() and not c.lstrip().startswith(("{", "["))]
        for i in range(cursor, min(len(chunks), cursor + SEARCH_AHEAD)) if needles else ():
            if all(n in texts[i] for n in needles):
                cursor = i
                return i
        return None

    for t in tables:
        if t.offsets:
            t.chunks = [by_offset(off) for off in t.offsets]
            first = t.chunks[0] if t.chunks else None
            if t.name is None and first is not None:
                t.name = _locator_heading(chunks[first]["locator"])
        else:
            t.chunks = [by_values(cells) for cells in t.rows]


def _squash(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _locator_heading(locator: str) -> str | None:
    """"Setup > Codes (lines 3-9)" -> "Codes"; "slide 2 — Prices" -> "Prices"; a page or line range -> None."""
    loc = re.sub(r"( \(lines \d+-\d+\)| part \d+)+$", "", locator).split(" > ")[-1].strip()
    loc = re.sub(r"^slide \d+ — ", "", loc)
    return None if not loc or re.fullmatch(r"\(start\)|page \d+|slide \d+|lines? \d+(-\d+)?", loc) else loc
