"""Watching data and traffic: drift of new batches (`drift:`) and scheduled monitoring of live traffic
(`monitor:`)."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, model_validator

from components.config.base import Section


class DriftThresholds(Section):
    """A figure in [0, 1] above `warn` warns, above `fail` fails (inclusive limits): drift's checks
    (drift:) and monitoring's low-confidence share (monitor.low_confidence_share)."""

    warn: float = Field(ge=0, le=1, description="Above this the check warns (recorded, the run goes on).")
    fail: float = Field(ge=0, le=1, description="Above this the check fails (a batch is refused, monitoring "
                                                "reports failure).")

    @model_validator(mode="after")
    def _warn_not_above_fail(self) -> DriftThresholds:
        if self.warn > self.fail:
            raise ValueError(f"warn ({self.warn}) is above fail ({self.fail})")
        return self


class DriftParams(Section):
    enabled: bool = Field(default=True, description="Run the drift checks; false skips them (the report says so).")
    label_shift: DriftThresholds = Field(
        default=DriftThresholds(warn=0.10, fail=0.25),
        description="Total variation distance between the label shares of the reference and the batch (0 same, "
                    "1 disjoint).")
    length_shift: DriftThresholds = Field(
        default=DriftThresholds(warn=0.15, fail=0.30),
        description="Two-sample Kolmogorov-Smirnov statistic between text lengths in characters (0 same, 1 "
                    "disjoint).")
    oov_increase: DriftThresholds = Field(
        default=DriftThresholds(warn=0.01, fail=0.05),
        description="Rise in the share of word pieces that are the tokenizer's unknown token (batch minus "
                    "reference).")
    oov_sample_texts: int = Field(default=20_000, ge=100, description="Texts tokenized per side for the unknown-token "
                                                                      "check, sampled with drift.seed.")
    seed: int = Field(default=0, description="Seed of the unknown-token check's sample.")


class MonitorParams(Section):
    """Scheduled monitoring of the service's prediction log: drift against the champion's training rows,
    the share of low-confidence answers, and the predicted-label shares (flows/monitor.py)."""

    deployment_name: str = Field(default="scheduled-monitor", description="The Prefect deployment of scheduled "
                                                                          "monitoring.")
    cron: str = Field(default="0 * * * *", description="When scheduled monitoring runs, as a cron expression.")
    timezone: str = Field(default="UTC", description="The time zone the cron expression is read in.")
    last: int = Field(default=5000, ge=1, description="The newest N logged predictions are judged.")
    window: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[mhdw]$",
                               description="Only predictions logged within this span before the run are read, e.g. "
                                           "24h or 7d (units m, h, d, w); left out, the whole log.")
    low_confidence: float = Field(default=0.6, ge=0, le=1,
                                  description="An answer scoring below this is a low-confidence one (token "
                                              "classification: the mean entity score of a text).")
    low_confidence_share: DriftThresholds = Field(default=DriftThresholds(warn=0.2, fail=0.4),
                                                  description="Share of low-confidence answers above which "
                                                              "monitoring warns or fails.")
    min_scored: int = Field(default=30, ge=1, description="Fewer scored answers than this: the share is reported, "
                                                          "not judged.")
    queue_size: int = Field(default=200, ge=1, description="Texts written to the labelling queue when the status is "
                                                           "warn or fail.")
    retrain_on_fail: bool = Field(default=False,
                                  description="On fail, run the retraining flow after the report (retraining on "
                                              "unchanged labels changes nothing: label the queue instead).")

    def window_span(self) -> timedelta | None:
        """monitor.window as a timedelta (None: the whole log)."""
        return parse_window(self.window) if self.window else None


_WINDOW_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """A span like 30m, 24h, 7d or 2w."""
    match = re.fullmatch(r"([1-9][0-9]*)([mhdw])", text.strip())
    if match is None:
        raise ValueError(f"window {text!r}: a whole number and a unit (m, h, d, w), e.g. 24h or 7d")
    return timedelta(**{_WINDOW_UNITS[match.group(2)]: int(match.group(1))})
