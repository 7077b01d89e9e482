"""Office formats: PDF, DOCX, PPTX, XLSX, XLS, ODS, CSV/TSV and EPUB.

Every fixture is built here, in memory: the documents with their own
libraries (python-docx, python-pptx, openpyxl, odfpy, pypdf for encryption),
the PDF, the XLS (a BIFF8 workbook in an OLE container) and the EPUB by hand.
"""
from __future__ import annotations

import io
import math
import struct
import zipfile

import pytest

from taskling.data.chunking import chunk_document
from taskling.data.formats import ConvertError, Limits, convert, lib_version

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def assert_spans(ex) -> None:
    """Each segment's span in Extracted.text() holds exactly that segment's text."""
    text, spans = ex.text()
    assert len(spans) == len(ex.segments)
    for seg, (start, end) in zip(ex.segments, spans):
        assert text[start:end] == seg.text.strip()


def locators(ex) -> list[str]:
    return [s.locator for s in ex.segments]


# --------------------------------------------------------------------------- fixtures

def make_pdf(pages: list[str | None], title: str | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text stream per page (None: a page without any text)."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objs = {1: b"<< /Type /Catalog /Pages 2 0 R >>",
            3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"}
    kids, n = [], 4
    for text in pages:
        ops = "" if text is None else "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(
            f"({esc(line)}) Tj T*" for line in text.split("\n")) + " ET"
        stream = ops.encode("latin-1")
        objs[n] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                   f"/Resources << /Font << /F1 3 0 R >> >> /Contents {n + 1} 0 R >>").encode()
        objs[n + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        kids.append(f"{n} 0 R")
        n += 2
    objs[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    info = ""
    if title:
        objs[n] = f"<< /Title ({esc(title)}) >>".encode()
        info = f" /Info {n} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref, size = len(out), max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += f"trailer\n<< /Size {size} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypt_pdf(data: bytes, user: str, owner: str | None = None) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user, owner_password=owner)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Handbook"
    d.core_properties.author = "Ada"
    d.add_heading("The Handbook", 0)                 # Title style: body text, not a section
    d.add_paragraph("Read this before anything else.")
    d.add_heading("Intro", 1)
    d.add_paragraph("Welcome to the handbook.")
    d.add_heading("Setup", 2)
    d.add_paragraph("Install the tool first.")
    table = d.add_table(rows=2, cols=3)
    for row, values in zip(table.rows, [("Service", "Port", "Proto"), ("web", "80", "tcp")]):
        for cell, v in zip(row.cells, values):
            cell.text = v
    d.add_heading("Usage", 1)
    d.add_heading("Daily", 2)                        # heading with nothing under it but a subsection
    d.add_heading("Morning", 3)
    d.add_paragraph("Run it every morning.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_pptx() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    prs.core_properties.title = "Q3 review"
    s1 = prs.slides.add_slide(prs.slide_layouts[1])   # title and content
    s1.shapes.title.text = "Quarterly results"
    s1.placeholders[1].text = "Revenue grew 12%"
    s1.notes_slide.notes_text_frame.text = "Mention the new office."
    s2 = prs.slides.add_slide(prs.slide_layouts[5])   # title only
    s2.shapes.title.text = "Numbers"
    table = s2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for r, values in enumerate([("Region", "Sales"), ("North", "40")]):
        for c, v in enumerate(values):
            table.cell(r, c).text = v
    s2.notes_slide.notes_text_frame.text = "North is up."
    s3 = prs.slides.add_slide(prs.slide_layouts[6])   # blank, a text box, no title
    s3.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1)).text_frame.text = "Questions?"
    prs.slides.add_slide(prs.slide_layouts[6])        # blank, no text at all
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def make_xlsx() -> bytes:
    import datetime

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(["Name", "Qty", "Price"])
    ws.append(["apple", 3, 0.5])
    ws.append(["pear", None, 1.25])
    wb.create_sheet("Empty")
    q3 = wb.create_sheet("Q3 data")
    q3.append(["Sales in Q3"])                          # a title row above the header
    q3.append([])
    q3.append(["Day", "Units", "Ok"])
    for i in range(45):
        q3.append([datetime.date(2024, 7, 1) + datetime.timedelta(days=i), i * 10, i % 2 == 0])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def make_ods() -> bytes:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    budget = Table(name="Budget")
    for values in [("Item", "Cost"), ("Rent", 1200), ("Food", 300.5)]:
        tr = TableRow()
        for v in values:
            if isinstance(v, str):
                cell = TableCell(valuetype="string")
            else:
                cell = TableCell(valuetype="float", value=v)
            cell.addElement(P(text=str(v)))
            tr.addElement(cell)
        tr.addElement(TableCell(numbercolumnsrepeated=1000))   # formatting runs to the right edge
        budget.addElement(tr)
    budget.addElement(TableRow(numberrowsrepeated=1_000_000))  # ... and to the bottom
    doc.spreadsheet.addElement(budget)
    doc.spreadsheet.addElement(Table(name="Blank"))
    buf = io.BytesIO()
    doc.write(buf)
    return buf.getvalue()


