"""Labelled data the user already has: read, checked, deduplicated and kept apart from gold.

    items, info = seed.read_items(cfg, SeedDataCfg(path="tickets.csv", input="text", output="team"))
    examples = seed.examples(cfg, gold_path)          # seed_data: as training examples (curate's seeds)
    seed.import_gold(cfg, "tickets.csv", gold_path, fraction=0.2)   # taskling gold import

A file is CSV, TSV, JSONL (or a JSON array) or XLSX; `input` and `output` name its columns (for
extract, `output` may be a JSON column or map each field to a column). A missing column is an
error naming the file, the setting and the columns there are. Rows with an empty input or
output are skipped and counted; an input written twice with one output is kept once, with two
outputs it is a conflict and kept out. An item is never both trained on and gold: `examples`
leaves out every item whose input is in gold.jsonl, and `import_gold` says how many of the items
it moved to gold were seed data (they stop being trained on).

Seed items are examples with `source: human`: written by a person, so no filter drops them and
a generated copy of one is its duplicate (curate treats them as it treats task.examples). For a
classify task's label model they are meant as the source it trusts most: `HUMAN` votes their
label, `clamp` pins their posterior to it (as gold is pinned, `labelmodel.fit(gold=...)`), and
every other source is measured against them (`measured_on_human`); `curation/weak.apply` does all
three in curate, and the items then train with their own label.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..core import tasktype
from ..core.config import Config
from ..core.errors import TasklingError
from ..core.exchange import SeedDataCfg
from ..core.workspace import atomic_write_text, read_jsonl, sha256_file

HUMAN = "human"
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
            ".xlsx": "xlsx", ".xlsm": "xlsx"}


def norm(text: Any) -> str:
    """An input as items are matched: lowercase, runs of space as one."""
    return re.sub(r"\s+", " ", str(text).strip().lower())


def item_id(text: Any) -> str:
    return "human-" + hashlib.sha256(norm(text).encode()).hexdigest()[:12]


# -- reading a file -------------------------------------------------------------------------------------------
def read_rows(path: Path, sheet: str | None = None) -> tuple[list[str], list[tuple[int, dict]]]:
    """(columns, [(row number as a person counts it, row)]) of a CSV/TSV/JSONL/JSON/XLSX file."""
    kind = SUFFIXES.get(path.suffix.lower())
    if not path.is_file():
        raise TasklingError(f"{path}: no such file; check the path (relative to taskling.yaml)")
    if kind is None:
        raise TasklingError(f"{path}: use a .csv, .tsv, .jsonl, .json or .xlsx file of labelled items")
    if kind in ("csv", "tsv"):
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f, delimiter="," if kind == "csv" else "\t")
                rows = [(n, r) for n, r in enumerate(reader, 2)]
                return [c for c in reader.fieldnames or [] if c is not None], rows
        except (UnicodeDecodeError, csv.Error) as e:
            raise TasklingError(f"{path}: not a readable UTF-8 {kind.upper()} file ({e}); save it as UTF-8") from None
    if kind in ("jsonl", "json"):
        data = read_jsonl(path) if kind == "jsonl" else json_rows(path)
        bad = next((n for n, r in enumerate(data, 1) if not isinstance(r, dict)), None)
        if bad:
            raise TasklingError(f"{path}: item {bad} is not an object with named fields")
        return list(dict.fromkeys(k for r in data for k in r)), list(enumerate(data, 1))
    return xlsx_rows(path, sheet)


def json_rows(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TasklingError(f"{path}: not valid JSON ({e}); use a JSON array of objects or JSONL") from None
    if not isinstance(data, list):
        raise TasklingError(f"{path}: must hold a JSON array of objects (one per item)")
    return data


def xlsx_rows(path: Path, sheet: str | None) -> tuple[list[str], list[tuple[int, dict]]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many kinds for a damaged file
        raise TasklingError(f"{path}: not a readable XLSX workbook ({type(e).__name__}: {e})") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise TasklingError(f"{path}: no sheet '{sheet}'; it has {', '.join(book.sheetnames)}")
        ws = book[sheet] if sheet is not None else book.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header = [("" if c is None else str(c).strip()) for c in next(it, ())]
        rows = [(n, {h: v for h, v in zip(header, values) if h}) for n, values in enumerate(it, 2)
                if any(v not in (None, "") for v in values)]
        return [h for h in header if h], rows
    finally:
        book.close()


def column(path: Path, columns: list[str], name: str, setting: str) -> str:
    """`name` when the file has that column; else an error naming the file, the setting and the columns."""
    if name in columns:
        return name
    near = difflib.get_close_matches(name, columns, n=1, cutoff=0.5)
    raise TasklingError(f"{path}: no column '{name}' ({setting}); the file has {', '.join(columns) or 'no columns'}"
                        + (f"; did you mean '{near[0]}'?" if near else f"; set {setting} to one of them"))


def output_of(cfg: Config, src: SeedDataCfg, path: Path, n: int, row: dict) -> Any:
    """The row's output as the task type holds it (a label, a dict of fields, text); None when empty."""
    kind = tasktype.get(cfg.task.type)
    if isinstance(src.output, dict):
        if not kind.structured:
            raise TasklingError(f"{path}: seed_data output maps fields to columns, which only an extract task "
                                f"has; name one column for a {cfg.task.type} task")
        fields = {f: row.get(col) for f, col in src.output.items()}
        return fields if any(v not in (None, "") for v in fields.values()) else None
    value = row.get(src.output)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind.structured and not isinstance(value, dict):
        try:
            value = json.loads(str(value))
        except json.JSONDecodeError:
            raise TasklingError(f"{path}: row {n}: column '{src.output}' is not a JSON object of the fields; "
                                "write it as JSON or map each field to a column (output: {field: column})") from None
        if not isinstance(value, dict):
            raise TasklingError(f"{path}: row {n}: column '{src.output}' must be a JSON object of the fields")
        return value
    if kind.labelled:
        label = str(value).strip()
        if label not in cfg.task.labels:
            near = difflib.get_close_matches(label, list(cfg.task.labels), n=1)
            raise TasklingError(f"{path}: row {n}: label {label!r} is not one of the task's labels "
                                f"({', '.join(cfg.task.labels)})" + (f"; did you mean '{near[0]}'?" if near else ""))
        return label
    return value if isinstance(value, str) else str(value)


