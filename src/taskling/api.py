"""taskling from Python: the same functions the CLI calls, typed and documented.

    import taskling

    ws = taskling.open("my-task")                    # a folder holding taskling.yaml, or the file itself
    ws.run()                                          # ingest, rounds of generate/curate/train/evaluate, export
    ws.results("gold")["student"].metric              # typed manifests: core.manifests
    ws.export_dataset("hf")                           # the curated sets for other trainers (curation.datasets)
    with ws.model() as model:                         # the exported student, as `taskling serve` loads it
        print(model.predict(["How do I read a JSON field in SQLite?"])[0].output)

Every stage can run alone (`ws.ingest()`, `ws.generate()`, `ws.curate()`, `ws.train()`,
`ws.evaluate()`, `ws.export()`, `ws.analyse()`, or `ws.stage(name)`), skipped when nothing it
depends on changed, exactly as on the command line. Settings are overridden per workspace with
dotted keys (`taskling.open(path, overrides={"train.steps": 40})`). Errors a user can fix are
`taskling.TasklingError`, one line naming the file or setting. The exported model's side (`Model`,
`load_model`, `predict_file`, `serve`) lives in `taskling.exported` and is re-exported here.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from rich.console import Console

from .core.config import TEMPLATE, Config, load_config
from .core.errors import TasklingError
from .core.executor import Executor, LocalExecutor
from .core.manifests import (AnalyseManifest, CurateManifest, EvaluateManifest, ExportManifest, GenerateManifest,
                             IngestManifest, Manifest, SystemResult, TrainManifest)
from .core.workspace import Context, read_jsonl
from .curation import mined
from .exported import Model, Prediction, load_model, overrides_list, predict_file, serve  # noqa: F401

STAGES = ("ingest", "generate", "curate", "train", "evaluate", "export", "analyse")
SPLITS = ("train", "eval", "dev", "rejected")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def init(path: str | Path = "taskling.yaml", force: bool = False, type: str | None = None,
         labels: Iterable[str] | None = None, docs: Iterable[str] | None = None, fields: Iterable[str] | None = None,
         description: str | None = None, name: str | None = None, noun: str = "input") -> Path:
    """Write a taskling.yaml (a folder gets one inside it); its path. With `type` (and `labels` for
    classify, `fields` for extract, `docs` for the sources) it is this task's file, the keys a first run
    needs first and the rest folded below as comments (core.taskfile), checked by loading it; without,
    a commented example to edit."""
    from .core import taskfile

    path = Path(path)
    if path.is_dir():
        path = path / "taskling.yaml"
    if path.exists() and not force:
        raise TasklingError(f"{path}: already exists; pass force=True (--force) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    if type is None:
        path.write_text(TEMPLATE, encoding="utf-8")
        return path
    sources = taskfile.source_globs(path.parent, list(docs or [])) or ["docs"]
    text = taskfile.task_file(name or taskfile.slug(path.resolve().parent.name), type, sources, list(labels or []),
                              list(fields or []), description, noun)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)
    except TasklingError as e:  # a flag's value the config refuses (a label name, a type's own rule)
        tmp.unlink()
        raise TasklingError(str(e).replace(str(tmp), "taskling init")) from None
    tmp.replace(path)
    return path


def open(path: str | Path = "taskling.yaml", overrides: Mapping[str, Any] | Iterable[str] | None = None,
         run: str | None = None, threads: int | None = None, quiet: bool = False,
         cluster: str | None = None, console: Console | None = None) -> "Workspace":
    """The workspace of a task file (or of the folder holding taskling.yaml), at the round the loop
    exported (round 0 before any loop). `cluster`: a Ray address or "local" (cluster.address otherwise
    applies only when given here or in the task file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "taskling.yaml"
    cfg = load_config(path, overrides_list(overrides))
    console = console or Console(stderr=True, quiet=quiet)
    executor = executor_for(cfg, cluster, console)
    return Workspace(at_kept_round(Context(cfg, run_id=run, console=console, threads=threads, executor=executor)))


def at_kept_round(ctx: Context) -> Context:
    """`ctx` at the round the loop exported (round 0 before any loop): where a stage run alone acts."""
    from .report.build import kept_round

    return ctx.at_round(kept_round(ctx) or 0)


def executor_for(cfg: Config, address: str | None, console: Console) -> Executor:
    """Ray's executor on the cluster at `address` (or cluster.address); the local one without either."""
    if not (address or cfg.cluster.address):
        return LocalExecutor()
    import atexit

    from .cluster import connect

    executor = connect(address, cfg.cluster, console)
    atexit.register(executor.close)
    return executor


def fused(fts: list[dict], near: list[dict], limit: int, k: int = 60) -> list[dict]:
    """Two ranked lists of hits as one, each chunk once: reciprocal-rank fusion (bm25 and cosine are on
    different scales, ranks are not). A chunk both found is "fts+embed", with both scores kept."""
    out: dict[str, dict] = {}
    for hits in (fts, near):
        for rank, h in enumerate(hits):
            hit = out.setdefault(h["chunk"], {**h, "by": [], "scores": {}, "fused": 0.0})
            hit["by"].append(h["by"])
            hit["scores"][h["by"]] = h["score"]
            hit["fused"] += 1.0 / (k + rank + 1)
    merged = sorted(out.values(), key=lambda h: -h["fused"])[:limit]
    return [{**h, "by": "+".join(h["by"]), "score": round(h.pop("fused"), 4)} for h in merged]


@dataclass
class Workspace:
    """A task's workspace: its config, its runs, and every verb of the CLI as a method."""

    ctx: Context

    # -- what it is ----------------------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The validated task file (core.config.Config), overrides applied."""
        return self.ctx.cfg

    @property
    def root(self) -> Path:
        """The folder holding taskling.yaml."""
        return self.ctx.cfg.root

    @property
    def run_id(self) -> str:
        """The run's id (default: the task's name): its folder under runs/."""
        return str(self.ctx.run_id)

    @property
    def round(self) -> int:
        """The round this workspace acts on (the one the loop exported, after a run)."""
        return self.ctx.round

    @property
    def run_dir(self) -> Path:
        """runs/<run id>: the rounds' stage folders, report.json and report.html, export/."""
        return self.ctx.run_dir

    def at_round(self, k: int) -> "Workspace":
        """The same workspace acting on round k (stages, results and examples of that round)."""
        return Workspace(self.ctx.at_round(k))

    def rounds(self) -> list[int]:
        """Rounds with a finished curate stage, in order."""
        return sorted(int(d.name.removeprefix("round-")) for d in self.run_dir.glob("round-*")
                      if d.name.removeprefix("round-").isdigit() and CurateManifest.read(d / "curate") is not None)

    # -- running ----------------------------------------------------------------------------------------------
    def stage(self, name: str, force: bool = False) -> Manifest:
        """Run one stage of this round (skipped when up to date unless `force`); its typed manifest."""
        if name not in STAGES:
            raise TasklingError(f"no stage '{name}'; the stages are {', '.join(STAGES)}")
        if name == "analyse":
            return self.analyse(force)
        ctx = dataclasses.replace(self.ctx, force=force)
        if name == "train":  # below the floors (curation.enough) training stops unless forced
            from .curation import enough

            enough.gate(ctx)
        m = importlib.import_module(f"taskling.stages.{name}").run(ctx)
        if name in ("evaluate", "export"):  # as the CLI: the report follows every new figure
            self.report()
        return m

    def ingest(self, paths: Iterable[str] | None = None, force: bool = False) -> IngestManifest:
        """Add or refresh the task file's sources (and `paths`) in the pile."""
        from .stages import ingest

        ctx = dataclasses.replace(self.ctx, force=force)
        if paths:
            ctx = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"sources": [*ctx.cfg.sources, *paths]}))
        return ingest.run(ctx)

    def generate(self, force: bool = False) -> GenerateManifest:
        """The teacher writes examples grounded in the pile, within the budget (every call cached)."""
        return self.stage("generate", force)  # type: ignore[return-value]

    def dry_run(self) -> dict:
        """generate --dry-run: a small sample measured, the stage's tokens, cost and time projected."""
        from .stages import generate

        return generate.dry_run(self.ctx)

    def curate(self, force: bool = False) -> CurateManifest:
        """Validate, dedup, ground, label and split the examples into train, eval (and dev) sets."""
        return self.stage("curate", force)  # type: ignore[return-value]

    def train(self, force: bool = False) -> TrainManifest:
        """LoRA-tune the student on the curated train set (resumable; refused below curation's floors)."""
        return self.stage("train", force)  # type: ignore[return-value]

    def evaluate(self, force: bool = False) -> EvaluateManifest:
        """Score the student, its base and the teacher on the eval set and gold.jsonl; the report follows."""
        return self.stage("evaluate", force)  # type: ignore[return-value]

    def export(self, force: bool = False, bundle: str | None = None) -> ExportManifest:
        """The model files under runs/<id>/export, each checked in its consumer; with `bundle` (a GGUF type
        or "merged") also the one-file bundle that `taskling serve` runs offline (`bundle_path`)."""
        m = self.stage("export", force)
        if bundle is not None:
            self.bundle(bundle)
        return m  # type: ignore[return-value]

    def bundle(self, artifact: str | None = None) -> Path:
        """Pack one exported artefact (a GGUF type, or "merged") into a tar for `taskling serve FILE`."""
        from .stages import export

        return export.bundle(self.ctx, self.ctx.cfg, artifact)

    def analyse(self, force: bool = False) -> AnalyseManifest:
        """Plan the round after the last finished one (the loop's next step); this workspace moves to it."""
        from . import loop
        from .stages import analyse

        done = [r["round"] for r in loop.rounds_so_far(self.ctx)]
        if not done:
            raise TasklingError(f"run '{self.run_id}' has no finished round yet; run the loop (run()) first")
        self.ctx = dataclasses.replace(self.ctx.at_round(max(done) + 1), force=force)
        return analyse.run(self.ctx)

    def ui(self, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False) -> None:
        """`taskling ui`: the local web app over this workspace until Ctrl-C (loopback unless `allow_remote`)."""
        from .ui import serve as web

        web(self.ctx, host=host, port=port, console=self.ctx.console, allow_remote=allow_remote)

    def run(self, force: bool = False) -> dict:
        """The whole loop (`taskling run`): what it did, the results, the files; resumable."""
        from . import loop

        out = loop.run(dataclasses.replace(self.ctx, force=force))
        self.ctx = self.ctx.at_round(out["kept_round"])
        return out

    # -- reading --------------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Where the workspace stands (`taskling status`): each stage done, stale (and why) or not run, the
        pile per format and label pool, the last figures, the next command (taskling.status)."""
        from .status import status

        return status(self.ctx)

    def manifest(self, stage: str, round: int | None = None) -> Manifest | None:
        """A stage's finished manifest (typed), or None when it has not finished."""
        from .core.manifests import BY_STAGE

        if stage not in BY_STAGE:
            raise TasklingError(f"no stage '{stage}'; the stages are {', '.join(BY_STAGE)}")
        return BY_STAGE[stage].read(self.ctx.stage_dir(stage, round))

    def results(self, set: str = "gold", round: int | None = None) -> dict[str, SystemResult]:
        """Every evaluated system's result on `set` ("gold", "eval" or "dev"): metric, interval, n, details."""
        ev = self.ctx.manifest("evaluate", round)
        if set not in ev.results:
            raise TasklingError(f"evaluate has no '{set}' set for run '{self.run_id}'; it has "
                                f"{', '.join(ev.results) or 'none'}")
        return dict(ev.results[set])

    def examples(self, split: str = "train", round: int | None = None) -> list[dict]:
        """Curate's examples of a split (train, eval, dev, or rejected with each one's reason)."""
        if split not in SPLITS:
            raise TasklingError(f"no split '{split}'; use one of {', '.join(SPLITS)}")
        self.ctx.manifest("curate", round)
        return read_jsonl(self.ctx.stage_dir("curate", round) / f"{split}.jsonl")

    def loss(self, round: int | None = None) -> dict[str, list[tuple[int, float]]]:
        """Training's curves (loss, eval_loss, ...) as (step, value) pairs."""
        self.ctx.manifest("train", round)
        path = self.ctx.stage_dir("train", round) / "loss.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        return {k: [(int(s), float(v)) for s, v in pts] for k, pts in data.items() if isinstance(pts, list)}

    def report(self) -> dict:
        """Rebuild report.json and report.html from what the stages wrote; report.json's content."""
        from .report import build

        jpath, _ = build.write(self.ctx)
        return json.loads(jpath.read_text())

    # -- data in and out ------------------------------------------------------------------------------------
    def export_dataset(self, format: str, out: str | Path | None = None, round: int | None = None,
                       rejected: bool = False) -> dict:
        """The curated sets as openai, sharegpt, alpaca or hf (a `datasets` folder with a dataset card)."""
        from .curation.datasets import export_dataset

        return export_dataset(self.ctx, format, Path(out) if out else None, round, rejected)

    def import_gold(self, file: str | Path, input: str = "input", output: str = "output",
                    sheet: str | None = None, fraction: float = 1.0) -> dict:
        """Add a labelled file's items (or a seeded `fraction`) to gold.jsonl; they are never trained on."""
        from .curation import seed

        return seed.import_gold(self.config, file, self.ctx.ws.gold, input, output, sheet, fraction)

    def seed_data(self) -> dict:
        """What seed_data: adds to training, per file (read, skipped, left out as gold), without running curate."""
        from .curation import seed

        return seed.load(self.config, self.ctx.ws.gold)[1]

    def mined_rules(self, round: int | None = None) -> dict:
        """The keyword rules curate mined per label (label.auto): the file a person edits, and each rule's
        words, label, estimated accuracy and coverage (no gold) and accuracy measured on gold."""
        man = self.ctx.manifest("curate", round)
        path = self.ctx.stage_dir("curate", round) / "mined_rules.yaml"
        stats = {r.get("name"): r for r in ((man.label_model.mined_rules if man.label_model else None) or [])}
        rules = mined.read(path) if path.exists() else []
        return {"file": str(path) if path.exists() else None, "round": self.round if round is None else round,
                "rules": [{**{k: v for k, v in stats.get(r.get("name"), {}).items() if k not in r}, **r} for r in rules]}

    def promote_rules(self, file: str | Path | None = None, only: Iterable[str] | None = None,
                      config: str | Path | None = None) -> dict:
        """Copy mined rules (edits included) into the task file's label.rules, where they act as hand-written
        rules; `file` defaults to this round's mined_rules.yaml, `only` to every rule in it, `config` to the
        workspace's taskling.yaml. The task file keeps its comments; an edit that would not load is refused."""
        path = Path(file) if file else self.ctx.stage_dir("curate") / "mined_rules.yaml"
        if not path.exists():
            raise TasklingError(f"{path}: no mined rules there; curate writes them for a classify task with label.auto on")
        target = Path(config) if config else self.root / "taskling.yaml"
        names = mined.promote(target, path, list(only) if only else None)
        return {"promoted": names, "config": str(target), "from": str(path)}

    def review_export(self, path: str | Path) -> dict:
        """`taskling curate --export`: every candidate of the last curate (kept and dropped, with reasons and
        scores) to a CSV a person fills in (accept, reject or fix)."""
        from .stages import curate

        return curate.export_review(self.ctx, Path(path))

    def review_import(self, path: str | Path) -> dict:
        """`taskling curate --import`: a reviewed CSV's decisions, which win over every filter from the next
        curate on (`curate(force=True)` applies them now)."""
        from .stages import curate

        path = Path(path)
        if not path.exists():
            raise TasklingError(f"{path}: no such review file; write one with 'taskling curate --export'")
        return curate.import_review(self.ctx, path)

    # -- the call log ---------------------------------------------------------------------------------------
    def calls(self, limit: int = 20, purpose: str | None = None, model: str | None = None,
              grep: str | None = None, failed: bool = False, since: str | None = None) -> dict:
        """`taskling log`: the newest teacher and judge calls matching the filters, and their totals."""
        from .teacher.calls import CallLog

        filters = {"model": model, "grep": grep, "failed": True if failed else None, "since": since}
        with CallLog(self.ctx.ws.calls_db) as log:
            return {"totals": log.totals(purpose, **filters), "calls": log.recent(limit, purpose, **filters)}

    def call(self, key: str) -> dict:
        """One call in full (request, response, tokens, failed attempts) by its key or a prefix of it."""
        from .teacher.calls import CallLog

        with CallLog(self.ctx.ws.calls_db) as log:
            found = log.show(key)
        if found is None:
            raise TasklingError(f"no single call has a key starting with '{key}' in {self.ctx.ws.calls_db}; "
                                "'taskling log' lists the keys")
        return found

    def call_errors(self, limit: int = 20) -> dict:
        """`taskling log --errors`: failed attempts (429s, timeouts, bad replies) by kind, the newest first."""
        from .teacher.calls import CallLog

        with CallLog(self.ctx.ws.calls_db) as log:
            return {"by_kind": log.error_kinds(), "errors": log.errors(limit=limit)}

    # -- the pile -------------------------------------------------------------------------------------------
    def pile_stats(self) -> dict:
        """Documents, chunks, tokens, duplicates, embeddings and topics in the pile, by format."""
        from .data.pile import Pile

        with Pile(self.ctx.ws.pile_db) as p:
            return p.stats()

    def topics(self, examples: int = 1) -> list[dict]:
        """The pile's topics: label, size, distinctive terms, a few example chunks with provenance."""
        from .data.pile import Pile

        with Pile(self.ctx.ws.pile_db) as p:
            topics = p.topics()
            for t in topics:
                t["example_chunks"] = [{**c.provenance(), "text": c.text[:300]}
                                       for c in filter(None, (p.chunk(k) for k in t["examples"][:examples]))]
        return topics

    def search(self, query: str, limit: int = 10, mode: str = "both") -> list[dict]:
        """Chunks by words (FTS5, bm25: mode "fts"), by meaning (embeddings: "embed") or both, with provenance."""
        from .data.pile import Pile

        if mode not in ("fts", "embed", "both"):
            raise TasklingError(f"mode {mode!r}: use fts, embed or both")
        fts: list[dict] = []
        near: list[dict] = []
        with Pile(self.ctx.ws.pile_db) as p:
            if mode in ("fts", "both"):
                fts = [{**c.provenance(), "by": "fts", "score": round(s, 3), "text": c.text[:300]}
                       for c, s in p.search(query, limit)]
            if mode in ("embed", "both") and p.stats()["embedded_chunks"]:
                from .data.embed import Embedder

                ing = self.config.ingest
                # Loading the model takes seconds on a laptop: say so rather than look stuck.
                self.ctx.console.print(f"[dim]loading the embedding model ({ing.embed_model}) to search by "
                                       "meaning...[/]", highlight=False)
                vec = Embedder(ing.embed_model, max_tokens=ing.embed_max_tokens).encode([query])[0]
                near = [{**c.provenance(), "by": "embed", "score": round(s, 3), "text": c.text[:300]}
                        for c, s in p.nearest(vec, limit)]
            elif mode == "embed":
                raise TasklingError("the pile has no embeddings; run ingest with ingest.embed: true")
        return fused(fts, near, limit) if mode == "both" else fts + near

    def chunk(self, key: str) -> dict | None:
        """One chunk with its provenance and text (None when the pile has no such key)."""
        from .data.pile import Pile

        with Pile(self.ctx.ws.pile_db) as p:
            c = p.chunk(key)
        return None if c is None else {**c.provenance(), "text": c.text}

    # -- the model ------------------------------------------------------------------------------------------
    def ask(self, text: str, model: str = "student") -> dict:
        """`taskling try`: one input answered by the trained `model` (student: the newest trained round,
        base, or teacher), prompted as evaluate prompts it (ui.play.Playground, serving.systems); for a
        classify task a local model also gives every label's probability (student.infer.label_probabilities)."""
        from .core import tasktype
        from .serving.systems import conversations
        from .student import infer
        from .ui.play import SYSTEMS, Playground

        if model not in SYSTEMS:
            raise TasklingError(f"--model {model}: use one of {', '.join(SYSTEMS)}")
        play = Playground(self.ctx)
        try:
            out = play.answer(text, model)
            task = tasktype.get(self.config.task.type)
            labels = task.decoding(self.config.task).labels
            if model != "teacher" and labels is not None:
                _, m, tok = play.model(model)
                conv = conversations(self.config, task, model, [{"input": str(text).strip()}])[0]
                out["probabilities"] = {k: round(v, 4) for k, v in infer.label_probabilities(
                    m, tok, conv, list(labels), self.config.evaluate.batch_size).items()}
                out["constrained"] = next(iter(out["probabilities"]))
        finally:
            play.close()
        return {"input": str(text).strip(), **out}

    def model(self, backend: str | None = None, quant: str | None = None, threads: int | None = None) -> Model:
        """This run's exported student, loaded to predict with (llama.cpp on a GGUF by default; transformers
        on the merged folder, which is what an export without GGUF files has)."""
        from .serving.target import export_ggufs

        export = self.ctx.stage_dir("export")
        if backend is None and not export_ggufs(export / "gguf"):
            backend = "transformers"
        return Model(self.run_id, self.root, backend or self.config.serve.backend, quant or self.config.serve.quant,
                     threads or self.ctx.threads, explicit=backend is not None)

    def predict_file(self, file: str | Path, output: str | Path | None = None, model: str | None = None,
                     backend: str | None = None, batch_size: int = 16) -> dict:
        """`taskling predict`: every row of a CSV or JSONL file answered, resumable; what was written."""
        from .serving.predict import predict_file

        return predict_file(Path(file), Path(output) if output else None, model or self.run_id, self.root,
                            self.ctx.console, cfg=self.config.serve, backend=backend, batch_size=batch_size,
                            threads=self.ctx.threads, executor=self.ctx.executor)

