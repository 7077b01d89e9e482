"""ingest: files into the SQLite pile with provenance; incremental; selection;
archives and their members; duplicates, embeddings and topics; hostile
input skipped with reasons; kill -9 leaves the pile consistent."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from rich.console import Console

from conftest import need, write_workspace
from taskling.core.config import load_config
from taskling.data.pile import Pile
from taskling.stages import ingest
from taskling.core.workspace import Context, sha256_file

TASKLING = str(Path(sys.executable).parent / "taskling")


def run_ingest(path: Path, overrides=(), force=False, console=None) -> dict:
    ctx = Context(load_config(path, list(overrides)), force=force,
                  console=console or Console(stderr=True, quiet=True))
    return ingest.run(ctx)


def pile_of(path: Path) -> Pile:
    return Pile(path.parent / ".taskling" / "pile.db")


def test_provenance_offsets_point_into_the_text(workspace):
    m = run_ingest(workspace)
    assert m.counts.added == 3 and m.counts.skipped == 0
    root = workspace.parent
    with pile_of(workspace) as pile:
        chunks = pile.chunks()
        assert {c.path for c in chunks} == {"docs/sqlite.md", "docs/node.html", "docs/python.txt"}
        for c in chunks:
            assert c.sha256 == sha256_file(root / c.path)
            assert pile.document(c.path)["text"][c.start_char:c.end_char] == c.text
        assert {c.format for c in chunks} == {"markdown", "html", "text"}
        assert any("SQLite" in c.locator for c in chunks if c.path.endswith(".md"))
        assert pile.document("docs/node.html")["converter"].startswith("stdlib html.parser")
        hits = pile.search("bm25 ranking", limit=3)
        assert hits and hits[0][0].path == "docs/sqlite.md"
    assert sqlite3.connect(root / ".taskling" / "pile.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert m.per_format["markdown"]["files"] == 1 and m.per_format["markdown"]["mb_per_s"] > 0


def test_incremental_reingest(workspace):
    root = workspace.parent
    run_ingest(workspace)
    assert run_ingest(workspace).skipped is True
    (root / "docs" / "python.txt").write_text("Python changed: timedelta arithmetic with dates and times. " * 20)
    (root / "docs" / "sqlite.md").unlink()
    m = run_ingest(workspace)
    assert (m.counts.updated, m.counts.unchanged, m.counts.gone) == (1, 1, 1)
    with pile_of(workspace) as pile:
        assert "docs/sqlite.md" not in {c.path for c in pile.chunks()}
        assert all("changed" in c.text for c in pile.chunks() if c.path == "docs/python.txt")
        assert pile.document("docs/sqlite.md")["status"] == "gone"
        # FTS stays in step with the chunks table after deletes.
        assert not pile.search("json_extract")


def test_selection_include_exclude_formats(workspace):
    root = workspace.parent
    (root / "docs" / "drafts").mkdir()
    (root / "docs" / "drafts" / "wip.md").write_text("# Draft\n\nnot ready " * 30)
    cfg_src = ["docs"]
    m = run_ingest(workspace, [f"sources={json.dumps(cfg_src)}", 'ingest.exclude=["*/drafts/*"]'])
    assert m.counts.added == 3
    m = run_ingest(workspace, [f"sources={json.dumps(cfg_src)}", 'ingest.include=["*.md"]'])
    with pile_of(workspace) as pile:
        assert set(pile.live_paths()) == {"docs/sqlite.md", "docs/drafts/wip.md"}
    m = run_ingest(workspace, [f"sources={json.dumps(cfg_src)}", "ingest.formats=[html]"])
    with pile_of(workspace) as pile:
        assert {c.path for c in pile.chunks()} == {"docs/node.html"}
    assert m.skipped_reasons.get("format not selected") == 3


def test_bad_files_are_named_skipped_and_the_rest_goes_on(workspace, capsys):
    root = workspace.parent
    d = root / "docs"
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.md").write_bytes(bytes(range(256)) * 40)
    (d / "utf16.txt").write_bytes(b"\xff\xfe" + bytes([0x00, 0xd8]) * 30)
    (d / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e, a dessert. ".encode("latin-1") * 20)
    (d / ".hidden.md").write_text("secret notes " * 50)
    (d / "huge.txt").write_text("x" * (2 * 2**20))
    (d / "longline.txt").write_text("word " * 40_000)
    outside = root.parent / f"{root.name}-outside.md"
    outside.write_text("outside the tree " * 30)
    (d / "escape.md").symlink_to(outside)
    console = Console(stderr=True, force_terminal=False, width=300)
    m = run_ingest(workspace, ["ingest.max_file_mb=1", 'sources=["docs"]'], console=console)
    err = capsys.readouterr().err
    skipped = {s["path"]: s["reason"] for s in json.loads(
        (root / "runs" / "tiny-router" / "round-0" / "ingest" / "documents.json").read_text())["skipped"]}
    assert "empty" in skipped["docs/empty.txt"]
    assert "binary" in skipped["docs/binary.md"]
    assert "UTF-16" in skipped["docs/utf16.txt"]
    assert "over ingest.max_file_mb" in skipped["docs/huge.txt"]
    assert "outside the source folder" in skipped["docs/escape.md"]
    assert "docs/escape.md" in err and "skipped" in err
    with pile_of(workspace) as pile:
        paths = set(pile.live_paths())
        assert {"docs/latin1.txt", "docs/longline.txt", "docs/sqlite.md"} <= paths
        assert "Café crème" in pile.document("docs/latin1.txt")["text"]
        assert "docs/.hidden.md" not in paths
        assert "cut" in json.loads(pile.document("docs/longline.txt")["warnings"])[0]
        logged = {r["path"] for r in pile.log_rows(200) if r["action"] == "skipped"}
    assert {"docs/empty.txt", "docs/binary.md", "docs/huge.txt"} <= logged
    assert m.counts.skipped == len(skipped)


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_archives_become_linked_documents(workspace):
    root = workspace.parent
    inner = make_zip({"deep/notes.md": b"# Deep\n\n" + b"deeply nested notes about crypto keys. " * 20})
    (root / "docs" / "bundle.zip").write_bytes(make_zip({
        "guide.md": b"# Guide\n\n" + b"the guide explains readFile options. " * 20,
        "inner.zip": inner, "../evil.md": b"escape attempt " * 20}))
    m = run_ingest(workspace, ['sources=["docs"]'])
    assert m.counts.contained == 3  # guide.md, inner.zip, inner.zip!/deep/notes.md
    with pile_of(workspace) as pile:
        guide = pile.document("docs/bundle.zip!/guide.md")
        deep = pile.document("docs/bundle.zip!/inner.zip!/deep/notes.md")
        assert guide["relation"] == "member" and guide["status"] == "ok"
        assert pile.db.execute("SELECT path FROM documents WHERE id=?", (deep["parent_id"],)).fetchone()[0] == \
            "docs/bundle.zip!/inner.zip"
        assert not any("evil" in p for p in pile.live_paths(top_level_only=False))
        warnings = json.loads(pile.document("docs/bundle.zip")["warnings"])
        assert any("evil" in w for w in warnings)
        chunk = next(c for c in pile.chunks() if c.path.endswith("guide.md"))
        assert chunk.sha256 == guide["sha256"] and "readFile" in chunk.text
    # Re-packing without the nested zip removes its documents.
    (root / "docs" / "bundle.zip").write_bytes(make_zip({"guide.md": b"# Guide\n\n" + b"new guide text. " * 20}))
    run_ingest(workspace, ['sources=["docs"]'])
    with pile_of(workspace) as pile:
        assert pile.document("docs/bundle.zip!/inner.zip!/deep/notes.md") is None
        assert "new guide" in pile.document("docs/bundle.zip!/guide.md")["text"]
    assert not (root / "guide.md").exists() and not (root.parent / "evil.md").exists()


def test_duplicates_embeddings_and_topics(workspace):
    root = workspace.parent
    text = (root / "docs" / "sqlite.md").read_text()
    (root / "docs" / "sqlite-copy.md").write_text(text)
    (root / "docs" / "sqlite-edit.md").write_text(text.replace("Section 3", "Part three"))
    m = run_ingest(workspace, ['sources=["docs"]', "ingest.embed=true", "ingest.topics=3"])
    assert m.counts.duplicate_documents == 2
    c = m.counts
    assert c.embedded_chunks == c.chunks - c.duplicate_chunks and c.topics == 3
    with pile_of(workspace) as pile:
        rows = {r["path"]: dict(r) for r in pile.db.execute(
            "SELECT d.path, d.dup_method, d.dup_similarity, o.path AS of FROM documents d "
            "LEFT JOIN documents o ON o.id=d.dup_of WHERE d.dup_of IS NOT NULL")}
        assert rows["docs/sqlite.md"]["dup_method"] == "exact" or rows["docs/sqlite-copy.md"]["dup_method"] == "exact"
        assert any(r["dup_method"] == "near" and r["dup_similarity"] >= 0.85 for r in rows.values())
        unique = pile.chunks(unique=True)
        assert len(unique) < len(pile.chunks())
        topics = pile.topics()
        assert sum(t["size"] for t in topics) == len(pile.chunks()) and all(t["label"] for t in topics)
        assert all(c.topic_id is not None for c in pile.chunks())
        hits = pile.nearest(__import__("taskling.data.embed", fromlist=["Embedder"]).Embedder().encode(
            ["hash data with a digest"])[0], limit=3)
        assert hits[0][0].path == "docs/node.html"
        ids, blobs = pile.embeddings()
        some = ids[::3][::-1]
        assert pile.embeddings(some) == (sorted(some), [blobs[ids.index(i)] for i in sorted(some)])


def test_kill_9_during_ingest_leaves_a_consistent_pile(tmp_path, tiny_model_dir):
    cfg = write_workspace(tmp_path, tiny_model_dir)
    many = tmp_path / "docs" / "many"
    many.mkdir()
    for i in range(400):
        (many / f"page{i:03d}.md").write_text(f"# Page {i}\n\n" + f"topic {i} explains option {i}. " * 60)
    cfg.write_text(cfg.read_text().replace("- docs/*.md", "- docs/**/*.md"))
    pile_db = tmp_path / ".taskling" / "pile.db"
    proc = subprocess.Popen([TASKLING, "ingest"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, "ingest finished before the kill"
        assert time.monotonic() < deadline
        try:
            n = sqlite3.connect(pile_db, timeout=1).execute("SELECT count(*) FROM documents").fetchone()[0]
        except sqlite3.Error:
            n = 0
        if n >= 50:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert subprocess.run([TASKLING, "ingest"], cwd=tmp_path, capture_output=True).returncode == 0
    with Pile(pile_db) as pile:
        st = pile.stats()
        assert st["documents"] == 403
        n_fts = pile.db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        assert n_fts == st["chunks"]
        assert pile.db.execute("SELECT count(*) FROM documents WHERE status!='ok'").fetchone()[0] == 0
        per_doc = pile.db.execute("SELECT count(*) FROM chunks GROUP BY doc_id HAVING count(*) = 0").fetchall()
        assert not per_doc


DEBIAN_SQLITE = Path("/usr/share/doc/sqlite3")


def test_real_debian_corpus(tmp_path, tiny_model_dir):
    """The SQLite manual from Debian's sqlite3-doc: counts, provenance round
    trips and an unchanged re-ingest."""
    need("sqlite3-doc", (DEBIAN_SQLITE / "fts5.html").exists(), "scripts/setup.sh installs it as root, or "
         "apt-get install sqlite3-doc")
    pages = sorted(p for p in DEBIAN_SQLITE.glob("*.html") if p.stat().st_size > 2000)[:60]
    cfg = write_workspace(tmp_path, tiny_model_dir)
    cfg.write_text(cfg.read_text().replace("- docs/*.md", "- manual/*.html"))
    (tmp_path / "manual").mkdir()
    for p in pages:
        shutil.copy(p, tmp_path / "manual" / p.name)
    m = run_ingest(cfg, ['sources=["manual"]'])
    assert m.counts.added == len(pages) and m.counts.skipped == 0
    import html as htmlmod
    import re

    with pile_of(cfg) as pile:
        chunks = pile.chunks()
        assert len(chunks) > len(pages)
        for c in chunks[:: max(1, len(chunks) // 80)]:
            source = htmlmod.unescape(re.sub(r"<[^>]+>", " ", (DEBIAN_SQLITE / Path(c.path).name).read_text(
                encoding="utf-8", errors="replace")))
            words = re.findall(r"\w{4,}", c.text)[:8]
            assert all(w in source for w in words), (c.path, words)
            heading = c.locator.split(" (lines")[0].split(" > ")[-1]
            if heading and not heading.startswith("lines"):
                assert re.sub(r"\s+", " ", heading).strip()[:30] in re.sub(r"\s+", " ", source), (c.path, heading)
            assert c.sha256 == sha256_file(DEBIAN_SQLITE / Path(c.path).name)
    again = run_ingest(cfg, ['sources=["manual"]'], force=True)
    assert again.counts.unchanged == len(pages) and again.counts.added == 0


def test_pile_from_an_older_schema_is_rebuilt(workspace):
    db = workspace.parent / ".taskling" / "pile.db"
    db.parent.mkdir(parents=True)
    old = sqlite3.connect(db)
    old.executescript("CREATE TABLE documents (id INTEGER PRIMARY KEY, path TEXT);"
                      "CREATE VIRTUAL TABLE chunks_fts USING fts5(text);"
                      "INSERT INTO documents(path) VALUES ('x');")
    old.commit()
    old.close()
    m = run_ingest(workspace)
    assert m.counts.added == 3
    with pile_of(workspace) as pile:
        assert set(pile.live_paths()) == {"docs/sqlite.md", "docs/node.html", "docs/python.txt"}
