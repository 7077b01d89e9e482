"""Source code, split into the units a person would cite: functions, classes
and the module-level code between them.

Each unit is one segment of kind "code" with a locator such as
"def parse_args (lines 10-42)", "class Pile (lines 50-120)",
"def Pile.push (lines 61-80)" (a method of a class too big to be one unit),
"func Server.Handle (lines 12-30)" or "lines 1-9" (code outside any
definition); the chunker keeps these locators and adds "part k" when a unit
is too long for one chunk.

Python is split with `ast`, so decorators, nested blocks and multi-line
strings are placed exactly. Other languages are split with regular
expressions on top-level definition lines (column 0, or after `export`):
a unit runs from one definition to the next, or to the closing line at
column 0 ("}" or "end") when the language has one, and comment or
annotation lines directly above a definition belong to it. A container
unit (class, impl, namespace ...) longer than ~150 lines is split again at
its method definitions. Code without recognisable definitions, and long
stretches of code between definitions, are cut into windows of ~60 lines.
A Python file that does not parse (Python 2, a syntax error) falls back to
the regular-expression splitter with a warning.
"""
from __future__ import annotations

import ast
import platform
import re
import warnings as pywarnings
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from . import ConvertError, Extracted, Limits, Segment, register, suffix
from .text import cut_long_lines, decode_text

BIG_UNIT = 150      # lines: a class (or other container) longer than this is split per method
MAX_DEF_LINE = 400  # longer lines are never taken for definitions (and never fed to the regexes,
                    # which can backtrack quadratically on a minified line)
WINDOW = 60         # lines per window where there are no definitions to split at
_CONTAINERS = {"class", "struct", "interface", "impl", "trait", "object", "namespace", "module", "extension",
               "enum", "record", "protocol", "actor", "type", "mod"}
_NOT_NAMES = {"if", "for", "while", "switch", "catch", "return", "else", "do", "case", "function", "new",
              "sizeof", "typeof", "delete", "throw", "await", "yield", "with", "using", "lock", "foreach"}


@dataclass
class Lang:
    name: str
    defs: list[re.Pattern]                  # top-level definition lines; groups "name", optional "kw"/"recv"
    methods: list[re.Pattern] = field(default_factory=list)  # indented definitions inside a big container
    style: str = ""                         # how a unit ends: "brace" ("}" at column 0), "end", "sql", "indent"
    comments: tuple[str, ...] = ("//", "/*", "*", "*/")      # lines that belong to the definition below
    kw: str = "function"                    # the label when a pattern has no "kw" group


def _rx(*patterns: str, flags: int = 0) -> list[re.Pattern]:
    return [re.compile(p, flags) for p in patterns]


_JS_EXPORT = r"(?:export\s+(?:default\s+)?)?(?:declare\s+)?"
_JS_DEFS = _rx(
    rf"^{_JS_EXPORT}(?:async\s+)?(?P<kw>function)\s*\*?\s*(?P<name>[\w$]+)",
    rf"^{_JS_EXPORT}(?:abstract\s+)?(?P<kw>class)\s+(?P<name>[\w$]+)",
    rf"^{_JS_EXPORT}(?P<kw>interface|enum|namespace|module)\s+(?P<name>[\w$.]+)",
    rf"^{_JS_EXPORT}(?P<kw>type)\s+(?P<name>[\w$]+)\s*(?:<[^=]*>)?\s*=",
    rf"^{_JS_EXPORT}(?P<kw>const|let|var)\s+(?P<name>[\w$]+)\s*(?::[^=]+)?=\s*(?:async\s+)?"
    r"(?:function\b|\([^)]*\)?\s*(?::[^=]+)?=>|[\w$]+\s*=>|\($)",
)
_JS_METHODS = _rx(
    r"^\s+(?:(?:public|private|protected|static|readonly|async|override|abstract|get|set)\s+)*\*?"
    r"(?P<name>#?[\w$]+)\s*(?:<[^>]*>)?\s*\([^;]*\)\s*(?::\s*[^{;]+)?\{\s*$",
)
_JAVA_MODS = r"(?:(?:public|private|protected|static|final|abstract|sealed|non-sealed|strictfp)\s+)*"
_CS_MODS = (r"(?:(?:public|private|protected|internal|static|sealed|abstract|partial|readonly|unsafe|file|ref|"
            r"virtual|override|async|extern|new)\s+)*")
