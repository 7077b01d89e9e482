"""Format converters: a file's bytes to text segments with locators.

Every converter is a function `(data: bytes, name: str, limits: Limits) ->
Extracted`, registered for file extensions (and optionally recognised by its
magic bytes when the extension lies). An `Extracted` is a list of segments
(a page, a slide, a sheet's row block, a message, a code unit, a document
section), each with a locator a person can follow back to the source; the
chunker never lets a chunk span two segments. Files found *inside* a file
(archive members, e-mail attachments) come back as `children` and are
ingested as documents of their own, linked to their container.

An `Extracted` also holds the document's `tables` (header, rows of cell
texts, one locator per row). CSV/TSV, spreadsheets, JSON/JSONL records and
HTML <table>s are read by their converters; for every other format `convert`
reads the pipe tables of the text ("| a | b |", "a | b": Markdown, DOCX and
PPTX tables, PDF text where cell boundaries survive).

`convert(name, data)` picks the converter: by magic bytes, else by extension,
else, for an unknown extension (README.Debian, app.conf), by content: text is
read as text. Anything unreadable raises ConvertError with a short reason a
person can act on.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath
from typing import Callable, Iterable


class ConvertError(Exception):
    """The file cannot be read; the message says why (encrypted, corrupt, ...)."""


@dataclass(frozen=True)
class Limits:
    """Guards against hostile input; all sizes in bytes."""

    max_file_bytes: int = 50 * 2**20          # any one file or member
    max_archive_total_bytes: int = 500 * 2**20  # everything unpacked from one archive tree
    max_archive_ratio: float = 100.0          # unpacked / packed size of one member (zip bombs)
    max_archive_members: int = 10_000
    max_depth: int = 5                        # archives inside archives inside ...
    max_line_chars: int = 100_000             # longer lines are cut, with a warning
    max_rows: int = 200_000                   # spreadsheet/CSV rows per sheet
    max_seconds: float = 120.0                # one file's conversion, in the isolated worker (ingest.isolate)
    max_memory_mb: int = 1024                 # the isolated worker's address space
    isolate: bool = True                      # convert in a worker process under the two limits above

    def content_key(self) -> dict:
        """The limits that shape what a file turns into (not how long it may take); numbers as floats, so
        a limit read from YAML as 100 and from JSON as 100.0 is the same key."""
        return {k: float(v) for k, v in dataclasses.asdict(self).items()
                if k not in ("max_seconds", "max_memory_mb", "isolate")}


@dataclass
class Segment:
    text: str
    locator: str        # "page 3", "slide 2", "Sheet1!A1:F40", "Setup > Install", "<id@host>", "lines 10-42"
    kind: str = "text"  # text | page | slide | rows | message | code | section | record


@dataclass
class Child:
    """A file inside a file: an archive member or an e-mail attachment."""

    name: str           # path inside the container, e.g. "reports/q3.pdf"
    data: bytes
    relation: str       # "member" | "attachment"


@dataclass
class Table:
    """A table of a document, cells as text. Rows are as ragged as they came; `header` is [] when the
    first row is data. Locators name rows as a person finds them: "row 14" (a CSV line), "rows 5-6"
    (a CSV record over two lines), "'Q3 data' row 5", "record 3" (JSON), "line 3" (JSONL), "codes
    record 2" (a JSON list under a key), "table 2, row 14" (the 14th data row of the document's 2nd
    table; tables are numbered from 1)."""

    name: str | None                 # sheet, caption or nearest heading
    header: list[str]
    rows: list[list[str]]
    locators: list[str]              # one per row
    offsets: list[int] = field(default_factory=list)       # pipe tables: where each row starts in the text
    chunks: list[int | None] = field(default_factory=list)  # per row: ordinal of the chunk that holds it


def keep_tables(found: Iterable[Table]) -> list[Table]:
    """The tables with at least one row, in order; rows without locators of their own are named
    "table N, row K", N counting the tables kept."""
    out: list[Table] = []
    for t in found:
        if t.rows:
            if not t.locators:
                t.locators = [f"table {len(out) + 1}, row {k}" for k in range(1, len(t.rows) + 1)]
            out.append(t)
    return out


@dataclass
class Extracted:
    segments: list[Segment]
    format: str                      # pdf, docx, xlsx, csv, html, markdown, text, json, eml, python, zip, ...
    converter: str                   # library and version, e.g. "pypdf 7.1.0"
    warnings: list[str] = field(default_factory=list)   # e.g. "page 4 has no text layer"
    children: list[Child] = field(default_factory=list)
    meta: dict = field(default_factory=dict)            # title, subject, Message-ID, ...
    tables: list[Table] | None = None  # None: the converter reads none itself; convert() finds the text's
    table_notes: list[str] = field(default_factory=list)  # what reading the tables left out, and why

    def text(self) -> tuple[str, list[tuple[int, int]]]:
        """The document's text (segments joined by blank lines) and each segment's char span in it."""
        parts, spans, pos = [], [], 0
        for seg in self.segments:
            body = seg.text.strip("\n")
            if parts:
                parts.append("\n\n")
                pos += 2
            spans.append((pos, pos + len(body)))
            parts.append(body)
            pos += len(body)
        return "".join(parts), spans


Converter = Callable[[bytes, str, Limits], Extracted]


@dataclass
class Entry:
    fmt: str
    fn_path: str                    # "module:function", imported on first use
    sniff: Callable[[bytes, str], bool] | None = None


REGISTRY: dict[str, Entry] = {}      # extension (".pdf") -> converter entry
SNIFFERS: list[Entry] = []           # tried in order when the extension is unknown or lies


def register(exts: tuple[str, ...], fmt: str, fn_path: str, sniff: Callable[[bytes, str], bool] | None = None) -> None:
    entry = Entry(fmt, fn_path, sniff)
    for e in exts:
        REGISTRY[e] = entry
    if sniff:
        SNIFFERS.append(entry)


def lib_version(dist: str) -> str:
    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist


def suffix(name: str) -> str:
    """The extension that decides the format: '.tar.gz' style double ones included."""
    p = PurePosixPath(name.lower())
    if "".join(p.suffixes[-2:]) in (".tar.gz", ".tar.bz2", ".tar.xz"):
        return "".join(p.suffixes[-2:])
    return p.suffix


def _load(entry: Entry) -> Converter:
    mod, fn = entry.fn_path.split(":")
    return getattr(importlib.import_module(mod), fn)


def detect(name: str, data: bytes) -> Entry | None:
    """The converter for a file: by magic bytes first where they are decisive
    (a PDF called .txt is still a PDF), else by extension."""
    for entry in SNIFFERS:
        try:
            if entry.sniff(data, name):
                return entry
        except Exception:  # a sniffer must never break ingestion
            continue
    return REGISTRY.get(suffix(name)) or text_by_content(data)


def text_by_content(data: bytes) -> Entry | None:
    """The plain-text converter for a file whose extension says nothing (README.Debian, app.conf,
    NEWS.old) when its bytes decode as text; None for binary data."""
    from .text import decode_text

    try:
        decode_text(data[:65536])
    except ConvertError:
        return None
    return REGISTRY.get("")


def supported_extensions() -> list[str]:
    """The extensions a converter is registered for (what a person can name), sorted."""
    return sorted(e for e in REGISTRY if e and not e.endswith("-sniffed"))


def convert(name: str, data: bytes, limits: Limits = Limits()) -> Extracted:
    if not data:
        raise ConvertError("the file is empty (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise ConvertError(f"{len(data) / 2**20:.1f} MB is over the limit of {limits.max_file_bytes / 2**20:.0f} MB")
    entry = detect(name, data)
    if entry is None:
        # Short: this line is printed per file; the formats are listed once, in docs/guide.md.
        raise ConvertError(f"format '{suffix(name) or '(no extension)'}' is not supported and the file is "
                           "not text (the formats taskling reads: docs/guide.md)")
    try:
        out = _load(entry)(data, name, limits)
    except ConvertError:
        raise
    except MemoryError:
        raise ConvertError("too large to convert in memory") from None
    except Exception as e:  # a library choking on a corrupt file: name it, go on
        raise ConvertError(f"the {entry.fmt} converter failed: {type(e).__name__}: {str(e)[:200]}") from None
    if not any(s.text.strip() for s in out.segments) and not out.children:
        raise ConvertError(f"no text found in this {out.format} file" +
                           (f" ({'; '.join(out.warnings[:3])})" if out.warnings else ""))
    if out.tables is None:
        from .pipes import pipe_tables

        out.tables = read_tables(lambda: pipe_tables(out.text()[0], out.format), out.table_notes)
    return out


def read_tables(read: Callable[[], list[Table]], notes: list[str]) -> list[Table]:
    """The tables `read` finds (kept and numbered as keep_tables does); a reader that fails costs the
    tables, with a note, never the document."""
    try:
        return keep_tables(read())
    except Exception as e:
        notes.append(f"its tables could not be read ({type(e).__name__}: {str(e)[:200]})")
        return []


# The built-in converters register here; each module imports its libraries lazily.
_BUILTIN = ("text", "html", "office", "sheets", "epub", "mail", "archive", "code")
for _m in _BUILTIN:
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as _e:  # a module not written yet, or a missing optional library
        if _e.name != f"{__name__}.{_m}":
            raise
