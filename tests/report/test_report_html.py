"""report_html.render_html: content, escaping, partial reports, chart scaling,
and a headless Chromium render of the page (the session's browser; without Chromium it fails)."""
from __future__ import annotations

import math
import re
from html import unescape
from html.parser import HTMLParser

import pytest

from taskling.report.html import render_html

HOSTILE = '<script>alert(1)</script> and "><img src=x onerror=alert(1)>'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def row(metric, lo, hi, n=54, ips=12.5, mb=538.0):
    return {"metric": metric, "ci_low": lo, "ci_high": hi, "n": n, "items_per_s": ips, "size_mb": mb}


def system(metric, lo, hi, n=54, ips=12.5, mb=538.0, p50=75.0, prompt=212.4, cost=None):
    """A results row as evaluate writes it now: every metric, latency, tokens and cost."""
    f1 = round(metric - 0.04, 2)
    return row(metric, lo, hi, n, ips, mb) | {
        "unparsed": 0, "metrics": {"accuracy": metric, "macro_f1": f1},
        "cis": {"accuracy": [lo, hi], "macro_f1": [round(lo - 0.05, 2), round(hi - 0.03, 2)]},
        "latency_ms": {"mean": p50 * 1.1, "p50": p50, "p95": p50 * 1.9},
        "tokens": {"prompt": prompt, "completion": 3.2},
        "cost_per_1k": cost, "cpu_seconds_per_1k": None if cost else 1000 / ips}


LABELS = ["sqlite", "node", "python", "postgres"]
TOPICS = ["installing", "foreign keys", "the event loop", "streams", "virtual environments", "indexes",
          "transactions and locking in a write-ahead-log database under concurrent writers", "packaging",
          "buffers", "type hints", "vacuum", "npm scripts", "asyncio", "replication", "pragmas", "workers",
          "full-text search", "decorators"]


def evaluation() -> dict:
    def confusion(hit):
        return {"labels": LABELS, "predicted_labels": LABELS + ["(none)"],
                "matrix": [[hit if j == i else (2 if j == (i + 1) % 4 else 0) for j in range(4)] + [1]
                           for i in range(4)]}

    def scores(f1):
        return {lab: {"precision": f1 + 0.05, "recall": f1 - 0.05, "f1": round(f1 - 0.1 * i, 2), "support": 12 + i}
                for i, lab in enumerate(LABELS)}

    return {
        "confusion": {"gold": {"student": confusion(9), "base": confusion(2), "teacher": confusion(11)}},
        "per_class": {"gold": {"student": scores(0.8), "base": scores(0.3), "teacher": scores(0.95)},
                      "eval": {"student": scores(0.85)}},
        "per_field": {"gold": {"student": {"vendor": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 54},
                                           "total": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 50}}}},
        "error_rates": {
            "topic": {"gold": [{"topic": t, "n": 10 + i % 3, "errors": i % 7, "error_rate": (i % 7) / (10 + i % 3)}
                               for i, t in enumerate(TOPICS)]},
            "label": {"gold": [{"label": lab, "n": 12 + i, "errors": 3 - i % 3, "error_rate": (3 - i % 3) / (12 + i)}
                               for i, lab in enumerate(LABELS)]}},
        "constrained": {"gold": {"student": {"free": 0.71, "constrained": 0.74, "metric": "accuracy"},
                                 "base": {"free": 0.22, "constrained": 0.31, "metric": "accuracy"}}},
    }


