"""The Ollama Modelfile beside an exported GGUF: the chat template in Go-template syntax,
stop strings, parameters and the task's system prompt (`modelfile`), and a reader that parses
one the way Ollama does (`parse_modelfile`), so what we write is checked against what Ollama reads.
"""
from __future__ import annotations

import re

from ..core.errors import TasklingError
from .models import PLAIN_TEMPLATE


# Go templates (Ollama) rendering exactly what the HF chat templates render with
# add_generation_prompt=True. Ollama puts SYSTEM (or the caller's own system
# message) first in .Messages, so ranging over .Messages covers it; templates
# that add a default system prompt when there is none (SmolLM2's, Qwen's) thus
# never get to, and ChatML is the same for all of them.
CHATML_GO = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
             "{{ end }}<|im_start|>assistant\n")
_PLAIN_GO = ('{{- range .Messages }}{{ if eq .Role "system" }}System{{ else if eq .Role "user" }}User'
             '{{ else if eq .Role "assistant" }}Assistant{{ else if eq .Role "tool" }}Tool'
             '{{ else }}{{ .Role }}{{ end }}: {{ .Content }}{{ if eq .Role "assistant" }}@EOS@{{ end }}\n'
             "{{ end }}Assistant:")
TEMPLATE_KINDS = ("chatml", "plain")


def chat_template_kind(template: str | None) -> str:
    """Which Modelfile TEMPLATE matches an HF chat template: 'chatml' or 'plain'
    (models.PLAIN_TEMPLATE, used for models without one)."""
    if not template or template == PLAIN_TEMPLATE:
        return "plain"
    if "<|im_start|>" in template and "<|im_end|>" in template:
        return "chatml"
    raise TasklingError("the model's chat template is neither ChatML nor taskling's plain template; "
                        "no Ollama TEMPLATE is known for it")


def default_stops(kind: str, eos_token: str = "") -> list[str]:
    """Stop strings that end an assistant turn in each template kind."""
    if kind == "chatml":
        return ["<|im_end|>", "<|im_start|>"]
    return [s for s in (eos_token, "\nUser:") if s]


def go_template(kind: str, eos_token: str = "") -> str:
    if kind == "chatml":
        return CHATML_GO
    if kind == "plain":
        if "{{" in eos_token or "}}" in eos_token:
            raise TasklingError(f"end-of-sequence token {eos_token!r} cannot go into a Go template")
        return _PLAIN_GO.replace("@EOS@", eos_token)
    raise TasklingError(f"chat template kind '{kind}' is not one of {', '.join(TEMPLATE_KINDS)}")


def ollama_text(text: str) -> str:
    """`text` made representable in an Ollama triple-quoted string, which has no
    escapes: Ollama drops non-printable characters (we turn Unicode spaces into
    plain ones and drop the rest, so what we write is what it reads), and a line
    ending in three double quotes would close the string early (its last quote
    becomes U+201D)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(c if c.isprintable() or c in "\n\t" else (" " if c.isspace() else "") for c in text)
    lines = text.split("\n")
    for i, line in enumerate(lines[:-1]):
        body = line.rstrip(" \t")
        if body.endswith('"""'):
            lines[i] = body[:-1] + "\u201d" + line[len(body):]
    return "\n".join(lines)


def _quote(value: str) -> str:
    return '"""' + ollama_text(value) + '"""'


def _param_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    value = str(value)
    if re.fullmatch(r"[^\s\"]+", value):
        return f'"{value}"'
    return _quote(value)


