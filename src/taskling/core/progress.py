"""Progress bars with an ETA for long work (rich), quiet when not on a terminal.

Every bar also publishes its tasks (done, total, ETA, info) to a JSON file when one is set with
`publish_to` (the workspace's .taskling/progress.json): `taskling ui` shows it live.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

_SINK: dict = {"path": None}
EVERY_S = 0.5  # at most this often to disk


def publish_to(path: Path | None) -> None:
    """Where bars publish their progress (None: nowhere)."""
    _SINK["path"] = path


class Published(Progress):
    """A rich Progress that also writes its tasks to the sink, throttled, and once more when it ends."""

    _last = 0.0

    def update(self, task_id, **kw) -> None:
        super().update(task_id, **kw)
        self.publish()

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.publish()

    def stop(self) -> None:
        super().stop()
        self.publish(force=True, running=False)

    def publish(self, force: bool = False, running: bool = True) -> None:
        path = _SINK["path"]
        now = time.monotonic()
        if path is None or (not force and now - self._last < EVERY_S):
            return
        self._last = now
        tasks = [{"name": t.description, "done": t.completed, "total": t.total,
                  "elapsed_s": round(t.elapsed or 0.0, 1),
                  "eta_s": None if t.time_remaining is None else round(t.time_remaining, 1),
                  "info": str(t.fields.get("info", ""))} for t in self.tasks]
        body = json.dumps({"running": running, "pid": os.getpid(), "at": time.time(), "tasks": tasks})
        try:
            tmp = Path(path).with_suffix(".tmp")
            tmp.write_text(body, encoding="utf-8")
            tmp.replace(path)
        except OSError:  # progress is a courtesy: never fail the work for it
            pass


def bar(console: Console) -> Progress:
    return Published(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )
