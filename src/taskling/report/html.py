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
MODELS = ("student", "student-constrained", "base", "base-fewshot", "base-constrained", "teacher")
# Okabe-Ito: distinguishable with the common colour-vision deficiencies; a variant shares its system's hue family.
COLOURS = {"student": "#0072B2", "student-constrained": "#56B4E9", "base": "#E69F00", "base-fewshot": "#D55E00",
           "base-constrained": "#CC79A7", "teacher": "#009E73"}
EXTRA_COLOURS = ("#000000", "#F0E442", "#999999")
FAILURE_ROWS = 50
TOPIC_BARS = 15
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
    return f"{round(v, nd) + 0.0:,.{nd}f}"  # + 0.0: no "-0.00" for a tiny negative


def _ci(r: dict) -> str:
    m = _fmt(r.get("metric"))
    lo, hi = _num(r.get("ci_low")), _num(r.get("ci_high"))
    return m if m == DASH or lo is None or hi is None else f"{m} [{lo:.2f}, {hi:.2f}]"


def _money(x) -> str:
    """Money with two significant digits below 1 (0.0042), cents above."""
    v = _num(x)
    if v is None or v == 0:
        return _fmt(v)
    return f"{v:,.{min(6, max(2, 1 - math.floor(math.log10(abs(v)))))}f}"


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x) -> list:
    return x if isinstance(x, list) else []


def _short(s, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[:n].rstrip() + " …"


def _colour(model: str, order: list[str]) -> str:
    extra = [m for m in order if m not in COLOURS]
    return COLOURS.get(model) or EXTRA_COLOURS[extra.index(model) % len(EXTRA_COLOURS)]


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


def _metric_axis(lo: float, hi: float) -> tuple[list[float], int]:
    """Y ticks for a metric: 0..1 in fifths when the values fit (most metrics are rates), else nice ticks."""
    return ([i / 5 for i in range(6)], 1) if lo >= 0 and hi <= 1 else _ticks(lo, hi)


def _axes(W, H, L, R, T, B, yt, nd, y) -> list[str]:
    out = []
    for t in yt:
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e9ee"/>')
        out.append(f'<text x="{L - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:,.{nd}f}</text>')
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="#59636e"/>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#59636e"/>')
    return out


def _xaxis(xt: list[float], nd: int, x, T, H, B, grid: bool = False) -> list[str]:
    out = []
    for t in xt:
        if grid:
            out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{T}" y2="{H - B}" stroke="#e5e9ee"/>')
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{H - B}" y2="{H - B + 4}" stroke="#59636e"/>')
        out.append(f'<text x="{x(t):.1f}" y="{H - B + 17}" text-anchor="middle">{t:,.{nd}f}</text>')
    return out


def _svg(W: int, H: int, label: str, parts: list[str]) -> str:
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>{"".join(parts)}</svg></figure>')


def _legend_at(names: list[str], x: float, right: float) -> list[tuple[float, int]]:
    """(x, row) of each legend entry, wrapping to a new row before `right`."""
    out, cx, row = [], x, 0
    for name in names:
        w = 30 + 7 * len(str(name))
        if cx > x and cx + w > right:
            cx, row = x, row + 1
        out.append((cx, row))
        cx += w
    return out


def _legend(items: list[tuple[str, str]], x: float, y: float, marker: str = "rect", right: float = 1e9) -> list[str]:
    out = []
    for (name, col), (lx, row) in zip(items, _legend_at([n for n, _ in items], x, right)):
        ly = y + 18 * row
        if marker == "rect":
            out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="12" height="12" rx="2" fill="{col}"/>')
        else:
            out.append(f'<line x1="{lx:.1f}" x2="{lx + 14:.1f}" y1="{ly - 3}" y2="{ly - 3}" '
                       f'stroke="{col}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 18:.1f}" y="{ly + 1}">{_e(name)}</text>')
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
    yt, nd = _metric_axis(min(0.0, *vals), max(0.0, *vals))
    W, L, R, B = 1000, 60, 16, 44
    rows = _legend_at(models, L + 4, W - R)[-1][1] + 1  # the legend may wrap; the plot keeps its height
    H, T = 322 + 18 * rows, 22 + 18 * rows
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
        shown = [m for m in models if _num(_dict(results[s].get(m)).get("metric")) is not None]
        x0 = L + i * gw + (gw - bw * len(shown)) / 2
        parts.append(f'<text x="{L + (i + 0.5) * gw:.1f}" y="{H - B + 20}" text-anchor="middle" '
                     f'font-weight="600">{_e(s)}</text>')
        for j, m in enumerate(shown):
            r = results[s][m]
            v = _num(r["metric"])
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
    parts += _legend([(m, _colour(m, models)) for m in models], L + 4, 18, right=W - R)
    return _svg(W, H, f"{metric} per set and model with 95% confidence intervals", parts)


def _points(series) -> list[tuple[float, float]]:
    pts = []
    for p in series or []:
        if isinstance(p, (list, tuple)) and len(p) == 2 and _num(p[0]) is not None and _num(p[1]) is not None:
            pts.append((float(p[0]), float(p[1])))
    return pts


def line_chart(loss, eval_loss, best_step=None) -> str:
    """Training loss (line) and eval loss (line with markers) against step; a dashed line at the best step."""
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
    parts = _axes(W, H, L, R, T, B, yt, nd, y) + _xaxis(xt, xnd, x, T, H, B)
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
    best = _num(best_step)
    if best is not None and xt[0] <= best <= xt[-1]:
        bx, end = x(best), x(best) > W - R - 140
        parts.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{T}" y2="{H - B}" stroke="#59636e" '
                     'stroke-dasharray="5 4"/>')
        parts.append(f'<text x="{bx - 6 if end else bx + 6:.1f}" y="{T + 12}" stroke="#fff" stroke-width="4" '
                     f'paint-order="stroke" text-anchor="{"end" if end else "start"}">best step {best:,.0f}</text>')
    parts += _legend([(n, c) for n, c, _ in series], L + 4, 16, marker="line")
    return _svg(W, H, "loss against training step", parts)


