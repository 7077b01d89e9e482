"""The call log: every teacher and judge call, which is also the cache.

.taskling/calls.db holds one row per call: a key (hash of backend, model,
messages, sampling settings and sample index), the request, the response,
token counts, latency, cost and, for a call that failed, the error. A call
whose key is present without an error is never made again, so a re-run after
a crash or a kill costs nothing for the work already done. Failed attempts
(a 429, a timeout, a reply that is not JSON...) are kept in `errors` with the
raw body, for inspection with `taskling log --errors`.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..data.pile import now
from ..core.workspace import fingerprint

SCHEMA_VERSION = 2
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
    created_at TEXT NOT NULL,
    finish_reason TEXT NOT NULL DEFAULT 'stop',
    error TEXT,
    error_kind TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    usage_estimated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_purpose ON calls(purpose);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    purpose TEXT NOT NULL,
    kind TEXT NOT NULL,
    status INTEGER,
    detail TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_key ON errors(key);
"""
# Columns added after version 1 (a v1 calls.db keeps its rows: they are all successes).
_ADDED = {"finish_reason": "TEXT NOT NULL DEFAULT 'stop'", "error": "TEXT", "error_kind": "TEXT",
          "attempts": "INTEGER NOT NULL DEFAULT 1", "usage_estimated": "INTEGER NOT NULL DEFAULT 0"}
COLUMNS = ["key", "created_at", "backend", "model", "purpose", "prompt_tokens", "completion_tokens", "latency_s",
           "cost", "finish_reason", "error", "error_kind", "attempts", "request", "response"]


def call_key(model_id: dict, request: dict) -> str:
    return fingerprint({"model": model_id, "request": request})


class CallLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        have = {r[1] for r in self.db.execute("PRAGMA table_info(calls)")}
        if have:
            for col, decl in _ADDED.items():
                if col not in have:
                    self.db.execute(f"ALTER TABLE calls ADD COLUMN {col} {decl}")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "CallLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, key: str) -> dict | None:
        """A finished call's result, or None (never made, or it failed)."""
        row = self.db.execute(
            "SELECT response, prompt_tokens, completion_tokens, latency_s, finish_reason, usage_estimated"
            " FROM calls WHERE key=? AND error IS NULL", (key,)).fetchone()
        if row is None:
            return None
        return {"text": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "latency_s": row[3],
                "finish_reason": row[4], "usage_estimated": bool(row[5])}

    def put(self, key: str, model_id: dict, purpose: str, request: dict, res: Any) -> None:
        """Record a call's outcome (a success replaces an earlier failure of the same key)."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO calls(key, backend, model, purpose, request, response, prompt_tokens,"
                " completion_tokens, latency_s, cost, created_at, finish_reason, error, error_kind, attempts,"
                " usage_estimated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, model_id.get("backend", ""), model_id.get("model", ""), purpose, json.dumps(request),
                 res.text, res.prompt_tokens, res.completion_tokens, res.latency_s, res.cost, now(),
                 res.finish_reason, res.error, res.error_kind, 1 + len(res.attempts), int(res.usage_estimated)),
            )

    def put_error(self, key: str, model_id: dict, purpose: str, attempt: dict) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO errors(key, backend, model, purpose, kind, status, detail, body, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (key, model_id.get("backend", ""), model_id.get("model", ""), purpose, attempt.get("kind", ""),
                 attempt.get("status"), attempt.get("detail", ""), (attempt.get("body") or "")[:20000], now()))

    @staticmethod
    def _where(purpose: str | None = None, model: str | None = None, grep: str | None = None,
               failed: bool | None = None, since: str | None = None) -> tuple[str, list]:
        conds, args = [], []
        for col, val in (("purpose", purpose), ("model", model)):
            if val:
                conds.append(f"{col}=?")
                args.append(val)
        if grep:
            conds.append("(request LIKE ? OR response LIKE ?)")
            args += [f"%{grep}%", f"%{grep}%"]
        if failed is not None:
            conds.append("error IS NOT NULL" if failed else "error IS NULL")
        if since:
            conds.append("created_at >= ?")
            args.append(since)
        return (" WHERE " + " AND ".join(conds) if conds else ""), args

    def totals(self, purpose: str | None = None, **filters) -> dict:
        where, args = self._where(purpose, **filters)
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0),"
            " coalesce(sum(latency_s),0), coalesce(sum(cost),0), coalesce(sum(error IS NOT NULL),0),"
            " coalesce(sum(attempts-1),0) FROM calls" + where, args).fetchone()
        return {"calls": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "seconds": round(row[3], 2),
                "cost": round(row[4], 6), "failed": row[5], "retries": row[6]}

    def recent(self, limit: int = 20, purpose: str | None = None, **filters) -> list[dict]:
        where, args = self._where(purpose, **filters)
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM calls{where} ORDER BY rowid DESC LIMIT ?",
                               args + [limit]).fetchall()
        return [dict(zip(COLUMNS, r)) for r in rows]

    def show(self, key_prefix: str) -> dict | None:
        """One call by (a prefix of) its key, with its failed attempts."""
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM calls WHERE key LIKE ? LIMIT 2",
                               (key_prefix.replace("%", "") + "%",)).fetchall()
        if len(rows) != 1:
            return None
        call = dict(zip(COLUMNS, rows[0]))
        call["request"] = json.loads(call["request"])
        call["failed_attempts"] = self.errors(key=call["key"])
        return call

    def errors(self, key: str | None = None, limit: int = 1000) -> list[dict]:
        cols = ["key", "created_at", "purpose", "model", "kind", "status", "detail", "body"]
        q = f"SELECT {', '.join(cols)} FROM errors" + (" WHERE key=?" if key else "") + " ORDER BY id DESC LIMIT ?"
        return [dict(zip(cols, r)) for r in self.db.execute(q, ((key,) if key else ()) + (limit,))]

    def error_kinds(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT kind, count(*) FROM errors GROUP BY kind ORDER BY 2 DESC").fetchall())
