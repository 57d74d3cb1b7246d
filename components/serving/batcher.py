"""Micro-batching: concurrent requests are merged into one predictor call on a worker thread, which is
where a CPU server gets its throughput; the event loop stays free for /health.

The worker thread runs only the model. With a staged predictor (holder.StagedPredictor) the event loop
encodes each request's texts before queueing it and builds the answers after, so the thread the
throughput depends on spends no time on tokenizing, dicts, metrics or the prediction log, and waits
less for the GIL, which the event loop holds while it parses and answers requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from components.serving.holder import ModelHolder, ServedModel
from components.serving.metrics import ServiceMetrics
from components.serving.prediction_log import PredictionLog, prediction_label

logger = logging.getLogger("tunegate.serve")


class ServiceUnavailable(Exception):
    """The service cannot take the request now (overloaded or shutting down); the client may retry."""


@dataclass(frozen=True)
class BatchAnswer:
    version: str | None
    predictions: list[dict[str, Any]]


@dataclass
class _Pending:
    texts: list[str]
    future: Future  # gives a _Computed
    log: bool = False
    encoded: list[Any] | None = None  # the texts as `encoded_by`'s staged predictor encodes them
    encoded_by: ServedModel | None = None


@dataclass(frozen=True)
class _Computed:
    """What the worker hands back: the model that ran, and its outputs for the request's texts (a staged
    predictor's probabilities, to be answered by the caller; or the predictions themselves)."""

    model: ServedModel
    outputs: Any


