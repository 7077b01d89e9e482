"""The task file, taskling.yaml: typed, validated, with dotted overrides.

`load_config(path, overrides=["train.steps=50"])` returns a frozen `Config`.
Unknown keys are errors naming the file, the key and the nearest valid name;
bad values name the key and what is allowed. `TEMPLATE` is what
`taskling init` writes. The task: section (`TaskCfg`) lives in `tasktype`,
beside the task types that validate it.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import tasktype
from .errors import TasklingError
from .exchange import HubCfg, SeedFiles, Track
from .openbook import EMBEDDED_MODEL, StudentCfg
from .tablecfg import TableCfg
from .tasktype import TaskCfg

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelCfg(Section):
    backend: Literal["llamacpp", "transformers", "openai", "scripted"] = "llamacpp"
    model: str = EMBEDDED_MODEL
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float = Field(0.8, ge=0, le=2)
    max_tokens: int = Field(160, ge=1)
    n_ctx: int = Field(2048, ge=256)
    # openai backend: how hard to push the server and how long to wait for it; llamacpp: sequences decoded
    # together on one context (1: one request at a time through llama-cpp-python's chat API)
    concurrency: int = Field(4, ge=1, le=256)       # requests in flight at once
    timeout_s: float = Field(120, gt=0)              # per request
    max_retries: int = Field(6, ge=0)                # per request, on 429/5xx/timeouts/dropped connections
    down_after_s: float = Field(300, gt=0)           # server unreachable this long: stop (work so far is kept)
    allow_remote: bool = False                       # may document text go to a server not on this machine?
    json_mode: bool = True                           # ask for schema-constrained JSON where the backend can


class Price(Section):
    input_per_mtok: float = Field(0.0, ge=0)    # money per million prompt tokens
    output_per_mtok: float = Field(0.0, ge=0)   # money per million completion tokens


class BudgetCfg(Section):
    """What the whole run may spend, over all rounds of the loop (each round gets loop.round_examples)."""
    examples: int = Field(120, ge=4)
    teacher_tokens: int = Field(300_000, ge=100)
    wall_time_minutes: float = Field(60, gt=0)
    money: float | None = Field(None, ge=0)      # stop when the teacher's spend reaches this (see prices)
    prices: dict[str, Price] = {}                # by teacher model name; local models cost nothing


class IngestCfg(Section):
    chunk_tokens: int = Field(256, ge=32, le=8192)
    include: list[str] = []          # only files matching one of these globs (empty: all)
    exclude: list[str] = []          # never files matching these globs, e.g. "**/drafts/**"
    formats: list[str] = []          # only these formats, e.g. [pdf, docx, html] (empty: all)
    max_file_mb: float = Field(50, gt=0)
    max_archive_mb: float = Field(500, gt=0)       # total unpacked from one archive
    max_archive_ratio: float = Field(100, gt=1)    # unpacked/packed per member (zip bombs)
    max_depth: int = Field(5, ge=0)                # archives inside archives
    isolate: bool = True                           # convert each file in a worker process, under the two limits below
    convert_timeout_s: float = Field(120, gt=0)    # wall time one file's conversion may take
    convert_memory_mb: int = Field(1024, ge=256)   # the conversion worker's address space
    dedup_threshold: float = Field(0.85, gt=0, le=1)  # near-duplicate Jaccard similarity
    embed: bool = True
    embed_model: str = "all-minilm-l6-v2"
    embed_max_tokens: int = Field(112, ge=16, le=512)  # a chunk's first N word pieces decide its vector
    topics: int | None = Field(None, ge=1)         # number of topics (default: from the pile size)


DEFAULT_PERSONAS = ["a newcomer who knows little of the subject", "an experienced practitioner in a hurry",
                    "a careful reviewer who wants precise detail", "someone writing informally, with typos"]


class GenerateCfg(Section):
    max_calls_factor: float = Field(2.0, ge=1.0)     # jobs planned per wanted example (some replies fail)
    pool_per_label: int = Field(40, ge=1)
    examples_per_call: int | None = Field(None, ge=1, le=20)  # default: 1 for the embedded teacher, else 4
    chunks_per_example: int = Field(1, ge=1, le=4)   # excerpts shown to the teacher per call
    policy: str = "uniform"                          # how the budget is split over arms (topic x label)
    personas: list[str] = DEFAULT_PERSONAS           # who writes the inputs (varied per job)
    difficulties: list[str] = ["easy", "medium", "hard"]
    dry_run_sample: int = Field(6, ge=1)             # jobs measured by generate --dry-run
    pile_inputs: int | None = Field(None, ge=0)      # classify: this many pile chunks also become inputs as they
                                                     # are (no teacher call), labelled by the label model (label:);
                                                     # default: 600 with label.auto, else 0
    pile_input_words: int | None = Field(None, ge=8)  # a pile input is a chunk's first N words (default: about
                                                     # 2.5x the task examples' median length, 32..128)
    discover: bool = True                            # no tables: mapped: the table the task examples' answers come
                                                     # from is found (tasks/discover.py), shown and used


class CurateCfg(Section):
    filters: bool = True                 # false: keep every parsed example (only split and decontaminate), for baselines
    eval_fraction: float = Field(0.2, gt=0, lt=0.9)
    min_words: int = Field(3, ge=1)
    max_words: int = Field(200, ge=1)
    language: str | None = "auto"        # inputs must be in this language ("auto": the task examples'; null: any)
    min_grounding: float | None = Field(None, ge=0, le=1)  # default by task: extract 1.0, answer/generate 0.3, classify 0 (scored, not dropped)
    near_dup: float = Field(0.8, gt=0, le=1)          # MinHash Jaccard of inputs
    semantic_dup: float = Field(0.95, gt=0, le=1)     # embedding cosine of inputs
    decontam_cosine: float = Field(0.9, gt=0, le=1)   # a train input this close to an eval/gold input is dropped
    target_size: int | None = Field(None, ge=1)       # select down to this many train examples (label-balanced, diverse)
    pii: bool = False                                 # scrub e-mails, phone numbers, IBANs, card numbers
    judge: Union[Literal["teacher"], ModelCfg, None] = None  # an LLM judge: "teacher" or a model block like teacher's
    judge_threshold: float = Field(3.0, ge=1, le=5)   # mean rubric score (1-5) an example needs
    self_consistency: bool = False                    # keep examples whose output the teacher gives again, twice
    consistency_samples: int = Field(2, ge=1, le=8)
    embed: bool | None = None                         # semantic checks with embeddings (default: ingest.embed)
    task_examples: bool = True                        # train on task.examples too; generated copies of them are duplicates


class LoraCfg(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    # PEFT's default. Dropout masks cost a quarter of each step and 2 GB here (measured, SmolLM2-135M,
    # batch 8x205 tokens: 240 -> 310 tokens/s, 5.9 -> 3.9 GB); early stopping guards against overfitting.
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"


class TrainCfg(Section):
    steps: int | None = Field(None, ge=1)        # default: chosen from the data size (train.default_steps)
    # Floors (curation.enough): below one, training stops (--force trains anyway). Generated examples only.
    min_per_label: int = Field(1, ge=0)          # train examples per label (classify; the other types: in all)
    min_per_field: int = Field(1, ge=0)          # extract: train examples that give each field a value
    min_distinct_outputs: int = Field(2, ge=0)   # answer, generate: distinct outputs (one reply to all: stop)
    min_documents: int = Field(1, ge=0)          # answer, generate: source documents the train examples come from
    min_eval: int = Field(1, ge=0)               # held-out eval items
    lr: float | None = Field(None, gt=0)         # default: 5e-4 for LoRA, 5e-5 for full fine-tuning
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(384, ge=32)
    warmup_steps: int = Field(3, ge=0)
    checkpoint_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)   # held-out loss every N steps (default: about 8 times per run,
                                                 # or only at the end when neither patience nor best_checkpoint needs it)
    patience: int | None = Field(3, ge=1)        # stop after this many evaluations without a better held-out loss (null: never)
    best_checkpoint: bool = True                 # keep the adapter from the step with the lowest held-out loss
    full_finetune: bool = False                  # train every weight instead of a LoRA adapter (tiny students)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool | None = None          # torch.compile the decoder (null: when train.steps >= 150; costs ~2 min once)
    seed: int | None = None              # training's own seed (LoRA init, batch order); default: the top-level seed
    lora: LoraCfg = LoraCfg()


class EvaluateCfg(Section):
    # base: the untuned student with the same prompt (zero-shot); base-fewshot: with the task's examples as turns
    models: list[Literal["student", "base", "base-fewshot", "teacher"]] = ["student", "base", "base-fewshot", "teacher"]
    constrained: bool = True              # also score student and base with answers limited to the labels (classify)
                                          # or to JSON valid against the schema (extract)
    judge: Union[Literal["teacher"], ModelCfg, None] = None  # answer/generate: judge score and win rate against the teacher
    max_items: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)
    teacher_retrieval: int = Field(0, ge=0, le=20)  # answer/extract: also score the teacher with this many retrieved
                                                   # pile chunks in its prompt, its answer checked against them


class ExportCfg(Section):
    gguf: list[Literal["f16", "q8_0", "q4_k_m", "q5_k_m", "q4_0"]] = ["f16", "q8_0", "q4_k_m"]  # [] for none
    lora_gguf: bool = True             # the LoRA adapter as GGUF too (llama.cpp --lora), with the base's f16 GGUF
    ollama: Literal["f16", "q8_0", "q4_k_m", "q5_k_m", "q4_0"] | None = "q8_0"  # the GGUF the Modelfile points at
    verify_items: int = Field(16, ge=1)  # held-out items each artefact is run on
    tolerance: float = Field(0.05, ge=0, le=1)  # quantized GGUFs: largest allowed drop of the task metric


class ServeCfg(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    backend: Literal["llama.cpp", "transformers"] = "llama.cpp"  # GGUF through llama.cpp, or the merged folder
    quant: Literal["f16", "q8_0", "q4_k_m", "q5_k_m", "q4_0"] = "q8_0"  # which exported GGUF llama.cpp serves
    api_key: str | None = None          # required when host is not a loopback address (or $TASKLING_API_KEY)
    queue: int = Field(16, ge=1)        # requests waiting beyond this get 503
    timeout_s: float = Field(120, gt=0)  # per request
    max_tokens: int = Field(1024, ge=1)  # cap on max_tokens
    max_request_kb: int = Field(256, ge=1)  # request bodies above this get 413
    allowed_hosts: list[str] = []       # Host names a keyless server also answers to (a proxy's); loopback always
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # serve a bundle only if the tar has this digest


class LoopCfg(Section):
    """The self-improving loop (loop.py): rounds of analyse -> allocate -> generate -> curate -> train -> evaluate."""
    rounds: int = Field(1, ge=1, le=100)            # rounds at most, round 0 included (1: a single pass)
    policy: str = "thompson"                        # how later rounds split their budget: thompson | ucb | uniform
    round_examples: int | None = Field(None, ge=1)  # examples per round (default: budget.examples / rounds)
    failure_share: float = Field(0.3, ge=0, le=1)   # share of a later round's jobs seeded by the student's failures
    floor: float = Field(0.25, ge=0, le=1)          # every arm keeps at least this fraction of an equal share
    uncertainty_weight: float = Field(0.5, ge=0, le=1)  # arm score: (1-w) * error rate + w * student uncertainty
    probe_chunks: int = Field(48, ge=0)             # unlabelled pile chunks the student is probed on per round
    dev_fraction: float = Field(0.5, gt=0, lt=1)    # share of round 0's held-out units that become the dev set
    train: Literal["retrain", "continue"] = "retrain"  # later rounds: from the base on all data, or from the last adapter
    continue_steps: int | None = Field(None, ge=1)  # continue: steps per round (default: from the new examples)
    target: float | None = None                     # stop when the student's held-out metric reaches this
    patience: int = Field(2, ge=1)                  # stop after this many rounds without a significant gain
    confidence: float = Field(0.9, gt=0.5, lt=1)    # a gain is significant when this central interval is above 0


class ClusterCfg(Section):
    """Scale-out on Ray (cluster/): used only when an address is set here or by `--cluster`.
    Operational: none of it changes what is asked or learned, so none of it is fingerprinted,
    except train_workers, which changes the gradient (data-parallel)."""
    address: str | None = None         # a Ray address ("auto", "HOST:6379", "ray://HOST:10001") or "local"
    shard_jobs: int = Field(4, ge=1, le=1000)        # teacher requests per shard (a lost node loses at most one per worker)
    workers_per_node: int | None = Field(None, ge=1)  # teacher workers per node (default 1; each sends shard_jobs requests at once)
    cpus_per_worker: float = Field(1, gt=0)          # CPUs (and threads) a teacher, embedding or inference worker takes
    max_reschedules: int = Field(3, ge=0)            # times one shard may be moved off a dead node before the stage fails
    wait_for_nodes_s: float = Field(300, gt=0)       # with no live worker node, wait this long for one to join
    endpoints: list[str] = []          # OpenAI-compatible teacher URLs; each node uses the nearest one that answers
    ingest_files: int = Field(8, ge=1)               # files per ingest task
    embed_batch: int = Field(512, ge=1)              # chunks per embedding task
    train_workers: int = Field(2, ge=1, le=1024)     # data-parallel training workers (Ray Train)
    cpus_per_train_worker: float = Field(1, gt=0)
    use_gpu: bool = False                            # NCCL on GPU workers instead of gloo on CPU
    storage: str | None = None         # checkpoints every node can reach (default: the run's train folder)
    max_failures: int = Field(3, ge=0)               # training restarts from the last checkpoint before giving up


class RuleCfg(Section):
    """A labelling rule (label.rules): votes a label for an item, or abstains. It looks at `field`:
    input (the item's text), source (the text of the chunk it cites), path (its source document's
    path: folder and file names), locator (page, sheet, section, Message-ID) or column:NAME (a column
    of the table row it came from). It fires when one of `keywords` occurs as a whole word (any case)
    or `regex` matches; it votes `label`, or, with `map`, the label that the regex's first group
    (or the matched keyword) maps to."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    field: str = "input"
    keywords: list[str] = []
    regex: str | None = None
    label: str | None = None
    map: dict[str, str] = {}
    ignore_case: bool = True

    @model_validator(mode="after")
    def _one_test(self) -> "RuleCfg":
        if bool(self.keywords) == bool(self.regex):
            raise ValueError(f"rule '{self.name}' needs exactly one of keywords or regex")
        if (self.label is None) == (not self.map):
            raise ValueError(f"rule '{self.name}' needs exactly one of label or map")
        if self.field not in ("input", "source", "path", "locator") and not self.field.startswith("column:"):
            raise ValueError(f"rule '{self.name}': field '{self.field}' is not one of input, source, path, "
                             "locator or column:NAME")
        return self


