"""The UI's HTTP side: the page, its assets, and a small JSON API over the workspace, its routes
grouped by the page that calls them (pile, examples, runs, playground; the task page's in
taskpage.py), behind the `Guard` (host,
origin, content type, the token for clients not on this machine), and the server that runs it:
`start` (in a thread, on a socket it is handed or binds) and `serve` (the command)."""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request  # at module level: FastAPI resolves the (string) annotations here
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..core.errors import TasklingError
from ..core.manifests import EvaluateManifest
from ..core.workspace import Context, read_jsonl
from ..data.retrieve import open_book
from ..teacher.allocate import boost
from ..core.net import LOOPBACK, hostport, listen
from .guard import Guard
from .play import Playground
from .session import Session
from .taskpage import task_routes

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_LIMIT = 200


def create_app(ctx: Context, remote: bool = False):
    """The app for `ctx`'s workspace behind its guard, and its session token. `remote`: clients
    on other machines may use it when they bring the token."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    ui = Session(ctx)

    @app.exception_handler(TasklingError)
    async def user_error(request: Request, e: TasklingError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        res = await call_next(request)
        res.headers["Content-Security-Policy"] = CSP
        res.headers["X-Content-Type-Options"] = "nosniff"
        res.headers["Referrer-Policy"] = "no-referrer"
        res.headers["Cache-Control"] = "no-store"
        return res

    @app.get("/")
    def index():
        html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", ui.token)
        return HTMLResponse(html)

    @app.get("/static/{name}")
    def asset(name: str):
        if name not in ASSETS:  # a fixed list: no path reaches outside the package
            raise HTTPException(404, "no such asset")
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name])

    pile_routes(app, ui)
    example_routes(app, ui)
    run_routes(app, ui)
    app.state.playground = play_routes(app, ui)
    app.state.jobs = task_routes(app, ui)
    return Guard(app, ui.token, remote), ui.token


def pile_routes(app: FastAPI, ui: Session) -> None:
    """The pile page: figures, topics, search by words or meaning, a chunk in its document."""
    ctx = ui.ctx

    @app.get("/api/state")
    def state():
        stats = ui.cached("stats", lambda pile: pile.stats())
        t = ctx.cfg.task
        return {"task": {"name": t.name, "type": t.type, "description": t.description,
                         "labels": sorted(t.labels) if t.labels else []},
                "run": ctx.run_id, "round": ctx.round, "pile": {k: v for k, v in stats.items() if k != "by_format"}}

    @app.get("/api/topics")
    def topics():
        return {"topics": ui.cached("topics", lambda pile: [{k: t[k] for k in ("id", "label", "terms", "size")}
                                                            for t in pile.topics()])}

    @app.get("/api/search")
    def search(q: str = "", mode: str = "fts", limit: int = 20):
        from ..data.pile import Pile

        limit = max(1, min(limit, 100))
        with Pile(ctx.ws.pile_db) as pile:
            if mode == "semantic":
                hits = semantic(ui.embedder(), pile, q, limit, ui.cache, ui.pile_version())
            else:
                hits = pile.search(q, limit) if q.strip() else []
        return {"hits": [{"key": c.key, "path": c.path, "locator": c.locator, "topic": c.topic_id,
                          "text": c.text[:400], "score": round(float(s), 4)} for c, s in hits]}

    @app.get("/api/chunk/{key}")
    def chunk(key: str):
        from ..data.pile import Pile

        with Pile(ctx.ws.pile_db) as pile:
            c = pile.chunk(key)
            if c is None:
                raise HTTPException(404, "no such chunk")
            doc = pile.document(c.path)
        text = (doc["text"] if doc is not None and "text" in doc.keys() else "") or ""
        lo, hi = max(0, c.start_char - 2000), min(len(text), c.end_char + 2000)
        return {"key": c.key, "path": c.path, "locator": c.locator, "format": c.format, "text": c.text,
                "document": {"before": text[lo:c.start_char], "chunk": text[c.start_char:c.end_char],
                             "after": text[c.end_char:hi], "cut_before": lo > 0, "cut_after": hi < len(text)}}


def example_routes(app: FastAPI, ui: Session) -> None:
    """The examples page: every candidate, filtered and paged, and a person's decision on one."""
    ctx = ui.ctx

    @app.get("/api/examples")
    def examples(status: str = "", label: str = "", q: str = "", decision: str = "", round: str = "",
                 arm: str = "", reason: str = "", min_grounding: float | None = None,
                 min_judge: float | None = None, offset: int = 0, limit: int = 50):
        every = ui.examples_now()
        rows = every
        if status:
            rows = [r for r in rows if r.get("status") == status]
        if label:
            rows = [r for r in rows if str(r.get("label", r.get("output"))) == label]
        if decision:
            rows = [r for r in rows if (r.get("decision") or "none") == decision]
        if round:
            rows = [r for r in rows if str(r.get("round", 0)) == round]
        if arm:
            rows = [r for r in rows if json.dumps(r.get("arm")) == arm]
        if reason:
            rows = [r for r in rows if (r.get("reason") or "kept") == reason]
        for key, floor in (("grounding", min_grounding), ("judge", min_judge)):
            if floor is not None:
                rows = [r for r in rows if isinstance(r.get(key), (int, float)) and r[key] >= floor]
        if q:
            low = q.lower()
            rows = [r for r in rows if low in json.dumps([r.get("input"), r.get("output")], ensure_ascii=False).lower()]
        limit = max(1, min(limit, PAGE_LIMIT))
        page = rows[max(0, offset):max(0, offset) + limit]
        keep = ("id", "status", "reason", "input", "output", "label", "arm", "round", "spans", "provenance",
                "grounding", "judge", "decision")
        return {"total": len(rows), "offset": offset, "facets": ui.facets(every),
                "examples": [{k: r.get(k) for k in keep} | {"arm_name": ui.arm_name(r.get("arm"))} for r in page]}

    @app.post("/api/review")
    async def decide(request: Request):
        from ..curation import review

        body = await ui.posted(request, "id", "{id, decision}")
        known = {ex["id"]: ex for ex in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")}
        ex = known.get(body["id"])
        if ex is None:
            raise HTTPException(404, f"example {body['id']!r} is not a current candidate")
        out = {}
        if body.get("decision"):
            out["review"] = review.decide(ctx.ws.reviews, ex, body["decision"], input=body.get("input"),
                                          output=body.get("output"), note=body.get("note"))
        if body.get("gold"):
            out["gold"] = add_gold(ui.root / "gold.jsonl", ex)
        return out


def run_routes(app: FastAPI, ui: Session) -> None:
    """The runs page: the running stage's progress, every run's report, more budget for an arm."""
    ctx, root = ui.ctx, ui.root

    @app.get("/api/progress")
    async def progress(request: Request, once: bool = False):
        """Server-sent events: the running stage's progress (.taskling/progress.json) each time it changes."""
        import asyncio

        from fastapi.responses import StreamingResponse

        path = ctx.ws.state / "progress.json"

        def read() -> str:
            try:
                return path.read_text(encoding="utf-8")
            except OSError:
                return json.dumps({"running": False, "tasks": []})

        if once:
            return JSONResponse(json.loads(read()))

        async def events():
            last = None
            while not await request.is_disconnected():
                now = read()
                if now != last:
                    last = now
                    yield f"data: {now}\n\n"
                await asyncio.sleep(0.3)
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/api/runs")
    def runs():
        out = []
        for d in sorted((root / "runs").glob("*/report.json")):
            rep = json.loads(d.read_text(encoding="utf-8"))
            out.append({"id": d.parent.name, "summary": rep.get("summary"), "generated_at": rep.get("generated_at")})
        return {"runs": out}

    @app.get("/api/run/{run_id}")
    def run(run_id: str):
        path = root / "runs" / run_id / "report.json"
        if "/" in run_id or run_id.startswith(".") or not path.is_file():
            raise HTTPException(404, "no such run (or no report yet: run 'taskling report')")
        rep = json.loads(path.read_text(encoding="utf-8"))
        keep = ("run_id", "task", "summary", "results", "funnel", "training", "loop", "generation", "costs",
                "cluster", "failures", "label_sources")
        return {k: rep.get(k) for k in keep}

    @app.post("/api/boost")
    async def more_budget(request: Request):
        """Mark an arm for more teacher budget in the run's next round (allocate.boost)."""
        body = await ui.posted(request, "run", "{arm, run}")
        run_id = body["run"]
        if "/" in run_id or run_id[:1] == "." or not (root / "runs" / run_id).is_dir():
            raise HTTPException(400, f"{run_id!r} is not a run of this workspace")
        rounds = [int(p.parent.name.split("-")[1]) for p in (root / "runs" / run_id).glob("round-*/evaluate")
                  if EvaluateManifest.read(p) is not None]
        if not rounds:
            raise HTTPException(400, f"run {run_id} has no evaluated round yet")
        rec = boost(ctx.ws.boosts, body.get("arm"), after_round=max(rounds), run=run_id,
                    note=str(body.get("note") or "")[:500] or None)
        return {"boost": rec, "applies_to_round": rec["after_round"] + 1, "arm_name": ui.arm_name(rec["arm"])}


def play_routes(app: FastAPI, ui: Session) -> Playground:
    """The playground page: one input answered by the student, its base or the teacher."""
    player = Playground(ui.ctx)

    @app.get("/api/play")
    def play_systems():
        return {"systems": player.systems(), "task": {"type": ui.ctx.cfg.task.type,
                                                      "open_book": open_book(ui.ctx.cfg, ui.ctx.ws.pile_db)}}

    @app.post("/api/play")
    async def play(request: Request):
        """One system's answer to an input (compute and teacher budget: the session token is needed)."""
        body = await ui.posted(request, "input", "{input, system}")
        return await player.answer_on_thread(body["input"], str(body.get("system", "student")))
    return player


def add_gold(path: Path, ex: dict) -> bool:
    """Append the example to gold.jsonl (the person checked it); False when its input is there already."""
    have = {str(r.get("input", "")).strip() for r in read_jsonl(path)} if path.exists() else set()
    if str(ex["input"]).strip() in have:
        return False
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"input": ex["input"], "output": ex["output"]}, ensure_ascii=False) + "\n")
    return True


