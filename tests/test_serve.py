from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from components.config import ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.serving.app import create_app
from components.serving.holder import ServedModel
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import LABELS, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures

MAX_TEXTS = 8
MAX_CHARS = 200
MAX_BODY = 4096
METADATA = {"model_name": "tunegate-tiny", "model_version": "3", "data_hash": "md5:abc", "metrics": {"accuracy": 0.99}}
TEXTS = ["the film was great and superb", "the plot was awful and boring"]
EXPECTED = ["positive", "negative"]


@pytest.fixture(scope="module")
def predictor(tiny_onnx_export) -> OnnxTextClassifier:
    return OnnxTextClassifier(tiny_onnx_export.out_dir)


@pytest.fixture(scope="module")
def server(predictor):
    settings = ServiceSettings(max_texts_per_request=MAX_TEXTS, max_chars_per_text=MAX_CHARS, max_body_bytes=MAX_BODY)
    app = create_app(ServedModel(predictor, dict(METADATA)), settings)
    with BackgroundServer(app) as running:
        yield running


def test_the_removed_keyword_arguments_name_their_settings(predictor):
    with pytest.raises(TypeError, match=r"'max_texts' \(use ServiceSettings\(max_texts_per_request=\.\.\.\)\)"):
        create_app(ServedModel(predictor, dict(METADATA)), max_texts=MAX_TEXTS)
    with pytest.raises(TypeError, match=r"'max_body_bytes' \(use ServiceSettings\(max_body_bytes=\.\.\.\)\)"):
        create_app(ServedModel(predictor, dict(METADATA)), max_body_bytes=MAX_BODY)


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def test_server_binds_a_free_local_port(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert server.port and server.port > 0


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_version": "3"}


def test_metadata_has_callers_metadata_labels_and_providers(client):
    body = client.get("/metadata").json()
    for key, value in METADATA.items():
        assert body[key] == value
    assert body["labels"] == LABELS
    assert body["providers"] == ["CPUExecutionProvider"]


def test_predict_matches_the_predictor(client, predictor):
    response = client.post("/predict", json={"texts": TEXTS})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "3"
    assert [p["label"] for p in body["predictions"]] == EXPECTED
    for served, direct in zip(body["predictions"], predictor.predict(TEXTS)):
        assert served["label"] == direct["label"]
        assert served["score"] == pytest.approx(direct["score"], abs=1e-6)
        assert served["scores"] == pytest.approx(direct["scores"], abs=1e-6)


def test_every_answer_names_the_version_in_body_and_header(client):
    predicted = client.post("/predict", json={"texts": TEXTS})
    invoked = client.post("/invocations", json={"inputs": TEXTS})
    for response in (predicted, invoked, client.get("/health"), client.get("/metadata")):
        assert response.status_code == 200
        assert response.headers["x-model-version"] == "3" == response.json()["model_version"]


def test_a_streamed_body_without_length_over_the_limit_is_refused(client):
    def chunks():  # no content-length: the server learns the size only while reading
        yield b'{"texts": ["'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"]}'

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error_code"] == "PAYLOAD_TOO_LARGE" and str(MAX_BODY) in response.json()["message"]


def test_limits_are_published_in_metadata(client):
    assert client.get("/metadata").json()["limits"] == {
        "max_texts_per_request": MAX_TEXTS, "max_chars_per_text": MAX_CHARS, "max_body_bytes": MAX_BODY}


def test_metrics_count_requests_latency_errors_batches_and_version(predictor):
    from prometheus_client.parser import text_string_to_metric_families

    with BackgroundServer(create_app(ServedModel(predictor, dict(METADATA)))) as running, \
            httpx.Client(base_url=running.url, timeout=30) as http:
        for _ in range(3):
            assert http.post("/predict", json={"texts": TEXTS}).status_code == 200
        assert http.post("/invocations", json={"instances": TEXTS[:1]}).status_code == 200
        assert http.post("/predict", json={"texts": []}).status_code == 400
        assert http.get("/nowhere").status_code == 404
        response = http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):  # also checks the exposition format
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("tunegate_requests_total", endpoint="/predict", status="200") == 3
    assert value("tunegate_requests_total", endpoint="/predict", status="400") == 1
    assert value("tunegate_requests_total", endpoint="/invocations", status="200") == 1
    assert value("tunegate_requests_total", endpoint="other", status="404") == 1
    assert value("tunegate_request_errors_total", endpoint="/predict", error_code="BAD_REQUEST") == 1
    assert value("tunegate_request_duration_seconds_count", endpoint="/predict") == 4
    assert value("tunegate_request_duration_seconds_bucket", endpoint="/predict", le="+Inf") == 4
    assert value("tunegate_batch_texts_sum") == 3 * len(TEXTS) + 1
    assert value("tunegate_batch_requests_count") == value("tunegate_batch_texts_count") >= 1
    assert value("tunegate_model_version_info", model_name="tunegate-tiny", version="3") == 1
    assert value("tunegate_model_reloads_total", outcome="success") == 0
    assert value("tunegate_model_reloads_total", outcome="failure") == 0
    assert value("tunegate_predictions_total", version="3", label="positive") == 4
    assert value("process_resident_memory_bytes") > 0  # the process's own metrics, from prometheus_client


