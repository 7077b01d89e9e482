"""Human review of curated examples through a CSV file a spreadsheet can open.

    taskling curate --export review.csv    # one row per candidate, kept and dropped
    (edit the `decision` column: accept / reject / fix, with fixed_input / fixed_output)
    taskling curate --import review.csv    # decisions go into .taskling/review.jsonl

The next curate applies the decisions: a human decision wins over every filter,
and because decisions are stored by example id in an append-only JSONL file
(latest per id wins) they survive re-runs. A decision remembers a digest of the
example it was made about, so if a re-generated example reuses an id for other
text, the old decision does not silently land on it (see `stale`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from ..core.errors import TasklingError
from ..core.workspace import atomic_write_text, read_jsonl

# Read-only context first, then what the reviewer fills in.
COLUMNS = [
    "id",            # example id; the key a decision is stored under
    "status",        # kept | dropped, as curate left it
    "reason",        # why curate dropped it, else empty
    "grounding",     # grounding score, if scored
    "judge",         # judge score, if scored
    "label",         # classify tasks only
    "input",         # the prompt the small model will see
    "output",        # the answer; JSON text when the output is an object
    "source",        # "path — locator" of each provenance entry, joined by "; "
    "span",          # text of the first supporting span, else empty
    "decision",      # accept | reject | fix (keep/yes, drop/no also accepted); empty = no decision
    "fixed_input",   # for fix: the corrected input; empty keeps the original
    "fixed_output",  # for fix: the corrected output (JSON object text for object outputs); empty keeps it
    "note",          # free text, stored with the decision
]

WORDS = {"accept": "accept", "keep": "accept", "yes": "accept",
         "reject": "reject", "drop": "reject", "no": "reject",
         "fix": "fix"}
HUMAN = {"accept": "accepted", "reject": "rejected", "fix": "fixed"}
_FROM_HUMAN = {v: k for k, v in HUMAN.items()}
# Display-only cells starting with these would run as a formula in Excel or
# LibreOffice (text from documents is untrusted), so they get a leading "'".
_FORMULA = ("=", "+", "-", "@")


def digest(example: dict) -> str:
    """What a decision was made about: the example's input and output as generated (a fixed example
    keeps those under "original", one the label model relabelled its generated label under
    "relabelled_from", so every form gives one digest)."""
    base = example.get("original") or example
    output = base["relabelled_from"] if "relabelled_from" in base else base.get("output")
    blob = json.dumps([base.get("input"), output], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- export

def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def _json_or_text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _score(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _source(example: dict) -> str:
    parts = []
    for p in example.get("provenance") or []:
        text = " — ".join(x for x in (p.get("path"), p.get("locator")) if x)
        if text and text not in parts:
            parts.append(text)
    return "; ".join(parts)


def _prefill(example: dict, decision: dict | None) -> tuple[str, str, str, str]:
    """decision, fixed_input, fixed_output, note as stored, so a re-import is a no-op."""
    if decision is not None:
        return (decision["decision"], _json_or_text(decision.get("input")),
                _json_or_text(decision.get("output")), decision.get("note") or "")
    word = _FROM_HUMAN.get(example.get("human") or "", "")
    if word == "fix":  # already-applied example: its input/output are the fixed ones
        return word, _json_or_text(example.get("input")), _json_or_text(example.get("output")), ""
    return word, "", "", ""


def export_review(path: Path, examples: list[dict], decisions: dict[str, dict] | None = None) -> int:
    """Write one CSV row per example (UTF-8 with BOM, atomically); return the row count.

    The decision columns are prefilled from `decisions` (as `load_decisions`
    returns them) when given, else from the "human" mark `apply` leaves.
    """
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for ex in examples:
        decision, fixed_input, fixed_output, note = _prefill(ex, (decisions or {}).get(ex["id"]))
        spans = ex.get("spans") or []
        writer.writerow([
            ex["id"], ex.get("status") or "", _cell(ex.get("reason")),
            _score(ex.get("grounding")), _score(ex.get("judge")), _cell(ex.get("label")),
            _cell(ex.get("input")), _cell(_json_or_text(ex.get("output"))), _cell(_source(ex)),
            _cell(spans[0].get("text") if spans else ""),
            decision, fixed_input, fixed_output, note,
        ])
    atomic_write_text(Path(path), "\ufeff" + buf.getvalue())  # the BOM tells Excel it is UTF-8
    return len(examples)


# ---------------------------------------------------------------- import

def _read_rows(path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Header positions and (spreadsheet row number, cells) for every row after it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TasklingError(f"{path}: cannot read the review file ({e.strerror})") from None
    if b"\x00" in data:
        raise TasklingError(f"{path}: this is a binary file, not a CSV; export one with `taskling curate --export`")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:  # Excel's plain "CSV" on Windows saves in the ANSI code page
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise TasklingError(f"{path}: not a text CSV (neither UTF-8 nor Windows-1252); "
                                "save it as \"CSV UTF-8\"") from None
    # Spreadsheets in many locales save with ";" (or tab) between cells.
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = ","
    for d in (",", ";", "\t"):
        names = {c.strip().lstrip("\ufeff").lower() for c in next(csv.reader([first], delimiter=d), [])}
        if {"id", "decision"} <= names:
            delimiter = d
            break
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as e:
        raise TasklingError(f"{path}: not a readable CSV ({e})") from None
    start = next((i for i, r in enumerate(rows) if any(c.strip() for c in r)), None)
    header = [c.strip().lstrip("\ufeff").lower() for c in rows[start]] if start is not None else []
    missing = [c for c in ("id", "decision") if c not in header]
    if missing:
        raise TasklingError(f"{path}: no {' and no '.join(repr(c) for c in missing)} column in the first row; "
                            "export a review file with `taskling curate --export` and edit that")
    where: dict[str, int] = {}
    for i, name in enumerate(header):
        where.setdefault(name, i)  # a duplicated column name: the first one counts
    # Each CSV record is one spreadsheet row, even when a quoted cell spans lines.
    return where, [(n + 1, r) for n, r in enumerate(rows) if n > start]


def _fixed_output(text: str, original) -> tuple[object, str | None]:
    """The corrected output in the original's type, or a problem to report."""
    if isinstance(original, str) or original is None:
        return text, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"fixed_output is not valid JSON ({e.msg} at character {e.pos + 1})"
    if isinstance(original, dict) and not isinstance(value, dict):
        return None, "fixed_output must be a JSON object like {\"field\": \"value\"}"
    return value, None


