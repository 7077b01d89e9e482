"""ingest: source files into the pile (.taskling/pile.db) with provenance.

Every file is converted by the converter for its format (formats/), chunked
by its structure (pages, slides, row blocks, messages, code units, headings)
and stored with its sha256, converter and version. Files inside files
(archive members, e-mail attachments) become documents of their own, named
"outer.zip!/inner.pdf" and linked to their container.

Incremental: a file whose sha256 is unchanged is skipped, a changed file
replaces its chunks (and everything it contained), a file no longer under
the sources is marked gone. Each document is one transaction and a container
stays 'partial' until all its children are in, so a kill -9 at any point
leaves the pile consistent and the next run finishes the job.

After the files: duplicates (exact and near, documents and chunks) are
recorded, new chunks are embedded, and the pile is clustered into topics.
A file that cannot be read is skipped with its reason in the ingest log and
the summary; the rest goes on. Nothing is ever written outside .taskling/.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ..core.errors import TasklingError
from ..core.progress import bar
from ..core.workspace import Context, atomic_write_json, run_stage, sha256_file
from ..data.ingest import Ingester, display_path, find_sources, reason_kind
from ..data.pile import Pile


def run(ctx: Context, paths: list[str] | None = None) -> dict:
    cfg = ctx.cfg
    files, missing, refused = find_sources(cfg, paths)
    for pat in missing:
        ctx.console.print(f"[yellow]sources: '{pat}' matches no file under {cfg.root}; check the path in taskling.yaml[/]")
    if not files:
        raise TasklingError(f"{cfg.root / 'taskling.yaml'}: sources match no file "
                            f"({', '.join(cfg.sources)}); fix 'sources:' or add documents")
    snapshot = []
    for f in files:
        try:
            snapshot.append((display_path(cfg, f), sha256_file(f), f.stat().st_size))
        except OSError as e:
            snapshot.append((display_path(cfg, f), f"unreadable: {e.strerror}", 0))
    settings = {"ingest": cfg.section("ingest"), "tokenizer": cfg.student.model}
    inputs = {"files": snapshot, "refused": refused}

    def body(out: Path) -> dict:
        t0 = time.perf_counter()
        with Pile(ctx.ws.pile_db) as pile:
            ing = Ingester(cfg, pile)
            for rel, reason in refused:
                ing.skip(rel, reason)
            with bar(ctx.console) as progress:
                task = progress.add_task("ingest", total=len(files), info="")
                spread = None
                if ctx.cluster is not None:  # converted on the nodes, stored here
                    from ..cluster.ingest import convert_files

                    spread = convert_files(ctx, ing, files, snapshot, progress, task)
                else:
                    for f, (rel, sha, size) in zip(files, snapshot):
                        progress.update(task, info=rel[-40:])
                        ing.file(f, rel, sha, size)
                        progress.advance(task)
            live = {rel for rel, _, _ in snapshot}
            gone = [p for p in pile.live_paths() if p not in live]
            pile.mark_gone(gone)
            for p in gone:
                pile.log(p, "gone")
            convert_seconds = time.perf_counter() - t0
            from ..data import organise

            organised = organise.organise(cfg, pile, ctx)
            stats = pile.stats()
            docs = [{"path": p, "sha256": s} for p, s in pile.snapshot()]
        reasons = Counter(reason_kind(s["reason"]) for s in ing.skipped)
        for s in ing.skipped[:20]:
            ctx.console.print(f"[yellow]skipped {s['path']}: {s['reason']}[/]", highlight=False, soft_wrap=True)
        if len(ing.skipped) > 20:
            ctx.console.print(f"[yellow]... and {len(ing.skipped) - 20} more skipped; see {out / 'documents.json'}[/]")
        per_format = {fmt: {"files": n, "mb": round(ing.format_bytes[fmt] / 2**20, 3),
                            "seconds": round(ing.format_seconds[fmt], 3),
                            "files_per_s": round(n / max(ing.format_seconds[fmt], 1e-9), 1),
                            "mb_per_s": round(ing.format_bytes[fmt] / 2**20 / max(ing.format_seconds[fmt], 1e-9), 2)}
                      for fmt, n in sorted(ing.formats.items())}
        atomic_write_json(out / "documents.json", {"documents": docs, "skipped": ing.skipped,
                                                   "warnings": ing.warnings, "missing_sources": missing})
        counts = {"files": len(files), "added": ing.counts["added"], "updated": ing.counts["updated"],
                  "unchanged": ing.counts["unchanged"], "contained": ing.counts["contained"], "gone": len(gone),
                  "skipped": len(ing.skipped), "warnings": len(ing.warnings)}
        fmt_line = ", ".join(f"{k} {v['documents']}" for k, v in stats["by_format"].items())
        ctx.console.print(
            f"ingest: {stats['documents']} documents ({fmt_line}), {stats['chunks']} chunks, {stats['tokens']} tokens; "
            f"{counts['added']} added, {counts['updated']} updated, {counts['unchanged']} unchanged, "
            f"{counts['contained']} from inside archives/mail, {counts['gone']} gone, {counts['skipped']} skipped"
            + (f" ({', '.join(f'{k} {v}' for k, v in reasons.most_common())})" if reasons else "")
            + f"; duplicates: {stats['duplicate_documents']} documents, {stats['duplicate_chunks']} chunks; "
            f"{stats['topics']} topics; {time.perf_counter() - t0:.1f} s", highlight=False, soft_wrap=True)
        return {"counts": {**counts, **{k: v for k, v in stats.items() if k != "by_format"}},
                "by_format": stats["by_format"], "per_format": per_format, "skipped_reasons": dict(reasons),
                "timings": {"convert_seconds": round(convert_seconds, 2), **organised.get("timings", {})},
                "organise": {k: v for k, v in organised.items() if k not in ("timings", "cluster")},
                **({"cluster": {"convert": spread, "embed": organised.get("cluster")}} if spread else {}),
                "outputs": ["documents.json"]}

    return run_stage(ctx, "ingest", settings, inputs, body)


