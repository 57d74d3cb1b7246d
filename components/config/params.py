"""The whole run configuration: every params.yaml section composed into Params, and the task's labels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Section
from components.config.curve import CurveParams
from components.config.data import DataParams, SplitParams
from components.config.distill import DistillParams
from components.config.evaluate import EvaluateParams, ExplainParams, RobustnessParams, slice_columns_refusal
from components.config.export import ExportParams
from components.config.gate import GateParams
from components.config.model import AdaptParams, ModelParams, TrainParams
from components.config.monitor import DriftParams, MonitorParams
from components.config.privacy import PrivacyParams
from components.config.registry import ApprovalParams, RegistryParams, ScheduleParams
from components.config.serve import ServeParams
from components.config.sweep import SweepParams

Task = Literal["sequence-classification", "token-classification"]
SEQUENCE_CLASSIFICATION = "sequence-classification"
TOKEN_CLASSIFICATION = "token-classification"
OUTSIDE_TAG = "O"


def iob2_tags(entity_types: list[str]) -> list[str]:
    """O, then B- and I- of each entity type: the token classifier's labels in logit order."""
    return [OUTSIDE_TAG] + [f"{prefix}-{kind}" for kind in entity_types for prefix in ("B", "I")]


class Params(Section):
    task: Task = Field(default="sequence-classification",
                       description="sequence-classification labels whole texts; token-classification tags each "
                                   "word (named entities, IOB2).")
    data: DataParams = Field(description="Where the labelled rows come from and the checks they must pass.")
    drift: DriftParams = Field(default=DriftParams(), description="Drift of new batches against the champion's "
                                                                  "training data.")
    split: SplitParams = Field(default=SplitParams(), description="How the examples are split into training, "
                                                                  "validation and test.")
    model: ModelParams = Field(description="The base model and how texts are tokenized for it.")
    adapt: AdaptParams = Field(default=AdaptParams(), description="Domain-adaptive pretraining before fine-tuning.")
    train: TrainParams = Field(default=TrainParams(), description="How the model is fine-tuned.")
    sweep: SweepParams = Field(default=SweepParams(), description="A hyperparameter search before training.")
    curve: CurveParams = Field(default=CurveParams(), description="Learning curves (`tunegate curve`).")
    gate: GateParams = Field(default=GateParams(), description="What a challenger must reach before it is "
                                                               "registered.")
    export: ExportParams = Field(default=ExportParams(), description="The ONNX export and its quantization.")
    registry: RegistryParams = Field(default=RegistryParams(), description="The MLflow registry and model signing.")
    approval: ApprovalParams = Field(default=ApprovalParams(), description="Who approves a challenger that passed "
                                                                           "its gates.")
    serve: ServeParams = Field(default=ServeParams(), description="The HTTP service.")
    schedule: ScheduleParams = Field(default=ScheduleParams(), description="Scheduled retraining.")
    explain: ExplainParams = Field(default=ExplainParams(), description="Explanations of the served model.")
    robustness: RobustnessParams = Field(default=RobustnessParams(), description="Invariance under perturbed "
                                                                                 "texts.")
    distill: DistillParams = Field(default=DistillParams(), description="Knowledge distillation from a larger "
                                                                        "teacher.")
    evaluate: EvaluateParams = Field(default=EvaluateParams(), description="Slices of the test split measured on "
                                                                           "their own.")
    monitor: MonitorParams = Field(default=MonitorParams(), description="Scheduled monitoring of live traffic.")
    privacy: PrivacyParams = Field(default=PrivacyParams(), description="How personal data is found in training "
                                                                       "batches and logged traffic.")

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
        if self.is_token_task and self.data.pii in ("redact", "quarantine"):
            raise ValueError(f"data.pii: {self.data.pii} would change a token-classification dataset's sentences "
                             "and their names are its labels; use report or refuse")
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
