"""serve.log_pii: personal data in what the service writes down (the prediction log, the shadow's disagreements)
is redacted, left out or kept, while the answers stay those of the texts as sent. A real service on 127.0.0.1,
the tiny exported classifier, real log files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from components.config import ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.privacy.pii import PiiFinding
from components.serving.app import create_app
from components.serving.holder import ModelHolder, ServedModel
from components.serving.prediction_log import (
    LogScreen,
    PredictionLog,
    ScreenedText,
    redacted_prediction,
    scanner_factory,
)
from components.serving.server import BackgroundServer
from components.serving.shadow import ShadowRunner, read_disagreements
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.test_shadow import Flipped

METADATA = {"model_name": "tunegate-tiny", "model_version": "3"}
# One value per type, each as a scanner must find it: the card passes Luhn, the IBAN mod 97.
SEEDED = {"EMAIL": "maria.garcia@example.co.uk", "PHONE": "+44 7911 123456",
          "CREDIT_CARD": "4111 1111 1111 1111", "IBAN": "DE89 3704 0044 0532 0130 00"}
WITH_PII = [f"the film was great, mail me at {SEEDED['EMAIL']}",
            f"the plot was awful, call {SEEDED['PHONE']} about a refund",
            f"superb acting, I paid with card {SEEDED['CREDIT_CARD']}",
            f"boring and awful, refund me to {SEEDED['IBAN']} please"]
REDACTED = ["the film was great, mail me at <EMAIL>", "the plot was awful, call <PHONE> about a refund",
            "superb acting, I paid with card <CREDIT_CARD>", "boring and awful, refund me to <IBAN> please"]
CLEAN = ["the film was great and superb", "the plot was awful and boring"]
# Each PII text alone, a clean request, and a request mixing a clean text with one that holds personal data.
REQUESTS = [[text] for text in WITH_PII] + [CLEAN, [CLEAN[0], WITH_PII[0]]]


@pytest.fixture(scope="module")
def predictor(tiny_onnx_export) -> OnnxTextClassifier:
    return OnnxTextClassifier(tiny_onnx_export.out_dir)


class CountingFactory:
    """privacy:'s default scanner, counting its builds and the threads that built it."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self._build = scanner_factory()

    def __call__(self):
        self.threads.append(threading.current_thread().name)
        return self._build()


def serve_requests(predictor, log: Path, requests: list[list[str]], *, factory=None,
                   **settings) -> tuple[list[dict], list[str]]:
    """The answers' bodies to `requests`, posted in order to a service logging every request to `log`, and the
    threads that built the scanner before the first request went out."""
    settings = ServiceSettings(prediction_log=log, prediction_log_sample_rate=1.0, **settings)
    factory = factory or CountingFactory()
    app = create_app(ServedModel(predictor, dict(METADATA)), settings, pii_scanner=factory)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        built_at_start = list(getattr(factory, "threads", []))
        answers = []
        for texts in requests:
            response = client.post("/predict", json={"texts": texts})
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers, built_at_start


def log_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def assert_no_seeded_value(text: str) -> None:
    for value in SEEDED.values():
        assert value not in text and value.replace(" ", "") not in text, value


def assert_answers_are_the_models(predictor, answers: list[dict]) -> None:
    """The client got the model's answer to the text as sent, whatever the log did with it."""
    for texts, answer in zip(REQUESTS, answers):
        expected = predictor.predict(texts)
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in expected]
        assert [p["score"] for p in answer["predictions"]] == pytest.approx([p["score"] for p in expected], abs=1e-6)


def test_redact_is_the_default_logs_placeholders_and_counts_and_answers_the_texts_as_sent(predictor, tmp_path):
    log = tmp_path / "predictions.jsonl"
    factory = CountingFactory()
    answers, built_at_start = serve_requests(predictor, log, REQUESTS, factory=factory)
    # Built once, on the prediction-log writer thread, before the service took its first request.
    assert built_at_start == factory.threads and len(factory.threads) == 1
    assert factory.threads[0].startswith("tunegate-prediction-log")
    assert_no_seeded_value(log.read_text(encoding="utf-8"))
    assert_answers_are_the_models(predictor, answers)
    lines = log_lines(log)
    assert [line["text"] for line in lines] == REDACTED + CLEAN + [CLEAN[0], REDACTED[0]]
    sent_labels = [p["label"] for answer in answers for p in answer["predictions"]]
    assert [line["label"] for line in lines] == sent_labels  # the model's labels of the texts as sent
    assert [line.get("pii") for line in lines] == [{"EMAIL": 1}, {"PHONE": 1}, {"CREDIT_CARD": 1}, {"IBAN": 1},
                                                   None, None, None, {"EMAIL": 1}]


def test_drop_leaves_out_each_request_holding_personal_data_and_logs_the_rest(predictor, tmp_path):
    log = tmp_path / "predictions.jsonl"
    answers, _ = serve_requests(predictor, log, REQUESTS, log_pii="drop")
    assert_answers_are_the_models(predictor, answers)
    lines = log_lines(log)
    # The mixed request goes whole: its clean text is not logged either.
    assert [line["text"] for line in lines] == CLEAN
    assert [line["label"] for line in lines] == [p["label"] for p in answers[len(WITH_PII)]["predictions"]]
    assert all("pii" not in line for line in lines)


