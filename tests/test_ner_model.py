"""Token classification (NER) end to end on a tiny model: fine-tune, export (int8 and fp32), parity,
the ONNX tagger on words and on raw text, evaluation on a split CSV, and a real HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from components.config import iob2_tags
from components.entities import entity_scores, split_words
from tests.tiny import build_tiny_base_model, ner_corpus, ner_records

ENTITY_TYPES = ["PER", "ORG", "LOC", "MISC"]  # MISC never occurs in the tiny data
TAGS = iob2_tags(ENTITY_TYPES)
MAX_LENGTH = 64


def train_tiny_tagger(base_dir: Path, out_dir: Path, *, steps: int = 300, seed: int = 0) -> Path:
    """Fine-tune a token classifier on easy NER sentences, labels on each word's first sub-token."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForTokenClassification.from_pretrained(
        str(base_dir), num_labels=len(TAGS), id2label=dict(enumerate(TAGS)),
        label2id={tag: i for i, tag in enumerate(TAGS)}, use_safetensors=True)
    records = ner_records(768, seed=seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    batch_size = 32
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small only lose from threads on a shared machine
    try:
        for step in range(steps):
            start = (step * batch_size) % len(records)
            batch_records = records[start:start + batch_size]
            batch = tokenizer([r["tokens"] for r in batch_records], is_split_into_words=True, padding=True,
                              truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            targets = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)
            for row, record in enumerate(batch_records):
                previous = None
                for position, word in enumerate(batch.word_ids(row)):
                    if word is not None and word != previous:
                        targets[row, position] = TAGS.index(record["tags"][word])
                    previous = word
            loss = model(**batch, labels=targets).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def ner_split_frame(records: list[dict]) -> pd.DataFrame:
    """A test split as the pipeline writes it: space-joined words and tags."""
    return pd.DataFrame({"id": [f"s{i}" for i in range(len(records))],
                         "text": [" ".join(r["tokens"]) for r in records],
                         "label": [" ".join(r["tags"]) for r in records]})


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory) -> Path:
    base = build_tiny_base_model(tmp_path_factory.mktemp("tiny-ner-base"), ner_corpus())
    return train_tiny_tagger(base, tmp_path_factory.mktemp("tiny-ner-model"))


@pytest.fixture(scope="module")
def int8_export(tagger_dir, tmp_path_factory):
    from components.export.to_onnx import export_onnx

    return export_onnx(tagger_dir, tmp_path_factory.mktemp("ner-onnx") / "int8", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def fp32_export(tagger_dir, tmp_path_factory):
    from components.export.to_onnx import export_onnx

    return export_onnx(tagger_dir, tmp_path_factory.mktemp("ner-onnx") / "fp32", max_length=MAX_LENGTH,
                       quantize=False)


@pytest.fixture(scope="module")
def tagger(int8_export):
    from components.export.predictor import OnnxTokenTagger

    return OnnxTokenTagger(int8_export.out_dir)


@pytest.fixture(scope="module")
def held_out() -> list[dict]:
    return ner_records(150, seed=99)


# --- words with offsets --------------------------------------------------------------------------

def test_split_words_splits_punctuation_and_keeps_offsets():
    text = "  Mary met O'Neill in  the U.S., (Berlin)!  Germany's 3.5%"
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Mary", "met", "O'Neill", "in", "the", "U.S.", ",", "(", "Berlin", ")",
                                        "!", "Germany", "'s", "3.5", "%"]
    assert all(text[start:end] == word for word, start, end in words)
    assert split_words("") == [] and split_words(" \t\n ") == []


# --- export --------------------------------------------------------------------------------------

def test_export_records_the_task_and_tags(int8_export, fp32_export):
    from components.export.predictor import read_model_card

    for result, precision in ((int8_export, "int8"), (fp32_export, "fp32")):
        card = read_model_card(result.out_dir)
        assert card.task == result.task == "token-classification"
        assert card.labels == result.labels == TAGS
        assert card.entity_types == result.entity_types == ENTITY_TYPES
        assert card.precision == precision
    assert int8_export.int8_bytes < int8_export.fp32_bytes
    # fp32 ships the fused graph; per-token int8 rewrites the plain one (fused attention hides Q, K, V).
    assert fp32_export.graph_optimized and fp32_export.fused_operators.get("Attention", 0) >= 1
    assert int8_export.quantization == read_model_card(int8_export.out_dir).quantization == "per-token"
    assert not int8_export.graph_optimized