class LabellerCfg(Section):
    """An LLM that votes on each item's label (label.teachers): the teacher or another model,
    few-shot (the task's examples as turns) or zero-shot, free or constrained to the label set."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: Union[Literal["teacher"], ModelCfg] = "teacher"
    prompt: Literal["fewshot", "zeroshot"] = "fewshot"
    constrained: bool = True     # the reply is one of the labels (a JSON-schema grammar where the backend has one)


class AutoCfg(Section):
    """label.auto: supervision taskling mines itself for classify, each source switchable alone
    (docs/weak-supervision.md). `label.auto: false` turns all of it off."""
    embedding: bool = True       # nearest label prototype, re-estimated on the pile (curation/autolabel.py)
    knn: bool = True             # the input's nearest pile chunks vote with their prototype labels
    retrieval: bool = True       # the input's nearest pile chunks vote with their document's (topic's) label
    keywords: bool = True        # keyword rules mined per label (curation/mined.py), written to mined_rules.yaml
    keywords_per_label: int = Field(12, ge=1, le=100)
    teacher_words: bool = True   # the teacher asked for each label's typical words (one call per label): rules words-<label>
    self_training: bool = True   # later rounds: the last student's confident labels of unlabelled pile chunks
    self_training_chunks: int = Field(200, ge=0)
    dev_items: int = Field(200, ge=0)   # a label-model-labelled dev set of pile inputs (never trained on) that
                                        # picks the training step and that the loop reads

    @property
    def any(self) -> bool:
        return self.embedding or self.knn or self.retrieval or self.keywords or self.teacher_words


class LabelCfg(Section):
    """Weak supervision for classify (label model): several sources vote on every candidate's
    label and a label model (labelmodel.py) weighs them without gold; training uses its posterior.
    For classify it is on by default through the automatic sources (label.auto)."""
    auto: AutoCfg = AutoCfg()                 # supervision mined from the labels, examples and pile; false: none
    asked: bool = True                        # votes: the label the teacher was asked to write an input for, and
                                              # for pile inputs (generate.pile_inputs) the label of their search pool
    teachers: list[LabellerCfg] = []          # LLM labellers
    rules: list[RuleCfg] = []                 # keyword, regex and metadata rules
    model: Literal["dawid-skene", "majority"] = "dawid-skene"
    init: Literal["majority", "gold"] = "majority"   # gold: start EM from what gold.jsonl says (needs gold)
    class_balance: Literal["auto", "learn", "uniform"] = "auto"  # how common each label is: learned from the
                                              # votes, or fixed uniform; auto: uniform when label.auto's sources
                                              # vote, learned otherwise (docs/weak-supervision.md)
    min_confidence: float = Field(0.5, ge=0, le=1)   # an example whose posterior label is less sure is dropped
    weight: bool = True                       # train with the posterior's confidence as each example's loss weight

    @field_validator("auto", mode="before")
    @classmethod
    def _auto_switch(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return {k: False for k in ("embedding", "knn", "retrieval", "keywords", "teacher_words",
                                       "self_training")} | {"dev_items": 0}
        return value


class Config(Section):
    task: TaskCfg
    sources: list[str] = Field(min_length=1)
    teacher: ModelCfg = ModelCfg()
    student: StudentCfg = StudentCfg()
    budget: BudgetCfg = BudgetCfg()
    ingest: IngestCfg = IngestCfg()
    generate: GenerateCfg = GenerateCfg()
    curate: CurateCfg = CurateCfg()
    train: TrainCfg = TrainCfg()
    evaluate: EvaluateCfg = EvaluateCfg()
    export: ExportCfg = ExportCfg()
    serve: ServeCfg = ServeCfg()
    loop: LoopCfg = LoopCfg()
    cluster: ClusterCfg = ClusterCfg()
    label: LabelCfg = LabelCfg()
    tables: list[TableCfg] = []
    seed_data: SeedFiles = []          # labelled items of your own that join training (core/exchange.py)
    track: Track = None                # track: mlflow logs every stage to an MLflow run
    hub: HubCfg = HubCfg()             # licences and tags for the Hugging Face cards
    seed: int = 0

    # Set by load_config, not by the user: where the file lives (sources are
    # relative to it).
    root: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _labels_known(self) -> "Config":
        """Rules and labellers name labels of the task; a regex compiles; names are unique."""
        import re

        lab, kind = self.label, tasktype.get(self.task.type)
        if (lab.teachers or lab.rules) and not kind.labelled:
            raise ValueError(f"label.rules and label.teachers vote on labels: they need a classify task "
                             f"(this one is {self.task.type})")
        names = [r.name for r in lab.rules] + [t.name for t in lab.teachers] + (["asked"] if lab.asked else [])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"label sources need distinct names; '{dup[0]}' is used twice")
        for r in lab.rules:
            for v in ([r.label] if r.label is not None else []) + list(r.map.values()):
                if v not in self.task.labels:
                    near = difflib.get_close_matches(v, list(self.task.labels), n=1)
                    raise ValueError(f"rule '{r.name}' votes '{v}', which is not one of the labels "
                                     f"{list(self.task.labels)}" + (f"; did you mean '{near[0]}'?" if near else ""))
            if r.regex is not None:
                try:
                    re.compile(r.regex)
                except re.error as e:
                    raise ValueError(f"rule '{r.name}': regex {r.regex!r} does not compile ({e})") from None
        tables = [t.name for t in self.tables]
        if len(set(tables)) < len(tables):
            raise ValueError("tables need distinct names")
        for t in self.tables:
            if kind.structured and not isinstance(t.output, dict):
                raise ValueError(f"table '{t.name}': an {self.task.type} task maps output to fields, e.g. "
                                 "output: {field: '{column}'}")
            if not kind.structured and isinstance(t.output, dict):
                raise ValueError(f"table '{t.name}': output is one template for a {self.task.type} task")
        return self

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, name).model_dump(mode="json") if name != "seed" else {"seed": self.seed}


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the model found by walking `loc` down from Config."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            break
        ann = field.annotation
        nested = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif nested:
            model = nested[0]
        else:
            break
    return [k for k in getattr(model, "model_fields", {}) if k != "root"]


def format_error(path: Path, err: dict) -> str:
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        return f"{path}: unknown key '{where}'{hint} (allowed here: {', '.join(allowed)})"
    if err["type"] == "missing":
        return f"{path}: missing required key '{where}'"
    if err["type"] == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{path}: {where} = {err.get('input')!r} is not allowed; use one of {allowed}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {where}: {msg}"


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TasklingError(f"--set {text!r}: write it as key.path=value, e.g. --set train.steps=50")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str], path: Path) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise TasklingError(f"--set {text}: '{'.'.join(keys[:i + 1])}' in {path} is not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def blamed(path: Path, loc: tuple, overrides: list[str]) -> str:
    """Who set the key an error is about: the --set that wrote it (or a section above it), else the file."""
    where = tuple(str(p) for p in loc)
    for text in reversed(overrides if where else []):  # the last --set of a key wins, as in apply_overrides
        keys = tuple(parse_override(text)[0])
        if where[:len(keys)] == keys or keys[:len(where)] == where:
            return f"--set {text}"
    return str(path)


def load_config(path: str | Path = "taskling.yaml", overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.exists():
        raise TasklingError(f"{path}: no task file here; run 'taskling init' to write one, or pass --config PATH")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TasklingError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax there") from None
    except UnicodeDecodeError:
        raise TasklingError(f"{path}: is not UTF-8 text; save it as UTF-8") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TasklingError(f"{path}: must be a mapping of keys (task:, sources:, ...), got {type(data).__name__}")
    data = apply_overrides(data, overrides or [], path)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        lines = [format_error(blamed(path, tuple(err["loc"]), overrides or []), err) for err in e.errors()]
        raise TasklingError("\n".join(lines)) from None
    return cfg.model_copy(update={"root": path.resolve().parent})


TEMPLATE = """\
# taskling.yaml: what to learn, from which documents, with which models.
# Every key below is optional except task and sources. Override any key on
# the command line with --set, e.g. --set train.steps=50

