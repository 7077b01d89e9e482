"""The Python API runs the pipeline on the tiny model as the CLI does: open a workspace, run the whole
line, read typed results, export a dataset, load the exported model and predict a batch (and a file);
the README's Python example runs as written; the surface is typed and documented; and the CLI reaches
the library only through it."""
from __future__ import annotations

import ast
import contextlib
import csv
import importlib.resources
import inspect
import io
import json
import sqlite3
import textwrap
import typing
from pathlib import Path

import pytest

import taskling
from conftest import write_workspace
from taskling.core.manifests import CurateManifest, EvaluateManifest, SystemResult, TrainManifest

README = Path(__file__).resolve().parents[2] / "README.md"
LABELS = {"sqlite", "node", "python"}


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model_dir):
    """The tiny task in a folder named as the README's example names it, run by the whole line."""
    root = tmp_path_factory.mktemp("api") / "my-task"
    root.mkdir()
    write_workspace(root, tiny_model_dir, train__steps=3, evaluate__models=["student", "base"],
                    evaluate__constrained=False)
    ws = taskling.open(root, quiet=True)
    return ws, ws.run()


def test_run_goes_through_every_stage_and_results_are_typed(ran):
    ws, out = ran
    assert set(out["stages"]) == {"ingest", "generate", "curate", "train", "evaluate", "export"}
    assert ws.config.train.steps == 3 and ws.round == out["kept_round"] == 0
    assert isinstance(ws.manifest("curate"), CurateManifest) and isinstance(ws.manifest("train"), TrainManifest)
    gold = ws.results("gold")
    assert set(gold) == {"student", "base"} and isinstance(gold["student"], SystemResult)
    assert gold["student"].n == 6 and 0 <= gold["student"].metric <= 1
    report = json.loads((ws.run_dir / "report.json").read_text())
    assert report["results"]["gold"]["student"]["metric"] == gold["student"].metric
    assert len(ws.examples("train")) == ws.manifest("curate").counts.train
    assert [s for s, _ in ws.loss()["loss"]] == [1, 2, 3]
    again = ws.train()  # nothing changed: skipped, as `taskling train` would be
    assert again.skipped and isinstance(ws.evaluate(), EvaluateManifest)


def test_the_exported_model_predicts_a_batch(ran):
    ws, _ = ran
    with ws.model() as model:  # no GGUF in this export: the merged folder on transformers
        preds = model.predict(["How do I read a file in node?", "How do I format a datetime?"])
        assert model.info["type"] == "classify"
    assert [p.input for p in preds] == ["How do I read a file in node?", "How do I format a datetime?"]
    for p in preds:
        assert p.output in {"sqlite", "node", "python"} and abs(sum(p.probabilities.values()) - 1) < 1e-3
        assert p.probability == p.probabilities[p.output]
    with taskling.load_model(ws.run_id, root=ws.root, backend="transformers") as again:
        assert [p.output for p in again.predict([preds[0].input])] == [preds[0].output]


def test_overrides_apply_as_dicts_or_set_strings(ran):
    ws, _ = ran
    assert ws.config.train.steps == 3
    assert taskling.open(ws.root, overrides={"train.steps": 5}, quiet=True).config.train.steps == 5
    assert taskling.open(ws.root, overrides=["train.lora.r=4"], quiet=True).config.train.lora.r == 4


def readme_example() -> str:
    """The README's Python example: the indented block that starts with `import taskling`."""
    blocks = [textwrap.dedent(b) for b in README.read_text(encoding="utf-8").split("\n\n")]
    found = [b for b in blocks if b.startswith("import taskling\n")]
    assert len(found) == 1, "the README has one Python example"
    return found[0]


def test_the_readme_python_example_runs_as_written(ran, monkeypatch):
    ws, _ = ran
    code = readme_example()
    assert 'taskling.open("my-task")' in code
    monkeypatch.chdir(ws.root.parent)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    printed = out.getvalue().split()
    assert printed and set(printed) <= LABELS  # each print is one of the task's labels