def topic_chart(rows: list, title: str) -> str:
    """Horizontal bars of the error rate per topic, highest first, at most TOPIC_BARS."""
    rows = [r for r in rows or [] if isinstance(r, dict) and _num(r.get("error_rate")) is not None]
    if not rows:
        return ""
    rows = sorted(rows, key=lambda r: (-r["error_rate"], -(_num(r.get("errors")) or 0)))[:TOPIC_BARS]
    names = [_short(r.get("topic", ""), 40) for r in rows]
    W, L, R, T, B, rh = 1000, min(330, 16 + 7 * max(map(len, names))), 110, 8, 40, 24
    H = T + rh * len(rows) + B
    x = lambda v: L + max(0.0, min(1.0, v)) * (W - L - R)  # noqa: E731
    parts = _axes(W, H, L, R, T, B, [], 0, None) + _xaxis([i / 5 for i in range(6)], 1, x, T, H, B, grid=True)
    parts.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 4}" text-anchor="middle">error rate</text>')
    for i, (r, name) in enumerate(zip(rows, names)):
        y, v = T + i * rh, r["error_rate"]
        count = f"{_fmt(r.get('errors'))} of {_fmt(r.get('n'))}"
        parts.append(f'<text x="{L - 6}" y="{y + rh / 2 + 4:.1f}" text-anchor="end">{_e(name)}</text>')
        parts.append(f'<rect x="{L}" y="{y + 4}" width="{x(v) - L:.1f}" height="{rh - 8}" fill="{COLOURS["student"]}">'
                     f'<title>{_e(r.get("topic", ""))}: {v:.2f} ({count})</title></rect>')
        parts.append(f'<text x="{x(v) + 6:.1f}" y="{y + rh / 2 + 4:.1f}" font-size="11">{v:.2f} · {count}</text>')
    return _svg(W, H, title, parts)


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


def _pair(d: dict, a: str, b: str) -> str:
    x, y = _fmt(d.get(a), 0), _fmt(d.get(b), 0)
    return DASH if x == y == DASH else f"{x} / {y}"


