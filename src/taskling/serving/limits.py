"""What a client's response_format may make the model thread do: limits on the grammar, not the bytes.

A JSON schema of 100 bytes can become a grammar of gigabytes: llama-cpp-python writes
`{"minItems": 10000000}` out as ten million copies of the item rule, and `maxLength: 1200`
as parentheses nested 1,200 deep, which llama.cpp's recursive grammar parser follows until
the model thread's stack overflows and the server dies. So a schema is measured twice before
any engine sees it (`check_schema`):

1. as JSON: nesting (MAX_SCHEMA_DEPTH), size (MAX_SCHEMA_NODES), only local `$ref`s, and every
   repetition it asks for (minItems, maxLength, ..., and a pattern's `{m,n}`) at most MAX_REPEAT,
   so turning it into a grammar is itself cheap;
2. as the grammar it becomes (llama.cpp's GBNF, the larger of the two engines' forms): its length
   (MAX_GRAMMAR_CHARS) and its parenthesis depth (MAX_GRAMMAR_DEPTH; the parser overflowed at
   about 1,100 on this machine, in the main thread and in the model thread alike).

A schema over a limit is a 400 that names the limit and where in the schema it was passed.
"""
from __future__ import annotations

import json
import re

from .schema import APIError

MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 2_000      # values in the schema, keys' values included
MAX_REPEAT = 256              # any count a schema asks to repeat (items, characters, properties, {m,n})
MAX_PATTERN_DEPTH = 32        # parentheses nested in a pattern
MAX_GRAMMAR_CHARS = 256 * 1024
MAX_GRAMMAR_DEPTH = 512
REPEATS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minContains",
           "maxContains")
QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")
PARAM = "response_format"


def refuse(message: str) -> APIError:
    return APIError(400, f"response_format.json_schema: {message}", code="schema_too_complex", param=PARAM)


def check_schema(schema: dict) -> None:
    """Refuse (400) a schema whose grammar would cost the model thread more than the limits allow."""
    walk_schema(schema)
    size, depth = grammar_size(schema)
    if size > MAX_GRAMMAR_CHARS:
        raise refuse(f"it becomes a grammar of {size:,} characters, over this server's {MAX_GRAMMAR_CHARS:,}; "
                     "ask for fewer repetitions or alternatives")
    if depth > MAX_GRAMMAR_DEPTH:
        raise refuse(f"it becomes a grammar nested {depth:,} levels deep, over this server's {MAX_GRAMMAR_DEPTH}; "
                     "lower maxLength / maxItems / maxProperties, or a pattern's {m,n}")


def walk_schema(schema: dict) -> None:
    """The JSON-level checks: depth, size, local references, repetition counts, patterns."""
    stack: list[tuple[object, str, int]] = [(schema, "$", 1)]
    nodes = 0
    while stack:
        value, where, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise refuse(f"more than {MAX_SCHEMA_NODES:,} values; this server takes smaller schemas")
        if depth > MAX_SCHEMA_DEPTH:
            raise refuse(f"nested deeper than {MAX_SCHEMA_DEPTH} levels (at {where})")
        if isinstance(value, list):
            stack.extend((v, f"{where}[{i}]"[:160], depth + 1) for i, v in enumerate(value))
            continue
        if not isinstance(value, dict):
            continue
        for key, v in value.items():
            here = f"{where}.{key[:40]}"[:160]
            if key in REPEATS and isinstance(v, (int, float)) and not isinstance(v, bool) and v > MAX_REPEAT:
                raise refuse(f"{key} {v:g} at {where} is over this server's limit of {MAX_REPEAT} "
                             "(each repetition becomes grammar rules)")
            if key == "$ref" and isinstance(v, str) and not v.startswith("#"):
                raise refuse(f"$ref {v[:80]!r} at {where}: only references inside the schema ('#/...') are "
                             "followed; nothing is fetched")
            if key == "pattern" and isinstance(v, str):
                check_pattern(v, here)
            stack.append((v, here, depth + 1))


def check_pattern(pattern: str, where: str) -> None:
    """A pattern's own repetitions and nesting: `(a{200}){200}` is 40,000 characters of grammar."""
    depth = deepest = 0
    escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth = max(0, depth - 1)
    if deepest > MAX_PATTERN_DEPTH:
        raise refuse(f"the pattern at {where} nests {deepest} groups deep (limit {MAX_PATTERN_DEPTH})")
    total = 1
    for lo, hi in QUANTIFIER.findall(pattern):
        n = max(int(lo or 0), int(hi or 0))
        if n > MAX_REPEAT:
            raise refuse(f"the pattern at {where} repeats {n:,} times, over this server's limit of {MAX_REPEAT}")
        total *= max(n, 1)
        if total > MAX_GRAMMAR_CHARS:  # nested quantifiers multiply
            raise refuse(f"the pattern at {where} repeats more than {MAX_GRAMMAR_CHARS:,} times in all")


def grammar_size(schema: dict) -> tuple[int, int]:
    """(characters, parenthesis depth) of the GBNF llama.cpp would build from `schema`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise refuse("it refers to itself too deeply to become a grammar") from None
    except Exception as e:  # AssertionError, KeyError, ValueError: what the converter cannot read
        raise refuse(f"it cannot be turned into a grammar ({type(e).__name__}: {str(e)[:160]})") from None
    return len(gbnf), gbnf_depth(gbnf)


def gbnf_depth(gbnf: str) -> int:
    """The deepest nesting of parentheses in a GBNF text, outside its literals and character classes."""
    depth = deepest = 0
    quote = None
    i, n = 0, len(gbnf)
    while i < n:
        ch = gbnf[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"[":
            quote = '"' if ch == '"' else "]"
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        i += 1
    return deepest
