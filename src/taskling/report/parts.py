"""The report's text parts: how a value is written (escaped, formatted, shortened), the order
systems and sets are shown in, and the HTML tables every section is made of.

Values come as a report holds them, and reports are also built mid-run: a value may be missing,
None, NaN or of another type than expected. The formatters write a dash for those, never raise.
"""
from __future__ import annotations

import math
from html import escape

DASH = "—"
MODELS = ("student", "student-open", "student-constrained", "base", "base-open", "base-fewshot", "base-constrained",
          "teacher")
CELL_CHARS = 600  # long documents would make the failure table unreadable


def esc(x) -> str:
    return escape(str(x), quote=True)


def num(x) -> float | None:
    """A finite number, or None for missing, NaN, inf, bools and text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def fmt(x, nd: int = 2) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if x is None or isinstance(x, (dict, list)):
        return DASH
    v = num(x)
    if v is None:
        return DASH if isinstance(x, (int, float)) else esc(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{round(v, nd) + 0.0:,.{nd}f}"  # + 0.0: no "-0.00" for a tiny negative


def ci_text(r: dict) -> str:
    m = fmt(r.get("metric"))
    lo, hi = num(r.get("ci_low")), num(r.get("ci_high"))
    return m if m == DASH or lo is None or hi is None else f"{m} [{lo:.2f}, {hi:.2f}]"


def money(x) -> str:
    """Money with two significant digits below 1 (0.0042), cents above."""
    v = num(x)
    if v is None or v == 0:
        return fmt(v)
    return f"{v:,.{min(6, max(2, 1 - math.floor(math.log10(abs(v)))))}f}"


def as_dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def as_list(x) -> list:
    return x if isinstance(x, list) else []


def short(s, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[:n].rstrip() + " …"


def text_cell(x) -> str:
    return esc(DASH if x is None else short(x, CELL_CHARS))


def systems_in_order(per: dict) -> list[str]:
    return [m for m in MODELS if m in per] + [m for m in per if m not in MODELS]


def sets_in_order(results: dict) -> list[str]:
    return [s for s in ("gold", "eval") if s in results] + [s for s in results if s not in ("gold", "eval")]


def table(head: list[str], rows: list[list], num_cols=(), cls: str = "", row_cls=None) -> str:
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


def kv_table(d: dict, pretty: bool = True) -> str:
    rows = "".join(f"<tr><th>{esc(str(k).replace('_', ' ') if pretty else k)}</th><td>{fmt(v, 1)}</td></tr>"
                   for k, v in d.items())
    return f'<table class="kv"><tbody>{rows}</tbody></table>'
