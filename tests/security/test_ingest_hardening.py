"""Ingest under attack (issue 23): tar headers read whole and sparse members, decompressed bytes that
are all headers or skipped members, html.parser's quadratic end, pypdf's page-tree walk, files that
take a converter's time or memory (the isolated worker), two writers in one workspace, and settings
missing from the unchanged-file skip key. Each test is built from the attack."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

import hostile
from conftest import one_line_error, write_workspace
from taskling.core.config import load_config
from taskling.core.lock import WorkspaceBusy, acquire, release, workspace_lock
from taskling.core.sandbox import Sandbox, SandboxFailed
from taskling.core.workspace import Context
from taskling.data.formats import ConvertError, Limits, convert
from taskling.data.formats.archive import convert_tar


# ---------------------------------------------------------------------------------------- archives
def test_a_huge_gnu_long_name_is_refused_before_it_is_read():
    data = hostile.tgz_long_name(200 * 2**20)  # 0.2 MB of gzip
    tracemalloc.start()
    try:
        with pytest.raises(ConvertError) as e:
            convert("evil.tar.gz", data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "name header is 209,715,200 bytes" in str(e.value) and len(str(e.value)) < 300
    assert peak < 20 * 2**20  # the name was never read (it used to be read whole: 1.8 GB for 600 MB)


@pytest.mark.parametrize("make", [hostile.tar_sparse_gnu, hostile.tar_sparse_pax])
def test_sparse_members_are_refused(make):
    with pytest.raises(ConvertError, match="sparse file"):
        convert("evil.tar", make())


def test_skipped_members_and_headers_count_against_the_archive_budget():
    skipped = b"".join(hostile.member(f"big{i}.txt".encode(), b"x" * 20_000) for i in range(20))
    data = skipped + hostile.member(b"late.txt", b"hello there") + b"\0" * 1024
    with pytest.raises(ConvertError, match="unpacks to more than 165,536 bytes"):  # the budget, end blocks included
        convert_tar(data, "x.tar", Limits(max_file_bytes=1000, max_archive_total_bytes=100_000))
    ok = convert_tar(hostile.member(b"first.txt", b"kept") + data, "x.tar",
                     Limits(max_file_bytes=1000, max_archive_total_bytes=100_000))
    assert [c.name for c in ok.children] == ["first.txt"] and "unpacks to more than" in ok.warnings[-1]


# ---------------------------------------------------------------------------------------- converters' work
def test_html_left_open_at_the_end_is_read_in_one_pass(monkeypatch):
    calls = {"n": 0}
    real = HTMLParser.parse_starttag

    def counted(self, i):
        calls["n"] += 1
        return real(self, i)
    monkeypatch.setattr(HTMLParser, "parse_starttag", counted)
    ex = convert("evil.html", hostile.html_open_tag(20_000))
    assert ex.segments[0].text.strip() == "before"
    assert calls["n"] <= 4  # html.parser 3.11 re-scanned from each of the 20,000 '<' (20 s for 60 KB)


@pytest.mark.parametrize("data,pages", [(hostile.pdf_page_repeats(20_000), 1), (hostile.pdf_shared_subtrees(40), 1)])
def test_a_page_tree_that_repeats_pages_is_read_once_per_page(data, pages):
    ex = convert("evil.pdf", data)
    assert ex.meta["pages"] == pages and len(ex.segments) == pages
    assert any("more than once" in w for w in ex.warnings)


# ---------------------------------------------------------------------------------------- the isolated worker
def test_the_worker_enforces_time_and_memory_and_survives_crashes():
    box = Sandbox(timeout_s=1.0, memory_mb=512)
    try:
        assert box.call("os:getcwd") == os.getcwd()
        with pytest.raises(SandboxFailed, match="longer than ingest.convert_timeout_s=1 s"):
            box.call("time:sleep", 30)
        with pytest.raises(MemoryError):  # a 2 GB allocation fails in the worker, not in this process
            box.call("builtins:bytearray", 2 * 2**30)
        with pytest.raises(SandboxFailed, match="exit code -6"):
            box.call("os:abort")
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):  # a worker cannot send us code
            box.call("collections:OrderedDict")
        assert box.call("os:getpid") != os.getpid() and box.started == 3
    finally:
        box.close()


def sandbox_workers() -> list[int]:
    """Conversion workers (a python running taskling.core.sandbox.serve) this process started that are still alive."""
    import psutil

    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "taskling.core.sandbox" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except psutil.Error:  # it ended while we looked
            pass
    return alive


def test_a_worker_dies_with_the_process_that_started_it_even_mid_call():
    """kill -9 of ingest while a file is being converted: the worker (busy, so deaf to its closed pipe)
    must not live on."""
    import psutil

    code = ("from taskling.core.sandbox import Sandbox; b = Sandbox(600, 512); b.start(); "
            "print(b.proc.pid, flush=True); b.call('time:sleep', 600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker = psutil.Process(int(parent.stdout.readline()))
        assert worker.is_running()
    finally:
        parent.kill()
        parent.wait()
    try:
        worker.wait(30)  # reaped by init once the kernel's parent-death signal killed it
    except psutil.TimeoutExpired:
        worker.kill()
        pytest.fail("the conversion worker outlived the process that started it")


@pytest.fixture
def hostile_ws(tmp_path, tiny_model_dir):
    path = write_workspace(tmp_path, tiny_model_dir, sources=["docs/*"], ingest__embed=False)
    docs = tmp_path / "docs"
    (docs / "long-name.tar.gz").write_bytes(hostile.tgz_long_name(50 * 2**20))
    (docs / "open-tag.html").write_bytes(hostile.html_open_tag(20_000))
    (docs / "repeats.pdf").write_bytes(hostile.pdf_page_repeats(20_000))
    (docs / "sparse.tar").write_bytes(hostile.tar_sparse_pax())
    return path


def ingested(path: Path, *sets: str) -> tuple:
    from taskling.stages import ingest

    ctx = Context(load_config(path, list(sets)), console=Console(stderr=True, quiet=True))
    m = ingest.run(ctx)
    docs = json.loads((ctx.stage_dir("ingest") / "documents.json").read_text())
    return m, {s["path"]: s["reason"] for s in docs["skipped"]}, {d["path"] for d in docs["documents"]}


def test_ingest_of_the_hostile_corpus_skips_what_it_must_and_keeps_the_rest(hostile_ws):
    m, skipped, kept = ingested(hostile_ws)
    assert "name header" in skipped["docs/long-name.tar.gz"] and "sparse" in skipped["docs/sparse.tar"]
    assert all(len(r) < 400 for r in skipped.values())  # no 50 MB name carried into documents.json
    assert {"docs/open-tag.html", "docs/repeats.pdf", "docs/sqlite.md", "docs/python.txt"} <= kept
    assert m.counts.skipped == 2


def test_no_conversion_worker_outlives_an_ingest(hostile_ws):
    from taskling.data import ingest as ingest_lib

    assert sandbox_workers() == []
    m, _, _ = ingested(hostile_ws)
    assert m.counts.added >= 4  # the files were converted (in workers: ingest.isolate is on by default) ...
    assert sandbox_workers() == [] and ingest_lib.SANDBOXES == {}  # ... and every worker ended with the ingest


def test_a_file_past_the_time_limit_is_skipped_and_the_rest_goes_on(tmp_path, tiny_model_dir):
    """A 3 KB PDF of nested form XObjects takes pypdf seconds at any load; the workspace's own small
    files take milliseconds, and the worker's start-up is not counted against any file."""
    path = write_workspace(tmp_path, tiny_model_dir, sources=["docs/*"], ingest__embed=False,
                           ingest__convert_timeout_s=0.5)
    (tmp_path / "docs" / "xobjects.pdf").write_bytes(hostile.xobject_bomb(6))
    m, skipped, kept = ingested(path)
    assert "convert_timeout_s=0.5" in skipped["docs/xobjects.pdf"] and "stopped" in skipped["docs/xobjects.pdf"]
    assert {"docs/sqlite.md", "docs/python.txt", "docs/node.html"} <= kept and m.counts.skipped == 1


