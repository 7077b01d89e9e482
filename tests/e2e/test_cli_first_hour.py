"""The first hour of a new user (issue 29): a teacher that is down, compressed and suffix-less documents,
an empty pile, thin label pools, the dry run's samples, missing stages and the output glitches."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import at_a_terminal, one_line_error, write_workspace

TASKLING = str(Path(sys.executable).parent / "taskling")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_teacher_that_is_down_is_found_in_seconds_and_reaches_log_errors(cli, tmp_path, tiny_model_dir):
    port = closed_port()
    write_workspace(tmp_path, tiny_model_dir, teacher__backend="openai", teacher__model="m",
                    teacher__base_url=f"http://127.0.0.1:{port}/v1")
    assert cli("ingest", cwd=tmp_path).exit_code == 0
    t0 = time.monotonic()
    r = cli("generate", "--dry-run", cwd=tmp_path)
    one_line_error(r, "cannot be reached", "connection refused", "teacher.base_url", "run the same command again")
    assert time.monotonic() - t0 < 60  # the probe, not teacher.down_after_s (300 s)
    out = cli("log", "--errors", "--json", cwd=tmp_path)
    errors = json.loads(out.output)
    assert errors["by_kind"] == {"unavailable": 1}
    assert "cannot be reached" in errors["errors"][0]["detail"]


def test_a_teacher_that_hangs_says_so_and_ctrl_c_is_one_line(tmp_path, tiny_model_dir, cli):
    """A server that takes connections but never answers: a line every few seconds while waiting, and
    Ctrl-C ends the command with one line, no 'Event loop is closed' traceback."""
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(64)  # never accepted: connections complete, requests never get a reply
        port = hang.getsockname()[1]
        write_workspace(tmp_path, tiny_model_dir, teacher__backend="openai", teacher__model="m",
                        teacher__base_url=f"http://127.0.0.1:{port}/v1", teacher__timeout_s=1.0,
                        teacher__max_retries=50, teacher__concurrency=2)
        assert cli("ingest", cwd=tmp_path).exit_code == 0
        proc = subprocess.Popen([TASKLING, "generate", "--dry-run"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"},
                                preexec_fn=at_a_terminal)
        lines: list[str] = []
        os.set_blocking(proc.stderr.fileno(), False)
        deadline = time.monotonic() + 240
        while not any("not answering for" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no waiting line: " + "".join(lines)
            chunk = proc.stderr.readline()
            if chunk:
                lines.append(chunk)
            else:
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert "interrupted" in text and "Traceback" not in text and "Event loop is closed" not in text, text
    assert "teacher.down_after_s" in text
    assert len(rest.strip().splitlines()) <= 3, rest


def test_compressed_single_files_and_suffixless_text_are_read_with_the_archive_limits(cli, tmp_path, tiny_model_dir):
    import bz2
    import gzip
    import lzma

    write_workspace(tmp_path, tiny_model_dir)
    deb = tmp_path / "debian"
    deb.mkdir()
    (deb / "changelog.Debian.gz").write_bytes(gzip.compress(b"zlib (1:1.3) unstable; urgency=low\n  * gzipped changelog line\n"))
    (deb / "notes.txt.bz2").write_bytes(bz2.compress(b"bzipped notes about json_extract in sqlite\n"))
    (deb / "syslog.xz").write_bytes(lzma.compress(b"xz compressed syslog: node crypto createHash failed\n"))
    (deb / "README.Debian").write_text("Plain text README for Debian users, read by its content.\n")
    (deb / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (deb / "bomb.gz").write_bytes(gzip.compress(b"a" * (8 * 2**20)))  # 8 MB from ~8 KB: over 100:1
    (deb / "fake.gz").write_bytes(b"not gzip at all, only text pretending\n")
    r = cli("ingest", str(deb), "--json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    docs = json.loads((tmp_path / "runs" / "tiny-router" / "round-0" / "ingest" / "documents.json").read_text())
    read = {d["path"] for d in docs["documents"]}
    for inner in ("changelog.Debian.gz!/changelog.Debian", "notes.txt.bz2!/notes.txt", "syslog.xz!/syslog",
                  "README.Debian"):
        assert any(p.endswith(inner) for p in read), (inner, read)
    skipped = {Path(s["path"]).name: s["reason"] for s in docs["skipped"]}
    assert "max_archive_ratio" in skipped["bomb.gz"]
    assert "not text" in skipped["blob.bin"] and len(skipped["blob.bin"]) < 160
    assert "not gzip data" in skipped["fake.gz"]
    assert "-sniffed" not in r.output and ".html-sniffed" not in r.output and ".docx, " not in r.output
    search = json.loads(cli("pile", "search", "gzipped changelog", "--mode", "fts", "--json", cwd=tmp_path).output)
    assert search["hits"] and "changelog.Debian" in search["hits"][0]["path"]


def test_an_empty_pile_stops_ingest_with_what_to_do(cli, tmp_path, tiny_model_dir):
    write_workspace(tmp_path, tiny_model_dir, sources=["blobs"])
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "a.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "blobs" / "b.txt").write_bytes(b"")
    r = cli("ingest", cwd=tmp_path)
    one_line_error(r, "the pile is empty", "2 file(s)", "sources:", "taskling ingest")
    assert r.exit_code != 0
    assert not (tmp_path / "runs" / "tiny-router" / "round-0" / "ingest" / "manifest.json").exists()


def test_a_label_no_document_matches_is_flagged_at_ingest_and_in_the_dry_run(cli, tmp_path, tiny_model_dir):
    import yaml

    path = write_workspace(tmp_path, tiny_model_dir)
    cfg = yaml.safe_load(path.read_text())
    cfg["task"]["labels"]["kubernetes"] = "Kubernetes pods, helm charts, kubectl"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = cli("ingest", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "label 'kubernetes': no document in the pile matches it" in r.output
    assert "label 'sqlite'" not in r.output
    dry = cli("generate", "--dry-run", "--json", cwd=tmp_path)
    assert dry.exit_code == 0, dry.output
    est = json.loads(dry.output[dry.output.index("{"):])
    flagged = {p["label"]: p["state"] for p in est["thin_labels"]}
    # (the tiny pile's python chunks are all under the 20 words a pool needs: flagged too, rightly)
    assert flagged["kubernetes"] == "empty" and "sqlite" not in flagged


def test_the_dry_run_shows_samples_with_their_source_and_curations_verdict(cli, tmp_path, tiny_model_dir):
    """The scripted 'echo-question' teacher repeats what it is shown: a copy of a task example is a
    duplicate of it, as curate would say."""
    write_workspace(tmp_path, tiny_model_dir)
    assert cli("ingest", cwd=tmp_path).exit_code == 0
    r = cli("generate", "--dry-run", "--json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    est = json.loads(r.output[r.output.index("\n{") + 1:] if "\n{" in r.output else r.output[r.output.index("{"):])
    samples = est["samples"]
    assert 3 <= len(samples) <= 5
    for n, s in enumerate(samples, 1):
        assert s["verdict"] == "kept" or s["verdict"].startswith("dropped: ")
        assert s["source"].startswith("docs/")
        assert f"sample {n}: {s['verdict']}" in r.output
    from taskling.core.config import load_config
    from taskling.curation.preview import verdicts

    cfg = load_config(tmp_path / "taskling.yaml", [])
    shot = cfg.task.examples[0]
    out = verdicts(cfg, [{"input": shot.input, "output": shot.output, "chunks": [], "spans": []},
                         {"input": "x", "output": "sqlite", "chunks": [], "spans": []},
                         {"input": "How do I read one value out of a JSON column with json_extract in sqlite?",
                          "output": "sqlite", "chunks": [], "spans": []}],
                   lambda ex: "The sqlite json_extract function reads a value at a path from a JSON column.")
    assert out[0]["verdict"] == "dropped: exact duplicate (of task.examples[0])"
    assert out[1]["verdict"].startswith("dropped: ") and "short" in out[1]["verdict"]
    assert out[2]["verdict"] == "kept"


def test_output_glitches_of_the_first_hour(cli, tmp_path, tiny_model_dir):
    from taskling import __version__

    assert cli("--version").output.strip() == f"taskling {__version__}"
    assert "Usage" in cli("-h").output and "Usage" in cli("pile", "-h").output and "Usage" in cli("ingest", "-h").output
    assert "Overwrite the task file" in cli("init", "--help").output
    ui_help = " ".join(cli("ui", "--help").output.split())
    assert all(page in ui_help for page in ("pile", "examples", "runs", "failures", "playground"))
    write_workspace(tmp_path, tiny_model_dir, ingest__embed=True)
    one_line_error(cli("ingest", "--set", "train.stepz=5", cwd=tmp_path), "--set train.stepz=5", "did you mean 'steps'")
    r = cli("ingest", "--set", "budget.examples=-1", cwd=tmp_path)
    one_line_error(r, "--set budget.examples=-1")
    assert "taskling.yaml" not in r.output
    one_line_error(cli("ingest", "--set", "budjet.examples=5", cwd=tmp_path), "--set budjet.examples=5", "'budget'")
    assert cli("ingest", cwd=tmp_path).exit_code == 0
    # search in both modes: one list, each chunk once, and a word while the embedder loads
    both = cli("pile", "search", "json_extract reads a value", "--limit", "5", "--json", cwd=tmp_path)
    hits = json.loads(both.output[both.output.index("{"):])["hits"]
    keys = [h["chunk"] for h in hits]
    assert len(keys) == len(set(keys)) and 0 < len(keys) <= 5
    assert any(h["by"] == "fts+embed" for h in hits) and "loading the embedding model" in both.output
    assert all(set(h["scores"]) == set(h["by"].split("+")) for h in hits)
    plain = cli("pile", "search", "json_extract", "--mode", "fts", cwd=tmp_path).output
    assert "\\n" not in plain and "'The sqlite" not in plain
    # pile show: a readable block, not a Python dict
    shown = cli("pile", "show", keys[0], cwd=tmp_path).output
    assert "{'" not in shown and "chunk " + keys[0] in shown and "characters " in shown


def test_log_key_shows_roles_without_markup(cli, tmp_path, tiny_model_dir):
    write_workspace(tmp_path, tiny_model_dir)
    assert cli("ingest", cwd=tmp_path).exit_code == 0
    assert cli("generate", "--dry-run", cwd=tmp_path).exit_code == 0
    key = json.loads(cli("log", "--json", "--limit", "1", cwd=tmp_path).output)["calls"][0]["key"]
    out = cli("log", key[:12], cwd=tmp_path).output
    assert "[bold]" not in out and "[/]" not in out
    assert "user:" in out and "reply:" in out


def test_init_with_flags_writes_this_tasks_file_first_keys_first(cli, tmp_path):
    import yaml

    from taskling.core.config import load_config

    (tmp_path / "tickets").mkdir()
    (tmp_path / "tickets" / "t1.txt").write_text("I was charged twice for my invoice this month. " * 5)
    r = cli("init", "--type", "classify", "--labels", "billing, bug,account", "--docs", "tickets",
            "--noun", "support ticket", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    text = (tmp_path / "taskling.yaml").read_text()
    cfg = load_config(tmp_path / "taskling.yaml", [])
    assert cfg.task.type == "classify" and list(cfg.task.labels) == ["billing", "bug", "account"]
    assert cfg.sources == ["tickets"] and cfg.task.input_noun == "support ticket"
    head, folded = text.split("# Everything below is optional", 1)
    assert "labels:" in head and "sources:" in head and "ticket-router" not in text
    assert all(line.startswith("#") or not line.strip() for line in folded.splitlines()[1:])
    assert sorted(yaml.safe_load(text)) == ["budget", "sources", "task", "teacher"]
    assert cli("ingest", cwd=tmp_path).exit_code == 0  # the file runs as written
    # extract takes fields; every mistake is one line naming the flag
    assert cli("init", "--force", "--type", "extract", "--fields", "party,date", "--docs", "tickets",
               cwd=tmp_path).exit_code == 0
    assert set(load_config(tmp_path / "taskling.yaml", []).task.output_schema["properties"]) == {"party", "date"}
    one_line_error(cli("init", "--force", "--type", "classify", "--labels", "billing", "--docs", "tickets",
                       cwd=tmp_path), "at least two labels", "--labels")
    one_line_error(cli("init", "--force", "--type", "sort", "--docs", "tickets", cwd=tmp_path), "--type sort",
                   "classify")
    one_line_error(cli("init", "--force", "--type", "answer", "--docs", "nowhere", cwd=tmp_path), "--docs nowhere")
    one_line_error(cli("init", "--type", "answer", "--docs", "tickets", cwd=tmp_path), "already exists", "--force")
    assert cli("init", "--force", "--type", "answer", "--docs", "tickets", cwd=tmp_path).exit_code == 0
    assert load_config(tmp_path / "taskling.yaml", []).task.type == "answer"
    assert not list(tmp_path.glob("*.new"))
