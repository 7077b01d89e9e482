"""curate: validation with reasons, exact dedup, split by source unit, decontamination."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from taskling.core.config import load_config
from taskling.core.manifests import GenerateCounts, GenerateManifest
from taskling.core.workspace import Context, atomic_write_json, fingerprint, read_jsonl, write_jsonl
from taskling.curation.split import SPLIT_UNITS, split
from taskling.stages import curate


def example(i: int, text: str, label: str, path: str, chunk: str | None = None) -> dict:
    return {"id": f"gen-{i:05d}", "input": text, "output": label, "label": label,
            "provenance": [{"chunk": chunk or f"{path}:{i}", "path": path}]}


def fake_generate(ctx: Context, rows: list[dict]) -> None:
    out = ctx.stage_dir("generate")
    write_jsonl(out / "examples.jsonl", rows)
    m = GenerateManifest(run_id=ctx.run_id, round=ctx.round, fingerprint=fingerprint(rows), settings={}, inputs={},
                         outputs=["examples.jsonl"], digest="x", started="", seconds=0.0, versions={},
                         counts=dict.fromkeys(GenerateCounts.model_fields, 0), rates={}, failures_by_kind={},
                         stopped="planted by the test", examples_by_arm={}, teacher_health={}, jobs_by_arm=[],
                         seeded_examples=0, pool_arms=[], pile_inputs=0, table_examples=0, tables=[], teacher={})
    atomic_write_json(out / "manifest.json", m.on_disk())


def test_split_by_document_when_documents_allow(workspace):
    cfg = load_config(workspace)
    rows = [example(i, f"question {i} about things", ["sqlite", "node"][i % 2], f"doc{i % 10}.md")
            for i in range(100)]
    train, evals, info = split(cfg, rows)
    assert info["unit"] == "document" and evals and train
    assert not {e["provenance"][0]["path"] for e in evals} & {t["provenance"][0]["path"] for t in train}
    assert 10 <= len(evals) <= 35


def test_split_falls_back_to_chunks_when_each_label_is_one_document(workspace):
    cfg = load_config(workspace)
    labels = ["sqlite", "node", "python"]
    rows = [example(i, f"question {i}", labels[i % 3], f"{labels[i % 3]}.md", chunk=f"c{i % 15}")
            for i in range(60)]
    train, evals, info = split(cfg, rows)
    assert info["unit"] == "chunk" and "fallback_reason" in info
    assert evals and info["label_coverage"] in ("2/3", "3/3")
    assert not {e["provenance"][0]["chunk"] for e in evals} & {t["provenance"][0]["chunk"] for t in train}


def ingested(workspace, **sets) -> tuple:
    """The tiny workspace ingested; its config, a quiet context and the pile's chunks."""
    from taskling.data.pile import Pile
    from taskling.stages import ingest

    cfg = load_config(workspace, [f"{k}={v}" for k, v in sets.items()])
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    ingest.run(ctx)
    with Pile(ctx.ws.pile_db) as pile:
        chunks = pile.chunks(unique=True)
    return cfg, ctx, chunks


def cited(i: int, text: str, label: str, chunk, output=None) -> dict:
    return {"id": f"gen-{i:05d}", "input": text, "output": output if output is not None else label, "label": label,
            "chunks": [chunk.key], "provenance": [chunk.provenance()]}


QUESTIONS = {  # label -> questions a developer could ask, grounded in the tiny docs
    "sqlite": ["How does json_extract read a value at a path from a JSON document?",
               "Which function ranks FTS5 MATCH queries, is it bm25?",
               "How can json_set change one key in a stored document?",
               "Can json_each walk an array inside a query?",
               "What does the snippet function show around FTS5 results?"],
    "node": ["How does the node fs module read files with readFile?",
             "Can createReadStream pipe data from a large file?",
             "How does fs.watch notice changes in a folder?",
             "Which crypto call hashes data, createHash?",
             "How are random keys made with randomBytes in node?"],
    "python": ["How does strftime format a datetime in python?",
               "Which function parses text into a datetime, strptime?",
               "How does the sqlite3 module connect and execute SQL?",
               "What does row_factory change about returned rows?",
               "What types does the python datetime module have besides timedelta?"],
}