def full_report() -> dict:
    return {
        "run_id": "2026-11-23-abc",
        "generated_at": "2026-11-23T10:00:00+00:00",
        "task": {"name": "Route questions to manuals", "type": "classify",
                 "description": "Pick the manual that answers a question.", "metric": "accuracy"},
        "summary": "The student scores 0.71 on gold vs 0.22 for its base.",
        "stages": [{"stage": "ingest", "round": 0, "seconds": 1.2, "skipped": False,
                    "counts": {"documents": 6, "chunks": 900}},
                   {"stage": "train", "round": 0, "seconds": 120.0, "skipped": True, "counts": {"steps": 30}}],
        "funnel": [{"step": "generated", "count": 180}, {"step": "valid", "count": 160},
                   {"step": "unique", "count": 150}, {"step": "train", "count": 120}, {"step": "eval", "count": 30}],
        "rejections": {"input shorter than 3 words": 4, "duplicate": 10},
        "curation": {"rejected_samples": {"near duplicate": [{"id": "gen-00007-0", "input": "How do I json?",
                                                              "reason": "near duplicate (of gen-00001-0)"}]},
                     "labels": {"train": {"sqlite": 60, "node": 60}, "eval": {"sqlite": 15, "node": 15}},
                     "topics": {"3": 40, "7": 80}, "grounding": {"min": 0.1, "mean_kept": 0.42, "embeddings": True},
                     "judge": None, "pii": {"email": 2}, "review": None, "language": "en"},
        "results": {
            "gold": {"student": system(0.71, 0.58, 0.82), "base": system(0.22, 0.12, 0.35, mb=513.0),
                     "base-fewshot": system(0.41, 0.29, 0.55, ips=6.1, mb=513.0, prompt=1180.0),
                     "teacher": system(0.93, 0.83, 0.97, ips=1.9, mb=None, p50=820.0, cost=0.0042),
                     "student-constrained": system(0.74, 0.61, 0.85, ips=11.0, p50=90.0),
                     "base-constrained": system(0.31, 0.19, 0.44, ips=11.0, mb=513.0, p50=90.0)},
            "eval": {"student": system(0.77, 0.6, 0.88, n=30), "base": system(0.3, 0.15, 0.48, n=30),
                     "teacher": system(0.9, 0.74, 0.97, n=30, cost=0.0042)},
        },
        "evaluation": evaluation(),
        "per_label": {"gold": {"student": {"sqlite": 0.8, "node": 0.5}, "base": {"sqlite": 0.25, "node": 0.125}}},
        "training": {"loss": [[i, 2.3 - 0.05 * i] for i in range(1, 31)],
                     "eval_loss": [[10, 1.9], [20, 1.6], [30, 1.7]],
                     "steps": 30, "tokens_per_s": 210.0, "seconds": 120.0, "trainable_params": 4000000,
                     "best_step": 20, "stopped_early": True, "stop_reason": "eval loss did not improve for 2 evals",
                     "lr": 2e-4, "precision": "bf16", "device": "cpu", "mode": "lora"},
        "costs": {"teacher": {"calls": 200, "cached": 40, "input_tokens": 80000, "output_tokens": 6000, "money": 0.42},
                  "judge": None, "train_seconds": 120.0, "evaluate_seconds": 35.5, "total_seconds": 410.2,
                  "money_total": 0.42},
        "failures": [{"set": "gold", "id": f"gold-{i:03d}", "input": f"question number {i}", "expected": "sqlite",
                      "student": "node", "base": "python", "teacher": "sqlite", "source": "docs/x.html",
                      "topic": TOPICS[i % len(TOPICS)], "label": "sqlite"}
                     for i in range(60)],
        "export": {"dir": "runs/r/export", "verified": "3/3 greedy outputs match",
                   "artifacts": [{"name": "merged safetensors", "path": "runs/r/export/model.safetensors",
                                  "size_mb": 513.0}]},
        "teacher_calls": {"calls": 200, "prompt_tokens": 80000, "completion_tokens": 6000, "seconds": 150.2},
        "versions": {"taskling": "0.1.0", "torch": "2.13.0"},
    }


