"""tables: rows of CSV, HTML, XLSX, JSON/JSONL, Markdown and DOCX tables in a real pile (built by
the real ingest) become examples with row provenance; templates, labels and schema types; bad
files, missing columns and globs that match nothing are reported, never a crash."""
from __future__ import annotations

import io
import re
import json
import zipfile

import pytest
import yaml
from rich.console import Console

from taskling.data import tables
from taskling.tasks import tables as task_tables
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.data.pile import Pile
from taskling.stages import ingest
from taskling.core import tasktype
from taskling.core.workspace import Context

ANSWER = {"name": "codes", "description": "Explain error codes.", "type": "answer"}
CODES_CSV = ('code,meaning,severity\nE1,Disk full,high\nE2,"Network down, retry",low\nE3,,low\n'
             'E4,"Quota\nexceeded",high\n')


@pytest.fixture
def make(tmp_path, monkeypatch):
    """make(files, table_cfgs, task=ANSWER) -> (config, pile): the files written under data/,
    taskling.yaml, and the real ingest run on them (no embeddings, no model)."""
    # chunk sizes are counted with the student's tokenizer; words are enough here
    monkeypatch.setattr(ingest, "token_counter", lambda model: lambda texts: [len(t.split()) for t in texts])
    piles = []

    def build(files: dict, table_cfgs: list[dict], task: dict = ANSWER):
        for rel, body in files.items():
            path = tmp_path / "data" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
        cfg = {"task": task, "sources": ["data"], "ingest": {"embed": False, "chunk_tokens": 64},
               "tables": table_cfgs}
        (tmp_path / "taskling.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        config = load_config(tmp_path / "taskling.yaml")
        ctx = Context(config, console=Console(stderr=True, quiet=True))
        ingest.run(ctx)
        piles.append(Pile(ctx.ws.pile_db))
        return config, piles[-1]

    yield build
    for p in piles:
        p.close()


def examples_of(config, pile, name: str):
    cfg = next(t for t in config.tables if t.name == name)
    return task_tables.rows_to_examples(cfg, config.task, tables.find_tables(pile, cfg, config.root))


def pairs(examples):
    return [(e["input"], e["output"]) for e in examples]


def locators(examples):
    return [e["provenance"][0]["locator"] for e in examples]


def test_csv_rows_become_examples_with_row_provenance(make):
    config, pile = make({"codes.csv": CODES_CSV}, [
        {"name": "codes", "match": "data/*.csv", "input": "What does error code {code} mean?", "output": "{Meaning}"}])
    ex, report = examples_of(config, pile, "codes")
    assert pairs(ex) == [("What does error code E1 mean?", "Disk full"),
                         ("What does error code E2 mean?", "Network down, retry"),
                         ("What does error code E4 mean?", "Quota exceeded")]
    assert locators(ex) == ["row 2", "row 3", "rows 5-6"]  # CSV line numbers; E4's cell spans two lines
    prov = ex[1]["provenance"][0]
    assert prov["path"] == "data/codes.csv" and prov["format"] == "csv"
    assert prov["row"] == {"code": "E2", "meaning": "Network down, retry", "severity": "low"}
    # each row cites the pile chunk that holds it, so curate can check it against its source
    chunk = pile.chunk(prov["chunk"])
    assert ex[1]["chunks"] == [prov["chunk"]] and chunk.path == "data/codes.csv"
    assert "Network down, retry" in chunk.text
    assert all(e["source"] == "table" and e["table"] == "codes" and e["id"].startswith("tbl-codes-") for e in ex)
    assert {"id", "input", "output", "chunks", "spans", "provenance", "arm", "round"} <= set(ex[0])
    assert len({e["id"] for e in ex}) == 3
    assert [e["id"] for e in examples_of(config, pile, "codes")[0]] == [e["id"] for e in ex]  # stable
    assert (report["files"], report["tables"], report["rows"], report["examples"]) == (1, 1, 4, 3)
    assert report["skipped"] == {"empty value in column 'meaning'": 1}
    assert report["skipped_rows"] == [{"path": "data/codes.csv", "locator": "row 4",
                                       "reason": "empty value in column 'meaning'"}]
    assert report["warnings"] == [] and report["problems"] == []


HTML = """<html><head><title>Help</title></head><body>
<h2>Error codes</h2>
<table><caption>Codes &amp; meanings</caption>
<thead><tr><th>Code</th><th>Meaning</th><th>Severity</th></tr></thead>
<tbody>
<tr><td>E1</td><td>Disk <b>full</b> &amp; stuck</td><td rowspan="2">high</td></tr>
<tr><td>E2</td><td><p>Network</p><p>down</p></td></tr>
<tr><td>E3</td><td>Quota<br>exceeded</td><td>low</td></tr>
</tbody></table>
<h2>Limits</h2>
<table><tr><td>Name</td><td>Max</td></tr><tr><td>files</td><td>10</td></tr></table>
</body></html>
"""


def test_html_tables_selected_by_caption_and_by_number(make):
    config, pile = make({"help.html": HTML}, [
        {"name": "codes", "match": "*.html", "table": "codes & MEANINGS", "input": "{code} ({severity})",
         "output": "{meaning}"},
        {"name": "limits", "match": "*.html", "table": 2, "input": "What is the limit on {name}?",
         "output": "{max}"},
        {"name": "none", "match": "*.html", "table": 3, "input": "{name}", "output": "{max}"}])
    ex, report = examples_of(config, pile, "codes")
    # inline markup and entities are plain text; a rowspan fills the cell below; <p> and <br> stay in one cell
    assert pairs(ex) == [("E1 (high)", "Disk full & stuck"), ("E2 (high)", "Network down"),
                         ("E3 (low)", "Quota exceeded")]
    assert locators(ex) == ["table 1, row 1", "table 1, row 2", "table 1, row 3"]
    assert {e["provenance"][0]["table_name"] for e in ex} == {"Codes & meanings"}
    assert all(e["chunks"] and pile.chunk(e["chunks"][0]).path == "data/help.html" for e in ex)
    ex, _ = examples_of(config, pile, "limits")
    assert pairs(ex) == [("What is the limit on files?", "10")]
    assert locators(ex) == ["table 2, row 1"] and ex[0]["provenance"][0]["table_name"] == "Limits"
    ex, report = examples_of(config, pile, "none")
    assert ex == [] and "table: 3 is none of them" in report["problems"][0]["reason"]
    assert report["problems"][0]["path"] == "data/help.html" and report["warnings"]


def test_xlsx_sheet_selected_by_name(make):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    wb.active.title = "Notes"
    wb.active.append(["Code", "Count"])
    wb.active.append(["N1", 99])
    ws = wb.create_sheet("Error codes")
    for row in (["Error code list"], ["Code", "Meaning", "Count"], ["E1", "Disk full", 3], [None],
                ["E2", "Net down", 4.0], ["E3", None, 5]):
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    config, pile = make({"book.xlsx": buf.getvalue()}, [
        {"name": "sheet", "match": "data/book.xlsx", "table": "error codes", "input": "How often did {code} occur?",
         "output": "{count}"}])
    ex, report = examples_of(config, pile, "sheet")
    # the title row is not the header; the blank row is skipped; 4.0 reads as the sheet shows it
    assert pairs(ex) == [("How often did E1 occur?", "3"), ("How often did E2 occur?", "4"),
                         ("How often did E3 occur?", "5")]
    assert locators(ex) == ["'Error codes' row 3", "'Error codes' row 5", "'Error codes' row 6"]
    assert ex[0]["provenance"][0]["row"] == {"Code": "E1", "Meaning": "Disk full", "Count": "3"}
    assert all(e["chunks"] for e in ex) and report["tables"] == 1


def test_json_and_jsonl_records(make):
    jsonl = ('{"code": "E1", "meaning": "Disk full", "tags": ["disk", "io"]}\nnot json\n\n'
             '{"code": "E2", "meaning": "Network down", "retry": true}\n["not", "an", "object"]\n')
    listed = json.dumps([{"code": "E7", "level": 2}, {"code": "E8", "level": 1.5}])
    config, pile = make({"recs.jsonl": jsonl, "list.json": listed}, [
        {"name": "meaning", "match": "*.jsonl", "input": "Explain {code}", "output": "{meaning}"},
        {"name": "tags", "match": "*.jsonl", "input": "Tags of {code}?", "output": "{tags}"},
        {"name": "levels", "match": "data/list.json", "input": "Level of {code}?", "output": "{level}"}])
    ex, report = examples_of(config, pile, "meaning")
    assert pairs(ex) == [("Explain E1", "Disk full"), ("Explain E2", "Network down")]
    assert locators(ex) == ["line 1", "line 4"]
    assert ex[1]["provenance"][0]["row"] == {"code": "E2", "meaning": "Network down", "tags": "", "retry": "true"}
    reasons = sorted(p["reason"] for p in report["problems"] if p["path"] == "data/recs.jsonl")
    assert reasons == ["1 line(s) are not JSON objects; left out", "1 line(s) are not valid JSON; left out"]
    ex, report = examples_of(config, pile, "tags")
    assert pairs(ex) == [("Tags of E1?", '["disk", "io"]')]  # nested values JSON-encoded
    assert report["skipped"] == {"empty value in column 'tags'": 1}
    ex, _ = examples_of(config, pile, "levels")
    assert pairs(ex) == [("Level of E7?", "2"), ("Level of E8?", "1.5")]
    assert locators(ex) == ["record 1", "record 2"] and all(e["chunks"] for e in ex)


MARKDOWN = """# Runbook

An example of the syntax, not data:

```
| fake | table |
|------|-------|
| in   | code  |
```

## Error codes

| Code | Meaning | Owner |
|:-----|:-------:|------:|
| `E1` | **Disk** full \\| stuck | [ops](http://ops.example) |
| E2 | Network &amp; DNS down |
| E3 | *Quota* exceeded | __team__ | extra |
"""


def test_markdown_table_with_escaped_pipes_markup_and_ragged_rows(make):
    config, pile = make({"runbook.md": MARKDOWN}, [
        {"name": "md", "match": "*.md", "input": "What does {code} mean?", "output": "{meaning}"}])
    found = tables.find_tables(pile, config.tables[0], config.root)
    assert len(found) == 1  # the table in the code block is not one
    t = found[0]
    assert (t.name, t.columns) == ("Error codes", ["Code", "Meaning", "Owner", "col4"])
    assert t.rows == [{"Code": "E1", "Meaning": "Disk full | stuck", "Owner": "ops", "col4": ""},
                      {"Code": "E2", "Meaning": "Network & DNS down", "Owner": "", "col4": ""},
                      {"Code": "E3", "Meaning": "Quota exceeded", "Owner": "team", "col4": "extra"}]
    ex, report = task_tables.rows_to_examples(config.tables[0], config.task, found)
    assert pairs(ex) == [("What does E1 mean?", "Disk full | stuck"), ("What does E2 mean?", "Network & DNS down"),
                         ("What does E3 mean?", "Quota exceeded")]
    assert locators(ex) == ["table 1, row 1", "table 1, row 2", "table 1, row 3"]
    assert "| E2 |" in pile.chunk(ex[1]["chunks"][0]).text  # placed by its offset in the text


def test_docx_table_named_by_its_heading(make):
    docx = pytest.importorskip("docx")
    doc = docx.Document()
    doc.add_paragraph("Read this first.")
    doc.add_heading("Error codes", 1)
    t = doc.add_table(rows=3, cols=2)
    for r, cells in enumerate([("Code", "Meaning"), ("E1", "Disk full"), ("E2", "Network down")]):
        for c, text in enumerate(cells):
            t.cell(r, c).text = text
    buf = io.BytesIO()
    doc.save(buf)
    config, pile = make({"manual.docx": buf.getvalue()}, [
        {"name": "docx", "match": "*.docx", "table": "Error codes", "input": "{code}?", "output": "{meaning}"}])
    ex, _ = examples_of(config, pile, "docx")
    assert pairs(ex) == [("E1?", "Disk full"), ("E2?", "Network down")]
    assert locators(ex) == ["table 1, row 1", "table 1, row 2"]


EXTRACT = {"name": "invoices", "description": "Read an invoice line.", "type": "extract",
           "output_schema": {"type": "object", "required": ["invoice"], "properties": {
               "invoice": {"type": "string"}, "amount": {"type": "number"}, "qty": {"type": "integer"},
               "paid": {"type": "boolean"}, "note": {"type": "string"}}}}


def test_extract_output_coerced_to_schema_types(make):
    csv_text = ('id,amount,qty,paid,note\nINV-1,"1,234.50",3,yes,rush\nINV-2,99,2.0,no,\n'
                'INV-3,12,three,yes,x\nINV-4,5,1,maybe,y\n')
    config, pile = make({"invoices.csv": csv_text}, [
        {"name": "inv", "match": "*.csv", "input": "Invoice {id}: {amount} for {qty} items",
         "output": {"invoice": "{id}", "amount": "{amount}", "qty": "{qty}", "paid": "{paid}", "note": "{note}"}}],
        task=EXTRACT)
    ex, report = examples_of(config, pile, "inv")
    assert [e["input"] for e in ex] == ["Invoice INV-1: 1,234.50 for 3 items", "Invoice INV-2: 99 for 2.0 items"]
    assert [e["output"] for e in ex] == [
        {"invoice": "INV-1", "amount": 1234.5, "qty": 3, "paid": True, "note": "rush"},
        {"invoice": "INV-2", "amount": 99, "qty": 2, "paid": False, "note": None}]  # an empty cell is null
    assert type(ex[1]["output"]["qty"]) is int and type(ex[0]["output"]["paid"]) is bool
    assert all(tasktype.get("extract").validate(config.task, e, 1, 200) is None for e in ex)  # as curate checks
    assert report["skipped"] == {"field 'qty' is not an integer": 1,
                                 "field 'paid' is not a boolean (true/false, yes/no, 1/0)": 1}
    assert [r["locator"] for r in report["skipped_rows"]] == ["row 4", "row 5"]


def test_classify_rows_with_a_label_outside_the_set_are_skipped(make):
    task = {"name": "triage", "description": "Triage tickets.", "type": "classify", "labels": ["bug", "feature"]}
    csv_text = "title,kind\nApp crashes on start,bug\nAdd a dark mode,Feature\nHow do I log in?,question\n"
    config, pile = make({"tickets.csv": csv_text}, [
        {"name": "tickets", "match": "*.csv", "input": "{title}", "output": "{kind}"}], task=task)
    ex, report = examples_of(config, pile, "tickets")
    assert pairs(ex) == [("App crashes on start", "bug"), ("Add a dark mode", "feature")]  # "Feature" is "feature"
    assert [e["label"] for e in ex] == ["bug", "feature"] and [e["arm"][1] for e in ex] == ["bug", "feature"]
    assert report["skipped"] == {"label 'question' is not one of the task's labels": 1}


def test_templates_match_columns_loosely_and_escape_braces():
    row = {"Error Code": "E1", "meaning": "Disk full"}
    assert tables.render("{{literal}} {error_code}: { Meaning }", row) == "{literal} E1: Disk full"
    with pytest.raises(TasklingError, match="unmatched '{'"):
        tables.Template.parse("What does {code mean?")
    with pytest.raises(TasklingError, match="nearest: 'meaning'"):
        tables.render("{meening}", row)


def test_a_missing_column_names_the_columns_and_the_nearest(make):
    config, pile = make({"codes.csv": CODES_CSV}, [
        {"name": "codes", "match": "*.csv", "input": "What does {code} mean?", "output": "{meening}"}])
    with pytest.raises(TasklingError) as err:
        examples_of(config, pile, "codes")
    msg = str(err.value)
    for needle in ("tables: 'codes'", "data/codes.csv", "{meening}", "code, meaning, severity", "nearest: 'meaning'"):
        assert needle in msg, msg


def test_a_glob_that_matches_nothing_warns_and_lists_files_with_tables(make):
    config, pile = make({"codes.csv": CODES_CSV, "runbook.md": MARKDOWN, "plain.txt": "no table here " * 5}, [
        {"name": "typo", "match": "*.cvs", "input": "{code}", "output": "{meaning}"}])
    ex, report = examples_of(config, pile, "typo")
    assert ex == [] and report["files"] == 0
    (warning,) = report["warnings"]
    assert "'*.cvs'" in warning and "data/codes.csv" in warning and "data/runbook.md" in warning
    assert "plain.txt" not in warning


def test_duplicate_rows_collapse_and_max_rows_keeps_the_first(make):
    csv_text = "code,meaning\nE1,Disk full\nE1,Disk  full\nE2,Net down\nE3,Quota\nE4,Fan\n"
    config, pile = make({"codes.csv": csv_text}, [
        {"name": "all", "match": "*.csv", "input": "{code}?", "output": "{meaning}"},
        {"name": "two", "match": "*.csv", "input": "{code}?", "output": "{meaning}", "max_rows": 2}])
    ex, report = examples_of(config, pile, "all")
    assert [e["input"] for e in ex] == ["E1?", "E2?", "E3?", "E4?"]
    assert report["duplicates"] == 1 and report["skipped_rows"][0]["locator"] == "row 3"
    ex, report = examples_of(config, pile, "two")
    assert [e["input"] for e in ex] == ["E1?", "E2?"] and report["capped"] == 2


def test_bad_files_are_reported_and_the_rest_goes_on(make, tmp_path):
    config, pile = make({"good.csv": "code,meaning\nE1,Disk full\n", "other.csv": "x,y\n1,2\n",
                         "changed.csv": "code,meaning\nE9,Old\n", "numbers.json": "[1, 2, 3]"}, [
        {"name": "all", "match": "data/*", "input": "{code}?", "output": "{meaning}"}])
    (tmp_path / "data" / "changed.csv").write_text("code,meaning\nE9,New\n", encoding="utf-8")
    ex, report = examples_of(config, pile, "all")
    assert pairs(ex) == [("E1?", "Disk full")]
    reasons = {p["path"]: p["reason"] for p in report["problems"]}
    assert "changed since it was ingested" in reasons["data/changed.csv"]
    assert "not JSON objects" in reasons["data/numbers.json"]
    assert "{code} names no column" in reasons["data/other.csv"] and "x, y" in reasons["data/other.csv"]


def test_a_table_inside_an_archive_is_read_from_its_member(make):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inner/codes.csv", "code,meaning\nE1,Disk full\nE2,Network down\n")
    config, pile = make({"pack.zip": buf.getvalue()}, [
        {"name": "zipped", "match": "inner/*.csv", "input": "{code}?", "output": "{meaning}"}])
    ex, _ = examples_of(config, pile, "zipped")
    assert pairs(ex) == [("E1?", "Disk full"), ("E2?", "Network down")]
    assert {e["provenance"][0]["path"] for e in ex} == {"data/pack.zip!/inner/codes.csv"}
    assert locators(ex) == ["row 2", "row 3"] and all(e["chunks"] for e in ex)


def test_pdf_pipe_text_is_a_table_and_a_pdf_without_one_says_why(make):
    from test_formats_office import make_pdf

    config, pile = make({"codes.pdf": make_pdf(["Error codes\nCode | Meaning\nE1 | Disk full\nE2 | Net down"]),
                         "limits.pdf": make_pdf(["Name   Max\nfiles   10"])}, [
        {"name": "pdf", "match": "*.pdf", "input": "{code}?", "output": "{meaning}"}])
    ex, report = examples_of(config, pile, "pdf")
    assert pairs(ex) == [("E1?", "Disk full"), ("E2?", "Net down")]
    assert {e["provenance"][0]["path"] for e in ex} == {"data/codes.pdf"}
    (problem,) = report["problems"]
    assert problem["path"] == "data/limits.pdf" and "export the table as CSV" in problem["reason"]


def test_tables_come_from_the_pile_even_after_the_sources_are_deleted(make, tmp_path, monkeypatch):
    """The pile is current for a document while its source, if still in the workspace, is the file
    ingest read: a deleted source leaves its tables in the pile (until the next ingest marks it gone)."""
    import shutil
    from pathlib import Path

    from taskling.data import formats

    jsonl = '{"code": "E5", "meaning": "Fan"}\n'
    config, pile = make({"codes.csv": CODES_CSV, "help.html": HTML, "runbook.md": MARKDOWN, "recs.jsonl": jsonl,
                         "pack.zip": _zip({"inner/more.csv": "code,meaning\nE9,Late\n"})}, [
        {"name": "all", "match": "data/*", "input": "{code}?", "output": "{meaning}"}])
    before = examples_of(config, pile, "all")
    shutil.rmtree(tmp_path / "data")

    def no_reading(*args, **kwargs):
        raise AssertionError("table mapping read or parsed a source file")
    monkeypatch.setattr(formats, "convert", no_reading)
    monkeypatch.setattr(Path, "read_bytes", no_reading)
    after = examples_of(config, pile, "all")
    # csv 3, html 3, markdown 3 less its E3 (the html's twin), jsonl 1, the zip's member 1
    assert after == before and len(after[0]) == 10 and after[1]["duplicates"] == 1
    assert {e["provenance"][0]["locator"] for e in after[0]} >= {"row 2", "table 1, row 1", "line 1"}


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buf.getvalue()


def test_a_changed_source_is_skipped_until_ingest_reads_it_again(make, tmp_path):
    config, pile = make({"codes.csv": "code,meaning\nE1,Old\n",
                         "pack.zip": _zip({"inner/more.csv": "code,meaning\nE9,Late\n"})}, [
        {"name": "all", "match": "data/*", "input": "{code}?", "output": "{meaning}"}])
    (tmp_path / "data" / "codes.csv").write_text("code,meaning\nE1,New\n", encoding="utf-8")
    (tmp_path / "data" / "pack.zip").write_bytes(_zip({"inner/more.csv": "code,meaning\nE9,Later\n"}))
    ex, report = examples_of(config, pile, "all")
    assert ex == []
    reasons = {p["path"]: p["reason"] for p in report["problems"]}
    assert reasons["data/codes.csv"].startswith("it changed since it was ingested: its tables in the pile are the "
                                                "old ones; run 'taskling ingest'")
    assert "its container data/pack.zip did" in reasons["data/pack.zip!/inner/more.csv"]
    ingest.run(Context(config, console=Console(stderr=True, quiet=True)))
    ex, report = examples_of(config, pile, "all")
    assert pairs(ex) == [("E1?", "New"), ("E9?", "Later")] and report["problems"] == []


def test_a_table_attached_to_an_e_mail_is_read_from_the_pile(make):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["Subject"], msg["Message-ID"] = "ops@example.com", "Codes", "<c@example.com>"
    msg.set_content("The list is attached.\n")
    msg.add_attachment(b"code,meaning\nE1,Disk full\n", maintype="text", subtype="csv", filename="codes.csv")
    config, pile = make({"note.eml": msg.as_bytes()}, [
        {"name": "mail", "match": "*.csv", "input": "{code}?", "output": "{meaning}"}])
    ex, _ = examples_of(config, pile, "mail")
    assert pairs(ex) == [("E1?", "Disk full")] and locators(ex) == ["row 2"]
    assert ex[0]["provenance"][0]["path"] == "data/note.eml!/<c@example.com>/codes.csv" and ex[0]["chunks"]


def test_a_pattern_entry_takes_its_rows_from_the_text_of_the_matching_documents(make):
    text = "# Result codes\n\nSQLITE_OK (0) is success.\nSQLITE_BUSY (5) means locked.\n\nAlso SQLITE_FULL (13).\n"
    config, pile = make({"codes.md": text, "other.md": "SQLITE_MISUSE (21) is not in the glob.\n"}, [
        {"name": "codes", "match": "data/codes.md", "pattern": r"(?P<name>SQLITE_[A-Z]+) \((?P<code>\d+)\)",
         "input": "Which result code is {code}?", "output": "{name}"}])
    ex, report = examples_of(config, pile, "codes")
    assert pairs(ex) == [("Which result code is 0?", "SQLITE_OK"), ("Which result code is 5?", "SQLITE_BUSY"),
                         ("Which result code is 13?", "SQLITE_FULL")]
    prov = ex[2]["provenance"][0]
    assert prov["path"] == "data/codes.md" and prov["row"] == {"name": "SQLITE_FULL", "code": "13"}
    assert pile.chunk(prov["chunk"]) is not None and "SQLITE_FULL (13)" in pile.chunk(prov["chunk"]).text
    # a pattern that matches nothing says so; one that is not a regex, or names no column, is refused
    config2, pile2 = make({"codes.md": text}, [{"name": "none", "match": "data/codes.md", "pattern": r"(?P<x>ZZZ\d)",
                                                 "input": "{x}", "output": "{x}"}])
    _, rep = examples_of(config2, pile2, "none")
    assert rep["examples"] == 0 and any("matches nothing" in w for w in rep["warnings"])
    from taskling.core.config import TableCfg

    for bad, why in ((r"(?P<x", "is not a regular expression"), (r"SQLITE_\w+ \((\d+)\)", "names no group")):
        with pytest.raises(ValueError, match=re.escape(why)):
            TableCfg(name="t", input="{x}", output="{x}", pattern=bad)