class MicroBatcher:
    """Merges concurrent requests into one predict call on the holder's current model.

    A worker thread takes the first queued request, then more until it holds max_batch_size texts or
    max_wait_ms have passed, runs one call and hands each request its slice. Requests are never split,
    so a request bigger than max_batch_size runs alone.

    A batch that empties the queue runs in two calls, its shorter texts first, and the first call's
    requests are answered before the second starts. Clients that wait for an answer before they send
    again (most do) otherwise all sit in one batch: when it ends the queue is empty and the model idles
    while every answer goes out and every next request comes in (a fifth of the time at 16 clients).
    Split, the first half's clients are back in the queue by the time the second half ends. A batch
    with requests still queued behind it runs whole: the model has its next batch already.
    """

    # A drained batch is split only from this many texts: halves of 8 run at about 96% of a 16-text
    # call's texts/s (MiniLM-L6 int8, one thread), while the overlap cut the batcher's idle time at 16
    # clients from 19% to 10%.
    MIN_SPLIT_TEXTS = 16

    def __init__(self, holder: ModelHolder, *, max_batch_size: int = 64, max_wait_ms: float = 0.0,
                 max_queued_texts: int = 4096, metrics: ServiceMetrics | None = None,
                 prediction_log: PredictionLog | None = None, autostart: bool = True) -> None:
        self.holder = holder
        # autostart: the first submission starts the worker (an app served without lifespan events, a test
        # client, still works). Without it requests queue until start(): what the worker then takes is
        # decided by the queue alone, not by how fast the submitter ran.
        self.autostart = autostart
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
        # The prediction log is written here: neither the model's thread nor the event loop waits on a disk
        # or a bucket. One thread keeps the lines in the order of the answers.
        self._log_writer: ThreadPoolExecutor | None = None

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
        if self._log_writer is not None:
            self._log_writer.shutdown(wait=True)

    async def predict(self, texts: list[str], *, log: bool = False) -> BatchAnswer:
        """The answer to one request's texts; raises what the prediction raised (ValueError: bad input)."""
        model = self.holder.current()
        encoded = model.staged.encode(texts) if model.staged is not None else None  # here: off the model's thread
        computed = await asyncio.wrap_future(self._enqueue(_Pending(list(texts), Future(), log, encoded, model)))
        answer = self._answer(computed)
        if log and self.prediction_log is not None:
            self._log_later(answer, texts)
        return answer

    def on_log_writer(self, task: Callable[[], Any]) -> Future:
        """Run `task` on the prediction-log writer thread, ahead of the writes queued after it: the app builds
        the log's PII scanner there at startup, where the writes that need it will run."""
        return self._prediction_log_writer().submit(task)

    def submit(self, texts: list[str], *, log: bool = False) -> Future:
        """`predict` for a caller without an event loop: the future gives a BatchAnswer (answered on the
        worker thread), or raises what the prediction raised."""
        answered: Future = Future()

        def answer(computed: Future) -> None:
            try:
                result = self._answer(computed.result())
                if log and self.prediction_log is not None:
                    self._log_later(result, texts)
                answered.set_result(result)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                answered.set_exception(error)

        self._enqueue(_Pending(list(texts), Future(), log)).add_done_callback(answer)
        return answered

    def _log_later(self, answer: BatchAnswer, texts: list[str]) -> None:
        """Queue the request's log line for the writer thread, which screens it for personal data
        (serve.log_pii) and writes it: the answer does not wait for either."""
        try:
            self._prediction_log_writer().submit(self._log, answer.version, texts, answer.predictions)
        except RuntimeError:  # the writer has shut down with the service: a thread of its own writes this last line
            threading.Thread(target=self._log, args=(answer.version, texts, answer.predictions),
                             name="tunegate-prediction-log-last").start()

    def _enqueue(self, pending: _Pending) -> Future:
        if self._thread is None and self.autostart:
            self.start()
        with self._lock:
            if self._stopping.is_set():
                raise ServiceUnavailable("the service is shutting down")
            if self._queued_texts + len(pending.texts) > self.max_queued_texts and self._queued_texts:
                raise ServiceUnavailable(f"{self._queued_texts} texts are already waiting for the model; retry shortly")
            self._queued_texts += len(pending.texts)
            self._queue.put(pending)
        return pending.future

    def _answer(self, computed: _Computed) -> BatchAnswer:
        model = computed.model
        predictions = computed.outputs if model.staged is None else model.staged.answers(computed.outputs)
        version = model.version
        for prediction in predictions:
            self.metrics.predictions.labels(version or "", prediction_label(prediction)).inc()
            for entity in prediction.get("entities", ()):
                self.metrics.entities.labels(version or "", str(entity.get("type", ""))).inc()
        return BatchAnswer(version, predictions)

    def _prediction_log_writer(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._log_writer is None:
                self._log_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunegate-prediction-log")
            return self._log_writer

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
            if not batch:
                continue
            drained = carried is None and self._queue.empty()
            model = self.holder.current()  # once per batch: every text in it is answered by one version
            try:
                for part in (self._halves(batch) if drained else [batch]):
                    self._run(model, part)
            except BaseException as error:  # noqa: BLE001 - the worker must outlive any one batch
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)

    def _halves(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """The batch's requests by length (characters: the tokenizer's proxy), in two calls of about
        equal texts; one call below MIN_SPLIT_TEXTS texts or for a single request."""
        total = sum(len(pending.texts) for pending in batch)
        if total < self.MIN_SPLIT_TEXTS or len(batch) < 2:
            return [batch]
        ordered = sorted(batch, key=lambda pending: sum(map(len, pending.texts)))
        first, size = [], 0
        for pending in ordered[:-1]:  # the second call keeps at least one request
            if size >= total / 2:
                break
            first.append(pending)
            size += len(pending.texts)
        return [first, ordered[len(first):]]

    def _run(self, model: ServedModel, batch: list[_Pending]) -> None:
        texts = [text for pending in batch for text in pending.texts]
        started = time.perf_counter()
        try:
            outputs = self._compute(model, batch, texts)
            if len(outputs) != len(texts):  # slicing would hand requests each other's answers
                raise RuntimeError(f"the model returned {len(outputs)} predictions for {len(texts)} texts")
        except Exception as error:  # noqa: BLE001
            self.metrics.inference_errors.inc()
            if len(batch) == 1:
                batch[0].future.set_exception(error)
            else:  # one request's input must not fail the others: run each on its own
                for pending in batch:
                    self._run(model, [pending])
            return
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_texts.observe(len(texts))
        self.metrics.batch_requests.observe(len(batch))
        start = 0
        for pending in batch:
            pending.future.set_result(_Computed(model, outputs[start:start + len(pending.texts)]))
            start += len(pending.texts)

    @staticmethod
    def _compute(model: ServedModel, batch: list[_Pending], texts: list[str]) -> Any:
        staged = model.staged
        if staged is None:
            return model.predictor.predict(texts, batch_size=len(texts))
        # A request encoded by the model swapped out since is encoded again, by the model that answers it.
        encoded = [row for pending in batch
                   for row in (pending.encoded if pending.encoded_by is model else staged.encode(pending.texts))]
        return staged.probabilities(encoded)

    def _log(self, version: str | None, texts: list[str], predictions: list[dict[str, Any]]) -> None:
        try:
            self.prediction_log.write(version, texts, predictions)
        except Exception as error:  # noqa: BLE001 - a disk error or an odd prediction: never the other requests
            self.metrics.prediction_log_errors.inc(len(texts))
            logger.warning("could not write the prediction log %s: %s", self.prediction_log.path, error)
