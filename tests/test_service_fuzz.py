"""The running service fuzzed from its own OpenAPI document (schemathesis: valid and invalid bodies
generated from the schemas), and hostile bodies by hand: never a 5xx, every answer as documented, and
the service still answers /health afterwards."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from components.config import ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.serving.app import create_app
from components.serving.holder import ServedModel
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401, F811 - fixtures

LIMITS = ServiceSettings(max_texts_per_request=8, max_chars_per_text=300, max_body_bytes=64 * 1024)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def running(tiny_onnx_export):
    app = create_app(ServedModel(OnnxTextClassifier(tiny_onnx_export.out_dir), {"model_version": "1"}), LIMITS)
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(running):
    return schemathesis.openapi.from_url(f"{running.url}/openapi.json")


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# Valid and invalid bodies for the two endpoints that take one; the GETs take nothing to make invalid.
OPERATIONS = [("POST", "/predict", POSITIVE), ("POST", "/predict", NEGATIVE), ("POST", "/invocations", POSITIVE),
              ("POST", "/invocations", NEGATIVE), ("GET", "/health", POSITIVE), ("GET", "/metadata", POSITIVE),
              ("GET", "/metrics", POSITIVE)]


# schemathesis' own pytest plugin does not load under pytest 9: its Hypothesis strategies are used directly.
@pytest.mark.parametrize("method, path, mode", OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS])
def test_generated_requests_get_no_5xx_and_documented_answers(api_schema, method, path, mode):
    operation = api_schema[path][method]
    calls = []

    @settings(max_examples=100 if method == "POST" else 5, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case) -> None:
        calls.append(case.call_and_validate(checks=CHECKS).status_code)

    fuzz()
    assert calls and max(calls) < 500
    if method == "POST" and mode is GenerationMode.NEGATIVE:
        assert any(400 <= code < 500 for code in calls)  # the invalid bodies were refused, not ignored


HOSTILE = [
    ("deep nesting", b'{"texts": ["ok"], "extra": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "application/json"),
    ("unpaired surrogate", b'{"texts": ["\\ud800 lone surrogate"]}', "application/json"),
    ("huge integer", b'{"texts": [' + b"9" * 10_000 + b"]}", "application/json"),
    ("huge float", b'{"texts": [1e999999]}', "application/json"),
    ("duplicate keys", b'{"texts": ["fine"], "texts": 5}', "application/json"),
    ("truncated", b'{"texts": ["a fine film', "application/json"),
    ("form body", b"texts=a+fine+film", "application/x-www-form-urlencoded"),
    ("binary", bytes(range(256)) * 4, "application/octet-stream"),
    ("csv without text column", b"a,b\n1,2\n", "text/csv"),
    ("null", b"null", "application/json"),
    ("NaN", b'{"texts": NaN}', "application/json"),
]


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_hostile_bodies_get_a_4xx_and_the_service_stays_up(running, path):
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for name, body, content_type in HOSTILE:
            answer = http.post(path, content=body, headers={"content-type": content_type})
            assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text[:300])
            error = answer.json()
            assert error["error_code"] and len(error["message"]) > 10, name
            assert "Traceback" not in answer.text and "File \"" not in answer.text, name
        assert http.get("/health").json()["status"] == "ok"
