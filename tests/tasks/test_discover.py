"""discover: the table the task examples' answers come from is found (its key column named in the
inputs, its answer column in the outputs), proposed as a `tables:` entry in the examples' own
phrasings, and nothing is proposed when the examples do not agree on one."""
from __future__ import annotations

import re

from taskling.core.config import TableCfg
from taskling.core.tasktype import TaskCfg
from taskling.data.tables import Table
from taskling.tasks.discover import discover, discover_passages
from taskling.tasks.tables import rows_to_examples

CODES = [("23505", "unique_violation"), ("23503", "foreign_key_violation"), ("42P01", "undefined_table"),
         ("42703", "undefined_column"), ("40001", "serialization_failure")]


def table(rows, columns=("Error Code", "Condition Name"), path="docs/errcodes.html", index=2, name="Errors"):
    return Table(path, index, name, list(columns), [dict(zip(columns, r)) for r in rows],
                 [f"row {i + 2}" for i in range(len(rows))], chunks=[None] * len(rows), topics=[None] * len(rows))


def task(examples, type="answer", **extra):
    return TaskCfg(name="t", description="Name the condition of an error code.", type=type,
                   examples=[{"input": i, "output": o} for i, o in examples], **extra)


def test_two_examples_find_their_table_in_their_own_phrasings():
    noise = table([("Disk full", "high"), ("Network down", "low")], ("Problem", "Severity"), "docs/other.html", 1)
    t = task([("What is the condition name of PostgreSQL error code 23505?", "unique_violation"),
              ("Postgres said {SQLSTATE 42P01}: which condition?", "undefined_table"),
              ("How do I reset my password?", "Use the account page.")])
    [p] = discover(t, [noise, table(CODES)])
    assert p.path == "docs/errcodes.html" and p.index == 2 and p.rows == len(CODES)
    entry = p.as_entry()
    assert entry["match"] == "docs/errcodes.html" and entry["table"] == 2 and entry["paraphrase"] == 1
    assert entry["output"] == "{Condition Name}"
    # each example's phrasing, its code made the key placeholder, its literal braces kept literal
    assert entry["input"] == ["What is the condition name of PostgreSQL error code {Error Code}?",
                              "Postgres said {{SQLSTATE {Error Code}}}: which condition?"]
    assert [(e["example"], e["key"]) for e in p.report()["evidence"]] == [(0, ["Error Code", "23505"]),
                                                                          (1, ["Error Code", "42P01"])]
    # the proposal is an ordinary tables: entry: every row asked in both phrasings, held out together
    rows, rep = rows_to_examples(TableCfg(**entry), t, [table(CODES)])
    assert rep["examples"] == 2 * len(CODES)
    assert ("Postgres said {SQLSTATE 40001}: which condition?", "serialization_failure") in \
        [(e["input"], e["output"]) for e in rows]
    firsts = [e for e in rows if "paraphrase_of" not in e]
    assert len(firsts) == len(CODES) and all(e["paraphrase_of"] in {f["id"] for f in firsts}
                                             for e in rows if e not in firsts)


def test_one_example_is_not_enough_when_there_are_more_and_they_disagree():
    t = task([("What is the condition name of PostgreSQL error code 23505?", "unique_violation"),
              ("What does error 99999 mean?", "no_such_thing"), ("Which condition is 11111?", "nothing")])
    assert discover(t, [table(CODES)]) == []
    # the only example of a task is enough
    assert len(discover(task([("Which condition is 23503?", "foreign_key_violation")]), [table(CODES)])) == 1


def test_the_key_is_a_whole_name_in_a_column_of_distinct_values():
    versions = table([("v2.10", "Bobcat"), ("v2.1", "Albatross"), ("v3.0", "Cheetah")], ("Version", "Codename"))
    # v2.1 is not in "v2.10", so the example naming v2.10 points at the Bobcat row only
    t = task([("Codename of v2.10?", "Bobcat"), ("What was v3.0 called?", "Cheetah")])
    [p] = discover(t, [versions])
    assert [e["locator"] for e in p.evidence] == ["row 2", "row 4"]
    # a column of repeated values is no key: the severity "high" is named, but many rows have it
    sev = table([("Disk full", "high"), ("Quota", "high"), ("Network", "low"), ("Fan", "high")],
                ("Problem", "Severity"))
    assert discover(task([("Is a high one a Disk full?", "Disk full"), ("high: Quota?", "Quota")]), [sev]) == []
    # the answer's column is never its own key
    assert discover(task([("unique_violation", "unique_violation"), ("undefined_table", "undefined_table")]),
                    [table(CODES)]) == []


def test_tables_with_the_same_columns_hold_more_of_the_same():
    jan = table(CODES[:3], path="reports/jan.csv", index=1)
    feb = table(CODES[3:], path="reports/feb[2].csv", index=1)
    other = table([("x1", "y1"), ("x2", "y2")], ("Error Code", "Something Else"), "docs/else.csv", 1)
    t = task([("Which condition is 23505?", "unique_violation"), ("Which condition is 23503?", "foreign_key_violation")])
    props = discover(t, [jan, other, feb])
    assert [(p.path, p.rows, bool(p.evidence)) for p in props] == [("reports/jan.csv", 3, True),
                                                                  ("reports/feb[2].csv", 2, False)]
    assert props[1].as_entry()["match"] == "reports/feb[[]2].csv"  # a glob that matches that file only
    assert len({p.table.name for p in props}) == 2


