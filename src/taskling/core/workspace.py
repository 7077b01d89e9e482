"""The user's workspace on disk, the context every stage gets, and the stage runner that caches by fingerprint.

    taskling.yaml, gold.jsonl
    .taskling/pile.db, .taskling/calls.db
    runs/<run-id>/round-<k>/<stage>/manifest.json   (written last, atomically)
    runs/<run-id>/round-0/ingest, runs/<run-id>/export (one per run, not per round)

`run_stage` skips a stage whose manifest has the same fingerprint, clears a
stage directory whose partial state belongs to other settings, and otherwise
lets the stage body resume from whatever it left there. Stages reach it through
`core.stage.run`, which builds the fingerprint from what the stage declares.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterable

from rich.console import Console

from .config import Config
from .errors import TasklingError
from .executor import Executor, LocalExecutor
from .manifests import BY_STAGE, Manifest

STAGES = ("ingest", "generate", "curate", "train", "evaluate", "export")


def fingerprint(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f, chunk)


def sha256_stream(f, chunk: int = 1 << 20) -> str:
    """The sha256 of what is left to read in the open binary file `f` (read to its end)."""
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (killed writer) is ignored."""
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rest = f.read().strip()
                if rest:  # not a torn tail: a real error in the middle of the file
                    raise TasklingError(f"{path}: line {n} is not valid JSON; fix or delete that line") from None
    return rows


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("taskling", "torch", "transformers", "peft", "llama_cpp_python"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


@dataclass
class Workspace:
    root: Path

    @property
    def state(self) -> Path:
        p = self.root / ".taskling"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def pile_db(self) -> Path:
        return self.state / "pile.db"

    @property
    def calls_db(self) -> Path:
        return self.state / "calls.db"

    @property
    def gold(self) -> Path:
        return self.root / "gold.jsonl"

    @property
    def reviews(self) -> Path:
        """A person's review decisions (taskling curate --import; the UI's review page)."""
        return self.state / "review.jsonl"

    @property
    def boosts(self) -> Path:
        """Arms a person asked more budget for (allocate.boost; the UI's failures page)."""
        return self.state / "boosts.jsonl"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id


@dataclass(frozen=True)
class Context:
    """What every stage gets besides the config: where, which run and round, how loud, on what.

    Frozen: a round is a new context (`ctx.at_round(k)`), and the loop makes the context with the
    run's deadline once it knows it."""

    cfg: Config
    run_id: str | None = None
    round: int = 0
    force: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True))
    threads: int | None = None  # operational: not part of any fingerprint
    deadline: float | None = None  # time.monotonic() by which generation stops (the run's wall-time budget)
    executor: Executor = field(default_factory=LocalExecutor)  # how stages spread work (operational)

    def __post_init__(self) -> None:
        from .progress import publish_to

        if not self.run_id:  # still constructing: the one field with a default made from another
            object.__setattr__(self, "run_id", slug(self.cfg.task.name))
        publish_to(self.ws.state / "progress.json")  # progress bars show there too (taskling ui)

    @property
    def ws(self) -> Workspace:
        return Workspace(self.cfg.root)

    def at_round(self, k: int) -> Context:
        return dataclasses.replace(self, round=k)

    @property
    def run_dir(self) -> Path:
        return self.ws.run_dir(self.run_id)

    def stage_dir(self, stage: str, round: int | None = None) -> Path:
        if stage == "export":  # the run's deliverable lives at runs/<id>/export
            return self.run_dir / "export"
        if stage == "ingest":  # one pile per workspace: its stage lives in round 0 and serves every round
            return self.run_dir / "round-0" / "ingest"
        return self.run_dir / f"round-{self.round if round is None else round}" / stage

    def manifest(self, stage: str, round: int | None = None) -> Manifest:
        """The finished manifest of an earlier stage (typed), or a message saying what to run."""
        m = BY_STAGE[stage].read(self.stage_dir(stage, round))
        if m is None:
            raise TasklingError(
                f"{self.stage_dir(stage, round)}: the {stage} stage has not finished for run '{self.run_id}'; "
                f"run 'taskling {stage}' (or 'taskling run') first"
            )
        return m


def digest_files(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        if p.is_file():
            h.update(p.name.encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


StageBody = Callable[[Path], dict]


def open_stage_dir(ctx: Context, stage: str, settings: dict, inputs: dict, keep_done: bool = False) -> Path:
    """The stage's folder, ready for (resumed) work with these settings: partial
    work from the same fingerprint is kept, anything else removed. With
    `keep_done`, a finished stage of the same fingerprint is left alone too."""
    out = ctx.stage_dir(stage)
    fp = fingerprint({"stage": stage, "settings": settings, "inputs": inputs})
    marker = out / ".fingerprint"
    same = marker.exists() and marker.read_text().strip() == fp
    if out.exists() and (not same or (ctx.force and not keep_done)):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write_text(marker, fp + "\n")
    return out


def run_stage(ctx: Context, stage: str, settings: dict, inputs: dict, body: StageBody,
              model: type[Manifest] | None = None) -> Manifest:
    """`run_unlocked` holding the workspace's lock (core.lock): one writer per workspace."""
    from .lock import workspace_lock

    with workspace_lock(ctx.cfg.root, f"taskling {stage} (run {ctx.run_id}, round {ctx.round})"):
        return run_unlocked(ctx, stage, settings, inputs, body, model)


def run_unlocked(ctx: Context, stage: str, settings: dict, inputs: dict, body: StageBody,
                 model: type[Manifest] | None = None) -> Manifest:
    """Run `body(out_dir)` unless a finished manifest has the same fingerprint.

    `body` returns the stage's own manifest fields ({"counts": {...}, ...}) and
    "outputs" (file names); the runner adds fingerprint, settings, inputs, timings
    and versions, checks the whole against the stage's manifest model and writes
    it last. Partial work in out_dir from the same fingerprint is kept so the
    body can resume; partial work from other settings is removed.
    """
    model = model or BY_STAGE[stage]
    out = ctx.stage_dir(stage)
    fp = fingerprint({"stage": stage, "settings": settings, "inputs": inputs})
    done = model.read(out)
    if done is not None and done.fingerprint == fp and not ctx.force:
        ctx.console.print(f"[dim]{stage}: up to date (fingerprint {fp[:12]}), skipped; --force re-runs it[/]")
        return done.model_copy(update={"skipped": True})
    open_stage_dir(ctx, stage, settings, inputs)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    result = body(out)
    seconds = round(time.perf_counter() - t0, 3)
    outputs = result.pop("outputs", [])
    manifest = model.model_validate({
        "stage": stage, "run_id": ctx.run_id, "round": ctx.round, "fingerprint": fp,
        "settings": settings, "inputs": inputs, **result, "outputs": outputs,
        "digest": digest_files(out / o for o in outputs),
        "started": started.isoformat(timespec="seconds"), "seconds": seconds, "versions": versions(),
    })
    atomic_write_json(out / "manifest.json", manifest.on_disk())
    return manifest.model_copy(update={"skipped": False})


def earlier(ctx: Context, *stages: str) -> dict:
    """Fingerprint inputs from the previous round's finished stages (nothing in round 0)."""
    if ctx.round == 0:
        return {}
    out = {}
    for s in stages:
        m = BY_STAGE[s].read(ctx.stage_dir(s, ctx.round - 1))
        if m is None:
            raise TasklingError(f"round {ctx.round} needs the {s} stage of round {ctx.round - 1}, which has not "
                                f"finished; run 'taskling run' to go through the rounds in order")
        out[f"{s}@{ctx.round - 1}"] = {"fingerprint": m.fingerprint, "digest": m.digest}
    return out


def upstream(ctx: Context, *stages: str) -> dict:
    """Fingerprint inputs for a stage: the finished manifests it reads from."""
    out = {}
    for s in stages:
        m = ctx.manifest(s)
        out[s] = {"fingerprint": m.fingerprint, "digest": m.digest}
    return out
