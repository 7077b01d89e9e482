"""curate: validation with reasons, exact dedup, split by source unit, decontamination."""
from __future__ import annotations

import json

import pytest
from rich.console import Console

from taskling.config import load_config
from taskling.stages import curate
from taskling.workspace import Context, atomic_write_json, fingerprint, write_jsonl


def example(i: int, text: str, label: str, path: str, chunk: str | None = None) -> dict:
    return {"id": f"gen-{i:05d}", "input": text, "output": label, "label": label,
            "provenance": [{"chunk": chunk or f"{path}:{i}", "path": path}]}


def fake_generate(ctx: Context, rows: list[dict]) -> None:
    out = ctx.stage_dir("generate")
    write_jsonl(out / "examples.jsonl", rows)
    atomic_write_json(out / "manifest.json", {"fingerprint": fingerprint(rows), "digest": "x"})


def test_split_by_document_when_documents_allow(workspace):
    cfg = load_config(workspace)
    rows = [example(i, f"question {i} about things", ["sqlite", "node"][i % 2], f"doc{i % 10}.md")
            for i in range(100)]
    train, evals, info = curate.split(cfg, rows)
    assert info["unit"] == "document" and evals and train
    assert not {e["provenance"][0]["path"] for e in evals} & {t["provenance"][0]["path"] for t in train}
    assert 10 <= len(evals) <= 35


def test_split_falls_back_to_chunks_when_each_label_is_one_document(workspace):
    cfg = load_config(workspace)
    labels = ["sqlite", "node", "python"]
    rows = [example(i, f"question {i}", labels[i % 3], f"{labels[i % 3]}.md", chunk=f"c{i % 15}")
            for i in range(60)]
    train, evals, info = curate.split(cfg, rows)
    assert info["unit"] == "chunk" and "fallback_reason" in info
    assert evals and info["label_coverage"] in ("2/3", "3/3")
    assert not {e["provenance"][0]["chunk"] for e in evals} & {t["provenance"][0]["chunk"] for t in train}


def test_curate_rejects_with_reasons_dedups_and_decontaminates(workspace):
    cfg = load_config(workspace)
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    gold_input = json.loads((workspace.parent / "gold.jsonl").read_text().splitlines()[0])["input"]
    rows = [example(i, f"How do I use feature number {i} of this manual?", ["sqlite", "node", "python"][i % 3],
                    f"d{i % 6}.md") for i in range(30)]
    rows += [example(100, "too short", "sqlite", "d1.md"),
             example(101, rows[0]["input"].upper() + "!!", "sqlite", "d1.md"),      # duplicate after normalising
             example(102, "How do I do something with the labels here?", "unknown", "d2.md"),
             example(103, "Here is a question about SQLite json paths", "sqlite", "d2.md"),
             example(104, gold_input, "sqlite", "d3.md")]
    fake_generate(ctx, rows)
    m = curate.run(cfg, ctx)
    reasons = m["rejections"]
    assert reasons["duplicate"] == 1
    assert reasons["label not in the label set"] == 1
    assert any("shorter" in r for r in reasons) and any("answer" in r for r in reasons)
    out = ctx.stage_dir("curate")
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert gold_input not in {t["input"] for t in train}
    assert len(train) + len(evals) + m["counts"]["rejected"] == len(rows)
    assert m["funnel"][0]["count"] == len(rows) and m["split"]["unit"] in ("document", "chunk")
    # Same inputs, same settings: skipped.
    assert curate.run(cfg, Context(cfg, console=Console(stderr=True, quiet=True)))["skipped"] is True


def test_curate_with_nothing_left_says_what_to_do(workspace):
    cfg = load_config(workspace)
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    fake_generate(ctx, [example(i, "hi", "sqlite", "a.md") for i in range(5)])
    from taskling.errors import TasklingError

    with pytest.raises(TasklingError, match="no training example survived"):
        curate.run(cfg, ctx)
