"""The UI's Task page in headless Chromium (issue 29): taskling.yaml edited in the page, whole or
through its fields (labels, examples, sources; the file's comments kept), a bad edit refused with the
command line's message (and the file left as it was), and a stage started from the page's run
buttons shows its progress and finishes; one run at a time per workspace. The UI stopped with Ctrl-C
interrupts its run once and leaves none of the run's processes behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from rich.console import Console

from conftest import at_a_terminal, write_workspace
from taskling.core.config import load_config
from taskling.core.workspace import Context



def wait_until(check, timeout: float = 60, what: str = "the page never got there") -> None:
    """Poll from Python: the page's CSP forbids the eval that wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    from taskling.stages import ingest
    from taskling.ui import start

    path = write_workspace(tmp_path, tiny_model_dir)
    ctx = Context(load_config(path, []), console=Console(stderr=True, quiet=True))
    ingest.run(ctx)
    srv, url, token = start(ctx)
    yield {"url": url, "root": tmp_path, "token": token, "app": srv}
    srv.should_exit = True



def test_task_page_edits_taskling_yaml_and_refuses_a_bad_edit_with_the_cli_message(server, browser, cli):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server["url"] + "/#/task")
    page.wait_for_selector("#task-yaml")
    path = server["root"] / "taskling.yaml"
    before = path.read_text()
    assert page.input_value("#task-yaml") == before
    bad = before.replace("budget:", "budjet:")
    page.fill("#task-yaml", bad)
    page.click("#task-save")
    wait_until(lambda: page.get_attribute("#task-note", "class") == "err")
    shown = page.inner_text("#task-note")
    path.with_name("bad.yaml").write_text(bad)
    cli_says = cli("ingest", "-c", "bad.yaml", cwd=server["root"]).output
    assert "unknown key 'budjet'; did you mean 'budget'" in shown
    assert shown.replace("taskling.yaml", "bad.yaml") in cli_says  # the command line's own message
    assert path.read_text() == before and not path.with_name("taskling.yaml.new").exists()
    page.fill("#task-yaml", before.replace("examples: 30", "examples: 12"))
    page.click("#task-save")
    wait_until(lambda: page.inner_text("#task-note").startswith("saved"))
    assert load_config(path, []).budget.examples == 12
    assert errors == []
    page.screenshot(path=str(server["root"] / "task-page.png"), full_page=True)


def save_fields(page, wanted: str) -> str:
    """Click the fields' Save and wait until its note says `wanted` (saved) or an error; the note's text."""
    page.click("#form-save")
    wait_until(lambda: page.inner_text("#form-note").startswith(wanted)
               or page.get_attribute("#form-note", "class") == "err")
    return page.inner_text("#form-note")