def test_prediction_log_samples_requests_as_json_lines(predictor, tmp_path):
    every = tmp_path / "every.jsonl"
    never = tmp_path / "never.jsonl"
    for path, rate in ((every, 1.0), (never, 0.0)):
        settings = ServiceSettings(prediction_log=path, prediction_log_sample_rate=rate)
        with BackgroundServer(create_app(ServedModel(predictor, dict(METADATA)), settings)) as running:
            for texts in (TEXTS, TEXTS[:1]):
                assert httpx.post(f"{running.url}/predict", json={"texts": texts}, timeout=30).status_code == 200
    assert not never.exists()
    lines = [json.loads(line) for line in every.read_text(encoding="utf-8").splitlines()]
    assert [(line["text"], line["label"], line["version"]) for line in lines] == [
        (TEXTS[0], "positive", "3"), (TEXTS[1], "negative", "3"), (TEXTS[0], "positive", "3")]
    assert all(set(line) == {"time", "version", "text", "label", "score"} and line["score"] > 0.5 for line in lines)


def test_predict_accepts_a_single_text(client):
    body = client.post("/predict", json={"text": TEXTS[1]}).json()
    assert [p["label"] for p in body["predictions"]] == ["negative"]


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
    {"dataframe_split": {"columns": ["id", "text"], "data": [[i, t] for i, t in enumerate(TEXTS)]}},
    {"dataframe_split": {"columns": ["review"], "data": [[t] for t in TEXTS]}},
    {"dataframe_records": [{"text": t} for t in TEXTS]},
    {"dataframe_records": [{"id": i, "text": t} for i, t in enumerate(TEXTS)]},
    {"instances": TEXTS},
    {"instances": [{"text": t} for t in TEXTS]},
    {"inputs": TEXTS},
    {"inputs": [{"text": t} for t in TEXTS]},
    {"inputs": {"text": TEXTS}},
], ids=lambda p: next(iter(p)))
def test_invocations_speaks_mlflow_scoring_formats(client, payload):
    response = client.post("/invocations", json=payload)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == EXPECTED
    assert all(set(p) == {"label", "score", "scores"} for p in predictions)


