"""A run's curated sets as files other trainers read: `taskling export --dataset FORMAT`.

    info = export_dataset(ctx, "hf", round=None, rejected=False)   # -> runs/<id>/datasets/round-<k>/hf/

Formats (each split written only when it has rows; curate's eval set is the Hub's "test" split, its
dev set "validation"):
  openai    OpenAI chat fine-tuning JSONL: {"messages": [system, user, assistant]} per line
  sharegpt  {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}]} per line
  alpaca    {"instruction": the task's instruction, "input": ..., "output": ...} per line
  hf        a Hugging Face `datasets` folder: data/<split>-00000-of-00001-<sha>.parquet with the chat
            messages, input, output, label and provenance columns (document, locator, chunk, span,
            the cited text, label-model confidence, grounding, round; reason for rejected rows), and
            README.md, a dataset card with Hub front matter: the task, the curation funnel and the
            sources' licences where known (hub.source_licences, or a LICENSE/COPYING file beside them)

The JSONL formats keep their lines exactly as their trainers want them; each split's provenance
(and a rejected row's reason) is in <split>.provenance.jsonl, line for line. Every format also gets
LLaMA-Factory's dataset_info.json (file, formatting, columns, role tags per split) and
dataset.json (what was written, from which curate stage), which is also what the CLI prints.
The messages are the closed-book conversation the student is trained on: the task's system
prompt, the input, the output as the student writes it.
"""
from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from .. import tasks
from ..core import tasktype
from ..core.errors import TasklingError
from ..core.manifests import CurateManifest
from ..core.workspace import Context, atomic_write_json, atomic_write_text, read_jsonl, sha256_file

FORMATS = ("openai", "sharegpt", "alpaca", "hf")
SPLITS = ("train", "eval", "dev", "rejected")
HF_SPLITS = {"train": "train", "eval": "test", "dev": "validation", "rejected": "rejected"}
HUB_TASKS = {"classify": "text-classification", "answer": "question-answering", "extract": "text-generation",
             "generate": "text-generation"}
LICENCE_FILES = ("LICENSE", "LICENCE", "COPYING", "LICENSE.md", "LICENSE.txt", "LICENCE.md", "COPYING.md")

LLAMA_FACTORY = {
    "openai": {"formatting": "sharegpt", "columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}},
    "sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                 "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                          "system_tag": "system"}},
    "alpaca": {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
}
LLAMA_FACTORY["hf"] = LLAMA_FACTORY["openai"]


# -- which round, which rows ----------------------------------------------------------------------------------
def curated_round(ctx: Context, round: int | None = None) -> int:
    """`round`, checked; by default the round the loop exported (loop.json), else the last curated one."""
    if round is None:
        try:
            kept = json.loads((ctx.run_dir / "loop.json").read_text()).get("kept") or {}
            round = kept.get("round") if isinstance(kept.get("round"), int) else None
        except (OSError, ValueError):
            round = None
    if round is None:
        done = sorted(int(d.name.removeprefix("round-")) for d in ctx.run_dir.glob("round-*")
                      if d.name.removeprefix("round-").isdigit() and (d / "curate" / "manifest.json").exists())
        round = done[-1] if done else 0
    if CurateManifest.read(ctx.stage_dir("curate", round)) is None:
        raise TasklingError(f"{ctx.stage_dir('curate', round)}: curate has not finished for round {round} of run "
                            f"'{ctx.run_id}'; run 'taskling curate' (or 'taskling run') first, or pick --round")
    return round


def messages(system: str, ex: dict) -> list[dict]:
    """The conversation the student learns from this example."""
    return tasks.student_messages(system, str(ex["input"])) + [
        {"role": "assistant", "content": tasks.output_text(ex["output"]) if ex.get("output") is not None else ""}]