def semantic(emb, pile, q: str, limit: int, cache: dict | None = None, version=None) -> list:
    """Chunks nearest to `q` by embedding (`emb`: the pile's own embedder). The matrix of the
    pile's vectors is kept in `cache` while the pile's `version` stays the same."""
    import numpy as np

    from ..data.embed import from_blobs

    if not q.strip():
        return []
    vec = np.asarray(emb.encode([q])[0], dtype=np.float32)
    cache = {} if cache is None else cache
    if version is None or cache.get("vectors_key") != version:
        ids, blobs = pile.embeddings()
        if not ids:
            raise TasklingError("the pile has no embeddings; ingest with ingest.embed: true for semantic search")
        found = (np.asarray(ids, dtype=np.int64), from_blobs(blobs, len(vec)).astype(np.float32, copy=False))
        cache.update(vectors_key=version, vectors=found)
    ids, mat = cache["vectors"]
    scores = mat @ vec
    top = np.argpartition(-scores, min(limit, len(scores) - 1))[:limit] if len(scores) > limit else np.arange(len(scores))
    top = top[np.argsort(-scores[top])]
    by_id = {c.id: c for c in pile.chunks_by_id([int(ids[i]) for i in top])}
    return [(by_id[int(ids[i])], float(scores[i])) for i in top if int(ids[i]) in by_id]


