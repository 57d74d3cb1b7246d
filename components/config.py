"""Typed run configuration, read once from params.yaml (and, for runtime settings, the environment).

ML settings (data, split, model, train, gate, export) come from params.yaml only: DVC tracks that
file, so a value that arrived from the environment would make DVC's cache lie about what a stage
was built with. Runtime settings (registry, approval, serve) may also come from environment
variables named ``TUNEGATE_<SECTION>__<FIELD>``, e.g. ``TUNEGATE_SERVE__PORT=8080``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from components.curve_params import CurveParams

# Defined in a leaf module so that any family can raise it without importing the configuration.
from components.errors import ConfigError
from components.gate_params import ROBUSTNESS_KINDS, ROBUSTNESS_TOKEN_KINDS, GateParams  # noqa: F401 (re-exported)
from components.peft_params import LoraParams, PeftMethod, PromptParams, migrate_lora_enabled
from components.production_params import (
    DriftThresholds,
    EvaluateParams,
    MonitorParams,
    keep_columns_refusal,
    slice_columns_refusal,
)
from components.sections import Section


class DataParams(Section):
    source: str = Field(description="'builtin:<name>' or a path to a CSV, JSONL or Parquet file")
    text_column: str = "text"
    label_column: str = "label"
    # Token classification: JSONL records carry a list of tokens and a list of IOB2 tags; CoNLL-style
    # files (.conll, .txt) hold one token per line with its tag in the last column.
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    label_map: dict[str, str] = Field(default_factory=dict, description="raw label -> label")
    # Raw labels that are not examples of any class (e.g. plot synopses); set aside and counted.
    exclude_labels: list[str] = Field(default_factory=list)
    # Sequence classification: the classes. Token classification: the entity types (PER, LOC...);
    # the tags are then O plus B-/I- of each type (IOB2).
    labels: list[str] = Field(min_length=1)
    min_rows: int = Field(default=20, ge=1)
    min_chars: int = Field(default=1, ge=1)
    max_chars: int = Field(default=5000, ge=1)
    max_duplicate_fraction: float = Field(default=0.02, ge=0, le=1)
    # Clean rows a new batch must bring; data.min_rows applies to the whole dataset instead.
    min_batch_rows: int = Field(default=1, ge=1)
    # Fewest examples of each label in data.labels across the existing data and a new batch (0: no check).
    min_examples_per_label: int = Field(default=1, ge=0)
    # Largest share of a batch's input rows that may be quarantined before the whole batch is refused.
    max_quarantine_fraction: float = Field(default=0.05, ge=0, le=1)
    # Further columns of the source kept with each row (as text, missing -> ""), e.g. [source, language]:
    # they reach the splits, so that evaluate.slices can select on them.
    keep_columns: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(default_factory=list)
    # Sequence classification: the model reads each text through this template, e.g. "Review: {text}",
    # in training, evaluation, export parity and serving alike (clients send the raw text). None: as is.
    template: str | None = None

    @model_validator(mode="after")
    def _labels_are_distinct(self) -> "DataParams":
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"data.labels has duplicates: {self.labels}")
        if refusal := keep_columns_refusal(self.keep_columns, self.text_column, self.label_column):
            raise ValueError(refusal)
        unknown = sorted(set(self.label_map.values()) - set(self.labels))
        if unknown:
            raise ValueError(f"data.label_map maps to {unknown}, which are not in data.labels {self.labels}")
        from components.data.template import template_refusal

        if refusal := template_refusal(self.template):
            raise ValueError(refusal)
        return self


class DriftParams(Section):
    # False skips every drift check (the report says so) without removing the step.
    enabled: bool = True
    # Total variation distance between the label shares of the reference and the batch (0 same, 1 disjoint).
    label_shift: DriftThresholds = DriftThresholds(warn=0.10, fail=0.25)
    # Two-sample Kolmogorov-Smirnov statistic between text lengths in characters (0 same, 1 disjoint).
    length_shift: DriftThresholds = DriftThresholds(warn=0.15, fail=0.30)
    # Rise in the share of word pieces that are the tokenizer's unknown token (batch minus reference).
    oov_increase: DriftThresholds = DriftThresholds(warn=0.01, fail=0.05)
    # Texts tokenized per side for the OOV check, sampled with `seed`: tokenizing 1M texts would take minutes.
    oov_sample_texts: int = Field(default=20_000, ge=100)
    seed: int = 0


class SplitParams(Section):
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    # Changing the salt reshuffles every example: champion and challenger stop being comparable.
    salt: str = "tunegate-v1"


class ModelParams(Section):
    base_model: str = Field(description="'builtin:<name>', a local directory, or a hub id")
    max_length: int = Field(default=128, ge=8, le=512)
    # Token classification: feed each word's capitalization (lower/title/upper/mixed) through the
    # token type ids, for base models whose tokenizer lowercases (see components/data/word_shapes.py;
    # a model without token types, MPNet, gets a shape table of its own).
    word_shapes: bool = False


class TrainParams(Section):
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=5e-5, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    # Decay after warmup: linear to zero, cosine to zero, or constant.
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = 42
    max_train_examples: int | None = Field(default=None, ge=1, description="cap for quick runs")
    num_threads: int | None = Field(default=None, ge=1)
    # Where and how precisely to train (components/model/compute.py). device auto: CUDA when there is
    # a GPU. precision auto: bf16 where it is faster (GPU with bf16, CPU with AMX), else fp32; fp32 is
    # the default so that a run gives the same figures on every machine.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    # Data-parallel processes on this machine (DDP under torchrun; components/model/distributed.py).
    processes: int = Field(default=1, ge=1)
    # Frozen parameters get no gradient: the embeddings and/or the lowest N encoder layers.
    freeze_embeddings: bool = False
    freeze_layers: int = Field(default=0, ge=0)
    # What trains: none (every weight), lora, prefix or p-tuning (components/peft_params.py).
    peft: PeftMethod = "none"
    lora: LoraParams = LoraParams()
    prompt: PromptParams = PromptParams()
    # 'balanced' weighs each class's loss by n / (k * count): rare classes count as much as common ones.
    class_weights: Literal["none", "balanced"] = "none"
    # A validation pass (which also picks the best weights) after every N epochs and after the last.
    # Many epochs over a few rows (tunegate curve's small subsets) would otherwise spend most of their
    # time scoring the validation split.
    validate_every: int = Field(default=1, ge=1)
    # Stop when the validation metric has not improved for this many validation passes (None: never).
    early_stopping_patience: int | None = Field(default=None, ge=1)
    # Checkpoints (model, optimizer, scheduler, RNG) go to artifacts/checkpoints after every epoch and
    # every K steps; a killed run started again resumes from the last one.
    checkpoint_every_steps: int | None = Field(default=None, ge=1)
    # 'champion': start from the current champion's weights instead of the base model (continual
    # learning); the flow fetches them. replay_fraction of the rows of earlier batches (those the
    # champion was trained on) is then mixed into the new batches' rows.
    init_from: Literal["base", "champion"] = "base"
    replay_fraction: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _lora_enabled_is_now_peft(cls, data: Any) -> Any:
        return migrate_lora_enabled(data)


class AdaptParams(Section):
    """Domain-adaptive pretraining: masked-language-model training of the base model on the dataset's
    own (training split) text before fine-tuning, cached as its own DVC stage."""

    enabled: bool = False
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-5, ge=0)
    mlm_probability: float = Field(default=0.15, gt=0, lt=1)
    max_examples: int | None = Field(default=None, ge=1)
    seed: int = 42


# The distillation settings that shape only the student's loss, not the teacher nor its logits: a sweep
# varies them over the logits as the distill stage wrote them, and that stage reuses its logits when only
# they changed.
STUDENT_LOSS_KEYS = ("temperature", "alpha")
SWEEPABLE = "train.<setting>, distill.temperature or distill.alpha"


def is_sweepable(key: str) -> bool:
    """Whether a trial may set this dotted key: what the train stage alone reads."""
    section, _, name = key.partition(".")
    if section == "train":
        return name in TrainParams.model_fields
    return section == "distill" and name in STUDENT_LOSS_KEYS


class SweepParams(Section):
    """A hyperparameter search run by the flow before training; the best trial's values go on."""

    enabled: bool = False
    method: Literal["grid", "random"] = "grid"
    # Random search: how many points to draw from the space (grid: every combination).
    trials: int = Field(default=4, ge=1)
    max_concurrency: int = Field(default=2, ge=1)
    seed: int = 0
    # Dotted keys to the values to try, e.g. {"train.learning_rate": [5e-5, 1e-4]}: train.* settings, and
    # distill.temperature and distill.alpha when distillation is on.
    space: dict[str, list[Any]] = Field(default_factory=dict)
    # Where the trials run: local (this process's threads, each trial training in a child process) or
    # dask (one Dask task per trial: on the scheduler at `address`, else on a LocalCluster of
    # max_concurrency worker processes started for the sweep).
    runner: Literal["local", "dask"] = "local"
    address: str = ""  # tcp://host:8786, runner dask only; its workers must see the project at the same path

    @model_validator(mode="after")
    def _space_is_sweepable(self) -> "SweepParams":
        for key, values in self.space.items():
            if not is_sweepable(key):
                raise ValueError(f"sweep.space: {key!r} cannot be swept (only {SWEEPABLE})")
            if not values:
                raise ValueError(f"sweep.space: {key!r} has no values to try")
        if self.enabled and not self.space:
            raise ValueError("sweep.enabled is true but sweep.space is empty")
        if self.address and self.runner != "dask":
            raise ValueError(f"sweep.address is {self.address!r} but sweep.runner is {self.runner!r}: "
                             "set sweep.runner: dask, or empty sweep.address")
        if self.address:
            from urllib.parse import urlsplit

            parts = urlsplit(self.address)
            if not parts.scheme or not parts.hostname or parts.port is None:
                raise ValueError(f"sweep.address {self.address!r}: expected a Dask scheduler address "
                                 "scheme://host:port, e.g. tcp://10.0.0.5:8786 (what `dask scheduler` prints)")
        return self


