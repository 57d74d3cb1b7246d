"""data.template: refused when it cannot work, and applied the same way in training, evaluation, export
parity and serving: the served model (ONNX predictor, HTTP service, /explain) takes the raw text and
answers what PyTorch answers on the templated text."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from components.config import ConfigError, ServiceSettings, parse_params
from components.data.template import apply_template, template_refusal
from tests.fixtures_classifier import LABELS, held_out, tiny_classifier  # noqa: F401 - fixture

TEMPLATE = "Review: {text} (a film)"
RAW = ["the film was great and superb", "dull and boring, a waste of time", "a {curly} text"]


def params_with(template, task: str = "sequence-classification", labels=("negative", "positive")) -> dict:
    return {"task": task, "data": {"source": "x.csv", "labels": list(labels), "template": template},
            "model": {"base_model": "builtin:all-minilm-l6-v2"}}


@pytest.mark.parametrize("template, expected", [
    ("{review}", "exactly one {text}"),
    ("{text} {text}", "exactly one {text}"),
    ("Review: {text} by {author}", "'author'"),
    ("{text:>40}", "without a format spec"),
    ("Review: {text", "not a valid template"),
    ("  {text} ", "adds nothing"),
])
def test_a_template_that_cannot_work_is_refused_with_what_to_write(template, expected):
    with pytest.raises(ConfigError) as refused:
        parse_params(params_with(template))
    message = str(refused.value)
    assert "data.template" in message and expected in message and 'e.g. "Review: {text}"' in message


def test_token_classification_refuses_a_template_and_says_why():
    with pytest.raises(ConfigError) as refused:
        parse_params(params_with("Sentence: {text}", task="token-classification", labels=("PER", "LOC")))
    assert "sequence-classification" in str(refused.value) and "offsets" in str(refused.value)
    assert parse_params(params_with(None, task="token-classification", labels=("PER", "LOC"))).data.template is None


def test_apply_template_keeps_the_text_verbatim_and_unescapes_literal_braces():
    assert parse_params(params_with(TEMPLATE)).data.template == TEMPLATE
    assert apply_template(None, RAW) == RAW
    assert apply_template("{{x}} {text}!", ["a {text} b"]) == ["{x} a {text} b!"]
    assert apply_template(TEMPLATE, RAW)[2] == "Review: a {curly} text (a film)"
    assert template_refusal(TEMPLATE) is None
    with pytest.raises(ValueError, match="exactly one"):
        apply_template("{review}", RAW)


def test_the_tokenized_splits_and_the_teacher_read_the_templated_text(tiny_base_model):
    import pandas as pd

    from components.data.preprocess import tokenize_split
    from components.model.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_base_model))
    frame = pd.DataFrame({"text": RAW[:2], "label": LABELS})
    split = tokenize_split(frame, tokenizer, LABELS, 32, template=TEMPLATE)
    assert split.input_ids == tokenizer(apply_template(TEMPLATE, RAW[:2]), truncation=True, max_length=32)["input_ids"]
    assert split.input_ids != tokenize_split(frame, tokenizer, LABELS, 32).input_ids


@pytest.fixture(scope="module")
def templated(tiny_classifier, tmp_path_factory):  # noqa: F811 - the imported fixture
    """The session's tiny sentiment classifier and its fp32 export with the template on its card (fp32:
    the predictor's logits can be compared with PyTorch's closely)."""
    from components.export.to_onnx import export_onnx

    result = export_onnx(tiny_classifier, tmp_path_factory.mktemp("templated") / "onnx", precision="fp32",
                         max_length=64, template=TEMPLATE, calibration_texts=RAW)
    return tiny_classifier, result.out_dir


@pytest.fixture(scope="module")
def predictor(templated):
    from components.export.predictor import OnnxTextClassifier

    return OnnxTextClassifier(templated[1])


def torch_logits_of(model_dir: Path, texts: list[str]) -> np.ndarray:
    from components.model.evaluate import predict_logits_torch
    from components.model.modeling import load_torch_model

    model, tokenizer = load_torch_model(model_dir)
    return predict_logits_torch(model, tokenizer, texts, 64)


def test_the_card_carries_the_template_and_the_predictor_applies_it_to_raw_text(templated, predictor):
    from components.export.predictor import MODEL_CARD

    model_dir, onnx_dir = templated
    assert json.loads((onnx_dir / MODEL_CARD).read_text())["template"] == TEMPLATE
    served = predictor.predict_logits(RAW)
    on_templated = torch_logits_of(model_dir, apply_template(TEMPLATE, RAW))
    on_raw = torch_logits_of(model_dir, RAW)
    np.testing.assert_allclose(served, on_templated, rtol=1e-4, atol=1e-4)
    assert np.abs(served - on_raw).max() > 0.05  # the template changes what the model reads
    # Same keys for the same raw text: the served caches key on what the model sees.
    assert predictor.input_keys(RAW[:1]) == [tuple(predictor._tokenizer(apply_template(TEMPLATE, RAW[:1]),
                                                                          truncation=True, max_length=64)["input_ids"][0])]


def test_the_teacher_scores_the_templated_text(templated):
    from components.model.distill import sequence_logits
    from components.model.modeling import load_torch_model

    model_dir, _ = templated
    model, tokenizer = load_torch_model(model_dir)
    np.testing.assert_allclose(sequence_logits(model, tokenizer, RAW, 64, 8, template=TEMPLATE),
                               torch_logits_of(model_dir, apply_template(TEMPLATE, RAW)), atol=1e-5)


def test_parity_compares_pytorch_on_templated_text_with_the_predictor_on_raw_text(templated):
    from components.export.parity import check_parity

    model_dir, onnx_dir = templated
    texts, labels = held_out(24)
    report = check_parity(model_dir, onnx_dir, texts, labels, max_length=64)
    assert report.agreement == 1.0 and report.max_abs_prob_diff < 1e-4


def test_the_http_service_and_explain_take_raw_text(predictor):
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import BackgroundServer

    settings = ServiceSettings(explain=True, explain_max_chars=200, explain_max_evals=40)
    with BackgroundServer(create_app(ServedModel(predictor, {"model_version": "1"}), settings)) as running, \
            httpx.Client(base_url=running.url, timeout=60) as http:
        assert running.url.startswith("http://127.0.0.1:")
        answer = http.post("/predict", json={"texts": RAW})
        assert answer.status_code == 200, answer.text
        for served, direct in zip(answer.json()["predictions"], predictor.predict(RAW)):
            assert served["label"] == direct["label"]
            assert served["scores"] == pytest.approx(direct["scores"], abs=1e-6)
        explained = http.post("/explain", json={"text": RAW[0], "max_evals": 20})
        assert explained.status_code == 200, explained.text
        words = explained.json()["explanations"][0]["words"]
        assert http.get("/metadata").json()["template"] == TEMPLATE  # what a client's text goes into
    # Attributions are over the client's words, with offsets into the client's text: no template word.
    assert [w["word"] for w in words] == RAW[0].split()
    assert all(RAW[0][w["start"]:w["end"]] == w["word"] for w in words)


def test_the_model_card_and_the_run_record_the_template():
    from components.lifecycle.model_card import render_model_card
    from components.lifecycle.tracking import flatten, model_params

    params = parse_params(params_with(TEMPLATE))
    assert flatten(model_params(params))["data.template"] == TEMPLATE  # logged as an MLflow param
    tags = {"task": params.task, "labels": LABELS, "params": model_params(params)}
    for as_tagged in (tags, {**tags, "params": json.dumps(tags["params"])}):  # as written, and read back
        card = render_model_card("tiny", as_tagged, {}, "passed")
        assert f"Input template: `{TEMPLATE}`" in card and "send the raw text" in card
    plain = {**tags, "params": model_params(parse_params(params_with(None)))}
    assert "Input template" not in render_model_card("tiny", plain, {}, "passed")


def test_cards_and_exports_refuse_a_template_they_cannot_serve(templated, tmp_path):
    from components.export.predictor import ModelCard
    from components.export.to_onnx import ExportError, export_onnx

    card = {"labels": LABELS, "max_length": 8, "precision": "fp32", "opset": 17, "input_names": ["input_ids"]}
    assert ModelCard(**card).template is None  # older cards: the text as it is
    with pytest.raises(ValueError, match="exactly one"):
        ModelCard(**card, template="{review}")
    with pytest.raises(ValueError, match="offsets"):
        ModelCard(**{**card, "labels": ["O", "B-PER", "I-PER"]}, task="token-classification", template=TEMPLATE)
    with pytest.raises(ExportError, match="exactly one"):
        export_onnx(templated[0], tmp_path / "bad", precision="fp32", template="{text} {text}")
    assert not (tmp_path / "bad").exists()
