"""The `tables:` mapping found from the user's examples: where their answers live in the pile.

Owns `discover`. A task example points at a table when its output is a cell of a row (for extract,
every field it fills is a cell of that one row) and another cell of the same row, the row's key (a
code, a name: a column whose values are unique), is written in the example's input. Examples that
point at the same table the same way (same key column, same output columns) agree on a mapping:
at least two of them (the one example, when the task has one). The table then holds more of the
same, and so does every other table of the pile with the same columns. Each becomes a proposed
`tables:` entry: input templates in the examples' own phrasings with the key made a placeholder,
the output column(s), a paraphrase by the teacher per row, and the evidence (which example matched
which row). generate shows the proposal, writes it where the user can copy it into taskling.yaml,
and uses it when the user mapped no table (`generate.discover`, on by default).

Answers that sit in running text rather than a table ("SQLITE_BUSY (5)" in a list, "error QX999 is
clock_drift" in prose) are found the same way by `discover_passages`: where examples' answers and
keys sit close together in a passage, joined by the same words or signs, that join and the shapes
of the examples' keys and answers make a `pattern:` entry whose matches over the pile are the rows.
"""
from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

from ..core import tasktype
from ..core.config import TableCfg, TaskCfg
from ..data.pile import Chunk
from ..data.retrieve import NAME, NAME_CHAR, STOP, holds_word, word_at, word_pattern
from ..data.tables import Table

KEY_UNIQUE = 0.9        # share of a key column's filled cells that are distinct
MIN_KEY_CHARS = 2
GLUE_CHARS = 40         # passages: the most text between a key and its answer, on one line
MAX_ANSWER_CHARS = 80   # passages: longer answers are sentences, not names to find


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split()).lower()


@dataclass
class Proposal:
    """A table the examples point at, as a `tables:` entry, with what pointed there."""
    table: TableCfg
    path: str
    index: int
    name: str | None
    rows: int
    evidence: list[dict]       # per supporting example: {"example", "locator", "key": (column, value)}

    def as_entry(self) -> dict:
        """The entry as taskling.yaml writes it (what the user copies)."""
        return self.table.model_dump(mode="json", exclude_defaults=True)

    def report(self) -> dict:
        return {"entry": self.as_entry(), "path": self.path, "table": self.index, "table_name": self.name,
                "rows": self.rows, "examples_matched": len(self.evidence), "evidence": self.evidence}


def _outputs(task: TaskCfg, output: Any) -> dict[str | None, str] | None:
    """The example's output as {field: normalised value} (None: the one output of a text task);
    None when it cannot be a row's cells (an empty output, a nested value)."""
    if not tasktype.get(task.type).structured:
        return {None: _norm(output)} if isinstance(output, str) and output.strip() else None
    if not isinstance(output, dict):
        return None
    filled = {k: v for k, v in output.items() if v not in (None, "", [])}
    if not filled or any(isinstance(v, (dict, list)) for v in filled.values()):
        return None
    return {k: _norm(v) for k, v in filled.items()}


def _key_columns(t: Table) -> set[str]:
    """Columns whose filled cells are (nearly) all distinct: what a row is looked up by."""
    keys = set()
    for c in t.columns:
        cells = [_norm(r[c]) for r in t.rows if str(r[c]).strip()]
        if len(cells) >= 2 and len(set(cells)) >= KEY_UNIQUE * len(cells):
            keys.add(c)
    return keys


def _template(text: str, value: str, column: str) -> str | None:
    """`text` with the first standalone `value` made the placeholder {column}, literal braces doubled."""
    m = word_at(text, value)
    if m is None or any(ch in column for ch in "{}"):
        return None
    esc = lambda s: s.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return f"{esc(text[:m.start()])}{{{column}}}{esc(text[m.end():])}"


