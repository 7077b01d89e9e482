"""The UI's Task page in headless Chromium (issue 29): taskling.yaml edited in the page, a bad edit
refused with the command line's message (and the file left as it was), and a stage started from the
page's run buttons shows its progress and finishes; one run at a time per workspace."""
from __future__ import annotations

import time

import httpx
import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.workspace import Context



def wait_until(check, timeout: float = 60) -> None:
    """Poll from Python: the page's CSP forbids the eval that wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page never got there"
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