def start(ctx: Context, port: int = 0, sock=None, host: str = "127.0.0.1", remote: bool = False):
    """The app served in a background thread (tests, benchmarks, screenshots), returned once it listens:
    (server, url, token); stop it with server.should_exit = True. It serves on `sock` when handed one,
    else on a socket bound here to host:port (0: the kernel picks a free port; the url has the real one)."""
    import threading
    import time

    import uvicorn

    app, token = create_app(ctx, remote)
    sock = sock or listen(host, port, backlog=128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="taskling-ui")
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise TasklingError(f"the UI server stopped while starting on {address(sock)}")
        time.sleep(0.01)
    return server, f"http://{address(sock)}", token


def address(sock) -> str:
    return hostport(*sock.getsockname()[:2])


def serve(ctx: Context, host: str = "127.0.0.1", port: int = 8765, console=None, allow_remote: bool = False) -> None:
    """`taskling ui`: loopback unless `allow_remote`, and then the token only to those who bring it."""
    import uvicorn

    if host not in LOOPBACK and not allow_remote:
        raise TasklingError(f"refusing to serve the UI on {host}: anyone who can reach it could read your documents. "
                            "Keep the default --host 127.0.0.1 (use an SSH tunnel from another machine), or pass "
                            "--allow-remote: then only those you give the printed address (with its token) get in")
    app, token = create_app(ctx, remote=host not in LOOPBACK)
    sock = listen(host, port, backlog=128)
    where = address(sock)
    if console is not None:
        if host in LOOPBACK:
            console.print(f"ui: http://{where}/  (Ctrl-C stops it)", highlight=False, soft_wrap=True)
        else:
            shown = where.replace("0.0.0.0", "THIS-MACHINE", 1).replace("[::]", "THIS-MACHINE", 1)
            console.print(f"[yellow]ui: serving on {host}; give this address only to people who may read every "
                          f"document: http://{shown}/?token={token}  (Ctrl-C stops it)[/]", highlight=False,
                          soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    # A closed terminal (SIGHUP) stops the UI as Ctrl-C does (uvicorn handles only SIGINT and SIGTERM, and
    # re-raises what it caught once it has shut down: SIGINT becomes the KeyboardInterrupt the CLI reports), so
    # that a run the page started, in a session of its own that never hears the hangup, is stopped below.
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda *_: server.handle_exit(signal.SIGINT, None))
    try:
        server.run(sockets=[sock])
    finally:
        app.state.jobs.close()  # a run the page started stops with the UI (it continues when started again)
