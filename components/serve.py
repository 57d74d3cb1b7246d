"""HTTP inference for a classifier that may change while it serves: tunegate's own /predict, MLflow's
/invocations protocol, /health, /metadata and Prometheus /metrics.

A text classifier answers each text with {"label", "score", "scores"}; a token classifier (NER) with
{"entities": [{"text", "type", "start", "end", "score"}, ...]} (character offsets into the text).

Every malformed request gets a 4xx with a JSON body {"error_code": ..., "message": ...} (the shape
MLflow's scoring server uses); a 500 only ever means a bug or a broken model.

The app reads its model from a ModelHolder on every batch, so a watcher (components.deployment) can
swap in a new version while requests flow; every answer names the version that computed it, in the
body (`model_version`) and in the `X-Model-Version` header. Concurrent requests are merged by a
MicroBatcher into one onnxruntime call, which is where a CPU server gets its throughput.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import queue
import random
import threading
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Protocol, Sequence

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from components.config import ServiceSettings  # noqa: F401  (the service's settings; re-exported)

MLFLOW_INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
TEXT_COLUMN = "text"
VERSION_HEADER = "X-Model-Version"
# The exposition format every Prometheus server reads (newer ones also read 1.0.0).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENDPOINTS = ("/predict", "/invocations", "/health", "/metadata", "/metrics")

logger = logging.getLogger("tunegate.serve")


class TextPredictor(Protocol):
    @property
    def labels(self) -> list[str]: ...

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]: ...


@dataclass
class ServedModel:
    """A predictor plus what callers may know about it (name, version, data hash, metrics...).

    The version reported to clients is metadata["model_version"], else metadata["version"].
    """

    predictor: TextPredictor
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        version = self.metadata.get("model_version", self.metadata.get("version"))
        return None if version is None else str(version)


# --- the model being served, swappable ------------------------------------------------------------

@dataclass(frozen=True)
class ReloadStats:
    reloads: int  # successful swaps since start
    failed_loads: int  # versions that could not be loaded or warmed up; the old model kept serving
    registry_errors: int  # polls that could not read the registry
    last_reload_unix: float | None
    last_reload_monotonic: float | None
    last_error: str | None


class ModelHolder:
    """The model answering requests now. Readers take `current()` once per batch; `swap` replaces it
    in one reference assignment, so a batch runs wholly on the old model or wholly on the new one."""

    def __init__(self, model: ServedModel) -> None:
        self._model = model
        self._lock = threading.Lock()  # for the counters; reading _model needs no lock
        self._reloads = 0
        self._failed_loads = 0
        self._registry_errors = 0
        self._last_reload_unix: float | None = None
        self._last_reload_monotonic: float | None = None
        self._last_error: str | None = None

    def current(self) -> ServedModel:
        return self._model

    def swap(self, model: ServedModel) -> ServedModel:
        """Serve `model` from the next batch on; returns the model it replaced."""
        with self._lock:
            previous, self._model = self._model, model
            self._reloads += 1
            self._last_reload_unix, self._last_reload_monotonic = time.time(), time.monotonic()
        logger.info("now serving version %s (was %s)", model.version, previous.version)
        return previous

    def record_failed_load(self, version: str | None, error: BaseException) -> None:
        with self._lock:
            self._failed_loads += 1
            self._last_error = f"version {version}: {type(error).__name__}: {error}"

    def record_registry_error(self, error: BaseException) -> None:
        with self._lock:
            self._registry_errors += 1
            self._last_error = f"registry: {type(error).__name__}: {error}"

    def stats(self) -> ReloadStats:
        with self._lock:
            return ReloadStats(self._reloads, self._failed_loads, self._registry_errors, self._last_reload_unix,
                               self._last_reload_monotonic, self._last_error)


# --- Prometheus metrics, written by hand: three metric kinds do not justify another dependency -----

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


# --- sampled prediction log -----------------------------------------------------------------------

def prediction_label(prediction: dict[str, Any]) -> str:
    """What a prediction is counted as: a classifier's label; for NER "entities" or "no_entities"."""
    if "label" in prediction:
        return str(prediction["label"])
    return "entities" if prediction.get("entities") else "no_entities"


