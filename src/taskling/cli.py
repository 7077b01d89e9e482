"""The `taskling` command: a thin layer over the Python API (`taskling.api`): each command parses its
options, calls one API function or Workspace method, and prints (tests/e2e/test_api.py keeps it so).

    taskling init | ingest | generate | curate | train | evaluate | export | run
    taskling status | try | serve | predict | report | ui | gold | rules | pile | log

Errors the user can fix print one line and exit non-zero; --debug shows the
traceback of anything else. What every command shares is in `cli_common.py`; the
commands that only look (pile, log) are in `cli_look.py`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .api import Workspace
from .cli_common import (HELP, STATE, ClusterOpt, ConfigOpt, ForceOpt, JsonOpt, RunOpt, SetOpt, ThreadsOpt, emit,
                         err, guarded, make_ctx)
from .cli_look import log, pile_app, status, try_

app = typer.Typer(
    help="taskling: your documents and a plain-language task in, a small tuned model out.\n\n"
         "Start with 'taskling init', edit taskling.yaml, then 'taskling run'.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich",
    context_settings=HELP)
app.add_typer(pile_app, name="pile")
app.command("log")(log)
app.command("status")(status)
app.command("try")(try_)
gold_app = typer.Typer(help="gold.jsonl: items a person labelled, never trained on, always evaluated.",
                       no_args_is_help=True, context_settings=HELP)
app.add_typer(gold_app, name="gold")
rules_app = typer.Typer(help="Keyword rules curate mined per label (label.auto): list them with their accuracy, "
                        "promote them into taskling.yaml.", no_args_is_help=True, context_settings=HELP)
app.add_typer(rules_app, name="rules")


def show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"taskling {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
         version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                               callback=show_version)] = False) -> None:
    STATE["debug"] = debug
    if debug:
        os.environ["TASKLING_DEBUG"] = "1"


def stage_command(name: str, example: str):
    def command(config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
                force: ForceOpt = False, as_json: JsonOpt = False, threads: ThreadsOpt = None,
                cluster: ClusterOpt = None) -> None:
        def go():
            ws = Workspace(make_ctx(config, set_, run, force, threads, cluster, spread=True))
            emit(ws.stage(name, force).as_dict(), as_json)
        guarded(go)
    command.__doc__ = {
        "train": "LoRA-tune the student on the curated examples (resumable).",
        "evaluate": "Score the student, its base and the teacher on the held-out set and gold.jsonl.",
    }[name] + f"\n\nExample: {example}"
    app.command(name)(command)


@app.command()
def init(path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path("taskling.yaml"),
         force: Annotated[bool, typer.Option("--force", help="Overwrite the task file if it exists.")] = False,
         type_: Annotated[Optional[str], typer.Option("--type", help="classify, extract, answer or generate "
                                                      "(asked for on a terminal when left out).")] = None,
         labels: Annotated[Optional[str], typer.Option("--labels", help="classify: the labels, a,b,c.")] = None,
         fields: Annotated[Optional[str], typer.Option("--fields", help="extract: the fields, a,b,c.")] = None,
         docs: Annotated[Optional[list[str]], typer.Option("--docs", help="A folder or file of your documents "
                                                           "(repeat for more).")] = None,
         description: Annotated[Optional[str], typer.Option("--description", help="The job in plain language.")] = None,
         noun: Annotated[str, typer.Option("--noun", help="What one input is: question, ticket, email...")] = "input") -> None:
    """Write taskling.yaml for your task: the keys a first run needs first, the rest folded below.

    Example: taskling init --type classify --labels billing,bug,account --docs tickets/
    """
    def go():
        from .api import init as write

        asked = ask_task() if type_ is None and sys.stdin.isatty() and sys.stdout.isatty() else {}
        t = type_ or asked.get("type")
        written = write(path, force, t, split(labels or asked.get("labels")), docs or asked.get("docs"),
                        split(fields or asked.get("fields")), description or asked.get("description"), noun=noun)
        err.print(f"wrote {written}; " + ("check the lines marked 'edit', then: taskling ingest && taskling generate "
                                          "--dry-run" if t else "edit the task, labels and sources (or run "
                                          "'taskling init --force --type classify --labels a,b --docs DIR'), then "
                                          "'taskling run'"))
    guarded(go)


def split(text: Optional[str]) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def ask_task() -> dict:
    """On a terminal without --type: ask for what the task file needs."""
    t = typer.prompt("Task type (classify, extract, answer, generate)", default="classify")
    out: dict = {"type": t}
    if t == "classify":
        out["labels"] = typer.prompt("Labels, comma-separated (e.g. billing,bug,account)")
    if t == "extract":
        out["fields"] = typer.prompt("Fields to pull out, comma-separated (e.g. party,date,amount)")
    out["docs"] = [typer.prompt("Folder of your documents", default="docs")]
    out["description"] = typer.prompt("The job in one sentence (Enter to fill in later)", default="",
                                      show_default=False) or None
    return out


@app.command()
def ingest(paths: Annotated[Optional[list[str]], typer.Argument(help="Extra files, folders or globs.")] = None,
           config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
           force: ForceOpt = False, as_json: JsonOpt = False, cluster: ClusterOpt = None) -> None:
    """Add or refresh documents in the pile (the sources of taskling.yaml, plus PATHs).

    Example: taskling ingest docs/ manuals/*.html
    """
    def go():
        ws = Workspace(make_ctx(config, set_, run, force, cluster=cluster, spread=True))
        emit(ws.ingest(paths, force).as_dict(), as_json)
    guarded(go)


@app.command("generate")
def generate(config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
             force: ForceOpt = False, as_json: JsonOpt = False, threads: ThreadsOpt = None,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure a small sample and estimate the "
                                                   "stage's tokens, cost and time before spending.")] = False,
             cluster: ClusterOpt = None) -> None:
    """Have the teacher write training examples grounded in the pile.

    Resumable: every teacher call is cached in .taskling/calls.db. Stops at the
    first budget reached (examples, teacher tokens, money, wall time).

    Example: taskling generate --dry-run && taskling generate --set budget.examples=200
    """
    def go():
        ws = Workspace(make_ctx(config, set_, run, force, threads, cluster, spread=True))
        emit(ws.dry_run() if dry_run else ws.generate(force).as_dict(), as_json)
    guarded(go)


@app.command("curate")
def curate(config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
           force: ForceOpt = False, as_json: JsonOpt = False, threads: ThreadsOpt = None,
           export: Annotated[Optional[Path], typer.Option("--export", help="Write every candidate (kept and "
                             "dropped, with reasons and scores) to this CSV for review.")] = None,
           import_: Annotated[Optional[Path], typer.Option("--import", help="Read a reviewed CSV: its accept / "
                              "reject / fix decisions win over every filter, now and in later runs.")] = None,
           cluster: ClusterOpt = None) -> None:
    """Validate, dedup, ground, split and select the examples into train and held-out eval sets.

    Example: taskling curate --export review.csv; (edit it) taskling curate --import review.csv
    """
    def go():
        ws = Workspace(make_ctx(config, set_, run, force, threads, cluster, spread=True))
        if export:
            return emit(ws.review_export(export), as_json)
        result = {"import": ws.review_import(import_)} if import_ else {}
        emit({**ws.curate(force).as_dict(), **result}, as_json)
    guarded(go)


for _name, _example in (
                        ("train", "taskling train --set train.steps=40"),
                        ("evaluate", "taskling evaluate --json")):
    stage_command(_name, _example)


@app.command()
def export(config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
           force: ForceOpt = False, as_json: JsonOpt = False, threads: ThreadsOpt = None,
           bundle: Annotated[bool, typer.Option("--bundle", help="Also pack one artefact into a tar that "
                                                "'taskling serve BUNDLE' runs offline.")] = False,
           artifact: Annotated[Optional[str], typer.Option(help="What --bundle packs: a GGUF type (default "
                                                          "serve.quant) or 'merged'.")] = None,
           dataset: Annotated[Optional[str], typer.Option("--dataset", help="Instead, write the curated sets as "
                              "openai, sharegpt, alpaca (JSONL) or hf (a Hugging Face datasets folder).")] = None,
           round_: Annotated[Optional[int], typer.Option("--round", help="--dataset: the round (default: the "
                             "one the loop exported).")] = None,
           rejected: Annotated[bool, typer.Option("--rejected", help="--dataset: the rejected candidates too, "
                               "with reasons.")] = False,
           out: Annotated[Optional[Path], typer.Option("--out", help="--dataset: the folder (default "
                          "runs/<id>/datasets/round-<k>/<format>).")] = None) -> None:
    """Write the model the user owns under runs/<id>/export: merged safetensors, the LoRA
    adapter, GGUF (f16 and quantized) and the adapter as GGUF, an Ollama Modelfile and a
    model card, each artefact checked by loading it in transformers or llama.cpp.

    Example: taskling export --bundle --artifact q8_0; taskling export --dataset hf --rejected
    """
    def go():
        ws = Workspace(make_ctx(config, set_, run, force, threads))
        if dataset:
            info = ws.export_dataset(dataset, out, round_, rejected)
            err.print(f"dataset: {info['dir']} ({', '.join(f'{s} {n}' for s, n in info['rows'].items())})")
            return emit(info, as_json)
        m = ws.export(force).as_dict()
        if bundle:
            path = ws.bundle(artifact)
            err.print(f"bundle: {path} ({path.stat().st_size / 2**20:.1f} MB); run it with: taskling serve {path}")
            m = {**m, "bundle": str(path)}
        emit(m, as_json)
    guarded(go)


@app.command("analyse")
def analyse_cmd(config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
                force: ForceOpt = False, as_json: JsonOpt = False, threads: ThreadsOpt = None) -> None:
    """Analyse the last finished round and plan the next one's teacher budget per arm (the loop's next step).

    Example: taskling analyse --set loop.policy=ucb
    """
    def go():
        ws = Workspace(make_ctx(config, set_, run, force, threads))
        m = ws.analyse(force)
        table = Table(title=f"round {ws.round}: {m.allocation.jobs} teacher jobs by {ws.config.loop.policy}")
        for col in ("arm", "dev wrong", "error", "uncertainty", "keep rate", "weight", "jobs", "seeded"):
            table.add_column(col, justify="left" if col == "arm" else "right")
        for a in sorted(m.arms, key=lambda a: -a.jobs_total):
            table.add_row(a.name, f"{a.dev_errors:g}/{a.dev_items}", f"{a.error_mean:.2f}",
                          "—" if a.uncertainty is None else f"{a.uncertainty:.2f}", f"{a.keep_rate:.2f}",
                          f"{a.weight:.3f}", str(a.jobs), str(a.seeded_jobs))
        err.print(table)
        emit(m.as_dict(), as_json)
    guarded(go)


@app.command("run")
def run_all(config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, run: RunOpt = None,
            force: ForceOpt = False, as_json: JsonOpt = False, threads: ThreadsOpt = None,
            cluster: ClusterOpt = None) -> None:
    """Run the whole loop: ingest, then rounds of (analyse,) generate, curate, train, evaluate; export, report.

    Resumable at the round and stage it stopped in. Example: taskling run --set loop.rounds=4
    (on a Ray cluster: taskling run --cluster HOST:6379)
    """
    def go():
        emit(Workspace(make_ctx(config, set_, run, force, threads, cluster, spread=True)).run(force), as_json)
    guarded(go)


BackendOpt = Annotated[Optional[str], typer.Option("--backend", help="llama.cpp (a GGUF, the default) or "
                                                   "transformers (the merged folder); default serve.backend.")]
ModelArg = "A run id, a .gguf file, an HF model folder or a bundle .tar (default: the newest exported run)."


@app.command()
def serve(target: Annotated[Optional[str], typer.Argument(help=ModelArg)] = None,
          config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None,
          host: Annotated[Optional[str], typer.Option(help="Interface to bind (default 127.0.0.1; any other "
                                                      "needs an API key).")] = None,
          port: Annotated[Optional[int], typer.Option(help="Port (default 8000).")] = None,
          backend: BackendOpt = None,
          quant: Annotated[Optional[str], typer.Option(help="Which exported GGUF a run serves: f16, q8_0, "
                                                       "q4_k_m... (default serve.quant).")] = None,
          api_key: Annotated[Optional[str], typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' "
                                                         "(or set TASKLING_API_KEY, which ps does not show).")] = None,
          sha256: Annotated[Optional[str], typer.Option("--sha256", help="Serve a bundle only if its sha256 is "
                                                        "this (from whoever made it: its SHA256SUMS proves it is "
                                                        "whole, not who made it).")] = None,
          threads: ThreadsOpt = None) -> None:
    """Serve the tuned student behind an OpenAI-compatible API: /v1/chat/completions,
    /v1/completions, /v1/task (the task's parsed answer), /v1/models, /health, /metrics.

    Example: taskling serve devdocs-router --port 8000; taskling serve runs/x/export/x-q8_0.bundle.tar
    """
    def go():
        from .api import serve as serve_model

        sets = list(set_ or []) + [f"serve.{k}={v}" for k, v in (("host", host), ("port", port), ("quant", quant),
                                                                 ("sha256", sha256)) if v is not None]
        serve_model(target, config, sets, backend, api_key, threads, err)
    guarded(go)


@app.command()
def predict(file: Annotated[Path, typer.Argument(help="CSV (with an 'input' column) or JSONL ({'input': ...}).")],
            output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write (default "
                                                           "FILE.predictions.csv/.jsonl); continued if it exists.")] = None,
            model: Annotated[Optional[str], typer.Option(help=ModelArg)] = None,
            config: ConfigOpt = Path("taskling.yaml"), set_: SetOpt = None, backend: BackendOpt = None,
            batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per batch (each batch is "
                                                    "written to disk before the next).")] = 16,
            threads: ThreadsOpt = None, as_json: JsonOpt = False, cluster: ClusterOpt = None) -> None:
    """Answer every row of a CSV or JSONL file with the task (as /v1/task does), writing the
    same format with prediction columns added. Resumable: run it again to continue.

    Example: taskling predict tickets.csv -o tickets.predicted.csv --json
    """
    def go():
        from .api import predict_file

        emit(predict_file(file, output, model, config, set_, backend, batch_size, threads, cluster, err), as_json)
    guarded(go)


@app.command()
def ui(config: ConfigOpt = Path("taskling.yaml"), run: RunOpt = None,
       host: Annotated[str, typer.Option(help="Interface to bind (loopback; any other needs --allow-remote).")] = "127.0.0.1",
       port: Annotated[int, typer.Option(help="Port (0: any free one, printed).")] = 8765,
       allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Serve a non-loopback --host: other "
                                                  "machines get in only with the printed address's token.")] = False) -> None:
    """Open the local web app over the workspace, five pages: the pile (search, topics, chunks), the
    examples and their review, the runs (live progress, rounds, figures), the student's failures,
    and a playground (one input to the student, its base and the teacher).

    Example: taskling ui --port 8765, then open http://127.0.0.1:8765/
    """
    def go():
        Workspace(make_ctx(config, None, run, lock=False)).ui(host, port, allow_remote)
    guarded(go)


@app.command()
def report(config: ConfigOpt = Path("taskling.yaml"), run: RunOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild runs/<id>/report.html and report.json from what the stages wrote.

    Example: taskling report && xdg-open runs/*/report.html
    """
    def go():
        ws = Workspace(make_ctx(config, None, run))
        rep = ws.report()
        err.print(f"report: {ws.run_dir / 'report.html'}")
        emit(rep, as_json)
    guarded(go)


@gold_app.command("import")
def gold_import(file: Annotated[Path, typer.Argument(help="A CSV, TSV, JSONL or XLSX file of labelled items.")],
                input_: Annotated[str, typer.Option("--input", help="The column holding the input.")] = "input",
                output: Annotated[str, typer.Option("--output", help="The column holding the output.")] = "output",
                sheet: Annotated[Optional[str], typer.Option(help="XLSX: the sheet (default: the first).")] = None,
                fraction: Annotated[float, typer.Option(help="Only this seeded share of the items; seed_data: "
                                                        "FILE then trains on the rest.")] = 1.0,
                config: ConfigOpt = Path("taskling.yaml"), as_json: JsonOpt = False) -> None:
    """Add a file of items you labelled to gold.jsonl (those already there are skipped); never trained on.

    Example: taskling gold import tickets.xlsx --input text --output team --fraction 0.2
    """
    def go():
        res = Workspace(make_ctx(config, None, None)).import_gold(file, input_, output, sheet, fraction)
        moved = res["no_longer_trained_on"]
        err.print(f"gold: {res['imported']} items added ({res['gold_items']} in {res['gold']}); {res['already_in_gold']} "
                  f"were there, {res['left_out']} left out" + (f"; {moved} were seed_data and leave training" if moved else ""))
        emit(res, as_json)
    guarded(go)


RoundOpt = Annotated[Optional[int], typer.Option("--round", help="The round (default: the one the loop kept, else 0).")]


@rules_app.command("show")
def rules_show(config: ConfigOpt = Path("taskling.yaml"), run: RunOpt = None, round_: RoundOpt = None,
               as_json: JsonOpt = False) -> None:
    """The rules curate mined: each one's label, words, the label model's estimate of its accuracy and
    coverage (no gold) and its accuracy measured on gold.

    Example: taskling rules show
    """
    def go():
        res = Workspace(make_ctx(config, None, run, lock=False)).mined_rules(round_)
        if as_json:
            return emit(res, True)
        if not res["rules"]:
            err.print("no mined rules (curate writes them for a classify task with label.auto on)")
            return
        table = Table("rule", "label", "estimated", "coverage", "on gold", "words")
        for r in res["rules"]:
            gold = r.get("measured")
            table.add_row(str(r.get("name")), str(r.get("label")), fmt(r.get("estimated")), fmt(r.get("coverage")),
                          "-" if gold is None else f"{gold:.2f} (n={r.get('measured_n')})",
                          ", ".join(map(str, r.get("keywords") or [])))
        err.print(table)
        err.print(f"file: {res['file']}  (edit it, then: taskling rules promote)", highlight=False)
    guarded(go)


def fmt(x: object) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


@rules_app.command("promote")
def rules_promote(file: Annotated[Optional[Path], typer.Argument(help="The rules file (default: the round's "
                                                                  "mined_rules.yaml).")] = None,
                  only: Annotated[Optional[str], typer.Option("--only", help="Only these rules, a,b.")] = None,
                  config: ConfigOpt = Path("taskling.yaml"), run: RunOpt = None, as_json: JsonOpt = False) -> None:
    """Copy mined rules (with your edits) into taskling.yaml's label.rules, where they act as rules you
    wrote; the rest of the file and its comments stay as they were.

    Example: taskling rules promote --only mined-billing
    """
    def go():
        res = Workspace(make_ctx(config, None, run)).promote_rules(file, split(only) or None, config)
        err.print(f"promoted {len(res['promoted'])} rule(s) into {res['config']}: {', '.join(res['promoted'])}")
        emit(res, as_json)
    guarded(go)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
