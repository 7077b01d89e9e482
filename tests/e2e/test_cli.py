"""The command line: verbs and help, and one-line errors without tracebacks."""
from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from taskling.cli import app

VERBS = ("init", "ingest", "pile", "generate", "curate", "train", "evaluate", "export", "run", "serve",
         "predict", "report")


def test_help_lists_every_verb_with_examples(cli):
    out = cli("--help").output
    for verb in VERBS:
        assert verb in out
    for verb in VERBS:
        sub = cli(verb, "--help").output
        assert "Example" in sub or "example" in sub.lower(), verb


def test_init_writes_a_valid_template_and_refuses_to_overwrite(cli, tmp_path):
    assert cli("init", cwd=tmp_path).exit_code == 0
    assert (tmp_path / "taskling.yaml").read_text().startswith("# taskling.yaml")
    one_line_error(cli("init", cwd=tmp_path), "already exists", "--force")


def test_missing_and_malformed_task_file(cli, tmp_path):
    one_line_error(cli("run", cwd=tmp_path), "taskling.yaml", "taskling init")
    (tmp_path / "taskling.yaml").write_text("task: {name: x\n")
    one_line_error(cli("run", cwd=tmp_path), "not valid YAML", "line")
    (tmp_path / "taskling.yaml").write_text("task: {name: x, description: d, type: classify, labels: [a, b]}\n"
                                            "sources: [docs]\nbudjet: {examples: 5}\n")
    one_line_error(cli("ingest", cwd=tmp_path), "unknown key 'budjet'", "did you mean 'budget'")


def test_source_that_does_not_exist(cli, workspace):
    one_line_error(cli("ingest", "--set", "sources=[missing/]", cwd=workspace.parent), "sources match no file")


def test_stage_before_its_inputs_exist(cli, workspace):
    # Every missing stage at once, in the order to run them.
    one_line_error(cli("train", cwd=workspace.parent), "train needs ingest, generate, curate first",
                   "'taskling ingest && taskling generate && taskling curate'", "taskling run")
    assert cli("ingest", cwd=workspace.parent).exit_code == 0
    one_line_error(cli("evaluate", cwd=workspace.parent), "evaluate needs generate, curate, train first")


def test_teacher_that_never_parses(cli, workspace):
    root = workspace.parent
    assert cli("ingest", cwd=root).exit_code == 0
    one_line_error(cli("generate", "--set", "teacher.model=garbage", cwd=root), "no usable example",
                   "failures.jsonl")


def test_unknown_backend_and_override_typos(cli, workspace):
    one_line_error(cli("generate", "--set", "teacher.backend=ollama", cwd=workspace.parent), "teacher.backend",
                   "openai")
    one_line_error(cli("run", "--set", "train.stesp=3", cwd=workspace.parent), "did you mean 'steps'")


def test_port_in_use(cli, workspace, tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line_error(cli("serve", str(tiny_model_dir), "--port", str(port), cwd=workspace.parent),
                       f"port {port}", "in use")


def test_pile_commands_and_json(cli, workspace):
    root = workspace.parent
    res = cli("ingest", "--json", cwd=root)
    assert res.exit_code == 0
    stats = json.loads(cli("pile", "stats", "--json", cwd=root).output)
    assert stats["documents"] == 3
    hits = json.loads(cli("pile", "search", "bm25", "--json", cwd=root).output)["hits"]
    assert hits and hits[0]["path"] == "docs/sqlite.md"
    shown = json.loads(cli("pile", "show", hits[0]["chunk"], "--json", cwd=root).output)
    assert "bm25" in shown["text"]
    one_line_error(cli("pile", "show", "nope:1", cwd=root), "not in the pile")


def test_debug_shows_the_traceback(workspace, monkeypatch):
    from taskling.core.errors import TasklingError

    monkeypatch.chdir(workspace.parent)
    with pytest.raises(TasklingError):
        CliRunner().invoke(app, ["--debug", "train"], catch_exceptions=False)
