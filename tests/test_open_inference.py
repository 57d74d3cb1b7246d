"""The Open Inference Protocol v2 (KServe v2 / Triton HTTP) on the running service, called with Triton's
own client: health, metadata, inference equal to /predict's for a classifier and a tagger (NER),
requested outputs, the protocol's errors, and the API key."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from components.config import ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.serving.app import create_app
from components.serving.holder import ServedModel
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import LABELS, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures

NAME = "tunegate-tiny"
TEXTS = ["the film was great and superb", "the plot was awful and boring", "a fine, moving film"]
NER_TEXTS = ["Mary Smith met Acme Corp in Berlin today", "nothing to see here", "Paris welcomed John Brown"]
LIMITS = ServiceSettings(max_texts_per_request=8, max_chars_per_text=200, max_body_bytes=8192)


def served(predictor, version: str = "7") -> ServedModel:
    return ServedModel(predictor, {"model_name": NAME, "model_version": version})


@pytest.fixture(scope="module")
def classifier_server(tiny_onnx_export):
    app = create_app(served(OnnxTextClassifier(tiny_onnx_export.out_dir)), LIMITS)
    with BackgroundServer(app) as server:
        yield server


def client_of(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def text_input(texts: list[str], binary: bool = False) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    return tensor


def wanted(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def as_strings(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def predicted(server, texts: list[str]) -> list[dict]:
    answer = httpx.post(f"{server.url}/predict", json={"texts": texts}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def test_the_server_and_the_model_are_live_ready_and_described(classifier_server):
    client = client_of(classifier_server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "tunegate"
    assert client.is_model_ready(NAME) and client.is_model_ready(NAME, "7")
    assert not client.is_model_ready("another-model")
    described = client.get_model_metadata(NAME)
    assert (described["name"], described["versions"], described["platform"]) == (NAME, ["7"], "onnxruntime_onnx")
    assert described["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in described["outputs"]] == ["label", "score", "scores"]


@pytest.mark.parametrize("binary", [False, True], ids=["json-data", "binary-data"])
def test_infer_answers_what_predict_answers(classifier_server, binary):
    client = client_of(classifier_server)
    result = client.infer(NAME, [text_input(TEXTS, binary)], outputs=wanted("label", "score", "scores"),
                          request_id="req-1")
    expected = predicted(classifier_server, TEXTS)
    response = result.get_response()
    assert (response["id"], response["model_name"], response["model_version"]) == ("req-1", NAME, "7")
    assert as_strings(result.as_numpy("label")) == [p["label"] for p in expected]
    assert set(as_strings(result.as_numpy("label"))) == set(LABELS)  # both classes: not a constant answer
    assert result.as_numpy("score").tolist() == pytest.approx([p["score"] for p in expected], abs=1e-9)
    for scores, prediction in zip(as_strings(result.as_numpy("scores")), expected):
        assert json.loads(scores) == pytest.approx(prediction["scores"], abs=1e-9)


def test_only_the_requested_outputs_come_back_and_versions_are_checked(classifier_server):
    client = client_of(classifier_server)
    result = client.infer(NAME, [text_input(TEXTS)], outputs=wanted("label"), model_version="7")
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("score") is None
    everything = client.infer(NAME, [text_input(TEXTS[:1])])  # none requested: all of them
    assert [o["name"] for o in everything.get_response()["outputs"]] == ["label", "score", "scores"]
    with pytest.raises(InferenceServerException) as refused:
        client.infer(NAME, [text_input(TEXTS)], model_version="6")
    assert refused.value.status() == "404"


def infer_raw(server, body: dict, name: str = NAME, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{name}/infer", json=body, headers=headers, timeout=30)


def bytes_input(data: list, shape: list[int] | None = None, name: str = "text", datatype: str = "BYTES") -> dict:
    return {"inputs": [{"name": name, "shape": shape if shape is not None else [len(data)], "datatype": datatype,
                        "data": data}]}


@pytest.mark.parametrize("body, status, says", [
    (bytes_input(["x"], name="texts"), 400, "input 'texts' is unknown"),
    (bytes_input(["x"], datatype="FP32"), 400, "must be BYTES"),
    (bytes_input(["x", "y"], shape=[3]), 400, "shape [3] but 2 elements"),
    (bytes_input([1, 2]), 400, "every text must be a string"),
    (bytes_input([]), 400, "is empty"),
    ({"inputs": "text"}, 400, "not an inference request"),
    ({**bytes_input(["x"]), "outputs": [{"name": "entities"}]}, 400, "unknown"),
    (bytes_input(["x"] * 9), 413, "at most 8"),
    (bytes_input(["x" * 201]), 413, "at most 200"),
])
def test_a_bad_request_gets_a_4xx_in_the_protocols_error_shape(classifier_server, body, status, says):
    answer = infer_raw(classifier_server, body)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and says in answer.json()["error"]


def test_an_unknown_model_is_a_404_and_the_service_is_unharmed(classifier_server):
    answer = infer_raw(classifier_server, bytes_input(["x"]), name="not-served")
    assert answer.status_code == 404 and "not-served" in answer.json()["error"]
    assert httpx.get(f"{classifier_server.url}/v2/models/not-served").status_code == 404
    metrics = httpx.get(f"{classifier_server.url}/metrics").text
    assert 'tunegate_requests_total{endpoint="/v2/models/infer",status="404"}' in metrics  # no label per name


def test_the_openapi_document_describes_the_protocol(classifier_server):
    document = httpx.get(f"{classifier_server.url}/openapi.json").json()
    assert {"/v2", "/v2/models/{name}", "/v2/models/{name}/infer", "/v2/health/ready"} <= set(document["paths"])
    body = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert "inputs" in body["schema"]["properties"] and "$ref" not in json.dumps(body["schema"])


def test_the_api_key_is_asked_for_as_on_predict(tiny_onnx_export, monkeypatch):
    monkeypatch.setenv("TUNEGATE_TEST_KEYS", "oip-key")
    settings = LIMITS.model_copy(update={"api_key_env": "TUNEGATE_TEST_KEYS"})
    app = create_app(served(OnnxTextClassifier(tiny_onnx_export.out_dir)), settings)
    with BackgroundServer(app) as server:
        client = client_of(server)
        assert client.is_server_live() and client.is_model_ready(NAME)  # health stays open, as /health does
        with pytest.raises(InferenceServerException) as refused:
            client.infer(NAME, [text_input(TEXTS)], outputs=wanted("label"))
        assert refused.value.status() == "401"
        wrong = infer_raw(server, bytes_input(TEXTS), headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "the API key is not accepted"}
        result = client.infer(NAME, [text_input(TEXTS)], outputs=wanted("label"),
                              headers={"Authorization": "Bearer oip-key"})
        assert as_strings(result.as_numpy("label")) == [p["label"] for p in predicted_with_key(server, TEXTS)]


def predicted_with_key(server, texts: list[str]) -> list[dict]:
    answer = httpx.post(f"{server.url}/predict", json={"texts": texts}, headers={"X-API-Key": "oip-key"}, timeout=30)
    return answer.json()["predictions"]


# --- a token classifier (NER) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tagger_server(tmp_path_factory):
    from components.export.predictor import OnnxTokenTagger
    from components.export.to_onnx import export_onnx
    from tests.test_ner_model import MAX_LENGTH, train_tiny_tagger
    from tests.tiny import build_tiny_base_model, ner_corpus

    base = build_tiny_base_model(tmp_path_factory.mktemp("oip-ner-base"), ner_corpus())
    model_dir: Path = train_tiny_tagger(base, tmp_path_factory.mktemp("oip-ner-model"), steps=150)
    export = export_onnx(model_dir, tmp_path_factory.mktemp("oip-ner-onnx") / "int8", max_length=MAX_LENGTH)
    app = create_app(served(OnnxTokenTagger(export.out_dir), "2"), LIMITS)
    with BackgroundServer(app) as server:
        yield server


def test_a_tagger_answers_entities_equal_to_predicts(tagger_server):
    client = client_of(tagger_server)
    assert [o["name"] for o in client.get_model_metadata(NAME)["outputs"]] == ["entities"]
    result = client.infer(NAME, [text_input(NER_TEXTS)], outputs=wanted("entities"))
    entities = [json.loads(e) for e in as_strings(result.as_numpy("entities"))]
    expected = [p["entities"] for p in predicted(tagger_server, NER_TEXTS)]
    assert any(expected), "the tiny tagger found no entity: the comparison would prove little"
    assert len(entities) == len(expected)
    for got, want in zip(entities, expected):
        assert [{k: v for k, v in e.items() if k != "score"} for e in got] == \
               [{k: v for k, v in e.items() if k != "score"} for e in want]
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want], abs=1e-9)
    refused = infer_raw(tagger_server, {**bytes_input(NER_TEXTS), "outputs": [{"name": "label"}]})
    assert refused.status_code == 400 and "entities" in refused.json()["error"]