def import_review(path: Path, store: Path, known: dict[str, dict]) -> dict:
    """Apply the decisions in an edited review CSV; bad rows are reported, not fatal.

    Appends one record per decided row to `store` (flushed and fsynced) and
    returns {"accept", "reject", "fix", "ignored", "errors"}.
    """
    path, store = Path(path), Path(store)
    where, rows = _read_rows(path)
    previous = load_decisions(store)
    counts = {"accept": 0, "reject": 0, "fix": 0, "ignored": 0}
    errors: list[str] = []
    records: list[dict] = []
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def get(row: list[str], name: str) -> str:
        i = where.get(name)
        value = row[i] if i is not None and i < len(row) else ""
        return value.replace("\r\n", "\n").strip()

    for n, row in rows:
        if not any(c.strip() for c in row):
            continue  # blank line
        word, eid = get(row, "decision").lower(), get(row, "id")
        if not word:
            counts["ignored"] += 1
            continue
        problem = None
        decision = WORDS.get(word)
        rec: dict = {"id": eid, "decision": decision}
        if decision is None:
            problem = f"decision {word!r} is not one of accept, reject, fix (keep/yes and drop/no also work)"
        elif not eid:
            problem = "the id cell is empty"
        elif eid not in known:
            problem = f"id {eid!r} is not a current candidate; export a fresh review file"
        else:
            fixed_input, fixed_output = get(row, "fixed_input"), get(row, "fixed_output")
            if decision == "fix":
                if not fixed_input and not fixed_output:
                    problem = "decision is fix but fixed_input and fixed_output are both empty"
                if fixed_input:
                    rec["input"] = fixed_input
                if fixed_output and problem is None:
                    rec["output"], problem = _fixed_output(fixed_output, known[eid].get("output"))
            elif fixed_input or fixed_output:
                problem = f"fixed_input/fixed_output are filled in but the decision is {word!r}; write fix to use them"
        if problem:
            errors.append(f"{path.name} row {n}: {problem}")
            continue
        if note := get(row, "note"):
            rec["note"] = note
        rec["of"] = digest(known[eid])
        counts[decision] += 1
        old = previous.get(eid)
        if old is not None and {k: v for k, v in old.items() if k != "at"} == rec:
            continue  # re-importing an unchanged row: nothing new to store
        records.append({**rec, "at": at})
        previous[eid] = rec
    if records:
        _append(store, records)
    return {**counts, "errors": errors}


