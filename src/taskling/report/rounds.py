"""The report's Rounds section: what the self-improving loop did round by round.

`rounds_section(report)` renders report["loop"] (loop.json, see loop.py): the
metric per round with intervals, the per-round table, a heat map of examples
per arm and round, why the allocation changed, and the failures that remain.
Like the rest of the page (html.py), everything is escaped and any key may be missing.
"""
from __future__ import annotations

from .charts import axes, legend_at, metric_axis, svg
from .parts import DASH, as_dict, as_list, ci_text, esc, fmt, money, num, short, table, text_cell

ROUND_SETS = ("eval", "gold")
SET_COLOURS = {"eval": "#0072B2", "gold": "#D55E00"}
ROUND_ARMS = 30  # rows of the arms heat map and tables; the loop.json keeps them all
ROUND_FAILURES = 20


def _res(r: dict, s: str, who: str) -> dict:
    return as_dict(as_dict(as_dict(r.get("results")).get(s)).get(who))


def _n(x) -> str:
    """A count: whole numbers without decimals (dev errors may be fractional scores)."""
    v = num(x)
    return f"{int(v):,}" if v is not None and v.is_integer() else fmt(x)


def _round_no(r: dict, i: int) -> str:
    return _n(r.get("round")) if num(r.get("round")) is not None else str(i)


def rounds_chart(rounds: list[dict], metric: str, kept=None) -> str:
    """The student's metric per round with 95% CI bars, one series per set; the teacher's level on a set is a
    dashed line; the exported round is shaded."""
    sets = [s for s in ROUND_SETS if any(num(_res(r, s, "student").get("metric")) is not None for r in rounds)]
    if not sets:
        return ""
    teacher = {}
    for s in sets:
        levels = [v for r in rounds if (v := num(_res(r, s, "teacher").get("metric"))) is not None]
        if levels:
            teacher[s] = levels[-1]
    vals = [v for r in rounds for s in sets for k in ("metric", "ci_low", "ci_high")
            if (v := num(_res(r, s, "student").get(k))) is not None] + list(teacher.values())
    yt, nd = metric_axis(min(vals), max(vals))
    W, H, L, R, T, B = 1000, 300, 60, 130, 36, 44
    lo, hi = yt[0], yt[-1]
    y = lambda v: T + (hi - max(lo, min(hi, v))) / (hi - lo) * (H - T - B)  # noqa: E731
    cw = (W - L - R) / len(rounds)
    x = lambda i: L + (i + 0.5) * cw  # noqa: E731
    parts = []
    k = next((i for i, r in enumerate(rounds) if kept is not None and r.get("round") == kept), None)
    if k is not None:
        parts.append(f'<rect x="{L + k * cw:.1f}" y="{T}" width="{cw:.1f}" height="{H - T - B}" fill="#eef6fc">'
                     f"<title>round {_round_no(rounds[k], k)} is exported</title></rect>")
    parts += axes(W, H, L, R, T, B, yt, nd, y)
    parts.append(f'<text x="14" y="{(T + H - B) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(T + H - B) / 2:.0f})">{esc(metric)}</text>')
    parts.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 6}" text-anchor="middle">round</text>')
    for i, r in enumerate(rounds):
        parts.append(f'<text x="{x(i):.1f}" y="{H - B + 17}" text-anchor="middle">{_round_no(r, i)}'
                     f'{" (exported)" if i == k else ""}</text>')
    label_y: list[float] = []
    for s, v in sorted(teacher.items(), key=lambda sv: -sv[1]):  # labels top down, so a pushed one stays below
        ly = y(v) + 4
        while any(abs(ly - o) < 14 for o in label_y):  # two teachers at one level: stack their labels
            ly += 14
        label_y.append(ly)
        parts.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{SET_COLOURS[s]}" '
                     f'stroke-width="1.5" stroke-dasharray="6 4"><title>teacher on {s}: {v:.2f}</title></line>')
        parts.append(f'<text x="{W - R + 6}" y="{ly:.1f}">teacher {s} {v:.2f}</text>')
    dx = min(12.0, cw * 0.15)
    for j, s in enumerate(sets):
        off, col = (j - (len(sets) - 1) / 2) * dx, SET_COLOURS[s]
        pts = [(i, _res(r, s, "student")) for i, r in enumerate(rounds)]
        pts = [(x(i) + off, st, _round_no(rounds[i], i)) for i, st in pts if num(st.get("metric")) is not None]
        if len(pts) > 1:
            xy = " ".join(f"{px:.1f},{y(num(st['metric'])):.1f}" for px, st, _ in pts)
            parts.append(f'<polyline points="{xy}" fill="none" stroke="{col}" stroke-width="2"/>')
        for px, st, no in pts:
            v, a, b = num(st["metric"]), num(st.get("ci_low")), num(st.get("ci_high"))
            if a is not None and b is not None:
                parts.append(f'<path d="M{px:.1f} {y(a):.1f}V{y(b):.1f}M{px - 4:.1f} {y(a):.1f}h8'
                             f'M{px - 4:.1f} {y(b):.1f}h8" stroke="{col}" stroke-width="1.3" fill="none"/>')
            parts.append(f'<circle cx="{px:.1f}" cy="{y(v):.1f}" r="4" fill="{col}"><title>student on {s}, round '
                         f"{no}: {ci_text(st)}</title></circle>")
    items = [(f"student · {s}", SET_COLOURS[s], "") for s in sets]
    items += [(f"teacher · {s}", SET_COLOURS[s], ' stroke-dasharray="6 4"') for s in teacher]
    for (name, col, dash), (lx, row) in zip(items, legend_at([n for n, _, _ in items], L + 4, W - R)):
        ly = 16 + 18 * row
        parts.append(f'<line x1="{lx:.1f}" x2="{lx + 14:.1f}" y1="{ly - 3}" y2="{ly - 3}" stroke="{col}" '
                     f'stroke-width="2"{dash}/>')
        parts.append(f'<text x="{lx + 18:.1f}" y="{ly + 1}">{name}</text>')
    return svg(W, H, f"student {metric} per round with 95% confidence intervals", parts)


