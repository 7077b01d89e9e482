"""label.auto through the stages on the tiny workspace with real MiniLM embeddings: pile chunks
labelled by the automatic sources become training inputs and a label-model dev set that picks the
training step; the label model is scored on gold as a system of its own; self-training in a later
round labels only chunks no eval, dev or gold item came from; and the dev set picks the better step
in a planted case."""
from __future__ import annotations

import json

import pytest
from rich.console import Console

from conftest import write_workspace
from taskling import loop
from taskling.core.config import load_config
from taskling.core.manifests import CurateManifest, EvaluateManifest, TrainManifest
from taskling.core.workspace import Context, read_jsonl, write_jsonl
from taskling.curation import weak
from taskling.stages import curate, evaluate, generate, ingest, train
from taskling.student.train import Stopper

QUIET = Console(stderr=True, quiet=True)
AUTO = dict(ingest__embed=True, ingest__chunk_tokens=200, budget__examples=24, label__auto__dev_items=60,
            train__steps=8, train__eval_every=2, train__max_seq_len=384, evaluate__models=["student", "base"])


WORDS = {
    "sqlite": "json_extract json_set json_each fts5 bm25 snippet highlight match virtual table column query index "
              "trigger pragma vacuum collation sqlite".split(),
    "node": "readFile writeFile createHash randomBytes stream buffer callback promise directory watch cipher hmac "
            "pipe node npm".split(),
    "python": "datetime timedelta strftime strptime timezone tzinfo cursor connect execute row_factory commit "
              "rollback python date".split(),
}
FILLER = "the a of to and in for with how when you it this that can use your from".split()


def more_documents(root, per_label: int = 4, paragraphs: int = 24) -> None:
    """Documents of one label each, every paragraph its own mix of that label's words: a pile of a
    couple of hundred distinct chunks."""
    import random

    rng = random.Random(7)
    for lab, words in WORDS.items():
        for d in range(per_label):
            paras = [" ".join(rng.choice(words if rng.random() < 0.45 else FILLER) for _ in range(36)) + "."
                     for _ in range(paragraphs)]
            (root / "docs" / f"{lab}-{d}.txt").write_text("\n\n".join(paras), encoding="utf-8")


def auto_workspace(root, model_dir, **extra):
    path = write_workspace(root, model_dir, **{**AUTO, **extra})
    more_documents(root)
    return path


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("auto")
    path = auto_workspace(root, tiny_model_dir)
    ctx = Context(load_config(path, []), console=QUIET)
    for stage in (ingest, generate, curate, train, evaluate):
        stage.run(ctx)
    return root, ctx


def test_pile_inputs_are_labelled_and_make_a_dev_set_that_picks_the_step(auto_run):
    root, ctx = auto_run
    made = read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")
    pile = [e for e in made if e.get("source") == "pile"]
    assert len(pile) >= 40 and any(e["label"] is None for e in pile)  # half come with no pool label
    cur = CurateManifest.read(ctx.stage_dir("curate"))
    lm = cur.label_model
    assert {"embedding", "knn", "retrieval"} <= set(lm.sources) and any(s.startswith("mined-") for s in lm.sources)
    assert lm.fit["settings"]["class_balance"] == "uniform"  # the default with the automatic sources
    dev = read_jsonl(ctx.stage_dir("curate") / "dev.jsonl")
    train_ids = {e["id"] for e in read_jsonl(ctx.stage_dir("curate") / "train.jsonl")}
    assert 20 <= len(dev) <= 60 and all(e["source"] == "pile" and e["label"] in ctx.cfg.task.labels for e in dev)
    assert not train_ids & {e["id"] for e in dev}
    gold = {g["input"] for g in read_jsonl(root / "gold.jsonl")}
    assert not gold & {e["input"] for e in dev}
    # the mined rules are in a file a person can promote, with their estimated accuracy
    text = (ctx.stage_dir("curate") / "mined_rules.yaml").read_text()
    assert "promote" in text and "rules:" in text and "estimated accuracy" in text
    # the label model's own answers on gold: one per gold item
    assert len(read_jsonl(ctx.stage_dir("curate") / "label_model.jsonl")) == len(gold)


