"""The UI's playground on an open-book task (tiny random Llama, scripted teacher): the student and its base
read the chunks the one retriever finds before they answer, as predict and serve do, and the answer comes
with its citations (document, locator, the span it rests on), shown on the page."""
from __future__ import annotations

import httpx
import pytest
from rich.console import Console

from stages.test_open_book import answer_workspace
from stages.test_evaluate import script
from taskling.core import tasktype
from taskling.core.config import load_config
from taskling.core.workspace import Context
from taskling.data.retrieve import Retriever
from taskling.serving import systems
from taskling.teacher.backends.scripted import set_script
from taskling.tasks.openbook import open_messages

HASH = "How do I hash data with createHash in node crypto?"
CITED = "createHash and makes keys with randomBytes [1]"  # words of the first node chunk, citing it


@pytest.fixture(scope="module")
def open_ui(tmp_path_factory, tiny_model_dir):
    """An open-book answer task ingested, generated, curated and trained, its UI served."""
    from taskling.stages import curate, generate, ingest, train
    from taskling.ui import start

    root = tmp_path_factory.mktemp("open-ui")
    ctx = Context(load_config(answer_workspace(root, tiny_model_dir), []), console=Console(stderr=True, quiet=True))
    set_script(script)
    try:
        for stage in (ingest, generate, curate, train):
            stage.run(ctx)
        server, url, token = start(ctx)
        yield {"url": url, "ctx": ctx, "token": token, "root": root}
        server.should_exit = True
    finally:
        set_script(None)


@pytest.fixture
def prompts(monkeypatch):
    """Every conversation the playground's local models are asked (what they read), noted."""
    seen: list = []
    real = systems.predict_local

    def noted(model, tok, who, convs, task, cfg, shown=None):
        seen.append((who, convs))
        return real(model, tok, who, convs, task, cfg, shown)
    monkeypatch.setattr(systems, "predict_local", noted)
    return seen


def play(ui: dict, who: str) -> dict:
    r = httpx.post(ui["url"] + "/api/play", json={"input": HASH, "system": who},
                   headers={"X-Taskling-Token": ui["token"]}, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_playground_s_student_and_base_read_the_documents_as_predict_does(open_ui, prompts):
    """The student and its base are asked with the chunks the retriever finds, in the open-book layout
    the student was trained on, and answer with their citations and the chunks they read (they answered
    closed-book before: the bare question, no citations)."""
    ctx = open_ui["ctx"]
    assert httpx.get(open_ui["url"] + "/api/play").json()["task"]["open_book"] is True
    with Retriever.open(ctx.cfg, ctx.ws.pile_db) as book:
        found = book.find(HASH)
        want = open_messages(tasktype.get("answer").system_prompt(ctx.cfg.task), HASH, found, book.chunk_chars)
    for who in ("student", "base"):
        out = play(open_ui, who)
        assert prompts[-1] == (f"{who}-open", [want])  # the chunks in the prompt, as evaluate and predict put them
        assert out["open_book"] is True and isinstance(out["citations"], list)
        assert [(d["n"], d["chunk"], d["path"], d["locator"]) for d in out["documents"]] == \
            [(n, c.key, c.path, c.locator) for n, c in enumerate(found, 1)]
        assert all(c["chunk"] in [d["chunk"] for d in out["documents"]] for c in out["citations"])
    assert "open_book" not in play(open_ui, "teacher")  # the teacher is asked as before


def test_the_playground_shows_an_answer_s_citation_with_its_span(open_ui, browser, monkeypatch):
    """A cited answer shows each citation's document and locator and the span of it the answer rests on."""
    monkeypatch.setattr(systems, "predict_local", lambda model, tok, who, convs, task, cfg, shown=None: [{"text": CITED}])
    out = play(open_ui, "base")
    assert out["output"] == CITED and out["parsed"] == CITED.removesuffix(" [1]")
    [c] = out["citations"]
    assert c["n"] == 1 and c["path"] == "docs/node.html" and c["locator"]
    assert c["span"]["text"] == "createHash and makes keys with randomBytes" and c["span"]["match"] == "exact"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(open_ui["url"] + "/#/play")
    page.wait_for_selector("#play-input")
    assert page.locator(".panel h4").all_inner_texts()[:2] == ["student (round 0) · open book",
                                                               f"base · {open_ui['ctx'].cfg.student.model} · open book"]
    page.fill("#play-input", HASH)
    page.click("#play-go")
    page.wait_for_selector("#play-base .citation blockquote", timeout=120_000)
    shown = page.inner_text("#play-base .citations")
    assert "[1] docs/node.html · " + c["locator"] in shown and "createHash and makes keys with randomBytes" in shown
    page.screenshot(path=str(open_ui["root"] / "play-open-book.png"))
    assert errors == []
