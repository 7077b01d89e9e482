"""The report's charts: hand-written inline SVG (axes, ticks, legends) and the three charts of a
run: the metric per set and system with confidence intervals, the loss curve, and the error rate
per topic. No scripts and no external assets: a chart is a <figure> string.
"""
from __future__ import annotations

import math

from .parts import as_dict, esc, fmt, num, sets_in_order, short, systems_in_order

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; a variant shares its system's hue family.
COLOURS = {"student": "#0072B2", "student-constrained": "#56B4E9", "base": "#E69F00", "base-fewshot": "#D55E00",
           "base-constrained": "#CC79A7", "teacher": "#009E73"}
EXTRA_COLOURS = ("#000000", "#F0E442", "#999999")
TOPIC_BARS = 15


def colour(model: str, order: list[str]) -> str:
    extra = [m for m in order if m not in COLOURS]
    return COLOURS.get(model) or EXTRA_COLOURS[extra.index(model) % len(EXTRA_COLOURS)]


def ticks(lo: float, hi: float, n: int = 5, min_step: float = 0.0) -> tuple[list[float], int]:
    """Round tick values covering [lo, hi], and the decimals to print them with."""
    if hi <= lo:
        pad = max(min_step, abs(lo) * 0.1) or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = max(min_step, next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9)))
    start, end = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    values = [start + i * step for i in range(round((end - start) / step) + 1)]
    nd = max(0, -math.floor(math.log10(step)))
    if abs(step * 10 ** nd - round(step * 10 ** nd)) > 1e-6:
        nd += 1
    return [0.0 if abs(t) < step * 1e-9 else t for t in values], nd


def metric_axis(lo: float, hi: float) -> tuple[list[float], int]:
    """Y ticks for a metric: 0..1 in fifths when the values fit (most metrics are rates), else nice ticks."""
    return ([i / 5 for i in range(6)], 1) if lo >= 0 and hi <= 1 else ticks(lo, hi)


def axes(W, H, L, R, T, B, yt, nd, y) -> list[str]:
    out = []
    for t in yt:
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e9ee"/>')
        out.append(f'<text x="{L - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:,.{nd}f}</text>')
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="#59636e"/>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#59636e"/>')
    return out


def xaxis(xt: list[float], nd: int, x, T, H, B, grid: bool = False) -> list[str]:
    out = []
    for t in xt:
        if grid:
            out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{T}" y2="{H - B}" stroke="#e5e9ee"/>')
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{H - B}" y2="{H - B + 4}" stroke="#59636e"/>')
        out.append(f'<text x="{x(t):.1f}" y="{H - B + 17}" text-anchor="middle">{t:,.{nd}f}</text>')
    return out


def svg(W: int, H: int, label: str, parts: list[str]) -> str:
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>{"".join(parts)}</svg></figure>')


def legend_at(names: list[str], x: float, right: float) -> list[tuple[float, int]]:
    """(x, row) of each legend entry, wrapping to a new row before `right`."""
    out, cx, row = [], x, 0
    for name in names:
        w = 30 + 7 * len(str(name))
        if cx > x and cx + w > right:
            cx, row = x, row + 1
        out.append((cx, row))
        cx += w
    return out


def legend(items: list[tuple[str, str]], x: float, y: float, marker: str = "rect", right: float = 1e9) -> list[str]:
    out = []
    for (name, col), (lx, row) in zip(items, legend_at([n for n, _ in items], x, right)):
        ly = y + 18 * row
        if marker == "rect":
            out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="12" height="12" rx="2" fill="{col}"/>')
        else:
            out.append(f'<line x1="{lx:.1f}" x2="{lx + 14:.1f}" y1="{ly - 3}" y2="{ly - 3}" '
                       f'stroke="{col}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 18:.1f}" y="{ly + 1}">{esc(name)}</text>')
    return out