def _hits(task: TaskCfg, tables: list[Table]) -> dict[tuple, dict[int, tuple]]:
    """(table number, key column, output mapping) -> {example number: (row, key value, template)}."""
    wanted = {i: o for i, ex in enumerate(task.examples) if (o := _outputs(task, ex.output))}
    values = {v for o in wanted.values() for v in o.values()}
    found: dict[tuple, dict[int, tuple]] = defaultdict(dict)
    for ti, t in enumerate(tables):
        cells = {(ri, c): _norm(v) for ri, row in enumerate(t.rows) for c, v in row.items()}
        rows_with = defaultdict(set)
        for (ri, _), v in cells.items():
            if v in values:
                rows_with[v].add(ri)
        if not rows_with:
            continue
        keys = _key_columns(t)
        for i, outs in wanted.items():
            for ri in set.intersection(*(rows_with.get(v, set()) for v in outs.values())):
                row = t.rows[ri]
                mapping = tuple(sorted((f or "", next(c for c in t.columns if cells[(ri, c)] == v))
                                       for f, v in outs.items()))
                used = {c for _, c in mapping}
                for key in sorted(keys - used):
                    value = str(row[key]).strip()
                    if len(value) < MIN_KEY_CHARS or not holds_word(task.examples[i].input, value):
                        continue
                    if tpl := _template(task.examples[i].input, value, key):
                        found[(ti, key, mapping)].setdefault(i, (ri, value, tpl))
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:40].strip("-.") or "table"