def test_a_file_is_predicted_from_python_and_by_the_cli_alike(ran, tmp_path, cli):
    ws, _ = ran
    questions = ["How do I read a file in node?", "How do I rank matches with bm25?"]
    src = tmp_path / "questions.csv"
    src.write_text("input\n" + "".join(f"{q}\n" for q in questions), encoding="utf-8")
    res = taskling.predict_file(src, tmp_path / "api.csv", config=ws.root / "taskling.yaml", backend="transformers")
    assert res["rows"] == res["predicted"] == 2
    with open(tmp_path / "api.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == questions and {r["prediction"] for r in rows} <= LABELS
    with ws.model(backend="transformers") as model:  # the same model, loaded another way
        assert [r["prediction"] for r in rows] == [p.output for p in model.predict(questions)]
    r = cli("predict", str(src), "-o", str(tmp_path / "cli.csv"), "--backend", "transformers", "--json", cwd=ws.root)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cli.csv").read_text() == (tmp_path / "api.csv").read_text()
    with pytest.raises(taskling.TasklingError, match="--backend vllm: use llama.cpp or transformers"):
        taskling.predict_file(src, config=ws.root / "taskling.yaml", backend="vllm")


def test_data_in_and_out_and_the_pile(ran, tmp_path):
    ws, _ = ran
    info = ws.export_dataset("openai", out=tmp_path / "openai")
    assert info["rows"]["train"] == ws.manifest("curate").counts.train
    hits = ws.search("json_extract", limit=3, mode="fts")
    assert hits and all(h["by"] == "fts" and "json_extract" in h["text"] for h in hits)
    assert ws.chunk(hits[0]["chunk"])["path"] == hits[0]["path"] and ws.pile_stats()["documents"] == 3
    (tmp_path / "more.jsonl").write_text(json.dumps({"q": "How do I walk a JSON array with json_each?",
                                                      "a": "sqlite"}) + "\n")
    res = ws.import_gold(tmp_path / "more.jsonl", input="q", output="a")
    assert res["imported"] == 1 and res["gold_items"] == 7


def test_errors_are_taskling_errors(ran, tmp_path):
    ws, _ = ran
    with pytest.raises(taskling.TasklingError, match="no stage 'trian'"):
        ws.stage("trian")
    with pytest.raises(taskling.TasklingError, match="no 'dev' set"):
        ws.results("dev")
    with pytest.raises(taskling.TasklingError, match="no task file here"):
        taskling.open(tmp_path)
    path = taskling.init(tmp_path)
    assert path.name == "taskling.yaml" and "task:" in path.read_text()
    with pytest.raises(taskling.TasklingError, match="already exists"):
        taskling.init(tmp_path)


def test_review_and_the_call_log_from_python(ran, tmp_path):
    """`taskling curate --export/--import` and `taskling log` as methods: the review file holds every
    candidate but the task's own examples; a decision imported applies at the next curate."""
    ws, _ = ran
    rows = [ex for split in ("train", "eval", "rejected") for ex in ws.examples(split)
            if ex.get("source") != "task example"]
    out = ws.review_export(tmp_path / "review.csv")
    with open(tmp_path / "review.csv", encoding="utf-8-sig", newline="") as f:
        review = list(csv.DictReader(f))
    assert out["exported"] == len(review) == len(rows) and {r["id"] for r in review} == {ex["id"] for ex in rows}
    kept = next(r for r in review if r["status"] == "kept")
    kept["decision"] = "reject"
    with open(tmp_path / "review.csv", "w", encoding="utf-8-sig", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(review[0]))
        w.writeheader()
        w.writerows(review)
    assert ws.review_import(tmp_path / "review.csv")["reject"] == 1
    ws.curate(force=True)
    assert kept["id"] not in {ex["id"] for split in ("train", "eval") for ex in ws.examples(split)}
    with pytest.raises(taskling.TasklingError, match="no such review file"):
        ws.review_import(tmp_path / "nothing.csv")
    with sqlite3.connect(ws.root / ".taskling" / "calls.db") as db:
        n, newest = db.execute("SELECT count(*), (SELECT key FROM calls ORDER BY rowid DESC LIMIT 1) FROM calls").fetchone()
    log = ws.calls(limit=5)
    assert n > 5 and log["totals"]["calls"] == n and len(log["calls"]) == 5 and log["calls"][0]["key"] == newest
    one = ws.call(newest[:10])
    assert one["key"] == newest and one["request"]["messages"]
    with pytest.raises(taskling.TasklingError, match="no single call has a key starting with 'zz'"):
        ws.call("zz")
    assert ws.call_errors()["errors"] == []  # the scripted teacher never fails


def public_callables():
    """(name, function) for everything `taskling.__all__` offers: functions, and classes' public methods
    and properties."""
    for name in taskling.__all__:
        obj = getattr(taskling, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            continue
        if not inspect.isclass(obj):
            yield name, obj
            continue
        yield name, obj
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(member, property):
                yield f"{name}.{attr}", member.fget
            elif inspect.isfunction(member):
                yield f"{name}.{attr}", member


def test_the_surface_is_typed_and_documented():
    assert (importlib.resources.files("taskling") / "py.typed").is_file()  # PEP 561: type checkers read the hints
    problems = []
    for name, fn in public_callables():
        if not (fn.__doc__ or "").strip() or (inspect.isclass(fn) and fn.__doc__.startswith(f"{fn.__name__}(")):
            problems.append(f"{name}: no docstring")  # a dataclass's generated signature is not a docstring
        if inspect.isclass(fn):
            continue
        sig = inspect.signature(fn)
        problems += [f"{name}({p.name}): no type" for p in sig.parameters.values()
                     if p.name != "self" and p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty:
            problems.append(f"{name}: no return type")
        typing.get_type_hints(fn)  # every hint names a real type
    assert not problems
    assert {"open", "init", "load_model", "predict_file", "Workspace.run", "Workspace.stage", "Workspace.results",
            "Workspace.export_dataset", "Workspace.import_gold", "Model.predict"} <= {n for n, _ in public_callables()}


# The CLI may parse options, print and exit; everything it does comes from these modules. The stages, the
# loop, curation, the report, serving and the UI are reached only through taskling.api.
CLI_MAY_IMPORT = {"taskling.api", "taskling.cli_common", "taskling.cli_look", "taskling.core.config",
                  "taskling.core.errors", "taskling.core.executor", "taskling.core.lock", "taskling.core.workspace",
                  "taskling.status"}  # status.lines: the terminal rendering of api's Workspace.status()


def test_the_cli_reaches_the_library_only_through_the_api():
    package = Path(taskling.__file__).parent
    found = {}
    for path in sorted(package.glob("cli*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, path  # the CLI modules sit at the package's top
                module = "taskling" + (f".{node.module}" if node.module else "")
                for alias in node.names:
                    full = module if node.module else f"taskling.{alias.name}"
                    if full != "taskling.__version__":
                        found.setdefault(full, path.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("taskling"):
                found.setdefault(node.module, path.name)
            elif isinstance(node, ast.Import):
                found.update({a.name: path.name for a in node.names if a.name.startswith("taskling")})
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
                found.setdefault(ast.unparse(node), path.name)
    assert "taskling.api" in found
    assert {m: f for m, f in found.items() if m not in CLI_MAY_IMPORT} == {}