def test_extract_maps_every_field_the_examples_fill():
    staff = table([("E1", "Ada Lovelace", "London"), ("E2", "Alan Turing", "Wilmslow"), ("E3", "Grace Hopper", "NYC")],
                  ("Id", "Name", "City"))
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"},
                                                 "age": {"type": ["integer", "null"]}}}
    t = task([("Who is employee E1 and where?", {"name": "Ada Lovelace", "city": "London", "age": None}),
              ("Employee E3?", {"name": "Grace Hopper", "city": "NYC"})], type="extract", output_schema=schema)
    [p] = discover(t, [staff])
    assert p.as_entry()["output"] == {"city": "{City}", "name": "{Name}"}
    rows, _ = rows_to_examples(p.table, t, [staff])
    assert {"input": "Employee E2?", "output": {"name": "Alan Turing", "city": "Wilmslow", "age": None}} in \
        [{"input": e["input"], "output": e["output"]} for e in rows]
    # an example whose field is in no cell of the row does not agree
    t2 = task([("Who is employee E1?", {"name": "Ada Lovelace", "city": "Paris"}),
               ("Employee E3?", {"name": "Grace Hopper", "city": "NYC"})], type="extract", output_schema=schema)
    assert discover(t2, [staff]) == []


# -- passages ------------------------------------------------------------------------------------------------------
PAGE = """Result codes
SQLITE_OK (0)
SQLITE_ERROR (1)
SQLITE_BUSY (5)
SQLITE_FULL (13)
SQLITE_IOERR_READ (266)
SQLITE_CONSTRAINT_UNIQUE (2067)
(13) SQLITE_FULL
The SQLITE_FULL result code (13) means the disk is full.
See also SQLITE_LIMIT_LENGTH (0x01) and version 3.45 (2024).
"""


def holding_in(texts: list[str]):
    from taskling.data.pile import Chunk

    chunks = [Chunk(n, f"k{n}", 1, "docs/rescode.html", "", 0, len(t), f"part {n}", t) for n, t in enumerate(texts)]
    return lambda word: [c for c in chunks if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", c.text, re.I)]


def test_answers_in_running_text_become_a_pattern_whose_matches_are_the_rows():
    import regex

    t = task([("What is the symbolic name of SQLite result code 13?", "SQLITE_FULL"),
              ("Which constant has the value 266?", "SQLITE_IOERR_READ")])
    [p] = discover_passages(t, holding_in([PAGE]))
    entry = p.as_entry()
    assert entry["input"] == ["What is the symbolic name of SQLite result code {key}?",
                              "Which constant has the value {key}?"] and entry["output"] == "{answer}"
    rows = [(m["key"], m["answer"]) for m in regex.finditer(entry["pattern"], PAGE)]
    # the list's join "NAME (n)", on one line: not the heading, the sentence, a hex value or the next line
    assert rows == [("0", "SQLITE_OK"), ("1", "SQLITE_ERROR"), ("5", "SQLITE_BUSY"), ("13", "SQLITE_FULL"),
                    ("266", "SQLITE_IOERR_READ"), ("2067", "SQLITE_CONSTRAINT_UNIQUE")]
    assert [e["example"] for e in p.evidence] == [0, 1]


def test_passages_need_two_examples_joined_the_same_way_and_text_answers():
    two_ways = task([("What is code 13?", "SQLITE_FULL"), ("What is code 5?", "SQLITE_BUSY")])
    assert discover_passages(two_ways, holding_in(["SQLITE_FULL (13)", "5 is SQLITE_BUSY"])) == []
    assert len(discover_passages(two_ways, holding_in(["SQLITE_FULL (13)", "SQLITE_BUSY (5)"]))) == 1
    # a key must be in the input and not be part of the answer; structured tasks have no passages
    assert discover_passages(task([("What is FULL?", "SQLITE_FULL"), ("And BUSY?", "SQLITE_BUSY")]),
                             holding_in([PAGE])) == []
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    assert discover_passages(task([("code 13?", {"name": "SQLITE_FULL"}), ("code 5?", {"name": "SQLITE_BUSY"})],
                                  type="extract", output_schema=schema), holding_in([PAGE])) == []


def test_max_rows_counts_rows_and_a_bad_row_is_skipped_once_in_every_phrasing():
    t = task([("Which condition is 23505?", "unique_violation")])
    rows = CODES + [("99999", "")]
    cfg = TableCfg(name="codes", input=["Which condition is {Error Code}?", "Code {Error Code}: condition?"],
                   output="{Condition Name}", max_rows=3)
    ex, rep = rows_to_examples(cfg, t, [table(rows)])
    assert len(ex) == 6 and rep["capped"] == len(rows) - 3  # three rows, each in both phrasings
    ex, rep = rows_to_examples(cfg.model_copy(update={"max_rows": None}), t, [table(rows)])
    assert len(ex) == 2 * len(CODES) and rep["skipped"] == {"empty value in column 'Condition Name'": 1}
