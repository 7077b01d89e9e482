"""Source files into the pile: finding them, converting, chunking and storing them with provenance.

`find_sources` lists what taskling.yaml's sources name (inside the workspace only), `prepare`
converts one file's bytes into documents, chunks and tables, each table row placed in the chunk
that holds it (also what a cluster's node runs), and the `Ingester` is the pile's one writer: it
stores prepared documents, skips unchanged files and records every skip with its reason. The
ingest stage (stages/ingest.py) is the recipe over it. `changed_since_ingest` says which pile
documents no longer match their source file (table mapping skips those).

Files are hostile input: each one is converted in a worker process (core.sandbox) under
ingest.convert_timeout_s and ingest.convert_memory_mb (`convert_isolated`), so one file can
stall or exhaust nothing but its own conversion. A file is unchanged only when its sha256 and
the settings it was prepared with (`settings_key`: chunking, tokenizer, converter limits) are the
same; changing ingest.chunk_tokens re-chunks every file.
"""
from __future__ import annotations

import atexit
import fnmatch
import glob
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from ..core.config import Config
from ..core.sandbox import Sandbox, SandboxFailed
from ..core.workspace import fingerprint, sha256_file
from .chunking import chunk_document, place_tables
from .formats import ConvertError, Extracted, Limits, convert
from .pile import Pile

SANDBOXES: dict[tuple, Sandbox] = {}  # one conversion worker per limits, kept for this process's files


def find_sources(cfg: Config, extra: list[str] | None = None) -> tuple[list[Path], list[str], list[tuple[str, str]]]:
    """Files named by the sources (paths, folders, globs) and the selection
    rules; the patterns that matched nothing; and (path, reason) for files
    left out for safety (symlinks leaving the source folder)."""
    files: dict[Path, None] = {}
    missing: list[str] = []
    refused: list[tuple[str, str]] = []
    for pat in list(cfg.sources) + list(extra or []):
        base = Path(pat).expanduser()
        full = base if base.is_absolute() else cfg.root / base
        if any(ch in pat for ch in "*?["):
            hits = [Path(p) for p in sorted(glob.glob(str(full), recursive=True))]
        elif full.is_dir():
            hits = sorted(full.rglob("*"))
        elif full.exists() or full.is_symlink():
            hits = [full]
        else:
            hits = []
        anchor = _anchor(full)
        hits = [h for h in hits if (h.is_file() or h.is_symlink()) and not _hidden_or_ours(cfg.root, anchor, h)]
        if not hits:
            missing.append(pat)
        for h in hits:
            try:
                target = h.resolve(strict=True)
            except (OSError, RuntimeError):
                refused.append((display_path(cfg, h), "broken or looping symlink"))
                continue
            if h.is_symlink() or any(p.is_symlink() for p in h.parents if p.is_relative_to(anchor)):
                if not target.is_relative_to(anchor.resolve()):
                    refused.append((display_path(cfg, h), f"symlink pointing outside the source folder ({target})"))
                    continue
            if target.is_file() and selected(cfg, display_path(cfg, h)):
                files[target] = None
    return list(files), missing, refused


def _anchor(full: Path) -> Path:
    """The folder a source pattern is rooted at: the part before any wildcard."""
    anchor = full if full.is_dir() else full.parent
    while any(ch in anchor.name for ch in "*?["):
        anchor = anchor.parent
    return anchor


def _hidden_or_ours(root: Path, anchor: Path, path: Path) -> bool:
    """Hidden files and folders below the source, and taskling's own state
    (.taskling/, runs/), are never sources."""
    try:
        rel = path.relative_to(anchor).parts
    except ValueError:
        rel = (path.name,)
    if any(part.startswith(".") for part in rel):
        return True
    resolved = path.resolve()
    return any(resolved.is_relative_to((root / own).resolve()) for own in (".taskling", "runs"))


def selected(cfg: Config, rel: str) -> bool:
    """ingest.include / ingest.exclude globs on the path relative to taskling.yaml
    ('*' also crosses folders, so "**/drafts/**" and "*.pdf" both work)."""
    inc, exc = cfg.ingest.include, cfg.ingest.exclude
    if inc and not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(Path(rel).name, g) for g in inc):
        return False
    return not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(Path(rel).name, g) for g in exc)


def display_path(cfg: Config, path: Path) -> str:
    try:
        return str(path.relative_to(cfg.root))
    except ValueError:
        try:
            return str(path.resolve().relative_to(cfg.root.resolve()))
        except ValueError:
            return str(path)


def limits_of(cfg: Config) -> Limits:
    i = cfg.ingest
    return Limits(max_file_bytes=int(i.max_file_mb * 2**20), max_archive_total_bytes=int(i.max_archive_mb * 2**20),
                  max_archive_ratio=i.max_archive_ratio, max_depth=i.max_depth, max_seconds=i.convert_timeout_s,
                  max_memory_mb=i.convert_memory_mb, isolate=i.isolate)


