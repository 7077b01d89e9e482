"""Weak supervision in curate (weak.py, label:): the asked label, keyword and metadata rules and
an LLM labeller vote on every candidate; the label model relabels planted wrong labels, drops
the unsure, weights the rest, measures every source on gold, and the report shows it all."""
from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.report import build as report
from taskling.core.config import load_config
from taskling.curation import auto
from taskling.stages import curate, generate, ingest
from taskling.core.workspace import Context, read_jsonl, write_jsonl

QUIET = Console(stderr=True, quiet=True)
TRUTH = {"docs/sqlite.md": "sqlite", "docs/node.html": "node", "docs/python.txt": "python"}
RULES = [{"name": "kw-sqlite", "keywords": ["json_extract", "fts5", "bm25", "json_set", "json_each", "snippet", "match"],
          "label": "sqlite"},
         {"name": "kw-node", "keywords": ["readFile", "writeFile", "createHash", "randomBytes", "createReadStream",
                                          "crypto", "streams"], "label": "node"},
         {"name": "kw-python", "keywords": ["datetime", "strftime", "strptime", "timedelta", "row_factory", "cursor"],
          "label": "python"}]


def truth(ex: dict) -> str:
    return TRUTH[ex["provenance"][0]["path"]]


def plant_wrong_labels(ctx: Context, every: int = 3) -> dict[str, str]:
    """Flip the asked label of every `every`-th generated example (as a confused teacher would);
    returns id -> the true label (from the document it cites)."""
    out = ctx.stage_dir("generate")
    rows = read_jsonl(out / "examples.jsonl")
    labels = ["sqlite", "node", "python"]
    for i, ex in enumerate(rows):
        if i % every == 0:
            wrong = labels[(labels.index(ex["label"]) + 1) % 3]
            ex.update(label=wrong, output=wrong, arm=[ex["arm"][0], wrong])
    write_jsonl(out / "examples.jsonl", rows)
    return {ex["id"]: truth(ex) for ex in rows}


@pytest.fixture
def weak_ws(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=60,
                           label__rules=RULES, label__teachers=[{"name": "echo", "prompt": "zeroshot"}],
                           label__min_confidence=0.6, label__auto=False)  # the hand-written sources alone
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    ingest.run(ctx)
    generate.run(ctx)
    return cfg, ctx


def kept(ctx: Context) -> list[dict]:
    return [e for n in ("train.jsonl", "eval.jsonl") for e in read_jsonl(ctx.stage_dir("curate") / n)
            if e.get("source") != "task example"]