def bar_chart(results: dict, metric: str) -> str:
    """Grouped bars of the metric per set and model, with 95% CI whiskers."""
    sets = sets_in_order(results)
    models: list[str] = []
    for s in sets:
        models += [m for m in systems_in_order(results[s]) if m not in models]
    vals = [num(results[s].get(m, {}).get(k)) for s in sets for m in models for k in ("metric", "ci_low", "ci_high")
            if isinstance(results[s].get(m), dict)]
    vals = [v for v in vals if v is not None]
    if not vals:
        return ""
    yt, nd = metric_axis(min(0.0, *vals), max(0.0, *vals))
    W, L, R, B = 1000, 60, 16, 44
    rows = legend_at(models, L + 4, W - R)[-1][1] + 1  # the legend may wrap; the plot keeps its height
    H, T = 322 + 18 * rows, 22 + 18 * rows
    lo, hi = yt[0], yt[-1]
    y = lambda v: T + (hi - max(lo, min(hi, v))) / (hi - lo) * (H - T - B)  # noqa: E731
    parts = axes(W, H, L, R, T, B, yt, nd, y)
    if lo < 0:
        parts.append(f'<line x1="{L}" x2="{W - R}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#59636e"/>')
    parts.append(f'<text x="14" y="{(T + H - B) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(T + H - B) / 2:.0f})">{esc(metric)}</text>')
    gw = (W - L - R) / len(sets)
    bw = min(56.0, gw * 0.75 / max(1, len(models)))
    for i, s in enumerate(sets):
        shown = [m for m in models if num(as_dict(results[s].get(m)).get("metric")) is not None]
        x0 = L + i * gw + (gw - bw * len(shown)) / 2
        parts.append(f'<text x="{L + (i + 0.5) * gw:.1f}" y="{H - B + 20}" text-anchor="middle" '
                     f'font-weight="600">{esc(s)}</text>')
        for j, m in enumerate(shown):
            r = results[s][m]
            v = num(r["metric"])
            x, base = x0 + j * bw, y(max(lo, min(hi, 0.0)))
            top = min(y(v), base)
            parts.append(f'<rect x="{x + 2:.1f}" y="{top:.1f}" width="{bw - 4:.1f}" height="{abs(base - y(v)):.1f}" '
                         f'fill="{colour(m, models)}"><title>{esc(m)} on {esc(s)}: {v:.2f}</title></rect>')
            cx, a, b = x + bw / 2, num(r.get("ci_low")), num(r.get("ci_high"))
            if a is not None and b is not None:
                parts.append(f'<path d="M{cx:.1f} {y(a):.1f}V{y(b):.1f}M{cx - 5:.1f} {y(a):.1f}h10'
                             f'M{cx - 5:.1f} {y(b):.1f}h10" stroke="#1f2328" stroke-width="1.3" fill="none"/>')
            ends = [y(v)] + [y(c) for c in (a, b) if c is not None]
            ty = min(max(ends) + 14, H - B - 2) if v < 0 else max(min(ends) - 5, T - 4)  # clear of bar and whisker
            parts.append(f'<text x="{cx:.1f}" y="{ty:.1f}" text-anchor="middle" '
                         f'font-size="11">{v:.2f}</text>')
    parts += legend([(m, colour(m, models)) for m in models], L + 4, 18, right=W - R)
    return svg(W, H, f"{metric} per set and model with 95% confidence intervals", parts)


def _points(series) -> list[tuple[float, float]]:
    pts = []
    for p in series or []:
        if isinstance(p, (list, tuple)) and len(p) == 2 and num(p[0]) is not None and num(p[1]) is not None:
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
    yt, nd = ticks(min(ys), max(ys))
    xt, xnd = ticks(min(xs), max(xs), 6, min_step=1.0)  # steps are whole numbers
    W, H, L, R, T, B = 1000, 300, 60, 16, 36, 44
    y = lambda v: T + (yt[-1] - v) / (yt[-1] - yt[0]) * (H - T - B)  # noqa: E731
    x = lambda v: L + (v - xt[0]) / (xt[-1] - xt[0]) * (W - L - R)  # noqa: E731
    parts = axes(W, H, L, R, T, B, yt, nd, y) + xaxis(xt, xnd, x, T, H, B)
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
    best = num(best_step)
    if best is not None and xt[0] <= best <= xt[-1]:
        bx, end = x(best), x(best) > W - R - 140
        parts.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{T}" y2="{H - B}" stroke="#59636e" '
                     'stroke-dasharray="5 4"/>')
        parts.append(f'<text x="{bx - 6 if end else bx + 6:.1f}" y="{T + 12}" stroke="#fff" stroke-width="4" '
                     f'paint-order="stroke" text-anchor="{"end" if end else "start"}">best step {best:,.0f}</text>')
    parts += legend([(n, c) for n, c, _ in series], L + 4, 16, marker="line")
    return svg(W, H, "loss against training step", parts)


def topic_chart(rows: list, title: str) -> str:
    """Horizontal bars of the error rate per topic, highest first, at most TOPIC_BARS."""
    rows = [r for r in rows or [] if isinstance(r, dict) and num(r.get("error_rate")) is not None]
    if not rows:
        return ""
    rows = sorted(rows, key=lambda r: (-r["error_rate"], -(num(r.get("errors")) or 0)))[:TOPIC_BARS]
    names = [short(r.get("topic", ""), 40) for r in rows]
    W, L, R, T, B, rh = 1000, min(330, 16 + 7 * max(map(len, names))), 110, 8, 40, 24
    H = T + rh * len(rows) + B
    x = lambda v: L + max(0.0, min(1.0, v)) * (W - L - R)  # noqa: E731
    parts = axes(W, H, L, R, T, B, [], 0, None) + xaxis([i / 5 for i in range(6)], 1, x, T, H, B, grid=True)
    parts.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 4}" text-anchor="middle">error rate</text>')
    for i, (r, name) in enumerate(zip(rows, names)):
        y, v = T + i * rh, r["error_rate"]
        count = f"{fmt(r.get('errors'))} of {fmt(r.get('n'))}"
        parts.append(f'<text x="{L - 6}" y="{y + rh / 2 + 4:.1f}" text-anchor="end">{esc(name)}</text>')
        parts.append(f'<rect x="{L}" y="{y + 4}" width="{x(v) - L:.1f}" height="{rh - 8}" fill="{COLOURS["student"]}">'
                     f'<title>{esc(r.get("topic", ""))}: {v:.2f} ({count})</title></rect>')
        parts.append(f'<text x="{x(v) + 6:.1f}" y="{y + rh / 2 + 4:.1f}" font-size="11">{v:.2f} · {count}</text>')
    return svg(W, H, title, parts)