def _arm_name(a: dict) -> str:
    """An arm's name; one made from its [topic, label] when an older loop.json has none."""
    if a.get("name") not in (None, ""):
        return str(a["name"])
    arm = a.get("arm")
    if isinstance(arm, (list, tuple)) and len(arm) == 2:
        t = "all topics" if arm[0] is None else f"topic {arm[0]}"
        return t if arm[1] is None else f"{t} / {arm[1]}"
    return DASH


def _loop_sentence(lp: dict, rounds: list[dict]) -> str:
    share = num(lp.get("failure_share"))
    out = [f"Policy {esc(lp.get('policy') or DASH)}"
           + (f", training mode {esc(lp['train'])}" if lp.get("train") else "")
           + (f", {share:.0%} of later jobs seeded by failures" if share is not None else "") +
           f": {len(rounds)}" + (f" of {_n(lp['rounds_max'])}" if num(lp.get("rounds_max")) is not None else "") +
           " rounds done"]
    stop = as_dict(lp.get("stop"))
    if stop:
        rule = f" by the {esc(stop['rule'])} rule" if stop.get("rule") else ""
        out[-1] += f", stopped{rule}" + (f": {esc(stop['reason'])}" if stop.get("reason") else "") + "."
    else:
        out[-1] += "; the loop has not stopped yet."
    kept = as_dict(lp.get("kept"))
    if num(kept.get("round")) is not None:
        out.append(f"Round {_n(kept['round'])} is exported" + (f": {esc(kept['why'])}." if kept.get("why") else "."))
    spent, budget = as_dict(lp.get("spent")), as_dict(lp.get("budget"))

    def of(v: str, b) -> str:
        return f"{v} (budget {_n(b)})" if num(b) is not None else v
    bits = [of(f"{_n(spent.get('examples'))} examples", budget.get("examples")),
            of(f"{_n(spent.get('teacher_tokens'))} teacher tokens", budget.get("teacher_tokens")),
            of(f"cost {money(spent.get('cost'))}", budget.get("money")),
            f"{fmt(spent.get('seconds'), 1)} seconds"]
    if num(budget.get("wall_time_minutes")) is not None:
        bits[-1] += f" (budget {_n(budget['wall_time_minutes'])} min)"
    if spent:
        out.append("Spent " + ", ".join(bits) + ".")
    return f"<p>{' '.join(out)}</p>"