class Checker(HTMLParser):
    """Collects text, attributes and <svg> contents; fails on unbalanced tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.text, self.attrs, self.tags = [], [], [], [], []
        self.svg_text: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.attrs += [v or "" for _, v in attrs]
        if tag == "svg":
            self.svg_text.append([])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.attrs += [v or "" for _, v in attrs]

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "style":
            return
        self.text.append(data)
        if "svg" in self.stack and self.stack[-1] == "text":
            self.svg_text[-1].append(data)


def parse(html: str) -> Checker:
    c = Checker()
    c.feed(html)
    c.close()
    assert not c.errors, c.errors[:5]
    assert c.stack == [], f"unclosed tags: {c.stack}"
    return c


def table_after(html: str, marker: str) -> list[list[str]]:
    """The cell texts, row by row (header first), of the first table after `marker`; a <br> reads as a space."""
    table = re.search(r"<table.*?</table>", html[html.index(marker):], re.S).group(0)
    cells = r"<t[hd][^>]*>(.*?)</t[hd]>"
    return [[unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br>", " ", c))).replace("\xa0", " ")
             for c in re.findall(cells, tr)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]


def svg_tags(page: Checker, label: str) -> list[tuple[str, dict]]:
    """The tags inside the chart whose aria-label starts with `label`."""
    start = next(i for i, (t, a) in enumerate(page.tags) if t == "svg" and a["aria-label"].startswith(label))
    end = next((i for i, (t, _) in enumerate(page.tags) if t == "svg" and i > start), len(page.tags))
    return page.tags[start:end]


def svg_texts(page: Checker, label: str) -> list[str]:
    svgs = [a for t, a in page.tags if t == "svg"]
    return page.svg_text[next(i for i, a in enumerate(svgs) if a["aria-label"].startswith(label))]


def test_full_report_has_every_section_and_number():
    html = render_html(full_report())
    page = parse(html)
    text = " ".join(page.text)
    assert html.count("<svg") >= 2
    for needle in ["Route questions to manuals", "classify", "2026-11-23-abc", "0.71 [0.58, 0.82]",
                   "0.22 [0.12, 0.35]", "12.5", "538.0", "The student scores 0.71 on gold vs 0.22 for its base.",
                   "sqlite", "0.80", "tokens/s", "210.0", "4,000,000", "input shorter than 3 words",
                   "documents=6, chunks=900", "gold-049", "merged safetensors", "3/3 greedy outputs match",
                   "80,000", "prompt tokens", "2.13.0", "gen-00007-0", "near duplicate (of gen-00001-0)",
                   "labels kept", "mean_kept=0.42", "email=2",
                   # the new sections: metrics, latency, cost, confusion, per field, constrained, training, costs
                   "macro_f1", "75 / 142", "1,180 / 3", "0.0042", "local", "base-fewshot", "student-constrained",
                   "confusion · gold", "(none)", "vendor", "constrained decoding: free vs constrained", "+0.09",
                   "student error rate by topic · gold (the 15 highest of 18)", "student error rate by label · gold",
                   "best step", "20", "stopped early", "yes", "eval loss did not improve for 2 evals", "0.0002",
                   "bf16", "lora", "calls by", "40", "35.5", "410.2", "money total", "0.42", "virtual environments"]:
        assert needle in text, needle
    # Only the first 50 failures are listed.
    assert "gold-050" not in text and "first 50 of 60" in text
    # Sections come in the documented order.
    heads = [h for h in ("Results", "Per label", "Per field", "Errors", "Training", "Curation", "Stages", "Costs",
                         "Failures", "Export", "Teacher calls", "Versions")]
    pos = [html.index(f"<h2>{h}</h2>") for h in heads]
    assert pos == sorted(pos)
    # The bar chart is on a 0..1 axis for an accuracy metric, with a legend naming each model.
    bars = page.svg_text[0]
    assert "0.0" in bars and "1.0" in bars
    assert {"student", "base", "teacher", "gold", "eval"} <= set(bars)
    # A missing value is a dash, not "None".
    assert "None" not in text
    # Self-contained: nothing is fetched; the only URL is the SVG namespace.
    assert not re.search(r"\b(src|href)=|url\(|@import", html, re.I)
    assert html.count("http") == html.count('xmlns="http://www.w3.org/2000/svg"')


def test_results_table_has_every_system_and_column():
    html = render_html(full_report())
    rows = table_after(html, "<h3>gold</h3>")
    assert rows[0] == ["system", "accuracy [95% CI]", "macro_f1", "n", "items/s", "latency ms p50 / p95",
                       "tokens in / out", "size MB", "cost per 1k items", "CPU s per 1k items"]
    assert [r[0] for r in rows[1:]] == ["student", "student-constrained", "base", "base-fewshot", "base-constrained",
                                        "teacher"]
    student, teacher = rows[1], rows[-1]
    assert student[1:3] == ["0.71 [0.58, 0.82]", "0.67"] and student[5:9] == ["75 / 142", "212 / 3", "538.0", "local"]
    assert teacher[5] == "820 / 1,558" and teacher[7:] == ["—", "0.0042", "—"]
    assert 'title="95% CI 0.53 to 0.79"' in html  # a secondary metric's CI is on hover
    # Columns no system has a value for are left out rather than filled with dashes.
    old = render_html({"run_id": "r", "task": {"metric": "accuracy"},
                       "results": {"gold": {"student": row(0.5, 0.4, 0.6)}}})
    assert table_after(old, "<h3>gold</h3>")[0] == ["system", "accuracy [95% CI]", "n", "items/s", "size MB"]


def test_bar_chart_holds_six_systems_and_wraps_a_long_legend():
    page = parse(render_html(full_report()))
    tags = svg_tags(page, "accuracy per set")
    bars = [a for t, a in tags if t == "rect" and "rx" not in a]
    assert len(bars) == 6 + 3  # gold has six systems, eval three: no empty slots
    assert len({a["fill"] for a in bars[:6]}) == 6
    assert {"student", "student-constrained", "base", "base-fewshot", "base-constrained", "teacher"} <= set(
        svg_texts(page, "accuracy per set"))
    many = {f"a-system-with-a-rather-long-name-{i}": row(0.1 * i, 0.1 * i - 0.05, 0.1 * i + 0.05) for i in range(1, 9)}
    page = parse(render_html({"run_id": "r", "results": {"gold": many}}))
    tags = svg_tags(page, "metric per set")
    width = float(tags[0][1]["viewbox"].split()[2])
    keys = [a for t, a in tags if t == "rect" and "rx" in a]
    assert len({a["y"] for a in keys}) > 1, "the legend should wrap onto a second row"
    assert all(float(a["x"]) + 18 + 7 * len(next(iter(many))) <= width for a in keys)
    plot_top = min(float(a["y"]) for t, a in tags if t == "rect" and "rx" not in a)
    assert plot_top > max(float(a["y"]) for a in keys) + 12, "bars overlap the legend"


def test_confusion_matrix_is_a_row_normalised_heat_map():
    html = render_html(full_report())
    tables = re.findall(r'<table class="cm">.*?</table>', html)
    assert len(tables) == 2  # student and base; the teacher's is left out
    rows = [re.findall(r'<t[dh](?: class="([^"]*)")?>(.*?)</t[dh]>', tr)
            for tr in re.findall(r"<tr>(.*?)</tr>", tables[0])]
    assert [c for _, c in rows[0]][-2:] == ["(none)", "n"]  # columns are predicted labels, then the row total
    # sqlite: 9 right, 2 as node, 1 unparsed, of 12; the shade is the row share, the diagonal is outlined.
    assert rows[1] == [("rl", "sqlite"), ("q8 hi d", "9"), ("q2", "2"), ("", "0"), ("", "0"), ("q1", "1"), ("t", "12")]
    assert sum(" d" in f" {k}" for r in rows for k, _ in r) == 4


def test_topic_chart_shows_the_worst_topics_first():
    page = parse(render_html(full_report()))
    texts = svg_texts(page, "student error rate per topic")
    values = [float(t.split(" · ")[0]) for t in texts if " · " in t]
    assert len(values) == 15 and values == sorted(values, reverse=True)
    names = [t for t in texts if " · " not in t and not re.fullmatch(r"[\d.]+|error rate", t)]
    assert len(names) == 15 and names[0].startswith("transactions and locking") and names[0].endswith("…")
    assert TOPICS[6] in " ".join(page.text)  # the full name is in the bar's tooltip
    assert not {"installing", "packaging", "pragmas"} & set(names)  # the three with no errors fall below the cut


def test_best_step_is_marked_on_the_loss_chart():
    page = parse(render_html(full_report()))
    tags = svg_tags(page, "loss against training step")
    dashed = [a for t, a in tags if t == "line" and "stroke-dasharray" in a]
    evals = [a for t, a in tags if t == "circle"]
    assert len(dashed) == 1 and dashed[0]["x1"] == evals[1]["cx"]  # at the step-20 eval point
    assert "best step 20" in svg_texts(page, "loss against training step")
    for best in (None, 999, "x"):
        html = render_html({"run_id": "r", "training": {"loss": [[1, 2.0], [10, 1.0]], "best_step": best}})
        assert "stroke-dasharray" not in html and not any("best step" in x for x in parse(html).svg_text[0])


def test_failures_have_a_topic_and_a_column_per_system():
    rep = full_report()
    rep["failures"][0]["base-fewshot"] = "sqlite"
    rows = table_after(render_html(rep), "<h2>Failures</h2>")
    assert rows[0] == ["item", "topic", "input", "expected", "student", "base", "base-fewshot", "teacher", "source"]
    first, second = (dict(zip(rows[0], r)) for r in rows[1:3])
    assert first["topic"] == "installing" and first["base-fewshot"] == "sqlite" and second["base-fewshot"] == "—"


def test_hostile_strings_are_escaped():
    rep = full_report()
    rep["task"]["name"] = HOSTILE
    rep["summary"] = HOSTILE
    rep["failures"][0].update(input=HOSTILE, student=HOSTILE, source=HOSTILE)
    rep["rejections"][HOSTILE] = 3
    rep["per_label"]["gold"]["student"][HOSTILE] = 0.5
    rep["stages"][0]["counts"][HOSTILE] = HOSTILE
    rep["results"][HOSTILE] = {HOSTILE: row(0.5, 0.4, 0.6)}
    rep["versions"][HOSTILE] = HOSTILE
    gold, ev = rep["results"]["gold"], rep["evaluation"]
    gold["student"]["metrics"][HOSTILE] = 0.5
    gold["teacher"].update(latency_ms={"p50": HOSTILE}, tokens={"prompt": HOSTILE}, cost_per_1k=HOSTILE)
    ev["confusion"]["gold"]["student"]["labels"][0] = HOSTILE
    ev["confusion"]["gold"]["student"]["predicted_labels"][1] = HOSTILE
    ev["per_class"]["gold"]["student"][HOSTILE] = {"f1": 0.5, "support": HOSTILE}
    ev["per_field"]["gold"][HOSTILE] = {HOSTILE: {"f1": HOSTILE}}
    ev["error_rates"]["topic"]["gold"][6]["topic"] = HOSTILE
    ev["error_rates"]["label"]["gold"][0]["label"] = HOSTILE
    ev["constrained"]["gold"][HOSTILE] = {"free": 0.1, "constrained": 0.2, "metric": HOSTILE}
    rep["training"].update(stop_reason=HOSTILE, device=HOSTILE, mode=HOSTILE, precision=HOSTILE, lr=HOSTILE)
    rep["costs"].update(judge={"calls": HOSTILE, "money": HOSTILE}, money_total=HOSTILE)
    rep["failures"][0]["topic"] = HOSTILE
    html = render_html(rep)
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    page = parse(html)
    assert not any(t in ("script", "img") for t, _ in page.tags)
    assert not any(k.startswith("on") for _, a in page.tags for k in a)
    # The text survives escaping: a reader still sees what the model said.
    assert any(HOSTILE in t for t in page.text)


def test_minimal_report_renders():
    html = render_html({"run_id": "r"})
    page = parse(html)
    assert "r" in page.text
    assert "<svg" not in html
    assert "No stage has finished yet." in html


@pytest.mark.parametrize("key", ["task", "summary", "stages", "funnel", "rejections", "results", "per_label",
                                 "training", "failures", "export", "teacher_calls", "versions", "generated_at",
                                 "evaluation", "costs"])
def test_report_missing_one_key_renders(key):
    rep = full_report()
    del rep[key]
    parse(render_html(rep))


PARTIAL = {
    "empty evaluation": {"evaluation": {}},
    "evaluation parts None": {"evaluation": {"confusion": {"gold": None}, "per_class": {"gold": {"student": None}},
                                             "per_field": [], "error_rates": {"topic": {"gold": None}, "label": None},
                                             "constrained": {"gold": {"student": {}}}}},
    "evaluation half filled": {"evaluation": {
        "confusion": {"gold": {"student": {"labels": ["a", "b"], "matrix": [[1], "x"], "predicted_labels": None}}},
        "per_class": {"gold": {"student": {"a": {"f1": math.nan}, "b": 0.5}}},
        "error_rates": {"topic": {"gold": [{"topic": "t"}, {"topic": "u", "error_rate": math.nan}, "junk"]},
                        "label": {"gold": [{"label": "a"}, None]}},
        "constrained": {"gold": {"student": {"free": 0.5}}}}},
    "costs None": {"costs": None},
    "enough half filled": {"enough": {"short": None, "thin": ["label 'a': 3", None], "losses": [None, {"count": None}],
                                      "floors": None}},
    "costs half filled": {"costs": {"teacher": {"calls": 3}, "judge": None, "money_total": math.inf}},
    "training half filled": {"training": {"best_step": 5, "stopped_early": None, "lr": "auto", "loss": [[1, 2.0]]}},
    "results half filled": {"results": {"gold": {"student": {
        "metric": 0.5, "metrics": None, "cis": {"macro_f1": [None, 1]}, "latency_ms": {"p50": 3}, "tokens": None,
        "cost_per_1k": math.nan}}}},
}


@pytest.mark.parametrize("case", PARTIAL)
def test_new_sections_render_when_partly_filled(case):
    html = render_html(full_report() | PARTIAL[case])
    page = parse(html)
    text = " ".join(page.text).replace("(none)", "")
    assert not re.search(r"\b(nan|inf|None)\b", text, re.I)
    assert not any(re.search(r"nan|inf", a, re.I) for a in page.attrs)


def test_floors_say_what_is_short_thin_and_why_escaped():
    rep = full_report() | {"enough": {
        "short": ["label '<b>x</b>' has 0 generated training example(s) (floor 5)"], "thin": ["label 'y': 7"],
        "losses": [{"reason": "near duplicate", "count": 41, "todo": "raise teacher.temperature"}],
        "floors": {"train.min_per_label": 5, "train.min_eval": 1}}}
    html = render_html(rep)
    assert "Below a floor" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "Near a floor (under five times it): label &#x27;y&#x27;: 7" in html or "label 'y': 7" in html
    assert "41 near duplicate (raise teacher.temperature)" in html and "train.min_per_label 5" in html
    fine = render_html(full_report() | {"enough": {"short": [], "thin": [], "losses": [], "floors": {}}})
    assert "Below a floor" not in fine and "Near a floor" not in fine


def test_empty_new_sections_are_left_out():
    rep = full_report() | {"evaluation": {"per_class": {}, "error_rates": {"topic": {"gold": []}}}, "costs": {}}
    html = render_html(rep)
    for h in ("Per field", "Errors", "Costs", "constrained decoding"):
        assert h not in html
    assert "<h2>Per label</h2>" in html  # falls back to the older per_label key


def test_nan_none_and_degenerate_series():
    rep = full_report()
    rep["results"]["gold"]["base"] = row(math.nan, None, math.nan, n=None, ips=math.inf)
    rep["results"]["eval"] = {"student": {"metric": None}}
    rep["training"] = {"loss": [], "eval_loss": [[5, math.nan]], "steps": None}
    html = render_html(rep)
    page = parse(html)
    text = " ".join(page.text)
    assert not re.search(r"\b(nan|inf|None)\b", text.replace("(none)", ""), re.I)
    assert not any(re.search(r"nan|inf", a, re.I) for a in page.attrs), "NaN leaked into SVG coordinates"
    assert "No loss recorded yet." in text
    head, *rows = table_after(html, "<h3>gold</h3>")
    base = dict(zip(head, next(r for r in rows if r[0] == "base")))
    assert base["accuracy [95% CI]"] == base["n"] == base["items/s"] == base["latency ms p50 / p95"] == "—"
    assert base["size MB"] == "538.0"
    # A single loss point is still drawn, as a marker.
    one = render_html({"run_id": "r", "training": {"loss": [[1, 2.5]]}})
    assert "<circle" in one and "No loss recorded yet." not in one
    steps = [t for t in parse(one).svg_text[0] if re.fullmatch(r"[\d.]+", t)]
    assert "1" in steps and not any("." in t for t in steps[-3:]), steps  # x ticks are whole steps
    assert "trainable params" not in one  # facts that were not recorded are left out


def test_metric_outside_unit_range_scales_axis():
    rep = {"run_id": "r", "task": {"metric": "rougeL x100"},
           "results": {"gold": {"student": row(35.5, 30.0, 48.0), "base": row(12.0, -3.0, 20.0)}}}
    html = render_html(rep)
    page = parse(html)
    ticks = [float(t.replace(",", "")) for t in page.svg_text[0] if re.fullmatch(r"-?[\d,]+(\.\d+)?", t)]
    assert max(ticks) >= 48.0 and min(ticks) <= -3.0
    # Every bar lies inside the chart area.
    svg = next(a for t, a in page.tags if t == "svg")
    _, _, w, h = map(float, svg["viewbox"].split())
    for t, a in page.tags:
        if t == "rect" and "rx" not in a:
            y, height = float(a["y"]), float(a["height"])
            assert 0 <= y and y + height <= h and height > 0


def test_chromium_renders_page(tmp_path, browser):
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(full_report() | {"loop": loop_report()}), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    dom = page.content()
    assert errors == [], errors[:5]
    assert "Route questions to manuals" in dom
    assert "0.71 [0.58, 0.82]" in dom
    assert "<h2>Rounds</h2>" in dom and "student accuracy per round" in dom
    assert "+0.081 [+0.021, +0.140] vs round 0" in dom
    assert page.evaluate("document.querySelectorAll('svg').length") >= 3  # the charts were laid out as SVG
    png = tmp_path / "report.png"  # pytest keeps it under its basetemp for a look
    page.screenshot(path=str(png), full_page=True)
    page.close()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


ARMS = ["sqlite / transactions", "node / streams", "python / packaging", "all topics / postgres"]


def loop_round(k: int, student: float, gain=None) -> dict:
    """One round of loop.json as loop.py writes it."""
    def res(m, lo, hi, n):
        return {"metric": m, "ci_low": lo, "ci_high": hi, "n": n}
    arms = [{"arm": [i, ARMS[i].split(" / ")[1]], "name": ARMS[i], "jobs": 10 + 5 * k * (i == 0),
             "seeded_jobs": 3 * k if i == 0 else 0, "examples": 9 + 5 * k * (i == 0) - i, "kept": 8}
            for i in range(3 if k < 2 else 4)]
    why = [f"{ARMS[i]} gets {14 - 4 * i} of 40 jobs (dev {3 - i}/5 wrong, posterior error 0.{6 - i}0)"
           for i in range(3)] if k else []
    return {"round": k, "metric": "accuracy", "examples": 40, "teacher_tokens": 21000 + k, "cost": 0.012,
            "seeded_examples": 3 * k, "train_size": 120 + 30 * k, "new_train": 30, "dev_size": 12, "steps": 30 + k,
            "continued": k == 2, "seconds": 95.5 + k,
            "results": {"eval": {"student": res(student, student - 0.1, student + 0.08, 30),
                                 "base": res(0.3, 0.15, 0.48, 30), "teacher": res(0.9, 0.74, 0.97, 30)},
                        "gold": {"student": res(student - 0.05, student - 0.17, student + 0.06, 54),
                                 "teacher": res(0.93, 0.83, 0.97, 54)},
                        "dev": {"student": res(0.5, 0.2, 0.8, 12)}},
            "arms": arms,
            "allocation": {"policy": "thompson" if k else "uniform", "why": why,
                           "dev": {"items": 12, "errors": 6 - k, "error_rate": (6 - k) / 12} if k else None,
                           "uncertainty": {"probed": 20, "mean": 0.0123} if k else None,
                           "new_arms": [ARMS[3]] if k == 2 else []},
            "gain": gain,
            "analysis_arms": [{"name": ARMS[i], "dev_items": 5, "dev_errors": 3 - i, "error_mean": 0.6 - 0.1 * i,
                               "uncertainty": 0.0123, "keep_rate": 0.8, "weight": 0.5 - 0.1 * i,
                               "jobs_total": 14 - 4 * i, "new": i == 3} for i in range(4 if k == 2 else 3)]
            if k else None}


def loop_report() -> dict:
    gain1 = {"vs_round": 0, "diff": 0.081, "low": 0.021, "high": 0.14, "significant": True, "confidence": 0.9}
    gain2 = {"vs_round": 1, "diff": 0.012, "low": -0.04, "high": 0.06, "significant": False, "confidence": 0.9}
    rounds = [loop_round(0, 0.62), loop_round(1, 0.71, gain1), loop_round(2, 0.73, gain2)]
    return {"policy": "thompson", "rounds_max": 4, "train": "retrain", "failure_share": 0.3, "stop_set": "eval",
            "rounds": rounds,
            "stop": {"rule": "plateau",
                     "reason": "no significant gain in the last 1 rounds (best: +0.012 vs round 1)"},
            "kept": {"round": 2, "why": "the last round; no earlier round is significantly better"},
            "budget": {"examples": 600, "teacher_tokens": 300000, "money": None, "wall_time_minutes": 60},
            "spent": {"examples": 120, "teacher_tokens": 63003, "cost": 0.036, "seconds": 289.5},
            "remaining_failures": [{"set": "eval", "id": f"gen-{i:05d}-0", "input": f"still wrong {i}",
                                    "expected": "sqlite", "student": "node", "topic": "transactions"}
                                   for i in range(25)]}


def test_rounds_section_shows_every_round():
    html = render_html(full_report() | {"loop": loop_report()})
    page = parse(html)
    text = " ".join(page.text)
    heads = [h for h in ("Results", "Rounds", "Per label")]
    pos = [html.index(f"<h2>{h}</h2>") for h in heads]
    assert pos == sorted(pos), "Rounds comes right after Results"
    for needle in ["Policy thompson", "3 of 4 rounds done", "stopped by the plateau rule",
                   "no significant gain in the last 1 rounds", "Round 2 is exported",
                   "no earlier round is significantly better", "120 examples (budget 600)", "63,003 teacher tokens",
                   "289.5 seconds", "new arms: all topics / postgres", "dev errors 5 of 12",
                   "mean uncertainty 0.0123 over 20 probed", "sqlite / transactions gets 14 of 40 jobs"]:
        assert needle in text, needle
    rows = table_after(html, "<h2>Rounds</h2>")
    assert rows[0][:6] == ["round", "examples", "train size", "steps", "eval [95% CI]", "gold [95% CI]"]
    r0, r1, r2 = (dict(zip(rows[0], r)) for r in rows[1:])
    assert (r0["eval [95% CI]"], r1["eval [95% CI]"], r2["eval [95% CI]"]) == (
        "0.62 [0.52, 0.70]", "0.71 [0.61, 0.79]", "0.73 [0.63, 0.81]")
    assert r2["gold [95% CI]"] == "0.68 [0.56, 0.79]"
    assert r0["gain vs best earlier"] == "—"
    assert r1["gain vs best earlier"] == "+0.081 [+0.021, +0.140] vs round 0 significant"
    assert r2["gain vs best earlier"].endswith("not significant")
    assert r1["examples"] == "40 (3 seeded)" and r2["steps"] == "32 continued" and r0["steps"] == "30"
    assert r2["round"] == "2 (exported)" and r0["round"] == "0" and r1["seconds"] == "96.5"
    # The chart: one point per round and set, the teacher as a dashed line per set, the metric on the y axis.
    tags = svg_tags(page, "student accuracy per round")
    assert len([a for t, a in tags if t == "circle"]) == 6
    assert len([a for t, a in tags if t == "line" and a.get("stroke-dasharray") and "x2" in a
                and float(a["x2"]) - float(a["x1"]) > 100]) == 2
    labels = svg_texts(page, "student accuracy per round")
    assert {"accuracy", "0", "1", "2 (exported)", "round", "student · eval", "student · gold", "teacher eval 0.90",
            "teacher gold 0.93"} <= set(labels)
    assert not any(re.search(r"nan|inf", a, re.I) for a in page.attrs)
    # The heat map: a row per arm (most examples first), a column per round, an arm new in round 2 only there.
    heat = table_after(html, "examples per arm and round")
    assert heat[0] == ["arm ↓ round →", "0", "1", "2", "total"]
    assert [r[0] for r in heat[1:]] == ARMS
    assert heat[1][1:] == ["9", "14 3 seeded", "19 6 seeded", "42"] and heat[4][1:3] == ["—", "—"]
    cm = re.search(r'<table class="cm">.*?</table>', html[html.index("examples per arm"):]).group(0)
    assert 'class="q10 hi">19<br><small>6 seeded' in cm  # the largest cell has the darkest shade
    # The last round's arms as the analyse stage weighed them, highest weight first.
    arms = table_after(html, "arms weighed for round 2")
    assert arms[0][:8] == ["arm", "dev items", "dev errors", "error mean", "uncertainty", "keep rate", "weight",
                           "jobs"]
    assert [r[0] for r in arms[1:]] == ARMS and arms[4][-1] == "new" and arms[1][6] == "0.50"
    # The failures left: the first 20 of 25.
    fails = table_after(html, "failures left after the last round")
    assert "the first 20 of 25" in text and len(fails) == 21 and fails[1][1:4] == ["still wrong 0", "sqlite", "node"]


def test_rounds_section_escapes_hostile_strings():
    lp = loop_report()
    lp["policy"] = lp["stop"]["reason"] = lp["kept"]["why"] = HOSTILE
    r = lp["rounds"][2]
    r["arms"][0]["name"] = HOSTILE
    r["allocation"]["why"][0] = HOSTILE
    r["allocation"]["new_arms"] = [HOSTILE]
    r["analysis_arms"][0]["name"] = HOSTILE
    for x in lp["rounds"]:
        x["metric"] = HOSTILE  # the y axis label and the chart's title
    lp["remaining_failures"][0].update(input=HOSTILE, expected=HOSTILE, student=HOSTILE, topic=HOSTILE, id=HOSTILE)
    html = render_html({"run_id": "r", "loop": lp})
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = parse(html)
    assert not any(t in ("script", "img") for t, _ in page.tags)
    assert not any(k.startswith("on") for _, a in page.tags for k in a)
    # The text survives escaping: policy, stop reason, why kept, new arm, why, analysis arm, five failure cells.
    assert sum(t.count(HOSTILE) for t in page.text) >= 11
    assert HOSTILE in [r[0] for r in table_after(html, "examples per arm and round")]
    assert HOSTILE in svg_texts(page, "student " + HOSTILE)


PARTIAL_LOOPS = {
    "one bare round": {"rounds": [{"round": 0}]},
    "None everywhere": {"policy": None, "rounds_max": None, "stop": None, "kept": None, "budget": None, "spent": None,
                        "remaining_failures": None,
                        "rounds": [{"round": None, "results": None, "arms": None, "allocation": None, "gain": None,
                                    "analysis_arms": None, "metric": None},
                                   {"round": 1, "results": {"eval": None, "gold": {"student": None}},
                                    "arms": [None, {"arm": None}, {"arm": [None, None], "examples": None}],
                                    "allocation": {"why": None, "dev": {}, "uncertainty": {"mean": None},
                                                   "new_arms": [None]},
                                    "gain": {"diff": None}, "analysis_arms": [None, {"name": None}]}]},
    "junk types": {"rounds": [None, "x", {"round": "one", "results": {"eval": {"student": {"metric": math.nan}}},
                                          "gain": {"diff": math.inf, "significant": "maybe"}, "seconds": "slow",
                                          "arms": "many", "allocation": {"why": "because", "new_arms": "all"},
                                          "analysis_arms": "some"},
                              {"round": 2.0, "results": {"eval": {"student": {"metric": 0.5, "ci_low": None}}},
                               "arms": [{"name": "a", "examples": math.nan, "seeded_jobs": "x"}],
                               "gain": {"diff": 0.1, "low": math.nan, "high": 0.2, "confidence": None}}],
                   "stop": {"rule": None}, "kept": {"round": "last"}, "spent": {"examples": math.inf},
                   "remaining_failures": [None, {"input": None}]},
    "rounds not a list": {"rounds": {"0": {}}},
}


@pytest.mark.parametrize("case", PARTIAL_LOOPS)
def test_rounds_section_renders_when_partly_filled(case):
    html = render_html(full_report() | {"loop": PARTIAL_LOOPS[case]})
    page = parse(html)
    text = " ".join(page.text).replace("(none)", "")
    assert not re.search(r"\b(nan|inf|None)\b", text, re.I)
    assert not any(re.search(r"nan|inf", a, re.I) for a in page.attrs)
    assert ("<h2>Rounds</h2>" in html) == (case != "rounds not a list")


def test_rounds_section_is_absent_without_a_loop():
    for rep in (full_report(), full_report() | {"loop": None}, full_report() | {"loop": {"rounds": []}}):
        html = render_html(rep)
        assert "<h2>Rounds</h2>" not in html and "per round" not in html


def test_report_reads_loop_json_and_each_rounds_analysis(tmp_path):
    import json
    from types import SimpleNamespace

    from taskling.report.build import loop_rounds

    ctx = SimpleNamespace(run_dir=tmp_path, stage_dir=lambda s, k=None: tmp_path / f"round-{k}" / s)
    assert loop_rounds(ctx) is None  # no loop.json: a single-pass run
    lp = loop_report()
    for r in lp["rounds"]:
        del r["analysis_arms"]
    (tmp_path / "loop.json").write_text(json.dumps(lp | {"rounds": lp["rounds"][:1]}))
    assert loop_rounds(ctx) is None  # one round: the rest of the report says it all
    (tmp_path / "loop.json").write_text(json.dumps(lp))
    (tmp_path / "round-1" / "analyse").mkdir(parents=True)
    (tmp_path / "round-1" / "analyse" / "analysis.json").write_text(json.dumps(
        {"round": 1, "arms": [{"name": "node / streams", "weight": 0.4, "jobs_total": 12, "asked": 9, "new": False},
                              "junk"]}))
    (tmp_path / "round-2" / "analyse").mkdir(parents=True)
    (tmp_path / "round-2" / "analyse" / "analysis.json").write_text('{"round": 2, "arms": [')  # half written
    got = loop_rounds(ctx)
    assert [r["round"] for r in got["rounds"]] == [0, 1, 2] and got["stop"]["rule"] == "plateau"
    arm = got["rounds"][1]["analysis_arms"][0]
    assert len(got["rounds"][1]["analysis_arms"]) == 1 and "asked" not in arm
    assert arm["name"] == "node / streams" and arm["weight"] == 0.4 and arm["dev_items"] is None
    assert "analysis_arms" not in got["rounds"][0] and "analysis_arms" not in got["rounds"][2]
    (tmp_path / "loop.json").write_text("{")
    assert loop_rounds(ctx) is None


def test_cluster_section_shows_each_node_and_what_was_rescheduled():
    from taskling.report.html import render_html

    pool = {"stage": "generate: teacher", "shards": 31, "rescheduled_shards": 1, "lost_items": 4,
            "nodes": [{"node": "a1b2c3", "address": "10.0.0.2", "workers": 1, "shards": 20, "items": 80, "busy_s": 41.5,
                       "lost_shards": 0, "lost_items": 0, "left": False},
                      {"node": "<script>x</script>", "address": "10.0.0.3", "workers": 1, "shards": 11, "items": 44,
                       "busy_s": 22.0, "lost_shards": 1, "lost_items": 4, "left": True}],
            "rescheduled": [{"shard": "r000040", "items": 4, "from_node": "d4e5", "attempt": 1,
                             "why": "ActorDiedError: <b>node died</b>"}]}
    rep = {"task": {"name": "t"}, "cluster": {"pools": [pool], "training": {
        "workers": 2, "backend": "gloo", "restarts": 1, "resumed_at_steps": [8], "storage": "/shared/ck",
        "wall_seconds": 61.2}}}
    html = render_html(rep)
    sec = html[html.index("<h2>Cluster</h2>"):]
    assert "31 shards, 1 rescheduled, 4 items lost" in sec
    assert "10.0.0.2" in sec and "10.0.0.3" in sec and ">left<" in sec
    assert "r000040" in sec and "gloo" in sec and ">8<" in sec
    assert "<script>x" not in html and "&lt;script&gt;x" in html and "<b>node died" not in html
    assert "<h2>Cluster</h2>" not in render_html({"task": {"name": "t"}})