def _tags_of_entities(text: str, entities: list[dict[str, Any]]) -> str:
    """The text's words' IOB2 tags implied by character-offset entities, space-joined: the shape of an
    NER split's `label` column, so logged traffic compares with training data."""
    from components.entities import split_words

    words = split_words(text)
    tags = ["O"] * len(words)
    for entity in entities:
        first, last = entity.get("start"), entity.get("end")
        if not isinstance(first, int) or not isinstance(last, int):
            continue  # a predictor without offsets: its entities cannot be placed on words
        inside = [i for i, (_, start, end) in enumerate(words) if start >= first and end <= last]
        for rank, index in enumerate(inside):
            tags[index] = f"{'B' if rank == 0 else 'I'}-{entity.get('type')}"
    return " ".join(tags)


def _log_fields(text: str, prediction: dict[str, Any]) -> dict[str, Any]:
    if "label" in prediction:
        return {"label": prediction["label"], "score": prediction.get("score")}
    # NER: label is the words' predicted tags (space-joined), score the entities' mean score.
    entities = prediction.get("entities", [])
    scores = [float(entity["score"]) for entity in entities if isinstance(entity.get("score"), (int, float))]
    return {"label": _tags_of_entities(text, entities), "score": sum(scores) / len(scores) if scores else None,
            "entities": [{key: entity.get(key) for key in ("type", "start", "end", "score")} for entity in entities]}


class PredictionLog:
    """Appends JSON lines {time, version, text, label, score} for a sample of requests (drift monitoring).
    NER lines have label = the predicted IOB2 tags of the text's words (space-joined, as in an NER
    split), score = the entities' mean score (null without entities) and entities (type, start, end, score).

    A log that cannot be written costs a warning and a counter, never a request.
    """

    def __init__(self, path: Path, sample_rate: float, *, seed: int | None = None) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def wants_request(self) -> bool:
        with self._lock:
            return self.sample_rate > 0 and self._random.random() < self.sample_rate

    def write(self, version: str | None, texts: list[str], predictions: list[dict[str, Any]]) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        lines = [json.dumps({"time": stamp, "version": version, "text": text, **_log_fields(text, p)},
                            ensure_ascii=False) for text, p in zip(texts, predictions)]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:  # reopened per batch: survives log rotation
                handle.write("\n".join(lines) + "\n")


# --- micro-batching -------------------------------------------------------------------------------

class ServiceUnavailable(Exception):
    """The service cannot take the request now (overloaded or shutting down); the client may retry."""


@dataclass(frozen=True)
class BatchAnswer:
    version: str | None
    predictions: list[dict[str, Any]]


@dataclass
class _Pending:
    texts: list[str]
    future: Future
    log: bool = False


