"""Tables in the pile as training examples: each row of a matching table becomes one example.

Owns finding the tables of the pile's documents (`find_tables`), filling a `tables:` entry's
templates from a row (`Template`, `render`) and turning rows into examples shaped like generate's,
with a report of what matched, what was skipped and why (`rows_to_examples`).

The pile's text keeps a table's cells for some formats only, so rows are read from
  csv, tsv, xlsx, xls, ods, json, jsonl, html   the source file (in the workspace, or unpacked from
        its archive or e-mail as "pack.zip!/codes.csv"), when its sha256 is the one the pile holds
  markdown, text, docx, pptx, pdf, ...           pipe tables in the pile's text ("| a | b |", "a | b")
and placed in the pile chunk that holds them, so curate checks them against their source like any
example. Row locators: "row 14" (CSV line), "Sheet1 row 14", "record 3" (JSON), "line 3" (JSONL),
"table 2, row 14" (the 14th data row of the file's 2nd table); tables are numbered from 1.
"""
from __future__ import annotations

import csv
import difflib
import fnmatch
import hashlib
import html
import io
import json
import re
import warnings as pywarnings
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from itertools import accumulate
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

from ..core.config import TableCfg, TaskCfg
from ..core.errors import TasklingError
from .formats import ConvertError, Limits, convert
# The sheets converter's own row reading (header detection, cell text): a row here reads as its chunk does.
from .formats.sheets import (_TABLENS, _nonempty_rows, _ods_rows, _sheet_ref, _sniff_delimiter, _split_header,
    _xls_value)
from .formats.text import decode_text
from .pile import Pile
from ..tasks import output_text

SOURCE_FORMATS = ("csv", "tsv", "xlsx", "xls", "ods", "json", "jsonl", "html")
MAX_ROWS = Limits().max_rows     # rows read per table, as ingest reads per sheet
SEARCH_AHEAD = 64                # chunks looked through for a row read from a source file
DUPLICATE = "same input and output as an earlier row"


@dataclass
class Table:
    path: str                        # as the pile names it: "data/codes.csv", "pack.zip!/codes.csv"
    index: int                       # 1-based, in document order (sheets in workbook order)
    name: str | None                 # sheet, caption or nearest heading
    columns: list[str]
    rows: list[dict[str, str]]
    locators: list[str]              # one per row
    format: str = ""
    sha256: str = ""
    chunks: list[str | None] = field(default_factory=list)  # per row: key of the pile chunk that holds it
    topics: list[int | None] = field(default_factory=list)  # per row: that chunk's topic


class Tables(list):
    """What find_tables found: the tables (it is a list of them), the paths the glob matched,
    documents whose tables could not be read ({"path", "reason"}) and warnings."""

    def __init__(self, tables: Iterable[Table] = (), paths: Iterable[str] = ()):
        super().__init__(tables)
        self.paths, self.problems, self.warnings = list(paths), [], []


# -- columns and templates ---------------------------------------------------------------------------------------
def _key(name: str) -> str:
    """How a column is looked up: any case, "_" the same as a space, surrounding spaces ignored."""
    return " ".join(str(name).replace("_", " ").split()).lower()


def normalise_columns(header: list[str], width: int) -> list[str]:
    """Header cells as column names: stripped, a missing one "colN", repeats made unique ("name_2")."""
    names = [" ".join(str(h).split()) for h in header][:width] + [""] * max(0, width - len(header))
    out: list[str] = []
    for i, name in enumerate(names, 1):
        base = name = name or f"col{i}"
        k = 2
        while _key(name) in map(_key, out):
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def column_for(name: str, columns: Iterable[str]) -> str | None:
    """The column a placeholder names: exactly, else by _key."""
    columns = list(columns)
    return name if name in columns else next((c for c in columns if _key(c) == _key(name)), None)