def _entry(task: TaskCfg, t: Table, key: str, mapping: tuple, templates: list[str], taken: set[str]) -> TableCfg:
    stem = t.path.rsplit("!/", 1)[-1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = base = _slug(f"{stem}-t{t.index}")
    n = 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    output: Any = (f"{{{mapping[0][1]}}}" if not tasktype.get(task.type).structured
                   else {f: f"{{{c}}}" for f, c in mapping})
    # a glob that matches this path only: its wildcard characters escaped
    return TableCfg(name=name, match=glob.escape(t.path), table=t.index,
                    input=templates[0] if len(templates) == 1 else templates, output=output, paraphrase=1)


def discover(task: TaskCfg, tables: Iterable[Table]) -> list[Proposal]:
    """The tables of `tables` (the pile's, as find_tables gives them) that the task's examples agree
    on, as proposed `tables:` entries, most-supported first; [] when no mapping has enough support."""
    tables = [t for t in tables if t.rows and t.columns]
    n = len([ex for ex in task.examples if _outputs(task, ex.output)])
    if not n:
        return []
    need = min(2, n)
    found = _hits(task, tables)
    agreed = sorted(((sig, hits) for sig, hits in found.items() if len(hits) >= need),
                    key=lambda sh: (-len(sh[1]), sh[0][0]))
    out: list[Proposal] = []
    taken: set[str] = set()
    done: set[tuple] = set()
    for (ti, key, mapping), hits in agreed:
        t = tables[ti]
        layout = tuple(c.lower() for c in t.columns)
        if layout in done:
            continue  # this table, or one with its columns, is proposed already, with more support
        done.add(layout)
        templates = list(dict.fromkeys(tpl for _, (_, _, tpl) in sorted(hits.items())))
        evidence = [{"example": i, "locator": t.locators[ri], "key": [key, value]}
                    for i, (ri, value, _) in sorted(hits.items())]
        # every table with the same columns holds more of the same (a report split by month, by product)
        for other in [t] + [o for o in tables if o is not t and tuple(c.lower() for c in o.columns) == layout
                            and key in o.columns]:
            out.append(Proposal(_entry(task, other, key, mapping, templates, taken), other.path, other.index,
                                other.name, len(other.rows), evidence if other is t else []))
    return out


# -- passages ------------------------------------------------------------------------------------------------------
def _keys(example_input: str, output: str) -> list[str]:
    """Names in an input that may be what it asks about: with a digit, an underscore or a capital
    after the first letter (23505, 13, max_connections, QX999), not part of the answer."""
    return [w for w in dict.fromkeys(NAME.findall(example_input)) if w.lower() not in STOP
            and w.lower() not in output.lower()
            and (any(ch.isdigit() for ch in w) or "_" in w or any(ch.isupper() for ch in w[1:]))]


class Join(NamedTuple):
    """Where an example's answer and key stand close on one line of a chunk."""
    order: str                 # answer-first | key-first
    glue: str                  # the text between them
    before: str                # the character before the first, and after the second ("" at an edge)
    after: str


class Hit(NamedTuple):
    """An example's key and answer, joined in `chunk` as `join` says."""
    key: str
    answer: str
    join: Join
    chunk: Chunk


def _glues(text: str, answer: str, key: str) -> Iterable[Join]:
    """Each place `answer` and `key` sit close on one line."""
    for a in re.finditer(word_pattern(answer), text, re.IGNORECASE):
        for k in re.finditer(word_pattern(key), text, re.IGNORECASE):
            first, second, order = (a, k, "answer-first") if a.start() < k.start() else (k, a, "key-first")
            glue = text[first.end():second.start()]
            if 0 < len(glue) <= GLUE_CHARS and "\n" not in glue:
                yield Join(order, glue, text[first.start() - 1:first.start()], text[second.end():second.end() + 1])


def _shape(values: list[str]) -> str:
    """A regex for names shaped like `values`: their common prefix (SQLITE_) and the kinds of
    character the rest is made of ([A-Z_]+, [0-9]+)."""
    prefix = os.path.commonprefix(values)
    prefix = prefix if len(prefix) >= 2 and all(len(v) > len(prefix) for v in values) else ""
    rest = "".join(v[len(prefix):] for v in values)
    kinds = []
    for test, cls in ((str.isupper, "A-Z"), (str.islower, "a-z"), (str.isdigit, "0-9")):
        if any(test(ch) and ch.isascii() for ch in rest):
            kinds.append(cls)
    others = sorted({ch for ch in rest if not (ch.isascii() and ch.isalnum())})
    if any(not ch.isascii() and ch.isalnum() for ch in others):
        return re.escape(prefix) + r"\w+"
    kinds += [re.escape(ch) for ch in others]
    return re.escape(prefix) + f"[{''.join(kinds)}]+"


def _glue_rx(glue: str) -> str:
    """The join as a regex: its signs as written, its spaces any run of spaces on the same line."""
    return "".join(r"[ \t]+" if part.isspace() else re.escape(part) for part in re.split(r"(\s+)", glue) if part)


def _edge(signs: list[str]) -> str:
    """The sign every match has at this edge ("(" of "(13) SQLITE_FULL"), as a regex; "" when they differ
    or it is a letter, a digit, a space or the chunk's edge."""
    sign = signs[0]
    same = all(x == sign for x in signs) and sign and not sign.isalnum() and not sign.isspace()
    return re.escape(sign) if same else ""


def discover_passages(task: TaskCfg, holding: Callable[[str], list[Chunk]]) -> list[Proposal]:
    """A `pattern:` entry for answers that sit in running text, from the examples whose answer and key
    are joined the same way in a passage (`holding(word)`: the pile chunks that hold a word); [] when
    fewer than two examples (the one, when there is one) agree, or the task's answers are not text."""
    if tasktype.get(task.type).structured:
        return []
    shots = [(i, ex) for i, ex in enumerate(task.examples) if isinstance(ex.output, str)
             and ex.output.strip() and len(ex.output) <= MAX_ANSWER_CHARS and "\n" not in ex.output.strip()]
    if not shots:
        return []
    found: dict[tuple, dict[int, Hit]] = defaultdict(dict)
    for i, ex in shots:
        answer = ex.output.strip()
        keys = _keys(ex.input, answer)
        for c in holding(answer) if keys else []:
            for key in keys:
                for join in _glues(c.text, answer, key):
                    found[(join.order, " ".join(join.glue.split()) or " ")].setdefault(i, Hit(key, answer, join, c))
    need = min(2, len(shots))
    agreed = sorted(((sig, hits) for sig, hits in found.items() if len(hits) >= need), key=lambda sh: -len(sh[1]))
    if not agreed:
        return []
    (order, _), hits = agreed[0]
    hits = dict(sorted(hits.items()))
    c = NAME_CHAR
    key_rx = f"(?P<key>{_shape([h.key for h in hits.values()])})"
    answer_rx = f"(?P<answer>{_shape([h.answer for h in hits.values()])})"
    pieces = (answer_rx, key_rx) if order == "answer-first" else (key_rx, answer_rx)
    lead = _edge([h.join.before for h in hits.values()])
    trail = _edge([h.join.after for h in hits.values()])
    glue = _glue_rx(next(iter(hits.values())).join.glue)
    pattern = f"{lead}(?<!{c}){pieces[0]}{glue}{pieces[1]}(?!{c}){trail}"
    templates = list(dict.fromkeys(t for i, h in hits.items() if (t := _template(task.examples[i].input, h.key, "key"))))
    if not templates:
        return []
    entry = TableCfg(name="passages", match="*", pattern=pattern, output="{answer}", paraphrase=1,
                     input=templates[0] if len(templates) == 1 else templates)
    evidence = [{"example": i, "locator": f"{h.chunk.path} {h.chunk.locator}", "key": ["key", h.key]}
                for i, h in hits.items()]
    return [Proposal(entry, "*", 1, None, 0, evidence)]