def provenance(ex: dict, texts: dict[str, str], split: str) -> dict:
    """Where an example comes from: its document, locator, chunk, span and cited text; how sure the label is."""
    prov = (ex.get("provenance") or [{}])[0]
    span = (ex.get("spans") or [{}])[0]
    start = span.get("start", prov.get("start_char"))
    end = span.get("end", prov.get("end_char"))
    cited = "\n\n".join(texts[k] for k in ex.get("chunks", []) if k in texts)
    return {"id": str(ex["id"]), "source": ex.get("source") or "teacher", "document": prov.get("path"),
            "locator": prov.get("locator"), "chunk": prov.get("chunk"),
            "span_start": int(start) if start is not None else None, "span_end": int(end) if end is not None else None,
            "span_text": span.get("text"), "context": cited or None,
            "label_confidence": ex.get("label_confidence"), "grounding": ex.get("grounding"),
            "round": ex.get("round"), "split": split, "reason": ex.get("reason")}


def chunk_texts(ctx: Context, rows: list[dict]) -> dict[str, str]:
    from ..data.pile import Pile

    keys = {k for ex in rows for k in ex.get("chunks", [])}
    if not keys or not ctx.ws.pile_db.exists():
        return {}
    with Pile(ctx.ws.pile_db) as pile:
        return {k: c.text for k in keys if (c := pile.chunk(k)) is not None}


# -- the formats ----------------------------------------------------------------------------------------------
def line(fmt: str, system: str, ex: dict) -> dict:
    """One example as a line of a JSONL format."""
    conv = messages(system, ex)
    if fmt == "openai":
        return {"messages": conv}
    if fmt == "sharegpt":
        who = {"system": "system", "user": "human", "assistant": "gpt"}
        return {"conversations": [{"from": who[m["role"]], "value": m["content"]} for m in conv]}
    return {"instruction": system, "input": str(ex["input"]), "output": conv[-1]["content"]}


def write_jsonl_format(fmt: str, out: Path, system: str, sets: dict[str, list[dict]],
                       texts: dict[str, str]) -> dict[str, str]:
    files = {}
    for split, rows in sets.items():
        files[split] = f"{split}.jsonl"
        atomic_write_text(out / files[split], "".join(json.dumps(line(fmt, system, ex), ensure_ascii=False) + "\n"
                                                      for ex in rows))
        atomic_write_text(out / f"{split}.provenance.jsonl", "".join(
            json.dumps(provenance(ex, texts, split), ensure_ascii=False) + "\n" for ex in rows))
    return files


def hf_schema():
    import pyarrow as pa

    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("id", pa.string()), ("messages", pa.list_(msg)), ("input", pa.string()),
                      ("output", pa.string()), ("label", pa.string()), ("source", pa.string()),
                      ("document", pa.string()), ("locator", pa.string()), ("chunk", pa.string()),
                      ("span_start", pa.int64()), ("span_end", pa.int64()), ("span_text", pa.string()),
                      ("context", pa.string()), ("label_confidence", pa.float64()), ("grounding", pa.float64()),
                      ("round", pa.int64()), ("reason", pa.string())])


def write_hf(out: Path, system: str, sets: dict[str, list[dict]], texts: dict[str, str]) -> dict[str, str]:
    """Parquet per split with the messages and every provenance column, one schema for all splits."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise TasklingError("--dataset hf needs pyarrow: pip install pyarrow") from None
    schema, files = hf_schema(), {}
    for split, rows in sets.items():
        recs = []
        for ex in rows:
            p = provenance(ex, texts, split)
            recs.append({**{k: p[k] for k in schema.names if k in p}, "messages": messages(system, ex),
                         "input": str(ex["input"]),
                         "output": tasks.output_text(ex["output"]) if ex.get("output") is not None else None,
                         "label": None if ex.get("label") is None else str(ex["label"]),
                         "label_confidence": None if p["label_confidence"] is None else float(p["label_confidence"]),
                         "grounding": None if p["grounding"] is None else float(p["grounding"])})
        (out / "data").mkdir(parents=True, exist_ok=True)
        tmp = out / "data" / f".{split}.parquet"
        pq.write_table(pa.Table.from_pylist(recs, schema=schema), tmp)
        # The content's hash in the name (as push_to_hub once named shards): `datasets` caches a local
        # folder with a card by its folder name and the card's file names alone, so two exports with the
        # same names would load as whichever was read first.
        files[split] = f"data/{HF_SPLITS[split]}-00000-of-00001-{sha256_file(tmp)[:16]}.parquet"
        tmp.replace(out / files[split])
    return files


def llama_factory(fmt: str, name: str, files: dict[str, str]) -> dict:
    """LLaMA-Factory's dataset_info.json: one entry per split naming its file, formatting and columns."""
    spec = LLAMA_FACTORY[fmt]
    return {f"{name}_{split}": {"file_name": path, **({"formatting": spec["formatting"]}
                                                     if spec["formatting"] != "alpaca" else {}),
                                "columns": dict(spec["columns"]), **({"tags": dict(spec["tags"])} if "tags" in spec else {})}
            for split, path in files.items()}


