"""export: the tuned student as files the user owns, under runs/<id>/export/.

    merged/     base + LoRA merged, safetensors, tokenizer with chat template,
                task.json (prompt, type, labels, schema): loads in plain transformers
    adapter/    the PEFT LoRA adapter alone
    gguf/       <task>-f16.gguf and the quantized types of export.gguf (llama.cpp's
                own converter and quantizer), <task>-lora-f16.gguf (the adapter for
                llama.cpp --lora / Ollama ADAPTER), task.json
    Modelfile   Ollama: FROM ./gguf/<task>-<export.ollama>.gguf, chat template,
                stops, the task's system prompt, greedy decoding
    README.md   model card: task, base model and licence, data lineage, metrics
                with CIs against base and teacher, how to run it
    artifacts.json  what each artefact gave on the held-out items

Verification: every artefact is loaded by its real consumer (transformers for
the merged folder, llama-cpp-python for each GGUF, the LoRA GGUF on the base's
f16 GGUF) and run greedily on up to export.verify_items held-out items, with the
prompt tokenised once by the student's own tokenizer. merged, f16 and LoRA
must give the evaluated student's answers (a near-tie flipped by rounding is
reported, a changed metric fails); quantized types must keep the task metric
within export.tolerance of the student's. Failures are reported, not hidden:
the artefacts stay and the manifest says which check failed.

`taskling export --bundle` (bundle()) packs one artefact with its task.json, a
serve.json and SHA256SUMS into one tar that `taskling serve BUNDLE` runs offline.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

from .. import tasks
from ..core import tasktype
from ..core import stage
from ..core.config import Config
from ..core.packages import cache_dir
from ..core.errors import TasklingError
from ..core.manifests import CurateManifest, EvaluateManifest, ExportManifest, IngestManifest, TrainManifest
from ..core.stage import StageSpec
from ..core.workspace import Context, atomic_write_json, read_jsonl, sha256_file
from ..curation.gold import load_gold
from ..data.index import INDEX_FILE, write_index
from ..data.retrieve import open_book, served_settings
from ..report import card
from ..student import gguf, infer, ollama
from ..student.models import EMBEDDED, dir_size_mb, resolve_gguf, resolve_hf
from ..student.trained import load_trained, trained_dir

SPEC = StageSpec("export", reads=("task", "student", "export"), manifest=ExportManifest, needs=("train", "evaluate"))

LICENCES = {"smollm2-135m-instruct": "Apache-2.0 (SmolLM2 by Hugging Face)"}


def task_info(cfg: Config, task, tok) -> dict:
    """task.json: what a server needs to prompt the student as it was trained."""
    return {"name": cfg.task.name, "type": cfg.task.type, "system_prompt": task.system_prompt(cfg.task),
            "labels": list(cfg.task.labels), "max_new_tokens": task.max_new_tokens,
            "output_schema": task.decoding(cfg.task).json_schema,
            "base_model": cfg.student.model, "chat_template_kind": ollama.chat_template_kind(tok.chat_template)}


def verify_set(ctx: Context, n: int) -> tuple[list[dict], list[dict], str]:
    """Held-out items (or gold when there are none) with the evaluated student's answers to them."""
    ev = ctx.stage_dir("evaluate")
    src = "eval" if (ev / "pred-student-eval.jsonl").exists() else "gold"
    expected = read_jsonl(ev / f"pred-student-{src}.jsonl")[:n]
    items = (read_jsonl(ctx.stage_dir("curate") / "eval.jsonl") if src == "eval"
             else load_gold(ctx.cfg, ctx.ws.gold))[:len(expected)]
    return items, expected, src


def metric_of(task, cfg: Config, texts: list[str], items: list[dict]) -> float | None:
    if not items:
        return None
    return round(sum(task.score(cfg.task, task.parse_output(cfg.task, t), it["output"])
                     for t, it in zip(texts, items)) / len(items), 4)