task:
  name: ticket-router            # letters, digits, - _ . (used for run and model names)
  description: >-                # the job, in plain language, as you would tell a colleague
    Route a customer's support ticket to the team that handles it.
  type: classify                 # classify | extract | answer | generate
  labels:                        # classify: label -> one line saying what belongs there
    billing: invoices, refunds, payment methods, charges
    technical: errors, crashes, installation, configuration
    account: login, password, profile, deleting an account
  # output_schema:               # extract: JSON schema of the fields to pull out
  #   type: object
  #   properties: {party: {type: string}, date: {type: string}}
  input_noun: support ticket     # what one input is, in the teacher's prompts
  examples:                      # a few input -> output pairs, written by you
    - input: "I was charged twice for my subscription this month."
      output: billing
    - input: "The app crashes when I open the settings page."
      output: technical

sources:                         # files, folders and globs, relative to this file
  - docs/**/*

teacher:                         # writes the training examples
  backend: llamacpp              # llamacpp | transformers | openai
  model: smollm2-135m-instruct   # embedded default, a .gguf path, or a model name on the server
  # base_url: http://127.0.0.1:11434/v1   # openai backend (Ollama, vLLM, ...)
  # api_key_env: OPENAI_API_KEY  # the key is read from this environment variable
  # concurrency: 4               # requests in flight at once (openai backend)
  # allow_remote: false          # true lets document text go to a server not on this machine
  temperature: 0.8
  max_tokens: 160

