"""PDF, Word, PowerPoint, spreadsheets (XLSX/XLSM, XLS, ODS, CSV/TSV) and EPUB.

Each format becomes segments a person can find again in the source:

  PDF          one segment per page           "page 3"
  DOCX         one per heading section         "Intro > Setup"; text before the first heading: "(start)"
  PPTX         one per slide                   "slide 2 — Quarterly results" (just "slide 2" without a title)
  XLSX/XLS/ODS row blocks of up to 40 rows     "Sheet1!A2:F41", "'Q3 data'!B5:D9" (the block's data rows)
  CSV/TSV      row blocks of up to 40 rows     "rows 2-41" (file line numbers; the header is line 1)
  EPUB         one per chapter (spine order)   the chapter's table-of-contents title, else its file name

Row blocks repeat the sheet's header row first and render each row as
"Header1: v1 | Header2: v2", so a block read on its own still says what its
numbers mean.

Files whose extension lies are recognised by their bytes: "%PDF-" is a PDF,
a zip holding word/document.xml a DOCX, ppt/presentation.xml a PPTX,
xl/workbook.xml an XLSX, and a zip whose "mimetype" member says so an EPUB
or ODS. The libraries are imported inside the converters, on first use.
"""
from __future__ import annotations

import csv
import io
import warnings as pywarnings
import posixpath
import re
import zipfile
from datetime import date, datetime, time
from itertools import chain
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote
from xml.etree import ElementTree as ET

from . import ConvertError, Extracted, Limits, Segment, lib_version, register
from .text import _HTMLText, cut_long_lines, decode_text

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"   # old binary Office files, and encrypted OOXML
BLOCK_ROWS = 40          # rows per spreadsheet / CSV segment
BLOCK_CHARS = 6000       # ... or fewer when the rows are wide
MAX_PAGE_WARNINGS = 20   # per-page "no text layer" warnings before they are summed up
ZIP_BOMB_MIN_BYTES = 2**20  # members smaller than this are never called a zip bomb


# --------------------------------------------------------------------------- sniffing

def _zip_names(data: bytes) -> list[str]:
    """Member names when the bytes are a readable zip, else []. Cheap: reads the central directory only."""
    if not data.startswith(b"PK"):
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.namelist()
    except Exception:
        return []


def _zip_mimetype(data: bytes) -> str:
    """The "mimetype" member of an OpenDocument / EPUB zip, or ""."""
    if not data.startswith(b"PK"):
        return ""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("mimetype")
            if info.file_size > 200:
                return ""
            return zf.read(info).decode("ascii", errors="replace").strip()
    except Exception:
        return ""


def _is_pdf(data: bytes, name: str) -> bool:
    return data.startswith(b"%PDF-")


def _is_docx(data: bytes, name: str) -> bool:
    return "word/document.xml" in _zip_names(data)


def _is_pptx(data: bytes, name: str) -> bool:
    return "ppt/presentation.xml" in _zip_names(data)


def _is_xlsx(data: bytes, name: str) -> bool:
    return "xl/workbook.xml" in _zip_names(data)


def _is_epub(data: bytes, name: str) -> bool:
    return _zip_mimetype(data) == "application/epub+zip"


def _is_ods(data: bytes, name: str) -> bool:
    return _zip_mimetype(data) == "application/vnd.oasis.opendocument.spreadsheet"


# --------------------------------------------------------------------------- shared helpers

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    """Text as a segment wants it: no control characters, no trailing blanks, at most one blank line in a row."""
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _one_line(text: str, limit: int = 80) -> str:
    """A title or cell value on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _open_package(data: bytes, fmt: str, main: str, limits: Limits) -> zipfile.ZipFile:
    """Open a zip-based document (OOXML, OpenDocument, EPUB), or say clearly why it is not one."""
    label = fmt.upper()
    if data.startswith(OLE_MAGIC):
        raise _ole_error(data, fmt)
    if not data.startswith(b"PK"):
        raise ConvertError(f"not a valid {label}: it is not a zip file, and every {label} is one "
                           f"(was another kind of file renamed to .{fmt}?)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise ConvertError(f"not a valid {label}: the zip is damaged ({e}); "
                           f"re-save it or download it again") from None
    if main not in zf.namelist():
        raise ConvertError(f"not a valid {label}: the zip has no {main}, so it is some other kind of zip")
    _check_unpacked_size(zf, label, limits)
    return zf


def _check_unpacked_size(zf: zipfile.ZipFile, label: str, limits: Limits) -> None:
    """Refuse a document that would unpack to absurd sizes (a zip bomb) before a library inflates it."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > limits.max_archive_total_bytes:
        raise ConvertError(f"this {label} unpacks to {total / 2**20:.0f} MB, over the limit of "
                           f"{limits.max_archive_total_bytes / 2**20:.0f} MB; split it into smaller files")
    for i in infos:
        if i.file_size > ZIP_BOMB_MIN_BYTES and i.file_size > limits.max_archive_ratio * max(i.compress_size, 1):
            raise ConvertError(f"this {label} looks like a zip bomb: {i.filename} expands "
                               f"{i.file_size / max(i.compress_size, 1):.0f}x (limit {limits.max_archive_ratio:.0f}x)")


