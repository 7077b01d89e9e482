"""The CLI over the exchange library: `taskling export --dataset FORMAT`, `taskling gold import FILE`, and
the pile commands answered by the Python API."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import one_line_error, write_workspace


def curated(cli, root: Path) -> None:
    for verb in ("ingest", "generate", "curate"):
        assert cli(verb, cwd=root).exit_code == 0


def test_export_dataset_writes_the_format_and_prints_json(cli, workspace):
    root = workspace.parent
    curated(cli, root)
    r = cli("export", "--dataset", "sharegpt", "--rejected", "--json", cwd=root)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    folder = Path(info["dir"])
    assert folder == root / "runs" / "tiny-router" / "datasets" / "round-0" / "sharegpt"
    assert set(info["rows"]) == {"train", "eval", "rejected"} and (folder / "dataset_info.json").exists()
    train = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
    assert len(train) == info["rows"]["train"] and "conversations" in train[0]
    assert not (root / "runs" / "tiny-router" / "export" / "manifest.json").exists()  # no model export ran
    one_line_error(cli("export", "--dataset", "parquet", cwd=root), "use one of openai, sharegpt, alpaca, hf")
    one_line_error(cli("export", "--dataset", "hf", "--round", "2", cwd=root), "curate has not finished for round 2")


def test_gold_import_adds_items_and_a_missing_column_is_one_line(cli, workspace):
    root = workspace.parent
    (root / "mine.csv").write_text("text,team\nHow do I walk an array with json_each?,sqlite\n"
                                   "How do I read a file with readFile in node?,node\n", encoding="utf-8")
    one_line_error(cli("gold", "import", "mine.csv", cwd=root), "mine.csv", "no column 'input'", "text, team")
    r = cli("gold", "import", "mine.csv", "--input", "text", "--output", "team", "--json", cwd=root)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["imported"] == 1 and res["already_in_gold"] == 1  # the readFile question is in gold.jsonl
    assert res["gold_items"] == 7 and len((root / "gold.jsonl").read_text().splitlines()) == 7


def test_pile_commands_answer_from_the_api(cli, workspace):
    root = workspace.parent
    assert cli("ingest", cwd=root).exit_code == 0
    stats = json.loads(cli("pile", "stats", "--json", cwd=root).stdout)
    assert stats["documents"] == 3
    hits = json.loads(cli("pile", "search", "readFile", "--mode", "fts", "--json", cwd=root).stdout)["hits"]
    assert hits and hits[0]["path"] == "docs/node.html"
    shown = json.loads(cli("pile", "show", hits[0]["chunk"], "--json", cwd=root).stdout)
    assert shown["chunk"] == hits[0]["chunk"] and "readFile" in shown["text"]
    one_line_error(cli("pile", "show", "nope:1", cwd=root), "is not in the pile")


def test_a_seed_data_column_that_is_not_there_stops_before_the_teacher_is_asked(cli, tmp_path, tiny_model_dir):
    """seed_data: names a column the file lacks: generate (and its dry run) refuse in one line naming the
    file, the column, the setting and the columns there are, before any teacher call."""
    (tmp_path / "mine.csv").write_text("text,team\nHow do I walk an array with json_each?,sqlite\n", encoding="utf-8")
    write_workspace(tmp_path, tiny_model_dir, seed_data=[{"path": "mine.csv", "input": "question", "output": "team"}])
    assert cli("ingest", cwd=tmp_path).exit_code == 0
    for args in (["generate"], ["generate", "--dry-run"], ["run"]):
        one_line_error(cli(*args, cwd=tmp_path), "mine.csv", "no column 'question'", "seed_data input", "text, team")
    assert not (tmp_path / "runs" / "tiny-router" / "round-0" / "generate" / "examples.jsonl").exists()
    calls = tmp_path / ".taskling" / "calls.db"
    if calls.exists():
        import sqlite3

        with sqlite3.connect(calls) as db:
            assert db.execute("SELECT count(*) FROM calls").fetchone() == (0,)
