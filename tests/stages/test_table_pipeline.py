"""tables: in the pipeline: a mapped table's rows become examples in generate (with row
provenance, no teacher call), the teacher paraphrases their input side keeping the values, and
curate keeps every row (no near-duplicate of another row), held out row by row."""
from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from conftest import write_workspace
from taskling.core.delimit import BLOCK
from taskling.teacher.backends.scripted import set_script
from taskling.core.config import load_config
from taskling.stages import curate, generate, ingest
from taskling.core.workspace import Context, read_jsonl

QUIET = Console(stderr=True, quiet=True)
CODES = [("23505", "unique_violation"), ("23503", "foreign_key_violation"), ("42P01", "undefined_table"),
         ("42703", "undefined_column"), ("40001", "serialization_failure"), ("57014", "query_canceled"),
         ("08006", "connection_failure"), ("22012", "division_by_zero"), ("53300", "too_many_connections"),
         ("42601", "syntax_error"), ("0A000", "feature_not_supported"), ("25P02", "in_failed_sql_transaction")]


def script(messages: list[dict]) -> str:
    text = messages[-1]["content"]
    if text.startswith("Rewrite this"):
        code = re.search(r"Keep these exactly as they are: ([^.;]+)", text).group(1)
        # every other row: a rewrite that loses the code (it must be discarded)
        return f"Which condition name goes with SQLSTATE {code}?" if int(code[-1], 16) % 2 else "Which one is it?"
    doc = BLOCK.search(text)
    if doc:
        first = doc.group(2).split(".")[0].strip()
        return f"Question: What does the manual say here about {' '.join(first.split()[:4])}?\nAnswer: {first}."
    return "I do not know."


