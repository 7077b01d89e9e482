"""HTML: a page's text, and its <table>s as tables.

The text keeps blocks on lines of their own and headings as "# " so the chunker finds sections;
`HTMLText` is also how EPUB chapters and HTML mail bodies are read. A table keeps its caption
(else the nearest heading above it), its first row as the header and colspan and rowspan filled
in; its rows are "table N, row K". Every parser here is a `LinearHTMLParser`: Python 3.11's
html.parser takes quadratic time on markup left open at the end of the input.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

from . import Extracted, Limits, Segment, Table, keep_tables, register
from .text import cut_long_lines, decode_text

HTML_EXT = (".html", ".htm", ".xhtml")
_HEADINGS = frozenset(f"h{n}" for n in range(1, 7))   # tag names come lower-cased
_SPACES = re.compile(r"\s+")
_TABLE_TAG = re.compile(r"<table", re.I)


class LinearHTMLParser(HTMLParser):
    """html.parser without its quadratic end. feed() stops at the first tag, comment or declaration
    it cannot finish; at close(), html.parser 3.11 then re-scans the rest from every '<' after it,
    one scan to the end each (`"<a b='" * 10_000`, 60 KB, took 20 s). As HTML5 does, and as CPython
    itself does since its fix for CVE-2025-6069, a construct still open at the end of the input
    takes the rest of the input with it: one scan."""

    def close(self) -> None:
        rest = self.rawdata
        if len(rest) > 1 and rest.startswith("<") and not self.cdata_elem:
            self.rawdata = ""  # an unfinished tag, comment or declaration: no text to read in it
        super().close()


def convert_html(data: bytes, name: str, limits: Limits) -> Extracted:
    raw, enc = decode_text(data)
    warnings: list[str] = []
    parser, tables = HTMLText(), _HTMLTables()
    # a page without a <table> tag has no table: its text is all there is to read
    one = _OnePass(parser, tables) if _TABLE_TAG.search(raw) else parser
    one.feed(raw)
    one.close()
    title = parser.title.strip()
    text = cut_long_lines(parser.text(), limits, warnings)
    out = Extracted([Segment(text, "", "text")], "html", f"stdlib html.parser ({enc})", warnings,
                    meta={"title": title} if title else {})
    found, failed = [], getattr(one, "failed", None)
    try:
        found = tables.result() if failed is None else []
    except Exception as e:
        failed = e
    if failed is not None:  # the tables are lost, not the page
        out.table_notes.append(f"its tables could not be read ({type(failed).__name__}: {str(failed)[:200]})")
    out.tables = keep_tables(found)
    return out


class _OnePass(LinearHTMLParser):
    """One tokenising pass over a page (html.parser's tokenising is most of the time a page takes),
    each event handed to the text reader and to the table reader; a table reader that fails is
    left behind with its error and the text goes on."""

    def __init__(self, text: HTMLParser, tables: HTMLParser) -> None:
        super().__init__(convert_charrefs=True)
        self.failed: Exception | None = None
        for event in ("handle_starttag", "handle_startendtag", "handle_endtag", "handle_data"):
            setattr(self, event, self._pair(getattr(text, event), getattr(tables, event)))

    def _pair(self, first, second):
        def hand(*args) -> None:
            first(*args)
            if self.failed is None:
                try:
                    second(*args)
                except Exception as e:
                    self.failed = e
        return hand


class HTMLText(LinearHTMLParser):
    """The text of a page: blocks on lines of their own, headings as "# ", table cells as " | ",
    scripts and styles left out; also what EPUB chapters and HTML mail bodies are read with."""
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
        elif tag in _HEADINGS:
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
            self.parts.append("\n\n" if tag in _HEADINGS or tag == "p" else "\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
            return
        if self.skip:
            return
        self.parts.append(data if self.pre else _SPACES.sub(" ", data))

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [line.rstrip() for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


class _HTMLTables(LinearHTMLParser):
    """The <table>s of a page in the order they open: caption (else the nearest heading above), rows
    of cell texts with colspan and rowspan filled in. A table inside a cell is a table of its own."""
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BREAKS = {"br", "p", "div", "li", "ul", "ol", "hr", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.open: list[dict] = []        # tables being read, innermost last
        self.skip, self.heading = 0, None
        self.capture: list[str] | None = None   # text of a heading or caption being read

    def handle_starttag(self, tag, attrs):
        self.skip = 0 if tag == "body" else self.skip + (tag in self.SKIP)  # a <head> never closed ends here
        t = self.open[-1] if self.open else None
        if self.skip:
            return
        if tag == "table":
            self.capture = None  # a heading never closed
            self.open.append({"caption": None, "heading": self.heading, "rows": [], "row": None, "cell": None,
                              "spans": {}})
            self.tables.append(self.open[-1])
        elif (t is None and tag in _HEADINGS) or (t is not None and tag == "caption"):
            self.capture = []
        elif t is not None and tag == "tr":
            self._end_row(t)
            t["row"] = []
        elif t is not None and tag in ("td", "th"):
            self._end_cell(t)
            a = dict(attrs)
            t["row"] = [] if t["row"] is None else t["row"]
            t["cell"] = {"parts": [], "th": tag == "th", "colspan": _span(a.get("colspan"), 100),
                         "rowspan": _span(a.get("rowspan"), 1000)}
        elif tag in self.BREAKS:
            self.handle_data(" ")

    def handle_endtag(self, tag):
        self.skip = max(0, self.skip - (tag in self.SKIP))
        t = self.open[-1] if self.open else None
        if self.skip or tag in self.SKIP:
            return
        if self.capture is not None and (tag == "caption" or tag in _HEADINGS):
            text = " ".join("".join(self.capture).split()) or None
            t.update(caption=text) if t is not None else setattr(self, "heading", text)
            self.capture = None
        elif t is not None and tag in ("td", "th", "tr", "table"):
            self._end_cell(t) if tag in ("td", "th") else self._end_row(t)
            if tag == "table":
                self.open.pop()
        elif tag in self.BREAKS:
            self.handle_data(" ")

    def handle_data(self, data):
        if not self.skip and self.capture is not None:
            self.capture.append(data)
        elif not self.skip and self.open and self.open[-1]["cell"] is not None:
            self.open[-1]["cell"]["parts"].append(data)

    @staticmethod
    def _end_cell(t: dict) -> None:
        if t["cell"] is not None:
            t["cell"]["text"] = " ".join("".join(t["cell"]["parts"]).split())
            t["row"].append(t["cell"])
            t["cell"] = None

    def _end_row(self, t: dict) -> None:
        self._end_cell(t)
        if t["row"] is None:
            return
        cells, pending, new, out = list(t["row"]), t["spans"], {}, []
        while cells or any(k >= len(out) for k in pending):
            col = len(out)
            if col in pending:  # a cell of a row above reaching down
                left, text = pending[col]
                out.append(text)
                new.update({col: (left - 1, text)} if left > 1 else {})
            elif not cells:
                out.append("")
            else:
                c = cells.pop(0)
                for k in range(col, col + c["colspan"]):
                    out.append(c["text"])
                    new.update({k: (c["rowspan"] - 1, c["text"])} if c["rowspan"] > 1 else {})
        t["spans"] = new
        if any(out):
            t["rows"].append((out, all(c["th"] for c in t["row"])))
        t["row"] = None

    def result(self) -> list[Table]:
        self.close()
        while self.open:  # tables never closed
            self._end_row(self.open.pop())
        # a table of one row is a layout table or a lone header; header rows repeated further down are left out
        return [Table(t["caption"] or t["heading"], t["rows"][0][0],
                      [cells for cells, all_th in t["rows"][1:] if not all_th], [])
                for t in self.tables if len(t["rows"]) >= 2]


def _span(value, cap: int) -> int:
    return min(max(int(value), 1), cap) if str(value).strip().isdigit() else 1


def _is_html(data: bytes, name: str) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) and not name.lower().endswith(HTML_EXT)


register(HTML_EXT, "html", f"{__name__}:convert_html")
register((".html-sniffed",), "html", f"{__name__}:convert_html", sniff=_is_html)
