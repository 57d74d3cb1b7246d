"""POST /explain on a real server: off by default, limits, errors, and the answer is the served model's."""

from __future__ import annotations

import httpx
import pytest

from components.config import ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.serving.app import create_app
from components.serving.explanations import OneAtATime
from components.serving.holder import ServedModel
from components.serving.request_bodies import BadRequest
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures

METADATA = {"model_name": "tunegate-tiny", "model_version": "4"}
TEXT = "the film was great and superb"
EXPLAIN_ON = ServiceSettings(explain=True, explain_max_chars=80, explain_max_evals=60)


@pytest.fixture(scope="module")
def predictor(tiny_onnx_export) -> OnnxTextClassifier:
    return OnnxTextClassifier(tiny_onnx_export.out_dir)


def serving(predictor, settings: ServiceSettings):
    return BackgroundServer(create_app(ServedModel(predictor, dict(METADATA)), settings))


@pytest.fixture(scope="module")
def explaining(predictor):
    with serving(predictor, EXPLAIN_ON) as running, httpx.Client(base_url=running.url, timeout=60) as http:
        yield http


def test_explain_is_off_by_default_and_says_how_to_turn_it_on(predictor):
    with serving(predictor, ServiceSettings()) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        answer = http.post("/explain", json={"text": TEXT})
        assert answer.status_code == 404
        assert answer.json()["error_code"] == "ENDPOINT_DISABLED" and "serve.explain" in answer.json()["message"]
        assert "/explain" not in http.get("/openapi.json").json()["paths"]
        assert http.get("/metadata").json()["explain"]["enabled"] is False


def test_explain_answers_with_word_attributions_of_the_served_model(explaining, predictor):
    answer = explaining.post("/explain", json={"text": TEXT, "max_evals": 40})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "4" and answer.headers["X-Model-Version"] == "4"
    [explanation] = body["explanations"]
    served = predictor.predict([TEXT])[0]
    assert explanation["label"] == served["label"]  # what the service answers is what is explained
    assert explanation["probability"] == pytest.approx(served["score"], abs=1e-4)
    assert 0 < explanation["model_calls"] <= 40
    words = explanation["words"]
    assert [w["word"] for w in words] == TEXT.split()
    assert all(TEXT[w["start"]:w["end"]] == w["word"] for w in words)
    assert "/explain" in explaining.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"text": "x" * 81}, 413, "PAYLOAD_TOO_LARGE"),                   # serve.explain_max_chars
    ({"text": TEXT, "max_evals": 61}, 400, "BAD_REQUEST"),            # over serve.explain_max_evals
    ({"text": TEXT, "max_evals": "many"}, 400, "BAD_REQUEST"),
    ({"texts": [TEXT, TEXT]}, 400, "BAD_REQUEST"),                    # one text per explanation
    ({"text": TEXT, "target": "positive"}, 400, "BAD_REQUEST"),
    ({"text": "   "}, 400, "BAD_REQUEST"),
    ([TEXT], 400, "BAD_REQUEST"),
])
def test_explain_refuses_what_it_cannot_do_with_a_reason(explaining, body, status, code):
    answer = explaining.post("/explain", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error_code"] == code and answer.json()["message"]


def test_explanations_run_one_at_a_time_and_a_second_is_refused_not_queued():
    slot = OneAtATime()
    with slot:
        with pytest.raises(BadRequest) as refused:
            with slot:
                pass
        assert refused.value.status_code == 429
    with slot:  # released after the first: the next one runs
        pass


def test_explain_needs_the_api_key_like_predict(predictor, monkeypatch):
    monkeypatch.setenv("TUNEGATE_TEST_EXPLAIN_KEY", "k-2026")
    settings = EXPLAIN_ON.model_copy(update={"api_key_env": "TUNEGATE_TEST_EXPLAIN_KEY"})
    with serving(predictor, settings) as running, httpx.Client(base_url=running.url, timeout=60) as http:
        assert http.post("/explain", json={"text": TEXT}).status_code == 401
        keyed = http.post("/explain", json={"text": TEXT, "max_evals": 20}, headers={"Authorization": "Bearer k-2026"})
        assert keyed.status_code == 200, keyed.text
