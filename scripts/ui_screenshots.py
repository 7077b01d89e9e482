"""Screenshots of every page of `taskling ui`, for docs/ui.md and the README.

    .venv/bin/python scripts/ui_screenshots.py [WORKSPACE] [--out docs/ui]
    .venv/bin/python scripts/ui_screenshots.py --task-page     # docs/task-page.png (README)

WORKSPACE defaults to the demo's (.demo/devdocs-router, made by `make demo`). The UI is
served on a free loopback port and driven in headless Chromium: the pile with a search
and a chunk open, the examples with one selected, the runs page, the failures, and the
playground answering one gold question (student, base and teacher). Writes one PNG per page.
--task-page takes only the Task page (the task's fields beside the whole file) of the shipped
example, examples/devdocs-router, copied to a temporary folder so the example stays as shipped.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def serve(workspace: Path):
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.ui import start
    from taskling.core.workspace import Context

    server, url, _ = start(Context(load_config(workspace / "taskling.yaml", []), console=Console(stderr=True, quiet=True)))
    return server, url


def task_page(out: Path) -> str:
    """The Task page of the shipped example (a copy of it, nothing ingested) as `out`."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "devdocs-router"
        shutil.copytree(ROOT / "examples" / "devdocs-router", workspace)
        server, url = serve(workspace)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                        args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url + "/#/task")
            page.wait_for_selector("#t-labels .label-row")
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        server.should_exit = True
    return str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", nargs="?", type=Path, default=ROOT / ".demo" / "devdocs-router")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    ap.add_argument("--search", default="json_extract")
    ap.add_argument("--task-page", action="store_true", help="only the shipped example's Task page, as docs/task-page.png")
    args = ap.parse_args()
    if args.task_page:
        print(json.dumps({"workspace": "examples/devdocs-router", "screenshots": [task_page(ROOT / "docs" / "task-page.png")]}))
        return
    from playwright.sync_api import sync_playwright

    if not (args.workspace / "taskling.yaml").exists():
        raise SystemExit(f"{args.workspace}: no taskling.yaml (run 'make demo' first, or pass a workspace)")
    gold = args.workspace / "gold.jsonl"
    question = (json.loads(gold.read_text().splitlines()[0])["input"] if gold.exists()
                else "How do I read a JSON field in a query?")
    args.out.mkdir(parents=True, exist_ok=True)
    server, url = serve(args.workspace)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        def shot(name: str) -> None:
            path = args.out / f"{name}.png"
            page.screenshot(path=str(path))
            shots.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
            print(f"wrote {shots[-1]}", flush=True)

        page.goto(url + "/#/pile")
        page.wait_for_selector("#topics .tile")
        page.fill("#q", args.search)
        page.press("#q", "Enter")
        page.wait_for_selector("#hits .hit")
        page.click("#hits .hit >> nth=0")
        page.wait_for_selector("#detail mark#chunk")
        shot("pile")
        page.goto(url + "/#/examples")
        page.wait_for_selector("#examples .ex.sel")
        page.keyboard.press("j")
        shot("examples")
        page.keyboard.press("e")
        page.wait_for_selector("#edit-input")
        shot("examples-edit")
        page.goto(url + "/#/runs")
        page.wait_for_selector("#run-body svg")
        shot("runs")
        page.goto(url + "/#/failures")
        page.wait_for_selector(".failure, main p.meta")
        shot("failures")
        page.goto(url + "/#/play")
        page.wait_for_selector("#play-input")
        page.fill("#play-input", question)
        page.click("#play-go")
        for who in ("student", "base", "teacher"):
            page.wait_for_selector(f"#play-{who} .latency, #play-{who} .err", timeout=600_000)
        shot("playground")
        browser.close()
    server.should_exit = True
    print(json.dumps({"workspace": str(args.workspace), "screenshots": shots}))


if __name__ == "__main__":
    main()
