"""The gate's settings (`gate:` in params.yaml): what a challenger must reach, alone and against the
champion, before it may be registered as challenger."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Section

# The perturbation kinds of the robustness checks (components/robustness/perturb.py).
ROBUSTNESS_KINDS = ("typo", "casing", "punctuation", "whitespace", "entity")
ROBUSTNESS_TOKEN_KINDS = ("typo", "casing", "entity")  # those that keep word boundaries (NER)


class GateParams(Section):
    min_accuracy: float = Field(default=0.0, ge=0, le=1, description="Lowest test accuracy a challenger may have; "
                                                                     "0 judges nothing.")
    min_macro_f1: float = Field(default=0.0, ge=0, le=1, description="Lowest test macro-F1 a challenger may have; "
                                                                     "0 judges nothing.")
    min_entity_f1: float = Field(default=0.0, ge=0, le=1,
                                 description="Token classification: lowest entity-level micro F1 (exact span and "
                                             "type, CoNLL scoring); 0 judges nothing.")
    compare_metric: Literal["accuracy", "macro_f1", "entity_f1"] = Field(
        default="macro_f1", description="The metric challenger and champion are compared on (entity_f1 needs "
                                        "token classification).")
    # The interval's half-width is about 1.96 * sqrt(discordant rows) / rows: 0.005 would refuse even an exact tie
    # of two models that differ on 40 of 1,306 rows; 0.01 accepts that tie and refuses a challenger one point worse.
    max_regression: float = Field(default=0.01, ge=0, le=1,
                                  description="How much worse than the champion, on compare_metric and the same "
                                              "test rows, the challenger may be (judged by gate.regression_rule).")
    max_forgetting: float = Field(default=0.01, ge=0, le=1,
                                  description="How much worse than the champion the challenger may be on the test "
                                              "rows of the batches the champion was trained on, so that learning "
                                              "new batches cannot quietly forget old ones.")
    regression_rule: Literal["interval", "point"] = Field(
        default="interval",
        description="How 'at most this much worse' is judged: interval compares the upper end of the paired "
                    "bootstrap interval of (champion - challenger) with the margin; point compares the bare "
                    "difference.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Coverage of the bootstrap interval.")
    bootstrap_resamples: int = Field(default=2000, ge=100,
                                     description="Paired resamples of the test rows (sentences for token "
                                                 "classification) behind the interval.")
    bootstrap_seed: int = Field(default=0, ge=0, description="Seed of the resamples: the same models on the same "
                                                             "rows always get the same verdict.")
    max_teacher_gap: float | None = Field(default=None, ge=0, le=1,
                                          description="Distillation: how far the served student may trail its "
                                                      "teacher's test compare_metric; null judges nothing.")
    min_invariance: float | dict[str, float] = Field(
        default=0.0,
        description="Share of predictions that must stay the same under each perturbation kind: one number for "
                    "every kind, or a mapping of kind to share; 0 judges nothing.")
    min_slice_metric: float | None = Field(default=None, ge=0, le=1,
                                           description="Lowest compare_metric each judged slice (evaluate.slices) "
                                                       "may have; null judges nothing.")
    max_slice_regression: float | None = Field(default=None, ge=0, le=1,
                                               description="How far each judged slice may trail the champion's "
                                                           "figure on the same slice; null judges nothing.")
    min_shadow_agreement: float | None = Field(
        default=None, ge=0, le=1,
        description="Before promotion, the share of shadowed requests (serve.shadow) on which the challenger must "
                    "agree with the champion; null judges nothing.")
    min_shadow_requests: int = Field(default=100, ge=1, description="Fewest shadowed requests before "
                                                                    "min_shadow_agreement is judged.")

    @model_validator(mode="after")
    def _invariance_thresholds_are_shares_of_known_kinds(self) -> "GateParams":
        named = self.min_invariance if isinstance(self.min_invariance, dict) else {}
        unknown = sorted(set(named) - set(ROBUSTNESS_KINDS))
        if unknown:
            raise ValueError(f"min_invariance names {unknown}, which are not perturbation kinds "
                             f"({', '.join(ROBUSTNESS_KINDS)})")
        shares = named.values() if named else [self.min_invariance]
        if any(not 0 <= share <= 1 for share in shares):
            raise ValueError(f"min_invariance {self.min_invariance}: shares lie in [0, 1]")
        return self