def _missing_column(name: str, columns: list[str], where: str) -> str:
    near = difflib.get_close_matches(_key(name), [_key(c) for c in columns], n=1, cutoff=0.5)
    hint = f"; nearest: '{next(c for c in columns if _key(c) == near[0])}'" if near else ""
    return (f"{where}{{{name}}} names no column; the columns are: {', '.join(columns) or '(none)'}{hint} "
            f"(fix the template in taskling.yaml)")


_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True)
class Template:
    """"What does error {code} mean?": {column} placeholders, {{ and }} for literal braces."""
    text: str
    pieces: tuple[tuple[bool, str], ...]   # (is a placeholder, literal text or column name)

    @classmethod
    def parse(cls, text: str, where: str = "") -> "Template":
        pieces: list[tuple[bool, str]] = []
        pos = 0
        for m in _TOKEN.finditer(text):
            pieces += [(False, text[pos:m.start()])] if m.start() > pos else []
            if m.group(0) in ("{{", "}}"):
                pieces.append((False, m.group(0)[0]))
            elif m.group(1) is not None and m.group(1).strip():
                pieces.append((True, m.group(1)))
            else:
                what = "an empty {}" if m.group(1) is not None else f"an unmatched '{m.group(0)}'"
                raise TasklingError(f"{where}template {text!r} has {what}; name a column as {{column}}, "
                                    f"and write {{{{ or }}}} for a literal brace")
            pos = m.end()
        return cls(text, tuple(pieces + ([(False, text[pos:])] if pos < len(text) else [])))

    @property
    def fields(self) -> list[str]:
        return [p for is_field, p in self.pieces if is_field]

    def render(self, row: Mapping[str, str], where: str = "") -> str:
        out = []
        for is_field, piece in self.pieces:
            col = column_for(piece, row) if is_field else None
            if is_field and col is None:
                raise TasklingError(_missing_column(piece, list(row), where))
            out.append(piece if not is_field else "" if row[col] is None else str(row[col]))
        return "".join(out)


def render(template: str | Template, row: Mapping[str, str], where: str = "") -> str:
    """A template filled from one row; `where` starts any error message ("tables: 'codes' (data/codes.csv): ")."""
    tpl = template if isinstance(template, Template) else Template.parse(template, where)
    return tpl.render(row, where)


# -- finding tables ------------------------------------------------------------------------------------------------
def matches(path: str, pattern: str) -> bool:
    """The glob against the workspace-relative path ('*' crosses folders, as in ingest.include),
    the path inside an archive or e-mail ("pack.zip!/x/codes.csv" matches "x/*.csv") and the file name."""
    inner = path.rsplit("!/", 1)[-1]
    return any(fnmatch.fnmatch(p, pattern) for p in (path, inner, PurePosixPath(inner).name))


