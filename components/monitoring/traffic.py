"""Monitoring of live traffic: the service's prediction log against the data the champion was trained on.

One report per run: the drift checks of components/data/drift.py (unchanged), the share of low-confidence
answers, and the predicted-label shares beside the reference's. Live traffic has no labels: the predicted
ones stand in, so a label shift here means the model answers differently, not that the world changed.

Written under .tunegate/monitor/ twice: a timestamped file (history) and `latest.json`, which the
service's /metrics and the textfile-collector file read (components/monitoring/gauges.py).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from components.config import TOKEN_CLASSIFICATION, Task
from components.config.monitor import DriftThresholds, MonitorParams
from components.data.drift import (
    SEVERITY,
    CheckStatus,
    DriftReport,
    Status,
    entity_type_shares,
    judge,
    label_shares,
)
from components.reports import JsonReport

MONITOR_DIR = Path(".tunegate") / "monitor"
LABELLING_DIR = Path(".tunegate") / "labelling"
LATEST = "latest.json"


class ServedModelInfo(BaseModel):
    """Which registered version the traffic is judged for (the champion when the run started)."""

    model_name: str
    version: str | None = None
    training_run_id: str | None = Field(default=None, description="the MLflow run that trained the version")


class ConfidenceCheck(BaseModel):
    threshold: float = Field(description="an answer scoring below this is a low-confidence one")
    share: float | None = Field(description="share of the scored answers below the threshold; None if too few")
    scored: int
    unscored: int = Field(description="answers without a score (NER: texts without entities), not counted")
    warn: float
    fail: float
    status: CheckStatus
    detail: str


class LabelShare(BaseModel):
    label: str
    traffic: float = Field(description="share among the logged predictions (NER: among predicted entities)")
    reference: float = Field(description="share in the champion's training rows")


class QueueInfo(BaseModel):
    directory: Path
    csv: Path
    label_studio_json: Path
    rows: int


class MonitorReport(JsonReport):
    created_at: str
    timestamp: float = Field(description="seconds since the epoch: the gauge tunegate_monitor_last_run_*")
    task: Task
    served: ServedModelInfo
    traffic_rows: int
    traffic_versions: dict[str, int] = Field(description="logged predictions by the version that answered")
    traffic_replicas: dict[str, int] = Field(default_factory=dict, description=(
        "logged predictions by the replica that answered (a partitioned log; a single-file log names none)"))
    status: Status
    drift: DriftReport
    low_confidence: ConfidenceCheck
    label_shares: list[LabelShare]
    queue: QueueInfo | None = None
    mlflow_run_id: str | None = None
    notes: list[str] = Field(default_factory=list, description="what a person should do next")

    def check_statuses(self) -> dict[str, CheckStatus]:
        """Every judged check by name: the drift checks and `low_confidence_share`."""
        return {**{check.name: check.status for check in self.drift.checks},
                "low_confidence_share": self.low_confidence.status}

    def _replicas_note(self) -> str:
        if len(self.traffic_replicas) < 2:
            return ""
        return " from " + ", ".join(f"{name} ({rows:,})" for name, rows in sorted(self.traffic_replicas.items()))

    def summary(self) -> str:
        version = f"v{self.served.version}" if self.served.version else "no champion"
        lines = [(f"Monitoring {self.served.model_name} ({version}) at {self.created_at}: {self.status} "
                  f"over {self.traffic_rows:,} logged predictions{self._replicas_note()}"),
                 self.drift.summary(),
                 f"- low_confidence_share: {self.low_confidence.status}: {self.low_confidence.detail}"]
        if self.label_shares:
            shares = ", ".join(f"{s.label} {s.reference:.1%} -> {s.traffic:.1%}" for s in self.label_shares)
            lines.append(f"- predicted-label shares (training data -> traffic): {shares}")
        if self.queue is not None:
            lines.append(f"- labelling queue: {self.queue.rows} texts in {self.queue.csv} and "
                         f"{self.queue.label_studio_json} (Label Studio import)")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def champion_reference(registry: Any, store: Any) -> tuple[pd.DataFrame, ServedModelInfo]:
    """The rows the champion was trained on (every row when there is no champion yet) and who it is."""
    from components.lifecycle.registry import CHAMPION

    champion = registry.by_alias(CHAMPION)
    served = ServedModelInfo(model_name=registry.model_name, version=champion.version if champion else None,
                             training_run_id=(champion.run_id or None) if champion else None)
    if champion is None or "data_batches" not in champion.tags:
        return store.read(), served
    trained_on = set(json.loads(champion.tags["data_batches"]))
    return store.read([b for b in store.batches() if b.batch_id in trained_on]), served


def confidence_check(scores: pd.Series, threshold: float, thresholds: DriftThresholds,
                     min_scored: int) -> ConfidenceCheck:
    """The share of scored answers below `threshold`; null scores (NER without entities) are left out."""
    numeric = pd.to_numeric(scores, errors="coerce")
    scored = numeric.dropna()
    unscored = int(len(numeric) - len(scored))
    common = {"threshold": threshold, "scored": len(scored), "unscored": unscored, "warn": thresholds.warn,
              "fail": thresholds.fail}
    if len(scored) < min_scored:
        return ConfidenceCheck(share=None, status="skipped", **common,
                               detail=f"{len(scored)} scored answers, fewer than monitor.min_scored ({min_scored})")
    low = int((scored < threshold).sum())
    share = low / len(scored)
    status: CheckStatus = judge(share, thresholds)
    detail = (f"{low:,} of {len(scored):,} scored answers below {threshold:g} ({share:.1%}; warn above "
              f"{thresholds.warn:.0%}, fail above {thresholds.fail:.0%})"
              + (f"; {unscored:,} without a score not counted" if unscored else ""))
    return ConfidenceCheck(share=share, status=status, detail=detail, **common)


def predicted_label_shares(traffic: pd.DataFrame, reference: pd.DataFrame, task: Task) -> list[LabelShare]:
    """Each label's share in traffic (predicted) and in the reference, every label of either side."""
    shares = entity_type_shares if task == TOKEN_CLASSIFICATION else label_shares
    served, known = shares(traffic["label"]), shares(reference["label"])
    labels = sorted(served.index.union(known.index), key=str)
    return [LabelShare(label=str(label), traffic=float(served.get(label, 0.0)),
                       reference=float(known.get(label, 0.0))) for label in labels]


