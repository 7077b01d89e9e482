"""Set one key of a YAML file's text and keep everything else as it was: every other line, comment
and blank line, and the comment on the key's own line. The UI's Task page saves its fields through
`set_key` (a field it changed replaces just that value's lines; the caller loads the result as the
command line does before it replaces the file).

    text = set_key(text, ("task", "labels"), {"billing": "invoices, refunds"})
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import TasklingError


class Indented(yaml.SafeDumper):
    """Block sequences indented under their key ("  - item") and text of several lines as a literal
    block, as people write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def lines_as_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


Indented.add_representer(str, lines_as_block)


def dump(key: str, value: Any, indent: int) -> str:
    """`key: value` as block YAML, every line but the first indented by `indent` spaces, no final newline."""
    text = yaml.dump({key: value}, Dumper=Indented, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=10**6).rstrip("\n")
    return ("\n" + " " * indent).join(text.split("\n"))


def value_end(node: yaml.Node, text: str) -> int:
    """Where a value's own text ends: at its last scalar for a block collection (whose mark runs on
    over the comments and blanks before the next key), before trailing blanks."""
    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    i = node.end_mark.index
    while i > 0 and text[i - 1] in " \t\r\n":
        i -= 1
    return i


def comment_and_end(text: str, key: yaml.Node, value: yaml.Node) -> tuple[str, int]:
    """The comment on a key's line ("labels:   # one line each", "type: classify  # ...") and where the
    text its value takes ends (past that comment when it follows the value on the key's line)."""
    end = value_end(value, text)
    line_end = text.find("\n", key.end_mark.index)
    line_end = len(text) if line_end < 0 else line_end
    if end <= line_end:
        m = re.match(r"\s*(#.*)$", text[end:line_end])
        return (m.group(1), line_end) if m else ("", end)
    m = re.match(r"\s*:\s*(?:[|>][-+0-9]*)?\s*(#.*)$", text[key.end_mark.index:line_end])
    return (m.group(1) if m else ""), end


def set_key(text: str, path: tuple[str, ...], value: Any) -> str:
    """`text` with the mapping key at `path` set to `value`; added at the end of its parent mapping
    when absent (the parents too). Raises TasklingError when the text is not a YAML mapping."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise TasklingError(f"the task file is not valid YAML ({getattr(e, 'problem', e)}); fix it first") from None
    if root is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + dump(path[0], nest(path[1:], value), 0) + "\n"
    if not isinstance(root, yaml.MappingNode):
        raise TasklingError("the task file must be a mapping of keys (task:, sources:, ...)")
    node = root
    for depth, name in enumerate(path):
        pair = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == name), None)
        rest = path[depth + 1:]
        if pair is None:
            return insert(text, node, name, nest(rest, value))
        k, v = pair
        if rest and not (isinstance(v, yaml.MappingNode) and not v.flow_style):
            # a flow mapping (or no mapping) on the way: it is written again whole, with the key set
            old = yaml.safe_load(text[v.start_mark.index:value_end(v, text)] or "null")
            merged = set_in(old if isinstance(old, dict) else {}, rest, value)
            return replace(text, k, v, name, merged)
        if not rest:
            return replace(text, k, v, name, value)
        node = v
    raise AssertionError("unreachable: the loop returns at the last key")


def nest(path: tuple[str, ...], value: Any) -> Any:
    for name in reversed(path):
        value = {name: value}
    return value


def set_in(data: dict, path: tuple[str, ...], value: Any) -> dict:
    out = dict(data)
    head, rest = path[0], path[1:]
    out[head] = set_in(out[head] if isinstance(out.get(head), dict) else {}, rest, value) if rest else value
    return out


def replace(text: str, key: yaml.Node, value: yaml.Node, name: str, new: Any) -> str:
    comment, end = comment_and_end(text, key, value)
    first, *more = dump(name, new, key.start_mark.column).split("\n", 1)
    return (text[:key.start_mark.index] + first + (f"  {comment}" if comment else "") + "".join("\n" + m for m in more)
            + text[end:])


def insert(text: str, parent: yaml.MappingNode, name: str, new: Any) -> str:
    """`name: new` after the last entry of a block mapping, at its keys' indentation."""
    if parent.flow_style or not parent.value:
        raise TasklingError(f"cannot add '{name}' to a mapping written in one line; write it as a block")
    k, v = parent.value[-1]
    end = text.find("\n", value_end(v, text))
    end = len(text) if end < 0 else end
    col = parent.value[0][0].start_mark.column
    return text[:end] + "\n" + " " * col + dump(name, new, col) + text[end:]
