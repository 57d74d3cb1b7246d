"""The gate's settings (`gate:` in params.yaml): what a challenger must reach, alone and against the
champion, before it may be registered as challenger. A leaf module beside components/config.py, which
composes it into Params."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.sections import Section

# The perturbation kinds of the robustness checks (components/robustness/perturb.py).
ROBUSTNESS_KINDS = ("typo", "casing", "punctuation", "whitespace", "entity")
ROBUSTNESS_TOKEN_KINDS = ("typo", "casing", "entity")  # those that keep word boundaries (NER)


class GateParams(Section):
    min_accuracy: float = Field(default=0.0, ge=0, le=1)
    min_macro_f1: float = Field(default=0.0, ge=0, le=1)
    # Token classification: entity-level (exact span and type) micro F1, CoNLL scoring.
    min_entity_f1: float = Field(default=0.0, ge=0, le=1)
    compare_metric: Literal["accuracy", "macro_f1", "entity_f1"] = "macro_f1"
    # The challenger may be at most this much worse than the champion on the same test rows: by the interval rule,
    # the upper end of the 95% interval of (champion - challenger). The interval's half-width is about
    # 1.96 * sqrt(discordant rows) / rows: 0.005 would refuse even an exact tie of two models that differ on 40
    # of 1,306 rows; 0.01 accepts that tie and refuses a challenger one point worse (13 rows lost, none gained:
    # upper end 0.015). Two retrains of the default recipe with different seeds differed on 95 of its 1,306 test
    # rows (half-width 0.015): there a tie needs about 2,800 test rows to pass 0.01, which the check says.
    max_regression: float = Field(default=0.01, ge=0, le=1)
    # ... and at most this much worse on the test rows of the batches the champion was trained on,
    # so that learning the new batches cannot quietly forget the old ones.
    max_forgetting: float = Field(default=0.01, ge=0, le=1)
    # How "at most this much worse" (max_regression, max_forgetting, max_slice_regression) is judged. interval:
    # the upper end of the paired bootstrap interval of (champion - challenger) on the same rows must be <= the
    # margin, since one figure's standard error on ~1,300 rows is about a point and reseeding alone moves it by
    # a few tenths: a bare difference is a coin toss between models within a point of each other. point: that
    # bare difference, the old rule. Scores cached without per-row outcomes are judged by point, and say so.
    regression_rule: Literal["interval", "point"] = "interval"
    # The interval's coverage; the number of paired resamples of the test rows (sentences for NER) and their
    # seed, so that the same models on the same rows always get the same verdict.
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(default=2000, ge=100)
    bootstrap_seed: int = Field(default=0, ge=0)
    # Distillation: the served student may trail its teacher's test compare_metric by at most this
    # much (None: not judged; judged only when distill.enabled).
    max_teacher_gap: float | None = Field(default=None, ge=0, le=1)
    # Robustness: the share of predictions that must stay the same under each perturbation kind
    # (robustness.kinds). A number applies to every kind; a mapping names kinds. 0 judges nothing.
    min_invariance: float | dict[str, float] = 0.0
    # Slices (evaluate.slices): each judged slice's compare_metric must reach min_slice_metric and may trail
    # the champion's on the same slice by at most max_slice_regression. None: not judged.
    min_slice_metric: float | None = Field(default=None, ge=0, le=1)
    max_slice_regression: float | None = Field(default=None, ge=0, le=1)
    # Shadow challenger (serve.shadow): before promotion the challenger must have shadowed at least
    # min_shadow_requests requests and agreed with the champion on min_shadow_agreement of them. None: not judged.
    min_shadow_agreement: float | None = Field(default=None, ge=0, le=1)
    min_shadow_requests: int = Field(default=100, ge=1)

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
