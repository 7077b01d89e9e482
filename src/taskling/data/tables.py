"""Tables of the pile as a `tables:` entry sees them, and the templates that map their rows.

Owns finding the tables of the pile's documents that a `tables:` entry names (`find_tables`: by
path glob, then by number or name) and filling its templates from a row (`Template`, `render`,
columns matched loosely: any case, "_" as a space). The tables themselves were read by the
converters at ingest (formats/) and stored with the document (pile.py): nothing here reads a
source file or parses a format. Turning a row into an example of the task is tasks/tables.py.

A document's tables are used while the pile is current for it: the document is live in the pile
and its source file, when it is still in the workspace, is the one ingest read (ingest's
`changed_since_ingest`). A file deleted since ingest still has its tables in the pile; a file that
changed is skipped, with the reason, until `taskling ingest` reads it again.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from ..core.config import TableCfg
from ..core.errors import TasklingError
from .ingest import changed_since_ingest
from .pile import Pile, PileTable


@dataclass
class Table:
    """A table of the pile with its columns named and its rows as {column: cell}."""
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
    documents whose tables could not be used ({"path", "reason"}) and warnings."""

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


def missing_column(name: str, columns: list[str], where: str) -> str:
    """The message for a placeholder that names no column: the columns there are and the nearest."""
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
                raise TasklingError(missing_column(piece, list(row), where))
            out.append(piece if not is_field else "" if row[col] is None else str(row[col]))
        return "".join(out)

    def empty_columns(self, row: Mapping[str, str]) -> list[str]:
        """The columns this template uses whose cell is empty in `row`."""
        return [c for c in (column_for(f, row) for f in self.fields) if not str(row[c]).strip()]


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
    (None: all; an int: the document's table of that number; a str: the sheet, caption or heading), in
    path, document and row order. A document that cannot be used never raises: it goes to `.problems`
    with the reason (its source changed since ingest, rows its reader left out, no such table)."""
    docs = [d for d in pile.documents() if matches(d["path"], cfg.match)]
    found = Tables(paths=[d["path"] for d in docs])
    if not docs:
        have = pile.paths_with_tables(6)
        found.warnings.append(f"tables: '{cfg.name}': match '{cfg.match}' matches no document in the pile (paths "
                              f"are relative to the workspace, e.g. 'data/*.csv'); " +
                              (f"documents with tables: {', '.join(have[:5])}{', ...' if len(have) > 5 else ''}"
                               if have else "the pile holds no document with a table"))
        return found
    changed = changed_since_ingest(pile, root, [d["path"] for d in docs])
    if cfg.pattern is not None:
        return _matched(pile, cfg, docs, changed, found)
    seen_any = False
    for d in docs:
        if d["path"] in changed:
            found.problems.append({"path": d["path"], "reason": f"{changed[d['path']]}: its tables in the pile are "
                                   f"the old ones; run 'taskling ingest' so the pile and the file agree"})
            continue
        # worth reading, not worth the table: rows or records its reader left out
        found.problems += [{"path": d["path"], "reason": note} for note in json.loads(d["table_notes"])]
        tables = [_named(t, d) for t in pile.tables(d["id"])]
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


PATTERN_SECONDS = 2.0      # a pattern's time per chunk: a pathological one is stopped, not waited for
PATTERN_ROWS = 20_000       # rows one pattern entry may yield


def _matched(pile: Pile, cfg: TableCfg, docs: list, changed: dict, found: Tables) -> Tables:
    """A pattern entry's rows: every match of cfg.pattern in the chunks of `docs`, its named groups the
    columns, one table per document (in path order), a row's locator and chunk the chunk's."""
    import regex

    rx = regex.compile(cfg.pattern)
    by_doc: dict[str, list] = {}
    for c in pile.chunks():
        by_doc.setdefault(c.path, []).append(c)
    total = 0
    for d in docs:
        if d["path"] in changed:
            found.problems.append({"path": d["path"], "reason": f"{changed[d['path']]}: run 'taskling ingest' first"})
            continue
        t = Table(d["path"], 1, f"pattern {cfg.name}", list(rx.groupindex), [], [], d["format"], d["sha256"])
        for c in by_doc.get(d["path"], []):
            try:
                hits = list(rx.finditer(c.text, timeout=PATTERN_SECONDS))
            except TimeoutError:
                found.problems.append({"path": d["path"], "reason": f"tables: '{cfg.name}': the pattern took over "
                                       f"{PATTERN_SECONDS:g} s on chunk {c.locator}; simplify it"})
                continue
            for m in hits[:max(0, PATTERN_ROWS - total)]:
                t.rows.append({k: " ".join((v or "").split()) for k, v in m.groupdict().items()})
                t.locators.append(c.locator)
                t.chunks.append(c.key)
                t.topics.append(c.topic_id)
            total += len(hits)
        if t.rows:
            found.append(t)
    if total > PATTERN_ROWS:
        found.warnings.append(f"tables: '{cfg.name}': the pattern matched {total} times; the first {PATTERN_ROWS} "
                              "are used (narrow it, or match fewer documents)")
    if not found:
        found.warnings.append(f"tables: '{cfg.name}': the pattern matches nothing in the {len(docs)} document(s) "
                              f"that match '{cfg.match}'")
    return found


def _named(t: PileTable, d) -> Table:
    """A pile table with its columns named; ragged rows are filled with empty cells."""
    width = max([len(t.header)] + [len(cells) for cells in t.rows])
    columns = normalise_columns(t.header, width)
    rows = [dict(zip(columns, list(cells) + [""] * (width - len(cells)))) for cells in t.rows]
    return Table(d["path"], t.index, t.name, columns, rows, list(t.locators), d["format"], d["sha256"],
                 list(t.chunks), list(t.topics))


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
