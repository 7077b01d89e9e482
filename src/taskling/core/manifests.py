"""The typed manifests: one pydantic model per stage, what every reader of a finished stage uses.

A stage's `manifest.json` is written last and atomically by the stage runner (`workspace.run_stage`);
its presence means the stage finished. `GenerateManifest.read(stage_dir)` returns it, or None
when it is missing, damaged or of another shape (an older taskling's): all three mean "not
finished", so the stage runs again. On disk it stays plain indented JSON holding exactly the
keys the stage set. Every manifest has the common fields of `Manifest`, its stage's `counts`
and its stage's own fields; structures that differ from row to row (a backend's health, a
confusion matrix) stay dicts, and everything another module reads is a typed field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Self, Union

from pydantic import BaseModel, ConfigDict, ValidationError

# An arm of the budget: [topic id or None, label or None].
Arm = list[Optional[Union[int, str]]]


class Record(BaseModel):
    """A typed part of a manifest: unknown keys are an error, so a typo never writes a field nobody reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Manifest(Record):
    """The fields every stage's manifest has; the runner fills all but `counts` and the stage's own."""

    stage: str
    run_id: str
    round: int
    fingerprint: str
    settings: dict[str, Any]
    inputs: dict[str, Any]
    outputs: list[str]
    digest: str
    started: str
    seconds: float
    versions: dict[str, str]
    skipped: bool = False  # True when the runner found it finished and did not run the stage; never on disk

    @classmethod
    def read(cls, stage_dir: Path) -> Self | None:
        """The finished manifest in `stage_dir`, or None (missing, damaged or not this shape)."""
        try:
            return cls.model_validate_json((stage_dir / "manifest.json").read_bytes())
        except (OSError, ValidationError, ValueError):
            return None

    def on_disk(self) -> dict:
        """What manifest.json holds: the keys the stage and the runner set, without `skipped`."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"skipped"})

    def as_dict(self) -> dict:
        """The manifest as JSON-ready data with `skipped` (what `--json` prints)."""
        return self.model_dump(mode="json", exclude_unset=True) | {"skipped": self.skipped}


# -- ingest -------------------------------------------------------------------------------------------------------
class IngestCounts(Record):
    files: int
    added: int
    updated: int
    unchanged: int
    contained: int
    gone: int
    skipped: int
    warnings: int
    documents: int
    chunks: int
    tokens: int
    chars: int
    duplicate_documents: int
    duplicate_chunks: int
    embedded_chunks: int
    topics: int


class IngestManifest(Manifest):
    stage: Literal["ingest"] = "ingest"
    counts: IngestCounts
    by_format: dict[str, dict[str, int]]
    per_format: dict[str, dict[str, Any]]
    skipped_reasons: dict[str, int]
    timings: dict[str, Any]
    organise: dict[str, Any]
    cluster: Optional[dict[str, Any]] = None  # per-node work when the files were converted on a cluster


# -- generate -----------------------------------------------------------------------------------------------------
class GenerateCounts(Record):
    examples: int
    jobs: int
    jobs_planned: int
    failed_jobs: int
    teacher_tokens: int
    cost: float
    new_calls: int
    cached_calls: int
    retries: int
    failed_calls: int
    arms: int
    arms_covered: int
    examples_per_call: int
    quota: int


class ArmSpend(Record):
    """What one arm got from the teacher in a generate stage."""

    arm: Arm
    jobs: int
    asked: int
    examples: int
    seeded_jobs: int
    tokens: int
    cost: float


class GenerateManifest(Manifest):
    stage: Literal["generate"] = "generate"
    counts: GenerateCounts
    rates: dict[str, Optional[float]]
    failures_by_kind: dict[str, int]
    stopped: str
    examples_by_arm: dict[str, int]
    teacher_health: dict[str, Any]
    jobs_by_arm: list[ArmSpend]
    seeded_examples: int
    pool_arms: list[Arm]
    pile_inputs: int
    table_examples: int
    tables: list[dict[str, Any]]
    teacher: dict[str, Any]
    cluster: Optional[dict[str, Any]] = None


# -- curate -------------------------------------------------------------------------------------------------------
class CurateCounts(Record):
    generated: int
    valid: int
    labelled: Optional[int]
    unique: int
    grounded: int
    judged: int
    train: int
    eval: int
    rejected: int
    decontaminated: int
    redundant: int
    task_examples: int
    dev: int
    earlier_rounds: int
    new_train: int


class FunnelStep(Record):
    step: str
    count: int


class Split(Record):
    """How train and eval were kept apart: by document or (fallback) by chunk, and which units are held out."""

    unit: Literal["document", "chunk"]
    held_out: int
    groups: int
    label_coverage: Optional[str]
    fallback_reason: Optional[str] = None
    held_out_units: list[str]
    dev_units: list[str] = []
    fixed_from_round: Optional[int] = None
    table_rows: Optional[dict[str, int]] = None


class LabelModelInfo(Record):
    """The label model's work in curate (label:): its sources, what it changed, each source measured on gold."""

    model: str
    sources: list[str]
    items: int
    gold_items: int
    relabelled: int
    dropped_unsure: int
    min_confidence: float
    weighted: bool
    calibrated_with_gold: bool
    measured: dict[str, dict[str, Any]]
    fit: Optional[dict[str, Any]] = None
    auto: Optional[dict[str, Any]] = None             # label.auto: the pile's label shares, the mined words
    mined_rules: list[dict[str, Any]] = []            # the mined keyword rules with estimated/measured accuracy
    seconds_per_item: Optional[float] = None          # the automatic sources' time per item (the label model as a system)
    human_items: Optional[int] = None                 # the user's labelled items (seed_data) pinned as known truth
    measured_on_human: Optional[dict[str, dict[str, Any]]] = None  # each source's accuracy on them


