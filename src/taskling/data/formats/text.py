"""Plain text (any common encoding), Markdown, reStructuredText, JSON and JSONL; decoding text.

JSON records are also tables: a list of objects is one ("record 3"), each list of objects under a
key is one named by the key ("codes record 3"), an object of objects is one with the key as a
column, and JSONL lines that are objects are one ("line 3"). Nested values are JSON-encoded cells.
"""
from __future__ import annotations

import json
from typing import Any

from . import ConvertError, Extracted, Limits, Segment, Table, keep_tables, register

TEXT_EXT = {".txt": "text", ".text": "text", ".rst": "rst", ".md": "markdown", ".markdown": "markdown",
            ".log": "text", ".org": "text", ".adoc": "text"}


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes in the usual encodings; refuse binary data."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text, enc = data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise ConvertError("starts with a UTF-16 byte-order mark but is not valid UTF-16") from None
    elif data.startswith(b"\xef\xbb\xbf"):
        text, enc = data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    elif b"\x00" in data[:8192]:
        raise ConvertError("looks like a binary file (NUL bytes), not text")
    else:
        try:
            text, enc = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            try:
                text, enc = data.decode("cp1252"), "cp1252"
            except UnicodeDecodeError:
                text, enc = data.decode("latin-1"), "latin-1"
    sample = text[:8192]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    if sample and control > 0.05 * len(sample):
        raise ConvertError(f"looks like a binary file ({control} control characters in the first "
                           f"{len(sample)}), not {enc} text")
    return text, enc


def cut_long_lines(text: str, limits: Limits, warnings: list[str]) -> str:
    """Lines over limits.max_line_chars (minified dumps, binary-ish text) are cut."""
    if len(text) <= limits.max_line_chars or max(map(len, text.split("\n"))) <= limits.max_line_chars:
        return text
    lines, cut = [], 0
    for line in text.split("\n"):
        if len(line) > limits.max_line_chars:
            cut += 1
            line = line[: limits.max_line_chars]
        lines.append(line)
    warnings.append(f"{cut} line(s) longer than {limits.max_line_chars} characters were cut")
    return "\n".join(lines)


def convert_text(data: bytes, name: str, limits: Limits) -> Extracted:
    text, enc = decode_text(data)
    warnings: list[str] = []
    text = cut_long_lines(text.replace("\r\n", "\n").replace("\r", "\n"), limits, warnings)
    ext = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    fmt = TEXT_EXT.get("." + ext, "text")
    return Extracted([Segment(text, "", "text")], fmt, f"stdlib decode ({enc})", warnings)


def _flatten(value, prefix: str = "", out: list[str] | None = None, depth: int = 0) -> list[str]:
    """key.path: value lines, so a JSON record reads as text and keeps its field names."""
    out = [] if out is None else out
    if depth > 50:
        out.append(f"{prefix}: (nested too deeply)")
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(value, list) and value and all(not isinstance(v, (dict, list)) for v in value):
        out.append(f"{prefix}: {', '.join(map(str, value))}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out, depth + 1)
    else:
        out.append(f"{prefix}: {value}" if prefix else str(value))
    return out


def convert_json(data: bytes, name: str, limits: Limits) -> Extracted:
    """JSON: one segment per top-level record (array item or object key);
    JSONL: one per line. Locators are JSON paths ($[3], $.users) or line numbers."""
    text, enc = decode_text(data)
    segs: list[Segment] = []
    warnings: list[str] = []
    if name.lower().endswith((".jsonl", ".ndjson")):
        items, bad = [], 0
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            items.append((n, rec))
            segs.append(Segment("\n".join(_flatten(rec)), f"line {n}", "record"))
        if bad:
            warnings.append(f"{bad} line(s) are not valid JSON and were skipped")
        out = Extracted(segs, "jsonl", f"stdlib json ({enc})", warnings)
        out.tables = keep_tables([_records(None, items, "line", out.table_notes)])
        out.table_notes += [f"{bad} line(s) are not valid JSON; left out"] if bad else []
        return out
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConvertError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if isinstance(doc, list):
        segs = [Segment("\n".join(_flatten(v)), f"$[{i}]", "record") for i, v in enumerate(doc)]
    elif isinstance(doc, dict):
        segs = [Segment("\n".join(_flatten(v, str(k))), f"$.{k}", "record") for k, v in doc.items()]
    else:
        segs = [Segment(str(doc), "$", "record")]
    out = Extracted(segs, "json", f"stdlib json ({enc})", warnings)
    out.tables = keep_tables(_json_tables(doc, out.table_notes))
    return out


def _json_tables(doc: Any, notes: list[str]) -> list[Table]:
    """The record tables of a JSON document (see the module's docstring)."""
    if isinstance(doc, list):
        return [_records(None, list(enumerate(doc, 1)), "record", notes)]
    if not isinstance(doc, dict) or not doc:
        return []
    lists = [(k, v) for k, v in doc.items() if isinstance(v, list) and any(isinstance(x, dict) for x in v)]
    if lists:  # {"codes": [{...}, ...], "limits": [...]}: a table per list
        return [_records(k, list(enumerate(v, 1)), f"{k} record", notes) for k, v in lists]
    if all(isinstance(v, dict) for v in doc.values()):  # {"E1": {...}, "E2": {...}}: the key is a column too
        return [_records(None, list(enumerate(({"key": k, **v} for k, v in doc.items()), 1)), "record", notes)]
    return [_records(None, [(1, doc)], "record", notes)]


def _records(name: str | None, items: list[tuple[int, Any]], label: str, notes: list[str]) -> Table:
    """(number, item) pairs as rows, objects only: the columns are their keys in first-seen order."""
    keys = list(dict.fromkeys(k for _, r in items if isinstance(r, dict) for k in r))
    objects = [(n, r) for n, r in items if isinstance(r, dict)]
    if len(objects) < len(items):
        notes.append(f"{len(items) - len(objects)} {label}(s) are not JSON objects; left out")
    return Table(name, [str(k) for k in keys], [[_json_cell(r.get(k)) for k in keys] for _, r in objects],
                 [f"{label} {n}" for n, _ in objects])


def _json_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    # numbers as JSON writes them; nested values JSON-encoded
    return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


register(tuple(TEXT_EXT) + ("",), "text", f"{__name__}:convert_text")
register((".json", ".jsonl", ".ndjson", ".geojson"), "json", f"{__name__}:convert_json")