def test_the_fields_edit_labels_and_examples_and_a_bad_edit_is_refused_with_the_cli_message(server, browser, cli):
    path = server["root"] / "taskling.yaml"
    path.write_text("# the router, as the team wrote it\n" + path.read_text().replace(
        "input_noun: developer question", "input_noun: developer question  # who asks").replace(
        "budget:", "budget:  # kept small for the tests"))
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server["url"] + "/#/task")
    page.wait_for_selector("#t-labels .label-row")
    labels, examples = page.locator("#t-labels .label-row"), page.locator("#t-examples .example-row")
    assert [labels.nth(i).locator(".label-name").input_value() for i in range(3)] == ["sqlite", "node", "python"]
    labels.nth(1).locator(".label-desc").fill("Node.js: the fs and crypto modules")
    labels.nth(2).locator("button.remove").click()  # python goes
    page.click("#t-labels-add")
    labels.nth(2).locator(".label-name").fill("go")
    labels.nth(2).locator(".label-desc").fill("Go net/http handlers")
    examples.nth(0).locator(".ex-input").fill("How do I set one key with json_set in SQLite?")
    page.click("#t-examples-add")
    examples.nth(2).locator(".ex-input").fill("How do I write an HTTP handler in Go?")
    examples.nth(2).locator(".ex-output").fill("go")
    assert save_fields(page, "saved") == "saved taskling.yaml (tiny-router, classify)"
    task = load_config(path).task
    assert task.labels == {"sqlite": "SQLite json_extract, FTS5 MATCH, bm25", "node": "Node.js: the fs and crypto modules",
                           "go": "Go net/http handlers"}
    assert [(e.input, e.output) for e in task.examples] == [
        ("How do I set one key with json_set in SQLite?", "sqlite"), ("How do I watch a folder with fs.watch?", "node"),
        ("How do I write an HTTP handler in Go?", "go")]
    saved = path.read_text()
    assert saved.startswith("# the router, as the team wrote it\n")  # the file's comments are kept
    assert "input_noun: developer question  # who asks" in saved and "budget:  # kept small for the tests" in saved
    assert page.input_value("#task-yaml") == saved  # the whole file beside shows what was saved
    # a bad edit: an example whose output is not a label is refused with the command line's message
    page.locator("#t-examples .example-row").nth(2).locator(".ex-output").fill("nod")
    shown = save_fields(page, "saved")
    assert page.get_attribute("#form-note", "class") == "err"
    assert "example output 'nod' is not one of the labels ['sqlite', 'node', 'go']; did you mean 'node'?" in shown
    data = yaml.safe_load(saved)
    data["task"]["examples"][2]["output"] = "nod"
    path.with_name("bad.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert shown.replace("taskling.yaml", "bad.yaml") in cli("ingest", "-c", "bad.yaml", cwd=server["root"]).output
    assert path.read_text() == saved and not path.with_name("taskling.yaml.new").exists()
    # a type that is not one: the command line's did-you-mean
    page.locator("#t-examples .example-row").nth(2).locator(".ex-output").fill("go")
    page.fill("#t-type", "clasify")
    shown = save_fields(page, "saved")
    assert "task.type: 'clasify' is not a task type; did you mean 'classify'?" in shown
    data["task"]["examples"][2]["output"], data["task"]["type"] = "go", "clasify"
    path.with_name("bad.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert shown.replace("taskling.yaml", "bad.yaml") in cli("ingest", "-c", "bad.yaml", cwd=server["root"]).output
    # what only the page can get wrong: two rows for one label
    page.fill("#t-type", "classify")
    page.click("#t-labels-add")
    page.locator("#t-labels .label-row").nth(3).locator(".label-name").fill("go")
    assert save_fields(page, "saved") == "label 'go' is named twice; give each label one row"
    assert path.read_text() == saved
    # the guard of every write: the token, this server's own pages, JSON; and the body's shape
    url, token = server["url"] + "/api/task/form", {"X-Taskling-Token": server["token"]}
    assert httpx.post(url, json={"form": {"type": "answer"}}).status_code == 403
    assert httpx.post(url, json={"form": {"type": "answer"}}, headers=token | {"Origin": "http://evil.example"}
                      ).status_code == 403
    assert httpx.post(url, content=b'{"form": {"type": "answer"}}',
                      headers=token | {"Content-Type": "text/plain"}).status_code == 415
    r = httpx.post(url, json={"form": "type: answer"}, headers=token)
    assert r.status_code == 400 and "send {form: {...}} as JSON" in r.text
    assert path.read_text() == saved
    assert errors == []


def test_a_run_started_from_the_page_shows_progress_and_finishes(server, browser, monkeypatch):
    monkeypatch.setenv("TASKLING_SCRIPTED_DELAY_S", "0.1")  # the child inherits it: a generate long enough to watch
    page = browser.new_page()
    page.goto(server["url"] + "/#/task")
    page.wait_for_selector("button[data-stage=generate]")
    page.click("button[data-stage=generate]")
    wait_until(lambda: page.inner_text("#job").startswith("taskling generate: running"))
    # one run at a time per workspace
    r = httpx.post(server["url"] + "/api/job", json={"stage": "curate"}, headers={"X-Taskling-Token": server["token"]})
    assert r.status_code == 400 and "still running" in r.json()["error"]
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    while "finished" not in page.inner_text("#job"):
        assert time.monotonic() < deadline, page.inner_text("#job")
        seen.add(page.inner_text("#progress"))
        time.sleep(0.2)
    assert page.inner_text("#job").startswith("taskling generate: finished (exit 0)"), page.inner_text("#job")
    assert any(s.startswith("generate ") for s in seen), seen  # the header's live progress showed it
    assert (server["root"] / "runs" / "tiny-router" / "round-0" / "generate" / "manifest.json").exists()
    bad = httpx.post(server["url"] + "/api/job", json={"stage": "rm -rf"}, headers={"X-Taskling-Token": server["token"]})
    assert bad.status_code == 400 and "not something to run" in bad.json()["error"]
    assert httpx.post(server["url"] + "/api/job", json={"stage": "curate"}).status_code == 403  # no token


# A run as the page starts it, standing in for `taskling run`: it counts the Ctrl-Cs it gets, has a worker
# of its own that does not heed Ctrl-C (as a stuck converter would not), and takes a while over its clean-up
# (the last checkpoint being saved), where a second Ctrl-C would cut it short. It runs in the workspace.
RUN = """
import os, signal, subprocess, sys, time
from pathlib import Path

got = []
def count(*_):
    got.append(1)
    Path("sigints").write_text(str(len(got)))
signal.signal(signal.SIGINT, count)
worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                           "open('worker', 'w').close(); time.sleep(600)"])
while not Path("worker").exists():
    time.sleep(0.01)
Path("pids.new").write_text(f"{os.getpid()} {worker.pid}")
Path("pids.new").rename("pids")
while not got:
    time.sleep(0.01)
end = time.monotonic() + 3
while time.monotonic() < end:
    time.sleep(0.01)
"""

# `taskling ui` as far as its runs go: the page starts one, the UI serves until Ctrl-C, and stopping
# closes its jobs (ui/app.py serve).
UI = """
import sys, time
from pathlib import Path
from taskling.ui.taskpage import Jobs

root = Path(sys.argv[1])
jobs = Jobs(root, root / "ui-run.log", command=(sys.executable, sys.argv[2]))
try:
    jobs.start("run")
    while True:
        time.sleep(0.05)
finally:
    jobs.close()
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stopped_by(sig: int, script: str, tmp_path: Path) -> tuple[int, str]:
    """`script` (a UI that starts RUN as its page would) started as a terminal's foreground command, sent `sig`
    at its process group once the run is up: checks the run got one SIGINT and that none of its processes
    outlived the UI. (the UI's exit code, its stderr)"""
    (tmp_path / "run.py").write_text(RUN)
    ui = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(tmp_path / "run.py")],
                          preexec_fn=at_a_terminal, process_group=0, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        wait_until(lambda: (tmp_path / "pids").exists() or ui.poll() is not None, what="the run never started")
        log = tmp_path / "ui-run.log"
        assert ui.poll() is None, ui.stderr.read() + (log.read_text() if log.exists() else "")
        pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
        os.killpg(ui.pid, sig)
        ui.wait(timeout=120)
        err = ui.stderr.read()
        assert (tmp_path / "sigints").read_text() == "1", err[-2000:]  # once, and the run had its clean-up whole
        wait_until(lambda: not any(alive(p) for p in pids), 30, "the run or its worker outlived the UI")
        return ui.returncode, err
    finally:
        for pid in [p for p in pids if alive(p)]:
            os.kill(pid, signal.SIGKILL)
        if ui.poll() is None:
            ui.kill()
            ui.wait()


def test_ctrl_c_on_the_ui_interrupts_its_run_once_and_leaves_none_of_its_processes(tmp_path):
    """A Ctrl-C at the terminal goes to the UI's process group. The run used to be in it too, so it got that
    Ctrl-C and then the UI's own on closing, in the middle of its clean-up; and the UI's last kill reached the
    run but not the run's workers."""
    stopped_by(signal.SIGINT, UI, tmp_path)  # Ctrl-C


# The real `taskling ui` server (ui/app.py serve) with a run started as the page starts one.
SERVED = """
import sys
from pathlib import Path
from rich.console import Console
from taskling.core.config import load_config
from taskling.core.workspace import Context
from taskling.ui import app as ui

root = Path(sys.argv[1])
made = ui.create_app

def create(ctx, remote=False):
    app, token = made(ctx, remote=remote)
    app.state.jobs.command = (sys.executable, sys.argv[2])
    app.state.jobs.start("run")
    return app, token

ui.create_app = create
try:
    ui.serve(Context(load_config(root / "taskling.yaml"), console=Console(stderr=True, quiet=True)), port=0)
except KeyboardInterrupt:  # as the CLI ends on Ctrl-C
    sys.exit(130)
"""


def test_a_closed_terminal_stops_the_ui_and_its_run_as_ctrl_c_does(tmp_path, tiny_model_dir):
    """The run has a session of its own, so a terminal's hangup (SIGHUP) never reaches it: the UI must hear it
    and stop as on Ctrl-C, passing one SIGINT to the run and leaving none of its processes (uvicorn itself
    handles only SIGINT and SIGTERM; without this the UI died at once and the run went on alone)."""
    write_workspace(tmp_path, tiny_model_dir)
    code, err = stopped_by(signal.SIGHUP, SERVED, tmp_path)  # the terminal closes
    assert code == 130, err[-2000:]  # stopped as on Ctrl-C, not killed by the hangup


# A run that ends by itself and leaves a worker of its own behind (in its process group), as a hung
# converter or a server it started could.
LEAVES_A_WORKER = """
import subprocess, sys
from pathlib import Path
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
Path(sys.argv[1]).write_text(str(worker.pid))
"""


def test_a_run_that_ended_by_itself_leaves_no_worker_once_the_ui_closes(tmp_path):
    from taskling.ui.taskpage import Jobs

    (tmp_path / "run.py").write_text(LEAVES_A_WORKER)
    jobs = Jobs(tmp_path, tmp_path / "ui-run.log", command=(sys.executable, str(tmp_path / "run.py"),
                                                            str(tmp_path / "worker")))
    jobs.start("run")  # the stage is one more argument the script leaves alone
    worker = None
    try:
        wait_until(lambda: jobs.status()["exit_code"] is not None, what="the run never ended")
        assert jobs.status()["exit_code"] == 0, jobs.status()["log"]
        worker = int((tmp_path / "worker").read_text())
        assert alive(worker)
        jobs.close()
        wait_until(lambda: not alive(worker), 30, "the finished run's worker outlived the UI")
    finally:
        if worker is not None and alive(worker):
            os.kill(worker, signal.SIGKILL)