def test_invocations_takes_csv_as_mlflow_s_scoring_server_does(client):
    import csv
    import io

    body = io.StringIO()
    writer = csv.writer(body)
    writer.writerow(["id", "text"])
    writer.writerows([i, text] for i, text in enumerate(TEXTS))  # quoting, commas and newlines kept
    response = client.post("/invocations", content=body.getvalue().encode(), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == EXPECTED
    single = client.post("/invocations", content=b"review\n" + TEXTS[0].replace('"', "").encode() + b"\n",
                         headers={"content-type": "text/csv; charset=utf-8"})
    assert single.status_code == 200 and single.json()["predictions"][0]["label"] == EXPECTED[0]


@pytest.mark.parametrize("content", [b"", b"a,b\nx,y\n", b"text\n\"unclosed\n", b"text,other\nonly one\n",
                                     b"text\n\xff\xfe\n", b"text\n"])
def test_bad_csv_gets_a_400_with_a_message(client, content):
    response = client.post("/invocations", content=content, headers={"content-type": "text/csv"})
    assert response.status_code == 400, response.text
    assert len(response.json()["message"]) > 10


@pytest.mark.parametrize("path, content, status", [
    ("/predict", b"{not json", 400),
    ("/predict", b"", 400),
    ("/predict", b"[\"a list, not an object\"]", 400),
    ("/predict", b"{}", 400),
    ("/predict", b"{\"texts\": []}", 400),
    ("/predict", b"{\"texts\": [\"fine\", 3]}", 400),
    ("/predict", b"{\"texts\": \"not a list\"}", 400),
    ("/predict", b"{\"text\": null}", 400),
    ("/predict", b"{\"texts\": [" + b",".join([b"\"x\""] * (MAX_TEXTS + 1)) + b"]}", 413),
    ("/invocations", b"{not json", 400),
    ("/invocations", b"{\"texts\": [\"wrong protocol\"]}", 400),
    ("/invocations", b"{\"instances\": [\"a\"], \"inputs\": [\"b\"]}", 400),
    ("/invocations", b"{\"dataframe_split\": {\"columns\": [\"a\", \"b\"], \"data\": [[\"x\", \"y\"]]}}", 400),
    ("/invocations", b"{\"dataframe_split\": {\"columns\": [\"text\"], \"data\": [[\"x\", \"extra\"]]}}", 400),
    ("/invocations", b"{\"dataframe_split\": [\"not\", \"an object\"]}", 400),
    ("/invocations", b"{\"dataframe_records\": [{\"a\": \"x\", \"b\": \"y\"}]}", 400),
    ("/invocations", b"{\"instances\": [1, 2]}", 400),
    ("/invocations", b"{\"inputs\": [{\"text\": 5}]}", 400),
    ("/invocations", b"{\"instances\": []}", 400),
    ("/invocations", b"{\"instances\": [" + b",".join([b"\"x\""] * (MAX_TEXTS + 1)) + b"]}", 413),
    ("/predict", json.dumps({"texts": ["fine", "x" * (MAX_CHARS + 1)]}).encode(), 413),
    ("/predict", json.dumps({"text": "x" * (MAX_CHARS + 1)}).encode(), 413),
    ("/invocations", json.dumps({"inputs": ["x" * (MAX_CHARS + 1)]}).encode(), 413),
    ("/predict", json.dumps({"texts": ["x" * 100] * 5, "padding": "y" * MAX_BODY}).encode(), 413),
    ("/predict", b"{\"texts\": [\"\xff\xfe not utf-8\"]}", 400),
    ("/predict", b"{\"texts\": [\"ok\"], \"extra\": " + b"[" * 1_900 + b"]" * 1_900 + b"}", 400),
    ("/invocations", b"{\"inputs\": " + b"[" * 1_900 + b"]" * 1_900 + b"}", 400),
    ("/predict", b"{\"texts\": [\"\\ud800 lone surrogate\"]}", 400),
    ("/predict", b"{\"text\": \"fine \\udfff\"}", 400),
    ("/invocations", b"{\"inputs\": [\"\\ud83d\"]}", 400),
])
def test_bad_requests_get_a_4xx_with_a_message(client, path, content, status):
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"]
    assert isinstance(body["message"], str) and len(body["message"]) > 10


def test_concurrent_requests_all_succeed(client, server):
    def ask(i: int) -> list[str]:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            response = http.post("/predict", json={"texts": [TEXTS[i % 2]] * (1 + i % 4)})
            response.raise_for_status()
            return [p["label"] for p in response.json()["predictions"]]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(16)))
    assert answers == [[EXPECTED[i % 2]] * (1 + i % 4) for i in range(16)]