def _biff_record(rtype: int, payload: bytes = b"") -> bytes:
    return struct.pack("<HH", rtype, len(payload)) + payload


def _biff_string(s: str, lenlen: int) -> bytes:
    return struct.pack("<B" if lenlen == 1 else "<H", len(s)) + b"\x01" + s.encode("utf-16-le")


def make_xls(sheets: dict[str, list[list]]) -> bytes:
    """A tiny Excel 97-2003 workbook: BIFF8 records (LABEL and NUMBER cells) in a one-stream OLE file."""
    def bof(kind: int) -> bytes:
        return _biff_record(0x0809, struct.pack("<HHHHII", 0x0600, kind, 0x0DBB, 0x07CC, 0, 6))

    bodies = []
    for rows in sheets.values():
        body = bof(0x10)
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                if isinstance(v, str):
                    body += _biff_record(0x0204, struct.pack("<HHH", r, c, 0) + _biff_string(v, 2))
                elif v is not None:
                    body += _biff_record(0x0203, struct.pack("<HHHd", r, c, 0, float(v)))
        bodies.append(body + _biff_record(0x000A))
    head = bof(0x05) + _biff_record(0x0042, struct.pack("<H", 1200)) + _biff_record(0x00E0, bytes(20))

    def boundsheets(offsets):
        return b"".join(_biff_record(0x0085, struct.pack("<IBB", off, 0, 0) + _biff_string(name, 1))
                        for off, name in zip(offsets, sheets))

    pos = len(head) + len(boundsheets([0] * len(sheets))) + 4
    offsets = []
    for body in bodies:
        offsets.append(pos)
        pos += len(body)
    return _ole_file("Workbook", head + boundsheets(offsets) + _biff_record(0x000A) + b"".join(bodies))


def _ole_file(stream_name: str, stream: bytes) -> bytes:
    """An OLE compound file (v3, 512-byte sectors) holding one stream of at least 4096 bytes."""
    n = math.ceil(max(len(stream), 4096) / 512)
    stream = stream.ljust(n * 512, b"\0")
    fat = [i + 1 for i in range(n - 1)] + [-2, -2, -3]   # the stream's chain, the directory, the FAT itself
    fat += [-1] * (128 - len(fat))

    def entry(name: str, kind: int, child: int, start: int, size: int) -> bytes:
        raw = (name + "\0").encode("utf-16-le") if name else b""
        return (raw.ljust(64, b"\0") + struct.pack("<HBBiii", len(raw), kind, 1, -1, -1, child)
                + bytes(36) + struct.pack("<iII", start, size, 0))

    directory = (entry("Root Entry", 5, 1, -2, 0) + entry(stream_name, 2, -1, 0, len(stream))
                 + entry("", 0, -1, -1, 0) * 2)
    header = (OLE_MAGIC + bytes(16) + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + bytes(6)
              + struct.pack("<9i", 0, 1, n, 0, 4096, -2, 0, -2, 0) + struct.pack("<i", n + 1)
              + struct.pack("<i", -1) * 108)
    return header + stream + directory + struct.pack("<128i", *fat)