def find_tables(pile: Pile, cfg: TableCfg, root: Path) -> Tables:
    """The tables of the pile's live documents whose path matches cfg.match, selected by cfg.table
    (None: all; an int: the file's table of that number; a str: the sheet, caption or heading), in
    path, document and row order. A bad file never raises: it goes to `.problems` with the reason."""
    docs = [d for d in pile.db.execute("SELECT id, path, format, sha256 FROM documents WHERE status='ok' "
                                       "ORDER BY path") if matches(d["path"], cfg.match)]
    found = Tables(paths=[d["path"] for d in docs])
    if not docs:
        have = [r[0] for r in pile.db.execute(
            f"SELECT path FROM documents WHERE status='ok' AND (format IN ({','.join('?' * len(SOURCE_FORMATS))})"
            " OR instr(text, '|') > 0) ORDER BY path LIMIT 6", SOURCE_FORMATS)]
        found.warnings.append(f"tables: '{cfg.name}': match '{cfg.match}' matches no document in the pile (paths "
                              f"are relative to the workspace, e.g. 'data/*.csv'); " +
                              (f"documents with tables: {', '.join(have[:5])}{', ...' if len(have) > 5 else ''}"
                               if have else "the pile holds no document with a table"))
        return found
    cache: dict = {}
    seen_any = False
    for d in docs:
        try:
            tables = _document_tables(pile, d, root, cache, found.problems)
        except Exception as e:  # a hostile file costs that file, not the run; ConvertError says what to do
            found.problems.append({"path": d["path"], "reason": str(e) if isinstance(e, ConvertError) else
                                   f"its tables could not be read ({type(e).__name__}: {str(e)[:200]})"})
            continue
        seen_any = seen_any or bool(tables)
        if not tables and d["format"] == "pdf":
            found.problems.append({"path": d["path"], "reason": "no table found: a PDF's text keeps no cell "
                                   "boundaries; export the table as CSV or XLSX and add that"})
        found.extend(_select(tables, cfg.table, d["path"], found.problems))
    if not found:
        which = f" that is table: {cfg.table!r}" if cfg.table is not None and seen_any else ""
        found.warnings.append(f"tables: '{cfg.name}': {len(docs)} document(s) match '{cfg.match}' but none holds "
                              f"a table{which} (tables are read from CSV/TSV, spreadsheets, JSON records, HTML "
                              f"<table>s and pipe tables in Markdown, DOCX, PPTX and text)")
    return found


def _select(tables: list[Table], sel: int | str | None, path: str, problems: list[dict]) -> list[Table]:
    if sel is None or not tables:
        return tables
    if isinstance(sel, str):
        chosen = [t for t in tables if t.name is not None and _key(t.name) == _key(sel)]
        names = ", ".join(f"'{t.name}'" for t in tables if t.name) or "none has a name"
        why = f"no table named '{sel}' (its tables: {names})"
    else:
        chosen = [t for t in tables if t.index == sel]
        why = f"it has {len(tables)} table(s); table: {sel} is none of them (tables are numbered from 1)"
    problems += [] if chosen else [{"path": path, "reason": why}]
    return chosen


@dataclass
class _Raw:
    """A table as a reader found it, before its columns are named and its rows placed."""
    name: str | None
    header: list[str] | None                        # None: the first row is data
    body: list[tuple[str | None, list[str], int | None]] = field(default_factory=list)  # (locator, cells, offset)
    notes: list[str] = field(default_factory=list)


def _document_tables(pile: Pile, d, root: Path, cache: dict, problems: list[dict]) -> list[Table]:
    path, fmt = d["path"], d["format"]
    raws: list[_Raw] | None = None
    if fmt in SOURCE_FORMATS:
        data = _source_bytes(root, path, cache)
        why = ("it is no longer in the workspace" if data is None else
               "it changed since it was ingested" if hashlib.sha256(data).hexdigest() != d["sha256"] else "")
        if why and fmt != "html":
            raise ConvertError(f"{why}, and the pile keeps no {fmt.upper()} cells of its own; "
                               f"run 'taskling ingest' so the pile and the file agree")
        if why:
            problems.append({"path": path, "reason": f"{why}: its tables were read from the pile's text, "
                                                     f"where a cell of several paragraphs may come apart"})
        else:
            raws = READERS[fmt](data, fmt)
    if raws is None:
        raws = _text_tables(pile.document(path)["text"], fmt)
    chunks = pile.db.execute("SELECT key, start_char, end_char, text, topic_id, locator FROM chunks "
                             "WHERE doc_id=? ORDER BY ord", (d["id"],)).fetchall()
    place = _placer(chunks)
    tables = []
    for raw in raws:
        problems += [{"path": path, "reason": note} for note in raw.notes]  # worth reading, not worth the table
        if raw.body:
            tables.append(_build(raw, len(tables) + 1, path, fmt, d["sha256"], place))
    return tables


