"""Datasets out: a run's curated sets in every format, each read back by its real reader (Hugging Face
`datasets` for the folder and its parquet, the format's schema and `datasets`' JSON reader for the
JSONL ones, LLaMA-Factory's dataset_info.json entries), with the rows, splits and provenance curate wrote."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import jsonschema
import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.workspace import Context, read_jsonl
from taskling.curation.datasets import FORMATS, export_dataset


@pytest.fixture(scope="module")
def curated(tmp_path_factory, tiny_model_dir) -> Context:
    """The tiny workspace through ingest, generate and curate (no training needed to export data)."""
    from taskling.stages import curate, generate, ingest

    root = tmp_path_factory.mktemp("datasets")
    (root / "mine.csv").write_text("text,team\nHow do I walk a JSON array with json_each?,sqlite\n"
                                   "How do I stream a big file with createReadStream?,node\n", encoding="utf-8")
    path = write_workspace(root, tiny_model_dir, hub__source_licences={"docs/*.md": "CC0-1.0"},
                           seed_data=[{"path": "mine.csv", "input": "text", "output": "team"}],
                           label__rules=RULES, label__auto=False)  # hand-written sources: a label model runs
    (root / "docs" / "LICENSE").write_text("MIT License\n\nCopyright (c) the authors\n", encoding="utf-8")
    ctx = Context(load_config(path, []), console=Console(stderr=True, quiet=True))
    for stage in (ingest, generate, curate):
        stage.run(ctx)
    return ctx


RULES = [{"name": "kw-sqlite", "keywords": ["json_extract", "bm25", "json_each", "match"], "label": "sqlite"},
         {"name": "kw-node", "keywords": ["readFile", "createHash", "crypto"], "label": "node"},
         {"name": "kw-python", "keywords": ["datetime", "strftime", "connect"], "label": "python"}]


# Each JSONL format's line as its own documentation gives it, written here apart from the code under test.
# OpenAI chat fine-tuning (platform.openai.com/docs/guides/fine-tuning, "Example format"): {"messages": [...]},
# each message a role and its content; the checks are the OpenAI cookbook's "Data preparation and analysis
# for chat model fine-tuning" format checks.
OPENAI_ROLES, OPENAI_KEYS = ("system", "user", "assistant", "function"), ("role", "content", "name", "function_call",
                                                                         "weight")


def openai_format_errors(lines: list) -> list[str]:
    errors = []
    for n, ex in enumerate(lines, 1):
        if not isinstance(ex, dict):
            errors.append(f"{n}: data_type")
            continue
        messages = ex.get("messages")
        if not messages:
            errors.append(f"{n}: missing_messages_list")
            continue
        for m in messages:
            if "role" not in m or "content" not in m:
                errors.append(f"{n}: message_missing_key")
            if any(k not in OPENAI_KEYS for k in m):
                errors.append(f"{n}: message_unrecognized_key")
            if m.get("role") not in OPENAI_ROLES:
                errors.append(f"{n}: unrecognized_role")
            if (not m.get("content") and not m.get("function_call")) or not isinstance(m.get("content"), str):
                errors.append(f"{n}: missing_content")
        if not any(m.get("role") == "assistant" for m in messages):
            errors.append(f"{n}: example_missing_assistant_message")
    return errors


# ShareGPT as LLaMA-Factory reads it (data/README.md, "Sharegpt Format"): "conversations" of {"from", "value"},
# an optional system turn first, then human and gpt turns alternating, human first, gpt last.
SHAREGPT = {"type": "object", "required": ["conversations"], "properties": {"conversations": {
    "type": "array", "minItems": 2, "items": {"type": "object", "required": ["from", "value"], "properties": {
        "from": {"enum": ["human", "gpt", "system", "function_call", "observation"]}, "value": {"type": "string"}}}}}}
# Alpaca (tatsu-lab/stanford_alpaca, alpaca_data.json): instruction, input (may be empty) and output, all text.
ALPACA = {"type": "object", "required": ["instruction", "input", "output"], "additionalProperties": False,
          "properties": {"instruction": {"type": "string", "minLength": 1}, "input": {"type": "string"},
                         "output": {"type": "string", "minLength": 1}}}


def turns_alternate(turns: list[dict], role: str, user: str, assistant: str, system: str) -> bool:
    """LLaMA-Factory's sharegpt converter: a leading system turn is the system prompt; then user turns at
    even places and assistant turns at odd ones, an even number of them."""
    if turns and turns[0][role] == system:
        turns = turns[1:]
    return (len(turns) % 2 == 0 and len(turns) > 0
            and all(t[role] == (user if i % 2 == 0 else assistant) for i, t in enumerate(turns)))


def curate_rows(ctx: Context, split: str) -> list[dict]:
    return read_jsonl(ctx.stage_dir("curate") / f"{split}.jsonl")


def test_the_hf_folder_loads_with_datasets_with_every_split_and_its_provenance(curated):
    info = export_dataset(curated, "hf", rejected=True)
    folder = Path(info["dir"])
    ds = datasets.load_dataset(str(folder))
    train, evals, rejected = (curate_rows(curated, s) for s in ("train", "eval", "rejected"))
    assert set(ds) == {"train", "test", "rejected"}  # no dev set in a one-round run
    assert ds["train"].num_rows == len(train) == info["rows"]["train"]
    assert ds["test"].num_rows == len(evals) and ds["rejected"].num_rows == len(rejected)
    by_id = {ex["id"]: ex for ex in train}
    system = ds["train"][0]["messages"][0]
    assert system["role"] == "system" and "Answer with exactly one label" in system["content"]
    for row in ds["train"]:
        ex = by_id[row["id"]]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][1]["content"] == ex["input"] and row["messages"][2]["content"] == ex["output"]
        assert row["label"] == ex["label"] and row["document"] == ex["provenance"][0]["path"]
        assert row["locator"] == ex["provenance"][0]["locator"]
        if ex.get("chunks"):  # generated from a chunk: its offsets in the document and the chunk's text
            assert row["span_start"] == ex["provenance"][0]["start_char"] and row["context"]
            assert row["span_end"] == ex["provenance"][0]["end_char"] and row["source"] == "teacher"
        assert row["label_confidence"] == ex.get("label_confidence")  # the label model's posterior, as curate kept it
    assert any(r["label_confidence"] is not None for r in ds["train"])  # the label model weighed this run's labels
    human = {r["input"]: r for r in ds["train"] if r["source"] == "human"}  # seed_data: its file and row
    assert human["How do I stream a big file with createReadStream?"]["document"] == "mine.csv"
    assert human["How do I stream a big file with createReadStream?"]["locator"] == "row 3"
    assert all(r["reason"] for r in ds["rejected"]) and not any(r["reason"] for r in ds["train"])
    # each parquet file alone, by datasets' own parquet reader
    one = datasets.load_dataset("parquet", data_files={"train": str(folder / info["files"]["train"])})["train"]
    assert one.num_rows == len(train) and "label_confidence" in one.column_names


def test_the_dataset_card_has_hub_front_matter_the_funnel_and_the_licences(curated):
    from huggingface_hub import DatasetCard

    info = export_dataset(curated, "hf")
    text = (Path(info["dir"]) / "README.md").read_text()
    card = DatasetCard(text)
    assert card.data.task_categories == ["text-classification"] and "taskling" in card.data.tags
    configs = card.data.to_dict()["configs"][0]["data_files"]
    assert {c["split"] for c in configs} == {"train", "test"}
    cur = curated.manifest("curate")
    assert f"| generated | {cur.counts.generated} |" in text  # the funnel, step by step
    assert "| `docs/sqlite.md` | CC0-1.0 |" in text  # hub.source_licences
    assert "| `docs/node.html` | see docs/LICENSE |" in text  # a licence file beside the documents
    assert card.data.license == "other"  # the sources differ
    people = sum(ex.get("source") in ("human", "task example") for s in ("train", "eval") for ex in curate_rows(curated, s))
    assert people >= 2 and f"{people} examples were written by a person" in text
    for column in ("`document`", "`locator`", "`span_start`", "`label_confidence`"):  # provenance, explained
        assert column in text


def test_a_changed_set_loads_with_its_own_rows_not_from_the_datasets_cache(curated, tmp_path):
    """`datasets` caches a local folder with a card by the folder's name and the card: a later export whose
    curated set differs (here a person dropped one training example) must load its own rows."""
    cache = str(tmp_path / "cache")
    first = export_dataset(curated, "hf", out=tmp_path / "a" / "hf")
    rows = (curated.stage_dir("curate") / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    assert datasets.load_dataset(first["dir"], cache_dir=cache)["train"].num_rows == len(rows)
    copy = tmp_path / "copy"
    shutil.copytree(curated.cfg.root, copy, ignore=shutil.ignore_patterns("datasets"))
    ctx = Context(load_config(copy / "taskling.yaml", []), console=Console(stderr=True, quiet=True))
    (ctx.stage_dir("curate") / "train.jsonl").write_text("".join(rows[:-1]), encoding="utf-8")
    second = export_dataset(ctx, "hf", out=tmp_path / "b" / "hf")
    assert datasets.load_dataset(second["dir"], cache_dir=cache)["train"].num_rows == len(rows) - 1


@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "alpaca"])
def test_each_jsonl_format_keeps_its_schema_and_loads_in_datasets(curated, fmt):
    info = export_dataset(curated, fmt, rejected=True)
    folder = Path(info["dir"])
    for split, name in info["files"].items():
        lines = read_jsonl(folder / name)
        prov = read_jsonl(folder / f"{split}.provenance.jsonl")
        assert len(lines) == len(prov) == len(curate_rows(curated, split)) == info["rows"][split]
        if fmt == "openai":
            assert openai_format_errors(lines) == []
        for obj in lines:
            if fmt == "sharegpt":
                jsonschema.validate(obj, SHAREGPT)
                assert turns_alternate(obj["conversations"], "from", "human", "gpt", "system")
            elif fmt == "alpaca":
                jsonschema.validate(obj, ALPACA)
        rows = curate_rows(curated, split)
        assert [p["id"] for p in prov] == [ex["id"] for ex in rows]
        assert [(p["document"], p["locator"], p["label_confidence"]) for p in prov] == [
            (ex["provenance"][0].get("path"), ex["provenance"][0].get("locator"), ex.get("label_confidence"))
            for ex in rows]
        assert all(p["reason"] for p in prov) if split == "rejected" else not any(p["reason"] for p in prov)
    train = curate_rows(curated, "train")
    loaded = datasets.load_dataset("json", data_files=str(folder / "train.jsonl"))["train"]
    assert loaded.num_rows == len(train)
    first = loaded[0]
    if fmt == "openai":
        assert first["messages"][-1] == {"role": "assistant", "content": train[0]["output"]}
    elif fmt == "sharegpt":
        assert [t["from"] for t in first["conversations"]] == ["system", "human", "gpt"]
    else:
        assert first["input"] == train[0]["input"] and first["output"] == train[0]["output"]


def test_a_rejected_input_without_an_output_stays_out_of_the_chat_formats_only(curated, tmp_path):
    """A pile input no source labelled is rejected with no output (generate.self_inputs writes such rows): an
    OpenAI line without the assistant's answer is refused by the API, so the JSONL formats leave it out and
    say so; the hf folder keeps it."""
    copy = tmp_path / "copy"
    shutil.copytree(curated.cfg.root, copy, ignore=shutil.ignore_patterns("datasets"))
    ctx = Context(load_config(copy / "taskling.yaml", []), console=Console(stderr=True, quiet=True))
    path = ctx.stage_dir("curate") / "rejected.jsonl"
    rejected = read_jsonl(path)
    chunk = next(ex for ex in curate_rows(ctx, "train") if ex.get("chunks"))
    unlabelled = {"id": "self-1-00000", "input": "json_each walks the elements of an array", "output": None,
                  "label": None, "chunks": chunk["chunks"], "spans": [], "provenance": chunk["provenance"],
                  "source": "pile", "round": 0, "reason": "no label: no source voted"}
    path.write_text(path.read_text(encoding="utf-8") + json.dumps(unlabelled) + "\n", encoding="utf-8")
    info = export_dataset(ctx, "openai", rejected=True)
    lines = read_jsonl(Path(info["dir"]) / "rejected.jsonl")
    assert len(lines) == info["rows"]["rejected"] == len(rejected) and openai_format_errors(lines) == []
    assert info["notes"] == ["1 rejected candidates have no output (inputs no source labelled), which openai "
                             "lines cannot hold; --dataset hf keeps them"]
    hf = datasets.load_dataset(export_dataset(ctx, "hf", rejected=True)["dir"])["rejected"]
    assert hf.num_rows == len(rejected) + 1 and hf.filter(lambda r: r["id"] == "self-1-00000")[0]["output"] is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_llama_factory_entries_name_files_and_columns_that_exist(curated, fmt):
    info = export_dataset(curated, fmt)
    folder = Path(info["dir"])
    entries = json.loads((folder / "dataset_info.json").read_text())
    assert set(entries) == {f"tiny-router_{s}" for s in info["files"]}
    for name, entry in entries.items():
        path = folder / entry["file_name"]
        assert path.is_file()
        row = datasets.load_dataset("parquet" if path.suffix == ".parquet" else "json",
                                    data_files=str(path))["train"][0]
        for column in entry["columns"].values():
            assert column in row, (name, column)
        tags = entry.get("tags")
        if tags:  # sharegpt-style: the roles the file really uses, in the order LLaMA-Factory accepts
            turns = row[entry["columns"]["messages"]]
            assert {t[tags["role_tag"]] for t in turns} == {tags["system_tag"], tags["user_tag"],
                                                              tags["assistant_tag"]}
            assert turns_alternate(turns, tags["role_tag"], tags["user_tag"], tags["assistant_tag"], tags["system_tag"])
            assert all(isinstance(t[tags["content_tag"]], str) for t in turns)
        else:
            assert fmt == "alpaca" and "formatting" not in entry  # alpaca is LLaMA-Factory's default


def test_bad_requests_are_one_line_errors(curated, tmp_path):
    with pytest.raises(TasklingError, match="use one of openai, sharegpt, alpaca, hf"):
        export_dataset(curated, "csv")
    with pytest.raises(TasklingError, match="curate has not finished for round 3"):
        export_dataset(curated, "openai", round=3)
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(TasklingError, match="not a taskling dataset folder"):
        export_dataset(curated, "openai", out=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    again = tmp_path / "again"
    export_dataset(curated, "alpaca", out=again)
    assert export_dataset(curated, "openai", out=again)["format"] == "openai"  # a former export is replaced
    assert json.loads((again / "dataset.json").read_text())["format"] == "openai"
