"""An exported model from Python: load it and predict a batch, answer a file, or serve it. `taskling.api`
re-exports all of it; `taskling predict` and `taskling serve` are these functions.

    with taskling.load_model("runs/my-task/export/merged", backend="transformers") as model:
        print(model.predict(["an input"])[0].output)
    taskling.predict_file("tickets.csv")          # tickets.predictions.csv, resumable
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from rich.console import Console

from .core.config import load_config
from .core.errors import TasklingError


def overrides_list(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    """{"train.steps": 40} or ["train.steps=40"] as the CLI's --set strings."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


@dataclass
class Prediction:
    """One answer of an exported model: the task's output (a label, a JSON object, text) and, where
    the task gives them, the label's probability and every label's, an open-book answer's citations."""

    input: str
    output: Any
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    citations: list[dict] | None = None
    abstained: bool | None = None
    raw: dict = field(default_factory=dict, repr=False)


class Model:
    """An exported student loaded once (llama.cpp for a GGUF, transformers for a merged folder), answering
    as `/v1/task` and `taskling predict` do. Use as a context manager, or call `close()`."""

    def __init__(self, target: str | None = None, root: str | Path = ".", backend: str = "llama.cpp",
                 quant: str = "q8_0", threads: int | None = None, explicit: bool = False):
        from .serving.outputs import open_book_pile
        from .serving.predict import PredictWorker
        from .serving.target import resolve

        self.target = resolve(target, Path(root), backend, quant, explicit=explicit)
        # An open-book model reads the pile (or its exported index) as /v1/task and predict do.
        self.worker = PredictWorker(self.target, threads, open_book_pile(self.target, Path(root), Console(stderr=True)))
        if self.worker.error:
            self.worker.close()
            raise TasklingError(f"{self.target.source}: could not load it ({self.worker.error})")

    @property
    def info(self) -> dict:
        """task.json: the task's name, type, system prompt, labels or schema."""
        return self.target.info

    @property
    def name(self) -> str:
        """The model's id, as /v1/models lists it."""
        return self.target.model_id

    def predict(self, inputs: str | Iterable[str]) -> list[Prediction]:
        """The task's answers to a batch of inputs (one string is a batch of one)."""
        items = [inputs] if isinstance(inputs, str) else [str(x) for x in inputs]
        if not self.info.get("type"):
            from .serving.engine import NO_TASK

            raise TasklingError(f"{self.target.source}: {NO_TASK}")
        outs = self.worker.run(items)
        return [Prediction(x, o.get("output"), o.get("probability"), o.get("probabilities"), o.get("citations"),
                           o.get("abstained"), o) for x, o in zip(items, outs)]

    def close(self) -> None:
        """Free the loaded model."""
        self.worker.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_model(target: str | Path | None = None, root: str | Path = ".", backend: str | None = None,
               quant: str = "q8_0", threads: int | None = None) -> Model:
    """An exported model to predict with: a run id, a .gguf file, an HF model folder, an export folder or a
    bundle .tar (None: the newest export under `root`/runs). `backend`: llama.cpp (GGUF, the default for a
    run) or transformers (the merged folder)."""
    return Model(None if target is None else str(target), root, backend or "llama.cpp", quant, threads,
                 explicit=backend is not None)


def predict_file(file: str | Path, output: str | Path | None = None, model: str | None = None,
                 config: str | Path = "taskling.yaml", overrides: Mapping[str, Any] | Iterable[str] | None = None,
                 backend: str | None = None, batch_size: int = 16, threads: int | None = None,
                 cluster: str | None = None, console: Console | None = None) -> dict:
    """`taskling predict`: every row of a CSV or JSONL file answered by an exported model, written beside it
    (resumable); what was written. Works without a task file too (then only serve.* overrides apply);
    `cluster` (or the task file's cluster.address) spreads the batches over a Ray cluster."""
    from .core.config import ClusterCfg
    from .serving.predict import predict_file as answer
    from .serving.serve import serve_config

    check_backend(backend)
    config, sets = Path(config), overrides_list(overrides)
    console = console or Console(stderr=True)
    serve, root = serve_config(config, sets)
    task = load_config(config, sets) if config.exists() else None
    address = cluster or (task.cluster.address if task else None)
    executor = None
    if address:
        from .cluster import connect

        executor = connect(address, task.cluster if task else ClusterCfg(), console)
    try:
        return answer(Path(file), Path(output) if output else None, model, root, console, cfg=serve,
                      backend=backend, batch_size=batch_size, threads=threads, executor=executor)
    finally:
        if executor is not None:
            executor.close()


def serve(target: str | None = None, config: str | Path = "taskling.yaml",
          overrides: Mapping[str, Any] | Iterable[str] | None = None, backend: str | None = None,
          api_key: str | None = None, threads: int | None = None, console: Console | None = None) -> None:
    """`taskling serve`: an exported model (a run id, .gguf, HF folder or bundle .tar; None: the newest
    export) behind the OpenAI-compatible API until Ctrl-C. serve.* settings come from the task file when
    there is one, with `overrides` ({"serve.port": 8001}) applied."""
    from .serving import serve as server

    check_backend(backend)
    cfg, root = server.serve_config(Path(config), overrides_list(overrides))
    server.serve(target, root, cfg, backend=backend, api_key=api_key, threads=threads, console=console)


def check_backend(backend: str | None) -> None:
    if backend is not None and backend not in ("llama.cpp", "transformers"):
        raise TasklingError(f"--backend {backend}: use llama.cpp or transformers")
