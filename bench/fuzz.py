"""Fuzz both HTTP servers and every converter; count 5xx, crashes and hangs (the target is zero).

    .venv/bin/python bench/fuzz.py [--serve 3000] [--ui 3000] [--files 150] [--seed 0]

1. `taskling serve` on the real embedded student (real uvicorn, real HTTP): requests drawn by
   Hypothesis from OpenAI's request shapes, then broken field by field (wrong types, huge and
   negative numbers, odd unicode, schemas of every size), plus raw bodies (truncated, deep,
   non-UTF-8, NaN), foreign Host / Origin / Content-Type headers and unknown paths and methods.
   A case fails when the answer is 5xx or the connection breaks.
2. `taskling ui` over a small real workspace: every GET route with drawn query strings and path
   parts, every POST route with drawn bodies, with and without the token.
3. Converters: real files of every format (PDF from /usr/share/doc, HTML from the Python docs, and
   DOCX, PPTX, XLSX, CSV, EML, JSON, EPUB, ZIP and tar.gz written here) mutated (bit flips,
   truncation, repeated and inserted slices, and inside zip containers their XML), each converted
   in the isolated worker (ingest's own path): a crash is a worker that died, a hang a call past
   the time limit plus 5 s, an error any exception other than the ConvertError users see.

Writes bench/results/fuzz.json; tests/security/test_fuzz.py runs the same with small counts.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
import zipfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) |
                    st.text(max_size=40), lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
ODD_TEXT = st.sampled_from(["", " ", "\x00", "\ud7ff", "\U0001f600" * 50, "<|im_end|>", "</document>", "a" * 3000,
                            "\u202e", "%s%n", "{{7*7}}", "\\ud800"])
NUMBER = st.one_of(st.integers(-2**65, 2**65), st.floats(allow_nan=False), st.sampled_from([0, -1, 1, 2**31, 2**63]))
SCHEMA_KEYS = ["type", "items", "properties", "required", "minItems", "maxItems", "minLength", "maxLength", "pattern",
               "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "additionalProperties", "minimum",
               "maximum", "format", "prefixItems", "minProperties", "maxProperties"]
SCHEMA = st.recursive(st.sampled_from([{"type": t} for t in ("string", "integer", "number", "boolean", "null",
                                                               "object", "array")]),
                      lambda inner: st.dictionaries(st.sampled_from(SCHEMA_KEYS),
                                                    st.one_of(inner, NUMBER, st.text(max_size=20),
                                                              st.lists(inner, max_size=3),
                                                              st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                                                    max_size=4), max_leaves=10)


def field_values(name: str):
    """Values for one field: well-formed, edge and wrong."""
    good = {"max_tokens": st.integers(-5, 10**9), "temperature": NUMBER, "top_p": NUMBER, "seed": NUMBER,
            "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6)),
            "logit_bias": st.dictionaries(st.one_of(st.integers(-10, 10**6).map(str), st.text(max_size=4)), NUMBER,
                                          max_size=4),
            "response_format": st.one_of(st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
                {"name": st.just("x"), "schema": SCHEMA})}), st.fixed_dictionaries({"type": st.sampled_from(
                    ["json_object", "text", "xml"])})),
            "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant",
                                                                                  "developer", "tool", ""]),
                                                        "content": st.one_of(ODD_TEXT, st.text(max_size=60), JSON)}),
                                 max_size=4),
            "prompt": st.one_of(ODD_TEXT, st.lists(st.text(max_size=10), max_size=3)),
            "input": st.one_of(ODD_TEXT, st.text(max_size=80)),
            "stream": st.booleans(), "n": st.integers(-1, 3), "echo": st.booleans()}.get(name)
    return st.one_of(good, JSON) if good is not None else JSON


TEMPLATES = {
    "/v1/chat/completions": {"model": "dev-router", "messages": [{"role": "user", "content": "Which manual?"}],
                             "max_tokens": 2},
    "/v1/completions": {"model": "dev-router", "prompt": "SQLite is", "max_tokens": 2},
    "/v1/task": {"input": "How do I read a JSON column?", "max_tokens": 2},
}


@st.composite
def serve_case(draw):
    """(method, path, headers, body bytes) for one request."""
    path = draw(st.sampled_from([*TEMPLATES, "/v1/models", "/v1/models/dev-router", "/health", "/metrics",
                                 "/v1/models/../../etc/passwd", "/nope", "/v1/chat/completions/x"]))
    method = "POST" if path in TEMPLATES and draw(st.booleans()) or draw(st.integers(0, 9)) == 0 else "GET"
    body = dict(TEMPLATES.get(path, {}))
    for name in draw(st.lists(st.sampled_from([*body, "temperature", "top_p", "seed", "stop", "logit_bias",
                                                "response_format", "stream", "n", "echo", "extra"]), max_size=3)):
        if draw(st.integers(0, 5)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(field_values(name))
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    mode = draw(st.integers(0, 9))
    if mode == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif mode == 1:
        raw = draw(st.sampled_from([b"[" * 5000, b'{"a":' * 80 + b"1" + b"}" * 80, b"\xff\xfe\x00", b"NaN",
                                    b'{"model": "dev-router", "messages": [{"role": "user", "content": "\\ud800x"}]}',
                                    b'{"model": "dev-router", "prompt": "x", "max_tokens": 1e999}', b""]))
    headers = {"Content-Type": draw(st.sampled_from(["application/json"] * 6 + ["text/plain", "application/json; "
                                                     "charset=utf-8", "multipart/form-data", ""]))}
    if draw(st.integers(0, 15)) == 0:
        headers["Origin"] = draw(st.sampled_from(["http://attacker.example", "null", "http://127.0.0.1:1"]))
    if draw(st.integers(0, 15)) == 0:
        headers["Host"] = draw(st.sampled_from(["attacker.example", "[::1]:x", "localhost", "127.0.0.1:bad:"]))
    return method, path, headers, raw


@st.composite
def ui_case(draw):
    gets = ["/", "/api/state", "/api/topics", "/api/search", "/api/examples", "/api/runs", "/api/play",
            "/api/progress"]
    if draw(st.integers(0, 3)) == 0:
        part = quote(draw(st.text(max_size=30)).encode("utf-8", "surrogatepass"), safe="/.")
        path = draw(st.sampled_from(["/api/chunk/", "/api/run/", "/static/"])) + part
        return "GET", path, {}, b""
    if draw(st.integers(0, 2)) == 0:
        path = draw(st.sampled_from(["/api/review", "/api/boost", "/api/play"]))
        body = draw(st.one_of(JSON, st.fixed_dictionaries({"id": st.text(max_size=10), "decision": st.sampled_from(
            ["accept", "reject", "fix", "", "x"]), "arm": JSON, "run": st.text(max_size=10),
            "input": st.text(max_size=20), "system": st.sampled_from(["oracle", "", "x"])})))
        raw = json.dumps(body).encode("utf-8", "surrogatepass")
        return "POST", path, {"Content-Type": "application/json", "X-Taskling-Token": "{TOKEN}"}, raw
    params = draw(st.dictionaries(st.sampled_from(["q", "mode", "limit", "offset", "status", "label", "min_grounding",
                                                   "min_judge", "round", "arm", "reason", "once", "decision"]),
                                  st.one_of(st.text(max_size=20), st.integers(-10**12, 10**12).map(str)), max_size=4))
    path = draw(st.sampled_from(gets))
    if path == "/api/progress":
        params["once"] = "1"
    return "GET", path, {}, params


def drive(base: str, strategy, cases: int, seed: int, token: str = "") -> dict:
    """Send `cases` drawn requests to `base`; counts by status, and the failing ones (5xx, broken)."""
    statuses: Counter = Counter()
    failures: list[dict] = []
    client = httpx.Client(base_url=base, timeout=120)

    @fixed_seed(seed)
    @settings(max_examples=cases, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=("generate",))
    @given(strategy())
    def one(case):
        method, path, headers, body = case
        headers = {k: v.replace("{TOKEN}", token) for k, v in headers.items()}
        try:
            if method == "GET":
                r = client.get(path, params=body if isinstance(body, dict) else None, headers=headers)
            else:
                r = client.post(path, content=body, headers=headers)
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append({"path": path, "status": r.status_code, "body": r.text[:200]})
        except httpx.HTTPError as e:
            statuses["broken"] += 1
            failures.append({"path": path, "error": f"{type(e).__name__}: {e}"[:200]})

    try:
        one()
    finally:
        client.close()
    return {"cases": sum(statuses.values()), "by_status": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "5xx_or_broken": len(failures), "failures": failures[:10]}


# ---------------------------------------------------------------------------------------- converters
def seed_files(dest: Path) -> dict[str, bytes]:
    """One real file per format: shipped documents where the machine has them, else written here."""
    import docx
    import openpyxl
    from pptx import Presentation

    out: dict[str, bytes] = {}
    pdfs = sorted(Path("/usr/share/doc").rglob("*.pdf"), key=lambda p: p.stat().st_size)
    if pdfs:
        out["sample.pdf"] = pdfs[0].read_bytes()
    html = sorted(Path("/usr/share/doc/python3.11/html/library").glob("s*.html"))
    out["page.html"] = html[0].read_bytes()[:60_000] if html else b"<html><body><h1>T</h1><p>x</p></body></html>"
    text = "SQLite reads JSON with json_extract. FTS5 ranks with bm25. " * 20
    d = docx.Document()
    d.add_heading("Notes", 1)
    d.add_paragraph(text)
    t = d.add_table(rows=2, cols=2)
    t.cell(0, 0).text, t.cell(1, 1).text = "a", "b"
    buf = io.BytesIO()
    d.save(buf)
    out["notes.docx"] = buf.getvalue()
    pr = Presentation()
    s = pr.slides.add_slide(pr.slide_layouts[1])
    s.shapes.title.text, s.placeholders[1].text = "Slide", text[:200]
    buf = io.BytesIO()
    pr.save(buf)
    out["deck.pptx"] = buf.getvalue()
    wb = openpyxl.Workbook()
    for r in range(40):
        wb.active.append([r, f"item {r}", r * 1.5])
    buf = io.BytesIO()
    wb.save(buf)
    out["sheet.xlsx"] = buf.getvalue()
    out["table.csv"] = ("id,name,note\n" + "".join(f"{i},n{i},\"{text[:40]}\"\n" for i in range(40))).encode()
    out["mail.eml"] = (f"From: a@example.org\nTo: b@example.org\nSubject: hi\nMessage-ID: <m@x>\n"
                       f"Content-Type: text/plain\n\n{text}\n").encode()
    out["data.json"] = json.dumps([{"id": i, "text": text[:80]} for i in range(20)]).encode()
    out["code.py"] = (ROOT / "src" / "taskling" / "core" / "lock.py").read_bytes()
    out["book.epub"] = epub(text)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/notes.txt", text)
        z.writestr("inner/page.html", out["page.html"][:5000])
    out["bundle.zip"] = zbuf.getvalue()
    import tarfile
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        for name in ("table.csv", "mail.eml"):
            ti = tarfile.TarInfo(name)
            ti.size = len(out[name])
            tf.addfile(ti, io.BytesIO(out[name]))
    out["bundle.tar.gz"] = tbuf.getvalue()
    return out


def epub(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:'
                   'tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="'
                   'application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("OEBPS/content.opf", '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"'
                   ' unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>B</dc:title>'
                   '<dc:identifier id="id">x</dc:identifier></metadata><manifest><item id="c1" href="c1.xhtml" '
                   'media-type="application/xhtml+xml"/></manifest><spine><itemref idref="c1"/></spine></package>')
        z.writestr("OEBPS/c1.xhtml", f"<html xmlns='http://www.w3.org/1999/xhtml'><body><h1>One</h1><p>{text}</p>"
                   "</body></html>")
    return buf.getvalue()


TOKENS = [b"<a b='", b"<!--", b"%%EOF", b" obj ", b"<<", b">>", b"/Kids [", b"99999999999", b"\x00" * 8, b"\xff" * 8,
          b"<table><tr><td colspan=999999>", b"</document>", b"&#x110000;", b"\r\n\r\n", b"=?utf-8?b?", b"\\u0000"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One mutation of a file: inside a zip container its members' XML is mutated, else its bytes."""
    if data[:4] == b"PK\x03\x04" and rng.random() < 0.6:
        try:
            src = zipfile.ZipFile(io.BytesIO(data))
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for info in src.infolist():
                    body = src.read(info)
                    if rng.random() < 0.5:
                        body = mutate_bytes(body, rng)
                    z.writestr(info.filename, body)
            return out.getvalue()
        except Exception:
            pass
    return mutate_bytes(data, rng)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choices(range(5), weights=(35, 10, 20, 20, 15))[0]
        at = rng.randrange(len(b) + 1)
        if kind == 0 and b:
            for _ in range(rng.randint(1, 16)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del b[max(at, len(b) - rng.randint(1, 4096)):]  # a download cut short, near its end
        elif kind == 2 and b:
            lo = rng.randrange(len(b))
            piece = b[lo:lo + rng.randint(1, 256)]
            b[at:at] = piece * rng.randint(1, 200)
        elif kind == 3:
            b[at:at] = rng.choice(TOKENS) * rng.randint(1, 300)
        else:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(b[:8 * 2**20])


def fuzz_converters(files_per_format: int, seed: int, timeout_s: float = 10.0, memory_mb: int = 1024) -> dict:
    from taskling.data.formats import ConvertError, Limits
    from taskling.data.ingest import SANDBOXES, convert_isolated

    rng = random.Random(seed)
    limits = Limits(max_seconds=timeout_s, max_memory_mb=memory_mb)
    out: dict[str, Counter] = {}
    worst = {"seconds": 0.0, "file": None}
    peak = 0.0
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        seeds = seed_files(Path(tmp))
    for name, data in seeds.items():
        c = out.setdefault(name.split(".", 1)[1], Counter())
        for _ in range(files_per_format):
            case = mutate(data, rng)
            t0 = time.perf_counter()
            try:
                convert_isolated(name, case, limits)
                c["converted"] += 1
            except ConvertError as e:
                msg = str(e)
                c["crash" if "crashed the converter" in msg else "time_limit" if "convert_timeout_s" in msg
                  else "refused"] += 1
            except Exception as e:  # anything else reaching ingest is a bug
                c["error"] += 1
                errors.append(f"{name}: {type(e).__name__}: {str(e)[:160]}")
            took = time.perf_counter() - t0
            if took > worst["seconds"]:
                worst = {"seconds": round(took, 2), "file": name}
            c["hang"] += took > timeout_s + 5
            for box in SANDBOXES.values():
                peak = max(peak, box.peak_rss_mb() or 0.0)
    return {"per_format": {k: dict(v) for k, v in out.items()}, "cases": sum(sum(v.values()) - v["hang"]
                                                                              for v in out.values()),
            "crash": sum(v["crash"] for v in out.values()), "hang": sum(v["hang"] for v in out.values()),
            "error": sum(v["error"] for v in out.values()), "errors": errors[:10], "slowest": worst,
            "worker_peak_rss_mb": round(peak, 1), "limits": {"timeout_s": timeout_s, "memory_mb": memory_mb}}


# ---------------------------------------------------------------------------------------- servers
def serve_app():
    """`taskling serve`'s app for the embedded student, with a small answer cap so cases stay quick."""
    from taskling.core.config import ServeCfg
    from taskling.serving import target as targets
    from taskling.serving.app import create_app
    from taskling.student.models import resolve_gguf

    folder = Path(tempfile.mkdtemp(prefix="taskling-fuzz-"))
    (folder / "student.gguf").symlink_to(resolve_gguf("smollm2-135m-instruct"))
    (folder / "task.json").write_text(json.dumps({"name": "dev-router", "type": "classify", "labels": [
        "sqlite", "node", "python"], "max_new_tokens": 4, "system_prompt": "Answer sqlite, node or python.",
        "chat_template_kind": "chatml"}))
    t = targets.resolve(str(folder / "student.gguf"), Path("."))
    return create_app(targets.load(t), t, ServeCfg(max_tokens=4, timeout_s=120))


def run_server(app):
    """A real uvicorn server in a thread on a socket bound here; (server, url)."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def ui_workspace(base: Path):
    """A small real workspace (ingested, no teacher run) for the UI fuzz."""
    from rich.console import Console

    from taskling.core.config import load_config
    from taskling.core.workspace import Context
    from taskling.stages import ingest

    (base / "docs").mkdir(parents=True)
    for i in range(6):
        (base / "docs" / f"n{i}.md").write_text(f"# Note {i}\n\nSQLite json_extract and FTS5 bm25, note {i}.\n" * 5)
    (base / "taskling.yaml").write_text("task:\n  name: fuzz\n  description: Route.\n  type: classify\n"
                                        "  labels: [a, b]\nsources: [docs]\ningest:\n  embed: false\n")
    ctx = Context(load_config(base / "taskling.yaml", []), console=Console(stderr=True, quiet=True))
    ingest.run(ctx)
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", type=int, default=3000, help="requests against taskling serve")
    ap.add_argument("--ui", type=int, default=3000, help="requests against taskling ui")
    ap.add_argument("--files", type=int, default=150, help="mutated files per format")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {"benchmark": "fuzz", "command": " ".join(["python bench/fuzz.py", *sys.argv[1:]]),
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": args.seed}
    t0 = time.perf_counter()
    server, url = run_server(serve_app())
    result["serve"] = drive(url, serve_case, args.serve, args.seed)
    server.should_exit = True
    with tempfile.TemporaryDirectory() as tmp:
        from taskling.ui import start

        ui, uurl, token = start(ui_workspace(Path(tmp)))
        result["ui"] = drive(uurl, ui_case, args.ui, args.seed, token)
        ui.should_exit = True
    result["converters"] = fuzz_converters(args.files, args.seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    dest = ROOT / "bench" / "results" / "fuzz.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "converters"} | {
        "converters": {k: result["converters"][k] for k in ("cases", "crash", "hang", "error", "worker_peak_rss_mb")}},
        indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