def _metric_cell(r: dict, name: str) -> str:
    """A secondary metric; its 95% CI, when known, shows on hover to keep the table narrow."""
    v, ci = _fmt(_dict(r.get("metrics")).get(name)), _dict(r.get("cis")).get(name)
    lo, hi = (_num(c) for c in ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return v if v == DASH or lo is None or hi is None else f'<span title="95% CI {lo:.2f} to {hi:.2f}">{v}</span>'


def _cost(r: dict) -> str:
    return "local" if "cost_per_1k" in r and r["cost_per_1k"] is None else _money(r.get("cost_per_1k"))


def _result_columns(metric: str, others: list[str]) -> list:
    """(header, cell(row) -> HTML) for one set's results table."""
    return ([(f"{_e(metric)} [95%&nbsp;CI]", _ci)] + [(_e(o), lambda r, o=o: _metric_cell(r, o)) for o in others] +
            [("n", lambda r: _fmt(r.get("n"))), ("items/s", lambda r: _fmt(r.get("items_per_s"), 1)),
             ("latency ms p50&nbsp;/&nbsp;p95", lambda r: _pair(_dict(r.get("latency_ms")), "p50", "p95")),
             ("tokens in&nbsp;/&nbsp;out", lambda r: _pair(_dict(r.get("tokens")), "prompt", "completion")),
             ("size MB", lambda r: _fmt(r.get("size_mb"), 1)), ("cost per 1k items", _cost),
             ("CPU s per 1k items", lambda r: _fmt(r.get("cpu_seconds_per_1k"), 1))])


def _results(rep: dict) -> str:
    res = {s: per for s, per in (rep.get("results") or {}).items() if isinstance(per, dict) and per}
    if not res:
        return ""
    metric = (rep.get("task") or {}).get("metric") or "metric"
    out = ["<section><h2>Results</h2>"]
    for s in _sets(res):
        models = _models(res[s])
        recs = [_dict(res[s][m]) for m in models]
        others = list(dict.fromkeys(k for r in recs for k in _dict(r.get("metrics")) if k != metric))
        # A column no system has a value for (no latency recorded, say) is left out.
        cols = [c for i, c in enumerate(_result_columns(metric, others))
                if i == 0 or any(c[1](r) != DASH for r in recs)]
        rows = [[f'<span class="swatch" style="background:{_colour(m, models)}"></span>{_e(m)}'] +
                [cell(r) for _, cell in cols] for m, r in zip(models, recs)]
        out.append(f"<h3>{_e(s)}</h3>" + _table(["system"] + [h for h, _ in cols], rows, range(1, len(cols) + 1), "res",
                                                ["student" if m == "student" else "" for m in models]))
    out += [bar_chart(res, metric), _constrained(rep)]
    return "".join(out) + "</section>"


def _constrained(rep: dict) -> str:
    c = _dict(_dict(rep.get("evaluation")).get("constrained"))
    rows = []
    for s in _sets(c):
        per = _dict(c[s])
        for m in _models(per):
            r = _dict(per[m])
            free, con = _num(r.get("free")), _num(r.get("constrained"))
            delta = f"{con - free:+.2f}" if free is not None and con is not None else DASH
            if r:
                rows.append([_e(s), _e(m), _fmt(r.get("metric")), _fmt(r.get("free")), _fmt(r.get("constrained")),
                             delta])
    return ("<h3>constrained decoding: free vs constrained</h3>" +
            _table(["set", "system", "metric", "free", "constrained", "change"], rows, (3, 4, 5), cls="narrow")
            if rows else "")


def _f1_tables(by_set, first: str) -> list[str]:
    """Per set, one row per label (or field) and one column per system: a number, or the F1 of
    {precision, recall, f1, support}, with the support column when any row has one."""
    out = []
    for s in _sets(_dict(by_set)):
        per = {m: v for m, v in _dict(by_set[s]).items() if isinstance(v, dict) and v}
        if not per:
            continue
        models = _models(per)
        labels = list(dict.fromkeys(lab for m in models for lab in per[m]))
        val = {(m, lab): _dict(v).get("f1") if isinstance(v, dict) else v for m in models for lab, v in per[m].items()}
        sup = [next((x for m in models if (x := _dict(per[m].get(lab)).get("support")) is not None), None)
               for lab in labels]
        has_sup = any(x is not None for x in sup)
        rows = [[_e(lab)] + [_fmt(val.get((m, lab))) for m in models] + ([_fmt(x)] if has_sup else [])
                for lab, x in zip(labels, sup)]
        head = [first] + [_e(m) for m in models] + (["support"] if has_sup else [])
        out.append(f"<h3>{_e(s)}</h3>" + _table(head, rows, range(1, len(head)), cls="narrow"))
    return out


def _per_label(rep: dict) -> str:
    ev = _dict(rep.get("evaluation"))
    out = _f1_tables(ev.get("per_class"), "label")
    note = '<p class="note">F1 per label; support is the number of items expected to have it.</p>' if out else ""
    out = out or _f1_tables(rep.get("per_label"), "label")
    return f"<section><h2>Per label</h2>{note}{''.join(out)}</section>" if out else ""


def _per_field(rep: dict) -> str:
    out = _f1_tables(_dict(rep.get("evaluation")).get("per_field"), "field")
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
        total = sum(_num(v) or 0 for v in vals)
        cells = [("rl", _e(lab))]
        for p, v in zip(pred, vals):
            q = round(10 * (_num(v) or 0) / total) if total else 0
            cls = [f"q{q}" if q else "", "hi" if q >= 6 else "", "d" if p == lab else ""]
            cells.append((" ".join(filter(None, cls)), _fmt(v)))
        rows.append(cells + [("t", _fmt(int(total)))])
    head = ["expected ↓ predicted →"] + [("p", _e(p)) for p in pred] + [("t", "n")]
    return _table(head, rows, cls="cm")


def _errors(rep: dict) -> str:
    ev, out = _dict(rep.get("evaluation")), []
    conf = _dict(ev.get("confusion"))
    for s in _sets(conf):
        mats = [f'<div><p class="note">{_e(m)}</p>{t}</div>' for m in ("student", "base")
                if (t := _confusion(_dict(_dict(conf[s]).get(m))))]
        if mats:
            out.append(f"<h3>confusion · {_e(s)}</h3><div class=\"cms\">{''.join(mats)}</div>")
    rates = _dict(ev.get("error_rates"))
    topics = _dict(rates.get("topic"))
    for s in _sets(topics):
        chart = topic_chart(topics[s], f"student error rate per topic on {s}")
        n = len(topics[s]) if isinstance(topics[s], list) else 0
        more = f" (the {TOPIC_BARS} highest of {n})" if n > TOPIC_BARS else ""
        out.append(f"<h3>student error rate by topic · {_e(s)}{more}</h3>{chart}" if chart else "")
    labels = _dict(rates.get("label"))
    for s in _sets(labels):
        rs = [r for r in labels[s] if isinstance(r, dict)] if isinstance(labels[s], list) else []
        rows = [[_e(r.get("label", "")), _fmt(r.get("n")), _fmt(r.get("errors")), _fmt(r.get("error_rate"))]
                for r in sorted(rs, key=lambda r: -(_num(r.get("error_rate")) or 0))]
        out.append(f"<h3>student error rate by label · {_e(s)}</h3>" +
                   _table(["label", "n", "errors", "error rate"], rows, (1, 2, 3), cls="narrow") if rows else "")
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
             "learning rate": f"{lr:g}" if _num(lr) is not None else lr, "precision": t.get("precision"),
             "device": t.get("device"), "tokens/s": t.get("tokens_per_s"), "seconds": t.get("seconds"),
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


def _costs(rep: dict) -> str:
    c = _dict(rep.get("costs"))
    callers = [(k, _dict(c.get(k))) for k in ("teacher", "judge") if _dict(c.get(k))]
    out = []
    if callers:
        rows = [[_e(k)] + [_fmt(v.get(f)) for f in ("calls", "cached", "input_tokens", "output_tokens")] +
                [_money(v.get("money"))] for k, v in callers]
        out.append(_table(["calls by", "calls", "cached", "input tokens", "output tokens", "money"], rows,
                          range(1, 6), cls="narrow"))
    facts = {"train seconds": _fmt(c.get("train_seconds"), 1), "evaluate seconds": _fmt(c.get("evaluate_seconds"), 1),
             "total seconds": _fmt(c.get("total_seconds"), 1), "money total": _money(c.get("money_total"))}
    facts = {k: v for k, v in facts.items() if v != DASH}
    out.append(_kv(facts) if facts else "")
    return "<section><h2>Costs</h2>" + "".join(out) + "</section>" if "".join(out) else ""


def _cell(x) -> str:
    return _e(DASH if x is None else _short(x, CELL_CHARS))


def _failures(rep: dict) -> str:
    fs = [f for f in rep.get("failures") or [] if isinstance(f, dict)]
    if not fs:
        return ""
    rows, note = [], f"showing the first {FAILURE_ROWS} of {len(fs)}" if len(fs) > FAILURE_ROWS else f"{len(fs)} items"
    systems = [m for m in MODELS if any(m in f for f in fs)] or ["student"]
    for f in fs[:FAILURE_ROWS]:
        exp = f.get("expected")
        cells = [f"{_e(f.get('set', ''))}<br>{_e(f.get('id', ''))}", _e(_short(f.get("topic") or DASH, 80)),
                 _cell(f.get("input")),
                 _cell(exp)]
        for m in systems:
            v = f.get(m)
            mark = "" if v is None or exp is None else ("ok" if str(v).strip() == str(exp).strip() else "bad")
            cells.append((mark, _cell(v)))
        cells.append(_cell(f.get("source")))
        rows.append(cells)
    html = _table(["item", "topic", "input", "expected"] + [_e(m) for m in systems] + ["source"], rows, cls="failures")
    return (f'<section><h2>Failures</h2><p class="note">Items the student got wrong ({note}); '
            f"green cells match the expected answer, red cells do not.</p>{html}</section>")


def _export(rep: dict) -> str:
    e = rep.get("export")
    if not isinstance(e, dict) or not e:
        return ""
    out = ["<section><h2>Export</h2>", _kv({k: e[k] for k in ("dir", "verified", "student_metric", "tolerance")
                                           if e.get(k) is not None}),
           '<p class="note">Each artefact loaded by its real consumer and run greedily on the same held-out items: '
           "lossless ones must give the student's answers, quantized ones keep the metric within the tolerance.</p>"]
    arts = [a for a in e.get("artifacts") or [] if isinstance(a, dict)]
    if arts:
        def status(a: dict) -> str:
            s = str(a.get("status", ""))
            return f'<span class="{"bad" if s == "failed" else "good"}">{_e(s)}</span>'
        rows = [[_e(a.get("name", "")), f"<code>{_e(a.get('file') or a.get('path', ''))}</code>",
                 _fmt(a.get("size_mb"), 1), _e(a.get("consumer", "")), _fmt(a.get("metric")),
                 _e(a.get("matches", "")), _fmt(a.get("tokens_per_s"), 1), status(a)] for a in arts]
        out.append(_table(["artefact", "file", "size MB", "loaded by", "metric", "same answers", "tokens/s",
                           "check"], rows, (2, 4, 6)))
    return "".join(out) + "</section>"


def _cluster(rep: dict) -> str:
    c = _dict(rep.get("cluster"))
    pools = [p for p in _list(c.get("pools")) if isinstance(p, dict)]
    train = _dict(c.get("training"))
    if not pools and not train:
        return ""
    out = ["<section><h2>Cluster</h2>",
           '<p class="note">Work done on each node of the Ray cluster. A node that died lost only the shard it '
           "held: that shard was sent again to another node, and any answer that came back twice was dropped "
           "by its key.</p>"]
    for p in pools:
        rows = [[f"<code>{_e(n.get('node', ''))}</code>", _e(n.get("address", "")), _fmt(n.get("workers")),
                 _fmt(n.get("shards")), _fmt(n.get("items")), _fmt(n.get("busy_s"), 1), _fmt(n.get("retries")),
                 _fmt(n.get("lost_shards")), _fmt(n.get("lost_items")), ("bad", "left") if n.get("left") else ("ok", "up")]
                for n in _list(p.get("nodes")) if isinstance(n, dict)]
        out.append(f"<h3>{_e(p.get('stage', ''))}: {_fmt(p.get('shards'))} shards, "
                   f"{_fmt(p.get('rescheduled_shards'))} rescheduled, {_fmt(p.get('lost_items'))} items lost</h3>")
        out.append(_table(["node", "address", "workers", "shards", "items", "busy s", "retries", "lost shards",
                           "lost items", "state"], rows, range(2, 9)))
        moved = [r for r in _list(p.get("rescheduled")) if isinstance(r, dict)]
        if moved:
            out.append(_table(["shard", "items", "from node", "attempt", "why"],
                              [[_e(r.get("shard", "")), _fmt(r.get("items")), f"<code>{_e(r.get('from_node', ''))}</code>",
                                _fmt(r.get("attempt")), _e(_short(r.get("why", ""), 160))] for r in moved], (1, 3)))
    if train:
        out.append("<h3>training</h3>")
        out.append(_kv({"workers": train.get("workers"), "collective": train.get("backend"),
                        "restarts from a checkpoint": train.get("restarts"),
                        "resumed at steps": ", ".join(str(x) for x in _list(train.get("resumed_at_steps"))) or None,
                        "checkpoints": train.get("storage"), "wall seconds": train.get("wall_seconds")},
                       pretty=False))
    return "".join(out) + "</section>"


def _label_sources(rep: dict) -> str:
    ls = _dict(rep.get("label_sources"))
    rows = [r for r in _list(ls.get("sources")) if isinstance(r, dict)]
    if not rows:
        return ""
    labels = sorted({lab for r in rows for lab in _dict(r.get("per_label"))})
    lm = _dict(ls.get("label_model_on_gold"))
    out = ["<section><h2>Label sources</h2>",
           f'<p class="note">{_fmt(ls.get("items"))} candidates were labelled by a {_e(ls.get("model", ""))} label '
           f"model over these sources, learned without gold labels"
           + (" (calibrated with gold.jsonl)" if ls.get("calibrated_with_gold") else "")
           + f": {_fmt(ls.get('relabelled'))} relabelled, {_fmt(ls.get('dropped_unsure'))} dropped as unsure. "
           "Estimated accuracy is the label model's; measured is on gold.jsonl, where the source voted.</p>"]
    ci = lambda r: (f"{_fmt(r['estimated_ci'][0])}–{_fmt(r['estimated_ci'][1])}"  # noqa: E731
                    if isinstance(r.get("estimated_ci"), list) and len(r["estimated_ci"]) == 2 else "–")
    body = [[f"<code>{_e(r.get('source', ''))}</code>", _fmt(r.get("coverage")), _fmt(r.get("estimated")), ci(r),
             _fmt(r.get("measured")), _fmt(r.get("measured_n")), _fmt(r.get("agreement")), _fmt(r.get("conflict"))]
            + [_fmt(_dict(r.get("per_label")).get(lab)) for lab in labels] for r in rows]
    if lm.get("accuracy") is not None:
        body.append(["<b>label model</b>", _fmt(lm.get("coverage")), "", "", _fmt(lm.get("accuracy")),
                     _fmt(lm.get("voted")), "", ""] + [""] * len(labels))
    for w, v in _dict(ls.get("on_gold")).items():
        body.append([f"<b>{_e(w)}</b> (after training)", "1.00", "", "", _fmt(v), "", "", ""] + [""] * len(labels))
    out.append(_table(["source", "coverage", "estimated accuracy", "95% CI", "measured on gold", "gold n",
                       "agreement", "conflict"] + [f"est. {_e(lab)}" for lab in labels], body,
                      range(1, 8 + len(labels))))
    return "".join(out) + "</section>"


def _kv_section(rep: dict, key: str, title: str, pretty: bool = True) -> str:
    d = rep.get(key)
    return f"<section><h2>{title}</h2>{_kv(d, pretty)}</section>" if isinstance(d, dict) and d else ""


def render_html(report: dict) -> str:
    """The whole report as one self-contained HTML page (a str)."""
    from .rounds import rounds_section  # it builds on the helpers above
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
            f"<title>taskling report: {_e(title)}</title><style>{CSS}</style></head>"
            f'<body><div class="wrap">{_header(report)}{"".join(body)}</div></body></html>\n')
