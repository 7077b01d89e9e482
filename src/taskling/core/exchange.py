"""The settings for what taskling exchanges with the tools around it: labelled data a user already
has (`seed_data:`), experiment tracking (`track:`) and what the Hugging Face cards say (`hub:`).

They are sections of taskling.yaml like any other (`core.config.Config` holds them); they live here
so the task file's schema stays one screen per concern. The libraries that read them are
`curation.seed` (seed data), `core.tracking` (MLflow), `report.card` and `curation.datasets`
(the Hub cards).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedDataCfg(Block):
    """One file of labelled items (CSV, TSV, JSONL or XLSX) whose rows join training as examples with
    `human` provenance. `input` and `output` name the file's columns (for extract, `output` may map
    each field to a column). An item that is also in gold.jsonl is never trained on, so
    `taskling gold import FILE --fraction 0.2` followed by `seed_data: FILE` evaluates on a fifth of
    the file and trains on the rest."""
    path: str                                      # relative to taskling.yaml
    input: str = "input"                           # the column holding the input
    output: Union[str, dict[str, str]] = "output"  # the column holding the output (extract: {field: column})
    sheet: str | None = None                       # XLSX: the sheet (default: the first)


class TrackCfg(Block):
    """Each stage logs its settings, figures, loss curves and artefacts to a run nested under the
    taskling run. Operational: never part of a fingerprint, and nothing is imported when it is off."""
    backend: Literal["mlflow"] = "mlflow"
    uri: str | None = None                     # the store (default: sqlite:///<workspace>/.taskling/mlflow.db)
    experiment: str | None = None              # default: the task's name
    max_artifact_mb: float = Field(50, ge=0)   # stage output files larger than this stay out of the store


class HubCfg(Block):
    """What the model and dataset cards say beyond what taskling measures."""
    license: str | None = None                 # the model's licence id (default: the base model's, where known)
    source_licences: dict[str, str] = {}       # glob over source paths -> the licence of those documents
    tags: list[str] = []                       # extra tags on both cards
    dataset: str | None = None                 # the Hub id the dataset folder is published as (default: task name)


def _seed_list(value: Any) -> Any:
    """`seed_data: labelled.csv` (or one mapping) is a list of one file."""
    if isinstance(value, str):
        return [{"path": value}]
    return [value] if isinstance(value, dict) else value


def _track_block(value: Any) -> Any:
    """`track: mlflow` is the mlflow block with its defaults; none, off or false is no tracking."""
    if value in (None, False, "none", "off"):
        return None
    return {"backend": value} if isinstance(value, str) else value


SeedFiles = Annotated[list[SeedDataCfg], BeforeValidator(_seed_list)]
Track = Annotated[Union[TrackCfg, None], BeforeValidator(_track_block)]
