"""Rows of mapped tables as examples of the task: what a row means to each task type.

Owns `rows_to_examples`: each row of the tables data/tables.py found becomes one example shaped
like generate's (source "table", the row and its locator as provenance, placed in the pile chunk
that holds it), with a report of what matched, what was skipped and why. The task decides what a
row's output is: one of the task's labels (a labelled type such as classify: "Bug" is the label
"bug"), a JSON object with the schema's types (a structured type such as extract: "1,234.50" is
1234.5, "yes" is true, an empty cell is null) or the text; the task type's flags say which.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

from ..core import tasktype
from ..core.config import TableCfg, TaskCfg
from ..core.errors import TasklingError
from ..data.tables import Table, Template, column_for, missing_column
from . import output_text

DUPLICATE = "same input and output as an earlier row"
_TRUE, _FALSE = ("true", "yes", "y", "1", "on", "x"), ("false", "no", "n", "0", "off")


def _squash(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _coerce(text: str, spec: dict) -> Any:
    """A rendered value as the schema's type wants it; ValueError("is not an integer") when it cannot be."""
    kind = spec.get("type", "string")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    s = text.strip()
    plain = re.sub(r"(?<=\d)[,_ '](?=\d{3}\b)", "", s)  # 1,234 / 1 234 / 1_234
    value: Any = s
    if kind in ("integer", "number") and re.fullmatch(r"[+-]?\d+", plain):
        value = int(plain)
    elif kind == "integer" and re.fullmatch(r"[+-]?\d+\.0*", plain):
        value = int(float(plain))
    elif kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", plain):
        value = float(plain)
    elif kind in ("integer", "number"):
        raise ValueError(f"is not {'an integer' if kind == 'integer' else 'a number'}")
    elif kind == "boolean":
        if s.lower() not in _TRUE + _FALSE:
            raise ValueError("is not a boolean (true/false, yes/no, 1/0)")
        value = s.lower() in _TRUE
    elif kind in ("array", "object"):
        try:
            value = json.loads(s)
        except json.JSONDecodeError:
            pass
        if not isinstance(value, list if kind == "array" else dict):
            raise ValueError(f"is not a JSON {kind}")
    if "enum" in spec and value not in spec["enum"]:
        raise ValueError(f"is not one of {spec['enum']}")
    return value


def _output_of(task: TaskCfg, outs: Any, row: dict) -> Any:
    """The row's output, or ValueError(the reason to skip the row)."""
    kind = tasktype.get(task.type)
    if not kind.structured:
        if blank := outs.empty_columns(row):
            raise ValueError(f"empty value in column '{blank[0]}'")
        text = outs.render(row).strip()
        if not kind.labelled or text in task.labels:
            return text
        same = [lab for lab in task.labels if _squash(lab) == _squash(text)]  # "Bug" is the label "bug"
        if len(same) != 1:
            raise ValueError(f"label '{text}' is not one of the task's labels")
        return same[0]
    schema = task.output_schema or {}
    spec = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name in list(spec) + [f for f in outs if f not in spec]:
        tpl = outs.get(name)
        # a field whose cells are all empty is absent: null, as the extract task writes it
        if tpl is None or (tpl.fields and len(tpl.empty_columns(row)) == len(tpl.fields)):
            out[name] = None
            continue
        text = tpl.render(row).strip()
        try:
            out[name] = _coerce(text, spec.get(name, {})) if text else None
        except ValueError as e:
            raise ValueError(f"field '{name}' {e}") from None
    for name in schema.get("required", []):
        if out.get(name) is None:
            raise ValueError(f"empty value for required field '{name}'")
    if all(v in (None, "", []) for v in out.values()):
        raise ValueError("every output field is empty")
    return out


def inputs(cfg: TableCfg) -> list[str]:
    """The entry's input phrasings: one template, or a list of them."""
    return [cfg.input] if isinstance(cfg.input, str) else list(cfg.input)


def _templates(cfg: TableCfg, task: TaskCfg) -> tuple[list[Template], Any]:
    where = f"tables: '{cfg.name}'"
    inp = [Template.parse(text, f"{where}: input ") for text in inputs(cfg)]
    if not tasktype.get(task.type).structured:
        if isinstance(cfg.output, dict):
            raise TasklingError(f"{where}: output is one template for a {task.type} task")
        return inp, Template.parse(cfg.output, f"{where}: output ")
    if not isinstance(cfg.output, dict):
        raise TasklingError(f"{where}: an {task.type} task maps output to fields, e.g. output: "
                            f"{{field: '{{column}}'}}")
    spec = (task.output_schema or {}).get("properties", {})
    unknown = [f for f in cfg.output if spec and f not in spec]
    if unknown:
        raise TasklingError(f"{where}: output field '{unknown[0]}' is not in task.output_schema "
                            f"(its fields: {', '.join(spec)})")
    return inp, {f: Template.parse(t, f"{where}: output.{f} ") for f, t in cfg.output.items()}