def test_logits_have_dynamic_batch_and_sequence_axes(fp32_export):
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp32_export.model_path), providers=["CPUExecutionProvider"])
    assert list(session.get_outputs()[0].shape)[:2] == ["batch", "sequence"]
    for batch, length in ((1, 3), (5, 17)):
        feed = {node.name: (pd.DataFrame([[1] * length] * batch).to_numpy("int64")) for node in session.get_inputs()}
        assert session.run(None, feed)[0].shape == (batch, length, len(TAGS))


def test_load_predictor_and_torch_loader_pick_the_token_classes(tagger_dir, int8_export):
    from components.export.predictor import (
        ModelCard,
        OnnxTextClassifier,
        OnnxTokenTagger,
        load_predictor,
    )
    from components.model.modeling import load_torch_model, saved_model_task

    assert isinstance(load_predictor(int8_export.out_dir), OnnxTokenTagger)
    with pytest.raises(ValueError, match="token-classification"):
        OnnxTextClassifier(int8_export.out_dir)
    assert saved_model_task(tagger_dir) == "token-classification"
    model, _ = load_torch_model(tagger_dir)
    assert type(model).__name__ == "BertForTokenClassification"
    old_card = {"labels": ["a", "b"], "max_length": 8, "precision": "int8", "opset": 17, "input_names": ["input_ids"]}
    assert ModelCard.model_validate(old_card).task == "sequence-classification"


# --- parity --------------------------------------------------------------------------------------

def test_parity_int8_and_fp32(tagger_dir, int8_export, fp32_export, held_out):
    from components.export.parity import check_parity

    frame = ner_split_frame(held_out)
    texts, labels = frame["text"].tolist(), frame["label"].tolist()
    int8 = check_parity(tagger_dir, int8_export.out_dir, texts, labels, max_length=MAX_LENGTH, batch_size=32)
    fp32 = check_parity(tagger_dir, fp32_export.out_dir, texts, labels, max_length=MAX_LENGTH, batch_size=32)
    print(f"\nint8 parity: {int8.model_dump()}\nfp32 parity: {fp32.model_dump()}")
    for report in (int8, fp32):
        assert report.task == "token-classification" and report.metric == "entity_f1"
        assert report.n == len(held_out)
        assert report.torch_accuracy >= 0.9  # entity F1 of the PyTorch model against gold
        assert report.failures(min_agreement=0.95, max_accuracy_drop=0.02) == []
    assert fp32.agreement == 1.0 and fp32.tag_agreement == 1.0 and fp32.max_abs_prob_diff < 1e-3
    assert int8.precision == "int8" and int8.tag_agreement >= 0.98


def test_parity_refuses_mismatched_words_and_tags(tagger_dir, int8_export):
    from components.export.parity import check_parity

    with pytest.raises(ValueError, match="2 words but 1 tags"):
        check_parity(tagger_dir, int8_export.out_dir, ["Mary visited"], ["B-PER"], max_length=MAX_LENGTH)
    with pytest.raises(ValueError, match="not among the model's tags"):
        check_parity(tagger_dir, int8_export.out_dir, ["Mary"], ["B-FOO"], max_length=MAX_LENGTH)


# --- the ONNX tagger ---------------------------------------------------------------------------------

def test_predict_words_matches_gold(tagger, held_out):
    predicted = tagger.predict_words([r["tokens"] for r in held_out], batch_size=16)
    scores = entity_scores([r["tags"] for r in held_out], predicted, tagger.entity_types)
    assert scores["entity_f1"] >= 0.9, scores
    assert tagger.labels == TAGS and tagger.entity_types == ENTITY_TYPES


def test_predict_words_edge_cases(tagger):
    long_sentence = ["visited"] * 200 + ["Paris"]  # beyond max_length: the cut-off words are O
    tags = tagger.predict_words([[], ["Mary"], long_sentence], batch_size=3)
    assert tags[0] == [] and len(tags[1]) == 1 and len(tags[2]) == len(long_sentence)
    assert tags[2][-1] == "O" and set(tags[2][MAX_LENGTH:]) == {"O"}
    assert tagger.predict_words([]) == []
    with pytest.raises(ValueError):
        tagger.predict_words(["not", "split"])  # type: ignore[list-item]


def _entities(prediction: dict) -> list[tuple[str, str]]:
    return [(e["type"], e["text"]) for e in prediction["entities"]]


