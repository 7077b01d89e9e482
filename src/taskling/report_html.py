"""Render a run's report dict (see report.py) as one self-contained HTML page.

`render_html(report)` returns the page: inline CSS, hand-written inline SVG
charts, no scripts and no external assets, so runs/<id>/report.html can be
mailed, archived or printed as is. Every report string is HTML-escaped and
any top-level key may be missing (reports are also built mid-run).
"""
from __future__ import annotations

import math
from html import escape

DASH = "—"
MODELS = ("student", "base", "teacher")
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
COLOURS = {"student": "#0072B2", "base": "#E69F00", "teacher": "#009E73"}
EXTRA_COLOURS = ("#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FAILURE_ROWS = 50
CELL_CHARS = 600  # long documents would make the failure table unreadable

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
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.funnel td:last-child{width:45%}
.bar{height:12px;background:var(--accent);border-radius:2px;min-width:1px}
.failures{table-layout:fixed}.failures td{white-space:pre-wrap;overflow-wrap:break-word;font-size:12px}
.failures th{width:11%}.failures th:first-child{width:10%}.failures th:nth-child(2){width:30%}
.failures th:last-child{width:16%}.failures td:first-child{color:var(--muted)}
.failures td.bad{background:#fdecea}
.failures td.ok{background:#e9f6ee}
.narrow{width:auto;min-width:50%}.kv{width:auto}.kv th{font-weight:500;color:var(--muted);background:none}
.note{color:var(--muted);font-size:12px}
figure{margin:8px 0 16px}svg{display:block;width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:12px;fill:#1f2328}
@media print{body{font-size:11px}.wrap{max-width:none;padding:0}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 figure,tr{break-inside:avoid}h2{break-after:avoid}thead{display:table-header-group}}
"""


def _e(x) -> str:
    return escape(str(x), quote=True)


def _num(x) -> float | None:
    """A finite number, or None for missing, NaN, inf, bools and text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _fmt(x, nd: int = 2) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if x is None or isinstance(x, (dict, list)):
        return DASH
    v = _num(x)
    if v is None:
        return DASH if isinstance(x, (int, float)) else _e(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{v:,.{nd}f}"


def _ci(r: dict) -> str:
    m = _fmt(r.get("metric"))
    lo, hi = _num(r.get("ci_low")), _num(r.get("ci_high"))
    return m if m == DASH or lo is None or hi is None else f"{m} [{lo:.2f}, {hi:.2f}]"


def _colour(model: str, order: list[str]) -> str:
    return COLOURS.get(model) or EXTRA_COLOURS[order.index(model) % len(EXTRA_COLOURS)]


def _models(per: dict) -> list[str]:
    return [m for m in MODELS if m in per] + [m for m in per if m not in MODELS]


def _sets(results: dict) -> list[str]:
    return [s for s in ("gold", "eval") if s in results] + [s for s in results if s not in ("gold", "eval")]


def _table(head: list[str], rows: list[list], num_cols=(), cls: str = "", row_cls=None) -> str:
    """rows hold already-escaped cell HTML, or (css class, HTML); num_cols are right-aligned."""
    def cell(tag: str, i: int, c) -> str:
        k, c = c if isinstance(c, tuple) else ("", c)
        k = " ".join(filter(None, [k, "n" if i in num_cols else ""]))
        return f'<{tag} class="{k}">{c}</{tag}>' if k else f"<{tag}>{c}</{tag}>"

    th = "".join(cell("th", i, h) for i, h in enumerate(head))
    body = []
    for r, row in enumerate(rows):
        rc = f' class="{row_cls[r]}"' if row_cls and row_cls[r] else ""
        body.append(f"<tr{rc}>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(d: dict, pretty: bool = True) -> str:
    rows = "".join(f"<tr><th>{_e(str(k).replace('_', ' ') if pretty else k)}</th><td>{_fmt(v, 1)}</td></tr>"
                   for k, v in d.items())
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


# ---- SVG charts -----------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5, min_step: float = 0.0) -> tuple[list[float], int]:
    """Round tick values covering [lo, hi], and the decimals to print them with."""
    if hi <= lo:
        pad = max(min_step, abs(lo) * 0.1) or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = max(min_step, next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9)))
    start, end = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    ticks = [start + i * step for i in range(round((end - start) / step) + 1)]
    nd = max(0, -math.floor(math.log10(step)))
    if abs(step * 10 ** nd - round(step * 10 ** nd)) > 1e-6:
        nd += 1
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks], nd


def _axes(W, H, L, R, T, B, yt, nd, y) -> list[str]:
    out = []
    for t in yt:
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e9ee"/>')
        out.append(f'<text x="{L - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:,.{nd}f}</text>')
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="#59636e"/>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#59636e"/>')
    return out


def _svg(W: int, H: int, label: str, parts: list[str]) -> str:
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>{"".join(parts)}</svg></figure>')


def _legend(items: list[tuple[str, str]], x: float, y: float, marker: str = "rect") -> list[str]:
    out = []
    for name, col in items:
        if marker == "rect":
            out.append(f'<rect x="{x:.1f}" y="{y - 9}" width="12" height="12" rx="2" fill="{col}"/>')
        else:
            out.append(f'<line x1="{x:.1f}" x2="{x + 14:.1f}" y1="{y - 3}" y2="{y - 3}" '
                       f'stroke="{col}" stroke-width="2"/>')
        out.append(f'<text x="{x + 18:.1f}" y="{y + 1}">{_e(name)}</text>')
        x += 30 + 7 * len(str(name))
    return out


def bar_chart(results: dict, metric: str) -> str:
    """Grouped bars of the metric per set and model, with 95% CI whiskers."""
    sets = _sets(results)
    models: list[str] = []
    for s in sets:
        models += [m for m in _models(results[s]) if m not in models]
    vals = [_num(results[s].get(m, {}).get(k)) for s in sets for m in models for k in ("metric", "ci_low", "ci_high")
            if isinstance(results[s].get(m), dict)]
    vals = [v for v in vals if v is not None]
    if not vals:
        return ""
    if min(vals) >= 0 and max(vals) <= 1:
        yt, nd = [i / 5 for i in range(6)], 1
    else:
        yt, nd = _ticks(min(0.0, *vals), max(0.0, *vals))
    W, H, L, R, T, B = 1000, 340, 60, 16, 40, 44
    lo, hi = yt[0], yt[-1]
    y = lambda v: T + (hi - max(lo, min(hi, v))) / (hi - lo) * (H - T - B)  # noqa: E731
    parts = _axes(W, H, L, R, T, B, yt, nd, y)
    if lo < 0:
        parts.append(f'<line x1="{L}" x2="{W - R}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#59636e"/>')
    parts.append(f'<text x="14" y="{(T + H - B) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(T + H - B) / 2:.0f})">{_e(metric)}</text>')
    gw = (W - L - R) / len(sets)
    bw = min(56.0, gw * 0.75 / max(1, len(models)))
    for i, s in enumerate(sets):
        x0 = L + i * gw + (gw - bw * len(models)) / 2
        parts.append(f'<text x="{L + (i + 0.5) * gw:.1f}" y="{H - B + 20}" text-anchor="middle" '
                     f'font-weight="600">{_e(s)}</text>')
        for j, m in enumerate(models):
            r = results[s].get(m)
            v = _num(r.get("metric")) if isinstance(r, dict) else None
            if v is None:
                continue
            x, base = x0 + j * bw, y(max(lo, min(hi, 0.0)))
            top = min(y(v), base)
            parts.append(f'<rect x="{x + 2:.1f}" y="{top:.1f}" width="{bw - 4:.1f}" height="{abs(base - y(v)):.1f}" '
                         f'fill="{_colour(m, models)}"><title>{_e(m)} on {_e(s)}: {v:.2f}</title></rect>')
            cx, a, b = x + bw / 2, _num(r.get("ci_low")), _num(r.get("ci_high"))
            if a is not None and b is not None:
                parts.append(f'<path d="M{cx:.1f} {y(a):.1f}V{y(b):.1f}M{cx - 5:.1f} {y(a):.1f}h10'
                             f'M{cx - 5:.1f} {y(b):.1f}h10" stroke="#1f2328" stroke-width="1.3" fill="none"/>')
            ends = [y(v)] + [y(c) for c in (a, b) if c is not None]
            ty = min(max(ends) + 14, H - B - 2) if v < 0 else max(min(ends) - 5, T - 4)  # clear of bar and whisker
            parts.append(f'<text x="{cx:.1f}" y="{ty:.1f}" text-anchor="middle" '
                         f'font-size="11">{v:.2f}</text>')
    parts += _legend([(m, _colour(m, models)) for m in models], L + 4, 18)
    return _svg(W, H, f"{metric} per set and model with 95% confidence intervals", parts)


def _points(series) -> list[tuple[float, float]]:
    pts = []
    for p in series or []:
        if isinstance(p, (list, tuple)) and len(p) == 2 and _num(p[0]) is not None and _num(p[1]) is not None:
            pts.append((float(p[0]), float(p[1])))
    return pts


def line_chart(loss, eval_loss) -> str:
    """Training loss (line) and eval loss (line with markers) against step."""
    series = [(n, c, pts) for n, c, pts in (("train loss", "#0072B2", _points(loss)),
                                            ("eval loss", "#D55E00", _points(eval_loss))) if pts]
    if not series:
        return ""
    xs = [p[0] for _, _, pts in series for p in pts]
    ys = [p[1] for _, _, pts in series for p in pts]
    yt, nd = _ticks(min(ys), max(ys))
    xt, xnd = _ticks(min(xs), max(xs), 6, min_step=1.0)  # steps are whole numbers
    W, H, L, R, T, B = 1000, 300, 60, 16, 36, 44
    y = lambda v: T + (yt[-1] - v) / (yt[-1] - yt[0]) * (H - T - B)  # noqa: E731
    x = lambda v: L + (v - xt[0]) / (xt[-1] - xt[0]) * (W - L - R)  # noqa: E731
    parts = _axes(W, H, L, R, T, B, yt, nd, y)
    for t in xt:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{H - B}" y2="{H - B + 4}" stroke="#59636e"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{H - B + 17}" text-anchor="middle">{t:,.{xnd}f}</text>')
    parts.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 6}" text-anchor="middle">step</text>')
    parts.append(f'<text x="14" y="{(T + H - B) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(T + H - B) / 2:.0f})">loss</text>')
    for name, col, pts in series:
        xy = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
        if len(pts) > 1:
            parts.append(f'<polyline points="{xy}" fill="none" stroke="{col}" stroke-width="2" '
                         f'stroke-linejoin="round"/>')
        if name == "eval loss" or len(pts) == 1:
            parts += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3.5" fill="{col}">'
                      f'<title>step {a:g}: {b:.4f}</title></circle>' for a, b in pts]
    parts += _legend([(n, c) for n, c, _ in series], L + 4, 16, marker="line")
    return _svg(W, H, "loss against training step", parts)


# ---- sections -------------------------------------------------------------

def _header(rep: dict) -> str:
    task = rep.get("task") if isinstance(rep.get("task"), dict) else {}
    name = task.get("name") or rep.get("run_id", "")
    tag = f'<span class="tag">{_e(task["type"])}</span>' if task.get("type") else ""
    out = [f"<header><h1>{_e(name)}{tag}</h1>"]
    if task.get("description"):
        out.append(f'<p class="meta">{_e(task["description"])}</p>')
    meta = [f"run <code>{_e(rep.get('run_id', ''))}</code>"]
    if rep.get("generated_at"):
        meta.append(f"generated {_e(rep['generated_at'])}")
    if task.get("metric"):
        meta.append(f"metric {_e(task['metric'])}")
    out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if rep.get("summary"):
        out.append(f'<div class="verdict">{_e(rep["summary"])}</div>')
    return "".join(out) + "</header>"


def _results(rep: dict) -> str:
    res = {s: per for s, per in (rep.get("results") or {}).items() if isinstance(per, dict) and per}
    if not res:
        return ""
    metric = (rep.get("task") or {}).get("metric") or "metric"
    out = ["<section><h2>Results</h2>"]
    for s in _sets(res):
        models = _models(res[s])
        rows = []
        for m in models:
            r = res[s][m] if isinstance(res[s][m], dict) else {}
            sw = f'<span class="swatch" style="background:{_colour(m, models)}"></span>'
            rows.append([sw + _e(m), _ci(r), _fmt(r.get("n")), _fmt(r.get("items_per_s"), 1),
                         _fmt(r.get("size_mb"), 1)])
        out.append(f"<h3>{_e(s)}</h3>")
        out.append(_table(["model", f"{_e(metric)} [95% CI]", "n", "items/s", "size MB"], rows, (1, 2, 3, 4),
                          row_cls=["student" if m == "student" else "" for m in models]))
    out.append(bar_chart(res, metric))
    return "".join(out) + "</section>"


def _per_label(rep: dict) -> str:
    out = []
    for s, per in (rep.get("per_label") or {}).items():
        per = {m: v for m, v in (per or {}).items() if isinstance(v, dict) and v}
        if not per:
            continue
        models = _models(per)
        labels = list(dict.fromkeys(lab for m in models for lab in per[m]))
        rows = [[_e(lab)] + [_fmt(per[m].get(lab)) for m in models] for lab in labels]
        out.append(f"<h3>{_e(s)}</h3>" + _table(["label"] + [_e(m) for m in models], rows,
                                                range(1, len(models) + 1), cls="narrow"))
    return "<section><h2>Per label</h2>" + "".join(out) + "</section>" if out else ""


def _training(rep: dict) -> str:
    t = rep.get("training")
    if not isinstance(t, dict) or not t:
        return ""
    chart = line_chart(t.get("loss"), t.get("eval_loss")) or '<p class="note">No loss recorded yet.</p>'
    facts = {"steps": t.get("steps"), "tokens/s": t.get("tokens_per_s"), "seconds": t.get("seconds"),
             "trainable params": t.get("trainable_params")}
    facts = {k: v for k, v in facts.items() if v is not None}
    return f"<section><h2>Training</h2>{chart}{_kv(facts) if facts else ''}</section>"


def _funnel(rep: dict) -> str:
    out = []
    steps = [f for f in rep.get("funnel") or [] if isinstance(f, dict)]
    if steps:
        counts = [_num(f.get("count")) or 0 for f in steps]
        top, first = max(counts) or 1, counts[0] or 1
        rows = [[_e(f.get("step", "")), _fmt(f.get("count")),
                 f"{100 * c / first:.0f}%" if _num(f.get("count")) is not None else DASH,
                 f'<div class="bar" style="width:{100 * c / top:.1f}%"></div>'] for f, c in zip(steps, counts)]
        out.append(_table(["step", "count", "of first", ""], rows, (1, 2), cls="funnel"))
    split = rep.get("split")
    if isinstance(split, dict) and split.get("unit"):
        note = (f"Held out by {_e(split['unit'])}: {_fmt(split.get('held_out'))} of {_fmt(split.get('groups'))} "
                f"{_e(split['unit'])}s feed only the eval set")
        if split.get("label_coverage"):
            note += f"; the eval set covers {_e(split['label_coverage'])} labels"
        if split.get("fallback_reason"):
            note += (f". Not by document, because {_e(split['fallback_reason'])}: the eval set shares documents "
                     "with training, so it is an easier test than gold.jsonl")
        out.append(f'<p class="note">{note}.</p>')
    rej = rep.get("rejections")
    if isinstance(rej, dict) and rej:
        rows = [[_e(k), _fmt(v)] for k, v in sorted(rej.items(), key=lambda kv: -(_num(kv[1]) or 0))]
        out.append("<h3>rejections</h3>" + _table(["reason", "count"], rows, (1,), cls="narrow"))
    cur = rep.get("curation") if isinstance(rep.get("curation"), dict) else {}
    samples = cur.get("rejected_samples")
    if isinstance(samples, dict) and samples:
        rows = [[_e(reason), _e(x.get("id", "")), _e(x.get("input", "")), _e(x.get("reason", ""))]
                for reason, xs in samples.items() if isinstance(xs, list) for x in xs if isinstance(x, dict)]
        out.append("<h3>dropped examples, a few per reason</h3>" + _table(["reason", "id", "input", "detail"], rows))
    labels = cur.get("labels")
    if isinstance(labels, dict) and labels.get("train"):
        names = sorted(set(labels.get("train", {})) | set(labels.get("eval", {})))
        rows = [[_e(n), _fmt(labels["train"].get(n, 0)), _fmt((labels.get("eval") or {}).get(n, 0))] for n in names]
        out.append("<h3>labels kept</h3>" + _table(["label", "train", "eval"], rows, (1, 2), cls="narrow"))
    topics = cur.get("topics")
    if isinstance(topics, dict) and topics:
        rows = [[_e(k), _fmt(v)] for k, v in list(topics.items())[:30]]
        out.append("<h3>topics of the training examples</h3>" + _table(["topic", "examples"], rows, (1,), cls="narrow"))
    facts = {}
    for key, title in (("grounding", "grounding"), ("judge", "judge"), ("pii", "PII scrubbed"), ("review", "human review"),
                       ("language", "language")):
        if cur.get(key) not in (None, {}, ""):
            facts[title] = cur[key] if not isinstance(cur[key], dict) else ", ".join(
                f"{k}={v}" for k, v in cur[key].items() if not isinstance(v, (dict, list)))
    if facts:
        out.append(_kv(facts))
    return "<section><h2>Curation</h2>" + "".join(out) + "</section>" if out else ""


def _stages(rep: dict) -> str:
    st = [s for s in rep.get("stages") or [] if isinstance(s, dict)]
    if not st:
        return ""
    rows = []
    for s in st:
        counts = s.get("counts") if isinstance(s.get("counts"), dict) else {}
        rows.append([_e(s.get("stage", "")), _fmt(s.get("round")), _fmt(s.get("seconds"), 1),
                     "yes" if s.get("skipped") else "no", _e(", ".join(f"{k}={v}" for k, v in counts.items()))])
    total = sum(_num(s.get("seconds")) or 0 for s in st)
    rows.append(["<b>total</b>", "", f"<b>{total:,.1f}</b>", "", ""])
    return "<section><h2>Stages</h2>" + _table(["stage", "round", "seconds", "skipped", "counts"], rows,
                                                (1, 2)) + "</section>"


def _cell(x) -> str:
    s = DASH if x is None else str(x)
    return _e(s if len(s) <= CELL_CHARS else s[:CELL_CHARS] + " …")


def _failures(rep: dict) -> str:
    fs = [f for f in rep.get("failures") or [] if isinstance(f, dict)]
    if not fs:
        return ""
    rows, note = [], f"showing the first {FAILURE_ROWS} of {len(fs)}" if len(fs) > FAILURE_ROWS else f"{len(fs)} items"
    for f in fs[:FAILURE_ROWS]:
        exp = f.get("expected")
        cells = [f"{_e(f.get('set', ''))}<br>{_e(f.get('id', ''))}", _cell(f.get("input")), _cell(exp)]
        for m in MODELS:
            v = f.get(m)
            mark = "" if v is None or exp is None else ("ok" if str(v).strip() == str(exp).strip() else "bad")
            cells.append((mark, _cell(v)))
        cells.append(_cell(f.get("source")))
        rows.append(cells)
    html = _table(["item", "input", "expected", "student", "base", "teacher", "source"], rows, cls="failures")
    return (f'<section><h2>Failures</h2><p class="note">Items the student got wrong ({note}); '
            f"green cells match the expected answer, red cells do not.</p>{html}</section>")


def _export(rep: dict) -> str:
    e = rep.get("export")
    if not isinstance(e, dict) or not e:
        return ""
    out = ["<section><h2>Export</h2>", _kv({k: e[k] for k in ("dir", "verified") if e.get(k) is not None})]
    arts = [a for a in e.get("artifacts") or [] if isinstance(a, dict)]
    if arts:
        rows = [[_e(a.get("name", "")), f"<code>{_e(a.get('path', ''))}</code>", _fmt(a.get("size_mb"), 1)]
                for a in arts]
        out.append(_table(["artefact", "path", "size MB"], rows, (2,)))
    return "".join(out) + "</section>"


def _kv_section(rep: dict, key: str, title: str, pretty: bool = True) -> str:
    d = rep.get(key)
    return f"<section><h2>{title}</h2>{_kv(d, pretty)}</section>" if isinstance(d, dict) and d else ""


def render_html(report: dict) -> str:
    """The whole report as one self-contained HTML page (a str)."""
    body = [_results(report), _per_label(report), _training(report), _funnel(report), _stages(report),
            _failures(report), _export(report), _kv_section(report, "teacher_calls", "Teacher calls"),
            _kv_section(report, "versions", "Versions", pretty=False)]
    body = [b for b in body if b] or ['<p class="note">No stage has finished yet.</p>']
    title = (report.get("task") or {}).get("name") or report.get("run_id", "")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>taskling report: {_e(title)}</title><style>{CSS}</style></head>"
            f'<body><div class="wrap">{_header(report)}{"".join(body)}</div></body></html>\n')
