"""Converters return tables: for CSV/TSV, XLSX/XLS/ODS, JSON/JSONL and HTML their own, for every
other format the pipe tables of the text (Markdown, DOCX, PPTX, PDF), each with its name, header,
rows of cell texts and one locator per row; placed in the chunks that hold them once chunked."""
from __future__ import annotations

import json

from test_formats_office import make_docx, make_ods, make_pdf, make_pptx, make_xls, make_xlsx

from taskling.data.chunking import chunk_document, place_tables
from taskling.data.formats import Limits, convert


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def shape(ex) -> list[tuple]:
    return [(t.name, t.header, t.rows, t.locators) for t in ex.tables]


def placed(ex, max_tokens: int = 200):
    """The document chunked as ingest chunks it, its tables placed; (text, chunks)."""
    text, chunks = chunk_document(ex, max_tokens, words)
    place_tables(ex.tables, text, chunks)
    return text, chunks


def test_csv_table_keeps_line_numbers_and_a_record_over_two_lines():
    ex = convert("codes.csv", b'code,meaning\nE1,Disk full\nE2,"Quota\nexceeded"\n\nE3,Fan\n')
    assert shape(ex) == [(None, ["code", "meaning"], [["E1", "Disk full"], ["E2", "Quota exceeded"], ["E3", "Fan"]],
                          ["row 2", "rows 3-4", "row 6"])]
    assert ex.table_notes == []
    text, chunks = placed(ex)
    assert [t for t in ex.tables[0].chunks] == [0, 0, 0] and len(chunks) == 1
    numbers = convert("numbers.tsv", b"1\t2\n3\t4\n")  # a first row of numbers is data: no header
    assert shape(numbers) == [(None, [], [["1", "2"], ["3", "4"]], ["row 1", "row 2"])]
    assert convert("head.csv", b"alpha,beta\n").tables == []  # a header without rows is no table


def test_csv_max_rows_is_a_table_note():
    data = "\n".join(["k,v"] + [f"key{i},{i}" for i in range(30)]).encode()
    ex = convert("pairs.csv", data, Limits(max_rows=5))
    assert len(ex.tables[0].rows) == 5 and ex.tables[0].locators[-1] == "row 6"
    assert ex.table_notes == ["the table: only the first 5 rows were read"]


def test_xlsx_a_table_per_sheet_named_by_it_below_its_title_rows():
    ex = convert("book.xlsx", make_xlsx())
    sheet1, q3 = ex.tables
    assert (sheet1.name, sheet1.header, sheet1.rows, sheet1.locators) == (
        "Sheet1", ["Name", "Qty", "Price"], [["apple", "3", "0.5"], ["pear", "", "1.25"]],
        ["Sheet1 row 2", "Sheet1 row 3"])
    assert (q3.name, q3.header, len(q3.rows)) == ("Q3 data", ["Day", "Units", "Ok"], 45)
    assert q3.rows[0] == ["2024-07-01", "0", "TRUE"] and q3.locators[:2] == ["'Q3 data' row 4", "'Q3 data' row 5"]
    assert q3.locators[-1] == "'Q3 data' row 48"  # the empty sheet is no table
    _, chunks = placed(ex)
    assert sheet1.chunks == [0, 0] and q3.chunks == sorted(q3.chunks)  # the row blocks that hold them
    assert chunks[q3.chunks[0]]["locator"].startswith("'Q3 data'!A4:")
    assert chunks[q3.chunks[-1]]["locator"].startswith("'Q3 data'!A44:")
    short = convert("book.xlsx", make_xlsx(), Limits(max_rows=10))
    assert len(short.tables[1].rows) == 10 and short.table_notes == ["Q3 data: only the first 10 rows were read"]


def test_xls_and_ods_tables():
    xls = convert("staff.xls", make_xls({"Staff": [["Name", "Age"], ["Ada", 36], ["Linus", 28.5]], "Blank": []}))
    assert shape(xls) == [("Staff", ["Name", "Age"], [["Ada", "36"], ["Linus", "28.5"]],
                           ["Staff row 2", "Staff row 3"])]
    ods = convert("budget.ods", make_ods())
    assert shape(ods) == [("Budget", ["Item", "Cost"], [["Rent", "1200"], ["Food", "300.5"]],
                           ["Budget row 2", "Budget row 3"])]


