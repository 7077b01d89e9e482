"""The call log: every teacher and judge call, which is also the cache.

.taskling/calls.db holds one row per call: a key (hash of backend, model,
messages, sampling settings and sample index), the request, the response,
token counts and latency. A call whose key is present is never made again, so
a re-run after a crash or a kill costs nothing for the work already done.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .pile import now
from .workspace import fingerprint

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    purpose TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    cost REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
"""


def call_key(model_id: dict, request: dict) -> str:
    return fingerprint({"model": model_id, "request": request})


class CallLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> dict | None:
        row = self.db.execute(
            "SELECT response, prompt_tokens, completion_tokens, latency_s FROM calls WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return {"text": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "latency_s": row[3]}

    def put(self, key: str, model_id: dict, purpose: str, request: dict, result: dict) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO calls(key, backend, model, purpose, request, response, prompt_tokens,"
                " completion_tokens, latency_s, cost, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (key, model_id.get("backend", ""), model_id.get("model", ""), purpose, json.dumps(request),
                 result["text"], result["prompt_tokens"], result["completion_tokens"], result["latency_s"],
                 result.get("cost", 0.0), now()),
            )

    def totals(self, purpose: str | None = None) -> dict:
        q = "SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0), coalesce(sum(latency_s),0) FROM calls"
        row = self.db.execute(q + (" WHERE purpose=?" if purpose else ""), (purpose,) if purpose else ()).fetchone()
        return {"calls": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "seconds": round(row[3], 2)}

    def recent(self, limit: int = 20) -> list[dict]:
        rows = self.db.execute(
            "SELECT created_at, backend, model, purpose, prompt_tokens, completion_tokens, latency_s, request, response"
            " FROM calls ORDER BY rowid DESC LIMIT ?", (limit,)).fetchall()
        cols = ["created_at", "backend", "model", "purpose", "prompt_tokens", "completion_tokens", "latency_s",
                "request", "response"]
        return [dict(zip(cols, r)) for r in rows]
