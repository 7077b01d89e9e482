"""Rows of the pile's tables as training examples, in generate: the user's `tables:` entries, else
the ones the task examples point at (tasks/discover.py: a table, or a pattern over passages), shown
and written to tables.found.yaml; and the teacher's paraphrases of their questions.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from .. import tasks
from ..core import tasktype
from ..core.config import Config, TableCfg
from ..core.openbook import ABSTAIN
from ..core.workspace import Context
from ..data.pile import Pile, findable
from ..teacher.backends import Request

if TYPE_CHECKING:
    from ..data.tables import Tables
    from ..tasks.discover import Proposal


def table_examples(cfg: Config, ctx: Context, out: Path) -> tuple[list[dict], list[dict], list[TableCfg]]:
    """Every row of each mapped table as an example (tables.py), what was found, and the entries
    used: the user's `tables:`, else those the task examples point at (discover.py), shown and
    written to tables.found.yaml. Round 0 only: later rounds train on them through the rounds before."""
    if ctx.round > 0:
        return [], [], []
    from ..data.tables import find_tables
    from ..tasks.tables import rows_to_examples

    rows, reports = [], []
    with Pile(ctx.ws.pile_db) as pile:
        entries = [(t, None, find_tables(pile, t, cfg.root)) for t in cfg.tables] or found_tables(cfg, ctx, pile, out)
        for t, proposal, tables in entries:
            exs, rep = rows_to_examples(t, cfg.task, tables, ctx.round)
            rows += exs
            reports.append(rep | ({"found": proposal.report()} if proposal else {}))
            ctx.console.print(f"generate: table '{t.name}': {rep['files']} file(s), {rep['tables']} table(s), "
                              f"{rep['rows']} rows -> {rep['examples']} examples"
                              + (f" (skipped: {rep['skipped']})" if rep["skipped"] else ""))
            for w in rep["warnings"] + [f"{p['path']}: {p['reason']}" for p in rep["problems"]]:
                ctx.console.print(f"[yellow]generate: {w}[/]", highlight=False)
    return rows, reports, [t for t, *_ in entries]


def found_tables(cfg: Config, ctx: Context, pile: Pile, out: Path) -> list[tuple[TableCfg, "Proposal", "Tables"]]:
    """The tables the task examples' answers come from (generate.discover), as `tables:` entries with
    their proposals and what each finds in the pile; shown, and written to tables.found.yaml for the
    user to keep or change."""
    if not cfg.generate.discover or not cfg.task.examples:
        return []
    import yaml

    from ..data.tables import find_tables
    from ..tasks.discover import discover, discover_passages

    every = find_tables(pile, TableCfg(name="every", input="-", output="-"), cfg.root)
    proposals = discover(cfg.task, every)
    if not proposals:  # no table: passages whose text joins key and answer as the examples' do
        proposals = discover_passages(cfg.task, lambda word: [c for c, _ in pile.holding(word, 50)])
    found = [(p, find_tables(pile, p.table, cfg.root)) for p in proposals]  # each entry's rows, found once
    for p, tables in found:
        p.rows = sum(len(t.rows) for t in tables)
    found = [(p, tables) for p, tables in found if p.rows]
    proposals = [p for p, _ in found]
    if not proposals:
        return []
    entries = {"tables": [p.as_entry() for p in proposals]}
    text = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True)
    (out / "tables.found.yaml").write_text(
        "# Tables the task examples' answers come from, found by taskling (generate.discover) and used\n"
        "# because taskling.yaml maps none. Copy this into taskling.yaml to keep or change it; set\n"
        "# generate.discover: false to train without it.\n" + text, encoding="utf-8")
    best = proposals[0]
    where = f"table {best.index} of {best.path}" if best.table.pattern is None else \
        f"passages of the pile (pattern {best.table.pattern}, {best.rows} matches)"
    ctx.console.print(f"generate: {best.report()['examples_matched']} of {len(cfg.task.examples)} task examples "
                      f"come from {where}; its rows become examples "
                      f"({len(proposals)} table(s), written to {out / 'tables.found.yaml'}):", highlight=False)
    ctx.console.print(text.rstrip(), markup=False, highlight=False)
    return [(p.table, p, tables) for p, tables in found]


def paraphrases(cfg: Config, ctx: Context, teacher, rows: list[dict], reports: list[dict],
                mapped: list[TableCfg], most: int | None = None) -> list[dict]:
    """tables[].paraphrase: the teacher rewrites a row's first phrasing N times, the output stays the
    row's; at most `most` rewrites (rows drawn by the seed). A rewrite that loses a value the input
    was made from (a code, a name) is discarded."""
    from ..data import tables as tab
    from ..tasks.tables import inputs

    by_name = {t.name: t for t in mapped}
    firsts = [ex for ex in rows if "paraphrase_of" not in ex]
    if most is not None and len(firsts) > most:
        firsts = sorted(random.Random(cfg.seed).sample(firsts, most), key=firsts.index)
    jobs = []
    for ex in firsts:
        t = by_name[ex["table"]]
        row = ex["provenance"][0]["row"]
        keep = [row[c] for f in tab.Template.parse(inputs(t)[0]).fields if (c := tab.column_for(f, list(row)))]
        for j in range(t.paraphrase):
            msgs = [{"role": "system", "content": "You rewrite text the way a real person would write it."},
                    {"role": "user", "content": (
                        f"Rewrite this {cfg.task.input_noun} in other words, as {cfg.generate.personas[j % len(cfg.generate.personas)]} "
                        f"would write it. Keep these exactly as they are: {'; '.join(keep)}. "
                        f"Reply with the rewritten {cfg.task.input_noun} only.\n\n{ex['input']}")}]
            jobs.append((ex, j, keep, Request(msgs, max_tokens=cfg.teacher.max_tokens,
                                              temperature=cfg.teacher.temperature, seed=cfg.seed * 7919 + j)))
    done = teacher.generate([r for *_, r in jobs]) if jobs else []
    out, lost = [], 0
    for (ex, j, keep, _), res in zip(jobs, done):
        text = tasks.first_line(res.text) if res.error is None else ""
        if not text or any(v.lower() not in text.lower() for v in keep) or text.strip() == ex["input"].strip():
            lost += 1
            continue
        out.append({**ex, "id": f"{ex['id']}-p{j}", "input": text, "paraphrase_of": ex["id"]})
    for rep in reports:
        rep["paraphrases"] = sum(1 for p in out if p["table"] == rep["table"])
    ctx.console.print(f"generate: {len(out)} paraphrases of table rows kept, {lost} discarded (a value lost)")
    return out


ABSENT_SHARE, ABSENT_MOST = 0.1, 20   # questions about keys the pile lacks: a tenth of the rows, at most 20


def absent_questions(cfg: Config, pile: Pile, rows: list[dict], mapped: list[TableCfg]) -> list[dict]:
    """Questions in the rows' own phrasings about keys the pile does not hold (shaped like a row's key,
    found in no chunk): eval items whose answer is the abstention, so an open-book student's "not in the
    documents" is scored where it is right and where it is not (evaluate's abstention precision and
    recall). Answer tasks whose phrasing names one column only; held out, never trained on."""
    from ..data.tables import Template, column_for
    from ..tasks.tables import inputs

    firsts = [ex for ex in rows if "paraphrase_of" not in ex]
    if not firsts or tasktype.get(cfg.task.type).structured or tasktype.get(cfg.task.type).labelled:
        return []
    by_name = {t.name: t for t in mapped}
    rnd = random.Random(cfg.seed)
    out = []
    for ex in rnd.sample(firsts, min(len(firsts), ABSENT_MOST, max(2, round(ABSENT_SHARE * len(firsts))))):
        row = ex["provenance"][0]["row"]
        tpl = Template.parse(rnd.choice(inputs(by_name[ex["table"]])))
        col = column_for(tpl.fields[0], list(row)) if len(tpl.fields) == 1 else None
        fake = unheld(str(row[col]), rnd, pile) if col else None
        if fake is None:
            continue
        out.append({**ex, "id": f"absent-{ex['id']}", "input": tpl.render({**row, col: fake}).strip(), "output": ABSTAIN,
                    "absent": True, "chunks": [], "spans": [],
                    "provenance": [{"chunk": f"absent:{fake}", "path": ex["provenance"][0]["path"], "locator": "none",
                                    "row": {col: fake}}]})
    return out


def unheld(value: str, rnd: random.Random, pile: Pile, tries: int = 30) -> str | None:
    """A key shaped like `value` that no chunk of the pile holds: its digits redrawn when it has two or
    more (QX170 -> QX583: a near miss, as a user's typo or a newer code would be), else its letters;
    None when none turns up (or the key has signs the pile's exact lookup does not take)."""
    if not findable(value):
        return None
    digits = sum(ch.isdigit() for ch in value) >= 2
    for _ in range(tries):
        fake = "".join(rnd.choice("0123456789") if ch.isdigit() and digits else
                       rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if ch.isupper() and not digits else
                       rnd.choice("abcdefghijklmnopqrstuvwxyz") if ch.islower() and not digits else ch for ch in value)
        if fake != value and not pile.holding(fake, 1):
            return fake
    return None
