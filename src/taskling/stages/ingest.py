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

Files are converted by the executor's workers (`IngestWorker`): in this
process one file at a time, or on a cluster's nodes cluster.ingest_files at a
time. This process reads each file (nodes need no access to the sources) and
is the pile's one writer: what comes back is stored in the files' own order,
so the pile is the same wherever the files were converted.

After the files: duplicates (exact and near, documents and chunks) are
recorded, new chunks are embedded, and the pile is clustered into topics.
A file that cannot be read is skipped with its reason in the ingest log and
the summary; the rest goes on. Nothing is ever written outside .taskling/.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from ..core.config import Config
from ..core.errors import TasklingError
from ..core.executor import Shard, failure, in_order
from ..core.progress import bar
from ..core import stage
from ..core.manifests import IngestManifest
from ..core.stage import StageSpec
from ..core.workspace import Context, atomic_write_json, sha256_file
from ..data import organise
from ..data.ingest import Ingester, close_sandboxes, display_path, find_sources, limits_of, prepare, reason_kind
from ..data.pile import Pile
from ..student.models import token_counter
from ..tasks.classify import check_label_pools


class IngestWorker:
    """Converts and chunks files wherever the executor runs it (it writes nothing)."""

    def __init__(self, cfg_json: dict):
        self.error = None
        try:
            self.cfg = Config.model_validate(cfg_json)
            self.limits = limits_of(self.cfg)
            self.count = token_counter(self.cfg.student.model)
        except Exception as e:  # reported by ready()
            self.error = failure(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"pid": os.getpid()}

    def run(self, files: list[tuple[str, bytes, str]]) -> list[list[dict]]:
        return [prepare(self.cfg, self.limits, self.count, rel, data, sha) for rel, data, sha in files]

    def close(self) -> None:
        close_sandboxes()  # the pool is done: no conversion worker outlives the ingest


def convert(ctx: Context, ing: Ingester, files: list[Path], snapshot: list[tuple], progress, task) -> dict | None:
    """Convert and chunk `files` with the executor's workers; `ing` stores what comes back in the files'
    order. Returns what each node did when the files went to a cluster's nodes."""
    k = ctx.cfg.cluster.ingest_files if ctx.executor.distributed else 1
    shards = [Shard(f"files-{i:06d}", len(files[i:i + k]), i) for i in range(0, len(files), k)]
    loaded: dict[str, list] = {}  # a shard sent again (its node died) is not read, or judged, twice

    def load(shard: Shard) -> list:
        """Read the shard's files that need converting (unchanged, unreadable and too large are settled here)."""
        if shard.id not in loaded:
            work = []
            at = slice(shard.payload, shard.payload + k)
            for f, (rel, sha, size) in zip(files[at], snapshot[at]):
                progress.update(task, info=rel[-40:])
                data = ing.read(f, rel, sha, size)
                if data is not None:
                    work.append((rel, data, sha))
            loaded[shard.id] = work
        return loaded[shard.id]

    def store(_: int, prepared: list) -> None:
        for items in prepared:
            ing.store(items)

    ordered = in_order(len(shards), store)

    def done(shard: Shard, prepared: list) -> None:
        loaded.pop(shard.id, None)
        ordered(shard.payload // k, prepared)
        progress.advance(task, shard.items)

    pool = ctx.executor.pool("ingest", IngestWorker, (ing.cfg.model_dump(mode="json"),))
    try:
        pool.map(shards, done, load=load)
        ordered.check()
        return pool.report()
    finally:
        pool.close()

SPEC = StageSpec("ingest", reads=("ingest", "student.model"), manifest=IngestManifest)


def run(ctx: Context) -> IngestManifest:
    cfg = ctx.cfg
    files, missing, refused = find_sources(cfg)
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

    def body(out: Path) -> dict:
        t0 = time.perf_counter()
        with Pile(ctx.ws.pile_db) as pile:
            ing = Ingester(cfg, pile)
            for rel, reason in refused:
                ing.skip(rel, reason)
            with bar(ctx.console) as progress:
                task = progress.add_task("ingest", total=len(files), info="")
                spread = convert(ctx, ing, files, snapshot, progress, task)
            live = {rel for rel, _, _ in snapshot}
            gone = [p for p in pile.live_paths() if p not in live]
            pile.mark_gone(gone)
            for p in gone:
                pile.log(p, "gone")
            convert_seconds = time.perf_counter() - t0
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
        if not stats["chunks"]:
            raise TasklingError(
                f"ingest: the pile is empty: none of the {len(files)} file(s) gave any text"
                + (f" ({', '.join(f'{k} {v}' for k, v in reasons.most_common())}; the lines above say why)"
                   if reasons else "") + "; add documents in a format taskling reads (docs/guide.md) "
                "or fix 'sources:' in taskling.yaml, then run 'taskling ingest' again")
        check_label_pools(ctx)  # warned now, while the user still looks at what ingest found
        return {"counts": {**counts, **{k: v for k, v in stats.items() if k != "by_format"}},
                "by_format": stats["by_format"], "per_format": per_format, "skipped_reasons": dict(reasons),
                "timings": {"convert_seconds": round(convert_seconds, 2), **organised.get("timings", {})},
                "organise": {k: v for k, v in organised.items() if k not in ("timings", "cluster")},
                **({"cluster": {"convert": spread, "embed": organised.get("cluster")}} if spread else {}),
                "outputs": ["documents.json"]}

    return stage.run(ctx, SPEC, body, inputs={"files": snapshot, "refused": refused})