# -- the dataset card -----------------------------------------------------------------------------------------
def licences(ctx: Context, documents: list[str]) -> dict[str, str]:
    """Document -> its licence where known: hub.source_licences (glob -> licence) first, then a LICENSE,
    LICENCE or COPYING file in its folder or a folder above it (inside the workspace)."""
    root, out = ctx.cfg.root.resolve(), {}
    for doc in documents:
        hit = next((lic for pat, lic in ctx.cfg.hub.source_licences.items() if fnmatch.fnmatch(doc, pat)), None)
        folder = (root / doc).parent
        while hit is None and folder.is_relative_to(root):
            found = next((folder / n for n in LICENCE_FILES if (folder / n).is_file()), None)
            if found is not None:
                hit = f"see {found.relative_to(root)}"
            if folder == root:
                break
            folder = folder.parent
        if hit is not None:
            out[doc] = hit
    return out


def hub_licence(found: dict[str, str], n_documents: int) -> str:
    """The card's `license`: the one licence id all documents share, else unknown (none known) or other.
    A document whose licence is only a file beside it ("see docs/LICENSE") has no id the Hub knows, so a
    set mixing it with a known licence is other, not that licence."""
    values = set(found.values())
    if len(values) == 1 and len(found) == n_documents and not next(iter(values)).startswith("see "):
        return next(iter(values)).lower()
    return "other" if found else "unknown"


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


def card(ctx: Context, k: int, cur: CurateManifest, counts: dict[str, int], files: dict[str, str],
         docs: list[str], people: int = 0) -> str:
    """README.md of the hf folder: Hub front matter, then the task, the funnel, the sources and the columns."""
    cfg = ctx.cfg
    found = licences(ctx, docs)
    meta: dict[str, Any] = {"pretty_name": f"{cfg.task.name} (taskling, round {k})",
                            "license": hub_licence(found, len(docs))}
    if meta["license"] == "other":
        meta["license_name"] = "mixed-sources" if len(set(found.values())) > 1 else "see-sources"
    if cur.language:
        meta["language"] = [cur.language]
    meta |= {"task_categories": [HUB_TASKS.get(cfg.task.type, "text-generation")],
             "size_categories": [size_category(sum(counts.values()))],
             "tags": ["taskling", "synthetic", "distillation", *cfg.hub.tags],
             "configs": [{"config_name": "default", "data_files": [
                 {"split": HF_SPLITS[s], "path": p} for s, p in files.items()]}]}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {cfg.task.name}", "", cfg.task.description.strip(), "",
             f"Made by taskling (run `{ctx.run_id}`, round {k}): a teacher model ({cfg.teacher.model}, "
             f"{cfg.teacher.backend}) wrote {cfg.task.type} examples grounded in the documents below, and "
             "taskling curated them.", "", "## Splits", "", "| split | rows | what it is |", "|---|---:|---|"]
    what = {"train": "what the student is trained on", "eval": "held out by source; the honest figures",
            "dev": "held out; read by the loop and the step selection", "rejected": "dropped by curation, with reason"}
    lines += [f"| {HF_SPLITS[s]} | {n} | {what[s]} |" for s, n in counts.items()]
    lines += ["", "## Curation funnel", "", "| step | examples |", "|---|---:|"]
    lines += [f"| {f.step} | {f.count} |" for f in cur.funnel]
    if cur.rejections:
        lines += ["", "Rejected, by reason: " + ", ".join(f"{r} {n}" for r, n in cur.rejections.items()) + "."]
    lines += ["", "## Sources", "", "| document | licence |", "|---|---|"]
    lines += [f"| `{d}` | {found.get(d, 'unknown')} |" for d in docs]
    if people:
        lines += ["", f"{people} examples were written by a person (task.examples in taskling.yaml, seed_data)."]
    lines += ["", "## Columns", "", "`messages` is the conversation the student learns (system prompt, input, "
              "answer); `input`, `output` and `label` are the same as plain text. Provenance: `document`, "
              "`locator` and `chunk` say where the example comes from, `span_start`/`span_end` are character "
              "offsets in the document (`span_text` the cited words where the teacher quoted them), `context` "
              "the cited chunks' text, `label_confidence` the label model's posterior (classify with label "
              "sources), `grounding` how well the source supports it, `source` who wrote it (teacher, human, "
              "task example, table, pile), `reason` why a rejected row was dropped.", "",
              "```python", "from datasets import load_dataset", "ds = load_dataset('PATH/TO/THIS/FOLDER')", "```", ""]
    return "\n".join(lines)