def read_items(cfg: Config, src: SeedDataCfg) -> tuple[list[dict], dict]:
    """The file's labelled items ({id, input, output, row, path}) and what was skipped: empty rows,
    repeats (kept once) and conflicts (one input, two outputs: kept out)."""
    path = (cfg.root / src.path).resolve() if not Path(src.path).is_absolute() else Path(src.path)
    columns, rows = read_rows(path, src.sheet)
    column(path, columns, src.input, "seed_data input")
    for col in (src.output.values() if isinstance(src.output, dict) else [src.output]):
        column(path, columns, col, "seed_data output")
    rel = str(src.path)
    items: dict[str, dict] = {}
    empty, repeats, conflicts = 0, 0, set()
    for n, row in rows:
        text = row.get(src.input)
        text = "" if text is None else str(text).strip()
        out = output_of(cfg, src, path, n, row) if text else None
        if not text or out is None:
            empty += 1
            continue
        key = norm(text)
        if key in items:
            if items[key]["output"] == out:
                repeats += 1
            else:
                conflicts.add(key)
            continue
        items[key] = {"id": item_id(text), "input": text, "output": out, "row": n, "path": rel,
                      "format": SUFFIXES[path.suffix.lower()]}
    kept = [it for k, it in items.items() if k not in conflicts]
    info = {"file": rel, "rows": len(rows), "items": len(kept), "empty": empty, "repeats": repeats,
            "conflicts": len(conflicts), "conflicting": sorted(items[k]["input"][:120] for k in conflicts)[:5]}
    return kept, info


# -- seed data joins training ---------------------------------------------------------------------------------
def gold_inputs(gold_path: Path) -> set[str]:
    return {norm(r["input"]) for r in read_jsonl(gold_path) if isinstance(r, dict) and "input" in r}


def as_example(cfg: Config, it: dict) -> dict:
    """A seed item as a curated example: written by a person, its source the file and row."""
    where = f"{'line' if it['format'] == 'jsonl' else 'item' if it['format'] == 'json' else 'row'} {it['row']}"
    ex = {"id": it["id"], "input": it["input"], "output": it["output"], "source": HUMAN, "chunks": [], "spans": [],
          "grounding": 1.0, "provenance": [{"chunk": f"{it['path']}#{where}", "path": it["path"],
                                            "format": it["format"], "locator": where}]}
    if tasktype.get(cfg.task.type).labelled:
        ex["label"] = it["output"]
    return ex