EPUB_CHAPTER = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>The Book</title></head><body>{}</body></html>"""


def make_epub(encrypt_chapters: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # stored, first
        z.writestr("META-INF/container.xml", """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>""")
        z.writestr("OEBPS/content.opf", """<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">urn:uuid:1</dc:identifier><dc:title>The Book</dc:title><dc:creator>Ann Author</dc:creator>
  </metadata>
  <manifest>
    <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
    <item id="cover" href="text/cover.xhtml" media-type="application/xhtml+xml"/>
    <item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/>
    <item id="c2" href="text/chapter%202.xhtml" media-type="application/xhtml+xml"/>
    <item id="img" href="images/cover.png" media-type="image/png"/>
  </manifest>
  <spine><itemref idref="cover"/><itemref idref="c2" linear="yes"/><itemref idref="c1"/></spine>
</package>""")
        z.writestr("OEBPS/nav.xhtml", """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>
<nav epub:type="toc"><ol><li><a href="text/ch1.xhtml#start">Chapter One</a></li></ol></nav></body></html>""")
        z.writestr("OEBPS/text/cover.xhtml", EPUB_CHAPTER.format('<img src="../images/cover.png"/>'))
        z.writestr("OEBPS/text/ch1.xhtml", EPUB_CHAPTER.format(
            "<h1>Chapter One</h1><p>It was a bright cold day.</p><h2>Details</h2><p>The clocks struck thirteen.</p>"))
        z.writestr("OEBPS/text/chapter 2.xhtml", EPUB_CHAPTER.format("<p>A prologue without a heading.</p>"))
        if encrypt_chapters:
            z.writestr("META-INF/encryption.xml", """<?xml version="1.0"?>