EXPORT_PRECISIONS = ("int8", "fp16", "fp32")


def resolve_export_precision(precision: str | None, quantize: bool | None) -> str:
    """export.precision, given the old key export.quantize (`true`: int8, `false`: not int8, i.e. fp32
    when precision is not set). Both set must agree; a contradiction is an error, never a guess."""
    if precision is not None and precision not in EXPORT_PRECISIONS:
        raise ValueError(f"export.precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    if quantize is None:
        return precision or "int8"
    if precision is None:
        return "int8" if quantize else "fp32"
    if quantize != (precision == "int8"):
        raise ValueError(f"export.quantize: {str(quantize).lower()} contradicts export.precision: {precision} "
                         "(quantize is the old spelling: true means int8, false means fp32 or fp16); "
                         "remove export.quantize and keep export.precision")
    return precision


class ExplainParams(Section):
    """Token attributions of the served model (components/explain): Shapley values over words."""

    # false: the explain stage writes a page saying so and explains nothing (the CLI and /explain still work).
    enabled: bool = True
    # Model calls (masked texts scored) allowed per explanation: the cost bound of one explanation. The
    # explain stage runs in every retrain: 120 (with 30 deletion-test rows) kept it near 90 s for MiniLM
    # int8 on a busy 2-core machine; 300 and 100 rows took 11 min there.
    max_evals: int = Field(default=120, ge=10, le=20_000)
    # The evaluation report: the test split's most confident errors, and a sample of correct answers.
    report_errors: int = Field(default=12, ge=0)
    report_correct: int = Field(default=6, ge=0)
    # The deletion test of faithfulness: on this many test rows, delete the top-k attributed words vs k
    # random words and count how often the prediction changes.
    faithfulness_rows: int = Field(default=30, ge=0)
    faithfulness_k: int = Field(default=2, ge=1)
    seed: int = 0


class RobustnessParams(Section):
    """Invariance checks in the style of CheckList (components/robustness): perturbed test texts whose
    label should not change, and the share of predictions that stay the same."""

    enabled: bool = True  # false: the stage writes empty figures (a gate.min_invariance above 0 then fails)
    kinds: list[Literal["typo", "casing", "punctuation", "whitespace", "entity"]] = Field(
        default_factory=lambda: ["typo", "casing", "punctuation", "whitespace", "entity"])
    max_rows: int | None = Field(default=2000, ge=1, description="test rows perturbed per kind (None: all)")
    seed: int = 0


class DistillParams(Section):
    """Knowledge distillation (components/model/distill.py): a larger teacher, fine-tuned by the
    `teacher` stage with the same training code, labels every training row (and optional unlabelled
    texts) softly; the student (model.base_model), which is what gets exported and served, learns from
    (1 - alpha) * cross-entropy on the true labels + alpha * T^2 * KL(teacher/T || student/T)."""

    enabled: bool = False
    # 'builtin:<name>', a local directory or a hub id, as model.base_model.
    teacher_model: str | None = None
    # The teacher's own training settings, the keys of the train section (e.g. {epochs: 3, learning_rate:
    # 3.0e-05, batch_size: 16}); unset keys take train's defaults, not the student's values, so that
    # changing (or sweeping) the student's settings does not retrain the teacher.
    teacher_train: TrainParams = TrainParams()
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    # Texts without labels (CSV, JSONL or Parquet; e.g. the service's prediction log) that the teacher
    # labels and the student learns from with the distillation term alone. Only texts whose id falls in
    # the training split are used: a text that hashes to validation or test never reaches training.
    unlabelled: str | None = None
    unlabelled_text_column: str = "text"
    max_unlabelled: int | None = Field(default=None, ge=1, description="cap, sampled with teacher_train.seed")
    augment_copies: int = Field(default=0, ge=0, le=16, description="teacher-labelled copies per row (data/augment.py)")

    @model_validator(mode="after")
    def _teacher_settings_work(self) -> "DistillParams":
        if self.enabled and not self.teacher_model:
            raise ValueError("distill.enabled is true but distill.teacher_model is empty: name the teacher's base "
                             "model, e.g. builtin:all-mpnet-base-v2")
        # Values, not keys: a dumped and re-read config (a sweep trial's) carries every key at its default.
        for key, default in (("init_from", "base"), ("processes", 1)):
            if getattr(self.teacher_train, key) != default:
                raise ValueError(f"distill.teacher_train.{key}: the teacher always trains from its base model, "
                                 "in one process; remove the key")
        return self


class ExportParams(Section):
    opset: int = Field(default=17, ge=13)
    # int8: the CPU export (the quantization plan below); fp16: the GPU export (the fp32 graph converted
    # to fp16 weights and arithmetic, inputs and outputs unchanged); fp32: the exported graph as is.
    precision: Literal["int8", "fp16", "fp32"] = "int8"
    # The old key, kept so that existing params files work: after validation it always equals
    # precision == "int8" (see resolve_export_precision).
    quantize: bool = True
    # The int8 scheme (components/export/quantize.py). Agreement with PyTorch on the default models' test
    # splits: per-token 99.2-99.8%, every text the same label alone or in any batch; per-block
    # 99.0-99.7% and about 30% slower (attention stays float); dynamic (one range per batch) 96.6-98.7%,
    # the fastest.
    scheme: Literal["per-token", "per-block", "dynamic"] = "per-token"
    smoothing: float = Field(default=0.5, ge=0, le=1, description="per-token: SmoothQuant alpha (0: off)")
    calibration_texts: int = Field(default=2048, ge=1, description="per-token: training texts that set the smoothing")
    matmul_block_size: int = Field(default=128, ge=16, description="per-block: input channels per weight block")
    per_channel: bool = True  # dynamic: per-channel weight scales
    quantize_ops: list[str] = Field(default_factory=list)  # dynamic (and per-block extras): op types
    keep_float: list[str] = Field(default_factory=list)  # regexes of node names left float
    min_agreement: float = Field(default=0.99, ge=0, le=1)
    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _precision_and_quantize_agree(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        quantize = values.get("quantize")
        if quantize is not None and not isinstance(quantize, bool):
            return values  # not a boolean: the field's own validation says so
        precision = resolve_export_precision(values.get("precision"), quantize)
        return {**values, "precision": precision, "quantize": precision == "int8"}

    @model_validator(mode="after")
    def _block_size_fits(self) -> "ExportParams":
        if self.matmul_block_size & (self.matmul_block_size - 1):
            raise ValueError(f"matmul_block_size must be a power of two >= 16, got {self.matmul_block_size}")
        return self

    def plan(self):
        from components.export.quantize import QuantizationPlan

        return QuantizationPlan(scheme=self.scheme, smoothing=self.smoothing, per_channel=self.per_channel,
                                op_types=tuple(self.quantize_ops), keep_float=tuple(self.keep_float),
                                matmul_block_size=self.matmul_block_size)


class SigningParams(Section):
    # The PEM public key every loader and promotion checks a version's signed manifest with (a path, relative
    # to the project). None: signatures are not checked, only each file against the manifest.
    public_key: str | None = None
    # The environment variable that holds the private key (PEM text, or a PEM file's path) registration signs
    # with: a secret, never in params.yaml. Unset at registration: the version is registered unsigned.
    private_key_env: str = Field(default="TUNEGATE_SIGNING_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class RegistryParams(Section):
    model_name: str = "tunegate-classifier"
    experiment: str = "tunegate"
    # None: MLFLOW_TRACKING_URI if set, else a SQLite file under <project>/mlflow/.
    tracking_uri: str | None = None
    signing: SigningParams = SigningParams()
    # true: a version without a valid signature is refused at serve, predict, pyfunc load and promotion
    # (production); false: it is loaded with a warning, its files still checked against its manifest.
    require_signature: bool = False

    @model_validator(mode="after")
    def _a_required_signature_needs_a_key(self) -> RegistryParams:
        if self.require_signature and not self.signing.public_key:
            raise ValueError("registry.require_signature is true but registry.signing.public_key is not set: name the "
                             "PEM public key that versions are checked with (`tunegate keygen` makes a key pair)")
        return self

    @model_validator(mode="after")
    def _no_password_in_tracking_uri(self) -> RegistryParams:
        # params.yaml is committed, tracked by DVC and logged to every MLflow run: no place for a password.
        from components.redact import has_credentials, redact_uri

        if has_credentials(self.tracking_uri):
            raise ValueError(f"registry.tracking_uri carries a password ({redact_uri(self.tracking_uri)} with a login "
                             "in it): params.yaml is committed and logged to MLflow. Give the URI without the login "
                             "and put the login in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        return self


class ApprovalParams(Section):
    # local: the run approves itself (recorded as such); production: a person must answer.
    profile: Literal["local", "production"] = "local"
    timeout_s: int = Field(default=24 * 3600, ge=1)
    poll_interval_s: int = Field(default=2, ge=1)


class ServiceSettings(Section):
    """The service's knobs; `tunegate serve` fills them from params' `serve` section."""

    # Per-request limits: a request beyond them gets a 413 that says which limit, never a crash.
    max_texts_per_request: int = Field(default=256, ge=1)
    max_chars_per_text: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # A client gets this long to send its request headers after connecting (or after its previous
    # answer), and then between body chunks: slower connections are closed, a slow body gets a 408.
    request_timeout_s: float = Field(default=10.0, gt=0)
    # Micro-batching: one onnxruntime call takes up to max_batch_size texts from queued requests, waiting
    # at most max_wait_ms after the first for others to join. A larger request runs as a batch of its own.
    max_batch_size: int = Field(default=64, ge=1)
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    # Texts waiting for the model beyond this answer 503 at once: a queue that grows without bound
    # only turns overload into timeouts for everyone.
    max_queued_texts: int = Field(default=4096, ge=1)
    # How often the watcher asks the registry where `champion` points (a call of a few ms).
    poll_interval_s: float = Field(default=10.0, gt=0)
    # Sampled prediction log for drift monitoring: JSON lines {time, version, text, label, score}. A .jsonl path
    # is one file; a folder or fsspec URL (s3://bucket/prefix) is partitioned: date=/hour=/<replica>.jsonl.
    prediction_log: Path | str | None = None
    prediction_log_sample_rate: float = Field(default=0.1, ge=0, le=1)

    @field_validator("prediction_log", mode="before")
    @classmethod
    def _url_stays_a_url(cls, value):
        # A Path would fold s3://bucket into s3:/bucket; a URL stays text, everything else is a path.
        if value is None or (isinstance(value, str) and "://" in value):
            return value
        return Path(value)
    # A key for /predict and /invocations (and the paths in api_key_also_for): the NAME of the
    # environment variable that holds it, never the key itself. Several keys, comma-separated, are all
    # accepted: how a key is rotated without downtime (components/serving/api_key.py).
    api_key_env: str | None = None
    api_key_also_for: list[Literal["/metrics", "/metadata"]] = Field(default_factory=list)
    # POST /explain: Shapley attributions of the served model, off by default (each costs up to
    # explain_max_evals model calls, so it is rationed: one at a time, texts up to explain_max_chars).
    explain: bool = False
    explain_max_chars: int = Field(default=1000, ge=1)
    explain_max_evals: int = Field(default=300, ge=10, le=20_000)
    # Shadow: also run this registry alias (e.g. challenger) on a sampled share of requests, after the
    # answer has gone out, and count how often it agrees with the served model. None: no shadow.
    shadow: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$")  # a registry alias, not champion
    shadow_sample_rate: float = Field(default=0.1, ge=0, le=1)
    # Sampled requests waiting for the shadow beyond this are dropped (counted): it never holds the answer back.
    shadow_queue_size: int = Field(default=64, ge=1)
    shadow_log: Path = Path("artifacts/serving/shadow_disagreements.jsonl")  # JSON lines, project-relative

    @model_validator(mode="after")
    def _shadow_is_not_the_champion(self) -> "ServiceSettings":
        if self.shadow == "champion":
            raise ValueError("serve.shadow names the alias compared with the champion (e.g. challenger), not champion")
        return self


class RayAutoscaling(Section):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    target_ongoing_requests: float = Field(default=16.0, gt=0)  # per replica; more starts another replica


class ServeParams(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    # local: one process (uvicorn); ray: a Ray Serve application of `replicas` processes, or `autoscaling`'s range
    # (components/serving/ray_engine.py). ray_address: a running cluster's; empty: a Ray started by tunegate.
    engine: Literal["local", "ray"] = "local"
    replicas: int = Field(default=1, ge=1)
    ray_address: str = ""
    autoscaling: RayAutoscaling | None = None


class ScheduleParams(Section):
    deployment_name: str = "scheduled-retrain"
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    # A run that finds another in progress: 'wait' queues behind it, 'skip' ends at once and says so.
    when_running: Literal["wait", "skip"] = "skip"


Task = Literal["sequence-classification", "token-classification"]
SEQUENCE_CLASSIFICATION = "sequence-classification"
TOKEN_CLASSIFICATION = "token-classification"
OUTSIDE_TAG = "O"


def iob2_tags(entity_types: list[str]) -> list[str]:
    """O, then B- and I- of each entity type: the token classifier's labels in logit order."""
    return [OUTSIDE_TAG] + [f"{prefix}-{kind}" for kind in entity_types for prefix in ("B", "I")]


class Params(Section):
    task: Task = "sequence-classification"
    data: DataParams
    drift: DriftParams = DriftParams()
    split: SplitParams = SplitParams()
    model: ModelParams
    adapt: AdaptParams = AdaptParams()
    train: TrainParams = TrainParams()
    sweep: SweepParams = SweepParams()
    curve: CurveParams = CurveParams()
    gate: GateParams = GateParams()
    export: ExportParams = ExportParams()
    registry: RegistryParams = RegistryParams()
    approval: ApprovalParams = ApprovalParams()
    serve: ServeParams = ServeParams()
    schedule: ScheduleParams = ScheduleParams()
    explain: ExplainParams = ExplainParams()
    robustness: RobustnessParams = RobustnessParams()
    distill: DistillParams = DistillParams()
    evaluate: EvaluateParams = EvaluateParams()
    monitor: MonitorParams = MonitorParams()

    @property
    def is_token_task(self) -> bool:
        return self.task == TOKEN_CLASSIFICATION

    @property
    def model_labels(self) -> list[str]:
        """What the model's head predicts: the classes, or the IOB2 tags of the entity types."""
        return iob2_tags(self.data.labels) if self.is_token_task else list(self.data.labels)

    @model_validator(mode="after")
    def _task_settings_agree(self) -> "Params":
        if not self.is_token_task and len(self.data.labels) < 2:
            raise ValueError("data.labels: a classifier needs at least two classes")
        if self.is_token_task and any(label == OUTSIDE_TAG or label[:2] in ("B-", "I-") for label in self.data.labels):
            raise ValueError(f"data.labels: give entity types (PER, LOC, ...), not tags: {self.data.labels}")
        if self.gate.compare_metric == "entity_f1" and not self.is_token_task:
            raise ValueError("gate.compare_metric: entity_f1 needs task: token-classification")
        swept_distill = [key for key in self.sweep.space if key.startswith("distill.")]
        if swept_distill and not self.distill.enabled:
            raise ValueError(f"sweep.space: {', '.join(swept_distill)} only shape a distilled student's loss, "
                             "and distill.enabled is false: enable distillation or drop the key")
        if self.model.word_shapes and not self.is_token_task:
            raise ValueError("model.word_shapes: needs task: token-classification (words are tagged one by one)")
        if refusal := slice_columns_refusal(self.evaluate, self.data.keep_columns):
            raise ValueError(refusal)
        from components.data.template import token_task_refusal

        if refusal := token_task_refusal(self.data.template, self.is_token_task):
            raise ValueError(refusal)
        return self


ENV_PREFIX = "TUNEGATE_"
ENV_SECTIONS = ("registry", "approval", "serve", "schedule", "monitor")


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, field = key[len(ENV_PREFIX):].lower().partition("__")
        if section not in ENV_SECTIONS:
            raise ConfigError(
                f"{key}: only {', '.join(s.upper() for s in ENV_SECTIONS)} settings may come from the "
                "environment; ML settings belong in params.yaml so DVC can track them"
            )
        overrides.setdefault(section, {})[field] = yaml.safe_load(raw)
    return overrides


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  - {where}: {item['msg']}")
    return "\n".join(lines)


def parse_params(raw: Mapping[str, Any], source: str = "params", env: Mapping[str, str] | None = None) -> Params:
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for section, values in _env_overrides(os.environ if env is None else env).items():
        merged.setdefault(section, {}).update(values)
    try:
        return Params.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, error)) from None


def load_params(path: Path, env: Mapping[str, str] | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the project root or pass --params)")
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_params(raw, source=str(path), env=env)