def load(cfg: Config, gold_path: Path) -> tuple[list[dict], dict]:
    """Every seed_data file's items as training examples, without those in gold.jsonl; and per file
    what was read, skipped and left out for gold."""
    if not cfg.seed_data:
        return [], {"files": []}
    gold = gold_inputs(gold_path)
    out: dict[str, dict] = {}
    files = []
    for src in cfg.seed_data:
        items, info = read_items(cfg, src)
        in_gold = [it for it in items if norm(it["input"]) in gold]
        fresh = [it for it in items if norm(it["input"]) not in gold and it["id"] not in out]
        info |= {"in_gold": len(in_gold), "in_other_files": len(items) - len(in_gold) - len(fresh),
                 "examples": len(fresh)}
        out.update({it["id"]: as_example(cfg, it) for it in fresh})
        files.append(info)
    return list(out.values()), {"files": files, "examples": len(out)}


def examples(cfg: Config, gold_path: Path) -> list[dict]:
    """curate's hook: the seed data as training examples (`human` provenance), none of them in gold."""
    return load(cfg, gold_path)[0]


def digest(cfg: Config) -> str | None:
    """What the seed files hold, for a stage's fingerprint (None without seed data)."""
    if not cfg.seed_data:
        return None
    h = hashlib.sha256()
    for src in cfg.seed_data:
        path = cfg.root / src.path
        h.update(f"{src.path}:{sha256_file(path) if path.is_file() else 'missing'}\n".encode())
    return h.hexdigest()


# -- or becomes gold ------------------------------------------------------------------------------------------
def chosen(seed: int, text: str, fraction: float) -> bool:
    """Whether an item falls in the `fraction` share: seeded, by its input alone (stable across files)."""
    h = int(hashlib.sha256(f"{seed}:gold:{norm(text)}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < fraction


def import_gold(cfg: Config, file: str | Path, gold_path: Path, input: str = "input", output: str = "output",
                sheet: str | None = None, fraction: float = 1.0) -> dict:
    """Append the file's items (or a seeded `fraction` of them) to gold.jsonl, skipping those already
    there. An imported item that seed_data also holds stops being trained on (never both)."""
    if not 0 < fraction <= 1:
        raise TasklingError(f"--fraction {fraction:g}: use a share above 0 and at most 1")
    src = SeedDataCfg(path=str(Path(file).resolve()), input=input, output=output, sheet=sheet)
    items, info = read_items(cfg, src)
    have = gold_inputs(gold_path)
    new = [it for it in items if norm(it["input"]) not in have and chosen(cfg.seed, it["input"], fraction)]
    seeded = {norm(it["input"]) for s in cfg.seed_data if (cfg.root / s.path).is_file()
              for it in read_items(cfg, s)[0]}
    rows = read_jsonl(gold_path)
    rows += [{"id": f"gold-{it['id'].removeprefix('human-')}", "input": it["input"], "output": it["output"],
              "source": f"{file} row {it['row']}"} for it in new]
    if new:
        atomic_write_text(gold_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    already = sum(norm(it["input"]) in have for it in items)
    return {"file": str(file), "gold": str(gold_path), "read": info["rows"], "items": len(items),
            "imported": len(new), "already_in_gold": already, "left_out": len(items) - len(new) - already,
            "fraction": fraction, "empty": info["empty"], "repeats": info["repeats"], "conflicts": info["conflicts"],
            "no_longer_trained_on": sum(norm(it["input"]) in seeded for it in new), "gold_items": len(rows)}


# -- a label source the label model trusts most -------------------------------------------------------------
def votes(items: list[dict]) -> list[dict]:
    """The `human` source's vote on each item: its label on seed items, nothing (not applicable) elsewhere."""
    return [{HUMAN: it["label"]} if it.get("source") == HUMAN and it.get("label") is not None else {}
            for it in items]


def clamp(items: list[dict], labels: list[str]) -> dict[int, str]:
    """Item index -> label for the seed items: the label model pins their posterior there (its `gold=`),
    as known truth that orients every other source's estimate."""
    return {i: it["label"] for i, it in enumerate(items)
            if it.get("source") == HUMAN and it.get("label") in labels}


def measured_on_human(names: list[str], item_votes: list[dict], pinned: dict[int, str]) -> dict:
    """Each other source's accuracy and coverage on the seed items, where it voted."""
    out = {}
    for s in names:
        if s == HUMAN:
            continue
        said = [(item_votes[i].get(s), truth) for i, truth in pinned.items() if item_votes[i].get(s) is not None]
        out[s] = {"accuracy": round(sum(a == b for a, b in said) / len(said), 4) if said else None,
                  "voted": len(said), "coverage": round(len(said) / len(pinned), 4) if pinned else None}
    return out