_KT_MODS = (r"(?:(?:public|private|internal|protected|open|abstract|sealed|data|inline|value|enum|annotation|"
            r"inner|override|suspend|tailrec|operator|infix|external|expect|actual|const|lateinit)\s+)*")
_SWIFT_MODS = (r"(?:(?:public|private|fileprivate|internal|open|final|static|class|override|mutating|"
               r"nonmutating|convenience|required|indirect|@\w+(?:\([^)]*\))?)\s+)*")
_SCALA_MODS = r"(?:(?:private|protected|final|sealed|abstract|implicit|lazy|override|case|inline|open)(?:\[\w+\])?\s+)*"
_RUST_MODS = r"(?:pub(?:\([^)]*\))?\s+)?(?:(?:async|unsafe|const|default|extern(?:\s+\"[^\"]*\")?)\s+)*"
# A C/C++ function definition line: type words (separated by blanks, "*", "&"), the name, "(", no ";".
_C_FUNC = (r"(?!(?:if|for|while|switch|return|else|do|case|typedef|goto|sizeof)\b)"
           r"(?:[A-Za-z_][\w:<>,]*[\s\*&]+)*(?P<name>[A-Za-z_~][\w:~]*)\s*\([^;]*$")

LANGS: dict[str, Lang] = {
    "python": Lang("python", _rx(r"^(?P<kw>async\s+def|def|class)\s+(?P<name>\w+)"),
                   _rx(r"^\s+(?P<kw>async\s+def|def|class)\s+(?P<name>\w+)"), "indent", ("#", "@")),
    "javascript": Lang("javascript", _JS_DEFS, _JS_METHODS, "brace", ("//", "/*", "*", "*/", "@"), "method"),
    "typescript": Lang("typescript", _JS_DEFS, _JS_METHODS, "brace", ("//", "/*", "*", "*/", "@"), "method"),
    "java": Lang("java", _rx(rf"^{_JAVA_MODS}(?P<kw>class|interface|enum|record|@interface)\s+(?P<name>\w+)"),
                 _rx(rf"^\s+{_JAVA_MODS}(?P<kw>class|interface|enum|record)\s+(?P<name>\w+)",
                     r"^\s+(?:@\w+\s+)*(?:(?:public|private|protected|static|final|abstract|synchronized|native|"
                     r"default|strictfp)\s+)+(?:<[^>]+>\s+)?[\w<>\[\],.?]+(?:\s*<[^>]*>)?(?:\[\])*\s+"
                     r"(?P<name>\w+)\s*\("),
                 "brace", ("//", "/*", "*", "*/", "@"), "method"),
    "csharp": Lang("csharp",
                   _rx(rf"^{_CS_MODS}(?P<kw>class|interface|enum|struct|record|namespace)\s+(?P<name>[\w.]+)"),
                   _rx(rf"^\s+{_CS_MODS}(?P<kw>class|interface|enum|struct|record)\s+(?P<name>\w+)",
                       r"^\s+(?:\[[^\]]*\]\s*)*(?:(?:public|private|protected|internal|static|virtual|override|"
                       r"abstract|async|sealed|extern|unsafe|new|partial|readonly)\s+)+[\w<>\[\],.?]+"
                       r"(?:\s*<[^>]*>)?\s+(?P<name>\w+)\s*[(<]"),
                   "brace", ("//", "/*", "*", "*/", "["), "method"),
    "kotlin": Lang("kotlin",
                   _rx(rf"^{_KT_MODS}(?P<kw>fun|class|interface|object)\s+(?:<[^>]+>\s*)?(?P<name>[\w.`]+)"),
                   _rx(rf"^\s+{_KT_MODS}(?P<kw>fun|class|interface|object)\s+(?:<[^>]+>\s*)?(?P<name>[\w.`]+)"),
                   "brace", ("//", "/*", "*", "*/", "@")),
    "swift": Lang("swift",
                  _rx(rf"^{_SWIFT_MODS}(?P<kw>func|class|struct|enum|protocol|extension|actor)\s+(?P<name>[\w.]+)"),
                  _rx(rf"^\s+{_SWIFT_MODS}(?P<kw>func|init|class|struct|enum)\b\s*(?P<name>[\w.]*)"),
                  "brace", ("//", "/*", "*", "*/", "@")),
    "scala": Lang("scala", _rx(rf"^{_SCALA_MODS}(?P<kw>def|class|object|trait|enum|given)\s+(?P<name>[\w.]+)"),
                  _rx(rf"^\s+{_SCALA_MODS}(?P<kw>def|class|object|trait)\s+(?P<name>[\w.]+)"),
                  "brace", ("//", "/*", "*", "*/", "@")),
    "go": Lang("go", _rx(r"^(?P<kw>func)\s+(?:\(\s*(?:\w+\s+)?\*?(?P<recv>\w+)[^)]*\)\s*)?(?P<name>\w+)",
                         r"^(?P<kw>type)\s+(?P<name>\w+)"),
               [], "brace", ("//", "/*", "*", "*/")),
    "rust": Lang("rust",
                 _rx(rf"^{_RUST_MODS}(?P<kw>fn|struct|enum|trait|union|mod|type|macro_rules!)\s*(?P<name>\w+)",
                     r"^(?:unsafe\s+)?(?P<kw>impl)\b(?:\s*<[^{]*?>)?\s+(?P<name>[^{]+?)\s*(?:where\b.*)?\{?\s*$"),
                 _rx(rf"^\s+{_RUST_MODS}(?P<kw>fn)\s+(?P<name>\w+)"),
                 "brace", ("//", "/*", "*", "*/", "#[", "#!")),
    "cpp": Lang("cpp",
                _rx(r"^(?:template\s*<.*>\s*)?(?:typedef\s+)?"
                    r"(?P<kw>struct|class|union|enum(?:\s+class)?|namespace)\s+(?P<name>\w+)[^;]*$", "^" + _C_FUNC),
                _rx(r"^\s+(?:template\s*<.*>\s*)?(?P<kw>struct|class)\s+(?P<name>\w+)[^;]*$", r"^\s+" + _C_FUNC),
                "brace", ("//", "/*", "*", "*/", "template")),
    "ruby": Lang("ruby", _rx(r"^(?P<kw>def|class|module)\s+(?P<name>[\w.:?!=<>\[\]+-]+)"),
                 _rx(r"^\s+(?P<kw>def|class|module)\s+(?P<name>[\w.:?!=<>\[\]+-]+)"), "end", ("#",)),
    "php": Lang("php",
                _rx(r"^(?:(?:abstract|final|readonly)\s+)*(?P<kw>function|class|interface|trait|enum)\s+(?P<name>\w+)"),
                _rx(r"^\s+(?:(?:public|private|protected|static|abstract|final)\s+)*(?P<kw>function)\s+(?P<name>\w+)"),
                "brace", ("//", "#", "/*", "*", "*/")),
    "shell": Lang("shell", _rx(r"^(?P<kw>function)\s+(?P<name>[\w:.-]+)", r"^(?P<name>[\w:.-]+)\s*\(\)"),
                  [], "brace", ("#",)),
    "lua": Lang("lua", _rx(r"^(?:local\s+)?(?P<kw>function)\s+(?P<name>[\w.:]+)",
                           r"^(?:local\s+)?(?P<name>[\w.]+)\s*=\s*(?P<kw>function)\b"),
                [], "end", ("--",)),
    "r": Lang("r", _rx(r"^(?P<name>[\w.]+)\s*(?:<-|=)\s*(?P<kw>function)\b"), [], "brace", ("#",)),
    "sql": Lang("sql", _rx(r"^(?:CREATE|ALTER)\s+(?:OR\s+REPLACE\s+)?"
                           r"(?:(?:TEMP|TEMPORARY|UNIQUE|MATERIALIZED|GLOBAL|LOCAL)\s+)*"
                           r"(?P<kw>TABLE|VIEW|FUNCTION|PROCEDURE|INDEX|TRIGGER|TYPE|SCHEMA|SEQUENCE|DATABASE)\s+"
                           r"(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[\w.\"`\[\]]+)", flags=re.IGNORECASE),
                [], "sql", ("--", "/*", "*", "*/")),
}

