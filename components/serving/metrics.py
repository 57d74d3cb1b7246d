"""Prometheus metrics of the service, through prometheus_client: requests, latency and batch-size
histograms, predictions by label, errors; at scrape time the model version serving, queued texts,
reloads and registry poll errors; and the process's own metrics (CPU, memory, open files).

Each app has its own registry, so several apps in one process (tests, a benchmark) never share counts."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    exposition,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from components.serving.holder import ReloadStats, ServedModel

PROMETHEUS_CONTENT_TYPE = exposition.CONTENT_TYPE_PLAIN_0_0_4  # the text format generate_latest writes
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# What the service is doing now: the model serving, its reload counts, and the texts waiting.
ServiceState = Callable[[], tuple[ServedModel, ReloadStats, int]]


class _ServiceStateCollector(Collector):
    """Read at scrape time, so a version that stopped serving leaves no stale series behind."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def collect(self) -> Iterator:
        model, reloads, queued = self.state()
        version = GaugeMetricFamily("tunegate_model_version_info", "The model version serving now (value 1).",
                                    labels=["model_name", "version"])
        version.add_metric([str(model.metadata.get("model_name", "")), model.version or ""], 1)
        yield version
        yield GaugeMetricFamily("tunegate_queued_texts", "Texts waiting for the model.", value=queued)
        outcomes = CounterMetricFamily("tunegate_model_reloads", "Model reloads since start, by outcome.",
                                       labels=["outcome"])
        outcomes.add_metric(["success"], reloads.reloads)
        outcomes.add_metric(["failure"], reloads.failed_loads)
        yield outcomes
        yield CounterMetricFamily("tunegate_registry_poll_errors", "Registry polls that failed.",
                                  value=reloads.registry_errors)
        yield CounterMetricFamily("tunegate_model_integrity_refusals", "Versions refused (and not served) because "
                                  "their files or signature were not the ones registered.",
                                  value=reloads.integrity_refusals)


class _ShadowCollector(Collector):
    """The shadow challenger (serve.shadow), read at scrape time: texts by outcome since start, and the
    shadowed version's agreement with the champion (absent while nothing was compared)."""

    def __init__(self, state: Callable[[], tuple[dict[str, int], float | None]]) -> None:
        self.state = state

    def collect(self) -> Iterator:
        totals, agreement = self.state()
        outcomes = CounterMetricFamily("tunegate_shadow_requests", "Texts offered to the shadow challenger, by "
                                       "outcome (agree, disagree, error, dropped: queue full).", labels=["outcome"])
        for outcome, count in totals.items():
            outcomes.add_metric([outcome], count)
        yield outcomes
        if agreement is not None:
            yield GaugeMetricFamily("tunegate_shadow_agreement", "Share of shadowed texts on which the challenger "
                                    "agreed with the champion.", value=agreement)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        counter = self._counter
        self.requests = counter("tunegate_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"])
        self.latency = Histogram("tunegate_request_duration_seconds", "Time from request to response, seconds.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.errors = counter("tunegate_request_errors", "Requests answered with an error, by error code.",
                              ["endpoint", "error_code"])
        self.batch_texts = Histogram("tunegate_batch_texts", "Texts per onnxruntime call.",
                                     buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("tunegate_batch_requests", "Requests merged into one onnxruntime call.",
                                        buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("tunegate_batch_duration_seconds", "Time per onnxruntime call, seconds.",
                                       buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.inference_errors = counter("tunegate_inference_errors", "Batches whose prediction raised.")
        # NER predictions have no label: they count as label "entities" (some found) or "no_entities".
        self.predictions = counter("tunegate_predictions", "Texts labelled, by model version and label.",
                                   ["version", "label"])
        self.entities = counter("tunegate_entities", "Entities found (token classification), by model version "
                                "and entity type.", ["version", "type"])
        self.prediction_log_errors = counter("tunegate_prediction_log_errors",
                                             "Sampled predictions that could not be written to the log.")
        ProcessCollector(registry=self.registry)

    def _counter(self, name: str, help_text: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, help_text, labels or [], registry=self.registry)

    def watch(self, state: ServiceState) -> None:
        """Report the service's state (model, reloads, queue) at every scrape."""
        self.registry.register(_ServiceStateCollector(state))

    def watch_shadow(self, state: Callable[[], tuple[dict[str, int], float | None]]) -> None:
        """Report the shadow challenger's counts and agreement at every scrape."""
        self.registry.register(_ShadowCollector(state))

    def watch_monitoring(self, monitor_dir) -> None:
        """Expose the gauges of the project's latest monitoring report (.tunegate/monitor/latest.json), read
        at scrape time: tunegate_monitor_* (components/monitoring/gauges.py); none until a report exists."""
        from components.monitoring.gauges import monitor_collector

        self.registry.register(monitor_collector(monitor_dir))

    def render(self) -> bytes:
        return generate_latest(self.registry)
