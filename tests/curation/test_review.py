"""review: export a CSV, edit it like a reviewer would, import, apply; errors name the row."""
from __future__ import annotations

import copy
import csv
import json

import pytest

from taskling.curation import review
from taskling.core.errors import TasklingError


def candidates() -> list[dict]:
    def ex(i, status, output, reason=None, **extra):
        return {"id": f"gen-{i:05d}-0", "input": f"How do I do thing {i}?", "output": output,
                "chunks": [f"abc:{i}"], "status": status, "reason": reason,
                "spans": [{"chunk": f"abc:{i}", "start": 0, "end": 9, "text": f"source {i}", "match": "exact"}],
                "provenance": [{"chunk": f"abc:{i}", "path": "docs/node-crypto.md",
                                "locator": f"Crypto > Hmac (lines {i}-{i + 9})"}], **extra}
    return [
        ex(0, "dropped", "sqlite-json", reason="ungrounded", label="sqlite-json", grounding=0.125),
        ex(1, "kept", "node-fs", label="node-fs", judge=0.9),
        ex(2, "kept", "node-crypto", label="node-crypto"),
        ex(3, "kept", {"function": "createHash", "module": "crypto"}),
        ex(4, "dropped", "=HYPERLINK(\"http://x\")", reason="duplicate", label="python-datetime"),
    ]


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows: list[dict], columns=None, **kw) -> None:
    columns = columns or list(rows[0])
    with open(path, "w", encoding=kw.pop("encoding", "utf-8"), newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", **kw)
        w.writeheader()
        w.writerows(rows)


def edit(rows: list[dict], n: int, **cells) -> None:
    rows[n].update(cells)


def test_export_edit_import_apply(tmp_path):
    exs = candidates()
    before = copy.deepcopy(exs)
    csv_path, store = tmp_path / "review.csv", tmp_path / ".taskling" / "review.jsonl"
    assert review.export_review(csv_path, exs) == 5
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbfid,status,")
    rows = read_csv(csv_path)
    assert list(rows[0]) == review.COLUMNS
    assert rows[0]["source"] == "docs/node-crypto.md — Crypto > Hmac (lines 0-9)"
    assert rows[0]["span"] == "source 0" and rows[0]["grounding"] == "0.125" and rows[0]["decision"] == ""
    assert json.loads(rows[3]["output"]) == {"function": "createHash", "module": "crypto"}
    assert rows[4]["output"].startswith("'=")  # a spreadsheet must not run document text as a formula

    edit(rows, 0, decision="accept", note="grounded after all")
    edit(rows, 1, decision="reject")
    edit(rows, 2, decision="fix", fixed_input="How do I compute an HMAC in Node?")
    edit(rows, 3, decision="fix", fixed_output='{"function": "createHmac", "module": "crypto"}')
    write_csv(csv_path, rows)

    result = review.import_review(csv_path, store, {e["id"]: e for e in exs})
    assert result == {"accept": 1, "reject": 1, "fix": 2, "ignored": 1, "errors": []}
    decisions = review.load_decisions(store)
    assert {k: d["decision"] for k, d in decisions.items()} == {
        "gen-00000-0": "accept", "gen-00001-0": "reject", "gen-00002-0": "fix", "gen-00003-0": "fix"}
    assert decisions["gen-00000-0"]["note"] == "grounded after all" and "at" in decisions["gen-00000-0"]

    out, keep, drop = review.apply(exs, decisions)
    assert exs == before  # arguments untouched
    assert keep == {"gen-00000-0", "gen-00002-0", "gen-00003-0"} and drop == {"gen-00001-0"}
    by_id = {e["id"]: e for e in out}
    assert by_id["gen-00000-0"]["human"] == "accepted"
    assert by_id["gen-00002-0"]["input"] == "How do I compute an HMAC in Node?"
    assert by_id["gen-00002-0"]["output"] == "node-crypto" and by_id["gen-00002-0"]["human"] == "fixed"
    assert by_id["gen-00003-0"]["output"] == {"function": "createHmac", "module": "crypto"}
    assert by_id["gen-00003-0"]["input"] == "How do I do thing 3?"
    assert "human" not in by_id["gen-00004-0"]


def test_fixing_a_classify_output_moves_the_label(tmp_path):
    exs = candidates()
    csv_path, store = tmp_path / "review.csv", tmp_path / "review.jsonl"
    review.export_review(csv_path, exs)
    rows = read_csv(csv_path)
    edit(rows, 1, decision="fix", fixed_output="node-crypto")
    write_csv(csv_path, rows)
    review.import_review(csv_path, store, {e["id"]: e for e in exs})
    out, keep, _ = review.apply(exs, review.load_decisions(store))
    assert out[1]["output"] == out[1]["label"] == "node-crypto" and keep == {"gen-00001-0"}


def test_later_import_overrides_and_export_prefills(tmp_path):
    exs = candidates()
    known = {e["id"]: e for e in exs}
    store = tmp_path / "review.jsonl"
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    review.export_review(first, exs)
    rows = read_csv(first)
    edit(rows, 0, decision="reject")
    edit(rows, 3, decision="fix", fixed_output='{"function": "createHmac"}', note="wrong function")
    write_csv(first, rows)
    review.import_review(first, store, known)

    decisions = review.load_decisions(store)
    review.export_review(second, exs, decisions)
    rows = read_csv(second)
    assert rows[0]["decision"] == "reject"
    assert (rows[3]["decision"], json.loads(rows[3]["fixed_output"]), rows[3]["note"]) == (
        "fix", {"function": "createHmac"}, "wrong function")
    assert rows[1]["decision"] == ""

    # re-importing the prefilled file as is stores nothing new
    size = store.stat().st_size
    assert review.import_review(second, store, known)["errors"] == []
    assert store.stat().st_size == size

    edit(rows, 0, decision="accept")
    write_csv(second, rows)
    review.import_review(second, store, known)
    _, keep, drop = review.apply(exs, review.load_decisions(store))
    assert "gen-00000-0" in keep and not drop

    # without the store, export prefills from the marks apply left on the examples
    out, _, _ = review.apply(exs, review.load_decisions(store))
    review.export_review(first, out)
    rows = read_csv(first)
    assert rows[0]["decision"] == "accept" and rows[3]["decision"] == "fix"
    assert json.loads(rows[3]["fixed_output"]) == {"function": "createHmac"}


def test_excel_style_file(tmp_path):
    exs = candidates()
    csv_path, store = tmp_path / "review.csv", tmp_path / "review.jsonl"
    columns = ["Note", "Decision ", "extra column", "ID", "fixed_output", "fixed_input"]
    rows = [{"ID": "gen-00000-0", "Decision ": "  Accept ", "extra column": "x"},
            {"ID": "gen-00001-0", "Decision ": "DROP", "Note": "line one\r\nline two"},
            {"ID": "gen-00002-0", "Decision ": "Yes"}]
    with open(csv_path, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\r\n")
        w.writeheader()
        w.writerow(rows[0])
        f.write("\r\n,,,,,\r\n")  # blank lines, as spreadsheets leave them
        w.writerows(rows[1:])
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")
    result = review.import_review(csv_path, store, {e["id"]: e for e in exs})
    assert result == {"accept": 2, "reject": 1, "fix": 0, "ignored": 0, "errors": []}
    decisions = review.load_decisions(store)
    assert decisions["gen-00001-0"]["note"] == "line one\nline two"


def test_semicolon_csv_in_windows_code_page(tmp_path):
    """What Excel's plain "CSV" save gives in a German locale."""
    exs = candidates()
    csv_path, store = tmp_path / "review.csv", tmp_path / "review.jsonl"
    write_csv(csv_path, [{"id": "gen-00000-0", "decision": "fix", "fixed_input": "Größe?"}],
              delimiter=";", encoding="cp1252")
    assert review.import_review(csv_path, store, {e["id"]: e for e in exs})["fix"] == 1
    assert review.load_decisions(store)["gen-00000-0"]["input"] == "Größe?"


def test_errors_name_the_row_and_valid_rows_still_apply(tmp_path):
    exs = candidates()
    csv_path, store = tmp_path / "review.csv", tmp_path / "review.jsonl"
    review.export_review(csv_path, exs)
    rows = read_csv(csv_path)
    edit(rows, 0, decision="accept")                                      # row 2: fine
    edit(rows, 1, decision="maybe")                                       # row 3
    edit(rows, 2, decision="fix")                                         # row 4: nothing fixed
    edit(rows, 3, decision="fix", fixed_output="{function: createHmac")   # row 5: not JSON
    edit(rows, 4, decision="reject")                                      # row 6: fine
    rows.append({**rows[0], "id": "gen-99999-0", "decision": "accept"})   # row 7: unknown id
    rows.append({**rows[3], "decision": "fix", "fixed_output": '["a list"]'})  # row 8: not an object
    write_csv(csv_path, rows)

    result = review.import_review(csv_path, store, {e["id"]: e for e in exs})
    assert (result["accept"], result["reject"], result["fix"]) == (1, 1, 0)
    errors = result["errors"]
    assert len(errors) == 5 and all(e.startswith("review.csv row ") for e in errors)
    assert errors[0].startswith("review.csv row 3:") and "'maybe'" in errors[0]
    assert errors[1].startswith("review.csv row 4:") and "both empty" in errors[1]
    assert errors[2].startswith("review.csv row 5:") and "not valid JSON" in errors[2]
    assert errors[3].startswith("review.csv row 7:") and "gen-99999-0" in errors[3]
    assert errors[4].startswith("review.csv row 8:") and "JSON object" in errors[4]
    assert set(review.load_decisions(store)) == {"gen-00000-0", "gen-00004-0"}


def test_row_numbers_count_spreadsheet_rows_not_lines(tmp_path):
    exs = candidates()
    csv_path = tmp_path / "review.csv"
    # row 2's quoted cell spans three lines; a spreadsheet still shows it as one row
    write_csv(csv_path, [{"id": "gen-00000-0", "decision": "accept", "note": "a\nb\nc"},
                         {"id": "nope", "decision": "accept", "note": ""}])
    result = review.import_review(csv_path, tmp_path / "r.jsonl", {e["id"]: e for e in exs})
    assert result["errors"] == ["review.csv row 3: id 'nope' is not a current candidate; export a fresh review file"]


@pytest.mark.parametrize("content", [
    "id,status,input\ngen-00000-0,kept,hello\n".encode(),
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
    b"",
])
def test_not_a_review_csv_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "notes.csv"
    path.write_bytes(content)
    with pytest.raises(TasklingError, match="notes.csv") as e:
        review.import_review(path, tmp_path / "review.jsonl", {})
    assert "decision" in str(e.value) or "binary" in str(e.value)
    assert not (tmp_path / "review.jsonl").exists()


def test_torn_last_line_is_ignored_and_next_import_appends_cleanly(tmp_path):
    exs = candidates()
    store = tmp_path / "review.jsonl"
    assert review.load_decisions(store) == {}
    store.write_text('{"id": "gen-00000-0", "decision": "reject", "at": "t"}\n{"id": "gen-00001-0", "deci')
    assert {k: d["decision"] for k, d in review.load_decisions(store).items()} == {"gen-00000-0": "reject"}

    csv_path = tmp_path / "review.csv"
    write_csv(csv_path, [{"id": "gen-00002-0", "decision": "accept"}])
    review.import_review(csv_path, store, {e["id"]: e for e in exs})
    decisions = review.load_decisions(store)
    assert {k: d["decision"] for k, d in decisions.items()} == {"gen-00000-0": "reject", "gen-00002-0": "accept"}
    assert all(json.loads(line) for line in store.read_text().splitlines())


def test_decision_about_other_text_is_not_applied(tmp_path):
    """A re-generated example that reuses an id is not covered by the old decision."""
    exs = candidates()
    store, csv_path = tmp_path / "review.jsonl", tmp_path / "review.csv"
    write_csv(csv_path, [{"id": "gen-00001-0", "decision": "fix", "fixed_input": "Better?"}])
    review.import_review(csv_path, store, {e["id"]: e for e in exs})
    decisions = review.load_decisions(store)

    out, keep, _ = review.apply(exs, decisions)
    assert keep == {"gen-00001-0"} and review.stale(exs, decisions) == []
    again, keep, _ = review.apply(out, decisions)  # applying twice changes nothing
    assert again == out and keep == {"gen-00001-0"}

    exs[1]["input"] = "Some other question"
    out, keep, drop = review.apply(exs, decisions)
    assert keep == drop == set() and out[1]["input"] == "Some other question"
    assert review.stale(exs, decisions) == ["gen-00001-0"]


def test_a_decision_holds_for_the_example_the_label_model_relabelled_and_not_for_another():
    generated = {"id": "gen-1", "input": "How do I hash a file?", "output": "node-fs", "label": "node-fs"}
    pile = {"id": "pile-00001", "input": "createHash returns a Hash object", "output": None, "label": None}
    # curate's rows after the label model: the label changed, the generated one kept under relabelled_from
    relabelled = dict(generated, output="node-crypto", label="node-crypto", relabelled_from="node-fs")
    labelled = dict(pile, output="node-crypto", label="node-crypto", relabelled_from=None)
    assert review.digest(relabelled) == review.digest(generated)
    assert review.digest(labelled) == review.digest(pile)
    # a different generated answer is a different example: the decision no longer applies
    other = dict(generated, output="sqlite-json")
    assert review.digest(other) != review.digest(generated)
    decided = {"gen-1": {"id": "gen-1", "decision": "accept", "of": review.digest(generated)}}
    assert review.stale([relabelled], decided) == [] and review.stale([other], decided) == ["gen-1"]