def test_table_rows_become_examples_paraphrased_and_all_kept(tmp_path, tiny_model_dir):
    import yaml

    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=8)
    (tmp_path / "docs" / "errcodes.csv").write_text(
        "Error Code,Condition Name\n" + "".join(f"{c},{n}\n" for c, n in CODES), encoding="utf-8")
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "pg-codes", "type": "answer",
                   "description": "Give the condition name of a PostgreSQL error code.",
                   "examples": [{"input": "What is SQLSTATE 00000?", "output": "successful_completion"}]}
    cfg["sources"] = ["docs/*"]
    cfg["tables"] = [{"name": "errcodes", "match": "docs/errcodes.csv", "paraphrase": 1, "eval_fraction": 0.25,
                      "input": "What is the condition name of PostgreSQL error code {error code}?",
                      "output": "{Condition Name}"}]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cfg = load_config(path, [])
    ctx = Context(cfg, console=QUIET)
    set_script(script)
    try:
        ingest.run(ctx)
        man = generate.run(ctx)
        cur = curate.run(ctx)
    finally:
        set_script(None)
    assert man.table_examples == len(CODES) + man.tables[0]["paraphrases"]
    rep = man.tables[0]
    assert rep["rows"] == len(CODES) and rep["examples"] == len(CODES) and rep["files"] == 1
    made = [e for e in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl") if e.get("source") == "table"]
    rows = [e for e in made if "paraphrase_of" not in e]
    by_code = {e["provenance"][0]["row"]["Error Code"]: e for e in rows}
    assert by_code["23505"]["input"] == "What is the condition name of PostgreSQL error code 23505?"
    assert by_code["23505"]["output"] == "unique_violation"
    assert by_code["23505"]["provenance"][0]["path"] == "docs/errcodes.csv"
    assert by_code["23505"]["provenance"][0]["locator"].endswith("2")  # the CSV's second line
    paras = [e for e in made if "paraphrase_of" in e]
    odd = [c for c, _ in CODES if int(c[-1], 16) % 2]
    assert rep["paraphrases"] == len(paras) == len(odd)  # the rewrites that lost the code were discarded
    for p in paras:
        base = next(e for e in rows if e["id"] == p["paraphrase_of"])
        assert p["output"] == base["output"] and base["provenance"][0]["row"]["Error Code"] in p["input"]
    # curate: every row and paraphrase kept (none a near duplicate of another), held out row by row
    kept = {e["id"]: s for s in ("train", "eval") for e in read_jsonl(ctx.stage_dir("curate") / f"{s}.jsonl")}
    assert all(e["id"] in kept for e in made), [r["reason"] for r in read_jsonl(ctx.stage_dir("curate") / "rejected.jsonl")
                                               if r.get("source") == "table"]
    assert all(kept[p["id"]] == kept[p["paraphrase_of"]] for p in paras)  # a paraphrase goes where its row goes
    split = cur.split.table_rows
    assert split["eval"] >= 1 and split["train"] > split["eval"]


def test_a_table_the_examples_come_from_is_found_shown_used_and_promotable(tmp_path, tiny_model_dir):
    """No tables: mapped, two task examples whose answers are rows of a CSV: generate finds the
    table, writes the entry to tables.found.yaml, turns every row into examples in both phrasings
    (held out together); the written entry, copied into taskling.yaml, gives the same examples; and
    generate.discover: false turns it off."""
    import yaml

    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=4)
    (tmp_path / "docs" / "errcodes.csv").write_text(
        "Error Code,Condition Name\n" + "".join(f"{c},{n}\n" for c, n in CODES), encoding="utf-8")
    (tmp_path / "docs" / "people.csv").write_text("Name,Team\nAda,core\nAlan,web\n", encoding="utf-8")
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "pg-codes", "type": "answer",
                   "description": "Give the condition name of a PostgreSQL error code.",
                   "examples": [{"input": "What is the condition name of error 23505?", "output": "unique_violation"},
                                {"input": "Postgres gave me 42703. Which condition is it?",
                                 "output": "undefined_column"}]}
    cfg["sources"] = ["docs/*"]

    def run(settings: dict, where):
        where.mkdir(exist_ok=True)
        for f in (tmp_path / "docs").iterdir():
            (where / "docs").mkdir(exist_ok=True)
            (where / "docs" / f.name).write_bytes(f.read_bytes())
        p = where / "taskling.yaml"
        p.write_text(yaml.safe_dump(cfg | settings, sort_keys=False))
        ctx = Context(load_config(p, []), console=QUIET)
        set_script(script)
        try:
            ingest.run(ctx)
            man = generate.run(ctx)
        finally:
            set_script(None)
        made = [e for e in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl") if e.get("source") == "table"]
        return ctx, man, made

    ctx, man, made = run({}, tmp_path / "found")
    [rep] = man.tables
    assert rep["found"]["path"] == "docs/errcodes.csv" and rep["found"]["examples_matched"] == 2
    written = yaml.safe_load((ctx.stage_dir("generate") / "tables.found.yaml").read_text())
    [entry] = written["tables"]
    assert entry["input"] == ["What is the condition name of error {Error Code}?",
                              "Postgres gave me {Error Code}. Which condition is it?"]
    firsts = [e for e in made if "paraphrase_of" not in e]
    assert len(firsts) == len(CODES) == rep["rows"]
    assert ("Postgres gave me 40001. Which condition is it?", "serialization_failure") in \
        [(e["input"], e["output"]) for e in made]
    # the teacher paraphrases at most the budget's examples, the first phrasing of a row
    assert 0 < rep["paraphrases"] <= 4
    # promoted: the same entry in taskling.yaml gives the same rows
    _, man2, made2 = run({"tables": written["tables"]}, tmp_path / "promoted")
    assert "found" not in man2.tables[0]
    assert sorted((e["input"], e["output"]) for e in made2 if "paraphrase_of" not in e) == \
        sorted((e["input"], e["output"]) for e in firsts)
    # off: no table examples
    _, man3, made3 = run({"generate": {"discover": False}}, tmp_path / "off")
    assert man3.tables == [] and made3 == []


def codes_workspace(tmp_path, tiny_model_dir, second: str, retrieval: dict | None = None) -> Path:
    """An answer task whose two examples (the second asked as `second`) are rows of docs/errcodes.csv,
    with no tables: mapped; its taskling.yaml."""
    import yaml

    path = write_workspace(tmp_path, tiny_model_dir, budget__examples=4)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"] = {"name": "pg-codes", "type": "answer", "description": "Give the condition name of an error code.",
                   "examples": [{"input": "Which condition is error 23505?", "output": "unique_violation"},
                                {"input": second, "output": "undefined_column"}]}
    cfg["sources"] = ["docs/*"]
    if retrieval:
        cfg["student"]["retrieval"] = retrieval
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (tmp_path / "docs" / "errcodes.csv").write_text(
        "Error Code,Condition Name\n" + "".join(f"{c},{n}\n" for c, n in CODES), encoding="utf-8")
    return path


