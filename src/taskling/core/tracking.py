"""Experiment tracking: every stage that runs is logged to an MLflow run nested under the taskling run.

    track: mlflow                                  # taskling.yaml; or a block: {uri: ..., experiment: ...}
    mlflow ui --backend-store-uri sqlite:///.taskling/mlflow.db

The store is local (SQLite at .taskling/mlflow.db by default, artefacts in .taskling/mlartifacts;
any MLflow tracking URI works): no server is needed. The experiment is the task's name
(track.experiment); the taskling run (its run id) is one parent MLflow run, found again by its tag
on every invocation, and each stage that ran (not one skipped as up to date) is a child run named
`round-<k>/<stage>` holding the stage's settings as params, its counts and figures as metrics
(evaluate: every set x system metric with its interval; the parent gets those too, per round), its
loss curves as metric histories (train's loss.json, by step) and its output files as artefacts
(those up to track.max_artifact_mb, and manifest.json). Tracking never changes what a stage does:
`stage.run` calls `log_stage` after the manifest is written, and a failure to log is a warning.
With `track:` off nothing here is called and MLflow is never imported.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from .errors import TasklingError
from .manifests import Manifest
from .workspace import Context

PARAMS_PER_CALL, METRICS_PER_CALL = 100, 900   # MLflow's log_batch takes at most 100 params, 1000 entities
MAX_PARAM = 6000     # characters MLflow keeps of a param's value
KIND, RUN_TAG = "taskling.kind", "taskling.run_id"


def ready(ctx: Context) -> None:
    """Fail before the stage works when tracking is on and MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TasklingError("track: mlflow needs MLflow installed: pip install 'taskling[mlflow]' "
                            "(or remove track: from taskling.yaml)") from None


def store_uri(ctx: Context) -> str:
    t = ctx.cfg.track
    return t.uri if t and t.uri else f"sqlite:///{(ctx.ws.state / 'mlflow.db').resolve()}"


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists and other leaves stay as they are."""
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def key(name: str) -> str:
    """A name MLflow accepts (letters, digits, _ - . / and space)."""
    return re.sub(r"[^\w\-./ ]", "_", name)[:250]


def number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def figures(m: Manifest) -> dict[str, float]:
    """A manifest's numbers as metrics: its counts, its top-level figures and, for evaluate, every set x
    system metric with its interval and n."""
    data = m.as_dict()
    out = {f"counts.{k}": v for k, v in flat(data.get("counts") or {}).items() if number(v) is not None}
    skip = {"round", "counts", "settings", "inputs", "results", "versions"}
    out |= {k: v for k, v in data.items() if k not in skip and number(v) is not None}
    out |= results(data.get("results") or {})
    return {key(k): float(v) for k, v in out.items()}


def results(res: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for split, per in res.items():
        for system, r in (per or {}).items():
            base = f"{split}.{system}"
            for name, v in (r.get("metrics") or {}).items():
                if number(v) is not None:
                    out[f"{base}.{name}"] = v
            for name, ci in (r.get("cis") or {}).items():
                if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(number(c) is not None for c in ci):
                    out[f"{base}.{name}.ci_low"], out[f"{base}.{name}.ci_high"] = ci
            if number(r.get("n")) is not None:
                out[f"{base}.n"] = r["n"]
    return out


def curves(stage_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """loss.json's series of [step, value] pairs (train), by name."""
    try:
        data = json.loads((stage_dir / "loss.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: [(int(p[0]), float(p[1])) for p in pts if isinstance(p, (list, tuple)) and len(p) == 2
                   and number(p[0]) is not None and number(p[1]) is not None]
            for name, pts in data.items() if isinstance(pts, list)} if isinstance(data, dict) else {}


def experiment(client, ctx: Context) -> str:
    name = (ctx.cfg.track.experiment if ctx.cfg.track else None) or ctx.cfg.task.name
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=(ctx.ws.state / "mlartifacts").resolve().as_uri())


def parent_run(client, exp: str, ctx: Context) -> str:
    """The MLflow run that stands for the taskling run (created the first time)."""
    found = client.search_runs([exp], filter_string=f"tags.`{RUN_TAG}` = '{ctx.run_id}' and tags.`{KIND}` = 'run'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(exp, run_name=ctx.run_id, tags={RUN_TAG: ctx.run_id, KIND: "run",
                                                              "taskling.task": ctx.cfg.task.name}).info.run_id


def log_batches(client, run: str, params: dict[str, str], metrics: list) -> None:
    """Params and metrics in as few calls as MLflow's per-call limits allow."""
    from mlflow.entities import Param

    items = [Param(key(k), v[:MAX_PARAM]) for k, v in params.items()]
    for i in range(0, len(items), PARAMS_PER_CALL):
        client.log_batch(run, params=items[i:i + PARAMS_PER_CALL])
    for i in range(0, len(metrics), METRICS_PER_CALL):
        client.log_batch(run, metrics=metrics[i:i + METRICS_PER_CALL])


def log_stage(ctx: Context, m: Manifest) -> str | None:
    """Log a finished stage to its own MLflow run under the taskling run; that run's id (None on failure)."""
    try:
        return write_stage(ctx, m)
    except Exception as e:  # the stage's work is done and kept; a store that fails must not undo it
        ctx.console.print(f"[yellow]track: could not log {m.stage} to MLflow at {store_uri(ctx)} "
                          f"({type(e).__name__}: {e})[/]")
        return None


def write_stage(ctx: Context, m: Manifest) -> str:
    import time

    for noisy in ("alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(ctx))
    exp = experiment(client, ctx)
    parent = parent_run(client, exp, ctx)
    run = client.create_run(exp, run_name=f"round-{m.round}/{m.stage}", tags={
        "mlflow.parentRunId": parent, RUN_TAG: ctx.run_id, KIND: "stage", "taskling.stage": m.stage,
        "taskling.round": str(m.round), "taskling.fingerprint": m.fingerprint}).info.run_id
    now = int(time.time() * 1000)
    params = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in flat(m.settings).items()}
    figs = figures(m)
    metrics = [Metric(k, v, now, 0) for k, v in figs.items()]
    for name, pts in curves(ctx.stage_dir(m.stage)).items():
        metrics += [Metric(key(name), v, now, step) for step, v in pts]
    log_batches(client, run, params, metrics)
    stage_dir = ctx.stage_dir(m.stage)
    limit = ctx.cfg.track.max_artifact_mb * 2**20 if ctx.cfg.track else 0
    for rel in ["manifest.json", *m.outputs]:
        path = stage_dir / rel
        if path.is_file() and (rel == "manifest.json" or path.stat().st_size <= limit):
            client.log_artifact(run, str(path), artifact_path=str(Path(rel).parent) if "/" in rel else None)
    client.set_terminated(run, "FINISHED")
    if m.stage == "evaluate":  # the headline figures per round on the taskling run itself
        log_batches(client, parent, {}, [Metric(k, v, now, m.round) for k, v in figs.items() if "." in k
                                         and not k.startswith("counts.")])
    client.set_terminated(parent, "FINISHED")
    return run