def modelfile(gguf_name: str, chat_template_kind: str, system: str, stops: list[str], params: dict,
              *, adapter: str | None = None, eos_token: str = "") -> str:
    """An Ollama Modelfile for a GGUF beside it: FROM ./<gguf>, the chat
    TEMPLATE in Go-template syntax, stop strings, greedy decoding
    (temperature 0 unless params says otherwise) and the task's SYSTEM prompt.
    `adapter` adds ADAPTER ./<adapter gguf>; `eos_token` ends assistant turns
    in the plain template, as models.PLAIN_TEMPLATE does."""
    template = go_template(chat_template_kind, eos_token)
    lines = [f"FROM ./{gguf_name}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    lines.append(f"TEMPLATE {_quote(template)}")
    params = {"temperature": 0, **params}
    for name in params:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name == "stop":
            raise TasklingError(f"Modelfile parameter '{name}' is not valid here (stops go in `stops`)")
    lines += [f"PARAMETER stop {_param_value(s)}" for s in stops if s]
    lines += [f"PARAMETER {k} {_param_value(v)}" for k, v in params.items()]
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    return "\n".join(lines) + "\n"


_COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
             "parameter", "message", "requires"}


def parse_modelfile(text: str) -> dict:
    """Read a Modelfile the way Ollama's parser does (a port of its state
    machine): {"from", "adapter", "template", "system": str | None,
    "parameters": [(name, value)], "messages": [(role, content)]}."""
    NIL, NAME, VALUE, PARAM, MESSAGE, COMMENT = range(6)
    cmds: list[tuple[str, str]] = []
    state, line, buf, name, role = NIL, 1, [], "", ""

    def fail(msg):
        raise TasklingError(f"Modelfile line {line}: {msg}")

    for ch in text.removeprefix("\ufeff"):
        nl, sp = ch in "\r\n", ch in " \t"
        if nl:
            line += 1
        if state == NIL:
            nxt, r = (COMMENT, "") if ch == "#" else (NIL, "") if sp or nl else (NAME, ch)
        elif state == NAME:
            if ch.isascii() and ch.isalpha():
                nxt, r = NAME, ch
            elif sp:
                nxt, r = VALUE, ""
            else:
                fail("a command must be one of " + ", ".join(sorted(_COMMANDS)))
        elif state == VALUE:
            nxt, r = (NIL, ch) if sp or nl else (VALUE, ch)
        elif state in (PARAM, MESSAGE):
            ok = ch.isascii() and (ch.isalnum() or ch == "_") if state == PARAM else ch.isascii() and ch.isalpha()
            if ok:
                nxt, r = state, ch
            elif sp:
                nxt, r = VALUE, ""
            else:
                fail("unexpected end of a PARAMETER or MESSAGE name")
        else:  # COMMENT
            nxt, r = (NIL, "") if nl else (COMMENT, "")
        if nxt != state:
            word = "".join(buf)
            if state == NAME:
                low = word.lower()
                if low not in _COMMANDS:
                    fail(f"unknown command '{word}'")
                name = "model" if low == "from" else low
                nxt = PARAM if low == "parameter" else MESSAGE if low == "message" else nxt
            elif state == PARAM:
                name = word
            elif state == MESSAGE:
                if word not in ("system", "user", "assistant"):
                    fail(f"message role '{word}' is not system, user or assistant")
                role = word
            elif state == VALUE:
                s, ok = _unquote(word.strip())
                if not ok or sp:
                    buf.append(ch)
                    continue
                cmds.append((name, f"{role}: {s}" if role else s))
                role = ""
            buf, state = [], nxt
        if r and r.isprintable():
            buf.append(r)
    if state == VALUE:
        s, ok = _unquote("".join(buf).strip())
        if not ok:
            fail("unterminated quoted value")
        cmds.append((name, f"{role}: {s}" if role else s))
    elif state not in (NIL, COMMENT):
        fail("unexpected end of file")
    out = {"from": None, "adapter": None, "template": None, "system": None, "parameters": [], "messages": []}
    for cmd, arg in cmds:
        if cmd == "model":
            out["from"] = arg
        elif cmd in ("adapter", "template", "system"):
            out[cmd] = arg
        elif cmd == "message":
            out["messages"].append(tuple(arg.split(": ", 1)))
        elif cmd not in ("license", "draft", "renderer", "parser", "requires"):
            out["parameters"].append((cmd, arg))
    if out["from"] is None:
        raise TasklingError("Modelfile has no FROM line")
    return out


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True