def test_the_label_model_fixes_planted_wrong_labels_and_measures_every_source(weak_ws):
    cfg, ctx = weak_ws
    true = plant_wrong_labels(ctx)
    asked_right = sum(ex["label"] == true[ex["id"]] for ex in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl"))
    man = curate.run(Context(cfg, console=QUIET, force=True))
    lm = man.label_model
    assert lm.sources == ["asked", "kw-sqlite", "kw-node", "kw-python", "echo"]
    assert lm.relabelled > 0 and lm.gold_items == 6
    rows = kept(ctx)
    right = sum(ex["label"] == true[ex["id"]] for ex in rows)
    n_gen = len(true)
    # the labels that reach training are right far more often than the asked ones were
    assert right / len(rows) > asked_right / n_gen + 0.15, (right, len(rows), asked_right, n_gen)
    for ex in rows:
        assert ex["output"] == ex["label"] and 0.6 <= ex["weight"] <= 1.0
        assert set(ex["label_votes"]) == set(lm.sources)
    rejected = read_jsonl(ctx.stage_dir("curate") / "rejected.jsonl")
    unsure = [r for r in rejected if r["reason"].startswith("label model unsure")]
    assert len(unsure) == lm.dropped_unsure
    # every source measured on the gold items it voted on (the keyword rules cover some of them)
    m = lm.measured
    assert m["asked"]["voted"] == 0 and m["kw-sqlite"]["voted"] >= 1 and m["echo"]["voted"] == 6
    assert m["kw-sqlite"]["accuracy"] == 1.0
    fit = {s["name"]: s for s in lm.fit["stats"]}
    assert fit["asked"]["accuracy"] < fit["kw-sqlite"]["accuracy"]  # the planted flips are seen as the asked source's errors
    # the report and its HTML show the sources
    rep = report.build(ctx)
    names = [r["source"] for r in rep["label_sources"]["sources"]]
    assert names == lm.sources
    from taskling.report.html import render_html

    page = render_html(rep)
    assert "Label sources" in page and "kw-python" in page


def test_the_class_prior_is_learned_or_fixed_uniform_as_set(weak_ws):
    cfg, ctx = weak_ws
    learned = curate.run(Context(cfg, console=QUIET, force=True)).label_model.fit  # auto, hand-written sources
    cfg2 = load_config(cfg.root / "taskling.yaml", ["label.class_balance=uniform"])
    fixed = curate.run(Context(cfg2, console=QUIET)).label_model.fit  # a setting of curate: it runs again
    assert learned["settings"]["class_balance"] == "learn" and fixed["settings"]["class_balance"] == "uniform"
    on = load_config(cfg.root / "taskling.yaml", ["label.auto=true", "ingest.embed=true"])
    assert auto.class_balance(on) == "uniform" and auto.class_balance(cfg) == "learn"  # auto: uniform with label.auto
    assert auto.class_balance(load_config(cfg.root / "taskling.yaml", ["label.auto=true", "ingest.embed=true",
                                                                       "label.class_balance=learn"])) == "learn"
    assert max(learned["prior"].values()) > 0.5  # this pile is mostly sqlite, and no item is python
    assert all(abs(p - 1 / 3) < 1e-4 for p in fixed["prior"].values())


HUMAN_ITEMS = [("How do I read one value with json_extract?", "sqlite"),
               ("How do I rank FTS5 MATCH results by bm25?", "sqlite"),
               ("How do I walk an array with json_each?", "sqlite"),
               ("How do I read a whole file with readFile?", "node"),
               ("How do I hash a string with createHash in crypto?", "node"),
               ("How do I write a file with writeFile?", "node"),
               ("How do I format a date with strftime?", "python"),
               ("How do I add a day with timedelta?", "python"),
               ("How do I get rows as dicts with row_factory?", "python")]


def test_the_users_labelled_items_are_known_truth_for_the_label_model(tmp_path, tiny_model_dir):
    """seed_data items: every source votes on them, the label model pins them to their label and
    measures each source on them; they train with their own label and are never relabelled."""
    rows = "text,team\n" + "".join(f'"{t}",{lab}\n' for t, lab in HUMAN_ITEMS)
    (tmp_path / "items.csv").write_text(rows, encoding="utf-8")
    bad = {"name": "kw-how", "keywords": ["how"], "label": "python"}  # fires on every question
    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=30, label__rules=RULES + [bad],
                           label__auto=False, seed_data=[{"path": "items.csv", "input": "text", "output": "team"}])
    ctx = Context(load_config(path, []), console=QUIET)
    ingest.run(ctx)
    generate.run(ctx)
    lm = curate.run(ctx).label_model
    assert "human" in lm.sources and lm.human_items == len(HUMAN_ITEMS)
    assert lm.fit["gold"] == len(HUMAN_ITEMS)  # pinned as known truth in every EM step (gold.jsonl is not)
    on_human = lm.measured_on_human
    assert "human" not in on_human
    truth = dict(HUMAN_ITEMS)
    for rule in RULES + [bad]:  # each rule's accuracy on the items, counted here from the keywords
        fired = [t for t in truth if any(k.lower() in t.lower() for k in rule["keywords"])]
        right = sum(truth[t] == rule["label"] for t in fired)
        assert on_human[rule["name"]]["voted"] == len(fired), rule["name"]
        assert on_human[rule["name"]]["accuracy"] == (round(right / len(fired), 4) if fired else None)
    assert on_human["kw-how"]["accuracy"] == round(3 / 9, 4)
    stats = {st["name"]: st for st in lm.fit["stats"]}
    assert stats["kw-how"]["accuracy"] < stats["kw-sqlite"]["accuracy"]
    train = read_jsonl(ctx.stage_dir("curate") / "train.jsonl")
    mine = [ex for ex in train if ex.get("source") == "human"]
    # each with its own label (one may leave training as too close to a gold question: decontamination)
    assert {(ex["input"], ex["label"]) for ex in mine} <= set(HUMAN_ITEMS) and len(mine) >= len(HUMAN_ITEMS) - 2
    assert all("relabelled_from" not in ex for ex in mine)
    voted_on = {r["id"] for r in read_jsonl(ctx.stage_dir("curate") / "candidate_votes.jsonl")}
    assert not voted_on & {ex["id"] for ex in mine}  # the candidates' votes file holds generated items only
    rep = report.build(ctx)  # the report shows each source on the user's items
    rows = {r["source"]: r for r in rep["label_sources"]["sources"]}
    assert rep["label_sources"]["human_items"] == len(HUMAN_ITEMS)
    assert rows["kw-how"]["on_human"] == on_human["kw-how"]["accuracy"] and rows["kw-how"]["on_human_n"] == 9
    from taskling.report.html import render_html

    page = render_html(rep)
    assert "measured on your labelled items" in page
    assert re.search(r"<code>kw-how</code></td><td[^>]*>0\.33</td><td[^>]*>9<", page)