# C uses the C++ patterns: they are a superset, and a .h file is as often C++ as C.
LANGS["c"] = Lang("c", LANGS["cpp"].defs, LANGS["cpp"].methods, "brace", LANGS["cpp"].comments)

EXT_LANG = {
    ".py": "python", ".pyw": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".java": "java", ".go": "go", ".rs": "rust", ".c": "c", ".h": "c",
    ".cpp": "cpp", ".hpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".cs": "csharp", ".rb": "ruby", ".php": "php", ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".scala": "scala", ".lua": "lua", ".r": "r",
    ".sql": "sql",
}
_SHEBANG = {"python": "python", "sh": "shell", "bash": "shell", "zsh": "shell", "dash": "shell", "ksh": "shell",
            "node": "javascript", "deno": "typescript", "ruby": "ruby", "php": "php", "lua": "lua", "rscript": "r"}

Unit = tuple[int, int, str]   # first line, last line (1-based, inclusive), label without the line range


def _label(label: str, a: int, b: int) -> str:
    return f"{label} (lines {a}-{b})" if label else f"lines {a}-{b}"


def _trim(lines: list[str], a: int, b: int) -> tuple[int, int]:
    """The range without its leading and trailing blank lines (b < a when all blank)."""
    while a <= b and not lines[a - 1].strip():
        a += 1
    while b >= a and not lines[b - 1].strip():
        b -= 1
    return a, b