class CurateManifest(Manifest):
    stage: Literal["curate"] = "curate"
    counts: CurateCounts
    review: Optional[dict[str, Any]]
    kept_by_arm: dict[str, int]
    rejections: dict[str, int]
    rejected_samples: dict[str, list[dict[str, Any]]]
    funnel: list[FunnelStep]
    split: Split
    labels: dict[str, dict[str, int]]
    topics: dict[str, int]
    language: Optional[str]
    grounding: dict[str, Any]
    pii: Optional[dict[str, int]]
    judge: Optional[dict[str, Any]]
    label_model: Optional[LabelModelInfo] = None


# -- train --------------------------------------------------------------------------------------------------------
class TrainCounts(Record):
    steps: int
    planned_steps: int
    examples: int
    skipped_too_long: int
    trainable_params: Optional[int] = None


class TrainManifest(Manifest):
    stage: Literal["train"] = "train"
    counts: TrainCounts
    final_loss: Optional[float]
    eval_loss: Optional[float]
    best_step: Optional[int]
    best_eval_loss: Optional[float]
    best_eval_exact: Optional[float]
    eval_exact: Optional[float]
    stopped_early: bool
    stop_reason: Optional[str]
    eval_every: int
    lr: float
    device: str
    mode: Literal["lora", "full"]
    continued_from: Optional[str]
    tokens_per_s: float
    train_seconds: float
    precision: str
    base_model: str
    compiled: bool = False
    compile_seconds: float = 0.0
    cluster: Optional[dict[str, Any]] = None  # the data-parallel run's workers, restarts and checkpoints
    selection: Optional[dict[str, Any]] = None  # which set picked the step, the rule, and its curve
    open_book: Optional[dict[str, Any]] = None  # student.retrieval's settings and the RAFT rows' cases (None: closed-book)


# -- evaluate -----------------------------------------------------------------------------------------------------
class EvaluateCounts(Record):
    eval: Optional[int] = None
    gold: Optional[int] = None
    dev: Optional[int] = None
    failures: int


class SystemResult(Record):
    """One system (student, base, teacher...) on one set: the headline metric with its interval, and the rest."""

    metric: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    n: int
    metrics: dict[str, Any]
    cis: dict[str, Any]
    unparsed: int
    items_per_s: Optional[float]
    latency_ms: Optional[dict[str, float]]
    tokens: Optional[dict[str, float]]
    cpu_seconds_per_1k: Optional[float]
    per_label: dict[str, float]
    size_mb: Optional[float]
    cost_per_1k: Optional[float]
    fallbacks: Optional[int] = None  # read from older runs only: the student is now scored on the labels, as served
    per_class: Optional[dict[str, Any]] = None
    confusion: Optional[Any] = None
    per_field: Optional[dict[str, Any]] = None


class EvaluateManifest(Manifest):
    stage: Literal["evaluate"] = "evaluate"
    counts: EvaluateCounts
    metric: str
    systems: list[str]
    results: dict[str, dict[str, SystemResult]]  # set -> system -> result
    error_rates: dict[str, Any]
    constrained: dict[str, Any]
    judge: Optional[dict[str, Any]]
    evaluate_seconds: float
    retrieval: Optional[dict[str, Any]] = None  # open-book: per set, recall@k of the source chunk


# -- export -------------------------------------------------------------------------------------------------------
class ExportCounts(Record):
    artifacts: int
    checked_items: int
    failed: int


class ExportManifest(Manifest):
    stage: Literal["export"] = "export"
    counts: ExportCounts
    artifacts: list[dict[str, Any]]
    verified_on: str
    failed: list[str]
    tolerance: float
    student_metric: Optional[float]


# -- analyse ------------------------------------------------------------------------------------------------------
class AnalyseCounts(Record):
    arms: int
    jobs: int
    seeded_jobs: int
    dev: int
    dev_errors: int
    probed: int
    new_arms: int


class ArmPlan(Record):
    """One arm as the analysis weighed it for the next round."""

    arm: Arm
    name: str
    topic: Optional[str]
    label: Optional[str]
    chunks: int
    dev_items: int
    dev_errors: float
    error_mean: float
    uncertainty: Optional[float]
    probed: int
    asked: int
    kept: int
    keep_rate: float
    weight: float
    jobs: int
    seeded_jobs: int
    new: bool
    boost: Optional[float]
    jobs_total: int


class SeededJob(Record):
    """A generate job seeded by a dev failure: write an input like `like`, grounded in `chunks`."""

    arm: Arm
    chunks: list[str]
    like: str
    of: Optional[str]


class Allocation(Record):
    policy: str
    jobs: int
    policy_jobs: int
    seeded_jobs: int
    seeded: list[SeededJob]


class DevSummary(Record):
    items: int
    errors: int
    error_rate: Optional[float]


class UncertaintySummary(Record):
    probed: int
    mean: Optional[float]


class AnalyseManifest(Manifest):
    stage: Literal["analyse"] = "analyse"
    counts: AnalyseCounts
    arms: list[ArmPlan]
    allocation: Allocation
    dev: DevSummary
    uncertainty: UncertaintySummary
    new_arms: list[str]
    why: list[str]
    self_training: Optional[dict[str, Any]] = None  # label.auto.self_training: pile chunks the last student labelled


BY_STAGE: dict[str, type[Manifest]] = {m.model_fields["stage"].default: m for m in (
    IngestManifest, GenerateManifest, CurateManifest, TrainManifest, EvaluateManifest, ExportManifest,
    AnalyseManifest)}