student:                         # the small model that is tuned
  model: smollm2-135m-instruct   # embedded default, an HF model directory or a .gguf file
  # retrieval: {mode: auto, k: 4}  # open-book: it reads the k pile chunks nearest each input (docs/guide.md)

budget:
  examples: 120                  # training examples to generate (before curation), over all rounds
  teacher_tokens: 300000         # stop generating when the teacher has produced this many
  wall_time_minutes: 60          # the loop starts no new round after this
  # money: 5.00                  # stop when the teacher's spend reaches this
  # prices: {gpt-4o-mini: {input_per_mtok: 0.15, output_per_mtok: 0.60}}

generate:
  # examples_per_call: 4         # default: 1 for the embedded teacher, else 4
  policy: uniform                # how the budget is split over topics x labels

ingest:
  chunk_tokens: 256              # chunk size in tokens of the student's tokenizer
  # include: ["**/*.pdf"]        # only files matching these globs
  # exclude: ["**/drafts/**"]    # never these
  # formats: [pdf, docx, html]   # only these formats
  max_file_mb: 50                # bigger files are skipped, with a reason
  # topics: 20                   # default: chosen from the pile size

curate:
  eval_fraction: 0.2             # share of source documents held out for evaluation

train:
  # steps: 40                    # default: chosen from the data size
  lr: 0.0005
  batch_size: 8
  lora: {r: 16, alpha: 32, dropout: 0.0, target_modules: all-linear}