def generated_kept(out) -> list[dict]:
    """Train and eval examples the teacher wrote (not the task's own examples)."""
    rows = [json.loads(x) for name in ("train.jsonl", "eval.jsonl") for x in (out / name).read_text().splitlines()]
    return [ex for ex in rows if ex.get("source") != "task example"]


def test_curate_rejects_with_reasons_dedups_grounds_and_decontaminates(workspace):
    cfg, ctx, chunks = ingested(workspace, **{"curate.embed": "true", "curate.eval_fraction": "0.2",
                                              "curate.min_grounding": "0.1"})
    by_doc = {}
    for c in chunks:
        by_doc.setdefault(c.path.split("/")[-1].split(".")[0], []).append(c)
    home = {"sqlite": by_doc["sqlite"], "node": by_doc["node"], "python": by_doc["python"]}
    gold = [json.loads(x) for x in (workspace.parent / "gold.jsonl").read_text().splitlines()]
    rows, n = [], 0
    for label, qs in QUESTIONS.items():
        for k, q in enumerate(qs * 2):  # each question twice, on different chunks: variants below
            c = home[label][(k + n) % len(home[label])]
            rows.append(cited(n, q if k < len(qs) else f"{q[:-1]} in version {k}?", label, c))
            n += 1
    c0 = home["sqlite"][0]
    near = {w: next(c for c in chunks if w in c.text and c is not c0) for w in ("json_extract", "timedelta")}
    planted = {
        "short": cited(900, "too short", "sqlite", c0),
        "exact": cited(901, rows[0]["input"].upper() + "!!", "sqlite", c0),
        "label": cited(902, "How do I do something with the labels here?", "unknown", c0),
        "answer": cited(903, "Here is a question about SQLite json paths", "sqlite", c0),
        "gold": cited(904, gold[2]["input"], "node", home["node"][0]),                    # a gold item copied
        "gold sqlite": cited(908, gold[0]["input"], "sqlite", near["json_extract"]),     # ... from each document
        # gold[5], not gold[4]: gold[4]'s cosine to the first python question is 0.950, on the semantic-duplicate
        # threshold, so which filter drops its copy would depend on the CPU's float rounding
        "gold python": cited(909, gold[5]["input"], "python", near["timedelta"]),
        "paraphrase": cited(905, "With node, how can I read a file using readFile?", "node",  # a paraphrase of gold[2]
                            home["node"][1]),
        "ungrounded": cited(906, "Which Kubernetes operator reconciles Helm release objects?", "sqlite", c0),
        "seed copy": cited(907, cfg.task.examples[0].input.lower(), cfg.task.examples[0].output, c0),
    }
    rows += list(planted.values())
    fake_generate(ctx, rows)
    m = curate.run(ctx)
    out = ctx.stage_dir("curate")
    rejected = {r["id"]: r["reason"] for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert rejected["gen-00901"].startswith("exact duplicate")
    assert rejected["gen-00902"] == "label not in the label set"
    assert "shorter" in rejected["gen-00900"] and "answer" in rejected["gen-00903"]
    train_ids = {t["id"] for t in train}
    assert "gen-00904" not in train_ids and "gen-00905" not in train_ids  # dropped, or held out with eval
    # A gold copy never trains: held out with its document (or chunk) into eval or dev, or dropped as
    # contamination. Which one follows from the split; not every unit is held out, so the drop is exercised.
    held = set(m.split.held_out_units)
    unit = (lambda c: c.path) if m.split.unit == "document" else (lambda c: c.key)
    out_ids = {e["id"] for e in evals + (read_jsonl(out / "dev.jsonl") if (out / "dev.jsonl").exists() else [])}
    for n, c in ((904, home["node"][0]), (908, near["json_extract"]), (909, near["timedelta"])):
        gid = f"gen-{n:05d}"
        if unit(c) in held:
            assert gid in out_ids and gid not in rejected, gid
        else:
            assert rejected.get(gid, "").startswith("overlaps eval or gold"), (gid, rejected.get(gid))
    assert sum(rejected.get(f"gen-{n:05d}", "").startswith("overlaps eval or gold") for n in (904, 908, 909)) >= 2
    assert rejected["gen-00906"].startswith("not grounded")
    assert any(r.startswith(("near duplicate", "semantic duplicate")) for r in rejected.values())
    assert all(t["grounding"] >= 0.1 for t in train)  # the floor set above
    # the task's own examples train too, and a generated copy of one is its duplicate
    seeds = {f"task-example-{k}" for k in range(1, len(cfg.task.examples) + 1)}
    assert seeds <= train_ids and m.counts.task_examples == len(seeds)
    assert rejected["gen-00907"] == "exact duplicate (of task-example-1)"
    assert len(train) - len(seeds) + len(evals) + m.counts.rejected == len(rows)
    assert [f.step for f in m.funnel][:4] == ["generated", "valid", "unique", "grounded"]
    assert 1 <= len(m.rejected_samples["not grounded in its source"]) <= 3
    assert m.grounding["embeddings"] is True and m.labels["train"]
    # Same inputs, same settings: skipped.
    assert curate.run(Context(cfg, console=Console(stderr=True, quiet=True))).skipped is True


def test_hallucinated_extraction_value_is_dropped(workspace):
    cfg, ctx, chunks = ingested(workspace)
    from taskling.core.config import load_config as load
    import yaml

    doc = yaml.safe_load(workspace.read_text())
    doc["task"] = {"name": "tiny-router", "description": "Extract the function named in the text.", "type": "extract",
                   "output_schema": {"type": "object", "properties": {"function": {"type": "string"}}}}
    workspace.write_text(yaml.safe_dump(doc))
    cfg = load(workspace)
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    rows = []
    for i, c in enumerate(chunks):
        word = max(c.text.split(), key=len).strip(".,;:()")
        rows.append({"id": f"gen-{i:05d}", "input": c.text, "output": {"function": word}, "chunks": [c.key],
                     "provenance": [c.provenance()]})
    rows[-1]["output"] = {"function": "json_teleport"}  # a value that is nowhere in its source
    hallucinated = rows[-1]["id"]
    fake_generate(ctx, rows)
    curate.run(ctx)
    rejected = {r["id"]: r["reason"] for r in map(json.loads, (ctx.stage_dir("curate") / "rejected.jsonl")
                                                  .read_text().splitlines())}
    assert rejected[hallucinated].startswith("not grounded")
    assert not any(r.startswith("not grounded") for k, r in rejected.items() if k != hallucinated)


def test_curate_with_nothing_left_says_what_to_do(workspace):
    cfg = load_config(workspace)
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    fake_generate(ctx, [example(i, "hi", "sqlite", "a.md") for i in range(5)])
    from taskling.core.errors import TasklingError

    with pytest.raises(TasklingError, match="no generated training example survived") as failed:
        curate.run(ctx)
    # the file the message sends the user to exists and says why each example went
    named = Path(re.search(r"see (\S+rejected\.jsonl)", str(failed.value)).group(1))
    rows = [json.loads(x) for x in named.read_text().splitlines()]
    assert len(rows) == 5 and all(r["reason"] for r in rows), rows


def test_review_round_trip_through_the_cli(cli, workspace):
    import csv

    root = workspace.parent
    for verb in ("ingest", "generate", "curate"):
        assert cli(verb, cwd=root).exit_code == 0
    path = root / "review.csv"
    r = cli("curate", "--export", str(path), "--json", cwd=root)
    assert r.exit_code == 0, r.output
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [x for x in rows if x["status"] == "kept"]
    dropped = [x for x in rows if x["status"] == "dropped"]
    assert kept and dropped
    accept, reject, fix = dropped[0], kept[0], kept[1]
    accept["decision"], reject["decision"] = "Accept", "reject"
    fix["decision"], fix["fixed_input"] = "fix", "How do I watch a folder for changes with fs.watch in node?"
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = cli("curate", "--import", str(path), "--json", cwd=root)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["import"]["accept"] == 1 and m["review"]["rejected"] == 1 and m["review"]["fixed"] == 1
    out = root / "runs" / "tiny-router" / "round-0" / "curate"
    kept_now = {json.loads(x)["id"]: json.loads(x) for name in ("train.jsonl", "eval.jsonl")
                for x in (out / name).read_text().splitlines()}
    assert accept["id"] in kept_now and reject["id"] not in kept_now
    assert kept_now[fix["id"]]["input"] == fix["fixed_input"]
    # Decisions survive a forced re-run.
    assert cli("curate", "--force", cwd=root).exit_code == 0
    assert accept["id"] in {json.loads(x)["id"] for name in ("train.jsonl", "eval.jsonl")
                            for x in (out / name).read_text().splitlines()}


def test_pii_is_scrubbed_before_training_when_asked(workspace):
    cfg, ctx, chunks = ingested(workspace, **{"curate.pii": "true", "curate.min_grounding": "0"})
    rows = [cited(i, f"{q} dev{i}@example.com +44 20 7946 {i:04d}", lab, chunks[i % len(chunks)])
            for i, (lab, q) in enumerate((lab, q) for lab, qs in QUESTIONS.items() for q in qs)]
    fake_generate(ctx, rows)
    m = curate.run(ctx)
    out = ctx.stage_dir("curate")
    kept = generated_kept(out)
    assert kept and all("@example.com" not in ex["input"] and "[EMAIL]" in ex["input"] for ex in kept)
    assert m.pii["email"] == len(kept) and m.pii["phone"] == len(kept)


def test_judge_drops_low_scores_with_its_reason_and_is_cached(workspace):
    from taskling.teacher.backends.scripted import set_script

    cfg, ctx, chunks = ingested(workspace, **{"curate.judge": "teacher", "curate.min_grounding": "0"})
    rows = [cited(i, q, lab, chunks[i % len(chunks)]) for i, (lab, q) in
            enumerate((lab, q) for lab, qs in QUESTIONS.items() for q in qs)]
    bad = {r["id"] for r in rows[::4]}

    def grader(messages):
        text = messages[-1]["content"]
        poor = any(next(r["input"] for r in rows if r["id"] == b) in text for b in bad)
        return (json.dumps({"task_fit": 1, "correct": 2, "clear": 2, "reason": "off task"}) if poor else
                '```json\n{"task_fit": 5, "correct": 4, "clear": 5, "reason": "fine"}\n```')
    set_script(grader)
    try:
        fake_generate(ctx, rows)
        m = curate.run(ctx)
        out = ctx.stage_dir("curate")
        rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
        kept = generated_kept(out)
        for b in bad:
            assert rejected[b]["reason"] == "judge score 1.667 < 3: off task"
        assert all(k["judge"] == 4.667 for k in kept)
        assert m.judge["judged"] == len(rows) - len([r for r in rejected.values() if "judge" not in r["reason"]])
        assert m.rejections["judge score below the threshold"] == len(bad)
        # A forced re-run asks the judge nothing new.
        m2 = curate.run(Context(cfg, console=Console(stderr=True, quiet=True), force=True))
        assert m2.judge["new_calls"] == 0 and m2.judge["cached_calls"] == m.judge["judged"]
    finally:
        set_script(None)


def test_self_consistency_keeps_what_the_teacher_agrees_with(workspace):
    cfg, ctx, chunks = ingested(workspace, **{"curate.self_consistency": "true", "curate.min_grounding": "0"})
    # echo-question answers a classify prompt with the label whose name the input mentions.
    rows = [cited(0, "How do I use json_extract in sqlite queries?", "sqlite", chunks[0]),
            cited(1, "Which node call loads files, is it readFile?", "node", chunks[1]),
            cited(2, "How do I format dates in python with strftime?", "python", chunks[2]),
            cited(3, "How do I hash data in node with createHash?", "sqlite", chunks[3]),  # wrong label
            cited(4, "How do I rank sqlite FTS5 results with bm25?", "python", chunks[4])]  # wrong label
    fake_generate(ctx, rows)
    m = curate.run(ctx)
    rejected = {r["id"]: r["reason"] for r in map(json.loads, (ctx.stage_dir("curate") / "rejected.jsonl")
                                                  .read_text().splitlines())}
    assert set(rejected) == {"gen-00003", "gen-00004"}
    assert all("does not give this output again" in r for r in rejected.values())
    assert m.judge["self_consistency"] == {"checked": 5, "dropped": 2, "samples": 2}


def test_filters_off_keeps_everything_but_contamination(workspace):
    cfg, ctx, chunks = ingested(workspace, **{"curate.filters": "false"})
    gold = json.loads((workspace.parent / "gold.jsonl").read_text().splitlines()[0])["input"]
    rows = [cited(i, q, lab, chunks[i % len(chunks)]) for i, (lab, q) in
            enumerate((lab, q) for lab, qs in QUESTIONS.items() for q in qs)]
    rows += [cited(50, "short", "sqlite", chunks[0]), cited(51, rows[0]["input"], "sqlite", chunks[0]),
             cited(52, gold, "sqlite", chunks[0])]
    fake_generate(ctx, rows)
    m = curate.run(ctx)
    assert m.counts.train + m.counts.eval >= len(rows) - 1
    assert set(m.rejections) <= {"overlaps eval or gold (n-gram)", "overlaps eval or gold (paraphrase)"}


def test_eval_set_is_fixed_across_rounds(workspace):
    cfg, ctx, chunks = ingested(workspace, **{"curate.min_grounding": "0"})
    rows = [cited(i, q, lab, chunks[(3 * i) % len(chunks)]) for i, (lab, q) in
            enumerate((lab, q) for lab, qs in QUESTIONS.items() for q in qs)]
    fake_generate(ctx, rows)
    m0 = curate.run(ctx)
    eval0 = (ctx.stage_dir("curate") / "eval.jsonl").read_text()
    ctx1 = Context(cfg, console=Console(stderr=True, quiet=True), round=1)
    more = [cited(100 + i, f"{r['input'][:-1]} again, round two?", r["label"], chunks[(3 * i) % len(chunks)])
            for i, r in enumerate(rows)]
    fake_generate(ctx1, more)
    m1 = curate.run(ctx1)
    assert (ctx1.stage_dir("curate") / "eval.jsonl").read_text() == eval0
    assert m1.split.fixed_from_round == 0
    unit = m0.split.unit
    held = set(m0.split.held_out_units)
    key = SPLIT_UNITS[unit]
    train1 = [json.loads(x) for x in (ctx1.stage_dir("curate") / "train.jsonl").read_text().splitlines()]
    assert train1 and not any(key(ex) in held for ex in train1)


def test_eval_items_that_overlap_a_task_example_leave_eval(workspace):
    from taskling.curation import filters as curation

    cfg, ctx, chunks = ingested(workspace, **{"curate.min_grounding": "0", "curate.eval_fraction": "0.5"})
    seed = cfg.task.examples[0].input  # "How do I change a key with json_set?"
    rows = [cited(i, q, lab, chunks[(3 * i) % len(chunks)]) for i, (lab, q) in
            enumerate((lab, q) for lab, qs in QUESTIONS.items() for q in qs)]
    rows += [cited(200 + k, f"{seed[:-1]} {tail}?", "sqlite", chunks[(7 * k) % len(chunks)]) for k, tail in
             enumerate(["inside a nested array", "for many rows at once", "without rewriting the whole document",
                        "and keep the other members", "from a trigger", "using a parameter for the path"])]
    fake_generate(ctx, rows)
    m = curate.run(ctx)
    out = ctx.stage_dir("curate")
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert not curation.contaminated([e["input"] for e in evals], None, [seed], None, 0.9)
    assert m.rejections["eval item overlaps a task example"] >= 1
    assert "task-example-1" in {json.loads(x)["id"] for x in (out / "train.jsonl").read_text().splitlines()}
