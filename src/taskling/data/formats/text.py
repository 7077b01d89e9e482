"""Plain text (any common encoding), Markdown, reStructuredText, HTML, JSON and JSONL."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from . import ConvertError, Extracted, Limits, Segment, register

TEXT_EXT = {".txt": "text", ".text": "text", ".rst": "rst", ".md": "markdown", ".markdown": "markdown",
            ".log": "text", ".org": "text", ".adoc": "text"}
HTML_EXT = (".html", ".htm", ".xhtml")


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


def cut_long_lines(text: str, limits: Limits, warnings: list[str]) -> str:
    """Lines over limits.max_line_chars (minified dumps, binary-ish text) are cut."""
    if len(text) <= limits.max_line_chars or max(map(len, text.split("\n"))) <= limits.max_line_chars:
        return text
    lines, cut = [], 0
    for line in text.split("\n"):
        if len(line) > limits.max_line_chars:
            cut += 1
            line = line[: limits.max_line_chars]
        lines.append(line)
    warnings.append(f"{cut} line(s) longer than {limits.max_line_chars} characters were cut")
    return "\n".join(lines)


def convert_text(data: bytes, name: str, limits: Limits) -> Extracted:
    text, enc = decode_text(data)
    warnings: list[str] = []
    text = cut_long_lines(text.replace("\r\n", "\n").replace("\r", "\n"), limits, warnings)
    ext = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    fmt = TEXT_EXT.get("." + ext, "text")
    return Extracted([Segment(text, "", "text")], fmt, f"stdlib decode ({enc})", warnings)


def convert_html(data: bytes, name: str, limits: Limits) -> Extracted:
    raw, enc = decode_text(data)
    warnings: list[str] = []
    parser = _HTMLText()
    parser.feed(raw)
    parser.close()
    title = parser.title.strip()
    text = cut_long_lines(parser.text(), limits, warnings)
    return Extracted([Segment(text, "", "text")], "html", f"stdlib html.parser ({enc})", warnings,
                     meta={"title": title} if title else {})


def _flatten(value, prefix: str = "", out: list[str] | None = None, depth: int = 0) -> list[str]:
    """key.path: value lines, so a JSON record reads as text and keeps its field names."""
    out = [] if out is None else out
    if depth > 50:
        out.append(f"{prefix}: (nested too deeply)")
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(value, list) and value and all(not isinstance(v, (dict, list)) for v in value):
        out.append(f"{prefix}: {', '.join(map(str, value))}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out, depth + 1)
    else:
        out.append(f"{prefix}: {value}" if prefix else str(value))
    return out


def convert_json(data: bytes, name: str, limits: Limits) -> Extracted:
    """JSON: one segment per top-level record (array item or object key);
    JSONL: one per line. Locators are JSON paths ($[3], $.users) or line numbers."""
    text, enc = decode_text(data)
    segs: list[Segment] = []
    warnings: list[str] = []
    if name.lower().endswith((".jsonl", ".ndjson")):
        bad = 0
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            segs.append(Segment("\n".join(_flatten(rec)), f"line {n}", "record"))
        if bad:
            warnings.append(f"{bad} line(s) are not valid JSON and were skipped")
        return Extracted(segs, "jsonl", f"stdlib json ({enc})", warnings)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConvertError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if isinstance(doc, list):
        segs = [Segment("\n".join(_flatten(v)), f"$[{i}]", "record") for i, v in enumerate(doc)]
    elif isinstance(doc, dict):
        segs = [Segment("\n".join(_flatten(v, str(k))), f"$.{k}", "record") for k, v in doc.items()]
    else:
        segs = [Segment(str(doc), "$", "record")]
    return Extracted(segs, "json", f"stdlib json ({enc})", warnings)


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "table", "section", "article", "pre", "blockquote", "dt", "dd",
             "ul", "ol", "hr", "header", "footer", "main", "nav", "h1", "h2", "h3", "h4", "h5", "h6"}
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.in_title = False
        self.title = ""

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        elif tag in self.SKIP:
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
        if tag == "title":
            self.in_title = False
        elif tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.parts.append("\n\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if re.fullmatch(r"h[1-6]|p", tag) else "\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
            return
        if self.skip:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [line.rstrip() for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _is_html(data: bytes, name: str) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) and not name.lower().endswith(HTML_EXT)


register(tuple(TEXT_EXT) + ("",), "text", f"{__name__}:convert_text")
register(HTML_EXT, "html", f"{__name__}:convert_html")
register((".html-sniffed",), "html", f"{__name__}:convert_html", sniff=_is_html)
register((".json", ".jsonl", ".ndjson", ".geojson"), "json", f"{__name__}:convert_json")
