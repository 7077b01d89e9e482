"""The model card's Hugging Face front matter: parsed by huggingface_hub's own ModelCard, its model-index
holding the student's figures with their intervals exactly as report.json has them."""
from __future__ import annotations

import json

from huggingface_hub import ModelCard
from rich.console import Console

from taskling.core.config import load_config
from taskling.core.workspace import Context
from taskling.report import card


def test_front_matter_parses_and_its_metrics_match_report_json(ui_workspace):
    cfg = load_config(ui_workspace, ["hub.tags=[support, routing]", "hub.dataset=acme/tiny-router-data"])
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    text = card.front_matter(ctx, gguf=True) + "# tiny-router\n\nA card body.\n"
    meta, body = card.parse(text)
    assert body.startswith("# tiny-router")
    hub = ModelCard(text).data
    assert hub.pipeline_tag == "text-generation" and hub.library_name == "transformers"
    assert hub.license == "other"  # a local base with no known licence and no hub.license
    assert {"taskling", "classify", "text-classification", "lora", "gguf", "support", "routing"} <= set(hub.tags)
    assert hub.datasets == ["acme/tiny-router-data"]
    report = json.loads((ctx.run_dir / "report.json").read_text())
    got = {(r.dataset_split, r.metric_type): r for r in hub.eval_results}
    want = report["results"]
    assert {s for s, _ in got} == set(want) == {"eval", "gold"}
    for (split, name), r in got.items():
        student = want[split]["student"]
        assert r.metric_value == student["metrics"][name]
        assert [r.metric_args["ci_low"], r.metric_args["ci_high"]] == student["cis"][name]
        assert r.metric_args["n"] == student["n"] and r.dataset_type == "acme/tiny-router-data"
        assert r.task_type == "text-classification"
    headline = report["task"]["metric"]
    for split in want:
        r = got[(split, headline)]
        assert (r.metric_value, r.metric_args["ci_low"], r.metric_args["ci_high"]) == (
            want[split]["student"]["metric"], want[split]["student"]["ci_low"], want[split]["student"]["ci_high"])


def test_an_embedded_base_gives_its_hub_id_and_licence(ui_workspace):
    cfg = load_config(ui_workspace, ["student.model=smollm2-135m-instruct"])
    hub = ModelCard(card.front_matter(Context(cfg, console=Console(stderr=True, quiet=True)))).data
    assert hub.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and hub.license == "apache-2.0"
    cfg = load_config(ui_workspace, ["student.model=smollm2-135m-instruct", "hub.license=mit"])
    assert card.meta(Context(cfg, console=Console(stderr=True, quiet=True)))["license"] == "mit"
    assert card.parse("no front matter") == ({}, "no front matter")