def test_weights_reach_training_and_majority_is_a_choice(weak_ws):
    cfg, ctx = weak_ws
    cfg2 = load_config(cfg.root / "taskling.yaml", ["label.model=majority", "label.weight=false",
                                                   "label.min_confidence=0"])
    man = curate.run(Context(cfg2, console=QUIET, force=True))
    assert man.label_model.model == "majority" and man.label_model.fit is None
    assert all("weight" not in ex for ex in kept(ctx)) and man.label_model.dropped_unsure == 0
    # the settings are part of curate's fingerprint: the default label model runs again
    man = curate.run(Context(cfg, console=QUIET))
    assert man.label_model.model == "dawid-skene"
    assert any(ex.get("weight", 1.0) < 1.0 for ex in kept(ctx))


def test_a_folder_rule_votes_from_the_source_path_and_abstains_on_gold(weak_ws):
    cfg, ctx = weak_ws
    rule = {"name": "by-file", "field": "path", "regex": r"docs/(\w+)\.", "map": {"sqlite": "sqlite", "node": "node",
                                                                                "python": "python"}}
    cfg2 = load_config(cfg.root / "taskling.yaml", [f"label.rules={json.dumps([rule])}", "label.teachers=[]"])
    plant_wrong_labels(ctx)
    man = curate.run(Context(cfg2, console=QUIET, force=True))
    lm = man.label_model
    assert lm.measured["by-file"]["voted"] == 0  # gold items have no source document
    fit = {s["name"]: s for s in lm.fit["stats"]}
    assert fit["by-file"]["coverage"] > 0.5


def test_label_sources_need_a_classify_task_and_known_labels(tmp_path, tiny_model_dir):
    from taskling.core.errors import TasklingError

    path = write_workspace(tmp_path, tiny_model_dir, label__rules=[{"name": "r", "keywords": ["x"], "label": "sqlit"}])
    with pytest.raises(TasklingError, match="did you mean 'sqlite'"):
        load_config(path)
    path = write_workspace(tmp_path, tiny_model_dir, label__rules=[{"name": "r", "regex": "(", "label": "sqlite"}])
    with pytest.raises(TasklingError, match="does not compile"):
        load_config(path)
    path = write_workspace(tmp_path, tiny_model_dir, label__rules=[{"name": "r", "keywords": ["x"], "regex": "y",
                                                                   "label": "sqlite"}])
    with pytest.raises(TasklingError, match="exactly one of keywords or regex"):
        load_config(path)


def test_pile_chunks_become_inputs_that_the_label_model_labels(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir, generate__pile_inputs=12, generate__pool_per_label=20,
                           label__rules=RULES, label__auto=False)  # without label.auto: every input from a pool
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    ingest.run(ctx)
    man = generate.run(ctx)
    made = read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")
    pile = [e for e in made if e.get("source") == "pile"]
    # at most 12: as many distinct chunks as the label pools of this tiny pile hold
    assert 8 <= len(pile) == man.pile_inputs <= 12 and len({e["chunks"][0] for e in pile}) == len(pile)
    from taskling.data.pile import Pile

    with Pile(ctx.ws.pile_db) as p:
        for e in pile:
            assert e["input"] == " ".join(p.chunk(e["chunks"][0]).text.split()[:auto.pile_input_words(cfg)])
            assert e["label"] == e["arm"][1] and e["provenance"][0]["chunk"] == e["chunks"][0]
    pooled = [e for e in pile if e["arm"][1] is not None]  # the rest: short chunks in no pool, no guess
    assert {e["arm"][1] for e in pooled} == {"sqlite", "node", "python"} and len(pooled) >= 8  # dealt over the arms
    lm = curate.run(ctx).label_model
    assert lm.sources[:2] == ["asked", "retrieved"]
    fit = {s["name"]: s for s in lm.fit["stats"]}
    assert 6 <= fit["retrieved"]["votes"] <= len(pile)  # the pile inputs that passed validation
    # the chunk's own text is real documentation: the keyword rules fire on most of them, and rightly
    from taskling.curation import rules

    said = rules.votes(rules.compile_rules(cfg.label.rules, list(cfg.task.labels)), pile)
    fired = [(next(v for v in row.values() if v), truth(e)) for row, e in zip(said, pile) if any(row.values())]
    assert len(fired) >= len(pile) // 2 and sum(a == b for a, b in fired) >= 0.8 * len(fired)
    assert any(e.get("source") == "pile" and "label_votes" in e for e in kept(ctx))