# ---------------------------------------------------------------------------------------- one writer per workspace
def hold_lock(root: Path, command: str) -> subprocess.Popen:
    code = ("import sys, time; from taskling.core.lock import acquire; "
            f"acquire({str(root)!r}, {command!r}); print('held', flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_first(tmp_path, tiny_model_dir, cli):
    path = write_workspace(tmp_path, tiny_model_dir, ingest__embed=False)
    proc = hold_lock(tmp_path, "taskling ingest --set ingest.chunk_tokens=64")
    try:
        with pytest.raises(WorkspaceBusy) as e:
            acquire(tmp_path)
        msg = str(e.value)
        assert f"pid {proc.pid}" in msg and "taskling ingest --set ingest.chunk_tokens=64" in msg and "since" in msg
        one_line_error(cli("ingest", "--set", "ingest.chunk_tokens=128", cwd=tmp_path), f"pid {proc.pid}")
        assert not (tmp_path / ".taskling" / "pile.db").exists()  # the refused command wrote nothing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with workspace_lock(tmp_path, "test"):  # kill -9 leaves no stale lock
        with workspace_lock(tmp_path, "test again"):  # and the lock is re-entrant in one process
            pass
    assert cli("ingest", cwd=tmp_path).exit_code == 0 and path.exists()


def test_changing_the_chunking_re_chunks_every_file(tmp_path, tiny_model_dir):
    from taskling.data.pile import Pile
    from taskling.stages import ingest

    path = write_workspace(tmp_path, tiny_model_dir, ingest__embed=False)
    quiet = Console(stderr=True, quiet=True)

    def run(tokens: int):
        ctx = Context(load_config(path, [f"ingest.chunk_tokens={tokens}"]), console=quiet)
        m = ingest.run(ctx)
        with Pile(ctx.ws.pile_db) as pile:
            return m, tuple(pile.db.execute("SELECT count(*), max(n_tokens) FROM chunks").fetchone())

    first, small = run(64)
    again, _ = run(64)
    second, large = run(512)
    assert again.skipped and first.counts.added == 3
    assert second.counts.updated == 3 and second.counts.unchanged == 0
    assert small[0] > large[0] and small[1] < large[1]  # the pile is chunked the way the new manifest says


def test_a_lock_taken_and_released_leaves_no_holder_named(tmp_path):
    path = acquire(tmp_path, "taskling run")
    assert json.loads(path.read_text())["command"] == "taskling run"
    release(path)
    assert path.read_text() == ""