def test_predict_raw_text_gives_entities_with_exact_offsets(tagger):
    texts = [
        "John Smith visited Paris.",
        "Mary  met   Ali Khan in  Tokyo, with Acme Corp!",
        "the people said today .",
        "",
        "   ",
        "(Globex) said: Wei visited Berlin...",
    ]
    predictions = tagger.predict(texts, batch_size=4)
    assert len(predictions) == len(texts)
    for text, prediction in zip(texts, predictions):
        for entity in prediction["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"]
            assert entity["text"] == entity["text"].strip() and entity["text"][-1] not in ".,!)"
            assert 0 < entity["score"] <= 1
    assert _entities(predictions[0]) == [("PER", "John Smith"), ("LOC", "Paris")]
    assert predictions[0]["entities"][1]["start"] == 19 and predictions[0]["entities"][1]["end"] == 24
    assert _entities(predictions[1]) == [("PER", "Mary"), ("PER", "Ali Khan"), ("LOC", "Tokyo"), ("ORG", "Acme Corp")]
    assert predictions[1]["entities"][1]["text"] == "Ali Khan"  # the single space between its words
    assert predictions[2]["entities"] == [] and predictions[3]["entities"] == [] and predictions[4]["entities"] == []
    assert _entities(predictions[5]) == [("ORG", "Globex"), ("PER", "Wei"), ("LOC", "Berlin")]


# --- evaluation ----------------------------------------------------------------------------------

def test_score_onnx_dir_on_an_ner_split(tagger, int8_export, held_out, tmp_path):
    from components.export.scoring import score_onnx_dir

    test_csv = tmp_path / "test.csv"
    ner_split_frame(held_out).to_csv(test_csv, index=False)
    metrics = score_onnx_dir(int8_export.out_dir, test_csv, ENTITY_TYPES)
    assert metrics["n"] == len(held_out) and metrics["entity_f1"] >= 0.9
    # Per-sentence counts for the gate's paired comparison: they give the same entity F1 and word accuracy.
    from components.lifecycle.paired import OUTCOMES, metric_value

    assert metrics[OUTCOMES]["ids"] == ner_split_frame(held_out)["id"].astype(str).tolist()
    for metric in ("entity_f1", "accuracy", "macro_f1"):
        assert metric_value(metrics[OUTCOMES], metric) == pytest.approx(metrics[metric])
    assert set(metrics["per_class"]) == set(ENTITY_TYPES) and metrics["per_class"]["PER"]["f1"] >= 0.9
    with pytest.raises(ValueError, match="entity types"):
        score_onnx_dir(int8_export.out_dir, test_csv, ["PER", "LOC"])


