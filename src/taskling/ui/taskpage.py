"""The Task page's side of the UI: taskling.yaml shown and saved with the command line's validation
(the same load_config, the same one-line message with its did-you-mean), either whole or through
the page's fields (name, type, description, input noun, labels, examples, sources: `form_of`,
`save_form`, each changed field set in the file's text with its comments kept, core.yamledit), and
runs started from the page: one `taskling <stage>` (or `taskling run`) process at a time per
workspace, whose progress the header's stream already shows, its output kept in .taskling/ui-run.log.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request

from ..core import tasktype
from ..core.config import load_config
from ..core.errors import TasklingError
from ..core.yamledit import set_key
from .session import Session

RUNNABLE = ("ingest", "generate", "curate", "train", "evaluate", "export", "run")
CLI = (sys.executable, "-m", "taskling.cli")  # what a run is: `taskling <stage>`
STOP_GRACE_S = 30.0  # an interrupted run's clean-up (its last checkpoint saved) before its processes are killed
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


LINES = ("name", "type", "description", "input_noun")  # the task's keys edited as one field each


def form_of(path: Path) -> dict | None:
    """The page's fields as the file has them now (None when it has no task: mapping to read them from)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    if not isinstance(task, dict):
        return None
    shown = lambda v: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)  # noqa: E731
    examples = [ex for ex in task.get("examples") or [] if isinstance(ex, dict)]
    sources = data.get("sources")
    return {**{k: shown(task[k]) if k in task else "" for k in LINES},
            "labels": [[str(k), shown(v)] for k, v in labels_of(task.get("labels")).items()],
            "examples": [{"input": shown(ex.get("input", "")), "output": shown(ex.get("output", ""))} for ex in examples],
            "sources": [str(x) for x in (sources if isinstance(sources, list) else [sources] if sources else [])]}


def labels_of(value: Any) -> dict:
    """task.labels as the config reads it: a list means each label is its own description."""
    if isinstance(value, list):
        return {str(x): str(x) for x in value}
    return dict(value) if isinstance(value, dict) else {}


def wanted(form: dict, structured: bool) -> dict[tuple[str, ...], Any]:
    """The file's values the fields ask for, by key path; rows left blank are dropped. TasklingError
    for what only the page can get wrong (a label named twice, a field that is not text)."""
    def text(v: Any, what: str) -> str:
        if not isinstance(v, str):
            raise TasklingError(f"{what} must be text")
        return v.strip()

    out: dict[tuple[str, ...], Any] = {("task", k): text(form.get(k, ""), k) for k in LINES}
    labels: dict[str, str] = {}
    for row in form.get("labels") or []:
        if not isinstance(row, list) or len(row) != 2:
            raise TasklingError("each label is a row of two fields: its name and what belongs there")
        name, desc = (text(x, "a label") for x in row)
        if name in labels:
            raise TasklingError(f"label '{name}' is named twice; give each label one row")
        if desc and not name:
            raise TasklingError(f"the label described as '{desc[:40]}' has no name; name it, or clear its row")
        if name:
            labels[name] = desc or name
    out[("task", "labels")] = labels
    examples = []
    for row in form.get("examples") or []:
        row = row if isinstance(row, dict) else {}
        given, said = text(row.get("input", ""), "an example's input"), text(row.get("output", ""), "an example's output")
        if given or said:
            examples.append({"input": given, "output": output_of(said, structured)})
    out[("task", "examples")] = examples
    out[("sources",)] = [x for x in (text(x, "a source") for x in form.get("sources") or []) if x]
    return out


def output_of(said: str, structured: bool) -> Any:
    """An example's output as the file keeps it: a JSON object's fields for extract, else the text."""
    if structured and said.startswith("{"):
        try:
            obj = json.loads(said)
        except ValueError:
            return said  # not JSON: kept as the text it is
        return obj if isinstance(obj, dict) else said
    return said


