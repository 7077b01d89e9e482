"""Render a run's report dict (see build.py) as one self-contained HTML page.

`render_html(report)` returns the page: inline CSS, inline SVG charts (`charts`), no scripts and
no external assets, so runs/<id>/report.html can be mailed, archived or printed as is. The text
and tables come from `parts`, the Rounds section from `rounds`. Every report string is
HTML-escaped and any top-level key may be missing (reports are also built mid-run).
"""
from __future__ import annotations

from .charts import TOPIC_BARS, bar_chart, colour, line_chart, topic_chart
from .parts import (DASH, MODELS, as_dict, as_list, ci_text, esc, fmt, kv_table, money, num, sets_in_order, short,
                    systems_in_order, table, text_cell)
from .rounds import rounds_section

FAILURE_ROWS = 50

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--accent:#0072B2}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;line-height:1.45;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1080px;margin:0 auto;padding:28px 32px 48px}
header{border-bottom:1px solid var(--line);padding-bottom:16px;margin-bottom:8px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:18px;margin:32px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:18px 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.meta{color:var(--muted);margin:4px 0}
.tag{display:inline-block;font-size:12px;padding:1px 8px;border:1px solid var(--line);border-radius:10px;
 background:var(--soft);color:var(--muted);vertical-align:middle;margin-left:8px;font-weight:500}
.verdict{margin:14px 0 4px;padding:12px 16px;border-left:4px solid var(--accent);background:#eef6fc;
 border-radius:4px;font-size:15px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.student td{font-weight:600}
.res th.n{white-space:normal}.res td:first-child{white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.funnel td:last-child{width:45%}
.bar{height:12px;background:var(--accent);border-radius:2px;min-width:1px}
.failures{table-layout:fixed}.failures td{white-space:pre-wrap;overflow-wrap:break-word;font-size:12px}
.failures th{width:11%}.failures th:first-child{width:10%}.failures th:nth-child(2){width:13%}
.failures th:nth-child(3){width:26%}
.failures th:last-child{width:16%}.failures td:first-child{color:var(--muted)}
.failures td.bad{background:#fdecea}
.failures td.ok{background:#e9f6ee}
span.bad{color:#b3261e;font-weight:600}span.good{color:#1e7b3c}
h4{font-size:13px;margin:14px 0 4px}
.rf{table-layout:fixed}.rf td{white-space:pre-wrap;overflow-wrap:break-word;font-size:12px}
.rf th:first-child{width:12%}.rf th:nth-child(2){width:40%}.rf td:first-child{color:var(--muted)}
.rf td.bad{background:#fdecea}.cm small{font-size:10px;opacity:.85}
.narrow{width:auto;min-width:50%}.kv{width:auto}.kv th{font-weight:500;color:var(--muted);background:none}
.note{color:var(--muted);font-size:12px}
.cms{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}.cms>div{overflow-x:auto;max-width:100%}
.cm{width:auto;font-size:12px}.cm td{text-align:center;min-width:36px;border:1px solid #fff}
.cm thead th{vertical-align:bottom}.cm thead th.p{writing-mode:vertical-rl;transform:rotate(180deg);
 max-height:140px;text-align:left;padding:8px 4px}
.cm td.rl{text-align:left;font-weight:600;background:var(--soft)}
.cm td.d{outline:2px solid #1f2328;outline-offset:-2px}.cm td.hi{color:#fff}.cm td.t{color:var(--muted)}
figure{margin:8px 0 16px}svg{display:block;width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:12px;fill:#1f2328}
""" + "".join(f".cm td.q{i}{{background:rgba(0,114,178,{i / 10:.1f})}}" for i in range(1, 11)) + """
@media print{body{font-size:11px}.wrap{max-width:none;padding:0}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 figure,tr{break-inside:avoid}h2{break-after:avoid}thead{display:table-header-group}}
"""


# ---- sections -------------------------------------------------------------

def _header(rep: dict) -> str:
    task = rep.get("task") if isinstance(rep.get("task"), dict) else {}
    name = task.get("name") or rep.get("run_id", "")
    tag = f'<span class="tag">{esc(task["type"])}</span>' if task.get("type") else ""
    out = [f"<header><h1>{esc(name)}{tag}</h1>"]
    if task.get("description"):
        out.append(f'<p class="meta">{esc(task["description"])}</p>')
    meta = [f"run <code>{esc(rep.get('run_id', ''))}</code>"]
    if rep.get("generated_at"):
        meta.append(f"generated {esc(rep['generated_at'])}")
    if task.get("metric"):
        meta.append(f"metric {esc(task['metric'])}")
    out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if rep.get("summary"):
        out.append(f'<div class="verdict">{esc(rep["summary"])}</div>')
    return "".join(out) + "</header>"


def _pair(d: dict, a: str, b: str) -> str:
    x, y = fmt(d.get(a), 0), fmt(d.get(b), 0)
    return DASH if x == y == DASH else f"{x} / {y}"


def _metric_cell(r: dict, name: str) -> str:
    """A secondary metric; its 95% CI, when known, shows on hover to keep the table narrow."""
    v, ci = fmt(as_dict(r.get("metrics")).get(name)), as_dict(r.get("cis")).get(name)
    lo, hi = (num(c) for c in ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return v if v == DASH or lo is None or hi is None else f'<span title="95% CI {lo:.2f} to {hi:.2f}">{v}</span>'


def _cost(r: dict) -> str:
    return "local" if "cost_per_1k" in r and r["cost_per_1k"] is None else money(r.get("cost_per_1k"))


def _result_columns(metric: str, others: list[str]) -> list:
    """(header, cell(row) -> HTML) for one set's results table."""
    return ([(f"{esc(metric)} [95%&nbsp;CI]", ci_text)] +
            [(esc(o), lambda r, o=o: _metric_cell(r, o)) for o in others] +
            [("n", lambda r: fmt(r.get("n"))), ("items/s", lambda r: fmt(r.get("items_per_s"), 1)),
             ("latency ms p50&nbsp;/&nbsp;p95", lambda r: _pair(as_dict(r.get("latency_ms")), "p50", "p95")),
             ("tokens in&nbsp;/&nbsp;out", lambda r: _pair(as_dict(r.get("tokens")), "prompt", "completion")),
             ("size MB", lambda r: fmt(r.get("size_mb"), 1)), ("cost per 1k items", _cost),
             ("CPU s per 1k items", lambda r: fmt(r.get("cpu_seconds_per_1k"), 1))])


def _results(rep: dict) -> str:
    res = {s: per for s, per in (rep.get("results") or {}).items() if isinstance(per, dict) and per}
    if not res:
        return ""
    metric = (rep.get("task") or {}).get("metric") or "metric"
    out = ["<section><h2>Results</h2>"]
    for s in sets_in_order(res):
        models = systems_in_order(res[s])
        recs = [as_dict(res[s][m]) for m in models]
        others = list(dict.fromkeys(k for r in recs for k in as_dict(r.get("metrics")) if k != metric))
        # A column no system has a value for (no latency recorded, say) is left out.
        cols = [c for i, c in enumerate(_result_columns(metric, others))
                if i == 0 or any(c[1](r) != DASH for r in recs)]
        rows = [[f'<span class="swatch" style="background:{colour(m, models)}"></span>{esc(m)}'] +
                [cell(r) for _, cell in cols] for m, r in zip(models, recs)]
        out.append(f"<h3>{esc(s)}</h3>" + table(["system"] + [h for h, _ in cols], rows, range(1, len(cols) + 1), "res",
                                                ["student" if m == "student" else "" for m in models]))
    out += [bar_chart(res, metric), _constrained(rep), _open_book(rep)]
    return "".join(out) + "</section>"


def _open_book(rep: dict) -> str:
    """An open-book student: what it reads, how its training rows were shown, and how often the retriever
    put each item's source among them (recall@k), the ceiling of every open-book system."""
    book = as_dict(as_dict(rep.get("training")).get("open_book"))
    recall = as_dict(as_dict(rep.get("evaluation")).get("retrieval"))
    if not book and not recall:
        return ""
    rows = [[esc(s), fmt(as_dict(recall[s]).get("k")), fmt(as_dict(recall[s]).get("recall")),
             fmt(as_dict(recall[s]).get("n"))] for s in sets_in_order(recall)]
    note = (f'<p class="note">Open-book: the student reads the {esc(book.get("k"))} document chunks the retriever '
            f"finds for each input and answers from them, citing the one it used; closed-book it answers from "
            f"memory alone. In training {fmt(book.get('distractor_share'))} of the examples with a known source "
            f"were shown without it (target: {esc(book.get('missing'))}).</p>" if book else "")
    return ("<h3>open book: retrieval</h3>" + note +
            (table(["set", "k", "recall@k of the source", "items with a source"], rows, (1, 2, 3), cls="narrow")
             if rows else "") + _open_book_errors(recall))


def _open_book_errors(recall: dict) -> str:
    """Per set and open-book system, where the wrong answers come from: the retriever (the source was not
    among the chunks shown) or the reader (it was, and the answer is still wrong)."""
    rows = []
    for s in sets_in_order(recall):
        per = as_dict(as_dict(recall[s]).get("errors"))
        for m in systems_in_order(per):
            e = as_dict(per[m])
            rows.append([esc(s), esc(m), fmt(e.get("wrong")), fmt(e.get("retrieval_missed")),
                         f"{fmt(e.get('reader_wrong'))} ({fmt(e.get('reader_abstained'))} abstained)",
                         fmt(e.get("no_source"))])
    if not rows:
        return ""
    return ("<h3>open book: where the wrong answers come from</h3>"
            '<p class="note">Retrieval missed: the source was not among the chunks the student read, so it could '
            "not have answered from them. Reader wrong: the source was there and the answer is still wrong.</p>"
            + table(["set", "system", "wrong answers", "retrieval missed", "reader wrong", "no known source"], rows,
                    (2, 3, 4, 5), cls="narrow"))


def _constrained(rep: dict) -> str:
    c = as_dict(as_dict(rep.get("evaluation")).get("constrained"))
    rows = []
    for s in sets_in_order(c):
        per = as_dict(c[s])
        for m in systems_in_order(per):
            r = as_dict(per[m])
            free, con = num(r.get("free")), num(r.get("constrained"))
            delta = f"{con - free:+.2f}" if free is not None and con is not None else DASH
            if r:
                rows.append([esc(s), esc(m), fmt(r.get("metric")), fmt(r.get("free")), fmt(r.get("constrained")),
                             delta])
    return ("<h3>constrained decoding: free vs constrained</h3>" +
            table(["set", "system", "metric", "free", "constrained", "change"], rows, (3, 4, 5), cls="narrow")
            if rows else "")


def _f1_tables(by_set, first: str) -> list[str]:
    """Per set, one row per label (or field) and one column per system: a number, or the F1 of
    {precision, recall, f1, support}, with the support column when any row has one."""
    out = []
    for s in sets_in_order(as_dict(by_set)):
        per = {m: v for m, v in as_dict(by_set[s]).items() if isinstance(v, dict) and v}
        if not per:
            continue
        models = systems_in_order(per)
        labels = list(dict.fromkeys(lab for m in models for lab in per[m]))
        val = {(m, lab): as_dict(v).get("f1") if isinstance(v, dict) else v
               for m in models for lab, v in per[m].items()}
        sup = [next((x for m in models if (x := as_dict(per[m].get(lab)).get("support")) is not None), None)
               for lab in labels]
        has_sup = any(x is not None for x in sup)
        rows = [[esc(lab)] + [fmt(val.get((m, lab))) for m in models] + ([fmt(x)] if has_sup else [])
                for lab, x in zip(labels, sup)]
        head = [first] + [esc(m) for m in models] + (["support"] if has_sup else [])
        out.append(f"<h3>{esc(s)}</h3>" + table(head, rows, range(1, len(head)), cls="narrow"))
    return out


def _per_label(rep: dict) -> str:
    ev = as_dict(rep.get("evaluation"))
    out = _f1_tables(ev.get("per_class"), "label")
    note = '<p class="note">F1 per label; support is the number of items expected to have it.</p>' if out else ""
    out = out or _f1_tables(rep.get("per_label"), "label")
    return f"<section><h2>Per label</h2>{note}{''.join(out)}</section>" if out else ""


def _per_field(rep: dict) -> str:
    out = _f1_tables(as_dict(rep.get("evaluation")).get("per_field"), "field")
    return ('<section><h2>Per field</h2><p class="note">F1 per extracted field; support is the number of items '
            f"expected to have it.</p>{''.join(out)}</section>" if out else "")


def _confusion(c: dict) -> str:
    """Rows are expected labels, columns predicted ones; a cell's shade is its share of the row."""
    labels, mat, pred = c.get("labels"), c.get("matrix"), c.get("predicted_labels")
    if not (isinstance(labels, list) and labels and isinstance(mat, list) and mat):
        return ""
    pred = pred if isinstance(pred, list) and pred else labels
    rows = []
    for lab, row in zip(labels, mat):
        vals = [row[j] if isinstance(row, list) and j < len(row) else None for j in range(len(pred))]
        total = sum(num(v) or 0 for v in vals)
        cells = [("rl", esc(lab))]
        for p, v in zip(pred, vals):
            q = round(10 * (num(v) or 0) / total) if total else 0
            cls = [f"q{q}" if q else "", "hi" if q >= 6 else "", "d" if p == lab else ""]
            cells.append((" ".join(filter(None, cls)), fmt(v)))
        rows.append(cells + [("t", fmt(int(total)))])
    head = ["expected ↓ predicted →"] + [("p", esc(p)) for p in pred] + [("t", "n")]
    return table(head, rows, cls="cm")


def _errors(rep: dict) -> str:
    ev, out = as_dict(rep.get("evaluation")), []
    conf = as_dict(ev.get("confusion"))
    for s in sets_in_order(conf):
        mats = [f'<div><p class="note">{esc(m)}</p>{t}</div>' for m in ("student", "base")
                if (t := _confusion(as_dict(as_dict(conf[s]).get(m))))]
        if mats:
            out.append(f"<h3>confusion · {esc(s)}</h3><div class=\"cms\">{''.join(mats)}</div>")
    rates = as_dict(ev.get("error_rates"))
    topics = as_dict(rates.get("topic"))
    for s in sets_in_order(topics):
        chart = topic_chart(topics[s], f"student error rate per topic on {s}")
        n = len(topics[s]) if isinstance(topics[s], list) else 0
        more = f" (the {TOPIC_BARS} highest of {n})" if n > TOPIC_BARS else ""
        out.append(f"<h3>student error rate by topic · {esc(s)}{more}</h3>{chart}" if chart else "")
    labels = as_dict(rates.get("label"))
    for s in sets_in_order(labels):
        rs = [r for r in labels[s] if isinstance(r, dict)] if isinstance(labels[s], list) else []
        rows = [[esc(r.get("label", "")), fmt(r.get("n")), fmt(r.get("errors")), fmt(r.get("error_rate"))]
                for r in sorted(rs, key=lambda r: -(num(r.get("error_rate")) or 0))]
        out.append(f"<h3>student error rate by label · {esc(s)}</h3>" +
                   table(["label", "n", "errors", "error rate"], rows, (1, 2, 3), cls="narrow") if rows else "")
    return "<section><h2>Errors</h2>" + "".join(out) + "</section>" if "".join(out) else ""


def _training(rep: dict) -> str:
    t = rep.get("training")
    if not isinstance(t, dict) or not t:
        return ""
    chart = (line_chart(t.get("loss"), t.get("eval_loss"), t.get("best_step"))
             or '<p class="note">No loss recorded yet.</p>')
    lr = t.get("lr")
    facts = {"mode": t.get("mode"), "steps": t.get("steps"), "best step": t.get("best_step"),
             "stopped early": t.get("stopped_early"), "stop reason": t.get("stop_reason"),
             "learning rate": f"{lr:g}" if num(lr) is not None else lr, "precision": t.get("precision"),
             "device": t.get("device"), "tokens/s": t.get("tokens_per_s"), "seconds": t.get("seconds"),
             "trainable params": t.get("trainable_params")}
    facts = {k: v for k, v in facts.items() if v is not None}
    return f"<section><h2>Training</h2>{chart}{kv_table(facts) if facts else ''}{_selection(t)}</section>"


def _selection(t: dict) -> str:
    """How the kept step was chosen, and the selection curve it was chosen on."""
    sel = as_dict(t.get("selection"))
    curve = [c for c in as_list(sel.get("curve")) if isinstance(c, dict)]
    if not sel:
        return ""
    rows = [[fmt(c.get("step")), fmt(c.get("exact")), fmt(c.get("loss")),
             "kept" if c.get("step") == sel.get("kept_step") else ""] for c in curve]
    return (f"<h3>step selection</h3><p class=\"note\">Rule: {esc(sel.get('rule', ''))}. Kept step "
            f"{fmt(sel.get('kept_step'))} of {fmt(sel.get('last_step'))}.</p>"
            + (table(["step", f"exact on {esc(sel.get('set', ''))}", "loss", ""], rows, (1, 2), cls="narrow")
               if rows else ""))


def _floors(rep: dict) -> str:
    """Training data against the floors (train.min_per_label, train.min_eval): what is below one or near
    one, and why (curate's biggest losses, what to do)."""
    e = as_dict(rep.get("enough"))
    short, thin = [x for x in as_list(e.get("short")) if x], [x for x in as_list(e.get("thin")) if x]
    if not (short or thin):
        return ""
    why = "; ".join(f"{fmt(x.get('count'))} {esc(x.get('reason', ''))} ({esc(x.get('todo', ''))})"
                    for x in as_list(e.get("losses")) if isinstance(x, dict))
    floors = ", ".join(f"{esc(k)} {fmt(v)}" for k, v in as_dict(e.get("floors")).items())
    head = ('<span class="bad">Below a floor</span>: ' + esc("; ".join(short)) + ". ") if short else ""
    near = ("Near a floor (under five times it): " + esc("; ".join(thin)) + ". ") if thin else ""
    return (f'<p class="floors">{head}{near}Floors: {floors}.'
            + (f" Curate's biggest losses: {why}." if why else "") + "</p>")


def _funnel(rep: dict) -> str:
    floors = _floors(rep)
    out = [floors] if floors else []
    steps = [f for f in rep.get("funnel") or [] if isinstance(f, dict)]
    if steps:
        counts = [num(f.get("count")) or 0 for f in steps]
        top, first = max(counts) or 1, counts[0] or 1
        rows = [[esc(f.get("step", "")), fmt(f.get("count")),
                 f"{100 * c / first:.0f}%" if num(f.get("count")) is not None else DASH,
                 f'<div class="bar" style="width:{100 * c / top:.1f}%"></div>'] for f, c in zip(steps, counts)]
        out.append(table(["step", "count", "of first", ""], rows, (1, 2), cls="funnel"))
    split = rep.get("split")
    if isinstance(split, dict) and split.get("unit"):
        note = (f"Held out by {esc(split['unit'])}: {fmt(split.get('held_out'))} of {fmt(split.get('groups'))} "
                f"{esc(split['unit'])}s feed only the eval set")
        if split.get("label_coverage"):
            note += f"; the eval set covers {esc(split['label_coverage'])} labels"
        if split.get("fallback_reason"):
            note += (f". Not by document, because {esc(split['fallback_reason'])}: the eval set shares documents "
                     "with training, so it is an easier test than gold.jsonl")
        out.append(f'<p class="note">{note}.</p>')
    rej = rep.get("rejections")
    if isinstance(rej, dict) and rej:
        rows = [[esc(k), fmt(v)] for k, v in sorted(rej.items(), key=lambda kv: -(num(kv[1]) or 0))]
        out.append("<h3>rejections</h3>" + table(["reason", "count"], rows, (1,), cls="narrow"))
    cur = rep.get("curation") if isinstance(rep.get("curation"), dict) else {}
    samples = cur.get("rejected_samples")
    if isinstance(samples, dict) and samples:
        rows = [[esc(reason), esc(x.get("id", "")), esc(x.get("input", "")), esc(x.get("reason", ""))]
                for reason, xs in samples.items() if isinstance(xs, list) for x in xs if isinstance(x, dict)]
        out.append("<h3>dropped examples, a few per reason</h3>" + table(["reason", "id", "input", "detail"], rows))
    labels = cur.get("labels")
    if isinstance(labels, dict) and labels.get("train"):
        names = sorted(set(labels.get("train", {})) | set(labels.get("eval", {})))
        rows = [[esc(n), fmt(labels["train"].get(n, 0)), fmt((labels.get("eval") or {}).get(n, 0))] for n in names]
        out.append("<h3>labels kept</h3>" + table(["label", "train", "eval"], rows, (1, 2), cls="narrow"))
    topics = cur.get("topics")
    if isinstance(topics, dict) and topics:
        rows = [[esc(k), fmt(v)] for k, v in list(topics.items())[:30]]
        out.append("<h3>topics of the training examples</h3>" + table(["topic", "examples"], rows, (1,), cls="narrow"))
    facts = {}
    for key, title in (("grounding", "grounding"), ("judge", "judge"), ("pii", "PII scrubbed"), ("review", "human review"),
                       ("language", "language")):
        if cur.get(key) not in (None, {}, ""):
            facts[title] = cur[key] if not isinstance(cur[key], dict) else ", ".join(
                f"{k}={v}" for k, v in cur[key].items() if not isinstance(v, (dict, list)))
    if facts:
        out.append(kv_table(facts))
    return "<section><h2>Curation</h2>" + "".join(out) + "</section>" if out else ""


def _stages(rep: dict) -> str:
    st = [s for s in rep.get("stages") or [] if isinstance(s, dict)]
    if not st:
        return ""
    rows = []
    for s in st:
        counts = s.get("counts") if isinstance(s.get("counts"), dict) else {}
        rows.append([esc(s.get("stage", "")), fmt(s.get("round")), fmt(s.get("seconds"), 1),
                     "yes" if s.get("skipped") else "no", esc(", ".join(f"{k}={v}" for k, v in counts.items()))])
    total = sum(num(s.get("seconds")) or 0 for s in st)
    rows.append(["<b>total</b>", "", f"<b>{total:,.1f}</b>", "", ""])
    return "<section><h2>Stages</h2>" + table(["stage", "round", "seconds", "skipped", "counts"], rows,
                                                (1, 2)) + "</section>"


def _costs(rep: dict) -> str:
    c = as_dict(rep.get("costs"))
    callers = [(k, as_dict(c.get(k))) for k in ("teacher", "judge") if as_dict(c.get(k))]
    out = []
    if callers:
        rows = [[esc(k)] + [fmt(v.get(f)) for f in ("calls", "cached", "input_tokens", "output_tokens")] +
                [money(v.get("money"))] for k, v in callers]
        out.append(table(["calls by", "calls", "cached", "input tokens", "output tokens", "money"], rows,
                          range(1, 6), cls="narrow"))
    facts = {"train seconds": fmt(c.get("train_seconds"), 1), "evaluate seconds": fmt(c.get("evaluate_seconds"), 1),
             "total seconds": fmt(c.get("total_seconds"), 1), "money total": money(c.get("money_total"))}
    facts = {k: v for k, v in facts.items() if v != DASH}
    out.append(kv_table(facts) if facts else "")
    return "<section><h2>Costs</h2>" + "".join(out) + "</section>" if "".join(out) else ""


def _failures(rep: dict) -> str:
    fs = [f for f in rep.get("failures") or [] if isinstance(f, dict)]
    if not fs:
        return ""
    rows, note = [], f"showing the first {FAILURE_ROWS} of {len(fs)}" if len(fs) > FAILURE_ROWS else f"{len(fs)} items"
    systems = [m for m in MODELS if any(m in f for f in fs)] or ["student"]
    for f in fs[:FAILURE_ROWS]:
        exp = f.get("expected")
        cells = [f"{esc(f.get('set', ''))}<br>{esc(f.get('id', ''))}", esc(short(f.get("topic") or DASH, 80)),
                 text_cell(f.get("input")),
                 text_cell(exp)]
        for m in systems:
            v = f.get(m)
            mark = "" if v is None or exp is None else ("ok" if str(v).strip() == str(exp).strip() else "bad")
            cells.append((mark, text_cell(v)))
        cells.append(text_cell(f.get("source")))
        rows.append(cells)
    html = table(["item", "topic", "input", "expected"] + [esc(m) for m in systems] + ["source"], rows, cls="failures")
    return (f'<section><h2>Failures</h2><p class="note">Items the student got wrong ({note}); '
            f"green cells match the expected answer, red cells do not.</p>{html}</section>")


def _export(rep: dict) -> str:
    e = rep.get("export")
    if not isinstance(e, dict) or not e:
        return ""
    out = ["<section><h2>Export</h2>", kv_table({k: e[k] for k in ("dir", "verified", "student_metric", "tolerance")
                                           if e.get(k) is not None}),
           '<p class="note">Each artefact loaded by its real consumer and run greedily on the same held-out items: '
           "lossless ones must give the student's answers, quantized ones keep the metric within the tolerance.</p>"]
    arts = [a for a in e.get("artifacts") or [] if isinstance(a, dict)]
    if arts:
        def status(a: dict) -> str:
            s = str(a.get("status", ""))
            return f'<span class="{"bad" if s == "failed" else "good"}">{esc(s)}</span>'
        rows = [[esc(a.get("name", "")), f"<code>{esc(a.get('file') or a.get('path', ''))}</code>",
                 fmt(a.get("size_mb"), 1), esc(a.get("consumer", "")), fmt(a.get("metric")),
                 esc(a.get("matches", "")), fmt(a.get("tokens_per_s"), 1), status(a)] for a in arts]
        out.append(table(["artefact", "file", "size MB", "loaded by", "metric", "same answers", "tokens/s",
                           "check"], rows, (2, 4, 6)))
    return "".join(out) + "</section>"


def _cluster(rep: dict) -> str:
    c = as_dict(rep.get("cluster"))
    pools = [p for p in as_list(c.get("pools")) if isinstance(p, dict)]
    train = as_dict(c.get("training"))
    if not pools and not train:
        return ""
    out = ["<section><h2>Cluster</h2>",
           '<p class="note">Work done on each node of the Ray cluster. A node that died lost only the shard it '
           "held: that shard was sent again to another node, and any answer that came back twice was dropped "
           "by its key.</p>"]
    for p in pools:
        rows = [[f"<code>{esc(n.get('node', ''))}</code>", esc(n.get("address", "")), fmt(n.get("workers")),
                 fmt(n.get("shards")), fmt(n.get("items")), fmt(n.get("busy_s"), 1), fmt(n.get("retries")),
                 fmt(n.get("lost_shards")), fmt(n.get("lost_items")),
                 ("bad", "left") if n.get("left") else ("ok", "up")]
                for n in as_list(p.get("nodes")) if isinstance(n, dict)]
        out.append(f"<h3>{esc(p.get('stage', ''))}: {fmt(p.get('shards'))} shards, "
                   f"{fmt(p.get('rescheduled_shards'))} rescheduled, {fmt(p.get('lost_items'))} items lost</h3>")
        out.append(table(["node", "address", "workers", "shards", "items", "busy s", "retries", "lost shards",
                           "lost items", "state"], rows, range(2, 9)))
        moved = [r for r in as_list(p.get("rescheduled")) if isinstance(r, dict)]
        if moved:
            out.append(table(["shard", "items", "from node", "attempt", "why"],
                              [[esc(r.get("shard", "")), fmt(r.get("items")),
                                f"<code>{esc(r.get('from_node', ''))}</code>",
                                fmt(r.get("attempt")), esc(short(r.get("why", ""), 160))] for r in moved], (1, 3)))
    if train:
        out.append("<h3>training</h3>")
        out.append(kv_table({"workers": train.get("workers"), "collective": train.get("backend"),
                        "restarts from a checkpoint": train.get("restarts"),
                        "resumed at steps": ", ".join(str(x) for x in as_list(train.get("resumed_at_steps"))) or None,
                        "checkpoints": train.get("storage"), "wall seconds": train.get("wall_seconds")},
                       pretty=False))
    return "".join(out) + "</section>"


def _label_sources(rep: dict) -> str:
    ls = as_dict(rep.get("label_sources"))
    rows = [r for r in as_list(ls.get("sources")) if isinstance(r, dict)]
    if not rows:
        return ""
    labels = sorted({lab for r in rows for lab in as_dict(r.get("per_label"))})
    lm = as_dict(ls.get("label_model_on_gold"))
    out = ["<section><h2>Label sources</h2>",
           f'<p class="note">{fmt(ls.get("items"))} candidates were labelled by a {esc(ls.get("model", ""))} label '
           f"model over these sources, learned without gold labels"
           + (" (calibrated with gold.jsonl)" if ls.get("calibrated_with_gold") else "")
           + f": {fmt(ls.get('relabelled'))} relabelled, {fmt(ls.get('dropped_unsure'))} dropped as unsure. "
           "Estimated accuracy is the label model's; measured is on gold.jsonl, where the source voted.</p>"]
    ci = lambda r: (f"{fmt(r['estimated_ci'][0])}–{fmt(r['estimated_ci'][1])}"  # noqa: E731
                    if isinstance(r.get("estimated_ci"), list) and len(r["estimated_ci"]) == 2 else "–")
    body = [[f"<code>{esc(r.get('source', ''))}</code>", fmt(r.get("coverage")), fmt(r.get("estimated")), ci(r),
             fmt(r.get("measured")), fmt(r.get("measured_n")), fmt(r.get("agreement")), fmt(r.get("conflict"))]
            + [fmt(as_dict(r.get("per_label")).get(lab)) for lab in labels] for r in rows]
    if lm.get("accuracy") is not None:
        body.append(["<b>label model</b>", fmt(lm.get("coverage")), "", "", fmt(lm.get("accuracy")),
                     fmt(lm.get("voted")), "", ""] + [""] * len(labels))
    for w, v in as_dict(ls.get("on_gold")).items():
        body.append([f"<b>{esc(w)}</b> (after training)", "1.00", "", "", fmt(v), "", "", ""] + [""] * len(labels))
    out.append(table(["source", "coverage", "estimated accuracy", "95% CI", "measured on gold", "gold n",
                       "agreement", "conflict"] + [f"est. {esc(lab)}" for lab in labels], body,
                      range(1, 8 + len(labels))))
    human = [r for r in rows if r.get("on_human_n")]
    if ls.get("human_items"):
        out.append(f'<h3>measured on your labelled items</h3><p class="note">{fmt(ls.get("human_items"))} items of '
                   "seed_data, pinned to their label as known truth; each source's accuracy where it voted on them."
                   "</p>")
        out.append(table(["source", "accuracy on your items", "n"],
                         [[f"<code>{esc(r.get('source', ''))}</code>", fmt(r.get("on_human")), fmt(r.get("on_human_n"))]
                          for r in human], (1, 2)))
    mined = [r for r in as_list(ls.get("mined_rules")) if isinstance(r, dict)]
    if mined:
        out.append('<h3>mined keyword rules</h3><p class="note">Mined from the labels, the examples, the '
                   "teacher's inputs and the pile (no gold), in <code>mined_rules.yaml</code> of the curate stage: "
                   "edit them and promote them into taskling.yaml with <code>taskling rules "
                   "promote</code>.</p>")
        out.append(table(["rule", "label", "keywords", "estimated accuracy", "coverage", "measured on gold", "gold n"],
                         [[f"<code>{esc(r.get('name', ''))}</code>", esc(r.get("label", "")),
                           esc(", ".join(str(k) for k in as_list(r.get("keywords")))), fmt(r.get("estimated")),
                           fmt(r.get("coverage")), fmt(r.get("measured")), fmt(r.get("measured_n"))] for r in mined],
                         (3, 4, 5, 6)))
    return "".join(out) + "</section>"


def _kv_section(rep: dict, key: str, title: str, pretty: bool = True) -> str:
    d = rep.get(key)
    return f"<section><h2>{title}</h2>{kv_table(d, pretty)}</section>" if isinstance(d, dict) and d else ""


def render_html(report: dict) -> str:
    """The whole report as one self-contained HTML page (a str)."""
    body = [_results(report), rounds_section(report), _per_label(report), _per_field(report), _errors(report),
            _training(report), _funnel(report), _label_sources(report), _stages(report), _cluster(report),
            _costs(report), _failures(report),
            _export(report),
            _kv_section(report, "teacher_calls", "Teacher calls"),
            _kv_section(report, "versions", "Versions", pretty=False)]
    body = [b for b in body if b] or ['<p class="note">No stage has finished yet.</p>']
    title = (report.get("task") or {}).get("name") or report.get("run_id", "")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>taskling report: {esc(title)}</title><style>{CSS}</style></head>"
            f'<body><div class="wrap">{_header(report)}{"".join(body)}</div></body></html>\n')
