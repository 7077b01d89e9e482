"""taskling ui in headless Chromium (Playwright driving Debian's chromium), against a workspace
built with the scripted teacher and the tiny student: pages load without console errors, the
pile is searched and a chunk is shown in its document, three examples are reviewed with the
keyboard and the decisions are on disk, a document holding <script> shows as text, and the
API refuses writes without the session token and reads outside the workspace."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.workspace import Context, read_jsonl

EVIL = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned=2\"> The json_extract trick, in HTML."


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, tiny_model_dir):

    from taskling.report import build as report
    from taskling.stages import curate, evaluate, generate, ingest, train
    from taskling.ui import start

    root = tmp_path_factory.mktemp("ui")
    path = write_workspace(root, tiny_model_dir, sources=["docs/*.md", "docs/*.html", "docs/*.txt"], ingest__embed=True)
    (root / "docs" / "evil.txt").write_text(EVIL * 3, encoding="utf-8")
    cfg = load_config(path, [])
    ctx = Context(cfg, console=Console(stderr=True, quiet=True))
    for stage in (ingest, generate, curate, train, evaluate):
        stage.run(ctx)
    report.write(ctx)
    server, url, token = start(ctx)
    yield {"url": url, "root": root, "ctx": ctx, "token": token}
    server.should_exit = True



def open_page(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors


def test_pile_page_searches_and_shows_the_chunk_in_its_document(ui_server, browser):
    page, errors = open_page(browser, ui_server["url"] + "/#/pile")
    page.wait_for_selector("#topics .tile, #topics:empty", state="attached")
    page.fill("#q", "json_extract")
    page.press("#q", "Enter")
    page.wait_for_selector("#hits .hit")
    assert "json_extract" in page.inner_text("#hits")
    page.click("#hits .hit >> nth=0")
    page.wait_for_selector("#detail mark#chunk")
    assert "json_extract" in page.inner_text("#detail mark#chunk")
    page.screenshot(path=str(ui_server["root"] / "pile.png"))
    # by meaning: the pile's own embedder, no shared word needed
    page.select_option("#mode", "semantic")
    page.fill("#q", "pulling one value out of a JSON document stored in the database")
    page.press("#q", "Enter")
    page.wait_for_selector("#hits .hit")
    first = page.inner_text("#hits .hit >> nth=0")
    assert "json" in first.lower(), first
    assert errors == []


def test_a_document_with_script_in_it_shows_as_text(ui_server, browser):
    page, errors = open_page(browser, ui_server["url"] + "/#/pile")
    page.fill("#q", "trick HTML")
    page.press("#q", "Enter")
    page.wait_for_selector("#hits .hit")
    hit = page.locator("#hits .hit", has_text="window.pwned").first
    hit.click()
    page.wait_for_selector("#detail mark#chunk")
    assert "<script>window.pwned = 1</script>" in page.inner_text("#detail")
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("#detail script, #detail img, #hits img").count() == 0
    assert errors == []


def test_three_examples_reviewed_with_the_keyboard_are_on_disk(ui_server, browser):
    from playwright.sync_api import expect

    page, errors = open_page(browser, ui_server["url"] + "/#/examples")
    page.wait_for_selector("#examples .ex.sel")
    ids = page.eval_on_selector_all("#examples .ex", "els => els.slice(0, 3).map(e => e.dataset.id)")
    page.keyboard.press("a")
    expect(page.locator("#status")).to_contain_text("saved")  # not an error message
    page.wait_for_selector(f'#examples .ex[data-id="{ids[0]}"] .tag.accept')
    page.keyboard.press("r")
    page.wait_for_selector(f'#examples .ex[data-id="{ids[1]}"] .tag.reject')
    page.keyboard.press("g")  # the third: marked gold
    expect(page.locator("#status")).to_contain_text("gold saved")  # (selectors, not eval: the page's CSP forbids it)
    page.screenshot(path=str(ui_server["root"] / "examples.png"))
    decided = {r["id"]: r["decision"] for r in read_jsonl(ui_server["root"] / ".taskling" / "review.jsonl")}
    assert decided[ids[0]] == "accept" and decided[ids[1]] == "reject"
    gold = read_jsonl(ui_server["root"] / "gold.jsonl")
    third = next(e for e in read_jsonl(ui_server["ctx"].stage_dir("generate") / "examples.jsonl") if e["id"] == ids[2])
    assert gold[-1] == {"input": third["input"], "output": third["output"]}
    # the decisions survive a reload and the next curate applies them, as an imported review file would
    page.reload()
    page.wait_for_selector(f'#examples .ex[data-id="{ids[0]}"] .tag.accept')
    from taskling.stages import curate

    ctx = ui_server["ctx"]
    curate.run(Context(ctx.cfg, console=Console(stderr=True, quiet=True), force=True))
    kept = {e["id"]: e for name in ("train.jsonl", "eval.jsonl") for e in read_jsonl(ctx.stage_dir("curate") / name)}
    assert ids[1] not in kept and kept.get(ids[0], {}).get("human") == "accepted"
    assert errors == []


def test_writes_need_the_session_token_and_nothing_outside_is_served(ui_server):
    url = ui_server["url"]
    ex = read_jsonl(ui_server["ctx"].stage_dir("generate") / "examples.jsonl")[0]
    r = httpx.post(url + "/api/review", json={"id": ex["id"], "decision": "accept"})
    assert r.status_code == 403
    r = httpx.post(url + "/api/review", json={"id": ex["id"], "decision": "accept"},
                   headers={"X-Taskling-Token": ui_server["token"], "Origin": "http://evil.example"})
    assert r.status_code == 403
    for bad in ("/static/../../taskling.yaml", "/static/%2e%2e%2ftaskling.yaml", "/static/index.html",
                "/static/..%2f..%2f..%2fgold.jsonl"):
        assert httpx.get(url + bad).status_code == 404, bad
    page = httpx.get(url + "/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert json.loads(httpx.get(url + "/api/state").text)["task"]["name"] == "tiny-router"


def test_runs_and_failures_pages_show_the_run(ui_server, browser):
    page, errors = open_page(browser, ui_server["url"] + "/#/runs")
    page.wait_for_selector("#run-body table")
    body = page.inner_text("#run-body")
    assert "student" in body and "gold" in body and "Curation funnel" in body
    rep = json.loads((ui_server["ctx"].run_dir / "report.json").read_text())
    spend = rep["generation"]["spend_by_arm"]
    assert "Teacher spend per arm" in body and len(spend) >= 2
    assert sum(a["tokens"] for a in spend) == rep["generation"]["counts"]["teacher_tokens"]
    assert sum(a["jobs"] for a in spend) == rep["generation"]["counts"]["jobs"]
    assert page.locator("#run-body svg polyline").count() >= 1  # the loss curve
    page.screenshot(path=str(ui_server["root"] / "runs.png"))
    rep = json.loads((ui_server["ctx"].run_dir / "report.json").read_text())
    expected = len(rep.get("failures") or [])
    page.goto(ui_server["url"] + "/#/failures")
    # wait for this page's own content: the runs page's p.meta may still be there for a moment
    page.wait_for_selector(".failure" if expected else "text=No failures recorded")
    assert page.locator(".failure").count() == expected
    assert errors == []


def test_live_progress_of_a_running_stage_changes_in_the_page(ui_server, browser, monkeypatch):
    from taskling.stages import generate, ingest

    page, errors = open_page(browser, ui_server["url"] + "/#/examples")
    ctx = ui_server["ctx"]
    cfg = load_config(ctx.cfg.root / "taskling.yaml", ["seed=7"])  # other requests: nothing cached
    monkeypatch.setenv("TASKLING_SCRIPTED_DELAY_S", "0.2")
    live = Context(cfg, run_id="live", console=Console(stderr=True, quiet=True))
    t = threading.Thread(target=lambda: (ingest.run(live), generate.run(live)), daemon=True)
    t.start()
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline and len([s for s in seen if s.startswith("generate ")]) < 2:
        seen.add(page.inner_text("#progress"))
        time.sleep(0.2)
    t.join(timeout=120)
    running = sorted(s for s in seen if s.startswith("generate ") and "ETA" in s)
    assert len(running) >= 2, seen  # the count moved while the stage ran, with an ETA
    page.screenshot(path=str(ui_server["root"] / "progress.png"))
    assert errors == []


def test_an_example_is_fixed_in_the_page_and_the_filters_narrow_the_list(ui_server, browser):
    from playwright.sync_api import expect

    page, errors = open_page(browser, ui_server["url"] + "/#/examples")
    page.wait_for_selector("#examples .ex.sel")
    total = page.locator("#examples .ex").count()
    arms = page.eval_on_selector_all("#f-arm option", "os => os.slice(1).map(o => o.value)")
    assert len(arms) >= 2, arms  # the facets list the arms with their counts
    page.select_option("#f-arm", arms[0])
    page.wait_for_selector('#examples[data-query*="arm=%5B"] .ex')  # the list now shows the filtered rows
    expect(page.locator("#status")).not_to_contain_text(f"{total} examples")
    shown = page.eval_on_selector_all("#examples .ex", "els => els.map(e => e.dataset.id)")
    assert 0 < len(shown) < total
    # each row's arm as curate left it (a pile input the label model labelled is in that label's arm now)
    rows = {e["id"]: e for e in read_jsonl(ui_server["ctx"].stage_dir("generate") / "examples.jsonl")}
    for name in ("rejected.jsonl", "dev.jsonl", "eval.jsonl", "train.jsonl"):
        rows |= {e["id"]: e for e in read_jsonl(ui_server["ctx"].stage_dir("curate") / name) if "id" in e}
    assert all(json.dumps(rows[i]["arm"]) == arms[0] for i in shown), [(i, rows[i]["arm"]) for i in shown]
    page.select_option("#f-arm", "")
    page.wait_for_selector('#examples[data-query*="arm=&"] .ex.sel')
    # edit the selected example: e opens the editor, Ctrl+Enter saves it as a fix
    page.keyboard.press("j")
    target = page.get_attribute("#examples .ex.sel", "data-id")
    page.keyboard.press("e")
    page.wait_for_selector("#edit-input")
    new_input = "How do I read a JSON field inside an SQLite query, with json_extract?"
    page.fill("#edit-input", new_input)
    page.press("#edit-output", "Control+Enter")
    page.wait_for_selector(f'#examples .ex[data-id="{target}"] .tag.fix')
    fixed = [r for r in read_jsonl(ui_server["root"] / ".taskling" / "review.jsonl") if r["id"] == target]
    assert fixed[-1]["decision"] == "fix" and fixed[-1]["input"] == new_input and "output" not in fixed[-1]
    assert errors == []


def test_the_playground_shows_the_three_answers_with_latency(ui_server, browser):
    from taskling.teacher.calls import CallLog

    page, errors = open_page(browser, ui_server["url"] + "/#/play")
    page.wait_for_selector("#play-input")
    assert "round 0" in page.inner_text("main")  # the trained student's round
    page.fill("#play-input", "How do I stream a large file in Node without reading it all?")
    page.click("#play-go")
    for who in ("student", "base", "teacher"):
        page.wait_for_selector(f"#play-{who} .latency", timeout=120_000)
        assert " s" in page.inner_text(f"#play-{who} .latency")
        assert page.locator(f"#play-{who}").inner_text().count("null") == 0  # nothing empty shown as "null"
    page.screenshot(path=str(ui_server["root"] / "play.png"))
    with CallLog(ui_server["ctx"].ws.calls_db) as log:
        assert log.totals(purpose="playground")["calls"] >= 1  # the teacher's call is logged like every other
    # without the token nothing is computed
    assert httpx.post(ui_server["url"] + "/api/play", json={"input": "x", "system": "base"}).status_code == 403
    r = httpx.post(ui_server["url"] + "/api/play", json={"input": "x", "system": "oracle"},
                   headers={"X-Taskling-Token": ui_server["token"]})
    assert r.status_code == 400 and "oracle" in r.json()["error"]
    assert errors == []


def test_a_failure_marks_its_arm_for_more_budget(ui_server, browser):
    from taskling.teacher import allocate

    page, errors = open_page(browser, ui_server["url"] + "/#/failures")
    page.wait_for_selector(".failure")
    button = page.locator(".failure button.boost").first
    button.click()
    page.wait_for_selector(".failure button.boost:disabled")
    assert "round 1" in button.inner_text()
    ctx = ui_server["ctx"]
    recs = allocate.read_boosts(ctx.ws.boosts)
    assert len(recs) == 1 and recs[0]["after_round"] == 0 and recs[0]["run"] == ctx.run_id
    fails = read_jsonl(ctx.stage_dir("evaluate") / "failures.jsonl")
    assert recs[0]["arm"] in [f["arm"] for f in fails]
    assert allocate.boosts_for(ctx.ws.boosts, 1, ctx.run_id) == {tuple(recs[0]["arm"]): allocate.BOOST_FACTOR}
    assert errors == []


def test_the_examples_api_filters_by_score_round_and_verdict(ui_server):
    from taskling.curation.candidates import candidates

    every = candidates(ui_server["ctx"].stage_dir("curate"))
    get = lambda **q: httpx.get(ui_server["url"] + "/api/examples", params={**q, "limit": 200}).json()  # noqa: E731
    res = get(min_grounding=0.5)
    assert res["total"] == sum(1 for e in every if isinstance(e.get("grounding"), (int, float)) and e["grounding"] >= 0.5)
    assert all(e["grounding"] >= 0.5 for e in res["examples"])
    reasons = {k: n for k, n in get()["facets"]["reason"]}
    assert sum(reasons.values()) == len(every) and reasons.get("kept") == sum(e["status"] == "kept" for e in every)
    dropped = next(k for k in reasons if k != "kept")
    assert get(reason=dropped)["total"] == reasons[dropped]
    assert get(round="0")["total"] == len(every) and get(round="7")["total"] == 0