def save_form(path: Path, form: dict) -> dict:
    """The fields written into the task file (only those that changed, each in place, the file's
    comments kept), saved as `save_task` saves: refused with the CLI's message if it would not load."""
    text = path.read_text(encoding="utf-8")
    if form_of(path) is None:
        load_config(path)  # says what is wrong with the file, as the command line would
        raise TasklingError(f"{path.name} has no task: section to edit; write one in the file below")
    now = yaml.safe_load(text)
    try:
        structured = tasktype.get(str(form.get("type", ""))).structured
    except TasklingError:
        structured = False  # an unknown type: load_config below names the nearest
    for keys, value in wanted(form, structured).items():
        old = now.get("sources") if keys == ("sources",) else (now.get("task") or {}).get(keys[1])
        old = labels_of(old) if keys[-1] == "labels" else old.strip() if isinstance(old, str) else old
        if old != value and not (old is None and value in ("", [], {})):
            text = set_key(text, keys, value)
    return save_task(path, text)


class Jobs:
    """The one run the page may have going: its process, its stage, its log."""

    def __init__(self, root: Path, log: Path, command: tuple[str, ...] = CLI):
        self.root, self.log, self.command = root, log, command
        self.proc: subprocess.Popen | None = None
        self.stage: str | None = None
        self.started = 0.0

    def start(self, stage: str) -> dict:
        if stage not in RUNNABLE:
            raise TasklingError(f"'{stage}' is not something to run; use one of {', '.join(RUNNABLE)}")
        if self.proc is not None and self.proc.poll() is None:
            raise TasklingError(f"'taskling {self.stage}' is still running: one run at a time per workspace")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own copy of the descriptor
            # a session of its own: a Ctrl-C at the UI's terminal is the UI's to pass on (close), once
            self.proc = subprocess.Popen([*self.command, stage], cwd=self.root, start_new_session=True,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
        self.stage, self.started = stage, time.time()
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
        """The UI is going away: a run it started is interrupted, once (it continues when started again),
        and what is left of its process group after STOP_GRACE_S is killed: the run, and its own workers.
        A run that ended by itself may have left workers in its group: they are killed too."""
        if self.proc is None:
            return
        group = self.proc.pid  # the run leads its session's one group (start)
        if self.proc.poll() is not None:
            for pid in members(group, self.started):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        signal_group(group, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while not exited(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal_group(group, signal.SIGKILL)  # the run, ended but not reaped yet, keeps the group's id its own
        self.proc.wait()


def exited(pid: int) -> bool:
    """Whether the child `pid` has ended, leaving it to be reaped (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already (a status() poll)


def members(group: int, since: float) -> list[int]:
    """The live processes in process group `group` started at `since` or later: the workers a finished run
    left behind. Its leader is gone, so its id may since lead an unrelated group: the start time tells."""
    import psutil

    out = []
    for p in psutil.process_iter(["create_time", "status"]):
        try:
            if os.getpgid(p.pid) == group and p.info["create_time"] >= since - 1 and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass  # every process of the group has ended


def task_routes(app: FastAPI, ui: Session) -> Jobs:
    """GET/POST /api/task (the task file), GET/POST /api/job (the page's run)."""
    path = ui.root / "taskling.yaml"
    jobs = Jobs(ui.root, ui.ctx.ws.state / "ui-run.log")

    @app.get("/api/task")
    def task():
        return {"yaml": path.read_text(encoding="utf-8"), "path": path.name, "runnable": list(RUNNABLE),
                "form": form_of(path), "types": tasktype.names()}

    @app.post("/api/task")
    async def save(request: Request):
        body = await ui.posted(request, "yaml", "{yaml}")
        return save_task(path, body["yaml"])

    @app.post("/api/task/form")
    async def save_fields(request: Request):
        body = await ui.posted(request, "form", "{form: {...}}", kind=dict)
        return save_form(path, body["form"])

    @app.get("/api/job")
    def job():
        return jobs.status()

    @app.post("/api/job")
    async def run(request: Request):
        body = await ui.posted(request, "stage", "{stage}")
        return jobs.start(body["stage"])

    return jobs