def decide(store: Path, example: dict, decision: str, *, input: str | None = None, output=None,
           note: str | None = None) -> dict:
    """Store one reviewer decision about `example` (the web UI's path), exactly as a review-file
    import stores it: the next curate applies it. Returns the record written."""
    word = WORDS.get(str(decision).lower())
    if word is None:
        raise TasklingError(f"decision {decision!r} is not one of accept, reject, fix")
    rec: dict = {"id": example["id"], "decision": word}
    if word == "fix":
        if input is None and output is None:
            raise TasklingError("a fix needs a corrected input or output")
        if input is not None:
            rec["input"] = input
        if output is not None:
            rec["output"], problem = _fixed_output(output, example.get("output")) if isinstance(output, str) \
                else (output, None)
            if problem:
                raise TasklingError(problem)
    if note:
        rec["note"] = note
    rec["of"] = digest(example)
    rec["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _append(Path(store), [rec])
    return rec


def _append(store: Path, records: list[dict]) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store, "a+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size:  # drop a torn tail left by a crash, so the new line starts clean
            f.seek(0)
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- use

def load_decisions(store: Path) -> dict[str, dict]:
    """The latest decision per example id; a torn last line is ignored."""
    out: dict[str, dict] = {}
    for n, rec in enumerate(read_jsonl(Path(store)), 1):
        if not isinstance(rec, dict) or rec.get("decision") not in HUMAN or not rec.get("id"):
            raise TasklingError(f"{store}: record {n} is not a review decision; fix or delete that line")
        out[rec["id"]] = rec
    return out


def _applies(example: dict, decision: dict | None) -> bool:
    return decision is not None and decision.get("of") in (None, digest(example))


def stale(examples: list[dict], decisions: dict[str, dict]) -> list[str]:
    """Ids whose stored decision was made about different text than the example now has."""
    return [ex["id"] for ex in examples
            if ex["id"] in decisions and not _applies(ex, decisions[ex["id"]])]


def apply(examples: list[dict], decisions: dict[str, dict]) -> tuple[list[dict], set[str], set[str]]:
    """(examples with decisions applied, forced_keep ids, forced_drop ids); arguments are not mutated.

    Fixed examples get the corrected input/output (and label, for classify),
    "human": "fixed" and the generated text under "original"; accepted ones "human": "accepted"; rejected ones
    "human": "rejected". Stale decisions (see `stale`) are not applied.
    """
    out: list[dict] = []
    keep: set[str] = set()
    drop: set[str] = set()
    for ex in examples:
        d = decisions.get(ex["id"])
        if not _applies(ex, d):
            out.append(ex)
            continue
        new = {**ex, "human": HUMAN[d["decision"]]}
        if d.get("note"):
            new["human_note"] = d["note"]
        if d["decision"] == "fix":
            new["original"] = ex.get("original") or {"input": ex.get("input"), "output": ex.get("output")}
            if "input" in d:
                new["input"] = d["input"]
            if "output" in d:
                if "label" in ex and ex["label"] == ex.get("output"):
                    new["label"] = d["output"]
                new["output"] = d["output"]
        (drop if d["decision"] == "reject" else keep).add(ex["id"])
        out.append(new)
    return out, keep, drop