def _gain(g) -> str:
    g = as_dict(g)
    d, lo, hi = (num(g.get(k)) for k in ("diff", "low", "high"))
    if d is None:
        return DASH
    out = f"{d:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "")
    if num(g.get("vs_round")) is not None:
        out += f" vs round {_n(g['vs_round'])}"
    conf = num(g.get("confidence"))
    tip = f' title="{conf:.0%} interval, paired bootstrap"' if conf is not None else ""
    if g.get("significant") is True:
        out += f'<br><span class="good"{tip}>significant</span>'
    elif g.get("significant") is False:
        out += f'<br><span class="note"{tip}>not significant</span>'
    return out


def _rounds_table(rounds: list[dict], kept) -> str:
    rows, cls = [], []
    for i, r in enumerate(rounds):
        ex = _n(r.get("examples")) + (f" ({_n(r['seeded_examples'])} seeded)"
                                      if num(r.get("seeded_examples")) else "")
        exported = r.get("round") == kept and kept is not None
        rows.append([_round_no(r, i) + (" (exported)" if exported else ""), ex, _n(r.get("train_size")),
                     _n(r.get("steps")) + (" continued" if r.get("continued") is True else ""),
                     *[ci_text(_res(r, s, "student")) for s in ROUND_SETS], _gain(r.get("gain")),
                     fmt(r.get("seconds"), 1)])
        cls.append("student" if exported else "")
    head = ["round", "examples", "train size", "steps"] + [f"{s} [95%&nbsp;CI]" for s in ROUND_SETS] + [
        "gain vs best earlier", "seconds"]
    return table(head, rows, range(1, 8), cls="res", row_cls=cls)


def _arm_heat(rounds: list[dict]) -> str:
    """Examples per arm (rows) and round (columns), shaded by the largest cell; seeded jobs in small text."""
    cells: dict[str, dict[int, list[float]]] = {}
    for i, r in enumerate(rounds):
        for a in as_list(r.get("arms")):
            if isinstance(a, dict):
                c = cells.setdefault(_arm_name(a), {}).setdefault(i, [0.0, 0.0])
                c[0] += num(a.get("examples")) or 0
                c[1] += num(a.get("seeded_jobs")) or 0
    if not cells:
        return ""
    total = {n: sum(c[0] for c in cs.values()) for n, cs in cells.items()}
    names = sorted(cells, key=lambda n: (-total[n], n))
    top = max(c[0] for cs in cells.values() for c in cs.values()) or 1
    rows = []
    for n in names[:ROUND_ARMS]:
        row = [("rl", f'<span title="{esc(n)}">{esc(short(n, 60))}</span>')]
        for i in range(len(rounds)):
            c = cells[n].get(i)
            if c is None:
                row.append(("t", DASH))
                continue
            q = round(10 * c[0] / top)
            seeded = f"<br><small>{_n(c[1])} seeded</small>" if c[1] else ""
            row.append((" ".join(filter(None, [f"q{q}" if q else "", "hi" if q >= 6 else ""])), _n(c[0]) + seeded))
        rows.append(row + [("t", _n(total[n]))])
    more = f" (the {ROUND_ARMS} with the most examples of {len(names)} arms)" if len(names) > ROUND_ARMS else ""
    head = ["arm ↓ round →"] + [_round_no(r, i) for i, r in enumerate(rounds)] + [("t", "total")]
    return (f"<h3>examples per arm and round{more}</h3>"
            '<p class="note">Shade: examples generated, scaled by the largest cell; small text: jobs seeded from '
            f'failures.</p><div class="cms"><div>{table(head, rows, cls="cm")}</div></div>')