def _usable(tables: list[Table], templates: list[Template], where: str, problems: list[dict]) -> list[Table]:
    """The tables that have every column the templates name. A column missing in some tables only
    skips those; missing in all of them, the template is wrong: TasklingError."""
    usable, first_missing = [], None
    for t in tables:
        missing = [f for tpl in templates for f in tpl.fields if column_for(f, t.columns) is None]
        if missing:
            msg = missing_column(missing[0], t.columns, f"{where} ({t.path}, table {t.index}): ")
            first_missing = first_missing or msg
            problems.append({"path": t.path, "reason": msg})
        else:
            usable.append(t)
    if tables and not usable:
        raise TasklingError(first_missing)
    return usable


def rows_to_examples(cfg: TableCfg, task: TaskCfg, tables: list[Table], round: int = 0) -> tuple[list[dict], dict]:
    """Each row of `tables` as an example shaped like generate's (source "table"), and a report:
    files, tables, rows, examples, rows skipped by reason (and the first few of them), duplicates,
    rows over max_rows, problems per file and warnings. Raises TasklingError for a template that
    does not parse, or that names a column none of the tables has."""
    where = f"tables: '{cfg.name}'"
    asks, outs = _templates(cfg, task)
    problems = list(getattr(tables, "problems", []))
    usable = _usable(tables, [*asks, *(outs.values() if isinstance(outs, dict) else [outs])], where, problems)
    examples: list[dict] = []
    samples: list[dict] = []                     # the first skipped rows, to look at
    skipped, seen, output_of = Counter(), set(), {}
    conflicts = capped = taken = 0                # taken: rows that gave an example
    for t in usable:
        for i, row in enumerate(t.rows):
            if cfg.max_rows is not None and taken >= cfg.max_rows:
                capped += len(t.rows) - i
                break
            first = None                         # the row's first example: the others are its rephrasings
            for k, inp in enumerate(asks):
                try:
                    if blank := inp.empty_columns(row):
                        raise ValueError(f"empty value in column '{blank[0]}'")
                    text = inp.render(row).strip()
                    output = _output_of(task, outs, row)
                    same = (" ".join(text.split()), output_text(output))
                    if same in seen:
                        raise ValueError(DUPLICATE)
                except ValueError as e:
                    skipped[str(e)] += 1
                    samples += [{"path": t.path, "locator": t.locators[i], "reason": str(e)}] if len(samples) < 10 else []
                    if str(e) == DUPLICATE:
                        continue
                    break  # an empty cell or a bad output: the row, in every phrasing
                seen.add(same)
                conflicts += output_of.setdefault(same[0], same[1]) != same[1]
                ex = _example(cfg, task, t, i, text, output, round)
                if first is not None:  # held out with the row, never split from it
                    ex |= {"id": f"{first['id']}-q{k}", "paraphrase_of": first["id"]}
                taken += first is None
                first = first or ex
                examples.append(ex)
    paths = list(getattr(tables, "paths", sorted({t.path for t in tables})))
    report = {"table": cfg.name, "match": cfg.match, "files": len(paths), "paths": paths[:20],
              "tables": len(tables), "rows": sum(len(t.rows) for t in tables), "examples": len(examples),
              "skipped": dict(skipped.most_common()), "skipped_rows": samples, "duplicates": skipped[DUPLICATE],
              "conflicts": conflicts, "capped": capped, "problems": problems,
              "warnings": list(getattr(tables, "warnings", []))}
    if tables and not examples:
        top = skipped.most_common(1)
        report["warnings"].append(f"{where}: {report['rows']} row(s) but no example" +
                                  (f"; most were skipped for: {top[0][0]} ({top[0][1]})" if top else ""))
    if conflicts:
        report["warnings"].append(f"{where}: {conflicts} input(s) come again with a different output; "
                                  f"the rows disagree, check the table")
    return examples, report


def _example(cfg: TableCfg, task: TaskCfg, t: Table, i: int, text: str, output: Any, round: int) -> dict:
    locator, chunk = t.locators[i], t.chunks[i]
    digest = hashlib.sha256(f"{cfg.name}\0{t.path}\0{locator}".encode()).hexdigest()[:12]
    label = output if tasktype.get(task.type).labelled else None
    return {
        "id": f"tbl-{cfg.name}-{digest}", "input": text, "output": output,
        **({"label": label} if label is not None else {}),
        "source": "table", "table": cfg.name, "chunks": [chunk] if chunk else [], "spans": [],
        # "chunk" names the pile chunk that holds the row; a row placed in none is a unit of its own
        "provenance": [{"chunk": chunk or f"{t.path}#{locator}", "path": t.path, "sha256": t.sha256,
                        "format": t.format, "locator": locator, "table": t.index, "table_name": t.name,
                        "row": dict(t.rows[i])}],
        "arm": [t.topics[i], label], "round": round,
    }
