"""Prometheus gauges of the latest monitoring report, in two places: the service's /metrics (read from
.tunegate/monitor/latest.json at scrape time) and a node_exporter textfile-collector file written beside
it (`tunegate_monitor.prom`) for setups where the flow runs on another machine than the service.

Names (alert rules in components/serving/prometheus_rules.yml use them):
  tunegate_monitor_status                      0 ok, 1 warn, 2 fail (worst check)
  tunegate_monitor_check_status{check}         the same per check (drift checks, low_confidence_share)
  tunegate_monitor_drift{check}                each drift value (skipped checks: no series)
  tunegate_monitor_low_confidence_share        share of scored answers below monitor.low_confidence
  tunegate_monitor_label_share{label}          predicted-label share in traffic
  tunegate_monitor_reference_label_share{label} the same label's share in the champion's training rows
  tunegate_monitor_traffic_rows                logged predictions judged
  tunegate_monitor_last_run_timestamp_seconds  when the report was made
Every series carries `model_name`, so one Prometheus can watch several projects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from components.monitoring.traffic import LATEST, MonitorReport

STATUS_VALUE = {"ok": 0, "skipped": 0, "warn": 1, "fail": 2}
TEXTFILE = "tunegate_monitor.prom"


def report_families(report: MonitorReport) -> list[GaugeMetricFamily]:
    model = report.served.model_name

    def gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, help_text, labels=["model_name", *labels])

    status = gauge("tunegate_monitor_status", "Latest monitoring run: 0 ok, 1 warn, 2 fail.")
    status.add_metric([model], STATUS_VALUE[report.status])
    checks = gauge("tunegate_monitor_check_status", "Latest monitoring run, per check: 0 ok or skipped, 1 warn, "
                   "2 fail.", ("check",))
    for name, check_status in report.check_statuses().items():
        checks.add_metric([model, name], STATUS_VALUE[check_status])
    drift = gauge("tunegate_monitor_drift", "Drift of live traffic against the champion's training data, per "
                  "check (0 same, 1 disjoint).", ("check",))
    for check in report.drift.checks:
        if check.value is not None:
            drift.add_metric([model, check.name], check.value)
    families = [status, checks, drift]
    if report.low_confidence.share is not None:
        low = gauge("tunegate_monitor_low_confidence_share", "Share of scored answers below "
                    "monitor.low_confidence in the latest monitoring run.")
        low.add_metric([model], report.low_confidence.share)
        families.append(low)
    traffic = gauge("tunegate_monitor_label_share", "Predicted-label share in live traffic.", ("label",))
    reference = gauge("tunegate_monitor_reference_label_share", "Label share in the champion's training data.",
                      ("label",))
    for share in report.label_shares:
        traffic.add_metric([model, share.label], share.traffic)
        reference.add_metric([model, share.label], share.reference)
    rows = gauge("tunegate_monitor_traffic_rows", "Logged predictions the latest monitoring run judged.")
    rows.add_metric([model], report.traffic_rows)
    last = gauge("tunegate_monitor_last_run_timestamp_seconds", "When the latest monitoring run made its report.")
    last.add_metric([model], report.timestamp)
    return families + [traffic, reference, rows, last]


class MonitorReportCollector(Collector):
    """Reads latest.json at scrape time (re-parsed only when the file changed); nothing when absent or
    unreadable, so a service without monitoring exposes no stale or made-up figures."""

    def __init__(self, latest: Path) -> None:
        self.latest = Path(latest)
        self._seen: tuple[float, int] | None = None
        self._families: list[GaugeMetricFamily] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stat = self.latest.stat()
            if self._seen != (stat.st_mtime, stat.st_size):
                self._families = report_families(MonitorReport.read(self.latest))
                self._seen = (stat.st_mtime, stat.st_size)
        except (OSError, ValueError):  # not written yet, or from an older layout: no gauges rather than a 500
            self._families, self._seen = [], None
        yield from self._families


def monitor_collector(monitor_dir: Path) -> MonitorReportCollector:
    return MonitorReportCollector(Path(monitor_dir) / LATEST)


def write_textfile(report: MonitorReport, directory: Path) -> Path:
    """The gauges as a node_exporter textfile (written to a temporary file and renamed, as it asks)."""

    class _Fixed(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield from report_families(report)

    registry = CollectorRegistry()
    registry.register(_Fixed())
    path = Path(directory) / TEXTFILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path