class MicroBatcher:
    """Merges concurrent requests into one predict call on the holder's current model.

    A worker thread takes the first queued request, then more until it holds max_batch_size texts or
    max_wait_ms have passed, runs one call and hands each request its slice. Requests are never split,
    so a request bigger than max_batch_size runs alone.
    """

    def __init__(self, holder: ModelHolder, *, max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 max_queued_texts: int = 4096, metrics: ServiceMetrics | None = None,
                 prediction_log: PredictionLog | None = None) -> None:
        self.holder = holder
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queued_texts = max_queued_texts
        self.metrics = metrics or ServiceMetrics()
        self.prediction_log = prediction_log
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._queued_texts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def start(self) -> "MicroBatcher":
        with self._lock:
            if self._stopping.is_set():
                raise ServiceUnavailable("the service is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="tunegate-batcher", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Answer what is queued, then stop the worker; later submissions get ServiceUnavailable."""
        with self._lock:  # no submission can slip in between the worker's last look and its exit
            self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def submit(self, texts: list[str], *, log: bool = False) -> Future:
        """Queue texts; the future gives a BatchAnswer, or raises what the prediction raised."""
        if self._thread is None:
            self.start()  # an app served without lifespan events (e.g. a test client) still works
        with self._lock:
            if self._stopping.is_set():
                raise ServiceUnavailable("the service is shutting down")
            if self._queued_texts + len(texts) > self.max_queued_texts and self._queued_texts:
                raise ServiceUnavailable(f"{self._queued_texts} texts are already waiting for the model; retry shortly")
            self._queued_texts += len(texts)
            pending = _Pending(list(texts), Future(), log)
            self._queue.put(pending)
        return pending.future

    async def predict(self, texts: list[str], *, log: bool = False) -> BatchAnswer:
        return await asyncio.wrap_future(self.submit(texts, log=log))

    def _take(self, timeout_s: float | None) -> _Pending | None:
        try:
            pending = self._queue.get(timeout=timeout_s) if timeout_s else self._queue.get_nowait()
        except queue.Empty:
            return None
        with self._lock:
            self._queued_texts -= len(pending.texts)
        return pending

    def _next_batch(self, carried: _Pending | None) -> tuple[list[_Pending], _Pending | None]:
        """A batch to run and the request that did not fit (it starts the next batch)."""
        first = carried or self._take(0.05)  # the timeout lets the worker notice a stop
        if first is None:
            return [], None
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch_size:
            pending = self._take(max(0.0, deadline - time.monotonic()))
            if pending is None:
                break
            if size + len(pending.texts) > self.max_batch_size:
                return batch, pending
            batch.append(pending)
            size += len(pending.texts)
        return batch, None

    def _work(self) -> None:
        carried: _Pending | None = None
        while not (self._stopping.is_set() and carried is None and self._queue.empty()):
            batch, carried = self._next_batch(carried)
            # A request whose client went away is cancelled: no need to compute it.
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if batch:
                try:
                    self._run(batch)
                except BaseException as error:  # noqa: BLE001 - the worker must outlive any one batch
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(error)

    def _run(self, batch: list[_Pending]) -> None:
        model = self.holder.current()  # once per batch: every text in it is answered by one version
        texts = [text for pending in batch for text in pending.texts]
        started = time.perf_counter()
        try:
            predictions = model.predictor.predict(texts, batch_size=len(texts))
            if len(predictions) != len(texts):  # slicing would hand requests each other's answers
                raise RuntimeError(f"the model returned {len(predictions)} predictions for {len(texts)} texts")
        except Exception as error:  # noqa: BLE001
            self.metrics.inference_errors.inc()
            if len(batch) == 1:
                batch[0].future.set_exception(error)
            else:  # one request's input must not fail the others: run each on its own
                for pending in batch:
                    self._run([pending])
            return
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_texts.observe(len(texts))
        self.metrics.batch_requests.observe(len(batch))
        version = model.version
        start = 0
        for pending in batch:
            mine = predictions[start:start + len(pending.texts)]
            start += len(pending.texts)
            pending.future.set_result(BatchAnswer(version, mine))
            for prediction in mine:
                self.metrics.predictions.inc(version or "", prediction_label(prediction))
                for entity in prediction.get("entities", ()):
                    self.metrics.entities.inc(version or "", str(entity.get("type", "")))
            if pending.log and self.prediction_log is not None:
                self._log(version, pending.texts, mine)

    def _log(self, version: str | None, texts: list[str], predictions: list[dict[str, Any]]) -> None:
        try:
            self.prediction_log.write(version, texts, predictions)
        except Exception as error:  # noqa: BLE001 - a disk error or an odd prediction: never the other requests
            self.metrics.prediction_log_errors.inc(amount=len(texts))
            logger.warning("could not write the prediction log %s: %s", self.prediction_log.path, error)


# --- request parsing ------------------------------------------------------------------------------

class BadRequest(Exception):
    def __init__(self, message: str, status_code: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code


def _error_response(status_code: int, error_code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error_code": error_code, "message": message})


async def _read_body(request: Request, max_body_bytes: int) -> bytes:
    """The body, refused as soon as it is known to be too big: never buffered beyond the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise BadRequest(f"request body is {declared} bytes; the limit is {max_body_bytes}", 413, "PAYLOAD_TOO_LARGE")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise BadRequest(f"request body is over {max_body_bytes} bytes, the limit", 413, "PAYLOAD_TOO_LARGE")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: Request, max_body_bytes: int) -> Any:
    body = await _read_body(request, max_body_bytes)
    if not body.strip():
        raise BadRequest("empty request body; send JSON such as {\"texts\": [\"some text\"]}")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None


def check_text_lengths(texts: list[str], max_chars: int) -> list[str]:
    """The texts, or a 413 naming the first one over max_chars characters."""
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise BadRequest(f"text {index} has {len(text)} characters; at most {max_chars} per text",
                             413, "PAYLOAD_TOO_LARGE")
    return texts


def _checked_texts(texts: Any, where: str, max_texts: int) -> list[str]:
    if not isinstance(texts, list):
        raise BadRequest(f"{where} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise BadRequest(f"{where} is empty; send at least one text")
    if len(texts) > max_texts:
        raise BadRequest(f"{where} has {len(texts)} texts; at most {max_texts} per request", 413, "PAYLOAD_TOO_LARGE")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(f"{where}[{index}] is {type(text).__name__}; every text must be a string")
    return texts


def texts_from_predict_body(body: Any, max_texts: int) -> list[str]:
    """{"texts": [...]} or {"text": "..."}."""
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object with 'texts' (a list of strings), got {type(body).__name__}")
    if "texts" in body:
        return _checked_texts(body["texts"], "texts", max_texts)
    if "text" in body:
        if not isinstance(body["text"], str):
            raise BadRequest(f"text must be a string, got {type(body['text']).__name__}")
        return [body["text"]]
    raise BadRequest("expected 'texts' (a list of strings) or 'text' (a string) in the request body")


def _text_of_record(record: Any, where: str) -> Any:
    """The text of {"text": ...} or of a one-field record; anything else is the caller's error."""
    if not isinstance(record, dict):
        return record  # a plain value; _checked_texts says if it is not a string
    if TEXT_COLUMN in record:
        return record[TEXT_COLUMN]
    if len(record) == 1:
        return next(iter(record.values()))
    raise BadRequest(f"{where} has fields {sorted(record)}; name the text field {TEXT_COLUMN!r}")


def _texts_from_split(split: Any) -> list[Any]:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise BadRequest("dataframe_split must be an object with 'columns' and 'data' (a list of rows)")
    columns = split.get("columns")
    rows = split["data"]
    if columns is None:
        column = 0
    elif not isinstance(columns, list) or not columns:
        raise BadRequest("dataframe_split.columns must be a non-empty list of column names")
    elif TEXT_COLUMN in columns:
        column = columns.index(TEXT_COLUMN)
    elif len(columns) == 1:
        column = 0
    else:
        raise BadRequest(f"dataframe_split has columns {columns}; name the text column {TEXT_COLUMN!r}")
    texts = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) <= column or (columns is not None and len(row) != len(columns)):
            raise BadRequest(f"dataframe_split.data[{index}] does not match columns {columns}")
        texts.append(row[column])
    return texts


def texts_from_mlflow_body(body: Any, max_texts: int) -> list[str]:
    """The text column of an MLflow scoring request (dataframe_split, dataframe_records, instances, inputs)."""
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object with one of {list(MLFLOW_INPUT_KEYS)}, got {type(body).__name__}")
    given = [key for key in MLFLOW_INPUT_KEYS if key in body]
    if len(given) != 1:
        raise BadRequest(f"expected exactly one of {list(MLFLOW_INPUT_KEYS)} in the request body, got {given or 'none'}")
    key = given[0]
    payload = body[key]
    if key == "dataframe_split":
        texts = _texts_from_split(payload)
    elif key == "dataframe_records":
        if not isinstance(payload, list):
            raise BadRequest("dataframe_records must be a list of records such as {\"text\": \"...\"}")
        texts = [_text_of_record(record, f"dataframe_records[{i}]") for i, record in enumerate(payload)]
    elif isinstance(payload, dict):  # {"inputs": {"text": [...]}}: columns as lists
        texts = _text_of_record(payload, key)
    elif isinstance(payload, str):
        texts = [payload]
    elif isinstance(payload, list):
        texts = [_text_of_record(item, f"{key}[{i}]") for i, item in enumerate(payload)]
    else:
        raise BadRequest(f"{key} must be a list of strings or of {{\"text\": ...}} records")
    return _checked_texts(texts, key, max_texts)


class BackgroundService(Protocol):
    """Something that runs beside the app for its lifetime, such as a ChampionWatcher."""

    def start(self) -> Any: ...

    def stop(self) -> Any: ...


class _RequestMetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it, 4xx and 5xx included.

    Plain ASGI rather than an @app.middleware function: that wrapper costs a task per request.
    """

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label: a scanner must not create a time series per URL it tries.
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_and_note_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.requests.inc(endpoint, str(status))
            self.metrics.latency.observe(time.perf_counter() - started, endpoint)


def _endpoint_of(request: Request) -> str:
    return request.url.path if request.url.path in ENDPOINTS else "other"


def _answer_response(answer: BatchAnswer) -> JSONResponse:
    headers = {VERSION_HEADER: answer.version} if answer.version is not None else None
    return JSONResponse({"model_version": answer.version, "predictions": answer.predictions}, headers=headers)


def _version_headers(model: ServedModel) -> dict[str, str] | None:
    return {VERSION_HEADER: model.version} if model.version is not None else None


def _reload_summary(stats: ReloadStats) -> dict[str, Any]:
    last = None if stats.last_reload_unix is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                      time.gmtime(stats.last_reload_unix))
    return {"reloads": stats.reloads, "failed_loads": stats.failed_loads, "registry_errors": stats.registry_errors,
            "last_reload_at": last, "last_error": stats.last_error}


def _effective_settings(settings: ServiceSettings | None, max_texts: int | None,
                        max_body_bytes: int | None) -> ServiceSettings:
    """The settings, with the older keyword arguments of create_app taking precedence."""
    settings = settings or ServiceSettings()
    overrides = {key: value for key, value in (("max_texts_per_request", max_texts),
                                               ("max_body_bytes", max_body_bytes)) if value is not None}
    return settings.model_copy(update=overrides) if overrides else settings


def create_app(model: ServedModel | ModelHolder, settings: ServiceSettings | None = None, *,
               max_texts: int | None = None, max_body_bytes: int | None = None,
               background: Sequence[BackgroundService] = ()) -> FastAPI:
    """The inference app for a fixed model (a ServedModel) or a swappable one (a ModelHolder).

    `background` services (e.g. a ChampionWatcher) are started and stopped with the app's lifespan,
    as is the batcher's worker thread.
    """
    settings = _effective_settings(settings, max_texts, max_body_bytes)
    holder = model if isinstance(model, ModelHolder) else ModelHolder(model)
    metrics = ServiceMetrics()
    prediction_log = (PredictionLog(settings.prediction_log, settings.prediction_log_sample_rate)
                      if settings.prediction_log is not None else None)
    batcher = MicroBatcher(holder, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                           max_queued_texts=settings.max_queued_texts, metrics=metrics, prediction_log=prediction_log)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        for service in background:
            await run_in_threadpool(service.start)
        try:
            yield
        finally:
            for service in reversed(background):
                await run_in_threadpool(service.stop)
            await run_in_threadpool(batcher.stop)

    app = FastAPI(title="tunegate classifier", version=holder.current().version or "unversioned", lifespan=lifespan)
    app.state.model_holder, app.state.batcher = holder, batcher
    app.state.metrics, app.state.settings = metrics, settings
    app.add_middleware(_RequestMetricsMiddleware, metrics=metrics)

    def error_response(request: Request, status_code: int, error_code: str, message: str,
                       headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.errors.inc(_endpoint_of(request), error_code)
        response = _error_response(status_code, error_code, message)
        response.headers.update(headers or {})
        return response

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return error_response(request, error.status_code, error.error_code, error.message)

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, error: ServiceUnavailable) -> JSONResponse:
        return error_response(request, 503, "TEMPORARILY_UNAVAILABLE", str(error), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "INVALID_PARAMETER_VALUE", str(error.errors()))

    @app.exception_handler(Exception)
    async def _internal(request: Request, error: Exception) -> JSONResponse:
        # Starlette still logs the traceback; the client gets JSON like every other error.
        return error_response(request, 500, "INTERNAL_ERROR", f"{type(error).__name__}: {error}")

    async def predict(texts: list[str]) -> JSONResponse:
        check_text_lengths(texts, settings.max_chars_per_text)
        sampled = prediction_log is not None and prediction_log.wants_request()
        try:
            # The batcher's worker thread runs the model: the event loop stays free for /health.
            return _answer_response(await batcher.predict(texts, log=sampled))
        except ValueError as error:  # the predictor's word on an input it cannot take
            raise BadRequest(str(error)) from None

    @app.post("/predict")
    async def predict_endpoint(request: Request) -> JSONResponse:
        body = await _read_json(request, settings.max_body_bytes)
        return await predict(texts_from_predict_body(body, settings.max_texts_per_request))

    @app.post("/invocations")
    async def invocations(request: Request) -> JSONResponse:
        body = await _read_json(request, settings.max_body_bytes)
        return await predict(texts_from_mlflow_body(body, settings.max_texts_per_request))

    @app.get("/health")
    async def health() -> JSONResponse:
        served = holder.current()
        return JSONResponse({"status": "ok", "model_version": served.version}, headers=_version_headers(served))

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        served = holder.current()
        return JSONResponse(jsonable_encoder({
            **served.metadata,
            "model_version": served.version,
            "task": getattr(served.predictor, "task", "sequence-classification"),
            "labels": list(served.predictor.labels),
            **({"entity_types": list(served.predictor.entity_types)}
               if hasattr(served.predictor, "entity_types") else {}),
            "providers": list(getattr(served.predictor, "providers", []) or []),
            "max_texts": settings.max_texts_per_request,
            "limits": {"max_texts_per_request": settings.max_texts_per_request,
                       "max_chars_per_text": settings.max_chars_per_text,
                       "max_body_bytes": settings.max_body_bytes},
            "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms},
            "reloads": _reload_summary(holder.stats()),
        }), headers=_version_headers(served))

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        text = metrics.render(holder.current(), holder.stats(), batcher.queued_texts)
        return Response(content=text, media_type=PROMETHEUS_CONTENT_TYPE)

    return app


class BackgroundServer:
    """Serve an app from a daemon thread, for tests and for a CLI that does other work meanwhile.

    port=0 lets the OS pick a free port; `.url` gives the one actually bound.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                 log_level: str = "warning", startup_timeout_s: float = 15.0) -> None:
        import uvicorn

        self.host = host
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        # lifespan on: the app's batcher and watchers start and stop with the server.
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                     lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, name="tunegate-http", daemon=True)
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():  # uvicorn exits the thread when it cannot bind
                raise RuntimeError(f"HTTP server on {self.host}:{self._requested_port} failed to start (port in use?); "
                                   "see the error logged above")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"HTTP server on {self.host}:{self._requested_port} did not start "
                                   f"within {self._startup_timeout_s} s")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.port = None
        if self._thread.ident is None:  # never started
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # open keep-alive connections: stop waiting for them
            self._server.force_exit = True
            self._thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve in the foreground until interrupted (Ctrl+C, SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
