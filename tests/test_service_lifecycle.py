"""The service over its life: champion switches under traffic, a version that fails to load,
micro-batching of concurrent requests. Real MLflow SQLite registry, real onnxruntime, real HTTP."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from components.config import ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.lifecycle.registry import CHAMPION, ModelRegistry
from components.serving.app import create_app
from components.serving.deployment import (
    ChampionWatcher,
    build_service_app,
    load_served_model,
)
from components.serving.holder import ModelHolder, ServedModel
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import held_out, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.servers import ClientThreads

CPU = ["CPUExecutionProvider"]
PROBES, _ = held_out(48, seed=11)


def save_flipped_classifier(trained_dir: Path, out_dir: Path) -> Path:
    """The trained model with its two output rows swapped: just as confident, always the other label.

    Two versions that disagree on every text make it visible which one answered a request.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(trained_dir))
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(trained_dir)).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def flipped_export(tiny_classifier, tmp_path_factory) -> Path:
    from components.export.to_onnx import export_onnx

    scratch = tmp_path_factory.mktemp("flipped")
    return export_onnx(save_flipped_classifier(tiny_classifier, scratch / "torch"), scratch / "onnx").out_dir


@pytest.fixture(scope="module")
def broken_export(tiny_onnx_export, tmp_path_factory) -> Path:
    """A model directory that registers fine but cannot be loaded: its graph is not ONNX."""
    broken = tmp_path_factory.mktemp("broken") / "onnx"
    shutil.copytree(tiny_onnx_export.out_dir, broken)
    (broken / "model.onnx").write_bytes(b"this is not an onnx graph")
    return broken


def open_registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", "tiny-sentiment", artifact_root=tmp_path / "mlartifacts")


def register(registry: ModelRegistry, model_dir: Path, run_name: str) -> str:
    run_id = registry.start_run("tunegate-tests", run_name, tags={})
    version = registry.register(run_id, model_dir, tags={"gate": "passed"}).version
    registry.end_run(run_id)
    return version


def labels_of(model_dir: Path, texts: list[str]) -> list[str]:
    return [p["label"] for p in OnnxTextClassifier(model_dir).predict(texts)]


@dataclass(frozen=True)
class Answer:
    client: int
    sent_at: float  # time.monotonic()
    texts: list[str]
    status: int
    body_version: str | None
    header_version: str | None
    labels: list[str]


