"""The thread that owns the model, and the jobs requests hand it.

A llama.cpp context, like torch generation with a global seed, is not thread-safe: one worker
thread runs requests one at a time in arrival order, at most serve.queue wait (more get 503),
and a request that timed out or whose client left leaves the queue at once (it no longer counts
against serve.queue) or is stopped at its next token. The thread has a large stack: llama.cpp
parses grammars recursively (serving.limits keeps them far below what even this one holds).
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Callable

from . import engine as eng
from .schema import APIError


class Job:
    """One request's work for the model thread, and the events it sends back to the
    event loop: ("text", piece) while generating, then ("done", result) or ("error", exc)."""

    def __init__(self, fn: Callable[["Job"], object], loop: asyncio.AbstractEventLoop, timeout_s: float):
        self.fn, self.loop = fn, loop
        self.deadline = time.monotonic() + timeout_s
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def dead(self) -> bool:
        """Nobody waits for this job any more: cancelled, or past its deadline."""
        return self.cancelled.is_set() or time.monotonic() > self.deadline

    def emit(self, kind: str, value: object = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def text(self, piece: str) -> None:
        self.emit("text", piece)

    async def next(self) -> tuple[str, object]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(self.events.get(), left)


class Worker:
    """The thread that owns the model. Requests run one at a time in arrival order (a
    llama.cpp context, like torch generation with a global seed, is not thread-safe);
    at most `capacity` wait, and a cancelled request (timed out, client gone) leaves the
    queue or is stopped at its next token."""

    STACK = 64 * 2**20

    def __init__(self, engine: eng.Engine, capacity: int):
        self.engine = engine
        self.capacity = capacity
        self.jobs: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.running = 0
        old = threading.stack_size(self.STACK)
        try:
            self.thread = threading.Thread(target=self._loop, name="taskling-model", daemon=True)
            self.thread.start()
        finally:
            threading.stack_size(old)

    @property
    def waiting(self) -> int:
        with self.cond:
            self._drop_dead()
            return len(self.jobs)

    def _drop_dead(self) -> None:
        """Jobs nobody waits for leave the queue (called with the lock held)."""
        if any(j.dead() for j in self.jobs):
            self.jobs = collections.deque(j for j in self.jobs if not j.dead())

    def submit(self, job: Job) -> None:
        with self.cond:
            self._drop_dead()
            if len(self.jobs) >= self.capacity:
                raise APIError(503, f"the server is busy: {self.capacity} requests are already waiting (serve.queue); "
                               "retry shortly", type_="server_error", code="queue_full")
            self.jobs.append(job)
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _next(self) -> Job | None:
        with self.cond:
            while True:
                self._drop_dead()
                if self.stopping:
                    return None
                if self.jobs:
                    return self.jobs.popleft()
                self.cond.wait()

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            self.running = 1
            try:
                with self.engine.lock:
                    job.emit("done", job.fn(job))
            except Exception as e:  # handed to the request, which turns it into an HTTP error
                job.emit("error", e)
            finally:
                self.running = 0