def test_taskling_rules_lists_the_mined_rules_and_promotes_an_edited_one(auto_run, tmp_path):
    """`taskling rules show --json` gives each mined rule with the label model's estimate; `taskling rules
    promote FILE --only NAME` copies the edited rule into another task file, which then loads with it."""
    import shutil

    import yaml
    from typer.testing import CliRunner

    from taskling.cli import app

    root, ctx = auto_run
    shown = CliRunner().invoke(app, ["rules", "show", "--config", str(root / "taskling.yaml"), "--json"])
    assert shown.exit_code == 0, shown.output
    res = json.loads(shown.stdout)
    lm = CurateManifest.read(ctx.stage_dir("curate")).label_model
    assert [r["name"] for r in res["rules"]] == [r["name"] for r in lm.mined_rules]
    first = res["rules"][0]
    assert first["name"].startswith("mined-") and first["label"] in ctx.cfg.task.labels and first["keywords"]
    assert first["estimated"] == lm.mined_rules[0]["estimated"]
    # edit a copy of the file (one word only), promote it into a copy of the task file
    edited = tmp_path / "mine.yaml"
    text = (ctx.stage_dir("curate") / "mined_rules.yaml").read_text()
    edited.write_text(text.replace(json.dumps(first["keywords"]), json.dumps(["zebraword"])), encoding="utf-8")
    shutil.copy(root / "taskling.yaml", tmp_path / "taskling.yaml")
    done = CliRunner().invoke(app, ["rules", "promote", str(edited), "--only", first["name"],
                                    "--config", str(tmp_path / "taskling.yaml"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["promoted"] == [first["name"]]
    rules = yaml.safe_load((tmp_path / "taskling.yaml").read_text())["label"]["rules"]
    assert rules == [{"name": first["name"], "keywords": ["zebraword"], "label": first["label"]}]
    assert [r.keywords for r in load_config(tmp_path / "taskling.yaml", []).label.rules] == [["zebraword"]]
    missing = CliRunner().invoke(app, ["rules", "promote", str(edited), "--only", "nope",
                                       "--config", str(tmp_path / "taskling.yaml")])
    assert missing.exit_code != 0 and "no rule named 'nope'" in missing.output


def test_the_label_model_is_a_system_and_the_report_names_the_strongest(auto_run):
    root, ctx = auto_run
    ev = EvaluateManifest.read(ctx.stage_dir("evaluate"))
    assert "label-model" in ev.results["gold"] and "label-model" not in ev.results.get("eval", {})
    r = ev.results["gold"]["label-model"]
    assert r.n == 6 and r.metric is not None and r.ci_low <= r.metric <= r.ci_high
    assert ev.results["gold"]["student"].metric == ev.results["gold"]["student-constrained"].metric  # scored, as served
    from taskling.report import build as report

    rep = report.build(ctx)
    per = rep["results"]["gold"]
    best = report.strongest_other(per)
    assert best in per and not best.startswith("student")
    assert best in rep["summary"]
    if per["student"]["ci_high"] < per[best]["ci_low"]:
        assert "loses to" in rep["summary"]


def test_selection_uses_the_dev_set_and_records_its_curve(auto_run):
    _, ctx = auto_run
    t = TrainManifest.read(ctx.stage_dir("train"))
    sel = t.selection
    assert sel["set"] == "dev" and sel["n"] >= 20 and "never gold" in sel["rule"]
    assert [c["step"] for c in sel["curve"]] == [2, 4, 6, 8]
    best = max(sel["curve"], key=lambda c: (c["exact"], -c["loss"]))
    assert sel["kept_step"] == t.best_step == best["step"]


def test_selection_picks_the_better_checkpoint_in_a_planted_case():
    """Loss keeps falling while the dev answers peak at step 20 (overconfident later): the step kept is 20,
    not the lowest-loss one; on a flat answer curve the lower loss decides."""
    s = Stopper(patience=None)
    for step, exact, loss in ((10, 0.55, 0.9), (20, 0.81, 0.7), (30, 0.74, 0.5), (40, 0.70, 0.4)):
        s.update(step, loss, exact)
    assert s.best_step == 20
    flat = Stopper(patience=None)
    for step, loss in ((10, 0.9), (20, 0.7), (30, 0.8)):
        flat.update(step, loss, 0.5)
    assert flat.best_step == 20


def test_self_training_labels_only_chunks_no_eval_dev_or_gold_item_came_from(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(weak, "SELF_CONFIDENCE", 0.0)  # the tiny random student is never sure: let it vote
    # 40 pile inputs in round 0 leave chunks of the pile that no example came from, for the student to label
    path = auto_workspace(tmp_path, tiny_model_dir, loop__rounds=2, loop__probe_chunks=4, generate__pile_inputs=40,
                          label__auto__self_training_chunks=12, label__auto__dev_items=20, budget__examples=40)
    loop.run(Context(load_config(path, []), console=QUIET))
    run = tmp_path / "runs" / "tiny-router"
    labelled = read_jsonl(run / "round-1" / "analyse" / "self_labels.jsonl")
    assert labelled and all(0 < r["confidence"] <= 1 for r in labelled)
    chunks = {r["chunk"] for r in labelled}
    held = [e for s in ("eval.jsonl", "dev.jsonl") for e in read_jsonl(run / "round-0" / "curate" / s)]
    used = {k for e in read_jsonl(run / "round-0" / "generate" / "examples.jsonl") for k in e.get("chunks", [])}
    assert not chunks & {k for e in held for k in e.get("chunks", [])} and not chunks & used
    first = CurateManifest.read(run / "round-0" / "curate")
    if first.split.unit == "document":
        assert not {e["provenance"][0]["path"] for e in held} & {c.split("#")[0] for c in chunks}
    selfs = [e for e in read_jsonl(run / "round-1" / "generate" / "examples.jsonl") if e["id"].startswith("self-")]
    assert {e["chunks"][0] for e in selfs} == chunks
    gold = {g["input"] for g in read_jsonl(tmp_path / "gold.jsonl")}
    assert not gold & {e["input"] for e in selfs}
    assert "self" in CurateManifest.read(run / "round-1" / "curate").label_model.sources
    # the eval set is round 0's, untouched; no self-labelled chunk is in it
    assert read_jsonl(run / "round-1" / "curate" / "eval.jsonl") == read_jsonl(run / "round-0" / "curate" / "eval.jsonl")
    assert not {e["id"] for e in read_jsonl(run / "round-1" / "curate" / "eval.jsonl")} & {e["id"] for e in selfs}