def settings_key(cfg: Config, limits: Limits) -> str:
    """What a file's documents and chunks depend on besides its bytes: a stored file prepared with
    another key is prepared again."""
    return fingerprint({"chunk_tokens": cfg.ingest.chunk_tokens, "tokenizer": cfg.student.model,
                        "limits": limits.content_key()})[:16]


def convert_isolated(name: str, data: bytes, limits: Limits) -> Extracted:
    """formats.convert in the conversion worker under the limits' time and memory (in this process
    when limits.isolate is off); past a limit, ConvertError says which."""
    if not limits.isolate:
        return convert(name, data, limits)
    try:
        return sandbox_for(limits).call("taskling.data.formats:convert", name, data, limits)
    except SandboxFailed as e:
        raise ConvertError(str(e)) from None


def sandbox_for(limits: Limits) -> Sandbox:
    """This process's conversion worker for these limits, started (its start-up is no file's time)."""
    key = (limits.max_seconds, limits.max_memory_mb)
    box = SANDBOXES.get(key)
    if box is None:
        box = SANDBOXES[key] = Sandbox(limits.max_seconds, limits.max_memory_mb, allowed=("taskling.data.formats",))
    try:
        box.start()
    except SandboxFailed as e:
        raise ConvertError(str(e)) from None
    return box


def close_sandboxes() -> None:
    """End this process's conversion workers: ingest is over (the next file starts one again).
    Also run when this process exits; a process killed outright takes its workers with it (core.sandbox)."""
    while SANDBOXES:
        SANDBOXES.popitem()[1].close()


atexit.register(close_sandboxes)


def prepare(cfg: Config, limits: Limits, count, rel: str, data: bytes, sha: str, depth: int = 0,
            parent: str | None = None, relation: str = "", unpacked: list[int] | None = None) -> list[dict]:
    """Convert and chunk one document and, recursively, what it contains, in the order to store
    them: {"kind": "doc" | "skip" | "done", ...}. Touches no pile, so it runs on any node."""
    unpacked = [0] if unpacked is None else unpacked  # bytes taken out of this file's archives, all levels
    if limits.isolate:
        sandbox_for(limits)  # started before the clock: the per-format figures are the files' own
    t0 = time.perf_counter()
    try:
        ex = convert_isolated(rel.rsplit("!/", 1)[-1], data, limits)
    except ConvertError as e:
        return [{"kind": "skip", "rel": rel, "reason": str(e)}]
    container = bool(ex.children) or ex.format in ("zip", "tar")
    if cfg.ingest.formats and not container and ex.format not in cfg.ingest.formats:
        return [{"kind": "skip", "rel": rel,
                 "reason": f"format {ex.format} is not in ingest.formats ({', '.join(cfg.ingest.formats)})"}]
    text, chunks = chunk_document(ex, cfg.ingest.chunk_tokens, count)
    place_tables(ex.tables or [], text, chunks)
    out = [{"kind": "doc", "rel": rel, "sha": sha, "format": ex.format, "converter": ex.converter, "size": len(data),
            "text": text, "chunks": chunks, "parent": parent, "relation": relation, "warnings": ex.warnings,
            "meta": {**ex.meta, "ingest_key": settings_key(cfg, limits)}, "status": "partial" if ex.children else "ok", "depth": depth,
            "tables": ex.tables or [], "table_notes": ex.table_notes, "seconds": time.perf_counter() - t0}]
    for child in ex.children:
        child_rel = f"{rel}!/{child.name}"
        if depth + 1 > limits.max_depth:
            out.append({"kind": "skip", "rel": child_rel, "reason": f"nested deeper than ingest.max_depth={limits.max_depth}"})
            continue
        unpacked[0] += len(child.data)
        if unpacked[0] > limits.max_archive_total_bytes:
            out.append({"kind": "skip", "rel": child_rel, "reason": "the archive tree unpacks to more than "
                        f"ingest.max_archive_mb={cfg.ingest.max_archive_mb:g}; the rest is left out"})
            continue
        out += prepare(cfg, limits, count, child_rel, child.data, hashlib.sha256(child.data).hexdigest(), depth + 1,
                       rel, child.relation, unpacked)
    if ex.children:
        out.append({"kind": "done", "rel": rel})
    return out


