"""ingest: files into the SQLite pile with provenance; incremental; bad files skipped."""
from __future__ import annotations

import sqlite3

from rich.console import Console

from taskling.config import load_config
from taskling.pile import Pile
from taskling.stages import ingest
from taskling.workspace import Context, sha256_file


def ctx_for(path, force=False) -> Context:
    return Context(load_config(path), console=Console(stderr=True, quiet=True), force=force)


def test_ingest_provenance_offsets_point_into_the_text(workspace):
    m = ingest.run(load_config(workspace), ctx_for(workspace))
    assert m["counts"]["added"] == 3 and m["counts"]["errors"] == 0
    root = workspace.parent
    with Pile(root / ".taskling" / "pile.db") as pile:
        chunks = pile.chunks()
        assert {c.path for c in chunks} == {"docs/sqlite.md", "docs/node.html", "docs/python.txt"}
        for c in chunks:
            assert c.sha256 == sha256_file(root / c.path)
            doc_text = pile.document(c.path)["text"]
            assert doc_text[c.start_char:c.end_char].strip() == c.text.strip()
        assert any("SQLite" in c.locator for c in chunks if c.path.endswith(".md"))
        hits = pile.search("bm25 ranking", limit=3)
        assert hits and hits[0][0].path == "docs/sqlite.md"
    db = sqlite3.connect(root / ".taskling" / "pile.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ingest_is_incremental(workspace):
    root = workspace.parent
    ingest.run(load_config(workspace), ctx_for(workspace))
    assert ingest.run(load_config(workspace), ctx_for(workspace))["skipped"] is True
    (root / "docs" / "python.txt").write_text("Python changed: timedelta arithmetic with dates and times. " * 20)
    (root / "docs" / "sqlite.md").unlink()
    m = ingest.run(load_config(workspace), ctx_for(workspace))
    assert (m["counts"]["updated"], m["counts"]["unchanged"], m["counts"]["gone"]) == (1, 1, 1)
    with Pile(root / ".taskling" / "pile.db") as pile:
        assert "docs/sqlite.md" not in {c.path for c in pile.chunks()}
        assert all("changed" in c.text for c in pile.chunks() if c.path == "docs/python.txt")


def test_bad_files_are_named_and_skipped(workspace, capsys):
    root = workspace.parent
    (root / "docs" / "broken.txt").write_bytes(b"\xff\xfe\x00\x00" + bytes(range(256)) * 50)
    (root / "docs" / "binary.md").write_bytes(b"\x00\x01\x02PK\x03\x04" * 500)
    (root / "docs" / ".hidden.md").write_text("secret notes " * 50)
    ctx = Context(load_config(workspace), console=Console(stderr=True, force_terminal=False, width=300))
    m = ingest.run(ctx.cfg, ctx)
    err = capsys.readouterr().err
    assert m["counts"]["added"] >= 3
    assert "binary.md" in err and "skipped" in err
    with Pile(root / ".taskling" / "pile.db") as pile:
        paths = {c.path for c in pile.chunks()}
    assert "docs/.hidden.md" not in paths and "docs/binary.md" not in paths


def test_sources_matching_nothing(tmp_path, tiny_model_dir):
    from conftest import write_workspace

    cfg_path = write_workspace(tmp_path, tiny_model_dir, sources=["nowhere/*.md"])
    import pytest

    from taskling.errors import TasklingError

    with pytest.raises(TasklingError, match="sources match no file"):
        ingest.run(load_config(cfg_path), ctx_for(cfg_path))
