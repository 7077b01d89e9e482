"""predict: the served model's task over a CSV or JSONL file.

    taskling predict FILE [--output OUT] [--model RUN|MODEL|BUNDLE] [--batch-size N] [--json]

CSV needs an `input` column, JSONL an `input` key; every other column or key is kept.
The output has the input's format with the task's answer added, computed exactly as
/v1/task computes it: `prediction` (the label, the JSON object, or the text) and, for
classify, `probability` (JSONL rows also get `probabilities`, per label). An open-book model
(task.json names its retriever) reads the chunks the workspace's pile (or, elsewhere, the index
exported beside it) gives each input first, and each row also gets `citations` (JSONL rows also
the `documents` it was shown).

Rows are written a batch at a time and flushed to disk, so a run that is killed can
be started again with the same command: rows already in the output are checked
against the input and skipped, a torn last row is dropped, and the rest is appended.
Batches are answered by the executor's workers (`PredictWorker`): in this process, or
on a cluster's nodes (each loads the model, which must be readable there), and written
here in row order.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from rich.console import Console

from ..core.config import ServeCfg
from ..core.errors import TasklingError
from ..core.executor import Executor, LocalExecutor, Shard, failure, in_order
from ..core.progress import bar
from ..core.workspace import atomic_write_text, read_jsonl
from ..data.retrieve import Retriever
from .engine import NO_TASK
from .outputs import open_book_pile, served_decoding, task_outputs
from .target import Target, load, resolve

EXTRA = ("prediction", "probability", "citations")


def input_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise TasklingError(f"{path}: use a .csv (with an 'input' column) or a .jsonl file ({{\"input\": ...}} per line)")


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (UnicodeDecodeError, csv.Error) as e:
        raise TasklingError(f"{path}: not a readable UTF-8 CSV ({e})") from None


def read_inputs(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the input; every row must have a non-empty input."""
    if not path.exists():
        raise TasklingError(f"{path}: file not found")
    fmt = input_format(path)
    columns, rows = read_csv(path) if fmt == "csv" else ([], read_jsonl(path))
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not str(r.get("input") or "").strip():
            raise TasklingError(f"{path}: row {n} has no 'input'")
    taken = [c for c in EXTRA if c in columns or any(c in r for r in rows[:1])]
    if taken:
        raise TasklingError(f"{path}: already has a '{taken[0]}' column, which predict writes; rename it")
    return columns, rows


def default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem}.predictions{'.csv' if input_format(path) == 'csv' else '.jsonl'}")


def answer_fields(out: dict, fmt: str) -> dict:
    """What a row gets from one task answer, as the output format can hold it (an open-book answer's
    citations: the chunks, or in CSV `path#locator` joined by ` | `)."""
    pred = out["output"]
    if fmt == "jsonl":
        keep = {k: out[k] for k in ("probability", "probabilities", "citations", "documents") if k in out}
        return {"prediction": pred, **keep}
    cell = "" if pred is None else pred if isinstance(pred, str) else json.dumps(pred, ensure_ascii=False)
    cites = {"citations": " | ".join(f"{c['path']}#{c['locator']}" for c in out["citations"])} \
        if "citations" in out else {}
    return {"prediction": cell, **({"probability": out["probability"]} if "probability" in out else {}), **cites}


def done_rows(output: Path, fmt: str, rows: list[dict], columns: list[str] | None) -> list[dict]:
    """Rows a previous run already wrote, checked against the input. A torn last row (the
    writer was killed) is dropped and the file rewritten without it."""
    if not output.exists() or output.stat().st_size == 0:
        return []
    raw = output.read_text(encoding="utf-8")
    if fmt == "csv" and "\n" not in raw:  # killed while writing the header
        return []
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(raw))
        written = list(reader)
        if reader.fieldnames != columns:
            raise TasklingError(f"{output}: its columns {reader.fieldnames} are not the ones this run writes "
                                f"({columns}); it was written for another file or task: delete it or pass --output")
    else:
        written = read_jsonl(output)
    if not raw.endswith("\n") and written:
        written = written[:-1]
        atomic_write_text(output, render(written, fmt, columns, header=True))
    if len(written) > len(rows):
        raise TasklingError(f"{output}: has {len(written)} rows but the input has {len(rows)}; delete it or pass --output")
    for n, (w, r) in enumerate(zip(written, rows), 1):
        if not isinstance(w, dict) or "prediction" not in w or str(w.get("input")) != str(r["input"]):
            raise TasklingError(f"{output}: row {n} is not the answer to row {n} of the input; it was written "
                                "for another file: delete it or pass --output")
    return written