class Ingester:
    """Stores converted files, and what they contain, in the pile (the one writer)."""

    def __init__(self, cfg: Config, pile: Pile):
        self.cfg, self.pile = cfg, pile
        self.limits = limits_of(cfg)
        self.key = settings_key(cfg, self.limits)
        self.counts = Counter()
        self.formats = Counter()
        self.format_bytes = Counter()
        self.format_seconds = Counter()
        self.skipped: list[dict] = []
        self.warnings: list[dict] = []

    def skip(self, rel: str, reason: str) -> None:
        """Leave a file out, with its reason; an older version of it leaves the pile too."""
        self.skipped.append({"path": rel, "reason": reason})
        self.pile.log(rel, "skipped", reason)
        if self.pile.document(rel) is not None:
            self.pile.mark_gone([rel])

    def read(self, path: Path, rel: str, sha: str, size: int) -> bytes | None:
        """The file's bytes when it needs converting; None when it is unchanged or skipped.
        `sha` is "unreadable: why" for a file that could not be hashed."""
        if sha.startswith("unreadable"):
            self.skip(rel, f"cannot read it ({sha.split(': ', 1)[1]})")
            return None
        old = self.pile.document(rel)
        if old is not None and old["sha256"] == sha and old["status"] == "ok" and self.prepared_alike(old):
            fmts = self.cfg.ingest.formats
            if fmts and old["format"] not in fmts and old["format"] not in ("zip", "tar"):
                self.skip(rel, f"format {old['format']} is not in ingest.formats ({', '.join(fmts)})")
                return None
            self.counts["unchanged"] += 1
            return None
        if size > self.limits.max_file_bytes:
            self.skip(rel, f"{size / 2**20:.1f} MB is over ingest.max_file_mb={self.cfg.ingest.max_file_mb:g}")
            return None
        try:
            return path.read_bytes()
        except OSError as e:
            self.skip(rel, f"cannot read it ({e.strerror or e})")
            return None

    def prepared_alike(self, doc) -> bool:
        """The stored document was prepared with today's settings (chunking, tokenizer, limits)."""
        try:
            meta = json.loads(doc["meta"] or "{}")
        except ValueError:
            return False
        return isinstance(meta, dict) and meta.get("ingest_key") == self.key

    def store(self, items: list[dict]) -> None:
        """Write one file's prepared documents (and skips) into the pile, in order."""
        for it in items:
            rel = it["rel"]
            if it["kind"] == "skip":
                self.skip(rel, it["reason"])
                continue
            if it["kind"] == "done":  # a container is whole once all its children are in
                self.pile.set_status(rel, "ok")
                continue
            old = self.pile.document(rel) if it["depth"] == 0 else None
            self.pile.replace_document(rel, it["sha"], it["format"], it["converter"], it["size"], it["text"],
                                       it["chunks"], parent=it["parent"], relation=it["relation"],
                                       warnings=it["warnings"], meta=it["meta"], status=it["status"],
                                       tables=it["tables"], table_notes=it["table_notes"])
            for w in it["warnings"]:
                self.warnings.append({"path": rel, "warning": w})
                self.pile.log(rel, "warning", w)
            self.formats[it["format"]] += 1
            self.format_bytes[it["format"]] += it["size"]
            self.format_seconds[it["format"]] += it["seconds"]
            self.pile.log(rel, "converted", f"{it['format']} by {it['converter']}: {len(it['chunks'])} chunks")
            self.counts["contained" if it["depth"] else ("added" if old is None else "updated")] += 1


def changed_since_ingest(pile: Pile, root: Path, paths: list[str]) -> dict[str, str]:
    """Of these pile documents, those whose source is no longer the file ingest read, with the reason:
    the file in the workspace (for an archive member or an attachment, its outermost container) has
    another sha256 than the pile holds. A file gone from the workspace has not changed: the pile keeps
    what was read from it until the next ingest marks it gone."""
    seen: dict[str, bool] = {}
    out = {}
    for path in paths:
        top = path.split("!/", 1)[0]
        if top not in seen:
            doc, file = pile.document(top), root / top
            try:
                seen[top] = doc is not None and file.is_file() and sha256_file(file) != doc["sha256"]
            except OSError:  # unreadable now: nothing says it changed
                seen[top] = False
        if seen[top]:
            out[path] = "it changed since it was ingested" + (f" (its container {top} did)" if top != path else "")
    return out


def reason_kind(reason: str) -> str:
    """A short family name for a skip reason, for the summary line."""
    low = reason.lower()
    for key, kind in (("encrypted", "encrypted"), ("password", "encrypted"), ("empty", "empty"),
                      ("over ingest.max_file_mb", "too large"), ("over the limit", "too large"),
                      ("not supported", "unsupported format"), ("binary", "binary junk"),
                      ("symlink", "unsafe symlink"), ("nested deeper", "nested too deep"),
                      ("ingest.formats", "format not selected"), ("cannot read", "unreadable")):
        if key in low:
            return kind
    return "corrupt or unreadable"
