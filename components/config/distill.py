"""The `distill:` section: knowledge distillation from a larger teacher."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.config.base import Section
from components.config.model import TrainParams


class DistillParams(Section):
    """Knowledge distillation (components/model/distill.py): a larger teacher, fine-tuned by the
    `teacher` stage with the same training code, labels every training row (and optional unlabelled
    texts) softly; the student (model.base_model), which is what gets exported and served, learns from
    (1 - alpha) * cross-entropy on the true labels + alpha * T^2 * KL(teacher/T || student/T)."""

    enabled: bool = Field(default=False, description="Train a teacher first and let the student (model.base_model, "
                                                     "what is served) learn from its soft labels too.")
    teacher_model: str | None = Field(default="builtin:all-mpnet-base-v2",
                                      description="The teacher's base model: 'builtin:<name>', a local directory "
                                                  "or a model hub id, as model.base_model.")
    teacher_train: TrainParams = Field(
        default=TrainParams(),
        description="The teacher's own training settings, keys of the train section (e.g. {epochs: 3}); keys left "
                    "out take the train section's defaults, not the student's values, so that changing the "
                    "student's settings does not retrain the teacher.")
    temperature: float = Field(default=2.0, gt=0, description="Softmax temperature T of the distillation term.")
    alpha: float = Field(default=0.5, ge=0, le=1, description="Weight of the teacher's distributions in the "
                                                              "student's loss (0: true labels only).")
    unlabelled: str | None = Field(
        default=None,
        description="A CSV, JSONL or Parquet file of texts without labels (e.g. the prediction log) that the "
                    "teacher labels for the distillation term alone; only texts that hash to the training split "
                    "are used. Left out, none.")
    unlabelled_text_column: str = Field(default="text", description="The column of distill.unlabelled that holds "
                                                                    "the texts.")
    max_unlabelled: int | None = Field(default=None, ge=1,
                                       description="Use at most this many unlabelled texts, sampled with "
                                                   "teacher_train.seed; left out, all of them.")
    augment_copies: int = Field(default=0, ge=0, le=16,
                                description="New texts made from each training row for the teacher to label "
                                            "(distillation term only); 0 makes none.")

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