@pytest.mark.parametrize("example_words, short_taken", [(8, True), (30, False)])
def test_one_line_chunks_become_inputs_when_the_tasks_inputs_are_as_short(tmp_path, tiny_model_dir,
                                                                          example_words, short_taken):
    """A pile of one-line items (9-word chunks) feeds pile inputs when the task's examples are that
    short, and not when they are long (a 9-word chunk then says too little to be an input)."""
    from taskling import tasks

    examples = [{"input": " ".join(["word"] * (example_words - 1) + [f"q{i}?"]), "output": lab}
                for i, lab in enumerate(["sqlite", "node", "python"])]
    path = write_workspace(tmp_path, tiny_model_dir, generate__pile_inputs=200, label__rules=RULES,
                           label__auto=False, task__examples=examples)
    for i in range(40):  # one 9-word item per file: 40 short chunks
        (tmp_path / "docs" / f"pkg-{i:02d}.txt").write_text(f"pkg{i}: a small tool number {i} for the shell\n")
    cfg = load_config(path, [])
    assert tasks.chunk_floor(cfg.task) == min(example_words, tasks.CHUNK_WORDS)
    ctx = Context(cfg, console=QUIET)
    ingest.run(ctx)
    made = read_jsonl(ctx.stage_dir("generate") / "examples.jsonl") if generate.run(ctx) else []
    short = [e for e in made if e.get("source") == "pile" and e["input"].startswith("pkg")]
    assert bool(short) is short_taken
    if short_taken:  # each one-liner, whole (the pools' chunks have 20 words or more)
        assert len(short) == 40 and all(len(e["input"].split()) == 9 for e in short)


def test_the_chunk_floor_follows_the_median_example_input():
    from taskling import tasks
    from taskling.core.tasktype import TaskCfg

    def task(*lengths):
        return TaskCfg.model_validate({"name": "t", "type": "classify", "description": "d", "labels": {"a": "", "b": ""},
                                       "examples": [{"input": " ".join(["w"] * n), "output": "a"} for n in lengths]})
    assert tasks.chunk_floor(task()) == tasks.CHUNK_WORDS == 20  # no example: the general floor
    assert tasks.chunk_floor(task(8, 3, 9)) == 8                  # the median, not the mean or the shortest
    assert tasks.chunk_floor(task(60, 60)) == 20                  # long inputs: never above the general floor
    assert tasks.chunk_floor(task(2, 2, 3)) == 5                  # never below five words


def test_the_ui_runs_page_shows_the_label_sources(weak_ws, browser):
    from taskling.ui import start

    cfg, ctx = weak_ws
    curate.run(ctx)
    report.write(ctx)
    server, url, _ = start(ctx)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/#/runs")
        page.wait_for_selector("#run-body h4:has-text('Label sources')")
        body = page.inner_text("#run-body")
        page.close()
    finally:
        server.should_exit = True
    for name in ("asked", "kw-sqlite", "kw-node", "kw-python", "echo"):
        assert name in body
    assert "est. sqlite" in body and errors == []


def test_label_conditioned_generation_gives_the_label_it_asked_for(tmp_path, tiny_model_dir):
    """The teacher is asked to write an input for a label (never to pick one); the example's label
    is that label, whatever the teacher's text says."""
    from taskling.teacher.backends.scripted import set_script

    asked: list[str] = []

    def teacher(messages: list[dict]) -> str:
        text = messages[-1]["content"]
        m = re.search(r"Write a developer question about (.*?), that this part", text)
        assert m, text  # a generation request names the label's description...
        assert "Answer with exactly one label" not in json.dumps(messages)  # ...and never asks for a label
        asked.append(m.group(1))
        return "Developer question: which python module would you use for this, node or sqlite?"

    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=12)
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    ingest.run(ctx)
    set_script(teacher)
    try:
        generate.run(ctx)
    finally:
        set_script(None)
    made = [e for e in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl") if e.get("source") != "pile"]
    descriptions = {v: k for k, v in cfg.task.labels.items()}
    assert len(made) >= 10 and len(asked) >= len(made)
    assert {descriptions[a] for a in asked} == set(cfg.task.labels)  # every label was asked for
    for ex in made:  # the text names three labels; the example keeps the one it was written for
        assert ex["label"] == ex["output"] == ex["arm"][1]
