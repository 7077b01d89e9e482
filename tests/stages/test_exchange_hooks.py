"""The two call sites issue 25 hands to the stages: curate takes seed_data: as human training examples
(never gold), and export's model card opens with Hugging Face front matter matching report.json."""
from __future__ import annotations

import json
import shutil

from huggingface_hub import ModelCard
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.workspace import Context, read_jsonl
from taskling.curation import seed

QUIET = {"console": Console(stderr=True, quiet=True)}


def test_seed_data_joins_training_as_human_examples_and_never_as_gold(tmp_path, tiny_model_dir):
    from taskling.stages import curate, generate, ingest

    (tmp_path / "mine.csv").write_text(
        "text,team\nHow do I walk a JSON array with json_each?,sqlite\n"
        "How do I stream a big file with createReadStream?,node\n"
        "How do I parse a date string with strptime?,python\n"
        "How do I hash data with createHash in node crypto?,node\n", encoding="utf-8")  # the last is in gold
    path = write_workspace(tmp_path, tiny_model_dir, seed_data=[{"path": "mine.csv", "input": "text",
                                                                  "output": "team"}])
    ctx = Context(load_config(path, []), **QUIET)
    for stage in (ingest, generate, curate):
        stage.run(ctx)
    train = read_jsonl(ctx.stage_dir("curate") / "train.jsonl")
    human = [ex for ex in train if ex.get("source") == seed.HUMAN]
    gold = {seed.norm(g["input"]) for g in read_jsonl(tmp_path / "gold.jsonl")}
    assert len(human) == 3 and not gold & {seed.norm(ex["input"]) for ex in human}
    assert not [ex for ex in read_jsonl(ctx.stage_dir("curate") / "eval.jsonl") if ex.get("source") == seed.HUMAN]
    with open(tmp_path / "mine.csv", "a", encoding="utf-8") as f:  # the file is in curate's fingerprint
        f.write("How do I format a timedelta?,python\n")
    assert not curate.run(ctx).skipped


def test_the_exported_model_card_has_front_matter_matching_report_json(ui_workspace, tmp_path):
    from taskling.report import build as report
    from taskling.stages import export

    root = tmp_path / "ws"
    shutil.copytree(ui_workspace.parent, root)
    ctx = Context(load_config(root / "taskling.yaml", []), **QUIET)
    export.run(ctx)
    report.write(ctx)
    card = ModelCard((ctx.stage_dir("export") / "README.md").read_text())
    want = json.loads((ctx.run_dir / "report.json").read_text())["results"]
    got = {(r.dataset_split, r.metric_type): r for r in card.data.eval_results}
    assert {s for s, _ in got} == set(want)
    for (split, name), r in got.items():
        assert r.metric_value == want[split]["student"]["metrics"][name]
        assert [r.metric_args["ci_low"], r.metric_args["ci_high"]] == want[split]["student"]["cis"][name]