def render(rows: list[dict], fmt: str, columns: list[str] | None, header: bool) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def append(output: Path, text: str) -> None:
    with open(output, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class PredictWorker:
    """Answers rows with the served model wherever the executor runs it (the model file must be readable there;
    an open-book model's pile too, `pile_db`)."""

    def __init__(self, target: Target, threads: int | None, pile_db: Path | None = None):
        self.error, self.engine, self.book = None, None, None
        try:
            self.target, self.engine = target, load(target, threads)
            if pile_db is not None:
                self.book = Retriever.from_settings(target.info["retrieval"], pile_db, threads)
        except Exception as e:  # reported by ready()
            self.error = failure(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"pid": os.getpid()}

    def run(self, inputs: list[str]) -> list[dict]:
        return task_outputs(self.engine, self.target.info, inputs, book=self.book)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.book is not None:
            self.book.close()


def predict_file(path: Path, output: Path | None, target: str | None, root: Path, console: Console, *,
                 cfg: ServeCfg = ServeCfg(), backend: str | None = None, batch_size: int = 16,
                 threads: int | None = None, executor: Executor | None = None) -> dict:
    """Answer every row of `path` with the task, appending to `output` as it goes, one batch at a
    time by the executor's workers (default: in this process)."""
    executor = executor or LocalExecutor()
    path = Path(path)
    fmt = input_format(path)
    in_columns, rows = read_inputs(path)
    output = Path(output) if output else default_output(path)
    if output.resolve() == path.resolve():
        raise TasklingError(f"{output}: the output cannot be the input file; pass another --output")
    t = resolve(target, Path(root), backend or cfg.backend, cfg.quant, explicit=backend is not None)
    for note in t.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    decoding = served_decoding(t.info)
    if decoding is None:
        raise TasklingError(f"{t.source}: {NO_TASK}")
    pile_db = open_book_pile(t, Path(root), console)
    columns = in_columns + ["prediction"] + (["probability"] if decoding.labels is not None else []) + (
        ["citations"] if pile_db is not None else [])
    done = len(done_rows(output, fmt, rows, columns if fmt == "csv" else None))
    t0, spread = time.perf_counter(), None
    if done < len(rows):
        if done == 0:
            atomic_write_text(output, render([], fmt, columns, header=True))
        starts = list(range(done, len(rows), batch_size))
        with bar(console) as progress:
            job = progress.add_task("predict", total=len(rows), completed=done, info=f"{t.model_id} ({t.backend})")

            def write(i: int, outs: list[dict]) -> None:
                batch = rows[starts[i]:starts[i] + batch_size]
                append(output, render([{**r, **answer_fields(o, fmt)} for r, o in zip(batch, outs)], fmt, columns,
                                      header=False))
                progress.update(job, completed=starts[i] + len(batch))

            with console.status(f"loading {t.path.name} ({t.backend})"):
                pool = executor.pool("predict", PredictWorker, (t, executor.worker_threads(threads), pile_db))
            ordered = in_order(len(starts), write)
            shards = [Shard(f"rows-{b:07d}", len(rows[b:b + batch_size]), i) for i, b in enumerate(starts)]
            try:
                pool.map(shards, lambda s, outs: ordered(s.payload, outs),
                         load=lambda s: [str(r["input"]) for r in rows[starts[s.payload]:starts[s.payload] + batch_size]])
                ordered.check()
                spread = pool.report()
            finally:
                pool.close()
    seconds = time.perf_counter() - t0
    new = len(rows) - done
    console.print(f"predict: {new} rows answered" + (f", {done} already done" if done else "") + f" -> {output}")
    return {"rows": len(rows), "predicted": new, "skipped": done, "output": str(output), "format": fmt,
            "model": t.model_id, "backend": t.backend, "file": str(t.path), "seconds": round(seconds, 2),
            "items_per_s": round(new / seconds, 2) if new and seconds > 0 else None,
            **({"cluster": spread} if spread else {})}