class Traffic(ClientThreads):
    """`clients` threads posting /predict back to back until stopped (or max_requests each)."""

    def __init__(self, url: str, clients: int, max_requests: int = 2000) -> None:
        super().__init__(clients)
        self.url, self.clients, self.max_requests = url, clients, max_requests
        self.answers: list[Answer] = []
        self.failures: list[str] = []

    def _client(self, client: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for n in range(self.max_requests):
                if self._stop.is_set():
                    return
                texts = [PROBES[(client * 7 + n + k) % len(PROBES)] for k in range(1 + n % 3)]
                sent_at = time.monotonic()
                try:
                    response = http.post("/predict", json={"texts": texts})
                    body = response.json()
                except Exception as error:  # noqa: BLE001 - a dropped request is what this test looks for
                    with self._lock:
                        self.failures.append(f"{type(error).__name__}: {error}")
                    continue
                answer = Answer(client, sent_at, texts, response.status_code, body.get("model_version"),
                                response.headers.get("x-model-version"),
                                [p["label"] for p in body.get("predictions", [])])
                with self._lock:
                    self.answers.append(answer)

    def count(self, version: str) -> int:
        with self._lock:
            return sum(a.body_version == version for a in self.answers)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


def test_champion_switch_under_traffic_drops_nothing(tmp_path, tiny_onnx_export, flipped_export):
    registry = open_registry(tmp_path)
    first = register(registry, tiny_onnx_export.out_dir, "trained")
    second = register(registry, flipped_export, "flipped")
    registry.set_alias(CHAMPION, first)
    expected = {first: dict(zip(PROBES, labels_of(tiny_onnx_export.out_dir, PROBES))),
                second: dict(zip(PROBES, labels_of(flipped_export, PROBES)))}
    assert all(expected[first][t] != expected[second][t] for t in PROBES), "the two versions must disagree"

    cache = tmp_path / "serving"
    holder = ModelHolder(load_served_model(registry, cache, CPU))
    watcher = ChampionWatcher(registry, holder, cache, CPU, poll_interval_s=0.1)
    app = create_app(holder, ServiceSettings(max_wait_ms=2), background=[watcher])
    with BackgroundServer(app) as server, Traffic(server.url, clients=6) as traffic:
        wait_for(lambda: traffic.count(first) >= 30, 30, "answers from the first version")
        registry.set_alias(CHAMPION, second)
        wait_for(lambda: holder.current().version == second, 30, "the watcher to switch")
        wait_for(lambda: traffic.count(second) >= 30, 30, "answers from the second version")
        metadata = httpx.get(f"{server.url}/metadata").json()

    assert traffic.failures == []
    answers = traffic.answers
    assert [a for a in answers if a.status != 200] == []
    assert all(a.body_version in (first, second) and a.header_version == a.body_version for a in answers)
    assert {a.body_version for a in answers} == {first, second}
    # Each answer's labels are those of the version it names: the tag tells the truth.
    for answer in answers:
        assert answer.labels == [expected[answer.body_version][t] for t in answer.texts]
    switched_at = holder.stats().last_reload_monotonic
    assert [a for a in answers if a.sent_at > switched_at and a.body_version != second] == []
    for client in range(traffic.clients):  # once a client got the new version it never got the old one again
        versions = [a.body_version for a in sorted(answers, key=lambda a: a.sent_at) if a.client == client]
        if second in versions:
            assert first not in versions[versions.index(second):], client
    assert metadata["model_version"] == second and metadata["reloads"]["reloads"] == 1


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(tmp_path, tiny_onnx_export, flipped_export,
                                                                 broken_export):
    registry = open_registry(tmp_path)
    good = register(registry, tiny_onnx_export.out_dir, "trained")
    broken = register(registry, broken_export, "broken")
    flipped = register(registry, flipped_export, "flipped")
    registry.set_alias(CHAMPION, good)
    cache = tmp_path / "serving"
    holder = ModelHolder(load_served_model(registry, cache, CPU))
    watcher = ChampionWatcher(registry, holder, cache, CPU, poll_interval_s=3600)  # polled by hand below
    probe = {"texts": PROBES[:4]}

    with BackgroundServer(create_app(holder)) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        before = http.post("/predict", json=probe).json()
        registry.set_alias(CHAMPION, broken)
        result = watcher.poll_once()
        assert (result.outcome, result.version) == ("failed", broken), result
        after = http.post("/predict", json=probe)
        assert after.status_code == 200
        assert after.json() == before and after.headers["x-model-version"] == good
        metrics = http.get("/metrics").text
        assert 'tunegate_model_reloads_total{outcome="failure"} 1' in metrics
        assert 'tunegate_model_reloads_total{outcome="success"} 0' in metrics
        reloads = http.get("/metadata").json()["reloads"]
        assert reloads["failed_loads"] == 1 and f"version {broken}" in reloads["last_error"]
        # The broken version is not fetched again on every poll.
        assert watcher.poll_once().outcome == "waiting"

        registry.set_alias(CHAMPION, flipped)
        assert watcher.poll_once().outcome == "switched"
        answer = http.post("/predict", json=probe)
        assert answer.json()["model_version"] == flipped == answer.headers["x-model-version"]
        assert [p["label"] for p in answer.json()["predictions"]] != [p["label"] for p in before["predictions"]]
        assert 'tunegate_model_reloads_total{outcome="success"} 1' in http.get("/metrics").text


def test_build_service_app_follows_the_champion(tmp_path, tiny_onnx_export, flipped_export):
    registry = open_registry(tmp_path)
    first = register(registry, tiny_onnx_export.out_dir, "trained")
    second = register(registry, flipped_export, "flipped")
    registry.set_alias(CHAMPION, first)
    app = build_service_app(registry, tmp_path / "serving", CPU, ServiceSettings(poll_interval_s=0.1))
    pinned = build_service_app(registry, tmp_path / "serving", CPU, version=first)
    with BackgroundServer(app) as server, BackgroundServer(pinned) as pinned_server:
        assert httpx.get(f"{server.url}/metadata").json()["model_version"] == first
        registry.set_alias(CHAMPION, second)
        wait_for(lambda: httpx.get(f"{server.url}/health").json()["model_version"] == second, 30, "the switch")
        assert httpx.get(f"{pinned_server.url}/health").json()["model_version"] == first


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tiny_onnx_export):
    predictor = OnnxTextClassifier(tiny_onnx_export.out_dir)
    requests = [PROBES[i:i + 1 + i % 3] for i in range(0, 40)]  # 40 requests of 1-3 distinct texts
    alone = [predictor.predict(texts) for texts in requests]
    settings = ServiceSettings(max_batch_size=32, max_wait_ms=50)
    start = threading.Barrier(len(requests))

    with BackgroundServer(create_app(ServedModel(predictor, {"model_version": "7"}), settings)) as server:
        def ask(texts: list[str]) -> list[dict]:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                start.wait()
                response = http.post("/predict", json={"texts": texts})
                assert response.status_code == 200, response.text
                return response.json()["predictions"]

        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            served = list(pool.map(ask, requests))
        metrics = httpx.get(f"{server.url}/metrics").text

    for got, want in zip(served, alone):
        assert [p["label"] for p in got] == [p["label"] for p in want]
        for g, w in zip(got, want):  # int8 quantizes activations per batch: tiny differences are expected
            assert g["scores"] == pytest.approx(w["scores"], abs=1e-3)
    batches = histogram(metrics, "tunegate_batch_requests")
    assert batches["count"] < len(requests), "no two requests were merged"
    assert batches["count"] > batches["le=1"], "every onnxruntime call held a single request"
    assert histogram(metrics, "tunegate_batch_texts")["sum"] == sum(len(t) for t in requests)
    assert histogram(metrics, "tunegate_batch_texts")["max_le_needed"] <= settings.max_batch_size


