"""The house plan stays true: the import graph of src/taskling has no circles, every import
keeps its room's rules (the ones each room's __init__ states), no private name crosses a file,
and modules and functions stay small enough to have one job.

Every import counts, at module level or inside a function: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "taskling"
LIBRARY = ("core", "data", "tasks", "student", "teacher", "curation", "serving", "report")
# A room may import itself and the rooms named here; the top (cli, loop, api, __init__) may import anything.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "tasks": {"core", "data"},
    "student": {"core", "data", "tasks"},
    "teacher": {"core", "data", "tasks", "student"},
    "curation": {"core", "data", "tasks", "student", "teacher"},
    "serving": {"core", "data", "tasks", "student", "teacher"},
    "report": {"core", "data", "tasks", "student", "teacher", "curation"},
    "cluster": set(LIBRARY),
    "stages": set(LIBRARY),
    "ui": set(LIBRARY) | {"stages"},
}
MAX_MODULE, MAX_FUNC, MAX_FLAT = 600, 120, 12


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = ("taskling",) + p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODS = modules()


def imports(mod: str, path: Path) -> list[tuple[str, str, int]]:
    """(target module, imported name or '', line) for every taskling import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "taskling" or target.startswith("taskling.")):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, "", node.lineno) if sub in MODS else (target, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("taskling")]
    return out


def room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and MODS[mod].name == "__init__.py") else "top"


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in MODS.items():
        for target, _, _ in imports(mod, path):
            if target in MODS and target != mod and not (MODS[mod].name == "__init__.py"
                                                          and target.startswith(mod + ".")):
                edges[mod].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in MODS:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_import_graph_has_no_circles():
    assert circles(graph()) == []


def test_every_import_keeps_its_rooms_rules():
    broken = []
    for mod, path in MODS.items():
        src_room = room(mod)
        if src_room == "top":
            continue
        for target, _, line in imports(mod, path):
            dst_room = room(target) if target in MODS else target.split(".")[1]
            if dst_room == src_room:
                if src_room == "stages" and target != "taskling.stages" and mod != "taskling.stages":
                    broken.append(f"{path.relative_to(SRC)}:{line} imports {target}: a stage imports no other stage")
                continue
            if dst_room not in ALLOWED[src_room]:
                broken.append(f"{path.relative_to(SRC)}:{line} imports {target}: the {src_room} room may import "
                              f"{', '.join(sorted(ALLOWED[src_room])) or 'nothing else'}")
    assert broken == []


def test_no_private_name_crosses_a_file():
    crossing = [f"{mod} takes {name} from {target}" for mod, path in MODS.items()
                for target, name, _ in imports(mod, path)
                if name.startswith("_") and not name.startswith("__") and target != mod]
    assert crossing == []


def test_modules_and_functions_stay_small_and_few_lie_flat():
    big = []
    for mod, path in MODS.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") + 1 > MAX_MODULE:
            big.append(f"{mod}: {text.count(chr(10)) + 1} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNC:
                    big.append(f"{mod}.{node.name}: {n} lines")
    flat = [m for m in MODS if m.count(".") == 1 and MODS[m].name != "__init__.py"]
    assert big == [] and len(flat) <= MAX_FLAT, (big, flat)


def test_every_room_says_what_lives_there_and_what_it_may_import():
    for name in [*LIBRARY, "cluster", "stages"]:
        doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc or "may import" in doc.lower(), name


@pytest.mark.parametrize("edges,expected", [
    ({"taskling.a": {"taskling.b"}, "taskling.b": {"taskling.a"}}, 1),
    ({"taskling.a": {"taskling.b"}, "taskling.b": set()}, 0),
])
def test_the_circle_finder_finds_a_planted_circle(monkeypatch, edges, expected):
    monkeypatch.setitem(globals(), "MODS", {"taskling.a": SRC / "a.py", "taskling.b": SRC / "b.py"})
    assert len(circles(edges)) == expected
