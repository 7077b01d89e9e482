"""The task-type contract: every registered type implements all of it, config validates task.type
against the registry, a type added from one module of its own is usable at once, and what each
type decides (decoding constraint, split key, retrieval check) is what its answers need."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from taskling.core import tasktype
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.tasktype import Decoding, TaskCfg, TaskType
from taskling.data.pile import Chunk
from taskling.tasks import with_context

SCHEMA = {"type": "object", "properties": {"fn": {"type": "string"}, "year": {"type": "integer"}}}
TASKS = {"classify": TaskCfg(name="t", description="Route it.", type="classify", labels=["sqlite", "node"]),
         "extract": TaskCfg(name="t", description="Pull fields.", type="extract", output_schema=SCHEMA),
         "answer": TaskCfg(name="t", description="Answer it.", type="answer"),
         "generate": TaskCfg(name="t", description="Write it.", type="generate")}
CHUNK = Chunk(id=1, key="c1", doc_id=1, path="docs/json.md", sha256="x", start_char=0, end_char=57, locator="",
              text="The sqlite json_extract function reads a value at a path.")


def protocol_members() -> tuple[set[str], set[str]]:
    attrs = set(TaskType.__annotations__)
    methods = {n for n, v in vars(TaskType).items() if inspect.isfunction(v) and not n.startswith("_")}
    return attrs, methods


def test_the_built_in_types_are_registered_and_implement_the_whole_contract():
    assert tasktype.names() == ["answer", "classify", "extract", "generate"]
    attrs, methods = protocol_members()
    assert {"metric", "labelled", "claim"} <= attrs and {"summarize", "decoding", "split_key"} <= methods
    for name in tasktype.names():
        kind = tasktype.get(name)
        assert kind.name == name
        for a in attrs:
            assert hasattr(kind, a), f"{name} lacks {a}"
        for m in methods:
            want = list(inspect.signature(getattr(TaskType, m)).parameters)[1:]
            assert list(inspect.signature(getattr(kind, m)).parameters) == want, f"{name}.{m}"
        assert kind.claim in ("input", "output", "values")


def test_unknown_type_names_the_nearest():
    with pytest.raises(TasklingError, match=r"'clasify' is not a task type; did you mean 'classify'\?"):
        tasktype.get("clasify")


def test_config_validates_the_type_against_the_registry(tmp_path):
    p = tmp_path / "taskling.yaml"
    p.write_text(yaml.safe_dump({"task": {"name": "t", "description": "d", "type": "extrat", "output_schema": SCHEMA},
                                 "sources": ["docs"]}))
    with pytest.raises(TasklingError) as e:
        load_config(p)
    assert f"{p}: task.type: 'extrat' is not a task type; did you mean 'extract'?" in str(e.value)
    assert load_config(p, ["task.type=extract"]).task.type == "extract"


def test_every_module_of_tasks_is_imported_with_the_package():
    import pkgutil

    import taskling.tasks

    found = {m.name for m in pkgutil.iter_modules(taskling.tasks.__path__)}
    assert {"classify", "extract", "answer", "generate"} <= found
    assert all(f"taskling.tasks.{m}" in sys.modules for m in found)


def test_a_type_in_one_module_of_its_own_is_usable(tmp_path):
    """What adding a type takes: one module that registers it (here outside the package, imported
    before the config is read; in tasks/ the package imports it)."""
    (tmp_path / "shout.py").write_text(textwrap.dedent("""
        from taskling.core.tasktype import register
        from taskling.tasks.answer import FreeText

        register(FreeText(name="shout", max_new_tokens=8, first="Words", second="Shout", retrieval_check=False))
    """))
    (tmp_path / "taskling.yaml").write_text(yaml.safe_dump(
        {"task": {"name": "t", "description": "Shout it.", "type": "shout"}, "sources": ["docs"]}))
    code = ("import shout; from taskling.core import tasktype; from taskling.core.config import load_config; "
            "cfg = load_config('taskling.yaml'); kind = tasktype.get(cfg.task.type); "
            "job = {'n': 1, 'persona': 'a fan', 'like': None}; "
            "print(kind.teacher_messages(cfg.task, job, [])[1]['content'].split()[-2], "
            "kind.summarize(cfg.task, ['HI'], ['HI'], reps=5)['token_f1'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Shout:", "1.0"]


def test_decoding_is_the_label_set_the_schema_or_free_text():
    dec = {n: tasktype.get(n).decoding(TASKS[n]) for n in TASKS}
    assert dec["classify"] == Decoding(labels=("sqlite", "node")) and dec["classify"].constrained
    schema = dec["extract"].json_schema
    assert list(schema["properties"]) == ["fn", "year"] and schema["properties"]["year"]["type"] == ["integer", "null"]
    assert dec["answer"] == dec["generate"] == Decoding() and not dec["answer"].constrained
    served = {"labels": ["a", "b"], "output_schema": schema}
    assert tasktype.get("classify").served_decoding(served).labels == ("a", "b")
    assert tasktype.get("extract").served_decoding(served).json_schema == schema
    assert tasktype.get("extract").served_decoding({}).json_schema == {"type": "object"}
    assert tasktype.get("answer").served_decoding(served) == Decoding()


def test_split_key_is_the_label_for_labels_and_the_topic_otherwise():
    ex = {"label": "node", "arm": [3, None]}
    assert tasktype.get("classify").split_key(TASKS["classify"], ex) == "node"
    assert {tasktype.get(n).split_key(TASKS[n], ex) for n in ("extract", "answer", "generate")} == {"3"}
    assert tasktype.get("answer").split_key(TASKS["answer"], {}) == "None"


def test_the_answer_is_checked_against_the_retrieved_chunks():
    ext, ans = tasktype.get("extract"), tasktype.get("answer")
    fixed, info = ext.check_retrieved(TASKS["extract"], {"fn": "json_extract", "made_up": "json_frobnicate",
                                                         "none": None}, [CHUNK])
    assert fixed == {"fn": "json_extract", "made_up": None, "none": None}
    assert info == {"supported": False, "dropped": ["made_up"]}
    assert ans.check_retrieved(TASKS["answer"], "The sqlite json_extract function reads a value", [CHUNK])[1]["supported"]
    assert not ans.check_retrieved(TASKS["answer"], "Bananas are yellow and curved fruit", [CHUNK])[1]["supported"]
    for n in ("classify", "generate"):
        assert tasktype.get(n).check_retrieved(TASKS[n], "x", [CHUNK]) == ("x", {"supported": None, "dropped": []})
    assert {n for n in TASKS if tasktype.get(n).retrieval_check} == {"answer", "extract"}
    msgs = with_context([{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}], [CHUNK])
    assert msgs[0]["content"] == "s" and re.search(r"</document-[0-9a-f]{8}>\n\nQ\?$", msgs[1]["content"])
    assert with_context(msgs, []) is msgs


def test_the_task_section_is_checked_by_its_type():
    with pytest.raises(ValueError, match="at least two labels"):
        TaskCfg(name="t", description="d", type="classify", labels=["a"])
    with pytest.raises(ValueError, match="output_schema"):
        TaskCfg(name="t", description="d", type="extract")
    assert TaskCfg(name="t", description="d", type="answer", labels=["a"]).labels == {"a": "a"}
