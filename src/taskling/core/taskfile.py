"""The task file `taskling init` writes for *this* task: its type, labels (or fields) and documents,
from flags or answers. The keys a first run needs come first; everything else follows below one
line, commented out with its default, to uncomment when it matters.

    taskling init --type classify --labels billing,bug,account --docs tickets/
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import TasklingError

TYPES = ("classify", "extract", "answer", "generate")
HOW = {"classify": "Put each {noun} in one of the labels below.",
       "extract": "Pull the fields below out of each {noun}.",
       "answer": "Answer each {noun} from the documents.",
       "generate": "Write the text each {noun} asks for, in the documents' style."}

# Everything a first run can leave at its default, folded: one commented line per key or block.
FOLDED = """\
# ---------------------------------------------------------------------------------------------
# Everything below is optional: uncomment a line to change its default. The guide has the rest
# (docs/guide.md); `taskling <command> --set section.key=value` overrides any key for one run.
#
# teacher:                         # who writes the training examples (above: which model)
#   base_url: http://127.0.0.1:11434/v1   # backend: openai (Ollama, vLLM, llama.cpp server, ...)
#   api_key_env: OPENAI_API_KEY    # the key is read from this environment variable
#   allow_remote: false            # true lets document text go to a server not on this machine
#   down_after_s: 300              # a server that does not answer this long stops the stage
#   temperature: 0.8
# student:
#   model: smollm2-135m-instruct   # the small model tuned: embedded default, HF folder or .gguf
# budget:
#   teacher_tokens: 300000         # stop generating when the teacher has written this many
#   wall_time_minutes: 60
#   money: 5.00                    # a hosted teacher: stop when its spend reaches this
# generate:
#   policy: uniform                # how the teacher's jobs are spread over topics x labels
# ingest:
#   chunk_tokens: 256
#   exclude: ["**/drafts/**"]
#   max_file_mb: 50
# curate:
#   eval_fraction: 0.2             # share of source documents held out for evaluation
# train:
#   steps: 40                      # default: chosen from the data size
#   lora: {r: 16, alpha: 32}
#   min_per_label: 1               # fewer generated examples for a label: stop before training
#   min_per_field: 1               # extract: fewer examples giving a field a value: the same
#   min_distinct_outputs: 2        # answer, generate: fewer distinct outputs: the same
#   min_eval: 1                    # fewer held-out items: the same (--force trains anyway)
# evaluate:
#   models: [student, base, teacher]
# loop:
#   rounds: 1                      # e.g. 4: later rounds spend the teacher where the student fails
#   policy: thompson               # how a later round spreads its budget (thompson | ucb | uniform)
# serve:
#   port: 8000
# seed: 0
"""


def slug(text: str) -> str:
    """A task name from a folder name: letters, digits, - _ ."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")
    return s or "my-task"


def q(value: str) -> str:
    """A YAML scalar that reads back as the same string (JSON strings are YAML)."""
    return json.dumps(value, ensure_ascii=False)


def task_file(name: str, type_: str, docs: list[str], labels: list[str] | None = None,
              fields: list[str] | None = None, description: str | None = None, noun: str = "input",
              teacher: str = "smollm2-135m-instruct", examples: int = 120) -> str:
    """The text of a taskling.yaml for this task (checked by the caller with load_config)."""
    if type_ not in TYPES:
        raise TasklingError(f"--type {type_}: use one of {', '.join(TYPES)}")
    labels = [x.strip() for x in labels or [] if x.strip()]
    fields = [x.strip() for x in fields or [] if x.strip()]
    if type_ == "classify" and len(set(labels)) < 2:
        raise TasklingError("a classify task needs at least two labels: --labels billing,bug,account")
    if type_ == "extract" and not fields:
        raise TasklingError("an extract task needs the fields to pull out: --fields party,date,amount")
    what = description or HOW[type_].format(noun=noun)
    lines = [f"# taskling.yaml for {name}, written by `taskling init`. The keys a first run needs come",
             "# first; check the lines marked 'edit', then: taskling ingest && taskling generate --dry-run",
             "task:",
             f"  name: {q(name)}",
             f"  description: {q(what)}" + ("" if description else "   # edit: the job, as you would tell a colleague"),
             f"  type: {type_}",
             f"  input_noun: {q(noun)}              # what one input is, in the teacher's prompts"]
    if type_ == "classify":
        lines.append("  labels:                        # edit: one line each saying what belongs there "
                     "(the teacher and the search for its documents read it)")
        lines += [f"    {q(lab)}: {q(lab.replace('_', ' ').replace('-', ' '))}" for lab in dict.fromkeys(labels)]
    if type_ == "extract":
        props = ", ".join(f"{q(f)}: {{type: string}}" for f in dict.fromkeys(fields))
        lines.append(f"  output_schema: {{type: object, properties: {{{props}}}}}   # edit: types, required")
    lines += ["  examples: []                   # edit: a few you wrote, e.g. - {input: \"...\", output: ...}",
              "sources:                         # files, folders and globs, relative to this file",
              *[f"  - {q(d)}" for d in docs],
              "teacher:                         # writes the examples: the embedded model works offline; "
              "a bigger one (backend: openai) writes better ones",
              "  backend: llamacpp",
              f"  model: {q(teacher)}",
              "budget:",
              f"  examples: {examples}                  # examples the teacher writes, before curation",
              "", FOLDED]
    return "\n".join(lines)


def source_globs(root: Path, docs: list[str]) -> list[str]:
    """Each --docs path as a source relative to the task file's folder (a folder means everything in it)."""
    out = []
    for d in docs:
        p = Path(d).expanduser()
        full = p if p.is_absolute() else Path.cwd() / p
        if not full.exists():
            raise TasklingError(f"--docs {d}: no such file or folder; point it at your documents")
        try:
            rel = full.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = full.resolve().as_posix()
        out.append(rel or ".")
    return out
