"""What converting every file in an isolated worker costs, and what the hostile corpus takes.

    nice -n 5 .venv/bin/python bench/isolation.py [--pages 1000] [--rounds 2] [--no-embed]

1. The 1,000-page ingest benchmark of bench/bench_ingest.py (real HTML pages of the Python and
   SQLite docs, the real CLI), with the conversion worker (ingest.isolate: true, the default) and
   without it (false), in one run, alternating, `--rounds` times each; wall time of the whole
   ingest (embeddings and topics included) and of its conversion step.
2. `taskling ingest` of the hostile corpus of tests/security (a 600 MB GNU long name in a 0.6 MB
   .tar.gz, a 1 MB page of unclosed tags, a PDF listing one page 20,000 times, a page tree of
   shared subtrees, sparse tar members, a form-XObject bomb, a zip bomb): peak RSS of the ingest
   process and its children, and what became of each file.

Writes bench/results/isolation.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "security"))

import bench_ingest  # noqa: E402  (its corpus, workspace and measured runs)
import hostile  # noqa: E402


def cost(pages: int, rounds: int, embed: bool) -> dict:
    runs: dict[str, list[dict]] = {"isolated": [], "in_process": []}
    with tempfile.TemporaryDirectory(prefix="taskling-isolation-") as tmp:
        src = bench_ingest.real_pages(pages)
        for k in range(rounds):
            for mode in (("isolated", "in_process") if k % 2 == 0 else ("in_process", "isolated")):
                ws = bench_ingest.workspace(Path(tmp), f"{mode}-{k}")
                for i, p in enumerate(src):
                    shutil.copy(p, ws / "docs" / f"{i:04d}-{p.parent.name}-{p.name}")
                flag = "true" if mode == "isolated" else "false"
                r = bench_ingest.run_measured([bench_ingest.TASKLING, "ingest", "--json", "--set",
                                               f"ingest.isolate={flag}", "--set", f"ingest.embed={str(embed).lower()}"],
                                              ws)
                runs[mode].append({"seconds": r["seconds"], "convert_seconds": r["json"]["timings"]["convert_seconds"],
                                   "peak_rss_mb": r["peak_rss_mb"], "chunks": r["json"]["counts"]["chunks"]})
                shutil.rmtree(ws)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "convert_seconds", "peak_rss_mb")}
           for m, rs in runs.items()}
    return {"pages": pages, "rounds": rounds, "embed": embed, "runs": runs, "median": med,
            "slower_total": round(med["isolated"]["seconds"] / med["in_process"]["seconds"] - 1, 4),
            "slower_convert": round(med["isolated"]["convert_seconds"] / med["in_process"]["convert_seconds"] - 1, 4),
            "same_chunks": len({r["chunks"] for rs in runs.values() for r in rs}) == 1}


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(10):
            z.writestr(f"zeros{i}.txt", b"\0" * (40 * 2**20))
    return buf.getvalue()


def hostile_corpus(dest: Path) -> None:
    files = {"long-name.tar.gz": hostile.tgz_long_name(600 * 2**20), "open-tags.html": hostile.html_open_tag(170_000),
             "repeats.pdf": hostile.pdf_page_repeats(20_000), "shared.pdf": hostile.pdf_shared_subtrees(40),
             "sparse-gnu.tar": hostile.tar_sparse_gnu(), "sparse-pax.tar": hostile.tar_sparse_pax(),
             "xobjects.pdf": hostile.xobject_bomb(7), "zip-bomb.zip": zip_bomb(),
             "fine.md": b"# A fine document\n\nSQLite reads JSON with json_extract.\n"}
    for name, data in files.items():
        (dest / name).write_bytes(data)


def hostile_run() -> dict:
    with tempfile.TemporaryDirectory(prefix="taskling-hostile-") as tmp:
        ws = bench_ingest.workspace(Path(tmp), "hostile")
        hostile_corpus(ws / "docs")
        size = sum(p.stat().st_size for p in (ws / "docs").iterdir())
        r = bench_ingest.run_measured([bench_ingest.TASKLING, "ingest", "--json"], ws)
        docs = json.loads(next((ws / "runs").glob("*/round-0/ingest/documents.json")).read_text())
    return {"files": 9, "bytes": size, "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "skipped": {s["path"]: s["reason"] for s in docs["skipped"]},
            "documents": sorted(d["path"] for d in docs["documents"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--no-embed", action="store_true", help="ingest.embed: false in the cost runs (isolation does not "
                    "touch embedding; on a busy machine this keeps the runs short)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"benchmark": "isolation", "command": " ".join(["python bench/isolation.py", *sys.argv[1:]]),
              "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    dest = ROOT / "bench" / "results" / "isolation.json"
    result["hostile_corpus"] = hostile_run()
    dest.write_text(json.dumps(result, indent=2) + "\n")
    if not args.skip_cost:
        result["isolation_cost"] = cost(args.pages, args.rounds, not args.no_embed)
        dest.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2)[:4000])
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
