"""The UI's HTTP side: the page, its assets, and a small JSON API over the workspace."""
from __future__ import annotations

import json
import secrets
import sqlite3
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from fastapi import Request  # at module level: FastAPI resolves the (string) annotations here

from ..teacher.allocate import arm_label, boost
from ..core.errors import TasklingError
from ..core.workspace import Context, read_jsonl
from .play import Playground

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_LIMIT = 200


def create_app(ctx: Context):
    """The FastAPI app for `ctx`'s workspace and its session token."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from ..curation import review
    from ..data.pile import Pile
    from ..stages.curate import candidates, review_store

    token = secrets.token_urlsafe(24)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    root = ctx.cfg.root.resolve()
    cache: dict = {"key": None, "rows": [], "embedder": None}  # what is kept between requests

    def guard(request: Request) -> None:
        """State-changing requests: the session token, from a page of this server."""
        if not secrets.compare_digest(request.headers.get("x-taskling-token", ""), token):
            raise HTTPException(403, "missing or wrong session token; reload the page")
        origin = request.headers.get("origin")
        if origin and urlparse(origin).hostname not in LOOPBACK:
            raise HTTPException(403, f"requests from {origin} are not allowed")

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
        html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", token)
        return HTMLResponse(html)

    @app.get("/static/{name}")
    def asset(name: str):
        if name not in ASSETS:  # a fixed list: no path reaches outside the package
            raise HTTPException(404, "no such asset")
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name])

    def pile_version():
        """Changes whenever another connection wrote to pile.db (SQLite's data_version, on a connection
        kept open for just that): what the cached pile figures, topics and vectors are keyed by."""
        if cache.get("watch") is None:
            if not ctx.ws.pile_db.exists():
                return None
            cache["watch"] = sqlite3.connect(f"file:{ctx.ws.pile_db.resolve()}?mode=ro", uri=True,
                                             check_same_thread=False)
        return cache["watch"].execute("PRAGMA data_version").fetchone()[0]

    def cached(name: str, make):
        """`make(pile)`, computed again only when the pile changed."""
        version = pile_version()
        hit = cache.get(name)
        if hit is not None and version is not None and hit[0] == version:
            return hit[1]
        with Pile(ctx.ws.pile_db) as pile:
            value = make(pile)
        cache[name] = (version, value)
        return value

    @app.get("/api/state")
    def state():
        stats = cached("stats", lambda pile: pile.stats())
        t = ctx.cfg.task
        return {"task": {"name": t.name, "type": t.type, "description": t.description,
                         "labels": sorted(t.labels) if t.labels else []},
                "run": ctx.run_id, "round": ctx.round, "pile": {k: v for k, v in stats.items() if k != "by_format"}}

    @app.get("/api/topics")
    def topics():
        return {"topics": cached("topics", lambda pile: [{k: t[k] for k in ("id", "label", "terms", "size")}
                                                         for t in pile.topics()])}

    @app.get("/api/search")
    def search(q: str = "", mode: str = "fts", limit: int = 20):
        limit = max(1, min(limit, 100))
        with Pile(ctx.ws.pile_db) as pile:
            if mode == "semantic":
                hits = semantic(embedder(), pile, q, limit, cache, pile_version())
            else:
                hits = pile.search(q, limit) if q.strip() else []
        return {"hits": [{"key": c.key, "path": c.path, "locator": c.locator, "topic": c.topic_id,
                          "text": c.text[:400], "score": round(float(s), 4)} for c, s in hits]}

    @app.get("/api/chunk/{key}")
    def chunk(key: str):
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

    def embedder():
        """The pile's embedder, loaded on the first semantic search and kept."""
        if cache["embedder"] is None:
            from ..data.embed import Embedder

            cache["embedder"] = Embedder(ctx.cfg.ingest.embed_model, max_tokens=ctx.cfg.ingest.embed_max_tokens)
        return cache["embedder"]

    def examples_now() -> list[dict]:
        """Every candidate with its review decision; read again only when curate or a review wrote."""
        cur = ctx.stage_dir("curate")
        files = [cur / n for n in ("manifest.json", "train.jsonl", "eval.jsonl", "rejected.jsonl")]
        key = tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files + [review_store(ctx)])
        if key == cache["key"]:
            return cache["rows"]
        try:
            rows = candidates(ctx)
        except TasklingError:
            rows = []
        decided = review.load_decisions(review_store(ctx))
        for ex in rows:
            d = decided.get(ex["id"])
            ex["decision"] = d["decision"] if d and d.get("of") in (None, review.digest(ex)) else None
        cache.update(key=key, rows=rows)
        return rows

    @app.get("/api/examples")
    def examples(status: str = "", label: str = "", q: str = "", decision: str = "", round: str = "",
                 arm: str = "", reason: str = "", min_grounding: float | None = None,
                 min_judge: float | None = None, offset: int = 0, limit: int = 50):
        every = examples_now()
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
        return {"total": len(rows), "offset": offset, "facets": facets(every),
                "examples": [{k: r.get(k) for k in keep} | {"arm_name": arm_name(r.get("arm"))} for r in page]}

    def facets(rows: list[dict]) -> dict:
        """What the filters can choose from, with counts (over every candidate, so choices never vanish)."""
        if cache.get("facets_of") is not rows:
            count = lambda key: Counter(key(r) for r in rows).most_common()  # noqa: E731
            cache["facets"] = {
                "round": [[str(k), n] for k, n in sorted(count(lambda r: r.get("round", 0)))],
                "arm": [[k, arm_name(json.loads(k)), n] for k, n in count(lambda r: json.dumps(r.get("arm")))],
                "reason": [[k, n] for k, n in count(lambda r: r.get("reason") or "kept")]}
            cache["facets_of"] = rows
        return cache["facets"]

    def arm_name(arm) -> str:
        if not isinstance(arm, list) or len(arm) != 2:
            return "-"
        names = cached("topic_names", lambda pile: {t["id"]: t["label"] for t in pile.topics()})
        return arm_label(tuple(arm), names)

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

    async def posted(request: Request, key: str, shape: str) -> dict:
        """A state-changing request's JSON body, after the token and origin checks; `key` must be a string."""
        guard(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get(key), str):
            raise HTTPException(400, f"send {shape} as JSON")
        return body

    @app.post("/api/review")
    async def decide(request: Request):
        body = await posted(request, "id", "{id, decision}")
        known = {ex["id"]: ex for ex in read_jsonl(ctx.stage_dir("generate") / "examples.jsonl")}
        ex = known.get(body["id"])
        if ex is None:
            raise HTTPException(404, f"example {body['id']!r} is not a current candidate")
        out = {}
        if body.get("decision"):
            out["review"] = review.decide(review_store(ctx), ex, body["decision"], input=body.get("input"),
                                          output=body.get("output"), note=body.get("note"))
        if body.get("gold"):
            out["gold"] = add_gold(root / "gold.jsonl", ex)
        return out

    player = Playground(ctx)

    @app.get("/api/play")
    def play_systems():
        return {"systems": player.systems(), "task": {"type": ctx.cfg.task.type}}

    @app.post("/api/play")
    async def play(request: Request):
        """One system's answer to an input (compute and teacher budget: the session token is needed)."""
        from starlette.concurrency import run_in_threadpool

        body = await posted(request, "input", "{input, system}")
        return await run_in_threadpool(player.answer, body["input"], str(body.get("system", "student")))

    @app.post("/api/boost")
    async def more_budget(request: Request):
        """Mark an arm for more teacher budget in the run's next round (allocate.boost)."""
        body = await posted(request, "run", "{arm, run}")
        run_id = body["run"]
        if "/" in run_id or run_id[:1] == "." or not (root / "runs" / run_id).is_dir():
            raise HTTPException(400, f"{run_id!r} is not a run of this workspace")
        rounds = [int(p.parent.parent.name.split("-")[1])
                  for p in (root / "runs" / run_id).glob("round-*/evaluate/manifest.json")]
        if not rounds:
            raise HTTPException(400, f"run {run_id} has no evaluated round yet")
        rec = boost(ctx.ws.boosts, body.get("arm"), after_round=max(rounds), run=run_id,
                    note=str(body.get("note") or "")[:500] or None)
        return {"boost": rec, "applies_to_round": rec["after_round"] + 1, "arm_name": arm_name(rec["arm"])}

    app.state.playground = player
    return app, token


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


def start(ctx: Context, port: int = 0):
    """The app served on 127.0.0.1 in a background thread (tests, benchmarks, screenshots):
    (server, url, token); stop it with server.should_exit = True. port 0: a free one."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    app, token = create_app(ctx)
    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/api/state", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return server, url, token


def serve(ctx: Context, host: str = "127.0.0.1", port: int = 8765, console=None) -> None:
    import uvicorn

    if host not in LOOPBACK and console is not None:
        console.print(f"[yellow]ui: serving on {host}: anyone who can reach it can read your documents[/]")
    app, _ = create_app(ctx)
    if console is not None:
        console.print(f"ui: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/  (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
