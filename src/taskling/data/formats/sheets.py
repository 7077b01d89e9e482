"""Spreadsheets (XLSX/XLSM, XLS, ODS) and CSV/TSV, as row blocks and as tables.

  XLSX/XLS/ODS row blocks of up to 40 rows     "Sheet1!A2:F41", "'Q3 data'!B5:D9" (the block's data rows)
  CSV/TSV      row blocks of up to 40 rows     "rows 2-41" (file line numbers; the header is line 1)

Row blocks repeat the sheet's header row first and render each row as
"Header1: v1 | Header2: v2", so a block read on its own still says what its
numbers mean. The same rows are the document's tables, one per sheet (named
by it) or one for a CSV file: "'Q3 data' row 5", "row 14", "rows 5-6" (a CSV
record over two lines).
"""
from __future__ import annotations

import csv
import io
import re
import warnings as pywarnings
from dataclasses import dataclass, field
from datetime import date, datetime, time
from itertools import chain
from typing import Callable, Iterable, Iterator

from . import ConvertError, Extracted, Limits, Segment, Table, keep_tables, lib_version, register
from .package import (OLE_MAGIC, metadata, ole_has_stream, open_package, package_error, read_member, zip_mimetype,
    zip_names)
from .text import cut_long_lines, decode_text

# --------------------------------------------------------------------------- rows: spreadsheets and CSV

BLOCK_ROWS = 40          # rows per spreadsheet / CSV segment
BLOCK_CHARS = 6000       # ... or fewer when the rows are wide

# A row of a table: (first line, last line, cell values from column A on).
# For sheets both lines are the row number; a CSV record may span lines.
Row = tuple[int, int, list]
Locate = Callable[[int, int, int, int], str]   # (first row, last row, first col, last col) -> locator


@dataclass
class _Sheet:
    """How one sheet (or a CSV file) names what is read from it."""
    label: str                          # in warnings: "sheet 'Q3'", "this CSV file"
    locate: Locate                      # a row block's segment locator
    row: Callable[[int, int], str]      # (first line, last line) -> a table row's locator
    name: str | None = None             # the table's name


@dataclass
class _Read:
    """What a workbook or CSV file gave so far."""
    segments: list[Segment] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # what the tables left out

    def extracted(self, fmt: str, converter: str, meta: dict | None = None) -> Extracted:
        return Extracted(self.segments, fmt, converter, self.warnings, meta=meta or {},
                         tables=keep_tables(self.tables), table_notes=self.notes)

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
    return _line_rows(r0, r1)


def _line_rows(r0: int, r1: int) -> str:
    """A CSV record by its lines: "row 14", or "rows 5-6" for a record with a line break in a cell."""
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


def _read_sheet(rows: Iterable[Row], sheet: _Sheet, limits: Limits, out: _Read) -> None:
    """A sheet's rows as segments of up to BLOCK_ROWS rows, each repeating the title and header lines,
    and as a table: the header row (none when the first row is data) and the data rows."""
    split = _split_header(_nonempty_rows(rows))
    if split is None:
        out.warnings.append(f"{sheet.label} is empty; skipped")
        return
    titles, header, data = split
    header_cells = header[2] if header else []
    table = Table(sheet.name, list(header_cells), [], [])
    out.tables.append(table)
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
            segments.append(Segment("\n".join(lines), sheet.locate(block[0][0], block[-1][1], min(cols), max(cols)),
                                    "rows"))
            block.clear()
            size = 0

    for n, row in enumerate(data, 1):
        if n > limits.max_rows:
            out.warnings.append(f"{sheet.label}: only the first {limits.max_rows} rows were read (the max_rows "
                                f"limit); split it into smaller files to read the rest")
            out.notes.append(f"{sheet.name or 'the table'}: only the first {limits.max_rows} rows were read")
            break
        block.append(row)
        table.rows.append(list(row[2]))
        table.locators.append(sheet.row(row[0], row[1]))
        size += sum(map(len, row[2]))
        if len(block) >= BLOCK_ROWS or size >= BLOCK_CHARS:
            flush()
    flush()
    if not segments and header:  # a header (and titles) without data rows: still worth keeping
        r0 = (titles or [header])[0][0]
        segments.append(Segment("\n".join(context), sheet.locate(r0, header[1], min(header_cols), max(header_cols)),
                                "rows"))
    out.segments += segments


def _workbook_sheet(name: str, table_name: str | None = None) -> _Sheet:
    """A workbook's sheet: blocks "Sheet1!A2:F41", rows "Sheet1 row 5" ("'Q3 data' row 5")."""
    ref = _sheet_ref(table_name or name)
    return _Sheet(f"sheet '{name}'", _sheet_locate(name), lambda first, last: f"{ref} row {first}",
                  table_name or name)