# -- the export -----------------------------------------------------------------------------------------------
def prepare(out: Path) -> None:
    """An empty folder to write into: a former export of ours is replaced, anything else is left alone."""
    if out.exists() and any(out.iterdir()):
        if not (out / "dataset.json").exists():
            raise TasklingError(f"{out}: not empty and not a taskling dataset folder; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_dataset(ctx: Context, fmt: str, out: Path | None = None, round: int | None = None,
                   rejected: bool = False) -> dict:
    """Write round `round`'s curated sets (and the rejected candidates) as `fmt`; what was written."""
    if fmt not in FORMATS:
        raise TasklingError(f"--dataset {fmt}: use one of {', '.join(FORMATS)}")
    k = curated_round(ctx, round)
    cur_dir = ctx.stage_dir("curate", k)
    cur = CurateManifest.read(cur_dir)
    sets = {s: read_jsonl(cur_dir / f"{s}.jsonl") for s in SPLITS if s != "rejected" or rejected}
    notes = []
    if fmt != "hf" and sets.get("rejected"):  # a chat line needs the answer: an input nobody labelled has none
        answered = [ex for ex in sets["rejected"] if ex.get("output") not in (None, "")]
        if len(answered) < len(sets["rejected"]):
            notes.append(f"{len(sets['rejected']) - len(answered)} rejected candidates have no output (inputs no "
                         f"source labelled), which {fmt} lines cannot hold; --dataset hf keeps them")
        sets["rejected"] = answered
    sets = {s: rows for s, rows in sets.items() if rows or s == "train"}
    out = Path(out) if out else ctx.run_dir / "datasets" / f"round-{k}" / fmt
    prepare(out)
    system = tasktype.get(ctx.cfg.task.type).system_prompt(ctx.cfg.task)
    everything = [ex for rows in sets.values() for ex in rows]
    texts = chunk_texts(ctx, everything)
    files = write_hf(out, system, sets, texts) if fmt == "hf" else write_jsonl_format(fmt, out, system, sets, texts)
    counts = {s: len(rows) for s, rows in sets.items()}
    docs = sorted({p["path"] for ex in everything if ex.get("chunks") for p in ex["provenance"][:1] if p.get("path")})
    if fmt == "hf":
        people = sum(ex.get("source") in ("task example", "human") for ex in everything)
        atomic_write_text(out / "README.md", card(ctx, k, cur, counts, files, docs, people))
    atomic_write_json(out / "dataset_info.json", llama_factory(fmt, ctx.cfg.task.name, files))
    if fmt == "openai" and counts["train"] < 10:
        notes.append(f"OpenAI's fine-tuning API wants at least 10 training examples; train has {counts['train']}")
    info = {"format": fmt, "dir": str(out), "run_id": ctx.run_id, "round": k, "task": ctx.cfg.task.name,
            "rows": counts, "files": files, "dataset_info": "dataset_info.json",
            "card": "README.md" if fmt == "hf" else None, "documents": len(docs),
            "curate": {"fingerprint": cur.fingerprint, "digest": cur.digest}, "notes": notes}
    atomic_write_json(out / "dataset.json", info)
    return info