def test_json_records_lists_under_keys_and_objects_of_objects():
    listed = convert("list.json", json.dumps([{"code": "E7", "level": 2, "tags": ["a"]}, 5,
                                              {"code": "E8", "ok": True}]).encode())
    assert shape(listed) == [(None, ["code", "level", "tags", "ok"],
                              [["E7", "2", '["a"]', ""], ["E8", "", "", "true"]], ["record 1", "record 3"])]
    assert listed.table_notes == ["1 record(s) are not JSON objects; left out"]
    keyed = convert("codes.json", json.dumps({"codes": [{"code": "E1"}, {"code": "E2"}],
                                              "limits": [{"name": "files", "max": 10}], "version": 3}).encode())
    assert shape(keyed) == [("codes", ["code"], [["E1"], ["E2"]], ["codes record 1", "codes record 2"]),
                            ("limits", ["name", "max"], [["files", "10"]], ["limits record 1"])]
    by_key = convert("map.json", json.dumps({"E1": {"meaning": "Disk full"}, "E2": {"meaning": "Net"}}).encode())
    assert shape(by_key) == [(None, ["key", "meaning"], [["E1", "Disk full"], ["E2", "Net"]], ["record 1", "record 2"])]
    assert convert("n.json", b"[1, 2, 3]").tables == []


def test_jsonl_lines_are_records_and_what_was_left_out_is_noted():
    ex = convert("recs.jsonl", b'{"code": "E1"}\nnot json\n\n{"code": "E2", "retry": false}\n[1]\n')
    assert shape(ex) == [(None, ["code", "retry"], [["E1", ""], ["E2", "false"]], ["line 1", "line 4"])]
    assert ex.table_notes == ["1 line(s) are not JSON objects; left out", "1 line(s) are not valid JSON; left out"]
    placed(ex)
    assert ex.tables[0].chunks == [0, 1]  # a record per segment, a segment per chunk


HTML = """<html><body><h2>Errors</h2>
<table><tr><th>Code</th><th>Meaning</th></tr>
<tr><td>E1</td><td colspan="1">Disk <b>full</b></td></tr>
<tr><th>Code</th><th>Meaning</th></tr>
<tr><td rowspan="2">E2</td><td>Net down</td></tr><tr><td>Net slow</td></tr></table>
<table><tr><td>layout only</td></tr></table>
<table><caption>Wide</caption><tr><td>a</td><td>b</td><td>c</td></tr>
<tr><td colspan="2">ab</td><td>c1<table><tr><td>x</td></tr><tr><td>y</td></tr></table></td></tr></table>
</body></html>"""


def test_html_tables_with_captions_headings_spans_and_nested_tables():
    ex = convert("page.html", HTML.encode())
    # a caption names its own table only: the table in its cell takes the heading above
    assert [t.name for t in ex.tables] == ["Errors", "Wide", "Errors"]
    errors, wide, inner = ex.tables
    # the repeated header row is left out; a rowspan reaches down; the one-row table is layout
    assert (errors.header, errors.rows) == (["Code", "Meaning"], [["E1", "Disk full"], ["E2", "Net down"],
                                                                  ["E2", "Net slow"]])
    assert errors.locators == ["table 1, row 1", "table 1, row 2", "table 1, row 3"]
    assert (wide.header, wide.rows, wide.locators) == (["a", "b", "c"], [["ab", "ab", "c1"]], ["table 2, row 1"])
    assert (inner.header, inner.rows, inner.locators) == (["x"], [["y"]], ["table 3, row 1"])
    placed(ex)
    assert errors.chunks == [0, 0, 0]  # found by their values in the page's text