evaluate:
  models: [student, base, teacher]

serve:
  host: 127.0.0.1
  port: 8000

loop:                            # the self-improving loop: later rounds spend the teacher where the student fails
  rounds: 1                      # 1: one pass; e.g. 4: up to three more rounds after the first
  policy: thompson               # thompson | ucb | uniform
  # target: 0.9                  # stop once the held-out metric reaches this
  # train: retrain               # retrain from the base on all data, or continue from the last adapter

# label:                         # classify with a weak teacher: several sources vote on each example's label
#   auto: true                   # on by default: embedding, kNN and retrieval labellers over the pile and
#                                # mined keyword rules (curate's mined_rules.yaml; promote them into rules:)
#   teachers:                    # LLM labellers (few-shot, answer constrained to the labels)
#     - {name: teacher}
#     - {name: gemma, model: {backend: llamacpp, model: gemma3-270m}}
#   rules:                       # keywords, regexes, metadata (path, locator, column:NAME, source)
#     - {name: kw-billing, keywords: [invoice, refund, charge], label: billing}
#     - {name: by-folder, field: path, regex: '^tickets/(\\w+)/', map: {billing: billing, bugs: bug}}
#   min_confidence: 0.5          # the label model's posterior an example needs (docs/weak-supervision.md)
#   class_balance: auto          # learn | uniform: how common each label is (docs/weak-supervision.md)

# tables:                        # rows of a table in the documents become examples directly
#   - name: errcodes
#     match: "docs/errcodes*.html"
#     input: "What is the condition name of error code {Error Code}?"
#     output: "{Condition Name}"
#     paraphrase: 1              # the teacher rewrites the input side once per row

# cluster:                       # scale out on Ray (docs/scale-out.md); or `taskling run --cluster HOST:6379`
#   address: auto                # an existing Ray cluster; "local" starts one on this machine
#   endpoints: [http://gpu-box-1:8000/v1, http://gpu-box-2:8000/v1]   # each node asks the nearest teacher
#   train_workers: 4             # data-parallel training workers

seed: 0
"""