def _build(raw: _Raw, index: int, path: str, fmt: str, sha: str, place: Callable) -> Table:
    width = max([len(raw.header or [])] + [len(cells) for _, cells, _ in raw.body])
    columns = normalise_columns(raw.header or [], width)
    t = Table(path, index, raw.name, columns, [], [], fmt, sha)
    for n, (loc, cells, offset) in enumerate(raw.body, 1):
        cells = list(cells) + [""] * (width - len(cells))   # ragged rows
        t.rows.append(dict(zip(columns, cells)))
        t.locators.append(loc or f"table {index}, row {n}")
        chunk = place(cells, offset)
        t.chunks.append(chunk["key"] if chunk else None)
        t.topics.append(chunk["topic_id"] if chunk else None)
    if t.name is None and raw.body[0][2] is not None:  # a DOCX section, a slide: its heading
        chunk = place([], raw.body[0][2])
        t.name = _locator_heading(chunk["locator"]) if chunk else None
    return t


def _squash(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _placer(chunks: list) -> Callable[[list[str], int | None], Any]:
    """Finds the chunk that holds a row: by the row's offset in the text, or (a row read from the
    source file) the next chunk, in order, whose text has every one of the row's plain values."""
    starts = [c["start_char"] for c in chunks]
    texts = [_squash(c["text"]) for c in chunks]
    cursor = 0

    def place(cells: list[str], offset: int | None):
        nonlocal cursor
        if offset is not None:
            i = bisect_right(starts, offset) - 1
            return chunks[i] if i >= 0 and offset < chunks[i]["end_char"] else None
        # JSON-encoded values are flattened differently in the pile: they cannot be looked for
        needles = [_squash(c)[:200] for c in cells if c.strip() and not c.lstrip().startswith(("{", "["))]
        for i in range(cursor, min(len(chunks), cursor + SEARCH_AHEAD)) if needles else ():
            if all(n in texts[i] for n in needles):
                cursor = i
                return chunks[i]
        return None
    return place


def _locator_heading(locator: str) -> str | None:
    """"Setup > Codes (lines 3-9)" -> "Codes"; "slide 2 — Prices" -> "Prices"; a page or line range -> None."""
    loc = re.sub(r"( \(lines \d+-\d+\)| part \d+)+$", "", locator).split(" > ")[-1].strip()
    loc = re.sub(r"^slide \d+ — ", "", loc)
    return None if not loc or re.fullmatch(r"\(start\)|page \d+|slide \d+|lines? \d+(-\d+)?", loc) else loc


def _source_bytes(root: Path, path: str, cache: dict) -> bytes | None:
    """A pile document's bytes: the file under the workspace, or a member of an archive or e-mail
    ("pack.zip!/codes.csv") unpacked in memory as ingest did. None when it cannot be found."""
    outer, sep, member = path.rpartition("!/")
    if not sep:
        return (root / path).read_bytes() if (root / path).is_file() else None
    if outer not in cache:  # the next member asked for is most likely from the same archive
        container = _source_bytes(root, outer, cache) or b""
        try:
            cache[outer] = {c.name: c.data for c in convert(outer.rsplit("!/", 1)[-1], container).children}
        except ConvertError:  # gone, or no longer an archive
            cache[outer] = {}
    return cache[outer].get(member)


# -- readers of source files ---------------------------------------------------------------------------------------
def _grid(rows: Iterable, locate: Callable[[int, int], str], name: str | None) -> _Raw | None:
    split = _split_header(_nonempty_rows(rows))
    if split is None:
        return None
    _, header, data = split
    raw = _Raw(name, header[2] if header else None)
    for n, (first, last, cells, _) in enumerate(data, 1):
        if n > MAX_ROWS:
            raw.notes.append(f"{name or 'the table'}: only the first {MAX_ROWS} rows were read")
            break
        raw.body.append((locate(first, last), cells, None))
    return raw


def _sheet_rows(sheet: str) -> Callable[[int, int], str]:
    return lambda first, last: f"{_sheet_ref(sheet)} row {first}"


def _read_csv(data: bytes, fmt: str) -> list[_Raw]:
    text, _ = decode_text(data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else _sniff_delimiter(text))

    def rows():
        prev = 0
        for record in reader:
            yield prev + 1, reader.line_num, record
            prev = reader.line_num
    try:
        raw = _grid(rows(), lambda a, b: f"row {a}" if a == b else f"rows {a}-{b}", None)
    except csv.Error as e:
        raise ConvertError(f"not a valid {fmt.upper()} file (line {reader.line_num}: {e}); check its quoting, "
                           f"or open it in a spreadsheet and save it again") from None
    return [raw] if raw else []


def _read_sheets(data: bytes, fmt: str) -> list[_Raw]:
    """Every sheet of a workbook, read as the sheets converter reads it."""
    out = []
    if fmt == "xlsx":
        from openpyxl import load_workbook

        with pywarnings.catch_warnings():  # "extension not supported" notes about features text does not need
            pywarnings.simplefilter("ignore")
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        for ws in wb.worksheets:
            ws.reset_dimensions()  # the stored used range is often wrong
            out.append(_grid(((n, n, list(v)) for n, v in enumerate(ws.iter_rows(values_only=True), 1)),
                             _sheet_rows(ws.title), ws.title))
        wb.close()
    elif fmt == "xls":
        import xlrd

        book = xlrd.open_workbook(file_contents=data, on_demand=True)
        for sh in (book.sheet_by_index(i) for i in range(book.nsheets)):
            out.append(_grid(((r + 1, r + 1, [_xls_value(c, book.datemode) for c in sh.row(r)])
                              for r in range(sh.nrows)), _sheet_rows(sh.name), sh.name))
        book.release_resources()
    else:
        from odf import table as odtable
        from odf.opendocument import load

        for n, tbl in enumerate(load(io.BytesIO(data)).spreadsheet.getElementsByType(odtable.Table), 1):
            name = tbl.attributes.get((_TABLENS, "name"), "") or f"Sheet{n}"
            out.append(_grid(_ods_rows(tbl, Limits()), _sheet_rows(name), name))
    return [r for r in out if r]


def _json_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    # numbers as JSON writes them; nested values JSON-encoded
    return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _records(name: str | None, items: list[tuple[int, Any]], label: str) -> _Raw:
    """(number, item) pairs as rows, objects only: the columns are their keys in first-seen order."""
    keys = list(dict.fromkeys(k for _, r in items if isinstance(r, dict) for k in r))
    raw = _Raw(name, [str(k) for k in keys])
    raw.body = [(f"{label} {n}", [_json_cell(r.get(k)) for k in keys], None) for n, r in items if isinstance(r, dict)]
    if len(raw.body) < len(items):
        raw.notes.append(f"{len(items) - len(raw.body)} {label}(s) are not JSON objects; left out")
    return raw


def _read_json(data: bytes, fmt: str) -> list[_Raw]:
    text, _ = decode_text(data)
    if fmt == "jsonl":
        items, bad = [], 0
        for n, line in enumerate(text.splitlines(), 1):
            try:
                items += [(n, json.loads(line))] if line.strip() else []
            except json.JSONDecodeError:
                bad += 1
        raw = _records(None, items, "line")
        raw.notes += [f"{bad} line(s) are not valid JSON; left out"] if bad else []
        return [raw]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConvertError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if isinstance(doc, list):
        return [_records(None, list(enumerate(doc, 1)), "record")]
    if not isinstance(doc, dict) or not doc:
        return []
    lists = [(k, v) for k, v in doc.items() if isinstance(v, list) and any(isinstance(x, dict) for x in v)]
    if lists:  # {"codes": [{...}, ...], "limits": [...]}: a table per list
        return [_records(k, list(enumerate(v, 1)), f"{k} record") for k, v in lists]
    if all(isinstance(v, dict) for v in doc.values()):  # {"E1": {...}, "E2": {...}}: the key is a column too
        return [_records(None, list(enumerate(({"key": k, **v} for k, v in doc.items()), 1)), "record")]
    return [_records(None, [(1, doc)], "record")]


class _HTMLTables(HTMLParser):
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
        elif (t is None and re.fullmatch(r"h[1-6]", tag)) or (t is not None and tag == "caption"):
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
        if self.capture is not None and (tag == "caption" or re.fullmatch(r"h[1-6]", tag)):
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

    def result(self) -> list[_Raw]:
        self.close()
        while self.open:  # tables never closed
            self._end_row(self.open.pop())
        # a table of one row is a layout table or a lone header; header rows repeated further down are left out
        return [_Raw(t["caption"] or t["heading"], t["rows"][0][0],
                     [(None, cells, None) for cells, all_th in t["rows"][1:] if not all_th])
                for t in self.tables if len(t["rows"]) >= 2]


def _span(value, cap: int) -> int:
    return min(max(int(value), 1), cap) if str(value).strip().isdigit() else 1


def _read_html(data: bytes, fmt: str) -> list[_Raw]:
    parser = _HTMLTables()
    parser.feed(decode_text(data)[0])
    return parser.result()


READERS: dict[str, Callable[[bytes, str], list[_Raw]]] = {
    "csv": _read_csv, "tsv": _read_csv, "xlsx": _read_sheets, "xls": _read_sheets, "ods": _read_sheets,
    "json": _read_json, "jsonl": _read_json, "html": _read_html}


# -- pipe tables in the pile's text ----------------------------------------------------------------------------------
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_CAPTION = re.compile(r"^\s*(?:\*\*|__)?(?:table|tab\.)\s*[\w.-]*\s*[:.—–-]\s*(.+?)\s*$", re.I)
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_PIPE = re.compile(r"(?<!\\)\|")
_RULE = re.compile(r":?-+:?")


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


def _text_tables(text: str, fmt: str) -> list[_Raw]:
    """Pipe tables in a document's text. In Markdown a table needs its alignment row, as in GFM;
    elsewhere (DOCX and PPTX tables, text) a run of two or more pipe lines is one, its first row the
    header. Rows that start with "|" may be apart by blank lines (the pile's text of an HTML table)."""
    strict = fmt == "markdown"
    clean = _plain if fmt in ("markdown", "text", "rst") else (lambda c: " ".join(c.split()))
    lines = text.split("\n")
    offsets = [0, *accumulate(len(line) + 1 for line in lines)]
    out: list[_Raw] = []
    block: list[tuple[int, list[str]]] = []
    name = heading = None
    prev = fence = ""

    def close() -> None:
        rule = len(block) >= 2 and _is_rule(block[1][1])
        body = [(None, [clean(c) for c in cells], off)
                for off, cells in block[2 if rule else 1:] if not _is_rule(cells)]
        if body and (rule or not strict):
            out.append(_Raw(name, [clean(c) for c in block[0][1]], body))
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
            pass  # the pile writes an HTML table's rows apart by blank lines
        else:
            close()
            if h := _HEADING.match(line):
                heading = clean(h.group(2))
        prev = line if line.strip() else prev
    close()
    return out


# -- rows to examples ------------------------------------------------------------------------------------------------
_TRUE, _FALSE = ("true", "yes", "y", "1", "on", "x"), ("false", "no", "n", "0", "off")


def _coerce(text: str, spec: dict) -> Any:
    """A rendered value as the schema's type wants it; ValueError("is not an integer") when it cannot be."""
    kind = spec.get("type", "string")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    s = text.strip()
    plain = re.sub(r"(?<=\d)[,_ '](?=\d{3}\b)", "", s)  # 1,234 / 1 234 / 1_234
    value: Any = s
    if kind in ("integer", "number") and re.fullmatch(r"[+-]?\d+", plain):
        value = int(plain)
    elif kind == "integer" and re.fullmatch(r"[+-]?\d+\.0*", plain):
        value = int(float(plain))
    elif kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", plain):
        value = float(plain)
    elif kind in ("integer", "number"):
        raise ValueError(f"is not {'an integer' if kind == 'integer' else 'a number'}")
    elif kind == "boolean":
        if s.lower() not in _TRUE + _FALSE:
            raise ValueError("is not a boolean (true/false, yes/no, 1/0)")
        value = s.lower() in _TRUE
    elif kind in ("array", "object"):
        try:
            value = json.loads(s)
        except json.JSONDecodeError:
            pass
        if not isinstance(value, list if kind == "array" else dict):
            raise ValueError(f"is not a JSON {kind}")
    if "enum" in spec and value not in spec["enum"]:
        raise ValueError(f"is not one of {spec['enum']}")
    return value


def _empty(tpl: Template, row: dict, columns: list[str]) -> list[str]:
    """The columns a template uses whose cell is empty in this row."""
    return [c for c in (column_for(f, columns) for f in tpl.fields) if not str(row[c]).strip()]


def _output_of(task: TaskCfg, outs: Any, row: dict, columns: list[str]) -> Any:
    """The row's output, or ValueError(the reason to skip the row)."""
    if task.type != "extract":
        if blank := _empty(outs, row, columns):
            raise ValueError(f"empty value in column '{blank[0]}'")
        text = outs.render(row).strip()
        if task.type != "classify" or text in task.labels:
            return text
        same = [lab for lab in task.labels if _squash(lab) == _squash(text)]  # "Bug" is the label "bug"
        if len(same) != 1:
            raise ValueError(f"label '{text}' is not one of the task's labels")
        return same[0]
    schema = task.output_schema or {}
    spec = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name in list(spec) + [f for f in outs if f not in spec]:
        tpl = outs.get(name)
        # a field whose cells are all empty is absent: null, as the extract task writes it
        if tpl is None or (tpl.fields and len(_empty(tpl, row, columns)) == len(tpl.fields)):
            out[name] = None
            continue
        text = tpl.render(row).strip()
        try:
            out[name] = _coerce(text, spec.get(name, {})) if text else None
        except ValueError as e:
            raise ValueError(f"field '{name}' {e}") from None
    for name in schema.get("required", []):
        if out.get(name) is None:
            raise ValueError(f"empty value for required field '{name}'")
    if all(v in (None, "", []) for v in out.values()):
        raise ValueError("every output field is empty")
    return out


def _templates(cfg: TableCfg, task: TaskCfg) -> tuple[Template, Any]:
    where = f"tables: '{cfg.name}'"
    inp = Template.parse(cfg.input, f"{where}: input ")
    if task.type != "extract":
        if isinstance(cfg.output, dict):
            raise TasklingError(f"{where}: output is one template for a {task.type} task")
        return inp, Template.parse(cfg.output, f"{where}: output ")
    if not isinstance(cfg.output, dict):
        raise TasklingError(f"{where}: an extract task maps output to fields, e.g. output: {{field: '{{column}}'}}")
    spec = (task.output_schema or {}).get("properties", {})
    unknown = [f for f in cfg.output if spec and f not in spec]
    if unknown:
        raise TasklingError(f"{where}: output field '{unknown[0]}' is not in task.output_schema "
                            f"(its fields: {', '.join(spec)})")
    return inp, {f: Template.parse(t, f"{where}: output.{f} ") for f, t in cfg.output.items()}


def rows_to_examples(cfg: TableCfg, task: TaskCfg, tables: list[Table], round: int = 0) -> tuple[list[dict], dict]:
    """Each row of `tables` as an example shaped like generate's (source "table"), and a report:
    files, tables, rows, examples, rows skipped by reason (and the first few of them), duplicates,
    rows over max_rows, problems per file and warnings. Raises TasklingError for a template that
    does not parse, or that names a column none of the tables has."""
    where = f"tables: '{cfg.name}'"
    inp, outs = _templates(cfg, task)
    templates = [inp, *(outs.values() if isinstance(outs, dict) else [outs])]
    problems = list(getattr(tables, "problems", []))
    usable, first_missing = [], None
    for t in tables:
        missing = [f for tpl in templates for f in tpl.fields if column_for(f, t.columns) is None]
        if missing:  # in some files only: those are skipped; in all of them: the template is wrong
            msg = _missing_column(missing[0], t.columns, f"{where} ({t.path}, table {t.index}): ")
            first_missing = first_missing or msg
            problems.append({"path": t.path, "reason": msg})
        else:
            usable.append(t)
    if tables and not usable:
        raise TasklingError(first_missing)

    examples: list[dict] = []
    samples: list[dict] = []                     # the first skipped rows, to look at
    skipped, seen, output_of = Counter(), set(), {}
    conflicts = capped = 0
    for t in usable:
        for i, row in enumerate(t.rows):
            if cfg.max_rows is not None and len(examples) >= cfg.max_rows:
                capped += len(t.rows) - i
                break
            try:
                if blank := _empty(inp, row, t.columns):
                    raise ValueError(f"empty value in column '{blank[0]}'")
                text = inp.render(row).strip()
                output = _output_of(task, outs, row, t.columns)
                same = (" ".join(text.split()), output_text(output))
                if same in seen:
                    raise ValueError(DUPLICATE)
            except ValueError as e:
                skipped[str(e)] += 1
                samples += [{"path": t.path, "locator": t.locators[i], "reason": str(e)}] if len(samples) < 10 else []
                continue
            seen.add(same)
            conflicts += output_of.setdefault(same[0], same[1]) != same[1]
            examples.append(_example(cfg, task, t, i, text, output, round))
    paths = list(getattr(tables, "paths", sorted({t.path for t in tables})))
    report = {"table": cfg.name, "match": cfg.match, "files": len(paths), "paths": paths[:20],
              "tables": len(tables), "rows": sum(len(t.rows) for t in tables), "examples": len(examples),
              "skipped": dict(skipped.most_common()), "skipped_rows": samples, "duplicates": skipped[DUPLICATE],
              "conflicts": conflicts, "capped": capped, "problems": problems,
              "warnings": list(getattr(tables, "warnings", []))}
    if tables and not examples:
        top = skipped.most_common(1)
        report["warnings"].append(f"{where}: {report['rows']} row(s) but no example" +
                                  (f"; most were skipped for: {top[0][0]} ({top[0][1]})" if top else ""))
    if conflicts:
        report["warnings"].append(f"{where}: {conflicts} input(s) come again with a different output; "
                                  f"the rows disagree, check the table")
    return examples, report


def _example(cfg: TableCfg, task: TaskCfg, t: Table, i: int, text: str, output: Any, round: int) -> dict:
    locator, chunk = t.locators[i], t.chunks[i]
    digest = hashlib.sha256(f"{cfg.name}\0{t.path}\0{locator}".encode()).hexdigest()[:12]
    label = output if task.type == "classify" else None
    return {
        "id": f"tbl-{cfg.name}-{digest}", "input": text, "output": output,
        **({"label": label} if label is not None else {}),
        "source": "table", "table": cfg.name, "chunks": [chunk] if chunk else [], "spans": [],
        # "chunk" names the pile chunk that holds the row; a row placed in none is a unit of its own
        "provenance": [{"chunk": chunk or f"{t.path}#{locator}", "path": t.path, "sha256": t.sha256,
                        "format": t.format, "locator": locator, "table": t.index, "table_name": t.name,
                        "row": dict(t.rows[i])}],
        "arm": [t.topics[i], label], "round": round,
    }

