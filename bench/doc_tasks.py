"""Knowledge tasks over Debian documentation packages, their gold taken from the documents' own
source of truth (a table or list parsed from the HTML, never written by hand). Shared by
bench/weak_teacher.py (pgerr) and bench/open_book.py (pgerr, sqlite).

pgerr   postgresql-doc-15: the appendix table "PostgreSQL Error Codes" maps each SQLSTATE code to
        its condition name (errcodes-appendix.html). Question: a code; answer: the condition name.
sqlite  sqlite3-doc: the result code lists of rescode.html ("SQLITE_BUSY (5)", primary and
        extended codes). Question: a result code's number; answer: its symbolic name.

Each task asks in several phrasings, none of them the table's own wording; a gold item's phrasing
is its position modulo their number, so every phrasing is asked about as often.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
PG_PAGES = ("errcodes-appendix.html", "errcodes.html", "plpgsql-errors-and-messages.html")
PG_ASK = ("My application got SQLSTATE {c} from Postgres. What condition is that?",
          "Postgres returned error code {c}; what is its condition name?",
          "Which condition name belongs to error {c} in PostgreSQL?",
          "What does the PostgreSQL error code {c} stand for?")
# The appendix table mapped to examples (taskling's `tables:`): every row a question and its answer.
PG_TABLE = {"name": "errcodes", "match": "docs/errcodes-appendix.html", "table": 2, "eval_fraction": 0.0,
            "paraphrase": 1, "input": "What is the condition name of PostgreSQL error code {Error Code}?",
            "output": "{Condition Name}"}

SQLITE_DOCS = Path("/usr/share/doc/sqlite3")
SQLITE_PAGE = "rescode.html"
SQLITE_ASK = ("My sqlite3_step() call returned {c}. Which result code is that?",
              "SQLite handed back the integer {c}; what is the constant called?",
              "Which SQLITE_ macro has the numeric value {c}?",
              "An SQLite API function gave me {c}. What is that code's symbolic name?")


def need(path: Path, package: str) -> Path:
    if not path.exists():
        raise SystemExit(f"{path} is missing: apt-get install {package}")
    return path


def pg_codes() -> list[tuple[str, str]]:
    """(SQLSTATE code, condition name) for every row of the appendix table, in the table's order."""
    text = need(PG_DOCS / PG_PAGES[0], "postgresql-doc-15").read_text(encoding="utf-8")
    return re.findall(r'<tr><td><code class="literal">(\w{5})</code></td><td><code class="symbol">(\w+)</code></td></tr>',
                      text)


def sqlite_codes() -> list[tuple[str, str]]:
    """(number, symbolic name) for every primary and extended result code, in the page's order; the
    list items ("SQLITE_BUSY (5)") are checked against the page's section headings ("(5) SQLITE_BUSY")."""
    text = need(SQLITE_DOCS / SQLITE_PAGE, "sqlite3-doc").read_text(encoding="utf-8")
    listed = [(n, name) for name, n in re.findall(r"<li><a href='rescode.html#\w+'>(SQLITE_\w+)&nbsp;\((\d+)\)</a></li>",
                                                  text)]
    headed = set(re.findall(r"<h3>\((\d+)\) (SQLITE_\w+)</h3>", text))
    if not listed or set(listed) != headed:
        raise SystemExit(f"{SQLITE_DOCS / SQLITE_PAGE}: its code lists and section headings disagree; "
                         "the parser needs a look")
    return listed


def pg_gold(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(n codes for gold, the README benchmark's sample; the three codes the user's examples name)."""
    codes = pg_codes()
    picked = random.Random(seed).sample(codes[2:], n)  # the first two are the examples of bench/weak_teacher.py
    third = next(c for c in codes[2:] if c not in picked)
    return picked, [*codes[:2], third]


def sqlite_gold(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(n codes for gold, three others for the user's examples: one primary, two extended)."""
    codes = sqlite_codes()
    shots = [c for c in codes if c[1] in ("SQLITE_FULL", "SQLITE_IOERR_READ", "SQLITE_CONSTRAINT_UNIQUE")]
    rest = [c for c in codes if c not in shots]
    return random.Random(seed).sample(rest, min(n, len(rest))), shots


def asked(picked: list[tuple[str, str]], asks: tuple[str, ...], source: str | None = None) -> list[dict]:
    """Gold rows: each (key, answer) asked in the next phrasing in turn; `source`, the document that
    holds the answer (evaluate's recall@k of it)."""
    return [{"input": asks[i % len(asks)].format(c=c), "output": a} | ({"source": source} if source else {})
            for i, (c, a) in enumerate(picked)]
