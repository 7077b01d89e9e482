"""ingest: source files into the pile (.taskling/pile.db) with provenance.

Incremental: a file whose sha256 is unchanged is skipped, a changed file
replaces its chunks, a file no longer under the sources is marked gone. Each
file is one transaction, so a killed ingest loses at most the file in hand.
A file that cannot be read is reported by name and skipped; the rest goes on.
"""
from __future__ import annotations

import glob
from pathlib import Path

from ..config import Config
from ..convert import ConvertError, chunk_text, convert, supported
from ..errors import TasklingError
from ..pile import Pile
from ..progress import bar
from ..workspace import Context, atomic_write_json, run_stage, sha256_file


def find_sources(cfg: Config, extra: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Files named by the sources (paths, folders, globs); and the patterns that matched nothing."""
    files: dict[Path, None] = {}
    missing = []
    for pat in list(cfg.sources) + list(extra or []):
        base = Path(pat).expanduser()
        full = base if base.is_absolute() else cfg.root / base
        if any(ch in pat for ch in "*?["):
            hits = [Path(p) for p in sorted(glob.glob(str(full), recursive=True))]
        elif full.is_dir():
            hits = sorted(p for p in full.rglob("*"))
        elif full.exists():
            hits = [full]
        else:
            hits = []
        hits = [h for h in hits if h.is_file() and not _skipped(cfg.root, full, h)]
        if not hits:
            missing.append(pat)
        for h in hits:
            files[h.resolve()] = None
    return list(files), missing


def _skipped(root: Path, base: Path, path: Path) -> bool:
    """Hidden files and folders below the source, and taskling's own state
    (.taskling/, runs/), are never sources."""
    anchor = base if base.is_dir() else base.parent
    while any(ch in anchor.name for ch in "*?["):
        anchor = anchor.parent
    try:
        rel = path.relative_to(anchor).parts
    except ValueError:
        rel = (path.name,)
    if any(part.startswith(".") for part in rel):
        return True
    resolved = path.resolve()
    return any(resolved.is_relative_to((root / own).resolve()) for own in (".taskling", "runs"))


def display_path(cfg: Config, path: Path) -> str:
    try:
        return str(path.relative_to(cfg.root))
    except ValueError:
        return str(path)


def token_counter(model: str):
    from ..models import load_tokenizer

    tok = load_tokenizer(model)

    def count(texts: list[str]) -> list[int]:
        return [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return count


def run(cfg: Config, ctx: Context, paths: list[str] | None = None) -> dict:
    files, missing = find_sources(cfg, paths)
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
    inputs = {"files": snapshot}

    def body(out: Path) -> dict:
        counts = {"added": 0, "updated": 0, "unchanged": 0, "gone": 0, "errors": 0, "unsupported": 0}
        errors = []
        count = None
        with Pile(ctx.ws.pile_db) as pile, bar(ctx.console) as progress:
            task = progress.add_task("ingest", total=len(files), info="")
            for f, (rel, sha, size) in zip(files, snapshot):
                progress.update(task, info=rel[-40:])
                if sha.startswith("unreadable"):
                    errors.append(f"{rel}: cannot read ({sha.split(': ', 1)[1]}); skipped")
                    pile.log(rel, "error", sha)
                elif not supported(f):
                    counts["unsupported"] += 1
                    pile.log(rel, "error", f"unsupported format '{f.suffix}'")
                    errors.append(f"{rel}: format '{f.suffix or '(none)'}' is not supported yet; skipped")
                elif size > cfg.ingest.max_file_mb * 2**20:
                    pile.log(rel, "error", "too large")
                    errors.append(f"{rel}: {size / 2**20:.0f} MB is over ingest.max_file_mb={cfg.ingest.max_file_mb}; skipped")
                else:
                    old = pile.document(rel)
                    if old is not None and old["sha256"] == sha and old["status"] == "ok":
                        counts["unchanged"] += 1
                    else:
                        try:
                            text, fmt, converter = convert(f)
                        except (ConvertError, OSError) as e:
                            pile.log(rel, "error", str(e))
                            errors.append(f"{rel}: cannot read ({e}); skipped")
                        else:
                            count = count or token_counter(cfg.student.model)
                            chunks = chunk_text(text, cfg.ingest.chunk_tokens, count)
                            pile.replace_document(rel, sha, fmt, converter, size, text, chunks)
                            action = "added" if old is None else "updated"
                            counts[action] += 1
                            pile.log(rel, action, f"{len(chunks)} chunks")
                progress.advance(task)
            live = {rel for rel, _, _ in snapshot}
            gone = [p for p in pile.live_paths() if p not in live]
            pile.mark_gone(gone)
            counts["gone"] = len(gone)
            for p in gone:
                pile.log(p, "gone")
            stats = pile.stats()
            docs = [{"path": p, "sha256": s} for p, s in pile.snapshot()]
        counts["errors"] = len(errors) - counts["unsupported"]
        for e in errors:
            ctx.console.print(f"[yellow]{e}[/]")
        atomic_write_json(out / "documents.json", {"documents": docs, "errors": errors, "missing_sources": missing})
        ctx.console.print(f"ingest: {stats['documents']} documents, {stats['chunks']} chunks, "
                          f"{stats['tokens']} tokens ({counts['added']} added, {counts['updated']} updated, "
                          f"{counts['unchanged']} unchanged, {counts['gone']} gone, {len(errors)} skipped)")
        return {"counts": {**counts, **{k: v for k, v in stats.items() if k != 'by_format'}},
                "by_format": stats["by_format"], "outputs": ["documents.json"]}

    return run_stage(ctx, "ingest", settings, inputs, body)