MARKDOWN = """# Runbook

```
| fake | table |
|------|-------|
| in   | code  |
```

## Error codes

| Code | Meaning |
|------|---------|
| `E1` | **Disk** full \\| stuck |
| E2 | [Net](http://x) down |

Table 2: Limits

| Name | Max |
|------|-----|
| files | 10 |

| no | rule row |
| so | no table |
"""


def test_markdown_pipe_tables_need_their_rule_row_and_take_caption_or_heading():
    ex = convert("runbook.md", MARKDOWN.encode())
    assert shape(ex) == [("Error codes", ["Code", "Meaning"], [["E1", "Disk full | stuck"], ["E2", "Net down"]],
                          ["table 1, row 1", "table 1, row 2"]),
                         ("Limits", ["Name", "Max"], [["files", "10"]], ["table 2, row 1"])]
    text = ex.text()[0]
    assert [text[o:].split("\n")[0] for o in ex.tables[0].offsets] == ["| `E1` | **Disk** full \\| stuck |",
                                                                       "| E2 | [Net](http://x) down |"]


def test_docx_and_pptx_tables_are_named_by_the_section_or_slide_that_holds_them():
    docx = convert("handbook.docx", make_docx())
    assert shape(docx) == [(None, ["Service", "Port", "Proto"], [["web", "80", "tcp"]], ["table 1, row 1"])]
    _, chunks = placed(docx)
    assert docx.tables[0].name == "Setup" and chunks[docx.tables[0].chunks[0]]["locator"].startswith("Intro > Setup")
    pptx = convert("deck.pptx", make_pptx())
    placed(pptx)
    assert shape(pptx) == [("Numbers", ["Region", "Sales"], [["North", "40"]], ["table 1, row 1"])]


def test_pdf_text_with_cell_boundaries_is_a_table_and_plain_text_has_none():
    ex = convert("codes.pdf", make_pdf(["Error codes\nCode | Meaning\nE1 | Disk full\nE2 | Net down"]))
    assert [(t.header, t.rows) for t in ex.tables] == [(["Code", "Meaning"], [["E1", "Disk full"], ["E2", "Net down"]])]
    assert convert("limits.pdf", make_pdf(["Name   Max\nfiles   10"])).tables == []
    assert convert("notes.txt", b"no table | here\njust text\n").tables == []  # one pipe line is not a table


def test_archive_members_and_attachments_are_converted_with_their_tables():
    from email.message import EmailMessage

    from test_formats_mail_archive_code import make_zip

    archive = convert("pack.zip", make_zip({"inner/codes.csv": b"code,meaning\nE1,Disk full\n"}))
    assert archive.tables == []
    (member,) = archive.children
    assert shape(convert(member.name, member.data)) == [(None, ["code", "meaning"], [["E1", "Disk full"]], ["row 2"])]
    msg = EmailMessage()
    msg["Subject"], msg["Message-ID"] = "Codes", "<c@example.com>"
    msg.set_content("See the attached list.\n")
    msg.add_attachment(b"code;meaning\nE2;Net down\n", maintype="text", subtype="csv", filename="codes.csv")
    mail = convert("note.eml", msg.as_bytes())
    (attached,) = mail.children
    assert attached.name == "<c@example.com>/codes.csv"
    assert shape(convert(attached.name, attached.data)) == [(None, ["code", "meaning"], [["E2", "Net down"]],
                                                             ["row 2"])]


def test_a_table_reader_that_fails_costs_the_tables_not_the_document(monkeypatch):
    from taskling.data.formats import html, pipes

    def broken(*args):
        raise ValueError("odd markup")
    monkeypatch.setattr(html._HTMLTables, "_end_row", broken)
    page = convert("page.html", HTML.encode())
    assert "Disk full" in page.text()[0] and page.tables == []
    assert page.table_notes == ["its tables could not be read (ValueError: odd markup)"]
    monkeypatch.setattr(pipes, "pipe_tables", broken)
    doc = convert("runbook.md", MARKDOWN.encode())
    assert "Error codes" in doc.text()[0] and doc.tables == []
    assert doc.table_notes == ["its tables could not be read (ValueError: odd markup)"]