def monitor_report(traffic: pd.DataFrame, reference: pd.DataFrame, drift: DriftReport, params: MonitorParams, *,
                   task: Task, served: ServedModelInfo, now: float | None = None) -> MonitorReport:
    """Combine the drift report (computed by the caller, see drift_report) with confidence and label shares."""
    now = time.time() if now is None else now
    confidence = confidence_check(traffic["score"], params.low_confidence, params.low_confidence_share,
                                  params.min_scored)
    worst = max(SEVERITY[drift.status], SEVERITY[confidence.status])
    versions = traffic["version"].fillna("unknown").astype(str).value_counts()
    replicas = traffic["replica"].fillna("unknown").astype(str).value_counts() if "replica" in traffic else {}
    return MonitorReport(
        created_at=datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"), timestamp=now,
        task=task, served=served, traffic_rows=len(traffic),
        traffic_versions={str(k): int(v) for k, v in versions.items()},
        traffic_replicas={str(k): int(v) for k, v in replicas.items()}, status=("ok", "warn", "fail")[worst],
        drift=drift, low_confidence=confidence, label_shares=predicted_label_shares(traffic, reference, task))


def run_stamp(report: MonitorReport) -> str:
    """The report's file-name stamp, e.g. 20261201T214811Z (also the labelling queue's folder name)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(report.timestamp))


def write_report(report: MonitorReport, directory: Path) -> tuple[Path, Path]:
    """The report as monitor-<stamp>.json (kept) and latest.json (replaced atomically: readers never see
    half a file); returns both paths."""
    stamped = report.write(Path(directory) / f"monitor-{run_stamp(report)}.json")
    partial = Path(directory) / f".{LATEST}.partial"
    report.write(partial)
    latest = partial.replace(Path(directory) / LATEST)
    return stamped, latest