def test_torch_evaluation_writes_metrics_predictions_and_png(tagger_dir, held_out, tmp_path):
    from components.model.evaluate import (
        evaluate_token_frame,
        predict_tags_torch,
        write_evaluation,
    )
    from components.model.modeling import load_torch_model

    model, tokenizer = load_torch_model(tagger_dir)
    frame = ner_split_frame(held_out)
    predicted = predict_tags_torch(model, tokenizer, [r["tokens"] for r in held_out], MAX_LENGTH, batch_size=32)
    assert [len(p) for p in predicted] == [len(r["tokens"]) for r in held_out]
    metrics, predictions = evaluate_token_frame(frame, predicted, ENTITY_TYPES)
    assert metrics["entity_f1"] >= 0.9 and metrics["task"] == "token-classification"
    write_evaluation(metrics, predictions, tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["entity_f1"] == pytest.approx(metrics["entity_f1"])
    assert saved["confusion_matrix"]["labels"][:len(TAGS)] == TAGS
    written = pd.read_csv(tmp_path / "eval" / "predictions.csv", keep_default_na=False)
    assert list(written["id"]) == list(frame["id"]) and written["correct"].mean() >= 0.8
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000


# --- HTTP ------------------------------------------------------------------------------------------

def test_http_service_answers_with_entities(tagger, tmp_path):
    from components.config import ServiceSettings
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import BackgroundServer

    log = tmp_path / "predictions.jsonl"
    settings = ServiceSettings(prediction_log=log, prediction_log_sample_rate=1.0)
    app = create_app(ServedModel(tagger, {"model_name": "tiny-ner", "model_version": "5"}), settings)
    texts = ["John Smith visited Paris.", "the people said today ."]
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        predicted = client.post("/predict", json={"texts": texts})
        invoked = client.post("/invocations", json={"inputs": texts})
        split = client.post("/invocations", json={"dataframe_split": {"columns": ["text"], "data": [[texts[0]]]}})
        single = client.post("/predict", json={"text": "Mary met Wei in Lagos"})
        metadata = client.get("/metadata").json()
        metrics = client.get("/metrics").text
        documented = client.get("/openapi.json").json()
    answer = documented["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/EntityPredictions")  # the document describes entities for an NER model
    assert set(documented["components"]["schemas"]["Entity"]["properties"]) == {"text", "type", "start", "end",
                                                                                "score"}
    for response in (predicted, invoked, split, single):
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == "5" == response.json()["model_version"]
    body = predicted.json()
    print("\n/predict ->", json.dumps(body))
    assert body["predictions"] == invoked.json()["predictions"]
    assert _entities(body["predictions"][0]) == [("PER", "John Smith"), ("LOC", "Paris")]
    first = body["predictions"][0]["entities"][0]
    assert set(first) == {"text", "type", "start", "end", "score"}
    assert (first["text"], first["type"], first["start"], first["end"]) == ("John Smith", "PER", 0, 10)
    assert body["predictions"][1] == {"entities": []}
    # int8 dynamic quantization scales activations per batch: another batch, slightly other scores.
    alone = split.json()["predictions"][0]["entities"]
    assert [{k: e[k] for k in ("text", "type", "start", "end")} for e in alone] == [
        {k: e[k] for k in ("text", "type", "start", "end")} for e in body["predictions"][0]["entities"]]
    assert [e["score"] for e in alone] == pytest.approx([e["score"] for e in body["predictions"][0]["entities"]],
                                                        abs=0.01)
    assert _entities(single.json()["predictions"][0]) == [("PER", "Mary"), ("PER", "Wei"), ("LOC", "Lagos")]
    assert metadata["task"] == "token-classification"
    assert metadata["labels"] == TAGS and metadata["entity_types"] == ENTITY_TYPES
    from prometheus_client.parser import text_string_to_metric_families

    series = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(metrics) for s in family.samples}
    assert series[("tunegate_predictions_total", (("label", "entities"), ("version", "5")))] >= 1
    assert series[("tunegate_predictions_total", (("label", "no_entities"), ("version", "5")))] >= 1
    assert series[("tunegate_entities_total", (("type", "PER"), ("version", "5")))] >= 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 6 and all("entities" in line for line in lines)
    assert lines[0]["entities"][0]["type"] == "PER" and 0 < lines[0]["score"] <= 1
    logged = {line["text"]: line["label"] for line in lines}
    assert logged[texts[0]] == "B-PER I-PER O B-LOC O"  # the words' tags, as in an NER split's label column
    assert logged[texts[1]] == "O O O O O"


def test_evaluate_tokens_torch_in_one_call(tagger_dir, held_out):
    from components.model.evaluate import evaluate_tokens_torch
    from components.model.modeling import load_torch_model

    model, tokenizer = load_torch_model(tagger_dir)
    frame = ner_split_frame(held_out)
    metrics, predictions = evaluate_tokens_torch(model, tokenizer, frame, ENTITY_TYPES, MAX_LENGTH, batch_size=64)
    assert metrics["entity_f1"] >= 0.9 and metrics["n"] == len(frame)
    assert predictions["confidence"].between(0, 1).all() and len(predictions) == len(frame)


def test_the_mlflow_model_finds_the_entities_the_service_finds(int8_export, tagger, tmp_path):
    import mlflow
    from components.export.mlflow_model import save_mlflow_model
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import BackgroundServer

    texts = ["John Smith visited Paris.", "the people said today .", "Mary met Wei in Lagos"]
    path = save_mlflow_model(int8_export.out_dir, tmp_path / "model", card="# tiny NER\n")
    model = mlflow.pyfunc.load_model(str(path))
    answers = model.predict(pd.DataFrame({"text": texts}))
    assert list(answers.columns) == ["entities"]
    with BackgroundServer(create_app(ServedModel(tagger, {"model_version": "1"}))) as server:
        served = httpx.post(f"{server.url}/predict", json={"texts": texts}, timeout=30).json()["predictions"]
    assert answers["entities"].tolist() == [p["entities"] for p in served]
    assert _entities({"entities": answers["entities"].iloc[0]}) == [("PER", "John Smith"), ("LOC", "Paris")]
    output = model.metadata.get_output_schema().inputs[0]
    assert output.name == "entities" and "start" in str(output.type)
