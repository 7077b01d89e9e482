"""The thread that owns the model, and the jobs requests hand it.

A llama.cpp context, like torch generation with a global seed, is not thread-safe: one worker
thread runs requests one at a time in arrival order, at most serve.queue wait (more get 503),
and a request that timed out or whose client left is skipped or stopped at its next token.
"""
from __future__ import annotations

import asyncio
import queue
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
    at most `capacity` wait, and a cancelled request (timed out, client gone) is skipped
    or stopped at its next token."""

    def __init__(self, engine: eng.Engine, capacity: int):
        self.engine = engine
        self.capacity = capacity
        self.jobs: queue.Queue = queue.Queue(maxsize=capacity)
        self.running = 0
        self.thread = threading.Thread(target=self._loop, name="taskling-model", daemon=True)
        self.thread.start()

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(503, f"the server is busy: {self.capacity} requests are already waiting (serve.queue); "
                           "retry shortly", type_="server_error", code="queue_full") from None

    def stop(self) -> None:
        self.jobs.put(None)

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            self.running = 1
            try:
                with self.engine.lock:
                    job.emit("done", job.fn(job))
            except Exception as e:  # handed to the request, which turns it into an HTTP error
                job.emit("error", e)
            finally:
                self.running = 0