_OLE_STREAMS = {"docx": ("WordDocument", "Word 97-2003 (.doc)"),
                "pptx": ("PowerPoint Document", "PowerPoint 97-2003 (.ppt)"),
                "xlsx": ("Workbook", "Excel 97-2003 (.xls)")}


def _ole_has_stream(data: bytes, stream: str) -> bool:
    """Whether an OLE compound file names a stream (directory entries are UTF-16-LE)."""
    return stream.encode("utf-16-le") in data


def _ole_error(data: bytes, fmt: str) -> ConvertError:
    """The message for an OLE compound file where a zip-based document was expected."""
    label = fmt.upper()
    if _ole_has_stream(data, "EncryptedPackage") or _ole_has_stream(data, "EncryptionInfo"):
        return ConvertError(f"encrypted or legacy Office file: this {label} is password protected "
                            f"(encrypted Office files are OLE containers); open it in Office, remove the "
                            f"password (File > Info > Protect > Encrypt with Password) and save it again")
    stream, legacy = _OLE_STREAMS.get(fmt, ("", "Office 97-2003"))
    what = legacy if stream and _ole_has_stream(data, stream) else "Office 97-2003"
    return ConvertError(f"encrypted or legacy Office file: this is an old binary {what} file, not a {label}; "
                        f"open it in Office or LibreOffice and save it as .{fmt}")


# Content types of macro-enabled files, templates and slide shows; the
# libraries only open the plain document type, which has the same parts.
_MAIN_TYPES = {
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
             ("application/vnd.ms-word.document.macroEnabled.main+xml",
              "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
              "application/vnd.ms-word.template.macroEnabledTemplate.main+xml")),
    "pptx": ("application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
             ("application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml",
              "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",
              "application/vnd.ms-powerpoint.template.macroEnabled.main+xml",
              "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml",
              "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml")),
}


def _as_plain_document(data: bytes, zf: zipfile.ZipFile, fmt: str) -> bytes:
    """The bytes unchanged, or (for .docm/.dotx/.pptm/.ppsx ...) a copy whose main part is typed as a plain document."""
    plain, variants = _MAIN_TYPES[fmt]
    try:
        types = zf.read("[Content_Types].xml").decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return data
    found = [v for v in variants if v in types]
    if not found:
        return data
    for v in found:
        types = types.replace(v, plain)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zf.infolist():
            body = types.encode("utf-8") if info.filename == "[Content_Types].xml" else zf.read(info)
            zout.writestr(info.filename, body)
    return out.getvalue()


def _package_error(fmt: str, e: Exception) -> ConvertError:
    """A library refused a zip-based document: name the likely cause."""
    label = fmt.upper()
    if isinstance(e, zipfile.BadZipFile):
        return ConvertError(f"not a valid {label}: the zip is damaged ({e}); re-save it or download it again")
    if isinstance(e, KeyError):
        return ConvertError(f"not a valid {label}: a part it refers to is missing ({e}); "
                            f"open it in Office or LibreOffice and save it again")
    return ConvertError(f"not a valid {label}: {type(e).__name__}: {str(e)[:200]}; "
                        f"open it in Office or LibreOffice and save it again")


def _meta(**fields) -> dict:
    """Metadata without the empty fields."""
    return {k: _one_line(v, 300) for k, v in fields.items() if v and str(v).strip()}


# --------------------------------------------------------------------------- PDF