def _windows(lines: list[str], a: int, b: int) -> list[Unit]:
    """Code with no definitions to split at, in windows of about WINDOW lines,
    cut at a blank line near the window's end where there is one."""
    out: list[Unit] = []
    a, b = _trim(lines, a, b)
    while a <= b:
        end = min(b, a + WINDOW - 1)
        if end < b:
            for j in range(end, end - WINDOW // 4, -1):
                if not lines[j - 1].strip():
                    end = j
                    break
        s, e = _trim(lines, a, end)
        if s <= e:
            out.append((s, e, ""))
        a = end + 1
    return out


def _gap(lines: list[str], a: int, b: int) -> list[Unit]:
    """Code between definitions: one unit, or windows when it is long."""
    a, b = _trim(lines, a, b)
    if a > b:
        return []
    return _windows(lines, a, b) if b - a + 1 > BIG_UNIT else [(a, b, "")]


def _comment_start(lines: list[str], start: int, floor: int, prefixes: tuple[str, ...]) -> int:
    """Move a definition's first line up over the comment / decorator lines
    directly above it (no blank line between), never above `floor`."""
    while start - 1 >= floor:
        prev = lines[start - 2].strip()
        if not prev or not prev.startswith(prefixes):
            break
        start -= 1
    return start


# ---------------------------------------------------------------- Python (ast)

def _py_name(node: ast.AST) -> str:
    if isinstance(node, ast.ClassDef):
        return "class"
    return "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"


_DEF_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _py_body_units(lines: list[str], body: list[ast.stmt], a: int, b: int, prefix: str, gap_label: str) -> list[Unit]:
    """Definitions in `body` as units, the code between them as gap units
    (labelled `gap_label`), covering lines a..b."""
    units: list[Unit] = []
    pos = a
    for node in body:
        if not isinstance(node, _DEF_NODES):
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        start = _comment_start(lines, start, pos, ("#",))
        end = node.end_lineno or node.lineno
        units += [(s, e, gap_label) for s, e, _ in _gap(lines, pos, start - 1)]
        label = f"{_py_name(node)} {prefix}{node.name}"
        if isinstance(node, ast.ClassDef) and end - start + 1 > BIG_UNIT and any(
                isinstance(n, _DEF_NODES) for n in node.body):
            units += _py_body_units(lines, node.body, start, end, f"{prefix}{node.name}.", label)
        else:
            units.append((start, end, label))
        pos = end + 1
    units += [(s, e, gap_label) for s, e, _ in _gap(lines, pos, b)]
    return units


def python_units(text: str, lines: list[str]) -> list[Unit]:
    with pywarnings.catch_warnings():  # "invalid escape sequence" and the like are the author's business
        pywarnings.simplefilter("ignore")
        tree = ast.parse(text)
    return _py_body_units(lines, tree.body, 1, len(lines), "", "")


# ------------------------------------------------------------ other languages

def _match(patterns: list[re.Pattern], line: str, default_kw: str) -> tuple[str, str] | None:
    """(keyword, name) of a definition line, e.g. ("class", "Pile") or
    ("func", "Server.Handle"); None when the line defines nothing."""
    if len(line) > MAX_DEF_LINE:
        return None
    for p in patterns:
        m = p.match(line)
        if not m:
            continue
        groups = m.groupdict()
        name = " ".join((groups.get("name") or "").split())[:80]
        if name.split("(")[0] in _NOT_NAMES:
            continue
        kw = " ".join((groups.get("kw") or default_kw).split())
        if p.flags & re.IGNORECASE:
            kw = kw.lower()
        if groups.get("recv"):
            name = f"{groups['recv']}.{name}"
        return kw, name
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_CLOSERS = (")", "]", "}")


def _unit_end(lines: list[str], lang: Lang, start: int, limit: int, depth: int = 0) -> int:
    """The last line of the definition that starts at line `start` (indented
    by `depth`), at most `limit`: its closing "}" or "end" at the same
    indentation, the line before the code dedents (Python), or the end of
    its statement (SQL); `limit` when none is found."""
    first = lines[start - 1]
    if lang.style == "brace":
        if first.count("{") and first.count("{") == first.count("}"):
            return start  # one-liner
        for j in range(start + 1, limit + 1):
            line = lines[j - 1]
            if _indent(line) == depth and line.lstrip().startswith("}"):
                return j
    elif lang.style == "end":
        if re.search(r"\bend\s*$", first):
            return start
        for j in range(start + 1, limit + 1):
            line = lines[j - 1]
            if _indent(line) == depth and re.match(r"end\b", line.lstrip()):
                return j
    elif lang.style == "sql":
        for j in range(start, limit + 1):
            line = lines[j - 1]
            if (j == start or not line[:1].isspace()) and re.search(r";\s*(--.*)?$", line):
                return j
    elif lang.style == "indent":
        for j in range(start + 1, limit + 1):
            line = lines[j - 1]
            if line.strip() and _indent(line) <= depth and not line.lstrip().startswith(_CLOSERS + ("#", "@")):
                return j - 1
    return limit


def _only_closers(lines: list[str], a: int, b: int) -> bool:
    return all(not ln.strip() or ln.strip().rstrip(";,") in ("}", ")", "})", "]", "end") for ln in lines[a - 1:b])


def _split_container(lines: list[str], lang: Lang, a: int, b: int, kw: str, name: str) -> list[Unit]:
    """A big class / impl / namespace, split at its shallowest method lines:
    each method a unit ("fn Point.norm"), the rest (header, fields) units
    labelled with the container."""
    label = f"{kw} {name}"
    parent = name.rsplit(" for ", 1)[-1]  # Rust "impl fmt::Display for Point": methods of Point
    if kw.split()[-1] not in _CONTAINERS or not lang.methods:
        return [(a, b, label)]
    found = [(j, m, _indent(lines[j - 1])) for j in range(a + 1, b + 1)
             if (m := _match(lang.methods, lines[j - 1], lang.kw))]
    if not found:
        return [(a, b, label)]
    depth = min(d for _, _, d in found)
    starts = [(j, m) for j, m, d in found if d == depth]
    attached = [_comment_start(lines, j, starts[k - 1][0] + 1 if k else a + 1, lang.comments)
                for k, (j, _) in enumerate(starts)]
    units: list[Unit] = []
    pos = a
    for k, (j, (mkw, mname)) in enumerate(starts):
        s = max(attached[k], pos)
        units += [(x, y, label) for x, y, _ in _gap(lines, pos, s - 1)]
        limit = attached[k + 1] - 1 if k + 1 < len(starts) else b
        end = _unit_end(lines, lang, j, limit, depth)
        if k + 1 == len(starts) and end == limit and lang.style != "indent":
            # the last method ran to the container's end: leave the container's closing line out
            while end > j and _only_closers(lines, end, end) and _indent(lines[end - 1]) < depth:
                end -= 1
        x, y = _trim(lines, s, end)
        if y - x + 1 > BIG_UNIT:  # a class in a module, a namespace in a namespace: split it too
            units += _split_container(lines, lang, x, y, mkw, f"{parent}.{mname}")
        else:
            units.append((x, y, f"{mkw} {parent}.{mname}"))
        pos = end + 1
    tail_a, tail_b = _trim(lines, pos, b)
    if tail_a <= tail_b:
        if _only_closers(lines, tail_a, tail_b):  # the container's closing "}": part of its last method
            x, _, lab = units[-1]
            units[-1] = (x, tail_b, lab)
        else:
            units += [(x, y, label) for x, y, _ in _gap(lines, tail_a, tail_b)]
    return units


def regex_units(lines: list[str], lang: Lang) -> list[Unit]:
    raw = [(i, m) for i, line in enumerate(lines, 1) if (m := _match(lang.defs, line, lang.kw))]
    if not raw:
        return _windows(lines, 1, len(lines))
    attached = [_comment_start(lines, i, raw[k - 1][0] + 1 if k else 1, lang.comments)
                for k, (i, _) in enumerate(raw)]
    units: list[Unit] = []
    pos = 1
    for k, (i, (kw, name)) in enumerate(raw):
        s = max(attached[k], pos)
        units += _gap(lines, pos, s - 1)
        limit = attached[k + 1] - 1 if k + 1 < len(raw) else len(lines)
        end = _unit_end(lines, lang, i, limit)
        a, b = _trim(lines, s, end)
        if a <= b:
            units += _split_container(lines, lang, a, b, kw, name) if b - a + 1 > BIG_UNIT \
                else [(a, b, f"{kw} {name}")]
        pos = end + 1
    units += _gap(lines, pos, len(lines))
    return units


# ------------------------------------------------------------------ converter

def _language(data: bytes, name: str) -> str | None:
    lang = EXT_LANG.get(suffix(name))
    if lang:
        return lang
    m = re.match(rb"#!\s*(\S+)(?:[ \t]+(?:-\S+[ \t]+)*(\S+))?", data[:256])
    if not m:
        return None
    interp = PurePosixPath(m.group(1).decode("latin-1")).name
    if interp == "env" and m.group(2):
        interp = m.group(2).decode("latin-1")
    return _SHEBANG.get(re.sub(r"[\d.]+$", "", interp).lower())


def convert_code(data: bytes, name: str, limits: Limits) -> Extracted:
    language = _language(data, name)
    if language is None:
        raise ConvertError(f"cannot tell the programming language of '{name}' (no known extension or #! line)")
    text, enc = decode_text(data)
    warnings: list[str] = []
    text = cut_long_lines(text.replace("\r\n", "\n").replace("\r", "\n"), limits, warnings)
    lines = text.split("\n")  # not splitlines(): ast counts only \n as a line end, not \f or \u2028
    converter = "taskling regex splitter"
    if language == "python":
        try:
            units = python_units(text, lines)
            converter = f"stdlib ast (python {platform.python_version()})"
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            if isinstance(e, SyntaxError):
                where = f" at line {e.lineno}" if e.lineno else ""
                warnings.append(f"Python syntax error{where} ({e.msg}); split at definition lines instead")
            else:  # null bytes, nesting too deep for the parser
                warnings.append(f"the Python parser gave up ({type(e).__name__}: {str(e)[:200]}); "
                                f"split at definition lines instead")
            units = regex_units(lines, LANGS["python"])
    else:
        units = regex_units(lines, LANGS[language])
    segments = [Segment("\n".join(lines[a - 1:b]), _label(label, a, b), "code") for a, b, label in units]
    return Extracted(segments, language, f"{converter} ({enc})", warnings,
                     meta={"language": language, "units": len(segments)})


def _sniff_shebang(data: bytes, name: str) -> bool:
    """An extensionless script whose #! line names a known interpreter."""
    return not PurePosixPath(name).suffix and data.startswith(b"#!") and _language(data, name) is not None


_BY_LANG: dict[str, list[str]] = {}
for _ext, _lang in EXT_LANG.items():
    _BY_LANG.setdefault(_lang, []).append(_ext)
for _lang, _exts in _BY_LANG.items():
    register(tuple(_exts), _lang, f"{__name__}:convert_code")
register((), "code", f"{__name__}:convert_code", sniff=_sniff_shebang)
