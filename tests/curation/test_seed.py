"""Labelled data in: seed_data files in every format with a column mapping, clear errors for a missing
column or an unknown label, repeats and conflicts, gold import, no item both trained on and gold,
and the `human` source pinned in the real label model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.exchange import SeedDataCfg
from taskling.core.workspace import read_jsonl
from taskling.curation import labelmodel, seed

ROWS = [("How do I read a JSON value with json_extract?", "sqlite"),
        ("How do I rank full-text matches by bm25?", "sqlite"),
        ("How do I read a file with fs.readFile?", "node"),
        ("How do I make random bytes in node crypto?", "node"),
        ("How do I format a date with strftime?", "python"),
        ("How do I open a database with sqlite3.connect in Python?", "python")]


def write(path: Path, rows=ROWS, cols=("text", "team")) -> Path:
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="," if path.suffix == ".csv" else "\t")
            w.writerow(cols)
            w.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(cols, r))) + "\n" for r in rows), encoding="utf-8")
    else:
        import openpyxl

        book = openpyxl.Workbook()
        book.active.title = "other"
        ws = book.create_sheet("labelled")
        ws.append(list(cols))
        for r in rows:
            ws.append(list(r))
        book.save(path)
    return path


def config(workspace, *sets):
    return load_config(workspace, list(sets))


@pytest.mark.parametrize("name", ["items.csv", "items.tsv", "items.jsonl", "items.xlsx"])
def test_every_format_reads_with_its_column_mapping(workspace, name):
    cfg = config(workspace)
    write(cfg.root / name)
    src = SeedDataCfg(path=name, input="text", output="team", sheet="labelled" if name.endswith("xlsx") else None)
    items, info = seed.read_items(cfg, src)
    assert [(it["input"], it["output"]) for it in items] == ROWS
    assert info["items"] == 6 and info["empty"] == info["repeats"] == info["conflicts"] == 0
    # the first data row as a spreadsheet counts it (under the header), or the JSONL line
    assert items[0]["row"] == (1 if name.endswith("jsonl") else 2) and items[0]["path"] == name


def test_a_missing_column_names_the_file_the_setting_and_the_columns(workspace):
    cfg = config(workspace)
    write(cfg.root / "items.csv")
    with pytest.raises(TasklingError) as e:
        seed.read_items(cfg, SeedDataCfg(path="items.csv", input="texts", output="team"))
    msg = str(e.value)
    assert "items.csv" in msg and "no column 'texts'" in msg and "seed_data input" in msg
    assert "text, team" in msg and "did you mean 'text'" in msg
    with pytest.raises(TasklingError, match="no column 'output' .seed_data output."):
        seed.read_items(cfg, SeedDataCfg(path="items.csv", input="text"))
    with pytest.raises(TasklingError, match=r"items.csv: no such file"):
        seed.read_items(cfg, SeedDataCfg(path="missing/items.csv"))


def test_an_unknown_label_names_the_row_and_the_nearest_label(workspace):
    cfg = config(workspace)
    write(cfg.root / "items.csv", ROWS + [("How do I hash with createHash?", "nodejs")])
    with pytest.raises(TasklingError, match=r"row 8: label 'nodejs' is not one of .*did you mean 'node'"):
        seed.read_items(cfg, SeedDataCfg(path="items.csv", input="text", output="team"))


def test_repeats_are_kept_once_conflicts_and_empty_rows_are_left_out(workspace):
    cfg = config(workspace)
    rows = ROWS + [(ROWS[0][0].upper(), "sqlite"), (ROWS[2][0], "python"), ("", "node"), ("An input", "")]
    write(cfg.root / "items.csv", rows)
    items, info = seed.read_items(cfg, SeedDataCfg(path="items.csv", input="text", output="team"))
    assert info["repeats"] == 1 and info["conflicts"] == 1 and info["empty"] == 2
    assert ROWS[2][0] not in {it["input"] for it in items} and len(items) == 5


def test_seed_data_in_the_config_becomes_human_training_examples(workspace):
    write(workspace.parent / "items.csv")
    cfg = config(workspace, "seed_data={path: items.csv, input: text, output: team}")
    examples = seed.examples(cfg, cfg.root / "nothing.jsonl")
    assert len(examples) == 6 and {ex["source"] for ex in examples} == {"human"}
    ex = examples[0]
    assert ex["label"] == ex["output"] == "sqlite" and ex["grounding"] == 1.0
    assert ex["provenance"][0] == {"chunk": "items.csv#row 2", "path": "items.csv", "format": "csv",
                                   "locator": "row 2"}
    assert seed.digest(cfg) is not None and seed.digest(config(workspace)) is None


def test_no_item_is_both_trained_on_and_gold(workspace):
    """gold import takes a seeded share to gold.jsonl; seed_data then trains on the rest only, and an item
    already in gold (here gold.jsonl's own 'createHash' question, planted in the file) never trains."""
    rows = ROWS + [("How do I hash data with createHash in node crypto?", "node")]  # in the fixture's gold.jsonl
    write(workspace.parent / "items.csv", rows)
    cfg = config(workspace, "seed_data={path: items.csv, input: text, output: team}")
    gold_path = cfg.root / "gold.jsonl"
    before = read_jsonl(gold_path)
    res = seed.import_gold(cfg, cfg.root / "items.csv", gold_path, input="text", output="team", fraction=0.5)
    assert res["already_in_gold"] == 1 and res["imported"] + res["left_out"] == 6 and res["imported"] >= 1
    assert res["no_longer_trained_on"] == res["imported"]  # seed_data holds them: they leave training
    gold = read_jsonl(gold_path)
    assert len(gold) == len(before) + res["imported"] and gold[:len(before)] == before
    train, info = seed.load(cfg, gold_path)
    gold_inputs = {seed.norm(g["input"]) for g in gold}
    assert not gold_inputs & {seed.norm(ex["input"]) for ex in train}
    assert len(train) == res["left_out"] and info["files"][0]["in_gold"] == res["imported"] + 1
    # importing again adds nothing; the rest of the file goes too with fraction 1
    again = seed.import_gold(cfg, cfg.root / "items.csv", gold_path, input="text", output="team")
    assert again["imported"] == res["left_out"] and seed.load(cfg, gold_path)[0] == []


def test_a_bad_fraction_is_refused(workspace):
    cfg = config(workspace)
    write(cfg.root / "items.csv")
    with pytest.raises(TasklingError, match="--fraction 0"):
        seed.import_gold(cfg, cfg.root / "items.csv", cfg.root / "gold.jsonl", "text", "team", fraction=0)


def test_the_label_model_pins_human_labels_and_measures_the_other_sources_on_them():
    labels = ["a", "b"]
    truth = ["a", "b"] * 20
    items = [{"id": str(i), "label": t, "source": "human"} if i < 10 else {"id": str(i)} for i, t in enumerate(truth)]
    good = [{"good": t} for t in truth]
    for i in (3, 7, 25):  # right 37 times in 40
        good[i]["good"] = "b" if truth[i] == "a" else "a"
    votes = [{**g, "bad": "a"} | h for g, h in zip(good, seed.votes(items))]
    pinned = seed.clamp(items, labels)
    assert len(pinned) == 10 and all(v[seed.HUMAN] == truth[i] for i, v in enumerate(votes[:10]))
    fit = labelmodel.fit(votes, labels, sources=["good", "bad", seed.HUMAN], gold=pinned)
    assert all(fit.label(i) == truth[i] and fit.confidence(i) == 1.0 for i in pinned)  # human labels hold
    measured = seed.measured_on_human(["good", "bad", seed.HUMAN], votes, pinned)
    assert seed.HUMAN not in measured
    assert measured["good"] == {"accuracy": 0.8, "voted": 10, "coverage": 1.0}  # wrong on items 3 and 7
    assert measured["bad"]["accuracy"] == 0.5
