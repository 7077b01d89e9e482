"""One-off: move src/taskling's flat modules into rooms and rewrite every import (src, tests, bench, scripts).

Run from the repository root: python3 scripts/rooms_move.py
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "taskling"

# old module -> new module (packages move with everything in them)
MOVES = {
    "taskling.config": "taskling.core.config",
    "taskling.errors": "taskling.core.errors",
    "taskling.workspace": "taskling.core.workspace",
    "taskling.progress": "taskling.core.progress",
    "taskling.journal": "taskling.core.journal",
    "taskling.formats": "taskling.data.formats",
    "taskling.chunking": "taskling.data.chunking",
    "taskling.pile": "taskling.data.pile",
    "taskling.dedup": "taskling.data.dedup",
    "taskling.embed": "taskling.data.embed",
    "taskling.topics": "taskling.data.topics",
    "taskling.organise": "taskling.data.organise",
    "taskling.tables": "taskling.data.tables",
    "taskling.retrieve": "taskling.data.retrieve",
    "taskling.metrics": "taskling.tasks.metrics",
    "taskling.models": "taskling.student.models",
    "taskling.gguf": "taskling.student.gguf",
    "taskling.infer": "taskling.student.infer",
    "taskling.backends": "taskling.teacher.backends",
    "taskling.calls": "taskling.teacher.calls",
    "taskling.judge": "taskling.teacher.judge",
    "taskling.faults": "taskling.teacher.faults",
    "taskling.allocate": "taskling.teacher.allocate",
    "taskling.curation": "taskling.curation.filters",
    "taskling.review": "taskling.curation.review",
    "taskling.weak": "taskling.curation.weak",
    "taskling.labelmodel": "taskling.curation.labelmodel",
    "taskling.rules": "taskling.curation.rules",
    "taskling.pii": "taskling.curation.pii",
    "taskling.engine": "taskling.serving.engine",
    "taskling.serve": "taskling.serving.serve",
    "taskling.predict": "taskling.serving.predict",
    "taskling.report": "taskling.report.build",
    "taskling.report_html": "taskling.report.html",
    "taskling.report_rounds": "taskling.report.rounds",
}
NEW_ROOMS = ["core", "data", "student", "teacher", "curation", "serving", "report"]


def module_files() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def new_name(old: str) -> str:
    for o in sorted(MOVES, key=len, reverse=True):
        if old == o or old.startswith(o + "."):
            return MOVES[o] + old[len(o):]
    return old


OLD = module_files()
NEW_NAMES = {new_name(n) for n in OLD} | {f"taskling.{r}" for r in NEW_ROOMS}


def is_pkg(name: str, files: dict[str, Path]) -> bool:
    return name in files and files[name].name == "__init__.py"


def absolute(cur: str, cur_is_pkg: bool, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = cur.split(".") if cur_is_pkg else cur.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base) + ("." + node.module if node.module else "")


def relative(cur_new: str, cur_is_pkg: bool, target: str) -> str:
    here = cur_new.split(".") if cur_is_pkg else cur_new.split(".")[:-1]
    tgt = target.split(".")
    common = 0
    while common < len(here) and common < len(tgt) and here[common] == tgt[common]:
        common += 1
    if common == 0:
        return target
    ups = len(here) - common
    return "." * (ups + 1) + ".".join(tgt[common:])


def render(indent: str, src: str, names: list[tuple[str, str | None]]) -> str:
    items = [f"{n} as {a}" if a and a != n else n for n, a in names]
    line = f"{indent}from {src} import {', '.join(items)}"
    if len(line) <= 118:
        return line
    out, cur = [], f"{indent}from {src} import ("
    for i, it in enumerate(items):
        piece = it + ("," if i < len(items) - 1 else ")")
        if len(cur) + len(piece) + 1 > 118:
            out.append(cur.rstrip())
            cur = indent + "    " + piece + " "
        else:
            cur += piece + " "
    out.append(cur.rstrip())
    return "\n".join(out)


def rewrite(path: Path, cur_old: str | None, cur_new: str | None, cur_is_pkg: bool) -> bool:
    text = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if cur_old is None and node.level:
                continue
            tgt = absolute(cur_old, cur_is_pkg, node) if cur_old else node.module
            if not tgt or not (tgt == "taskling" or tgt.startswith("taskling.")):
                continue
            groups: dict[str, list] = {}
            for a in node.names:
                full = f"{tgt}.{a.name}"
                if full in OLD:  # a module imported from its package
                    nn = new_name(full)
                    pkg, mod = nn.rsplit(".", 1)
                    groups.setdefault(pkg, []).append((mod, a.asname or (a.name if mod != a.name else None)))
                else:
                    groups.setdefault(new_name(tgt), []).append((a.name, a.asname))
            indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
            new = []
            for src_mod, names in groups.items():
                src = relative(cur_new, cur_is_pkg, src_mod) if cur_new else src_mod
                new.append(render(indent, src, names))
            edits.append((node.lineno, node.end_lineno, "\n".join(new) + "\n"))
        elif isinstance(node, ast.Import):
            if any(a.name.startswith("taskling.") and new_name(a.name) != a.name for a in node.names):
                indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
                parts = [f"{new_name(a.name)}" + (f" as {a.asname}" if a.asname else "") for a in node.names]
                edits.append((node.lineno, node.end_lineno, f"{indent}import {', '.join(parts)}\n"))
    for start, end, new in sorted(edits, reverse=True):
        tail = lines[end - 1]
        # keep a trailing comment of a one-line import
        m = re.search(r"\)?\s*(#.*)$", tail) if start == end else None
        if m and "#" in tail and not tail.strip().startswith("#"):
            new = new.rstrip("\n") + "  " + m.group(1) + "\n"
        lines[start - 1:end] = [new]
    out = "".join(lines)
    out = strings(out)
    if out != text:
        path.write_text(out, encoding="utf-8")
        return True
    return False


STR_RE = re.compile(r"\btaskling((?:\.[a-z_]+)+)")


def strings(text: str) -> str:
    """Dotted module paths in strings and prose: taskling.faults -> taskling.teacher.faults."""
    def sub(m: re.Match) -> str:
        dotted = "taskling" + m.group(1)
        parts = dotted.split(".")
        for k in range(len(parts), 1, -1):
            head = ".".join(parts[:k])
            if head in NEW_NAMES and head not in OLD:
                return dotted
            if head in OLD or head in MOVES:
                return new_name(head) + ("." + ".".join(parts[k:]) if k < len(parts) else "")
        return dotted
    return STR_RE.sub(sub, text)


def main() -> int:
    for room in NEW_ROOMS:
        (PKG / room).mkdir(exist_ok=True)
    # plan the file moves
    plan = []
    for old, new in MOVES.items():
        if is_pkg(old, OLD):
            src = PKG.joinpath(*old.split(".")[1:])
            dst = PKG.joinpath(*new.split(".")[1:])
        else:
            src = OLD[old]
            dst = PKG.joinpath(*new.split(".")[1:]).with_suffix(".py")
        plan.append((src, dst))
    # file identity: old name -> file, new name
    ident = {}
    for name, p in OLD.items():
        ident[p] = (name, new_name(name), p.name == "__init__.py")
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "mv", str(src), str(dst)], check=True, cwd=ROOT)
    moved = {}
    for p, (old, new, pkg) in ident.items():
        rel = Path(*new.split(".")[1:])
        np_ = PKG / rel / "__init__.py" if pkg else (PKG / rel).with_suffix(".py")
        if new == "taskling":
            np_ = PKG / "__init__.py"
        moved[np_] = (old, new, pkg)
    for p, (old, new, pkg) in moved.items():
        rewrite(p, old, new, pkg)
    for room in NEW_ROOMS:
        init = PKG / room / "__init__.py"
        if not init.exists():
            init.write_text(f'"""The {room} room."""\n', encoding="utf-8")
    for folder in ("tests", "bench", "scripts", "examples"):
        for p in (ROOT / folder).rglob("*.py"):
            if p.name != "rooms_move.py":
                rewrite(p, None, None, False)
    for p in [ROOT / "Makefile", ROOT / "scripts" / "setup.sh", ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        t = p.read_text(encoding="utf-8")
        t2 = strings(t)
        if t2 != t:
            p.write_text(t2, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