<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" xmlns:enc="http://www.w3.org/2001/04/xmlenc#">
""" + "".join(f'<enc:EncryptedData><enc:CipherData><enc:CipherReference URI="OEBPS/text/{f}"/></enc:CipherData>'
              f'</enc:EncryptedData>' for f in ("cover.xhtml", "ch1.xhtml", "chapter%202.xhtml")) + "</encryption>")
    return buf.getvalue()


# --------------------------------------------------------------------------- PDF

def test_pdf_pages_scanned_page_and_meta():
    ex = convert("report.pdf", make_pdf(["Hello page one\nsecond line", "Second page (text)", None], title="Test Doc"))
    assert ex.format == "pdf" and ex.converter == lib_version("pypdf") and ex.converter.startswith("pypdf ")
    assert locators(ex) == ["page 1", "page 2"]
    assert [s.kind for s in ex.segments] == ["page", "page"]
    assert ex.segments[0].text == "Hello page one\nsecond line"
    assert ex.segments[1].text == "Second page (text)"
    assert ex.warnings == ["page 3 has no text layer (scanned image?)"]
    assert ex.meta == {"title": "Test Doc", "pages": 3}
    assert_spans(ex)


def test_pdf_named_txt_is_read_as_pdf():
    ex = convert("notes.txt", make_pdf(["Secretly a PDF"]))
    assert ex.format == "pdf" and ex.segments[0].text == "Secretly a PDF"


def test_pdf_encrypted_with_a_password_is_refused():
    data = encrypt_pdf(make_pdf(["Top secret"]), "secret")
    with pytest.raises(ConvertError, match=r"^encrypted PDF: password protected"):
        convert("locked.pdf", data)


def test_pdf_with_only_an_owner_password_opens():
    data = encrypt_pdf(make_pdf(["Open to read"]), "", owner="owner-only")
    assert convert("restricted.pdf", data).segments[0].text == "Open to read"


def test_pdf_truncated_and_not_a_pdf():
    data = make_pdf(["one", "two"])
    with pytest.raises(ConvertError, match="damaged or truncated PDF"):
        convert("half.pdf", data[: len(data) // 2])
    with pytest.raises(ConvertError, match="not a PDF"):
        convert("page.pdf", b"Service Unavailable")


def test_pdf_all_pages_scanned_asks_for_ocr():
    with pytest.raises(ConvertError, match="scanned PDF.*OCR"):
        convert("scan.pdf", make_pdf([None, None]))


# --------------------------------------------------------------------------- DOCX

def test_docx_sections_tables_and_meta():
    ex = convert("handbook.docx", make_docx())
    assert ex.format == "docx" and ex.converter == lib_version("python-docx")
    assert locators(ex) == ["(start)", "Intro", "Intro > Setup", "Usage > Daily > Morning"]
    assert {s.kind for s in ex.segments} == {"section"}
    start, intro, setup, morning = (s.text for s in ex.segments)
    assert start == "The Handbook\n\nRead this before anything else."
    assert intro == "Intro\n\nWelcome to the handbook."
    assert setup == "Setup\n\nInstall the tool first.\n\nService | Port | Proto\nweb | 80 | tcp"
    assert morning == "Morning\n\nRun it every morning."
    assert ex.meta == {"title": "Handbook", "author": "Ada"}
    assert_spans(ex)


@pytest.mark.parametrize("name", ["upload.bin", "upload.txt", "upload"])
def test_docx_with_wrong_extension_is_detected(name):
    ex = convert(name, make_docx())
    assert ex.format == "docx" and ex.segments[1].locator == "Intro"


def test_docx_chunk_locators_follow_sections():
    ex = convert("handbook.docx", make_docx())
    _, chunks = chunk_document(ex, 200, lambda texts: [len(t.split()) for t in texts])
    assert [c["locator"] for c in chunks] == ["(start)", "Intro", "Intro > Setup", "Usage > Daily > Morning"]


def test_docx_damaged_zip_and_ole_files():
    data = make_docx()
    with pytest.raises(ConvertError, match="not a valid DOCX: the zip is damaged"):
        convert("cut.docx", data[: len(data) // 2])
    with pytest.raises(ConvertError, match="not a valid DOCX: it is not a zip file"):
        convert("junk.docx", b"this is not a word document at all")
    encrypted = OLE_MAGIC + bytes(500) + "EncryptedPackage".encode("utf-16-le") + bytes(100)
    with pytest.raises(ConvertError, match=r"^encrypted or legacy Office file: .*password protected"):
        convert("locked.docx", encrypted)
    legacy = OLE_MAGIC + bytes(500) + "WordDocument".encode("utf-16-le") + bytes(100)
    with pytest.raises(ConvertError, match=r"^encrypted or legacy Office file: .*Word 97-2003.*save it as \.docx"):
        convert("old.docx", legacy)


def test_docx_zip_without_document_part():
    from taskling.data.formats.office import convert_docx

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ConvertError, match="the zip has no word/document.xml"):
        convert_docx(buf.getvalue(), "fake.docx", Limits())  # convert() hands such a zip to the archive reader


def test_docx_tracked_changes_and_content_controls():
    import docx
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    d = docx.Document()
    p = d.add_paragraph("Kept ")
    p._p.append(parse_xml(f'<w:ins {w} w:id="1" w:author="a"><w:r><w:t>inserted</w:t></w:r></w:ins>'))
    p._p.append(parse_xml(f'<w:del {w} w:id="2" w:author="a"><w:r><w:delText>removed</w:delText></w:r></w:del>'))
    p._p.addnext(parse_xml(f'<w:sdt {w}><w:sdtContent><w:p><w:r><w:t>Inside</w:t><w:tab/>'
                           f'<w:t>a control</w:t></w:r></w:p></w:sdtContent></w:sdt>'))
    buf = io.BytesIO()
    d.save(buf)
    ex = convert("changes.docx", buf.getvalue())
    assert [(s.locator, s.text) for s in ex.segments] == [("(start)", "Kept inserted\n\nInside\ta control")]


def test_docm_macro_enabled_content_type_is_read():
    data = make_docx()
    src, buf = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "[Content_Types].xml":
                body = body.replace(b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                                    b"application/vnd.ms-word.document.macroEnabled.main+xml")
                assert b"macroEnabled" in body
            z.writestr(info.filename, body)
    ex = convert("macros.docm", buf.getvalue())
    assert locators(ex)[1] == "Intro"


# --------------------------------------------------------------------------- PPTX

def test_pptx_slides_titles_tables_notes():
    ex = convert("deck.pptx", make_pptx())
    assert ex.format == "pptx" and ex.converter == lib_version("python-pptx")
    assert locators(ex) == ["slide 1 — Quarterly results", "slide 2 — Numbers", "slide 3"]
    assert {s.kind for s in ex.segments} == {"slide"}
    one, two, three = (s.text for s in ex.segments)
    assert one == "Quarterly results\n\nRevenue grew 12%\n\nNotes: Mention the new office."
    assert two == "Numbers\n\nRegion | Sales\nNorth | 40\n\nNotes: North is up."
    assert three == "Questions?"
    assert ex.warnings == ["slide 4 has no text"]
    assert ex.meta == {"title": "Q3 review", "slides": 4}
    assert_spans(ex)


def test_pptx_named_zip_is_detected():
    assert convert("deck.zip", make_pptx()).format == "pptx"


# --------------------------------------------------------------------------- spreadsheets

def test_xlsx_sheets_header_blocks_and_empty_sheet():
    ex = convert("book.xlsx", make_xlsx())
    assert ex.format == "xlsx" and ex.converter == lib_version("openpyxl")
    assert locators(ex) == ["Sheet1!A2:C3", "'Q3 data'!A4:C43", "'Q3 data'!A44:C48"]
    assert {s.kind for s in ex.segments} == {"rows"}
    assert ex.segments[0].text == "Name | Qty | Price\nName: apple | Qty: 3 | Price: 0.5\nName: pear | Price: 1.25"
    q3a, q3b = ex.segments[1].text.split("\n"), ex.segments[2].text.split("\n")
    assert q3a[:3] == ["Sales in Q3", "Day | Units | Ok", "Day: 2024-07-01 | Units: 0 | Ok: TRUE"]
    assert len(q3a) == 2 + 40 and len(q3b) == 2 + 5
    assert q3b[:2] == ["Sales in Q3", "Day | Units | Ok"]
    assert q3b[-1] == "Day: 2024-08-14 | Units: 440 | Ok: TRUE"
    assert ex.warnings == ["sheet 'Empty' is empty; skipped"]
    assert ex.meta["sheets"] == 3
    assert_spans(ex)


def test_xlsx_max_rows_limit_warns():
    ex = convert("book.xlsx", make_xlsx(), Limits(max_rows=10))
    assert locators(ex) == ["Sheet1!A2:C3", "'Q3 data'!A4:C13"]
    assert "sheet 'Q3 data': only the first 10 rows were read" in ex.warnings[-1]


def test_xlsx_junk_and_wrong_extension():
    with pytest.raises(ConvertError, match="not a valid XLSX: it is not a zip file"):
        convert("junk.xlsx", b"\x00\x01garbage" * 50)
    with pytest.raises(ConvertError, match=r"^encrypted or legacy Office file"):
        convert("locked.xlsx", OLE_MAGIC + bytes(500) + "EncryptionInfo".encode("utf-16-le"))
    assert convert("export.dat", make_xlsx()).format == "xlsx"


def test_xls_read_with_xlrd():
    data = make_xls({"Staff": [["Name", "Age"], ["Ada", 36], ["Linus", 28.5]], "Blank": []})
    ex = convert("staff.xls", data)
    assert ex.format == "xls" and ex.converter == lib_version("xlrd")
    assert locators(ex) == ["Staff!A2:B3"]
    assert ex.segments[0].text == "Name | Age\nName: Ada | Age: 36\nName: Linus | Age: 28.5"
    assert ex.warnings == ["sheet 'Blank' is empty; skipped"]
    assert_spans(ex)


def test_xls_under_an_xlsx_name_is_read_as_xls():
    ex = convert("renamed.xlsx", make_xls({"S": [["a", "b"], [1, 2]]}))
    assert ex.format == "xls" and "read as .xls" in ex.warnings[0]


def test_xls_damaged():
    with pytest.raises(ConvertError, match="not a valid XLS: the file is damaged"):
        convert("bad.xls", OLE_MAGIC + bytes(100))
    with pytest.raises(ConvertError, match="not a valid XLS: it is not an Excel 97-2003 file"):
        convert("table.xls", b"<table><tr><td>1</td></tr></table>")


def test_ods_sheets_with_repeated_empty_cells():
    ex = convert("budget.ods", make_ods())
    assert ex.format == "ods" and ex.converter == lib_version("odfpy")
    assert locators(ex) == ["Budget!A2:B3"]
    assert ex.segments[0].text == "Item | Cost\nItem: Rent | Cost: 1200\nItem: Food | Cost: 300.5"
    assert ex.warnings == ["sheet 'Blank' is empty; skipped"]
    assert_spans(ex)
    assert convert("budget.zip", make_ods()).format == "ods"


def test_csv_blocks_and_line_numbers():
    rows = ["name,age,city"] + [f"person{i},{20 + i},Town {i}" for i in range(45)]
    ex = convert("people.csv", ("\n".join(rows) + "\n").encode())
    assert ex.format == "csv" and ex.converter.startswith("stdlib csv (utf-8")
    assert locators(ex) == ["rows 2-41", "rows 42-46"]
    first = ex.segments[0].text.split("\n")
    assert first[:2] == ["name | age | city", "name: person0 | age: 20 | city: Town 0"]
    assert ex.segments[1].text.split("\n")[0] == "name | age | city"
    assert_spans(ex)


def test_csv_semicolons_quoted_newlines_and_no_header():
    data = 'id;note\n1;"two\nlines"\n2;plain\n'.encode()
    ex = convert("notes.csv", data)
    assert locators(ex) == ["rows 2-4"]
    assert ex.segments[0].text == "id | note\nid: 1 | note: two lines\nid: 2 | note: plain"
    numbers = convert("numbers.csv", b"1,2\n3,4\n")
    assert locators(numbers) == ["rows 1-2"] and numbers.segments[0].text == "A: 1 | B: 2\nA: 3 | B: 4"


def test_tsv_and_limits():
    data = "\n".join(["k\tv"] + [f"key{i}\tvalue, with comma {i}" for i in range(30)]).encode()
    ex = convert("pairs.tsv", data, Limits(max_rows=5))
    assert ex.format == "tsv" and locators(ex) == ["rows 2-6"]
    assert ex.segments[0].text.split("\n")[1] == "k: key0 | v: value, with comma 0"
    assert ex.warnings == ["this TSV file: only the first 5 rows were read (the max_rows limit); "
                           "split it into smaller files to read the rest"]
    single = convert("one.csv", b"a,b\n1,2\n")
    assert locators(single) == ["row 2"]


def test_csv_header_only_and_binary():
    ex = convert("head.csv", b"alpha,beta\n")
    assert locators(ex) == ["row 1"] and ex.segments[0].text == "alpha | beta"
    with pytest.raises(ConvertError, match="binary"):
        convert("bin.csv", b"\x00\x01\x02" * 100)


# --------------------------------------------------------------------------- EPUB

def test_epub_chapters_in_spine_order():
    ex = convert("book.epub", make_epub())
    assert ex.format == "epub"
    assert locators(ex) == ["chapter 2.xhtml", "Chapter One"]
    assert {s.kind for s in ex.segments} == {"section"}
    assert ex.segments[0].text == "A prologue without a heading."
    assert ex.segments[1].text == ("Chapter One\n\nIt was a bright cold day.\n\n## Details\n\n"
                                   "The clocks struck thirteen.")
    assert ex.warnings == ["1 spine item(s) had no text (cover or image pages)"]
    assert ex.meta == {"title": "The Book", "author": "Ann Author", "chapters": 2}
    assert_spans(ex)
    _, chunks = chunk_document(ex, 10, lambda texts: [len(t.split()) for t in texts])
    assert [c["locator"] for c in chunks][-2:] == ["Chapter One part 1", "Chapter One > Details"]


def test_epub_sniffed_and_drm():
    assert convert("book.zip", make_epub()).format == "epub"
    with pytest.raises(ConvertError, match="DRM-protected EPUB"):
        convert("drm.epub", make_epub(encrypt_chapters=True))
    with pytest.raises(ConvertError, match="not a valid EPUB: the zip has no META-INF/container.xml"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("mimetype", "application/epub+zip")
        convert("empty.epub", buf.getvalue())


def test_docx_outline_of_headings_only():
    import docx
    from docx.oxml import parse_xml

    d = docx.Document()
    for title, level in [("Plan", 1), ("Goals", 2), ("Risks", 2), ("Budget", 1)]:
        d.add_heading(title, level)
    # a heading by outline level alone (as some exporters write them), not by style
    p = d.add_paragraph("Appendix")
    p._p.get_or_add_pPr().append(parse_xml(
        '<w:outlineLvl xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" w:val="0"/>'))
    d.add_paragraph("Extra tables.")
    buf = io.BytesIO()
    d.save(buf)
    ex = convert("outline.docx", buf.getvalue())
    assert [(s.locator, s.text) for s in ex.segments] == [
        ("Plan > Goals", "Goals"), ("Plan > Risks", "Risks"), ("Budget", "Budget"),
        ("Appendix", "Appendix\n\nExtra tables.")]