def judge_artifact(kind: str, texts: list[str], expected: list[str], metric: float | None,
                   student_metric: float | None, tolerance: float) -> dict:
    """Whether an artefact still gives the trained answers: exact for lossless
    ones (a flipped near-tie passes only if the metric is unchanged), within
    `tolerance` of the student's metric for quantized ones."""
    same = sum(a == b for a, b in zip(texts, expected))
    drop = None if metric is None or student_metric is None else round(student_metric - metric, 4)
    if same == len(expected):
        status = "match"
    elif kind == "lossless":
        status = "near-ties flipped" if drop is not None and drop <= 0 else "failed"
    else:
        status = "within tolerance" if drop is not None and drop <= tolerance else "failed"
    return {"matches": f"{same}/{len(expected)}", "metric_drop": drop, "status": status}


def run_transformers(folder: Path, convs: list[list[dict]], max_new: int) -> tuple[list[str], float, int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    t0 = time.perf_counter()
    outs = infer.generate(model, tok, convs, max_new_tokens=max_new)
    return [o["text"] for o in outs], time.perf_counter() - t0, sum(o["completion_tokens"] for o in outs)


def run_gguf(path: Path, tok, prompts: list[list[int]], max_new: int, lora: Path | None = None):
    outs = gguf.greedy(path, prompts, max_new, infer.stop_token_ids(tok), lora=lora,
                       n_ctx=max(2048, max(len(p) for p in prompts) + max_new + 8))
    texts = [tok.decode(o["ids"], skip_special_tokens=True).strip() for o in outs]
    return texts, sum(o["seconds"] for o in outs), sum(o["completion_tokens"] for o in outs)


def base_f16(student: str) -> Path:
    """The untuned student as f16 GGUF, the base a LoRA GGUF is applied to."""
    if student in EMBEDDED or student.endswith(".gguf"):
        return resolve_gguf(student)
    hf = resolve_hf(student)
    out = cache_dir("models") / f"{hf.name}-{hashlib.sha256(str(hf).encode()).hexdigest()[:10]}-f16.gguf"
    return out if out.exists() else gguf.hf_to_gguf(hf, out)


def model_card(cfg: Config, ctx: Context, info: dict, artifacts: list[dict], modelfile: str | None) -> str:
    """README.md of the export: what the model does, where it came from, how good it is, how to run it."""
    ing = IngestManifest.read(ctx.stage_dir("ingest"))
    cur = CurateManifest.read(ctx.stage_dir("curate"))
    tr = TrainManifest.read(ctx.stage_dir("train"))
    ev = EvaluateManifest.read(ctx.stage_dir("evaluate"))
    name = cfg.task.name
    lines = [f"# {name}", "", f"A small model for one job: {cfg.task.description.strip()}", "",
             f"- task type: {cfg.task.type}" + (f"; labels: {', '.join(info['labels'])}" if info["labels"] else ""),
             f"- base model: {cfg.student.model} ({tr.mode if tr else 'lora'} fine-tuning)",
             f"- licence: {LICENCES.get(cfg.student.model, 'that of the base model; check it before you ship')}",
             f"- teacher that wrote the training data: {cfg.teacher.model} ({cfg.teacher.backend})",
             f"- made by taskling, run {ctx.run_id}", ""]
    if info.get("retrieval"):
        lines += [f"Open-book: it answers from the {info['retrieval']['k']} passages of the documents that match each "
                  "question best, and says which one it used; closed-book it would answer from memory alone. "
                  f"`taskling serve` and `taskling predict` read those passages from `merged/{INDEX_FILE}` and "
                  "return the ones an answer cites. GGUF consumers (Ollama, llama.cpp, the commands below) are given "
                  "no passages: they get the closed-book student, answering from memory alone, which it was not "
                  "trained to do, so expect weaker answers there.", ""]
    lines += ["## Data lineage", ""]
    docs, chunks, tokens = (ing.counts.documents, ing.counts.chunks, ing.counts.tokens) if ing else ("?", "?", "?")
    lines.append(f"- sources: {', '.join(cfg.sources)}: {docs} documents, {chunks} chunks, {tokens} tokens")
    for step in cur.funnel if cur else []:
        lines.append(f"- {step.step}: {step.count}")
    if tr:
        lines.append(f"- training: {tr.counts.steps} steps on {tr.counts.examples} "
                     f"examples, kept step {tr.best_step} (held-out loss {tr.best_eval_loss})")
    lines += ["", "## Results", "", "95% bootstrap intervals; the same items for every system.", "",
              "| set | system | metric | 95% CI | n |", "|---|---|---:|---|---:|"]
    for s, per in (ev.results if ev else {}).items():
        for who, r in per.items():
            lines.append(f"| {s} | {who} | {r.metric} | [{r.ci_low}, {r.ci_high}] | {r.n} |")
    lines += ["", "## Files", "", "| artefact | file | size MB | metric on held-out | matches the student | tokens/s |",
              "|---|---|---:|---:|---:|---:|"]
    for a in artifacts:
        lines.append(f"| {a['name']} | `{a['file']}` | {a['size_mb']} | {a.get('metric')} | {a.get('matches')} "
                     f"| {a.get('tokens_per_s')} |")
    sys_prompt = json.dumps(info["system_prompt"])
    lines += ["", "## How to run it", "", "taskling (OpenAI-compatible API, `/v1/task` for parsed answers):", "",
              "    taskling serve " + ctx.run_id, "", "transformers:", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "tok = AutoTokenizer.from_pretrained('merged'); model = AutoModelForCausalLM.from_pretrained('merged')",
              f"msgs = [{{'role': 'system', 'content': {sys_prompt}}}, {{'role': 'user', 'content': 'YOUR INPUT'}}]",
              "ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors='pt')",
              "print(tok.decode(model.generate(ids, max_new_tokens=64, do_sample=False)[0, ids.shape[1]:], "
              "skip_special_tokens=True))", "```", ""]
    ggufs = [a for a in artifacts if a["file"].endswith(".gguf") and "lora" not in a["file"]]
    if ggufs:
        lines += ["llama.cpp:", "", f"    llama-cli -m {ggufs[-1]['file']} -sys {sys_prompt} -p 'YOUR INPUT'", ""]
    if modelfile:
        lines += ["Ollama:", "", f"    ollama create {name} -f Modelfile && ollama run {name} 'YOUR INPUT'", ""]
    return "\n".join(lines) + "\n"


def run(ctx: Context) -> ExportManifest:
    cfg = ctx.cfg

    def body(out: Path) -> dict:
        infer.set_threads(ctx.threads)
        ec = cfg.export
        task = tasktype.get(cfg.task.type)
        name = cfg.task.name
        trained = trained_dir(ctx.stage_dir("train"))
        merged_model, tok = load_trained(ctx.stage_dir("train"), cfg.student.model)
        info = task_info(cfg, task, tok)
        if open_book(cfg, ctx.ws.pile_db):  # predict and serve retrieve as the student was trained
            info["retrieval"] = served_settings(cfg)
        merged = out / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        merged_model.save_pretrained(merged, safe_serialization=True)
        tok.save_pretrained(merged)
        atomic_write_json(merged / "task.json", info)
        if info.get("retrieval"):  # what the open-book student reads travels with it (GGUF consumers: closed-book)
            write_index(ctx.ws.pile_db, merged / INDEX_FILE)
        del merged_model
        adapter = out / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        if trained.name == "adapter":  # full fine-tuning has no adapter: the merged model is the model
            shutil.copytree(trained, adapter)

        items, expected, src = verify_set(ctx, ec.verify_items)
        want = [e["output"] for e in expected]
        convs = [tasks.student_messages(info["system_prompt"], it["input"]) for it in items]
        prompts = [infer.chat_ids(tok, c) for c in convs]
        student_metric = metric_of(task, cfg, want, items)
        artifacts: list[dict] = []

        def check(label: str, path: Path, kind: str, texts: list[str], seconds: float, ntok: int) -> None:
            metric = metric_of(task, cfg, texts, items)
            row = {"name": label, "file": str(path.relative_to(out)), "size_mb": dir_size_mb(path),
                   "consumer": "transformers" if path.is_dir() else "llama-cpp-python", "metric": metric,
                   "student_metric": student_metric, "items": len(items),
                   "tokens_per_s": round(ntok / seconds, 1) if seconds > 0 else None,
                   "items_per_s": round(len(items) / seconds, 2) if seconds > 0 else None,
                   **judge_artifact(kind, texts, want, metric, student_metric, ec.tolerance)}
            artifacts.append(row)
            colour = "red" if row["status"] == "failed" else "green"
            ctx.console.print(f"export: {label}: [{colour}]{row['status']}[/] ({row['matches']} answers as the "
                              f"student, metric {metric} vs {student_metric}), {row['size_mb']} MB")

        with ctx.console.status("export: checking the merged model with transformers"):
            check("merged model (safetensors, transformers)", merged, "lossless",
                  *run_transformers(merged, convs, task.max_new_tokens))
        gdir = out / "gguf"
        shutil.rmtree(gdir, ignore_errors=True)
        files: dict[str, Path] = {}
        if ec.gguf or ec.ollama:
            gdir.mkdir(parents=True)
            atomic_write_json(gdir / "task.json", info)
            with ctx.console.status("export: converting to GGUF with llama.cpp's converter"):
                files["f16"] = gguf.hf_to_gguf(merged, gdir / f"{name}-f16.gguf")
            for q in dict.fromkeys([*ec.gguf, *([ec.ollama] if ec.ollama else [])]):
                if q != "f16":
                    with ctx.console.status(f"export: quantizing to {q}"):
                        files[q] = gguf.quantize(files["f16"], gdir / f"{name}-{q}.gguf", q)
            for q, path in files.items():
                with ctx.console.status(f"export: checking {path.name} with llama-cpp-python"):
                    check(f"GGUF {q} (llama.cpp)", path, "lossless" if q == "f16" else "quantized",
                          *run_gguf(path, tok, prompts, task.max_new_tokens))
        if ec.lora_gguf and adapter.exists():
            with ctx.console.status("export: converting the LoRA adapter to GGUF"):
                lora = gguf.lora_to_gguf(adapter, resolve_hf(cfg.student.model), gdir / f"{name}-lora-f16.gguf")
                base = base_f16(cfg.student.model)
            with ctx.console.status(f"export: checking {lora.name} on {base.name} with llama-cpp-python"):
                check("LoRA adapter GGUF f16 (llama.cpp --lora)", lora, "lossless",
                      *run_gguf(base, tok, prompts, task.max_new_tokens, lora=lora))
                artifacts[-1]["base"] = str(base)
        modelfile = None
        if ec.ollama:
            kind = info["chat_template_kind"]
            modelfile = ollama.modelfile(f"gguf/{files[ec.ollama].name}", kind, info["system_prompt"],
                                       ollama.default_stops(kind, tok.eos_token or ""),
                                       {"num_predict": task.max_new_tokens}, eos_token=tok.eos_token or "")
            (out / "Modelfile").write_text(modelfile)
        for q in [q for q in files if q not in ec.gguf and q != ec.ollama]:  # f16 only as the conversion source
            files.pop(q).unlink()
            artifacts = [a for a in artifacts if a["file"] != f"gguf/{name}-{q}.gguf"]
        if adapter.exists():
            artifacts.insert(1, {"name": "LoRA adapter (PEFT)", "file": "adapter", "size_mb": dir_size_mb(adapter),
                                 "consumer": "peft", "status": "copied from train"})
        if (merged / INDEX_FILE).exists():
            artifacts.insert(1, {"name": "retrieval index (chunks, FTS5, vectors)", "file": f"merged/{INDEX_FILE}",
                                 "size_mb": dir_size_mb(merged / INDEX_FILE), "consumer": "taskling serve / predict",
                                 "status": "copied from the pile"})
        (out / "README.md").write_text(card.front_matter(ctx, gguf=bool(files))
                                       + model_card(cfg, ctx, info, artifacts, modelfile))
        atomic_write_json(out / "artifacts.json", {"verified_on": f"{len(items)} {src} items", "artifacts": artifacts})
        failed = [a["name"] for a in artifacts if a.get("status") == "failed"]
        if failed:
            ctx.console.print(f"[red]export: {', '.join(failed)} did not give the trained answers; see "
                              f"{out / 'artifacts.json'}[/]")
        ctx.console.print(f"export: {out} (model card {out / 'README.md'})")
        return {"counts": {"artifacts": len(artifacts), "checked_items": len(items), "failed": len(failed)},
                "artifacts": artifacts, "verified_on": f"{len(items)} {src} items", "failed": failed,
                "tolerance": ec.tolerance, "student_metric": student_metric,
                "outputs": ["merged/model.safetensors", "merged/task.json", "README.md", "artifacts.json",
                            *[f"gguf/{p.name}" for p in files.values()], *(["Modelfile"] if modelfile else [])]}

    hub = cfg.section("hub")
    return stage.run(ctx, SPEC, body, settings={"hub": hub} if hub != type(cfg.hub)().model_dump(mode="json") else None)


def bundle(ctx: Context, cfg: Config, artifact: str | None = None) -> Path:
    """One tar with one exported artefact (a GGUF type, or 'merged'), task.json,
    serve.json and SHA256SUMS, for `taskling serve BUNDLE` on a machine with no
    network. Written beside the export as <task>-<artefact>.bundle.tar."""
    out = ctx.stage_dir("export")
    artifact = artifact or cfg.serve.quant
    info_path = out / "merged" / "task.json"
    if not info_path.exists():
        raise TasklingError(f"{out}: nothing exported yet; run 'taskling export' first")
    members: list[tuple[str, Path]] = []
    if artifact == "merged":
        serve = {"backend": "transformers", "model": "model"}
        members += [(f"model/{p.relative_to(out / 'merged')}", p)
                    for p in sorted((out / "merged").rglob("*")) if p.is_file() and p.name != "task.json"]
    else:
        path = out / "gguf" / f"{cfg.task.name}-{artifact}.gguf"
        if not path.exists():
            have = sorted(p.stem.rsplit("-", 1)[-1] for p in (out / "gguf").glob("*.gguf") if "-lora-" not in p.name)
            raise TasklingError(f"{path}: no such export; bundle one of: merged, {', '.join(have) or '(no GGUF)'}")
        serve = {"backend": "llama.cpp", "model": "model.gguf", "quant": artifact}
        members.append(("model.gguf", path))
    sums = [f"{sha256_file(p)}  {arc}" for arc, p in members]
    texts = {"task.json": info_path.read_bytes(), "serve.json": json.dumps(serve, indent=2).encode()}
    sums += [f"{hashlib.sha256(b).hexdigest()}  {arc}" for arc, b in texts.items()]
    texts["SHA256SUMS"] = ("\n".join(sums) + "\n").encode()
    dest = out / f"{cfg.task.name}-{artifact}.bundle.tar"
    tmp = dest.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for arc, data in texts.items():
            ti = tarfile.TarInfo(arc)
            ti.size, ti.mtime, ti.mode = len(data), int(time.time()), 0o644
            tar.addfile(ti, io.BytesIO(data))
        for arc, p in members:
            tar.add(p, arcname=arc, recursive=False)
    tmp.replace(dest)
    return dest

