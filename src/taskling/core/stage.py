"""The stage contract: what a stage declares, and the runner that fingerprints it from that.

A stage module declares itself in one `SPEC` and has `run(ctx) -> its manifest`:

    SPEC = StageSpec("curate", reads=("task", "curate", "seed"), needs=("generate",),
                     earlier=("curate",), manifest=CurateManifest)

    def run(ctx: Context) -> CurateManifest:
        ...
        return stage.run(ctx, SPEC, body, inputs={"gold": ...})

`stage.run` builds the fingerprint from the declaration: the config sections the stage
`reads` (operational settings left out), the fingerprint and digest of the finished
manifests it `needs` in this round and of the `earlier` ones of the round before, plus
only the extra settings and inputs the stage passes by name (ingest's file snapshot,
curate's gold.jsonl). Then `workspace.run_stage` skips the stage when that fingerprint
matches its finished manifest (and not --force), keeps partial work of the same
fingerprint for resume, and writes the typed manifest last and atomically. With `track:` in
taskling.yaml, every stage that ran is then logged to experiment tracking (`core.tracking`), so
no stage knows about it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from .config import Config
from .errors import TasklingError
from .manifests import BY_STAGE, Manifest
from .workspace import Context, StageBody, earlier, open_stage_dir, run_stage, upstream

# Settings that change how work is done, not what comes out: never in a fingerprint.
OPERATIONAL = {
    "teacher": ("concurrency", "timeout_s", "max_retries", "down_after_s", "allow_remote"),
    "generate": ("dry_run_sample",),
    # whether to train at all (curation.enough's floors), not what comes out
    "train": ("min_per_label", "min_per_field", "min_distinct_outputs", "min_documents", "min_eval"),
}
# Stages that plan a round from the one before it: none runs in round 0, so none is needed there.
FROM_ROUND_ONE = ("analyse",)
# A round's main path, in order: a stage needs every one before it (analyse plans rounds after the first).
PATH = ("ingest", "generate", "curate", "train", "evaluate", "export")


@dataclass(frozen=True)
class StageSpec:
    name: str
    reads: tuple[str, ...]           # config sections ("train") or single settings ("loop.rounds")
    manifest: type[Manifest]         # what it writes (core.manifests)
    needs: tuple[str, ...] = ()      # stages whose finished manifests of this round it reads
    earlier: tuple[str, ...] = ()    # stages whose finished manifests of the previous round it reads


class Stage(Protocol):
    """A stage module: its declaration and its run."""

    SPEC: StageSpec

    def run(self, ctx: Context) -> Manifest: ...


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def settings_of(cfg: Config, reads: tuple[str, ...]) -> dict:
    """The settings a stage reads: whole sections less their operational keys, or single keys."""
    out: dict = {}
    for name in reads:
        section, _, key = name.partition(".")
        value = _plain(getattr(cfg, section))
        if key:
            out.setdefault(section, {})[key] = value[key]
        elif isinstance(value, dict):
            out[section] = {k: v for k, v in value.items() if k not in OPERATIONAL.get(section, ())}
        else:
            out[section] = value
    return out


def fingerprinted(ctx: Context, spec: StageSpec, settings: dict | None = None,
                  inputs: dict | None = None) -> tuple[dict, dict]:
    """(settings, inputs) of the stage's fingerprint in `ctx`'s round."""
    needs = [s for s in spec.needs if ctx.round > 0 or s not in FROM_ROUND_ONE]
    if any(BY_STAGE[s].read(ctx.stage_dir(s)) is None for s in needs):
        # All at once: naming only the nearest (curate) sends the user round three times for three stages.
        # Checked only when a stage this one reads is missing: what it reads is all it needs.
        missing = unfinished(ctx, needs)
        raise TasklingError(
            f"{spec.name} needs {', '.join(missing)} first, which {'has' if len(missing) == 1 else 'have'} not "
            f"finished for run '{ctx.run_id}' (round {ctx.round}); run "
            f"'{' && '.join(f'taskling {s}' for s in missing)}', or 'taskling run' for the whole line")
    return (settings_of(ctx.cfg, spec.reads) | (settings or {}),
            upstream(ctx, *needs) | earlier(ctx, *spec.earlier) | (inputs or {}))


def unfinished(ctx: Context, needs: list[str]) -> list[str]:
    """The stages on the main path up to each of `needs` (and `needs` themselves) without a finished
    manifest in this round, in the order to run them."""
    last = max((PATH.index(s) for s in needs if s in PATH), default=-1)
    wanted = [s for s in PATH[:last + 1]] + [s for s in needs if s not in PATH]
    return [s for s in dict.fromkeys(wanted) if BY_STAGE[s].read(ctx.stage_dir(s)) is None]


def run(ctx: Context, spec: StageSpec, body: StageBody, settings: dict | None = None,
        inputs: dict | None = None) -> Manifest:
    """Run the stage's `body(out_dir)` unless it finished with the same fingerprint; its manifest.
    With `track:` on, a stage that ran is logged to its MLflow run (core.tracking); off, nothing is."""
    s, i = fingerprinted(ctx, spec, settings, inputs)
    if ctx.cfg.track is None:
        return run_stage(ctx, spec.name, s, i, body, spec.manifest)
    from . import tracking

    tracking.ready(ctx)
    m = run_stage(ctx, spec.name, s, i, body, spec.manifest)
    if not m.skipped:
        tracking.log_stage(ctx, m)
    return m


def open_dir(ctx: Context, spec: StageSpec, settings: dict | None = None, inputs: dict | None = None) -> Path:
    """The stage's folder opened for work of its fingerprint without running it (a dry run's sample
    is kept there for the real run); a finished stage of the same fingerprint is left as it is."""
    s, i = fingerprinted(ctx, spec, settings, inputs)
    return open_stage_dir(ctx, spec.name, s, i, keep_done=True)
