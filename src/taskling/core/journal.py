"""An append-only JSONL journal with idempotent keys.

Each record carries a `key`; `add_batch` appends records and fsyncs once per
batch. Opening a journal reads what is there, drops a torn last line (a kill
in the middle of a write) and ignores repeated keys, so a re-run after kill -9
at any moment continues with exactly the records that were written whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        good_end = 0
        if path.exists():
            with open(path, "rb") as f:
                data = f.read()
            pos = 0
            while pos < len(data):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break  # no newline: a torn write
                try:
                    rec = json.loads(data[pos:nl])
                except json.JSONDecodeError:
                    break
                self.records.setdefault(rec["key"], rec)
                pos = good_end = nl + 1
            if good_end < len(data):
                with open(path, "r+b") as f:
                    f.truncate(good_end)
        self.f = open(path, "a", encoding="utf-8")

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add_batch(self, records: list[dict]) -> list[dict]:
        """Append the records whose key is new; returns those."""
        fresh = [r for r in records if r["key"] not in self.records]
        if not fresh:
            return fresh
        self.f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh))
        self.f.flush()
        os.fsync(self.f.fileno())
        for r in fresh:
            self.records[r["key"]] = r
        return fresh

    def close(self) -> None:
        self.f.close()