class CallRecorder(OnnxTextClassifier):
    """The real predictor, noting which thread runs each stage and the rows of each model call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[list[int]]] = []
        self.threads: dict[str, set[str]] = {"encode": set(), "probabilities": set(), "answers": set()}

    def encode(self, texts):
        self.threads["encode"].add(threading.current_thread().name)
        return super().encode(texts)

    def probabilities(self, encoded):
        self.threads["probabilities"].add(threading.current_thread().name)
        self.calls.append([list(row) for row in encoded])
        return super().probabilities(encoded)

    def answers(self, probabilities):
        self.threads["answers"].add(threading.current_thread().name)
        return super().answers(probabilities)


def test_a_batch_that_empties_the_queue_answers_its_shorter_half_first(tiny_onnx_export):
    from components.serving.batcher import MicroBatcher

    predictor = CallRecorder(tiny_onnx_export.out_dir)
    requests = [[text] for text in PROBES[:20]]
    alone = [predictor.predict(texts)[0] for texts in requests]
    batcher = MicroBatcher(ModelHolder(ServedModel(predictor, {"model_version": "1"})), max_batch_size=64,
                           max_wait_ms=50, autostart=False)
    futures = [batcher.submit(texts) for texts in requests]  # all queued before the worker starts: one batch
    answered_first: list[int] = []
    for index, future in enumerate(futures):
        future.add_done_callback(lambda _, index=index: answered_first.append(index))
    batcher.start()
    answers = [future.result(timeout=30).predictions[0] for future in futures]
    batcher.stop()

    by_length = sorted(PROBES[:20], key=len)
    # two calls, the shorter texts first
    assert predictor.calls == [predictor.encode(by_length[:10]), predictor.encode(by_length[10:])]
    assert set(answered_first[:10]) == {PROBES.index(text) for text in by_length[:10]}
    for got, want in zip(answers, alone):  # per-token int8: a text's answer never depends on its batch-mates
        assert got["label"] == want["label"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_a_batch_with_requests_queued_behind_it_runs_whole(tiny_onnx_export):
    from components.serving.batcher import MicroBatcher

    predictor = CallRecorder(tiny_onnx_export.out_dir)
    batcher = MicroBatcher(ModelHolder(ServedModel(predictor, {"model_version": "1"})), max_batch_size=16,
                           max_wait_ms=50, autostart=False)
    futures = [batcher.submit([text]) for text in PROBES[:40]]  # all queued before the worker starts
    batcher.start()
    for future in futures:
        future.result(timeout=30)
    batcher.stop()
    # 16 and 16 with more queued behind each; the last 8 empty the queue but are too few to split.
    assert [len(call) for call in predictor.calls] == [16, 16, 8]
    assert predictor.calls[0] == predictor.encode(PROBES[:16])  # arrival order: a whole batch is not reordered


def test_the_model_thread_only_computes_and_answers_match_predict(tiny_onnx_export):
    """Over HTTP the event loop encodes and answers; the batcher's thread runs onnxruntime alone."""
    predictor = CallRecorder(tiny_onnx_export.out_dir)
    app = create_app(ServedModel(predictor, {"model_version": "1"}), ServiceSettings(max_batch_size=8))
    with BackgroundServer(app) as server, ThreadPoolExecutor(8) as pool:
        def post(text: str) -> dict:
            response = httpx.post(f"{server.url}/predict", json={"texts": [text]}, timeout=30)
            response.raise_for_status()
            return response.json()["predictions"][0]

        served = list(pool.map(post, PROBES[:24]))
    assert predictor.threads["probabilities"] == {"tunegate-batcher"}
    assert "tunegate-batcher" not in predictor.threads["encode"] | predictor.threads["answers"]
    for got, want in zip(served, predictor.predict(PROBES[:24])):
        assert got["label"] == want["label"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_a_request_encoded_before_a_swap_is_encoded_again_by_the_model_that_answers(tiny_onnx_export):
    from concurrent.futures import Future

    from components.serving.batcher import MicroBatcher, _Pending

    old, new = (ServedModel(CallRecorder(tiny_onnx_export.out_dir), {"model_version": v}) for v in ("1", "2"))
    texts = PROBES[:3]
    stale = _Pending(texts, Future(), encoded=[[0, 1]] * 3, encoded_by=old)  # ids the new model never made
    outputs = MicroBatcher._compute(new, [stale], texts)
    assert new.predictor.calls == [new.predictor.encode(texts)]
    assert outputs == pytest.approx(new.predictor.predict_proba(texts), abs=1e-6)


def histogram(metrics_text: str, name: str) -> dict:
    """count, sum, the le=1 bucket and the smallest bucket bound holding every observation."""
    buckets: dict[float, float] = {}
    found: dict = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            found["count"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum"):
            found["sum"] = float(line.rsplit(" ", 1)[1])
    found["le=1"] = buckets[1.0]
    found["max_le_needed"] = min(bound for bound, n in buckets.items() if n == found["count"])
    return found