def test_background_server_stops_on_exit(predictor):
    with BackgroundServer(create_app(ServedModel(predictor, {}))) as running:
        url = running.url
        assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok", "model_version": None}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_an_api_key_guards_scoring_and_rotates_without_downtime(predictor, monkeypatch):
    from components.config import ConfigError

    monkeypatch.setenv("TUNEGATE_TEST_KEYS", "new-key-2026, old-key-2025")
    settings = ServiceSettings(api_key_env="TUNEGATE_TEST_KEYS", api_key_also_for=["/metadata"])
    with BackgroundServer(create_app(ServedModel(predictor, {"model_version": "3"}), settings)) as running, \
            httpx.Client(base_url=running.url, timeout=30) as http:
        body = {"texts": TEXTS}
        missing = http.post("/predict", json=body)
        wrong = http.post("/invocations", json={"inputs": TEXTS}, headers={"Authorization": "Bearer guess"})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert "Authorization: Bearer" in missing.json()["message"] and missing.headers["www-authenticate"]
        assert "guess" not in wrong.text
        for key in ("new-key-2026", "old-key-2025"):  # during a rotation both are accepted
            answer = http.post("/predict", json=body, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200 and [p["label"] for p in answer.json()["predictions"]] == EXPECTED
        assert http.post("/invocations", json={"inputs": TEXTS}, headers={"X-API-Key": "new-key-2026"}).status_code == 200
        assert http.get("/health").status_code == 200  # load balancers need no key
        assert http.get("/metadata").status_code == 401 and http.get("/metrics").status_code == 200
        assert "new-key" not in http.get("/metrics").text
    monkeypatch.setenv("TUNEGATE_TEST_KEYS", "new-key-2026")  # rotation done: the old key is gone
    with BackgroundServer(create_app(ServedModel(predictor, {}), settings)) as running:
        old = httpx.post(f"{running.url}/predict", json={"texts": TEXTS}, headers={"X-API-Key": "old-key-2025"})
        assert old.status_code == 401
    monkeypatch.delenv("TUNEGATE_TEST_KEYS")
    with pytest.raises(ConfigError, match="TUNEGATE_TEST_KEYS.*unset or empty"):
        create_app(ServedModel(predictor, {}), settings)


def test_stalled_clients_delay_no_one_and_are_closed_after_the_request_timeout(predictor):
    import socket
    import time

    settings = ServiceSettings(request_timeout_s=3.0)
    with BackgroundServer(create_app(ServedModel(predictor, {}), settings)) as running, \
            httpx.Client(base_url=running.url, timeout=30) as http:
        def timed_request() -> float:
            started = time.perf_counter()
            assert http.post("/predict", json={"texts": TEXTS}).status_code == 200
            return time.perf_counter() - started

        alone = min(timed_request() for _ in range(3))
        headers_stalled = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(40)]
        for sock in headers_stalled:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")  # and nothing more
        body_stalled = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(10)]
        for sock in body_stalled:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"texts\": [\"a fi")
        beside_them = max(timed_request() for _ in range(3))
        assert beside_them < alone + 0.5, (alone, beside_them)  # the stated bound: half a second

        started = time.monotonic()
        for sock in headers_stalled + body_stalled:
            sock.settimeout(10)
        def reply_of(sock: socket.socket) -> bytes:
            """What the server sends until it closes, or until a whole 408 answer is in."""
            received = b""
            while b"REQUEST_TIMEOUT" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
            return received

        closed = [sock.recv(4096) for sock in headers_stalled]
        answered = [reply_of(sock) for sock in body_stalled]
        waited = time.monotonic() - started
        assert closed == [b""] * 40  # the server hung up on each
        assert all(reply.startswith(b"HTTP/1.1 408") and b"REQUEST_TIMEOUT" in reply for reply in answered), answered
        assert waited < 3.0 + 5  # within the timeout, give or take the scheduler
        assert http.get("/health").status_code == 200
        for sock in headers_stalled + body_stalled:
            sock.close()
