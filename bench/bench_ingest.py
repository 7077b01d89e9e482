"""Benchmark ingestion on real documents, side by side with the baselines.

    .venv/bin/python bench/bench_ingest.py [--pages 1000] [--scale 10000]

1. Real corpus: 1,000 HTML pages of Debian's python3.11-doc and sqlite3-doc,
   ingested from scratch by the real CLI (`taskling ingest`), embeddings and
   topics included: wall time, files/s and MB/s per format, peak RSS.
2. Unchanged re-ingest of the same corpus by the CLI (wall time).
3. Embeddings: our Embedder against plain sentence-transformers
   `SentenceTransformer.encode(batch_size=64)` on the same chunks (chunks/s).
4. Mixed formats: DOCX, PPTX, XLSX, CSV, PDF, EML, JSON, Python and a ZIP of
   them, generated here; files/s and MB/s per format.
5. Scale: peak RSS of `taskling ingest` at 1,000 and 10,000 small documents
   (flat in corpus size is the target).

Writes bench/results/ingest.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
TASKLING = str(Path(sys.executable).parent / "taskling")
CORPORA = [Path("/usr/share/doc/python3.11/html"), Path("/usr/share/doc/sqlite3")]
TASK = """task:
  name: bench
  description: Benchmark ingestion.
  type: classify
  labels: [a, b]
sources: [docs]
"""


def run_measured(cmd: list[str], cwd: Path) -> dict:
    """Run a command; wall time and peak RSS of it and its children (sampled every 50 ms)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{err[-3000:]}")
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "json": json.loads(out) if out.strip().startswith("{") else None}


def workspace(base: Path, name: str) -> Path:
    ws = base / name
    (ws / "docs").mkdir(parents=True)
    (ws / "taskling.yaml").write_text(TASK)
    return ws


MAX_PAGE_KB = 80  # leaves out the few giant index/reference pages, so 1,000 pages are ~18 MB as the target says


def real_pages(n: int) -> list[Path]:
    pages = []
    for root in CORPORA:
        if root.exists():
            pages += sorted(p for p in root.rglob("*.html") if p.is_file() and "_static" not in p.parts
                            and p.stat().st_size <= MAX_PAGE_KB * 1024)
    if len(pages) < n:
        raise SystemExit(f"only {len(pages)} HTML pages under {', '.join(map(str, CORPORA))}; "
                         "install python3.11-doc and sqlite3-doc (make setup does, as root)")
    return pages[:n]


def mixed_files(dest: Path) -> None:
    """A few of every format, generated with the same libraries users' files come from."""
    import docx
    import openpyxl
    from pptx import Presentation

    text = (ROOT / "examples" / "devdocs-router" / "docs" / "python-datetime.txt").read_text()
    paras = [p for p in text.split("\n\n") if len(p.split()) > 20][:400]
    for i in range(20):
        d = docx.Document()
        for k in range(12):
            d.add_heading(f"Section {k}", level=2)
            d.add_paragraph(paras[(i * 12 + k) % len(paras)])
        d.save(dest / f"report{i:02d}.docx")
        pr = Presentation()
        for k in range(8):
            s = pr.slides.add_slide(pr.slide_layouts[1])
            s.shapes.title.text = f"Slide {k}"
            s.placeholders[1].text = paras[(i * 8 + k) % len(paras)][:400]
        pr.save(dest / f"deck{i:02d}.pptx")
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(["id", "name", "amount", "note"])
        for r in range(300):
            ws.append([r, f"item {r}", r * 1.5, paras[r % len(paras)][:80]])
        wb.save(dest / f"sheet{i:02d}.xlsx")
        (dest / f"table{i:02d}.csv").write_text("id,name,note\n" + "".join(
            f"{r},item {r},\"{paras[r % len(paras)][:60]}\"\n" for r in range(300)))
        (dest / f"mail{i:02d}.eml").write_text(
            f"From: a@example.org\nTo: b@example.org\nSubject: note {i}\nMessage-ID: <m{i}@example.org>\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\n\n{paras[i % len(paras)]}\n")
        (dest / f"data{i:02d}.json").write_text(json.dumps(
            [{"id": r, "text": paras[(i + r) % len(paras)][:200]} for r in range(50)]))
        shutil.copy(ROOT / "src" / "taskling" / "pile.py", dest / f"code{i:02d}.py")
    pdf = sorted(Path("/usr/share/doc").rglob("*.pdf"))[:10]
    for p in pdf:
        shutil.copy(p, dest / p.name)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(dest.iterdir())[:30]:
            z.write(p, f"inner/{p.name}")
    (dest / "bundle.zip").write_bytes(buf.getvalue())


