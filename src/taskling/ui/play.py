"""The UI's playground: one input answered by the tuned student, its base and the teacher.

Each system is prompted exactly as `evaluate` prompts it (serving.systems), so what
a person sees here is what the scores measure. An open-book task's student and base read first
(student-open and base-open: the one retriever, the prompt predict and serve use) and answer with
their citations (document, locator, the span the answer rests on). The student is the newest
round's trained model of the run; it is loaded on first use and loaded again when a later round
finishes. The teacher's calls go through the call log (purpose "playground") like every other call,
so they are cached, priced and auditable. One thread answers (`answer_on_thread`): a 2-core laptop
answers one at a time, and the retriever's SQLite connection is used on the thread that opened it.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .. import tasks
from ..core import tasktype
from ..core.errors import TasklingError
from ..core.manifests import TrainManifest
from ..core.workspace import Context
from ..data.retrieve import Retriever, open_book
from ..tasks.openbook import cited_chunks

SYSTEMS = ("student", "base", "teacher")
MAX_INPUT_CHARS = 20_000


class Playground:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.lock = threading.Lock()
        self.loaded: dict[str, tuple] = {}  # system -> (key, model, tok)
        self.teacher = None
        self.log = None
        self.book: Retriever | None = None  # an open-book task's retriever, opened on the answering thread
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="taskling-playground")

    async def answer_on_thread(self, text: str, who: str) -> dict:
        """`answer`, on the playground's one thread (the HTTP server's threads vary)."""
        return await asyncio.wrap_future(self.thread.submit(self.answer, text, who))

    def retriever(self) -> Retriever | None:
        """The retriever an open-book student reads through (None: the task is closed-book), opened as
        train, evaluate and predict open it and kept: the pile is read live, so a document ingested since
        is found."""
        cfg = self.ctx.cfg
        if self.book is None and open_book(cfg, self.ctx.ws.pile_db):
            self.book = Retriever.open(cfg, self.ctx.ws.pile_db, self.ctx.threads)
        return self.book

    def trained_round(self) -> int | None:
        """The newest round whose train stage finished (None: nothing trained yet)."""
        found, k = None, 0
        while (self.ctx.run_dir / f"round-{k}").is_dir():
            if TrainManifest.read(self.ctx.stage_dir("train", k)) is not None:
                found = k
            k += 1
        return found

    def systems(self) -> dict:
        r = self.trained_round()
        t = self.ctx.cfg.teacher
        return {"student": {"ready": r is not None, "round": r,
                            "why": None if r is not None else "no trained student yet: run 'taskling train'"},
                "base": {"ready": True, "model": self.ctx.cfg.student.model},
                "teacher": {"ready": True, "model": f"{t.backend}:{t.model}"}}

    def model(self, who: str):
        from ..student import infer
        from ..student.models import load_causal_lm, resolve_hf
        from ..student.trained import load_trained

        cfg = self.ctx.cfg
        if who == "student":
            r = self.trained_round()
            if r is None:
                raise TasklingError("no trained student yet: run 'taskling train' (or 'taskling run') first")
            key = (r, (self.ctx.stage_dir("train", r) / "manifest.json").stat().st_mtime_ns)
            if self.loaded.get(who, (None,))[0] != key:
                self.loaded.pop(who, None)
                model, tok = load_trained(self.ctx.stage_dir("train", r), cfg.student.model)
                self.loaded[who] = (key, infer.for_inference(model), tok)
        elif who not in self.loaded:
            model, tok = load_causal_lm(resolve_hf(cfg.student.model))
            self.loaded[who] = (None, infer.for_inference(model), tok)
        return self.loaded[who]

    def answer(self, text: str, who: str) -> dict:
        """`who`'s answer to `text`: raw output, the task's parsed answer, latency and tokens."""
        from ..serving.systems import conversations, open_conversations, predict_local, predict_teacher, with_citations

        if who not in SYSTEMS:
            raise TasklingError(f"system {who!r} is not one of {', '.join(SYSTEMS)}")
        text = str(text or "").strip()
        if not text:
            raise TasklingError("type an input first")
        if len(text) > MAX_INPUT_CHARS:
            raise TasklingError(f"the input is {len(text)} characters; the playground takes at most {MAX_INPUT_CHARS}")
        cfg, task = self.ctx.cfg, tasktype.get(self.ctx.cfg.task.type)
        with self.lock:
            t0 = time.perf_counter()
            book = self.retriever() if who != "teacher" else None
            if book is not None:  # as evaluate's student-open and base-open, predict and serve
                convs, found = open_conversations(cfg, task, [{"input": text}], book)
            else:
                convs = conversations(cfg, task, who, [{"input": text}])
            if who == "teacher":
                r = self.ask_teacher(convs, task, predict_teacher)
            else:
                from ..student import infer

                infer.set_threads(self.ctx.threads)
                _, model, tok = self.model(who)
                r = predict_local(model, tok, f"{who}-open" if book is not None else who, convs, task, cfg,
                                  found if book is not None else None)[0]
            seconds = time.perf_counter() - t0
        row, sources = {"output": r["text"]}, {}
        if book is not None:  # the answer without its [n], what the numbers name and every chunk it read
            with_citations([row], found)
            sources = {"open_book": True, "citations": row["citations"],
                       "documents": cited_chunks(list(range(1, len(found[0]) + 1)), found[0])}
        parsed = task.parse_output(cfg.task, row["output"])
        return {"system": who, "output": r["text"], "parsed": tasks.output_text(parsed) if parsed is not None else None,
                "seconds": round(seconds, 3), "completion_tokens": r.get("completion_tokens"),
                "cached": bool(r.get("cached")), **({"round": self.trained_round()} if who == "student" else {}),
                **sources}

    def ask_teacher(self, convs, task, predict_teacher) -> dict:
        """The teacher as evaluate asks it, through the call log; opened once and kept."""
        if self.teacher is None:
            from ..teacher.backends import Logged, open_backend
            from ..teacher.calls import CallLog
            from ..core.config import Price

            cfg = self.ctx.cfg
            self.log = CallLog(self.ctx.ws.calls_db)
            self.teacher = Logged(open_backend(cfg.teacher), self.log, purpose="playground",
                                  price=cfg.budget.prices.get(cfg.teacher.model, Price()))
        cached = self.teacher.stats["cached"]
        r = predict_teacher(self.teacher, convs, task)[0]
        return {**r, "cached": self.teacher.stats["cached"] > cached}

    def close(self) -> None:
        if self.book is not None:
            self.thread.submit(self.book.close).result()  # SQLite: closed on the thread that opened it
            self.book = None
        if self.teacher is not None:
            self.teacher.close()
            self.log.close()
            self.teacher = None
        self.loaded.clear()