def convert_pdf(data: bytes, name: str, limits: Limits) -> Extracted:
    """A PDF: one segment per page with a text layer; scanned pages are reported, not guessed at."""
    reader = _open_pdf(data)
    try:
        pages = list(reader.pages)
    except Exception as e:
        raise ConvertError(f"damaged PDF: its page list cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                           f"download it again or re-save it (print to PDF)") from None
    warnings: list[str] = []
    if b"%%EOF" not in data[-2048:]:
        warnings.append("the PDF has no %%EOF marker at its end, so it may be truncated: pages may be missing")
    segments, no_text = [], []
    for n, page in enumerate(pages, 1):
        try:
            text = _clean(page.extract_text() or "")
        except Exception as e:
            warnings.append(f"page {n} could not be read ({type(e).__name__}: {str(e)[:120]}); skipped")
            continue
        if not text:
            no_text.append(n)
            continue
        segments.append(Segment(cut_long_lines(text, limits, warnings), f"page {n}", "page"))
    if pages and len(no_text) == len(pages):
        raise ConvertError(f"none of the {len(pages)} page(s) has a text layer: this looks like a scanned PDF; "
                           f"run OCR on it (e.g. ocrmypdf) and add it again")
    warnings += _no_text_warnings(no_text)
    meta = _pdf_meta(reader)
    meta["pages"] = len(pages)
    return Extracted(segments, "pdf", lib_version("pypdf"), warnings, meta=meta)


def _open_pdf(data: bytes):
    """A pypdf reader, decrypted with the empty password if need be; ConvertError if it cannot be read."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    if b"%PDF-" not in data[:1024]:
        raise ConvertError("not a PDF: it does not start with %PDF- (an HTML error page or "
                           "another kind of file saved as .pdf?)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except DependencyError as e:
        raise ConvertError(f"encrypted PDF: reading it needs an extra library ({e}); "
                           f"install 'cryptography' or save an unprotected copy") from None
    except Exception as e:
        raise ConvertError(f"damaged or truncated PDF: {type(e).__name__}: {str(e)[:200]}; "
                           f"download it again or re-save it (print to PDF)") from None
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except DependencyError as e:
            raise ConvertError(f"encrypted PDF: decrypting it needs an extra library ({e}); "
                               f"install 'cryptography' or save an unprotected copy") from None
        except Exception as e:
            raise ConvertError(f"encrypted PDF: it cannot be decrypted ({type(e).__name__}: {str(e)[:120]}); "
                               f"save an unprotected copy and add that") from None
        if not ok:
            raise ConvertError("encrypted PDF: password protected; open it with the password and save an "
                               "unprotected copy (or: qpdf --decrypt --password=... in.pdf out.pdf), then add that")
    return reader


def _no_text_warnings(pages: list[int]) -> list[str]:
    """One warning per page without text, summed up past MAX_PAGE_WARNINGS."""
    out = [f"page {n} has no text layer (scanned image?)" for n in pages[:MAX_PAGE_WARNINGS]]
    if len(pages) > MAX_PAGE_WARNINGS:
        out.append(f"{len(pages) - MAX_PAGE_WARNINGS} more page(s) have no text layer (scanned images?); "
                   f"run OCR on the PDF (e.g. ocrmypdf) to read them")
    return out


def _pdf_meta(reader) -> dict:
    try:
        info = reader.metadata
        return _meta(title=info.title, author=info.author) if info else {}
    except Exception:  # broken info dictionaries are common and never worth failing over
        return {}


# --------------------------------------------------------------------------- DOCX

_HEADING_STYLE = re.compile(r"heading\s*([1-9])$", re.I)


def convert_docx(data: bytes, name: str, limits: Limits) -> Extracted:
    """A Word document: one segment per heading section, tables as "cell | cell" lines."""
    zf = _open_package(data, "docx", "word/document.xml", limits)
    data = _as_plain_document(data, zf, "docx")
    import docx

    try:
        doc = docx.Document(io.BytesIO(data))
        blocks = list(_docx_blocks(doc))
    except Exception as e:
        raise _package_error("docx", e) from None
    warnings: list[str] = []
    segments = [Segment(cut_long_lines(text, limits, warnings), loc, "section") for loc, text in _sections(blocks)]
    cp = doc.core_properties
    meta = _meta(title=cp.title, author=cp.author)
    return Extracted(segments, "docx", lib_version("python-docx"), warnings, meta=meta)


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_WRAPPERS = {_W + "sdt", _W + "sdtContent", _W + "customXml", _W + "ins", _W + "moveTo"}
# Not text of the paragraph: properties (their w:tab are tab stops), deleted
# text, text boxes (a nested story), and the duplicate fallback of drawings.
_NOT_TEXT = {_W + "pPr", _W + "rPr", _W + "del", _W + "moveFrom", _W + "txbxContent", _W + "p", _MC_FALLBACK}


def _docx_blocks(doc) -> Iterator[tuple[int | None, str]]:
    """(heading level or None, text) for each paragraph and table, in document order."""
    style_levels = _style_levels(doc)
    for el in _story_elements(doc.element.body):
        if el.tag == _W + "tbl":
            text = _docx_table(el)
            if text:
                yield None, text
            continue
        text = _clean(_paragraph_text(el))
        if text:
            yield _heading_level(el, style_levels), text


def _story_elements(parent) -> Iterator:
    """The w:p and w:tbl elements of a body or table cell, including those inside
    content controls and tracked insertions (which python-docx's iterators skip)."""
    for child in parent:
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag in _WRAPPERS:
            yield from _story_elements(child)


def _paragraph_text(p) -> str:
    """A paragraph's text as Word shows it with changes accepted: runs, hyperlinks,
    fields, content controls and insertions; tabs and line breaks kept."""
    parts: list[str] = []

    def walk(el) -> None:
        for child in el:
            tag = child.tag
            if tag == _W + "t":
                parts.append(child.text or "")
            elif tag == _W + "tab":
                parts.append("\t")
            elif tag in (_W + "br", _W + "cr"):
                parts.append("\n")
            elif tag == _W + "noBreakHyphen":
                parts.append("-")
            elif isinstance(tag, str) and tag not in _NOT_TEXT:
                walk(child)

    walk(p)
    return "".join(parts)


def _heading_level(p, style_levels: dict) -> int | None:
    """1-9 for a heading paragraph (by its outline level or its style's), None for body text."""
    own = p.xpath("./w:pPr/w:outlineLvl/@w:val")
    if own:
        return _outline_level(own[0])
    style_id = p.xpath("./w:pPr/w:pStyle/@w:val")
    return style_levels.get(style_id[0] if style_id else None, style_levels.get(None))


def _style_levels(doc) -> dict[str | None, int | None]:
    """Paragraph style id -> heading level (None: not a heading); key None is the default style.
    Worked out once per document: python-docx's per-paragraph style lookup is slow."""
    from docx.enum.style import WD_STYLE_TYPE

    def level(style) -> int | None:
        seen = set()
        while style is not None and style.style_id not in seen:
            seen.add(style.style_id)
            if m := _HEADING_STYLE.match(style.name or ""):
                return int(m.group(1))
            if outline := style.element.xpath("./w:pPr/w:outlineLvl/@w:val"):
                return _outline_level(outline[0])
            style = style.base_style
        return None

    paragraph_styles = [s for s in doc.styles if s.type == WD_STYLE_TYPE.PARAGRAPH]
    levels: dict[str | None, int | None] = {s.style_id: level(s) for s in paragraph_styles}
    default = doc.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    levels[None] = level(default) if default is not None else None
    return levels


def _outline_level(value: str) -> int | None:
    """w:outlineLvl 0-8 is heading level 1-9; 9 means body text."""
    return int(value) + 1 if value.isdigit() and int(value) < 9 else None


def _docx_table(tbl) -> str:
    """A table as one "cell | cell | cell" line per row; merged cells appear once,
    a table inside a cell is flattened into that cell."""
    lines = []
    for tr in tbl.iterchildren(_W + "tr"):
        cells = [_one_line(" ".join(_docx_table(el) if el.tag == _W + "tbl" else _paragraph_text(el)
                                    for el in _story_elements(tc)), 10_000)
                 for tc in tr.iterchildren(_W + "tc")]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _sections(blocks: Iterable[tuple[int | None, str]]) -> Iterator[tuple[str, str]]:
    """(heading path, text) per section; a section's text starts with its heading.
    A heading followed directly by a deeper one gives no section of its own: it
    lives on in the paths of its subsections."""
    path: list[tuple[int, str]] = []
    locator, parts, has_body, level_now = "(start)", [], False, 0
    for level, text in blocks:
        if level is None:
            parts.append(text)
            has_body = True
            continue
        if has_body or (parts and level <= level_now):
            yield locator, "\n\n".join(parts)
        path = [h for h in path if h[0] < level] + [(level, _one_line(text))]
        locator, parts, has_body, level_now = " > ".join(t for _, t in path), [text], False, level
    if parts:
        yield locator, "\n\n".join(parts)


# --------------------------------------------------------------------------- PPTX

def convert_pptx(data: bytes, name: str, limits: Limits) -> Extracted:
    """A presentation: one segment per slide with the text of every shape, tables and speaker notes."""
    zf = _open_package(data, "pptx", "ppt/presentation.xml", limits)
    data = _as_plain_document(data, zf, "pptx")
    from pptx import Presentation

    try:
        prs = Presentation(io.BytesIO(data))
        slides = list(prs.slides)
    except Exception as e:
        raise _package_error("pptx", e) from None
    segments, warnings = [], []
    for n, slide in enumerate(slides, 1):
        try:
            title, text = _slide_text(slide)
        except Exception as e:  # one odd slide should not cost the deck
            warnings.append(f"slide {n} could not be read ({type(e).__name__}: {str(e)[:120]}); skipped")
            continue
        if not text:
            warnings.append(f"slide {n} has no text")
            continue
        locator = f"slide {n}" + (f" — {title}" if title else "")
        segments.append(Segment(cut_long_lines(text, limits, warnings), locator, "slide"))
    cp = prs.core_properties
    meta = _meta(title=cp.title, author=cp.author)
    meta["slides"] = len(slides)
    return Extracted(segments, "pptx", lib_version("python-pptx"), warnings, meta=meta)


def _slide_text(slide) -> tuple[str, str]:
    """The slide's title (one line, may be "") and its text: shapes top to bottom, then "Notes: ..."."""
    title_shape = slide.shapes.title
    title = _one_line(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
    parts = list(_shape_texts(slide.shapes))
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = _clean(frame.text) if frame is not None else ""
        if notes:
            parts.append("Notes: " + notes)
    return title, "\n\n".join(parts)


def _shape_texts(shapes) -> Iterator[str]:
    """Text of each shape in reading order (top to bottom, left to right), groups and tables included."""
    from pptx.shapes.group import GroupShape

    def position(shape):
        return (shape.top or 0, shape.left or 0)

    for shape in sorted(shapes, key=position):
        if isinstance(shape, GroupShape):
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [" | ".join(_one_line(c.text, 10_000) for c in row.cells) for row in shape.table.rows]
            text = "\n".join(r for r in rows if r.strip(" |"))
            if text:
                yield text
        elif shape.has_text_frame:
            text = _clean(shape.text_frame.text.replace("\v", "\n"))
            if text:
                yield text


# --------------------------------------------------------------------------- rows: spreadsheets and CSV

# A row of a table: (first line, last line, cell values from column A on).
# For sheets both lines are the row number; a CSV record may span lines.
Row = tuple[int, int, list]
Locate = Callable[[int, int, int, int], str]   # (first row, last row, first col, last col) -> locator

_NUMBER = re.compile(r"[-+(]?[$€£¥]?\s?\d[\d,.\s]*%?\)?|\d{4}-\d\d-\d\d(?:[ T][\d:.]+)?")


def _cell_text(value) -> str:
    """A cell as it should read: integral floats without ".0", dates in ISO form, text on one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.15g}"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (date, time)):
        return value.isoformat()
    return " ".join(str(value).split())


def _is_data_like(value) -> bool:
    """Numbers and dates: a first row made only of these is data, not a header."""
    if isinstance(value, (bool, int, float, date, time)):
        return True
    return isinstance(value, str) and bool(_NUMBER.fullmatch(value.strip()))


def _col_letter(n: int) -> str:
    """1 -> A, 27 -> AA."""
    s = ""
    while n > 0:
        n, r = divmod(n - 1, 26)
        s = chr(65 + r) + s
    return s


def _sheet_ref(sheet: str) -> str:
    """A sheet name as Excel writes it in a reference: quoted when it is not a plain word."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", sheet) and not re.fullmatch(r"[A-Za-z]{1,3}\d+", sheet):
        return sheet
    return "'" + sheet.replace("'", "''") + "'"


def _sheet_locate(sheet: str) -> Locate:
    ref = _sheet_ref(sheet)
    return lambda r0, r1, c0, c1: f"{ref}!{_col_letter(c0)}{r0}:{_col_letter(c1)}{r1}"


def _line_locate(r0: int, r1: int, c0: int, c1: int) -> str:
    return f"row {r0}" if r0 == r1 else f"rows {r0}-{r1}"


def _nonempty_rows(rows: Iterable[Row]) -> Iterator[tuple[int, int, list[str], list]]:
    """(first, last, cell texts, raw values) for rows with at least one non-empty cell."""
    for first, last, values in rows:
        cells = [_cell_text(v) for v in values]
        if any(cells):
            while not cells[-1]:
                cells.pop()
            yield first, last, cells, list(values)


def _split_header(rows: Iterator) -> tuple[list, tuple | None, Iterator] | None:
    """Title rows above the header, the header row (None when the first row is
    data) and the data rows; None for a table without a single non-empty row.

    The first non-empty row is the header unless it holds only numbers/dates.
    A row with a single cell followed by a wider row is a title ("Q3 report")
    and the header is looked for below it (at most 3 such rows).
    """
    ahead = []
    for row in rows:
        ahead.append(row)
        if len(ahead) == 5:
            break
    if not ahead:
        return None
    i = 0
    while i < 3 and i + 1 < len(ahead) and _width(ahead[i]) == 1 and _width(ahead[i + 1]) >= 2:
        i += 1
    titles, candidate = ahead[:i], ahead[i]
    rest = chain(ahead[i + 1:], rows)
    if all(_is_data_like(v) for v in candidate[3] if _cell_text(v)):
        return titles, None, chain([candidate], rest)
    return titles, candidate, rest


def _width(row) -> int:
    return sum(1 for c in row[2] if c)


def _row_segments(rows: Iterable[Row], locate: Locate, label: str, limits: Limits,
                  warnings: list[str]) -> list[Segment]:
    """A table's rows as segments of up to BLOCK_ROWS rows, each repeating the title and header lines."""
    split = _split_header(_nonempty_rows(rows))
    if split is None:
        warnings.append(f"{label} is empty; skipped")
        return []
    titles, header, data = split
    header_cells = header[2] if header else []
    names = [h or _col_letter(i) for i, h in enumerate(header_cells, 1)]
    header_cols = [i for i, h in enumerate(header_cells, 1) if h]
    context = [next(c for c in cells if c) for _, _, cells, _ in titles]
    if header:
        context.append(" | ".join(h for h in header_cells if h))
    segments: list[Segment] = []
    block: list[tuple[int, int, list[str], list]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if block:
            cols = header_cols + [i for _, _, cells, _ in block for i, c in enumerate(cells, 1) if c]
            lines = context + [_render_row(cells, names) for _, _, cells, _ in block]
            segments.append(Segment("\n".join(lines), locate(block[0][0], block[-1][1], min(cols), max(cols)), "rows"))
            block.clear()
            size = 0

    for n, row in enumerate(data, 1):
        if n > limits.max_rows:
            warnings.append(f"{label}: only the first {limits.max_rows} rows were read (the max_rows limit); "
                            f"split it into smaller files to read the rest")
            break
        block.append(row)
        size += sum(map(len, row[2]))
        if len(block) >= BLOCK_ROWS or size >= BLOCK_CHARS:
            flush()
    flush()
    if not segments and header:  # a header (and titles) without data rows: still worth keeping
        r0 = (titles or [header])[0][0]
        segments.append(Segment("\n".join(context), locate(r0, header[1], min(header_cols), max(header_cols)), "rows"))
    return segments


def _render_row(cells: list[str], names: list[str]) -> str:
    """One row as "Header1: v1 | Header2: v2"; empty cells are left out."""
    return " | ".join(f"{names[i] if i < len(names) else _col_letter(i + 1)}: {c}"
                      for i, c in enumerate(cells) if c)


def convert_xlsx(data: bytes, name: str, limits: Limits) -> Extracted:
    """An Excel workbook (.xlsx/.xlsm): cached cell values, sheet by sheet, in row blocks."""
    legacy = data.startswith(OLE_MAGIC) and _ole_has_stream(data, "Workbook")
    if legacy and not _ole_has_stream(data, "EncryptedPackage"):
        out = convert_xls(data, name, limits)   # an old .xls saved under a new name
        out.warnings.insert(0, "this is an Excel 97-2003 (.xls) file with an .xlsx name; it was read as .xls")
        return out
    _open_package(data, "xlsx", "xl/workbook.xml", limits)
    from openpyxl import load_workbook

    try:
        with pywarnings.catch_warnings():  # "extension not supported" notes about features text does not need
            pywarnings.simplefilter("ignore")
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:
        raise _package_error("xlsx", e) from None
    segments, warnings = [], []
    try:
        for ws in wb.worksheets:
            ws.reset_dimensions()  # the stored used range is often wrong; read what is there
            rows = ((n, n, list(values)) for n, values in enumerate(ws.iter_rows(values_only=True), 1))
            segments += _row_segments(rows, _sheet_locate(ws.title), f"sheet '{ws.title}'", limits, warnings)
    except ConvertError:
        raise
    except Exception as e:
        raise _package_error("xlsx", e) from None
    finally:
        wb.close()
    meta = _meta(title=wb.properties.title, author=wb.properties.creator)
    meta["sheets"] = len(wb.worksheets)
    return Extracted(segments, "xlsx", lib_version("openpyxl"), warnings, meta=meta)


def convert_xls(data: bytes, name: str, limits: Limits) -> Extracted:
    """An Excel 97-2003 workbook (.xls), read with xlrd."""
    import xlrd

    if not data.startswith(OLE_MAGIC):
        raise ConvertError("not a valid XLS: it is not an Excel 97-2003 file (no OLE header); if it is an "
                           "HTML or XML table saved as .xls, rename it to .html, or open it in Excel and save as .xlsx")
    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True)
    except Exception as e:
        if "encrypt" in str(e).lower():
            raise ConvertError("encrypted XLS: password protected; open it in Excel, remove the password "
                               "(File > Info > Protect Workbook) and save it again") from None
        raise ConvertError(f"not a valid XLS: the file is damaged ({type(e).__name__}: {str(e)[:200]}); "
                           f"open it in Excel or LibreOffice and save it again") from None
    segments, warnings = [], []
    try:
        for i in range(book.nsheets):
            sheet = book.sheet_by_index(i)
            rows = ((r + 1, r + 1, [_xls_value(c, book.datemode) for c in sheet.row(r)])
                    for r in range(sheet.nrows))
            segments += _row_segments(rows, _sheet_locate(sheet.name), f"sheet '{sheet.name}'", limits, warnings)
            book.unload_sheet(i)
        meta = _meta(author=book.user_name)
        meta["sheets"] = book.nsheets
    finally:
        book.release_resources()
    return Extracted(segments, "xls", lib_version("xlrd"), warnings, meta=meta)


def _xls_value(cell, datemode: int):
    """An xlrd cell as a Python value: dates as datetimes, booleans as bools, errors as Excel shows them."""
    import xlrd

    if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return None
    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate.xldate_as_datetime(cell.value, datemode)
        except Exception:
            return cell.value
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(cell.value)
    if cell.ctype == xlrd.XL_CELL_ERROR:
        return xlrd.error_text_from_code.get(cell.value, "#ERROR")
    return cell.value


def convert_ods(data: bytes, name: str, limits: Limits) -> Extracted:
    """An OpenDocument spreadsheet (.ods), read with odfpy."""
    zf = _open_package(data, "ods", "content.xml", limits)
    if b"encryption-data" in _read_member(zf, "META-INF/manifest.xml"):
        raise ConvertError("encrypted ODS: password protected; open it in LibreOffice, save a copy "
                           "without a password and add that")
    from odf import table as odtable
    from odf.opendocument import load

    try:
        doc = load(io.BytesIO(data))
        tables = doc.spreadsheet.getElementsByType(odtable.Table)
    except Exception as e:
        raise _package_error("ods", e) from None
    segments, warnings = [], []
    for tbl in tables:
        sheet = tbl.attributes.get((_TABLENS, "name"), "") or f"Sheet{len(segments) + 1}"
        segments += _row_segments(_ods_rows(tbl, limits), _sheet_locate(sheet), f"sheet '{sheet}'", limits, warnings)
    meta = {"sheets": len(tables)}
    return Extracted(segments, "ods", lib_version("odfpy"), warnings, meta=meta)


_TABLENS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICENS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_TEXTNS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_MAX_COLS = 16384  # Excel's and LibreOffice's widest sheet


def _read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    try:
        return zf.read(member)
    except KeyError:
        return b""


def _ods_rows(tbl, limits: Limits) -> Iterator[Row]:
    """The rows of an ODS table; repeated empty rows and cells (often a million of them) are skipped, not expanded."""
    from odf.table import TableRow

    row_no, emitted = 0, 0
    for row in tbl.getElementsByType(TableRow):
        repeat = int(row.attributes.get((_TABLENS, "number-rows-repeated"), 1) or 1)
        values = _ods_cells(row)
        if not any(v is not None for v in values):
            row_no += repeat
            continue
        for _ in range(min(repeat, limits.max_rows + 2 - emitted)):
            row_no += 1
            emitted += 1
            yield row_no, row_no, values
        if emitted > limits.max_rows:
            return


def _ods_cells(row) -> list:
    """One ODS row's cell values from column A on (None for empty cells)."""
    values: list = []
    pending_empty = 0
    for cell in row.childNodes:
        if getattr(cell, "qname", None) not in ((_TABLENS, "table-cell"), (_TABLENS, "covered-table-cell")):
            continue
        repeat = int(cell.attributes.get((_TABLENS, "number-columns-repeated"), 1) or 1)
        value = _ods_value(cell)
        if value is None:
            pending_empty += repeat
            continue
        width = len(values) + pending_empty
        if width >= _MAX_COLS:
            break
        values += [None] * pending_empty + [value] * min(repeat, _MAX_COLS - width)
        pending_empty = 0
    return values


def _ods_value(cell):
    """A cell's value: floats as numbers, dates as ISO text, the rest as the text shown in the cell."""
    from odf import teletype

    kind = cell.attributes.get((_OFFICENS, "value-type"))
    if kind == "float":
        try:
            return float(cell.attributes.get((_OFFICENS, "value")))
        except (TypeError, ValueError):
            pass
    if kind == "date" and cell.attributes.get((_OFFICENS, "date-value")):
        return cell.attributes[(_OFFICENS, "date-value")].replace("T00:00:00", "").replace("T", " ")
    if kind == "boolean" and cell.attributes.get((_OFFICENS, "boolean-value")):
        return cell.attributes[(_OFFICENS, "boolean-value")] == "true"
    paragraphs = [p for p in cell.childNodes if getattr(p, "qname", None) == (_TEXTNS, "p")]  # not comments
    text = "\n".join(teletype.extractText(p) for p in paragraphs).strip()
    return text or None


def convert_csv(data: bytes, name: str, limits: Limits) -> Extracted:
    """CSV or TSV: the delimiter is sniffed (tab for .tsv), rows rendered in blocks under the header."""
    text, enc = decode_text(data)
    fmt = "tsv" if name.lower().endswith((".tsv", ".tab")) else "csv"
    delimiter = "\t" if fmt == "tsv" else _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    warnings: list[str] = []

    def rows() -> Iterator[Row]:
        prev = 0
        for record in reader:
            yield prev + 1, reader.line_num, record
            prev = reader.line_num

    try:
        segments = _row_segments(rows(), _line_locate, f"this {fmt.upper()} file", limits, warnings)
    except csv.Error as e:
        raise ConvertError(f"not a valid {fmt.upper()} file (line {reader.line_num}: {e}); "
                           f"check its quoting, or open it in a spreadsheet and save it again") from None
    for seg in segments:
        seg.text = cut_long_lines(seg.text, limits, warnings)
    return Extracted(segments, fmt, f"stdlib csv ({enc}, delimiter {delimiter!r})", warnings)


def _sniff_delimiter(text: str) -> str:
    """The delimiter of a CSV file: comma, semicolon, tab or pipe; comma when in doubt."""
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        first = sample.split("\n", 1)[0]
        counts = {d: first.count(d) for d in ",;\t|"}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


# --------------------------------------------------------------------------- EPUB

_XHTML_TYPES = {"application/xhtml+xml", "text/html", "application/xml", "text/xml"}
_OPS_NS = "{http://www.idpf.org/2007/ops}"


def convert_epub(data: bytes, name: str, limits: Limits) -> Extracted:
    """An EPUB book: one segment per chapter in reading (spine) order, titled from its table of contents."""
    zf = _open_package(data, "epub", "META-INF/container.xml", limits)
    opf_path = _epub_rootfile(zf)
    opf = _parse_xml(zf, opf_path, "the package file")
    manifest = _epub_manifest(opf, posixpath.dirname(opf_path))
    spine = [ref.get("idref", "") for ref in _all(opf, "itemref")]
    titles = _epub_titles(zf, opf, manifest)
    encrypted = _epub_encrypted(zf)
    segments, warnings, no_text, locked = [], [], 0, 0
    for idref in spine:
        path, media_type = manifest.get(idref, ("", ""))
        if not path or media_type not in _XHTML_TYPES:
            continue
        if path in encrypted:
            locked += 1
            continue
        text = _epub_chapter(zf, path, limits, warnings)
        if not text:
            no_text += 1
            continue
        title = titles.get(path) or _first_heading(text) or posixpath.basename(path)
        segments.append(Segment(_demote_title(text, title), title, "section"))
    if locked and not segments:
        raise ConvertError("DRM-protected EPUB: its chapters are encrypted (META-INF/encryption.xml); "
                           "only DRM-free EPUBs can be read")
    if locked:
        warnings.append(f"{locked} chapter(s) are encrypted (DRM) and were skipped")
    if no_text:
        warnings.append(f"{no_text} spine item(s) had no text (cover or image pages)")
    meta = _meta(title=_first_text(opf, "title"), author=_first_text(opf, "creator"))
    meta["chapters"] = len(segments)
    return Extracted(segments, "epub", "stdlib zipfile + html.parser", warnings, meta=meta)


def _all(root: ET.Element, local: str) -> list[ET.Element]:
    """Elements with this local name, whatever their namespace."""
    return [el for el in root.iter() if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == local]


def _first_text(root: ET.Element, local: str) -> str:
    for el in _all(root, local):
        text = "".join(el.itertext()).strip()
        if text:
            return text
    return ""


def _parse_xml(zf: zipfile.ZipFile, path: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(zf.read(path))
    except KeyError:
        raise ConvertError(f"not a valid EPUB: {what} {path} is missing from the zip") from None
    except ET.ParseError as e:
        raise ConvertError(f"not a valid EPUB: {what} {path} is not well-formed XML ({e})") from None


def _epub_rootfile(zf: zipfile.ZipFile) -> str:
    """The path of the package (.opf) file named in META-INF/container.xml."""
    container = _parse_xml(zf, "META-INF/container.xml", "the container file")
    for el in _all(container, "rootfile"):
        if el.get("full-path"):
            return el.get("full-path")
    raise ConvertError("not a valid EPUB: META-INF/container.xml names no package (.opf) file")


def _resolve(base: str, href: str) -> str:
    """A manifest or table-of-contents href as a path inside the zip (no fragment, %-escapes decoded)."""
    return posixpath.normpath(posixpath.join(base, unquote(href.split("#", 1)[0])))


def _epub_manifest(opf: ET.Element, base: str) -> dict[str, tuple[str, str]]:
    """Manifest id -> (path in the zip, media type)."""
    return {el.get("id", ""): (_resolve(base, el.get("href", "")), el.get("media-type", ""))
            for el in _all(opf, "item") if el.get("href")}


def _epub_titles(zf: zipfile.ZipFile, opf: ET.Element, manifest: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Chapter path -> title, from the EPUB 3 nav document or else the EPUB 2 NCX; the first entry per file wins."""
    titles: dict[str, str] = {}
    nav_ids = [el.get("id", "") for el in _all(opf, "item") if "nav" in (el.get("properties") or "").split()]
    ncx_ids = [spine.get("toc", "") for spine in _all(opf, "spine")]
    ncx_ids += [i for i, (_, t) in manifest.items() if t == "application/x-dtbncx+xml"]
    for item_id in nav_ids + ncx_ids:
        path = manifest.get(item_id, ("", ""))[0]
        try:
            root = ET.fromstring(zf.read(path))
        except (KeyError, ET.ParseError):
            continue  # titles are a nicety: fall back to headings and file names
        base = posixpath.dirname(path)
        for href, title in (_nav_entries(root) if item_id in nav_ids else _ncx_entries(root)):
            titles.setdefault(_resolve(base, href), _one_line(title))
        if titles:
            break
    return titles


def _nav_entries(root: ET.Element) -> Iterator[tuple[str, str]]:
    navs = _all(root, "nav")
    toc = [n for n in navs if n.get(f"{_OPS_NS}type") == "toc"] or navs[:1]
    for nav in toc:
        for a in _all(nav, "a"):
            text = "".join(a.itertext()).strip()
            if a.get("href") and text:
                yield a.get("href"), text


def _ncx_entries(root: ET.Element) -> Iterator[tuple[str, str]]:
    for point in _all(root, "navPoint"):
        label = _first_text(point, "navLabel")
        content = _all(point, "content")
        if label and content and content[0].get("src"):
            yield content[0].get("src"), label


def _epub_encrypted(zf: zipfile.ZipFile) -> set[str]:
    """Paths listed in META-INF/encryption.xml (DRM, or obfuscated fonts)."""
    raw = _read_member(zf, "META-INF/encryption.xml")
    if not raw:
        return set()
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        return set()
    return {_resolve("", el.get("URI", "")) for el in _all(root, "CipherReference") if el.get("URI")}


def _epub_chapter(zf: zipfile.ZipFile, path: str, limits: Limits, warnings: list[str]) -> str:
    """A chapter's text, headings marked "# " as for HTML; "" (with a warning) when it cannot be read."""
    try:
        info = zf.getinfo(path)
        if info.file_size > limits.max_file_bytes:
            warnings.append(f"chapter {path} is over the {limits.max_file_bytes / 2**20:.0f} MB limit; skipped")
            return ""
        html, _ = decode_text(zf.read(info))
    except KeyError:
        warnings.append(f"chapter {path} is listed in the spine but missing from the zip")
        return ""
    except (ConvertError, zipfile.BadZipFile, EOFError, ValueError) as e:
        warnings.append(f"chapter {path} could not be read ({e}); skipped")
        return ""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return cut_long_lines(_clean(parser.text()), limits, warnings)


def _first_heading(text: str) -> str:
    m = re.search(r"^#{1,6} (.+)$", text, re.M)
    return _one_line(m.group(1)) if m else ""


def _demote_title(text: str, title: str) -> str:
    """Drop the "#" marks of a chapter's opening heading when it repeats the chapter title,
    so chunk locators read "Chapter 1 > Section", not "Chapter 1 > Chapter 1"."""
    m = re.match(r"#{1,6} (.+)(\n|$)", text)
    if m and _one_line(m.group(1)) == title:
        return m.group(1) + text[m.end(1):]
    return text


# --------------------------------------------------------------------------- registration

register((".pdf",), "pdf", f"{__name__}:convert_pdf", sniff=_is_pdf)
register((".docx", ".docm", ".dotx", ".dotm"), "docx", f"{__name__}:convert_docx", sniff=_is_docx)
register((".pptx", ".pptm", ".potx", ".potm", ".ppsx", ".ppsm"), "pptx", f"{__name__}:convert_pptx", sniff=_is_pptx)
register((".xlsx", ".xlsm", ".xltx", ".xltm"), "xlsx", f"{__name__}:convert_xlsx", sniff=_is_xlsx)
register((".xls",), "xls", f"{__name__}:convert_xls")
register((".ods",), "ods", f"{__name__}:convert_ods", sniff=_is_ods)
register((".csv",), "csv", f"{__name__}:convert_csv")
register((".tsv", ".tab"), "tsv", f"{__name__}:convert_csv")
register((".epub",), "epub", f"{__name__}:convert_epub", sniff=_is_epub)
