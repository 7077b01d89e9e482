"""report_html.render_html: content, escaping, partial reports, chart scaling,
and a headless Chromium render of the page (skipped if Chromium is absent)."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from taskling.report_html import render_html

HOSTILE = '<script>alert(1)</script> and "><img src=x onerror=alert(1)>'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def row(metric, lo, hi, n=54, ips=12.5, mb=538.0):
    return {"metric": metric, "ci_low": lo, "ci_high": hi, "n": n, "items_per_s": ips, "size_mb": mb}


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
            "gold": {"student": row(0.71, 0.58, 0.82), "base": row(0.22, 0.12, 0.35, mb=513.0),
                     "teacher": row(0.93, 0.83, 0.97, ips=1.9, mb=None)},
            "eval": {"student": row(0.77, 0.6, 0.88, n=30), "base": row(0.3, 0.15, 0.48, n=30),
                     "teacher": row(0.9, 0.74, 0.97, n=30)},
        },
        "per_label": {"gold": {"student": {"sqlite": 0.8, "node": 0.5}, "base": {"sqlite": 0.25, "node": 0.125}}},
        "training": {"loss": [[i, 2.3 - 0.05 * i] for i in range(1, 31)],
                     "eval_loss": [[10, 1.9], [20, 1.7], [30, 1.6]],
                     "steps": 30, "tokens_per_s": 210.0, "seconds": 120.0, "trainable_params": 4000000},
        "failures": [{"set": "gold", "id": f"gold-{i:03d}", "input": f"question number {i}", "expected": "sqlite",
                      "student": "node", "base": "python", "teacher": "sqlite", "source": "docs/x.html"}
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
                   "labels kept", "mean_kept=0.42", "email=2"]:
        assert needle in text, needle
    # Only the first 50 failures are listed.
    assert "gold-050" not in text and "first 50 of 60" in text
    # Sections come in the documented order.
    heads = [h for h in ("Results", "Per label", "Training", "Curation", "Stages", "Failures", "Export",
                         "Teacher calls", "Versions")]
    pos = [html.index(f"<h2>{h}</h2>") for h in heads]
    assert pos == sorted(pos)
    # The bar chart is on a 0..1 axis for an accuracy metric, with a legend naming each model.
    bars = page.svg_text[0]
    assert "0.0" in bars and "1.0" in bars
    assert {"student", "base", "teacher", "gold", "eval"} <= set(bars)
    # A missing value is a dash, not "None".
    assert "None" not in text


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
                                 "training", "failures", "export", "teacher_calls", "versions", "generated_at"])
def test_report_missing_one_key_renders(key):
    rep = full_report()
    del rep[key]
    parse(render_html(rep))


def test_nan_none_and_degenerate_series():
    rep = full_report()
    rep["results"]["gold"]["base"] = row(math.nan, None, math.nan, n=None, ips=math.inf)
    rep["results"]["eval"] = {"student": {"metric": None}}
    rep["training"] = {"loss": [], "eval_loss": [[5, math.nan]], "steps": None}
    html = render_html(rep)
    page = parse(html)
    text = " ".join(page.text)
    assert not re.search(r"\b(nan|inf|None)\b", text, re.I)
    assert not any(re.search(r"nan|inf", a, re.I) for a in page.attrs), "NaN leaked into SVG coordinates"
    assert "No loss recorded yet." in text
    base_row = re.search(r"<tr><td><span[^>]*></span>base</td>(.*?)</tr>", html).group(1)
    assert base_row.count("—") == 3 and "538.0" in base_row  # metric, n, items/s
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


CHROMIUM = Path("/usr/bin/chromium")


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("Chromium not found at /usr/bin/chromium; the browser render check needs it")
    exe = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome-profile'}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=60)


def test_chromium_renders_page(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(full_report()), encoding="utf-8")
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Route questions to manuals" in dom.stdout
    assert "0.71 [0.58, 0.82]" in dom.stdout
    png = tmp_path / "report.png"
    shot = chromium([f"--screenshot={png}", "--window-size=1200,2400", page.as_uri()], tmp_path)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 20_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