def embedding_side_by_side(pile_db: Path, n: int = 2000) -> dict:
    import sqlite3

    import torch
    from sentence_transformers import SentenceTransformer

    from taskling.data.embed import Embedder

    texts = [r[0] for r in sqlite3.connect(pile_db).execute(
        "SELECT text FROM chunks ORDER BY id LIMIT ?", (n,))]
    torch.set_num_threads(os.cpu_count() or 1)
    ours = Embedder(max_tokens=112)  # as ingest uses it (ingest.embed_max_tokens)
    ours.encode(texts[:64])  # warm-up: model load is not throughput
    t0 = time.perf_counter()
    ours.encode(texts)
    t_ours = time.perf_counter() - t0
    plain = SentenceTransformer(str(ours.path), device="cpu")
    plain.max_seq_length = 112  # same window: the comparison is of the code, not of the truncation
    plain.encode(texts[:64], batch_size=64)
    t0 = time.perf_counter()
    plain.encode(texts, batch_size=64)
    t_plain = time.perf_counter() - t0
    return {"chunks": len(texts), "taskling_chunks_per_s": round(len(texts) / t_ours, 1),
            "sentence_transformers_chunks_per_s": round(len(texts) / t_plain, 1),
            "ratio": round(t_plain / t_ours, 3)}


def scale_run(base: Path, n_docs: int) -> dict:
    ws = workspace(base, f"scale-{n_docs}")
    words = (ROOT / "examples" / "devdocs-router" / "docs" / "python-sqlite3.txt").read_text().split()
    for i in range(n_docs):
        start = (i * 97) % (len(words) - 200)
        (ws / "docs" / f"doc{i:05d}.md").write_text(f"# Document {i}\n\n" + " ".join(words[start:start + 150]))
    r = run_measured([TASKLING, "ingest", "--json"], ws)
    return {"documents": n_docs, "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "chunks": r["json"]["counts"]["chunks"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--scale", type=int, default=10000)
    ap.add_argument("--only-html", action="store_true", help="only the 1,000-page corpus and its re-ingest")
    args = ap.parse_args()
    result: dict = {"benchmark": "ingest", "command": "python bench/bench_ingest.py",
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="taskling-bench-ingest-") as tmp:
        base = Path(tmp)
        ws = workspace(base, "html")
        pages = real_pages(args.pages)
        for i, p in enumerate(pages):
            shutil.copy(p, ws / "docs" / f"{i:04d}-{p.parent.name}-{p.name}")
        mb = sum(p.stat().st_size for p in pages) / 2**20
        first = run_measured([TASKLING, "ingest", "--json"], ws)
        m = first["json"]
        result["html_corpus"] = {
            "pages": len(pages), "mb": round(mb, 1), "source": ", ".join(map(str, CORPORA)),
            "seconds": first["seconds"], "peak_rss_mb": first["peak_rss_mb"],
            "files_per_s": round(len(pages) / first["seconds"], 1), "mb_per_s": round(mb / first["seconds"], 2),
            "chunks": m["counts"]["chunks"], "topics": m["counts"]["topics"],
            "duplicate_chunks": m["counts"]["duplicate_chunks"], "skipped": m["counts"]["skipped"],
            "timings": m["timings"], "per_format": m["per_format"]}
        again = run_measured([TASKLING, "ingest", "--json"], ws)
        result["unchanged_reingest"] = {"seconds": again["seconds"], "skipped_stage": again["json"]["skipped"]}
        if args.only_html:
            print(json.dumps(result, indent=2, default=str)[:3000])
            return
        result["embeddings"] = embedding_side_by_side(ws / ".taskling" / "pile.db")

        mixed = workspace(base, "mixed")
        mixed_files(mixed / "docs")
        mr = run_measured([TASKLING, "ingest", "--json"], mixed)
        result["mixed_formats"] = {"files": len(list((mixed / "docs").iterdir())), "seconds": mr["seconds"],
                                   "per_format": mr["json"]["per_format"], "skipped": mr["json"]["counts"]["skipped"],
                                   "contained": mr["json"]["counts"]["contained"]}
        result["scale"] = [scale_run(base, n) for n in (args.scale // 10, args.scale)]
    dest = ROOT / "bench" / "results" / "ingest.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("html_corpus", "unchanged_reingest", "embeddings",
                                                                 "scale")}, indent=2, default=str)[:4000])
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
