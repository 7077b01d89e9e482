"""Pipe tables in a document's text: "| a | b |" and "a | b" lines, for every format whose converter
reads no tables of its own (Markdown, text, DOCX and PPTX tables written as "cell | cell", EPUB and
e-mail bodies, PDF text where cell boundaries survive). `convert` calls `pipe_tables` on the text
the pile will hold, so each row's offset places it in the pile's chunks.
"""
from __future__ import annotations

import html
import re
from itertools import accumulate

from . import Table

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_CAPTION = re.compile(r"^\s*(?:\*\*|__)?(?:table|tab\.)\s*[\w.-]*\s*[:.—–-]\s*(.+?)\s*$", re.I)
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_PIPE = re.compile(r"(?<!\\)\|")
_RULE = re.compile(r":?-+:?")
_MARKUP = re.compile(r"[`<\[*_~\\&]")   # what Markdown markup, a tag or an entity starts with


def _split_pipes(line: str) -> list[str] | None:
    """The cells of a pipe-table line ("| a | b |", "a | b", " | a | b"), escaped pipes kept; None for other lines."""
    s = line.strip()
    if not _PIPE.search(s):
        return None
    parts = _PIPE.split(s)[1 if s.startswith("|") else 0:]
    if len(s) > 1 and s.endswith("|") and not s.endswith("\\|"):
        parts = parts[:-1]
    return [p.strip() for p in parts] if len(parts) >= 2 or s.startswith("|") else None


def _is_rule(cells: list[str]) -> bool:
    return any(cells) and all(_RULE.fullmatch(c.replace(" ", "")) for c in cells if c)


def _plain(cell: str) -> str:
    """A Markdown cell as plain text: code spans kept as written; emphasis, links, images,
    tags and backslash escapes removed; HTML entities decoded."""
    if not _MARKUP.search(cell):  # nothing any rule below would change
        return " ".join(cell.split())
    out = []
    for part in re.split(r"(`+[^`]*?`+)", cell):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part.strip("`").strip())
            continue
        part = re.sub(r"<br\s*/?>", " ", part, flags=re.I)
        part = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", part)
        part = re.sub(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]", lambda m: m.group(1) or m.group(2), part)
        part = re.sub(r"<(https?://[^>\s]+)>", r"\1", part)
        part = re.sub(r"</?[A-Za-z][^>]*>", "", part)
        part = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", part)
        part = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", part)
        part = re.sub(r"(?<![\w\\])_(?=\S)(.+?)(?<=\S)_(?!\w)", r"\1", part)
        part = re.sub(r"~~(.+?)~~", r"\1", part)
        part = re.sub(r"\\([\\`*_{}\[\]()#+\-.!|~<>])", r"\1", part)
        out.append(html.unescape(part))
    return " ".join("".join(out).split())


def pipe_tables(text: str, fmt: str) -> list[Table]:
    """Pipe tables in a document's text. In Markdown a table needs its alignment row, as in GFM;
    elsewhere (DOCX and PPTX tables, text) a run of two or more pipe lines is one, its first row the
    header. Rows that start with "|" may be apart by blank lines (the text of an HTML table).
    A table is named by a "Table 2: ..." caption line above it, else the Markdown heading above it."""
    if "|" not in text:
        return []
    strict = fmt == "markdown"
    clean = _plain if fmt in ("markdown", "text", "rst") else (lambda c: " ".join(c.split()))
    lines = text.split("\n")
    offsets = [0, *accumulate(len(line) + 1 for line in lines)]
    out: list[Table] = []
    block: list[tuple[int, list[str]]] = []
    name = heading = None
    prev = fence = ""

    def close() -> None:
        rule = len(block) >= 2 and _is_rule(block[1][1])
        body = [(off, [clean(c) for c in cells]) for off, cells in block[2 if rule else 1:] if not _is_rule(cells)]
        if body and (rule or not strict):
            out.append(Table(name, [clean(c) for c in block[0][1]], [cells for _, cells in body], [],
                             [off for off, _ in body]))
        block.clear()

    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if m and (not fence or m.group(1)[0] == fence[0]):  # a table inside a code block is an example, not data
            close()
            fence = "" if fence else m.group(1)
        elif fence:
            continue
        elif (cells := _split_pipes(line)) is not None:
            if not block:
                cap = _CAPTION.match(prev)
                name = clean(cap.group(1)).strip("*_ ") if cap else heading
            block.append((offsets[i], cells))
        elif not line.strip() and block and not strict and text[block[-1][0]:].lstrip().startswith("|"):
            pass  # an HTML table's text keeps its rows apart by blank lines
        else:
            close()
            if h := _HEADING.match(line):
                heading = clean(h.group(2))
        prev = line if line.strip() else prev
    close()
    return out