def _render_row(cells: list[str], names: list[str]) -> str:
    """One row as "Header1: v1 | Header2: v2"; empty cells are left out."""
    return " | ".join(f"{names[i] if i < len(names) else _col_letter(i + 1)}: {c}"
                      for i, c in enumerate(cells) if c)


def convert_xlsx(data: bytes, name: str, limits: Limits) -> Extracted:
    """An Excel workbook (.xlsx/.xlsm): cached cell values, sheet by sheet, in row blocks."""
    legacy = data.startswith(OLE_MAGIC) and ole_has_stream(data, "Workbook")
    if legacy and not ole_has_stream(data, "EncryptedPackage"):
        out = convert_xls(data, name, limits)   # an old .xls saved under a new name
        out.warnings.insert(0, "this is an Excel 97-2003 (.xls) file with an .xlsx name; it was read as .xls")
        return out
    open_package(data, "xlsx", "xl/workbook.xml", limits)
    from openpyxl import load_workbook

    try:
        with pywarnings.catch_warnings():  # "extension not supported" notes about features text does not need
            pywarnings.simplefilter("ignore")
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:
        raise package_error("xlsx", e) from None
    out = _Read()
    try:
        for ws in wb.worksheets:
            ws.reset_dimensions()  # the stored used range is often wrong; read what is there
            rows = ((n, n, list(values)) for n, values in enumerate(ws.iter_rows(values_only=True), 1))
            _read_sheet(rows, _workbook_sheet(ws.title), limits, out)
    except ConvertError:
        raise
    except Exception as e:
        raise package_error("xlsx", e) from None
    finally:
        wb.close()
    meta = metadata(title=wb.properties.title, author=wb.properties.creator)
    meta["sheets"] = len(wb.worksheets)
    return out.extracted("xlsx", lib_version("openpyxl"), meta)


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
    out = _Read()
    try:
        for i in range(book.nsheets):
            sheet = book.sheet_by_index(i)
            rows = ((r + 1, r + 1, [_xls_value(c, book.datemode) for c in sheet.row(r)])
                    for r in range(sheet.nrows))
            _read_sheet(rows, _workbook_sheet(sheet.name), limits, out)
            book.unload_sheet(i)
        meta = metadata(author=book.user_name)
        meta["sheets"] = book.nsheets
    finally:
        book.release_resources()
    return out.extracted("xls", lib_version("xlrd"), meta)


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
    zf = open_package(data, "ods", "content.xml", limits)
    if b"encryption-data" in read_member(zf, "META-INF/manifest.xml"):
        raise ConvertError("encrypted ODS: password protected; open it in LibreOffice, save a copy "
                           "without a password and add that")
    from odf import table as odtable
    from odf.opendocument import load

    try:
        doc = load(io.BytesIO(data))
        tables = doc.spreadsheet.getElementsByType(odtable.Table)
    except Exception as e:
        raise package_error("ods", e) from None
    out = _Read()
    for n, tbl in enumerate(tables, 1):
        name = tbl.attributes.get((_TABLENS, "name"), "")
        # an unnamed sheet: its blocks count the segments so far, its table is named by its place
        sheet = _workbook_sheet(name or f"Sheet{len(out.segments) + 1}", name or f"Sheet{n}")
        _read_sheet(_ods_rows(tbl, limits), sheet, limits, out)
    return out.extracted("ods", lib_version("odfpy"), {"sheets": len(tables)})


_TABLENS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICENS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_TEXTNS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_MAX_COLS = 16384  # Excel's and LibreOffice's widest sheet


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
    out = _Read()

    def rows() -> Iterator[Row]:
        prev = 0
        for record in reader:
            yield prev + 1, reader.line_num, record
            prev = reader.line_num

    try:
        _read_sheet(rows(), _Sheet(f"this {fmt.upper()} file", _line_locate, _line_rows), limits, out)
    except csv.Error as e:
        raise ConvertError(f"not a valid {fmt.upper()} file (line {reader.line_num}: {e}); "
                           f"check its quoting, or open it in a spreadsheet and save it again") from None
    for seg in out.segments:
        seg.text = cut_long_lines(seg.text, limits, out.warnings)
    return out.extracted(fmt, f"stdlib csv ({enc}, delimiter {delimiter!r})")


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


def _is_xlsx(data: bytes, name: str) -> bool:
    return "xl/workbook.xml" in zip_names(data)


def _is_ods(data: bytes, name: str) -> bool:
    return zip_mimetype(data) == "application/vnd.oasis.opendocument.spreadsheet"


register((".xlsx", ".xlsm", ".xltx", ".xltm"), "xlsx", f"{__name__}:convert_xlsx", sniff=_is_xlsx)
register((".xls",), "xls", f"{__name__}:convert_xls")
register((".ods",), "ods", f"{__name__}:convert_ods", sniff=_is_ods)
register((".csv",), "csv", f"{__name__}:convert_csv")
register((".tsv", ".tab"), "tsv", f"{__name__}:convert_csv")
