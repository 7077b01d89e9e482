"""One writer per workspace: an advisory lock on .taskling/lock that names who holds it.

Two `taskling ingest` runs at once would each chunk the same pile their own way under one
manifest; two `taskling run`s would train over each other's examples. So every command that
writes the workspace, and every stage run from Python, holds this lock:

    with workspace_lock(root, "taskling ingest"):
        ...

A second process gets a one-line error naming the holder (pid, command, since when) instead of
waiting. The lock is flock(2) on .taskling/lock: the kernel releases it when its process ends,
however it ends (kill -9 included), so a stale lock never needs cleaning up; the file's text
(who holds it) is only read to write the message. Within one process the lock is re-entrant
(the loop runs stages that each take it). Readers (taskling ui, pile search, log) take no lock:
SQLite's WAL keeps them consistent while a writer works.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .errors import TasklingError

LOCK_NAME = "lock"
HELD: dict[Path, list] = {}   # resolved lock path -> [open file, depth]: this process's locks
GUARD = threading.Lock()


class WorkspaceBusy(TasklingError):
    """Another process holds the workspace."""


def lock_path(root: Path) -> Path:
    state = Path(root) / ".taskling"
    state.mkdir(parents=True, exist_ok=True)
    return (state / LOCK_NAME).resolve()


def holder(path: Path) -> dict:
    """Who holds the lock, as the holder wrote it ({} when unreadable)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    if not info.get("pid"):
        return "another taskling process"
    since = info.get("since", "")
    try:
        ago = time.time() - datetime.fromisoformat(since).timestamp()
        since = f"{since} ({ago:.0f} s ago)"
    except (TypeError, ValueError):
        pass
    return f"pid {info['pid']} ('{str(info.get('command', '?'))[:200]}'), since {since}"


def acquire(root: Path, command: str | None = None) -> Path:
    """Take the workspace's lock for this process (again, if it holds it already); WorkspaceBusy
    names the other process when it cannot."""
    path = lock_path(root)
    with GUARD:
        if path in HELD:
            HELD[path][1] += 1
            return path
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            info = holder(path)
            raise WorkspaceBusy(f"{path.parent.parent}: the workspace is in use by {describe(info)}; wait for it to "
                                f"finish, or stop it (kill {info.get('pid', 'PID')}) if it is stuck, then run this "
                                "again") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "command": command or " ".join(["taskling", *sys.argv[1:]]),
                            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        f.flush()
        HELD[path] = [f, 1]
        return path


def release(path: Path) -> None:
    with GUARD:
        entry = HELD.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del HELD[path]
            with contextlib.suppress(OSError):
                entry[0].truncate(0)  # nobody holds it: no name to show
            entry[0].close()  # closing the file drops the flock


@contextlib.contextmanager
def workspace_lock(root: Path, command: str | None = None) -> Iterator[Path]:
    path = acquire(root, command)
    try:
        yield path
    finally:
        release(path)
