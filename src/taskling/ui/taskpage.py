"""The Task page's side of the UI: taskling.yaml shown and saved with the command line's validation
(the same load_config, the same one-line message with its did-you-mean), and runs started from the
page: one `taskling <stage>` (or `taskling run`) process at a time per workspace, whose progress the
header's stream already shows, its output kept in .taskling/ui-run.log.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI, Request

from ..core.config import load_config
from ..core.errors import TasklingError
from .session import Session

RUNNABLE = ("ingest", "generate", "curate", "train", "evaluate", "export", "run")
MAX_YAML_CHARS = 200_000


def save_task(path: Path, text: str) -> dict:
    """Write `text` as the task file if it loads as the CLI loads it; else TasklingError with the CLI's
    message, and the file as it was."""
    if len(text) > MAX_YAML_CHARS:
        raise TasklingError(f"the task file is {len(text)} characters; at most {MAX_YAML_CHARS}")
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(tmp)
    except TasklingError as e:
        tmp.unlink()
        raise TasklingError(str(e).replace(str(tmp), path.name)) from None
    tmp.replace(path)
    return {"saved": path.name, "task": cfg.task.name, "type": cfg.task.type}


class Jobs:
    """The one run the page may have going: its process, its stage, its log."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.proc: subprocess.Popen | None = None
        self.stage: str | None = None

    def start(self, stage: str) -> dict:
        if stage not in RUNNABLE:
            raise TasklingError(f"'{stage}' is not something to run; use one of {', '.join(RUNNABLE)}")
        if self.proc is not None and self.proc.poll() is None:
            raise TasklingError(f"'taskling {self.stage}' is still running: one run at a time per workspace")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "taskling.cli", stage], cwd=self.root,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
        self.stage = stage
        return self.status()

    def status(self) -> dict:
        if self.proc is None:
            return {"stage": None, "running": False, "exit_code": None, "log": []}
        code = self.proc.poll()
        try:
            tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        except OSError:
            tail = []
        return {"stage": self.stage, "running": code is None, "exit_code": code, "log": tail}

    def close(self) -> None:
        """The UI is going away: a run it started is interrupted (it continues when started again)."""
        if self.proc is not None and self.proc.poll() is None:
            import signal

            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def task_routes(app: FastAPI, ui: Session) -> Jobs:
    """GET/POST /api/task (the task file), GET/POST /api/job (the page's run)."""
    path = ui.root / "taskling.yaml"
    jobs = Jobs(ui.root, ui.ctx.ws.state / "ui-run.log")

    @app.get("/api/task")
    def task():
        return {"yaml": path.read_text(encoding="utf-8"), "path": path.name, "runnable": list(RUNNABLE)}

    @app.post("/api/task")
    async def save(request: Request):
        body = await ui.posted(request, "yaml", "{yaml}")
        return save_task(path, body["yaml"])

    @app.get("/api/job")
    def job():
        return jobs.status()

    @app.post("/api/job")
    async def run(request: Request):
        body = await ui.posted(request, "stage", "{stage}")
        return jobs.start(body["stage"])

    return jobs
