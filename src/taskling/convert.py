"""Converters: a file's bytes to plain text, and text to structure-aware chunks.

`convert(path)` returns (text, format, converter) or raises ConvertError with
a reason a person can act on. `chunk_text` splits on headings and paragraphs
and packs blocks up to a token budget, keeping char offsets into the text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

TEXT_EXT = {".txt": "text", ".text": "text", ".rst": "text", ".md": "markdown", ".markdown": "markdown"}
HTML_EXT = {".html": "html", ".htm": "html", ".xhtml": "html"}


class ConvertError(Exception):
    pass


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes in the usual encodings; refuse binary data."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text, enc = data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise ConvertError("starts with a UTF-16 byte-order mark but is not valid UTF-16") from None
    elif data.startswith(b"\xef\xbb\xbf"):
        text, enc = data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    elif b"\x00" in data[:8192]:
        raise ConvertError("looks like a binary file (NUL bytes), not text")
    else:
        try:
            text, enc = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            try:
                text, enc = data.decode("cp1252"), "cp1252"
            except UnicodeDecodeError:
                text, enc = data.decode("latin-1"), "latin-1"
    sample = text[:8192]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    if sample and control > 0.05 * len(sample):
        raise ConvertError(f"looks like a binary file ({control} control characters in the first "
                           f"{len(sample)}), not {enc} text")
    return text, enc


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "table", "section", "article", "pre", "blockquote", "dt", "dd",
             "ul", "ol", "hr", "header", "footer", "main", "nav", "h1", "h2", "h3", "h4", "h5", "h6", "title"}
    SKIP = {"script", "style", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "pre":
            self.pre += 1
            self.parts.append("\n\n")
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag in {"p", "div", "table", "section", "ul", "ol"} else "\n")
        elif tag in {"td", "th"}:
            self.parts.append(" | ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.parts.append("\n\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if re.fullmatch(r"h[1-6]|p|title", tag) else "\n")

    def handle_data(self, data):
        if self.skip:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [line.rstrip() for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()


def convert(path: Path) -> tuple[str, str, str]:
    ext = path.suffix.lower()
    data = path.read_bytes()
    if ext in HTML_EXT:
        text, enc = decode_text(data)
        return html_to_text(text), "html", f"stdlib-html.parser ({enc})"
    if ext in TEXT_EXT or ext == "":
        text, enc = decode_text(data)
        return text.replace("\r\n", "\n"), TEXT_EXT.get(ext, "text"), f"stdlib-decode ({enc})"
    raise ConvertError(f"format '{ext}' is not supported yet (supported: {', '.join(sorted({*TEXT_EXT, *HTML_EXT}))})")


def supported(path: Path) -> bool:
    return path.suffix.lower() in TEXT_EXT or path.suffix.lower() in HTML_EXT


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
                nl = text.rfind("\n", s + width // 2, e)
                e = nl + 1 if nl > s else e
            pieces.append((s, e, count_tokens([text[s:e]])[0], None))
            s = e
    chunks: list[dict] = []
    path: list[tuple[int, str]] = []
    cur: list[tuple[int, int, int]] = []
    cur_path = ""

    def flush() -> None:
        if cur:
            start, end = cur[0][0], cur[-1][1]
            line0 = text.count("\n", 0, start) + 1
            line1 = line0 + text.count("\n", start, end)
            loc = f"{cur_path} (lines {line0}-{line1})" if cur_path else f"lines {line0}-{line1}"
            chunks.append({"start": start, "end": end, "n_tokens": sum(p[2] for p in cur), "locator": loc})
            cur.clear()

    for s, e, n, heading in pieces:
        used = sum(p[2] for p in cur)
        if heading is not None:
            level, title = heading
            if level <= 3 and used > max_tokens // 4:
                flush()
            path[:] = [h for h in path if h[0] < level] + [(level, title[:80])]
        if used + n > max_tokens:
            flush()
        if not cur:
            cur_path = " > ".join(t for _, t in path)
        cur.append((s, e, n))
    flush()
    return chunks