def test_keep_logs_the_texts_as_sent_and_builds_no_scanner(predictor, tmp_path):
    log = tmp_path / "predictions.jsonl"
    factory = CountingFactory()
    answers, _ = serve_requests(predictor, log, REQUESTS, factory=factory, log_pii="keep")
    assert factory.threads == []
    assert_answers_are_the_models(predictor, answers)
    assert [line["text"] for line in log_lines(log)] == [text for texts in REQUESTS for text in texts]
    assert all("pii" not in line for line in log_lines(log))


def test_no_prediction_log_builds_no_scanner(predictor):
    factory = CountingFactory()
    app = create_app(ServedModel(predictor, dict(METADATA)), ServiceSettings(), pii_scanner=factory)
    with BackgroundServer(app) as server:
        assert httpx.post(f"{server.url}/predict", json={"texts": WITH_PII}, timeout=30).status_code == 200
    assert factory.threads == []


def test_a_scanner_that_cannot_be_built_writes_nothing_and_answers_everyone(predictor, tmp_path):
    def broken():
        raise OSError("privacy.ner_model: no such export")

    log = tmp_path / "predictions.jsonl"
    answers, _ = serve_requests(predictor, log, REQUESTS[:2], factory=broken)
    assert [len(answer["predictions"]) for answer in answers] == [1, 1]
    assert not log.exists()  # nothing written unscreened


def shadow_disagreements(predictor, tmp_path: Path, policy: str) -> list[dict]:
    """The disagreements file of a service shadowed by a challenger that disagrees on every text."""
    path = tmp_path / "disagreements.jsonl"
    runner = ShadowRunner("challenger", 1.0, log_path=path)
    runner.set_model(ServedModel(Flipped(predictor), {"model_version": "4"}))
    app = create_app(ModelHolder(ServedModel(predictor, dict(METADATA))), ServiceSettings(log_pii=policy),
                     shadow=runner)
    texts = WITH_PII + CLEAN
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for text in texts:
            assert client.post("/predict", json={"texts": [text]}).status_code == 200
        deadline = time.monotonic() + 20
        while runner.stats().requests < len(texts) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert runner.stats().disagreed == len(texts)
    assert_no_seeded_value(path.read_text(encoding="utf-8"))
    return read_disagreements(path, last=100)


def test_the_shadows_disagreements_are_redacted(predictor, tmp_path):
    logged = shadow_disagreements(predictor, tmp_path, "redact")
    assert sorted(record["text"] for record in logged) == sorted(REDACTED + CLEAN)
    assert all(record["champion"]["label"] != record["challenger"]["label"] for record in logged)
    assert sorted(json.dumps(record.get("pii")) for record in logged) == sorted(
        json.dumps(counts) for counts in [{"EMAIL": 1}, {"PHONE": 1}, {"CREDIT_CARD": 1}, {"IBAN": 1}, None, None])


def test_drop_leaves_the_shadows_disagreements_holding_personal_data_out(predictor, tmp_path):
    logged = shadow_disagreements(predictor, tmp_path, "drop")
    assert sorted(record["text"] for record in logged) == sorted(CLEAN)


# --- a token classifier's logged offsets follow the redaction -------------------------------------------------

NER_TEXT = f"Ask Maria at {SEEDED['EMAIL']} today"
NER_ANSWER = {"entities": [
    {"text": "Maria", "type": "PER", "start": 4, "end": 9, "score": 0.9},
    # A model's entity over part of the address: it may itself be personal data.
    {"text": "maria.garcia", "type": "PER", "start": 13, "end": 25, "score": 0.6},
    {"text": "today", "type": "DATE", "start": 40, "end": 45, "score": 0.8}]}


def test_an_ner_answers_offsets_and_texts_move_into_the_redacted_text():
    assert NER_TEXT[40:45] == "today" and NER_TEXT[13:25] == "maria.garcia"
    email = PiiFinding("EMAIL", 13, 13 + len(SEEDED["EMAIL"]), 1.0, "EmailRecognizer")
    screened = ScreenedText("Ask Maria at <EMAIL> today", (email,))
    moved = redacted_prediction(NER_ANSWER, screened)["entities"]
    assert [(e["text"], e["start"], e["end"]) for e in moved] == [("Maria", 4, 9), ("<EMAIL>", 13, 20),
                                                                  ("today", 21, 26)]


def test_the_prediction_log_of_a_token_classifier_tags_the_redacted_words(tmp_path):
    log = tmp_path / "predictions.jsonl"
    PredictionLog(log, 1.0, screen=LogScreen("redact")).write("5", [NER_TEXT], [NER_ANSWER])
    raw = log.read_text(encoding="utf-8")
    assert_no_seeded_value(raw)
    assert "maria.garcia" not in raw
    [line] = log_lines(log)
    assert line["text"] == "Ask Maria at <EMAIL> today" and line["pii"] == {"EMAIL": 1}
    # The tags are those of the redacted text's words, so monitoring and the labelling queue line them up.
    assert line["label"] == "O B-PER O B-PER I-PER I-PER B-DATE"
    assert [(e["start"], e["end"]) for e in line["entities"]] == [(4, 9), (13, 20), (21, 26)]
