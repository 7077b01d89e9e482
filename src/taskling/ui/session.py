"""The UI's state between requests: the session token, what is kept in memory, and the checks
every state-changing request passes (the token and a page of this server as its origin).

What is cached is keyed by what it was made from: pile figures, topics and vectors by the pile's
SQLite data_version, the list of candidates by the curate files' and the review file's mtimes.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
from collections import Counter
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from ..core.errors import TasklingError
from ..core.workspace import Context
from ..curation import review
from ..curation.candidates import candidates
from ..data.pile import Pile
from ..teacher.allocate import arm_label


class Session:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.token = secrets.token_urlsafe(24)
        self.root = ctx.cfg.root.resolve()
        self.cache: dict = {"key": None, "rows": [], "embedder": None}

    def guard(self, request: Request) -> None:
        """State-changing requests: the session token, from a page of this server."""
        if not secrets.compare_digest(request.headers.get("x-taskling-token", ""), self.token):
            raise HTTPException(403, "missing or wrong session token; reload the page")
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise HTTPException(403, f"requests from {origin} are not allowed")

    async def posted(self, request: Request, key: str, shape: str, kind: type = str) -> dict:
        """A state-changing request's JSON body, after the token and origin checks; `key` must be a `kind`."""
        self.guard(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get(key), kind):
            raise HTTPException(400, f"send {shape} as JSON")
        return body

    def pile_version(self):
        """Changes whenever another connection wrote to pile.db (SQLite's data_version, on a connection
        kept open for just that): what the cached pile figures, topics and vectors are keyed by."""
        if self.cache.get("watch") is None:
            if not self.ctx.ws.pile_db.exists():
                return None
            self.cache["watch"] = sqlite3.connect(f"file:{self.ctx.ws.pile_db.resolve()}?mode=ro", uri=True,
                                                  check_same_thread=False)
        return self.cache["watch"].execute("PRAGMA data_version").fetchone()[0]

    def cached(self, name: str, make):
        """`make(pile)`, computed again only when the pile changed."""
        version = self.pile_version()
        hit = self.cache.get(name)
        if hit is not None and version is not None and hit[0] == version:
            return hit[1]
        with Pile(self.ctx.ws.pile_db) as pile:
            value = make(pile)
        self.cache[name] = (version, value)
        return value

    def embedder(self):
        """The pile's embedder, loaded on the first semantic search and kept."""
        if self.cache["embedder"] is None:
            from ..data.embed import Embedder

            cfg = self.ctx.cfg
            self.cache["embedder"] = Embedder(cfg.ingest.embed_model, max_tokens=cfg.ingest.embed_max_tokens)
        return self.cache["embedder"]

    def examples_now(self) -> list[dict]:
        """Every candidate with its review decision; read again only when curate or a review wrote."""
        cur = self.ctx.stage_dir("curate")
        files = [cur / n for n in ("manifest.json", "train.jsonl", "eval.jsonl", "rejected.jsonl")]
        key = tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files + [self.ctx.ws.reviews])
        if key == self.cache["key"]:
            return self.cache["rows"]
        try:
            rows = candidates(cur)
        except TasklingError:
            rows = []
        decided = review.load_decisions(self.ctx.ws.reviews)
        for ex in rows:
            d = decided.get(ex["id"])
            ex["decision"] = d["decision"] if d and d.get("of") in (None, review.digest(ex)) else None
        self.cache.update(key=key, rows=rows)
        return rows

    def facets(self, rows: list[dict]) -> dict:
        """What the filters can choose from, with counts (over every candidate, so choices never vanish)."""
        if self.cache.get("facets_of") is not rows:
            count = lambda key: Counter(key(r) for r in rows).most_common()  # noqa: E731
            self.cache["facets"] = {
                "round": [[str(k), n] for k, n in sorted(count(lambda r: r.get("round", 0)))],
                "arm": [[k, self.arm_name(json.loads(k)), n] for k, n in count(lambda r: json.dumps(r.get("arm")))],
                "reason": [[k, n] for k, n in count(lambda r: r.get("reason") or "kept")]}
            self.cache["facets_of"] = rows
        return self.cache["facets"]

    def arm_name(self, arm) -> str:
        if not isinstance(arm, list) or len(arm) != 2:
            return "-"
        names = self.cached("topic_names", lambda pile: {t["id"]: t["label"] for t in pile.topics()})
        return arm_label(tuple(arm), names)