def _allocation(rounds: list[dict]) -> str:
    out = []
    for i, r in enumerate(rounds):
        k = num(r.get("round"))
        if (i if k is None else k) < 1:
            continue  # round 0 spreads its jobs evenly: nothing was weighed yet
        al = as_dict(r.get("allocation"))
        dev, unc = as_dict(al.get("dev")), as_dict(al.get("uncertainty"))
        facts = []
        if dev:
            facts.append(f"dev errors {_n(dev.get('errors'))} of {_n(dev.get('items'))} "
                         f"(error rate {fmt(dev.get('error_rate'))})")
        if unc:
            facts.append(f"mean uncertainty {fmt(unc.get('mean'), 4)} over {_n(unc.get('probed'))} probed")
        new = [str(a) for a in as_list(al.get("new_arms")) if a is not None]
        if new:
            facts.append("new arms: " + ", ".join(esc(a) for a in new))
        why = [w for w in as_list(al.get("why")) if w is not None]
        more = f'<li class="note">and {len(why) - ROUND_ARMS} more</li>' if len(why) > ROUND_ARMS else ""
        out.append(f"<h4>round {_round_no(r, i)} · {esc(al.get('policy') or DASH)}</h4>" +
                   (f'<p class="note">{"; ".join(facts)}.</p>' if facts else "") +
                   (f"<ul>{''.join(f'<li>{esc(w)}</li>' for w in why[:ROUND_ARMS])}{more}</ul>" if why else ""))
    last = next(((i, r) for i, r in reversed(list(enumerate(rounds))) if as_list(r.get("analysis_arms"))), None)
    if last:
        arms = sorted((a for a in last[1]["analysis_arms"] if isinstance(a, dict)),
                      key=lambda a: -(num(a.get("weight")) or 0))
        rows = [[esc(short(_arm_name(a), 60)), _n(a.get("dev_items")), _n(a.get("dev_errors")),
                 fmt(a.get("error_mean")), fmt(a.get("uncertainty"), 4), fmt(a.get("keep_rate")),
                 fmt(a.get("weight")), _n(a.get("jobs_total")), "new" if a.get("new") is True else ""]
                for a in arms[:ROUND_ARMS]]
        out.append(f"<h4>arms weighed for round {_round_no(last[1], last[0])}</h4>" + table(
            ["arm", "dev items", "dev errors", "error mean", "uncertainty", "keep rate", "weight", "jobs", ""],
            rows, range(1, 8), cls="narrow"))
    return "<h3>how the allocation changed and why</h3>" + "".join(out) if out else ""


def _remaining(lp: dict) -> str:
    fs = [f for f in as_list(lp.get("remaining_failures")) if isinstance(f, dict)]
    if not fs:
        return ""
    more = f"the first {ROUND_FAILURES} of {len(fs)}" if len(fs) > ROUND_FAILURES else f"{len(fs)} items"
    rows = [[f"{esc(f.get('set', ''))}<br>{esc(f.get('id', ''))}", text_cell(f.get("input")),
             text_cell(f.get("expected")),
             ("bad", "(empty)" if f.get("student") == "" else text_cell(f.get("student"))),
             esc(short(f.get("topic") or DASH, 80))] for f in fs[:ROUND_FAILURES]]
    return (f"<h3>failures left after the last round ({more})</h3>" +
            table(["item", "input", "expected", "student", "topic"], rows, cls="rf"))


def rounds_section(rep: dict) -> str:
    """The self-improving loop: what each round reached, where its examples went and why, what is left."""
    lp = as_dict(rep.get("loop"))
    rounds = [r for r in as_list(lp.get("rounds")) if isinstance(r, dict)]
    if not rounds:
        return ""
    metric = next((r["metric"] for r in rounds if isinstance(r.get("metric"), str) and r["metric"]), None)
    metric = metric or as_dict(rep.get("task")).get("metric") or "metric"
    kept = as_dict(lp.get("kept")).get("round")
    kept = kept if num(kept) is not None else None
    return ("<section><h2>Rounds</h2>" + _loop_sentence(lp, rounds) + rounds_chart(rounds, str(metric), kept) +
            _rounds_table(rounds, kept) + _arm_heat(rounds) + _allocation(rounds) + _remaining(lp) + "</section>")