def test_a_teacher_that_yields_nothing_still_gives_a_student_when_the_documents_hold_the_answers(tmp_path,
                                                                                               tiny_model_dir):
    """Every teacher reply is unusable; the task examples' answers are rows of a CSV: generate keeps the
    rows (no error), curate and train run on them. Without the table, generate stops with an error
    that says no table holds the answers and names a failures file that exists."""
    from taskling.core.errors import TasklingError
    from taskling.stages import train

    path = codes_workspace(tmp_path, tiny_model_dir, "Which condition is error 42703?")
    set_script(lambda messages: "I cannot help with that.")
    try:
        ctx = Context(load_config(path, []), console=QUIET)
        ingest.run(ctx)
        man = generate.run(ctx)
        assert man.counts.examples == 0 and man.table_examples == len(CODES)  # one phrasing; no paraphrase kept
        curate.run(ctx)
        sets = {n: [e for e in read_jsonl(ctx.stage_dir("curate") / f"{n}.jsonl") if e.get("source") == "table"]
                for n in ("train", "eval")}
        # every row kept, but a held-out row that is a task example itself (eval never holds those)
        assert len(sets["train"]) + len(sets["eval"]) >= len(CODES) - 2 and len(sets["train"]) > len(CODES) // 2
        assert train.run(ctx).counts.steps >= 1
        (tmp_path / "docs" / "errcodes.csv").unlink()
        ctx = Context(load_config(path, []), console=QUIET)
        ingest.run(ctx)
        try:
            generate.run(ctx)
            raise AssertionError("generate went on with nothing")
        except TasklingError as e:
            msg = str(e)
    finally:
        set_script(None)
    assert "no table or passage of the pile holds the task examples' answers" in msg
    failures = re.search(r"see (\S+failures\.jsonl)", msg).group(1)
    assert Path(failures).exists(), msg


def test_an_open_book_run_asks_about_keys_the_pile_lacks_and_expects_the_abstention(tmp_path, tiny_model_dir):
    """Open-book, a found table: generate adds questions in the rows' phrasing about codes shaped like
    the table's that no chunk holds; curate puts every one in eval (never train) with the abstention as
    the answer, and the closed-book run gets none."""
    from taskling.core.openbook import ABSTAIN
    from taskling.data.pile import Pile

    path = codes_workspace(tmp_path, tiny_model_dir, "Postgres says 42703: the condition?", {"mode": "on"})
    set_script(script)
    try:
        ctx = Context(load_config(path, []), console=QUIET)
        ingest.run(ctx)
        man = generate.run(ctx)
        curate.run(ctx)
    finally:
        set_script(None)
    absent = [e for e in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl") if e.get("absent")]
    assert len(absent) == man.tables[0]["absent_questions"] == 2  # a tenth of 12 rows, at least 2
    codes = {c for c, _ in CODES}
    with Pile(ctx.ws.pile_db) as pile:
        for e in absent:
            fake = e["provenance"][0]["row"]["Error Code"]
            assert e["output"] == ABSTAIN and fake in e["input"] and fake not in codes and not pile.holding(fake)
            # a near miss: a real code's letters, other digits
            assert re.sub(r"\d", "#", fake) in {re.sub(r"\d", "#", c) for c in codes}
    from taskling.tasks.openbook import recall_at_k

    assert recall_at_k(absent, [[] for _ in absent], 4)["n"] == 0  # no source to find: not in recall@k
    evals = {e["id"] for e in read_jsonl(ctx.stage_dir("curate") / "eval.jsonl")}
    train = {e["id"] for e in read_jsonl(ctx.stage_dir("curate") / "train.jsonl")}
    assert {e["id"] for e in absent} <= evals and not {e["id"] for e in absent} & train
    ctx2 = Context(load_config(path, ["student.retrieval.mode=off"]), console=QUIET)
    set_script(script)
    try:
        generate.run(ctx2)
    finally:
        set_script(None)
    assert not [e for e in read_jsonl(ctx2.stage_dir("generate") / "examples.jsonl") if e.get("absent")]
