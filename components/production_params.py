"""The settings of watching a model in production: scheduled monitoring of live traffic (`monitor:`)
and the slices the evaluation and the gate judge one by one (`evaluate:`). Kept apart from
components/config.py, which composes them into Params, so that each file stays one screenful of concerns."""

from __future__ import annotations

from pydantic import Field

from components.sections import Section


class SliceSpec(Section):
    """One named group of test rows (helper C fills in the kinds: a column's values, a regex, a length band)."""

    name: str = Field(min_length=1)


class EvaluateParams(Section):
    # Named slices of the test split, each measured on its own (metrics, model card, gate).
    slices: list[SliceSpec] = Field(default_factory=list)
    # A slice with fewer test rows than this is reported, not gated: its figure is noise.
    min_slice_rows: int = Field(default=30, ge=1)


class MonitorParams(Section):
    """Scheduled monitoring of the service's prediction log (helper A fills in the rest)."""

    deployment_name: str = "scheduled-monitor"
    cron: str = "0 * * * *"
    timezone: str = "UTC"
