"""Prometheus metrics of the service, written by hand: three metric kinds do not justify another
dependency. Requests, latency and batch-size histograms, model version, reloads, errors."""

from __future__ import annotations

import bisect
import threading
from typing import Sequence

from components.serving.holder import ReloadStats, ServedModel

# The exposition format every Prometheus server reads (newer ones also read 1.0.0).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    escaped = [str(v).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"") for v in values]
    pairs = [f'{name}="{value}"' for name, value in zip(names, escaped)] + ([extra] if extra else [])
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value)) if value != int(value) else str(int(value))


class CounterMetric:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self._values: dict[tuple[str, ...], float] = {} if label_names else {(): 0.0}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            values = sorted(self._values.items())
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        return lines + [f"{self.name}{_label_text(self.label_names, labels)} {_number(v)}" for labels, v in values]


class HistogramMetric:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float], label_names: Sequence[str] = ()) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self.buckets = sorted(buckets)
        # Per label set: counts per bucket (not cumulative), sum, count.
        self._series: dict[tuple[str, ...], list] = {} if label_names else {(): [[0] * len(self.buckets), 0.0, 0]}
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        index = bisect.bisect_left(self.buckets, value)  # the first bucket with le >= value
        with self._lock:
            series = self._series.setdefault(label_values, [[0] * len(self.buckets), 0.0, 0])
            if index < len(self.buckets):
                series[0][index] += 1
            series[1] += value
            series[2] += 1

    def render(self) -> list[str]:
        with self._lock:
            snapshot = sorted((labels, (list(s[0]), s[1], s[2])) for labels, s in self._series.items())
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total, count) in snapshot:
            cumulative = 0
            for bound, n in zip(self.buckets, counts):
                cumulative += n
                bucket_labels = _label_text(self.label_names, labels, f'le="{_number(bound)}"')
                lines.append(f"{self.name}_bucket{bucket_labels} {cumulative}")
            infinite_labels = _label_text(self.label_names, labels, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{infinite_labels} {count}")
            lines.append(f"{self.name}_sum{_label_text(self.label_names, labels)} {_number(total)}")
            lines.append(f"{self.name}_count{_label_text(self.label_names, labels)} {count}")
        return lines


def _gauge_lines(name: str, help_text: str, samples: Sequence[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    return lines + [f"{name}{_label_text(list(labels), list(labels.values()))} {_number(v)}" for labels, v in samples]


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    def __init__(self) -> None:
        self.requests = CounterMetric("tunegate_requests_total", "HTTP requests by endpoint and status code.",
                                ("endpoint", "status"))
        self.latency = HistogramMetric("tunegate_request_duration_seconds", "Time from request to response, seconds.",
                                 LATENCY_BUCKETS_S, ("endpoint",))
        self.errors = CounterMetric("tunegate_request_errors_total", "Requests answered with an error, by error code.",
                              ("endpoint", "error_code"))
        self.batch_texts = HistogramMetric("tunegate_batch_texts", "Texts per onnxruntime call.", BATCH_SIZE_BUCKETS)
        self.batch_requests = HistogramMetric("tunegate_batch_requests", "Requests merged into one onnxruntime call.",
                                        BATCH_SIZE_BUCKETS)
        self.batch_seconds = HistogramMetric("tunegate_batch_duration_seconds", "Time per onnxruntime call, seconds.",
                                       LATENCY_BUCKETS_S)
        self.inference_errors = CounterMetric("tunegate_inference_errors_total", "Batches whose prediction raised.")
        # NER predictions have no label: they count as label "entities" (some found) or "no_entities".
        self.predictions = CounterMetric("tunegate_predictions_total", "Texts labelled, by model version and label.",
                                   ("version", "label"))
        self.entities = CounterMetric("tunegate_entities_total", "Entities found (token classification), by model "
                                      "version and entity type.", ("version", "type"))
        self.prediction_log_errors = CounterMetric("tunegate_prediction_log_errors_total",
                                             "Sampled predictions that could not be written to the log.")

    def render(self, model: ServedModel, reloads: ReloadStats, queued_texts: int) -> str:
        lines: list[str] = []
        for metric in (self.requests, self.latency, self.errors, self.batch_texts, self.batch_requests,
                       self.batch_seconds, self.inference_errors, self.predictions, self.entities,
                       self.prediction_log_errors):
            lines += metric.render()
        # Read at scrape time, so a version that stopped serving leaves no stale series behind.
        model_labels = {"model_name": str(model.metadata.get("model_name", "")), "version": model.version or ""}
        lines += _gauge_lines("tunegate_model_version_info", "The model version serving now (value 1).",
                              [(model_labels, 1)])
        lines += _gauge_lines("tunegate_queued_texts", "Texts waiting for the model.", [({}, queued_texts)])
        lines += [
            "# HELP tunegate_model_reloads_total Model reloads since start, by outcome.",
            "# TYPE tunegate_model_reloads_total counter",
            f'tunegate_model_reloads_total{{outcome="success"}} {reloads.reloads}',
            f'tunegate_model_reloads_total{{outcome="failure"}} {reloads.failed_loads}',
            "# HELP tunegate_registry_poll_errors_total Registry polls that failed.",
            "# TYPE tunegate_registry_poll_errors_total counter",
            f"tunegate_registry_poll_errors_total {reloads.registry_errors}",
        ]
        return "\n".join(lines) + "\n"
