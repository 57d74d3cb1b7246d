"""model.keep_layers: a student cut down to some of the base model's encoder layers, distilled from a teacher,
saved, exported to int8 ONNX, checked for parity and served, with its layers named in the export's card, the
service's /metadata and the registry's card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.fixtures_classifier import LABELS, held_out, tiny_classifier  # noqa: F401 (a fixture)

KEEP = [0, 2]


@pytest.fixture(scope="module")
def four_layer_base(tiny_base_model, tmp_path_factory) -> Path:
    """The tiny base's tokenizer and config with 4 encoder layers instead of 2."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig.from_pretrained(str(tiny_base_model))
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-bert-4")
    BertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(tiny_base_model)).save_pretrained(directory)
    return directory


def _weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_setting_is_validated():
    from pydantic import ValidationError

    from components.config.model import ModelParams

    assert ModelParams(base_model="x").keep_layers is None
    assert ModelParams(base_model="x", keep_layers=[1, 3, 5]).keep_layers == [1, 3, 5]
    for bad in ([], [2, 1], [1, 1], [-1, 2]):
        with pytest.raises(ValidationError, match="keep_layers"):
            ModelParams(base_model="x", keep_layers=bad)


def test_kept_layers_are_the_base_layers(four_layer_base):
    from transformers import BertModel

    from components.model.modeling import KEPT_LAYERS_ATTRIBUTE, load_classifier

    base = BertModel.from_pretrained(str(four_layer_base))
    model = load_classifier(str(four_layer_base), LABELS, keep_layers=KEEP)
    assert len(model.bert.encoder.layer) == 2 and model.config.num_hidden_layers == 2
    assert getattr(model.config, KEPT_LAYERS_ATTRIBUTE) == KEEP
    for ours, theirs in zip(model.bert.encoder.layer, KEEP):
        expected = _weights(base.encoder.layer[theirs])
        got = _weights(ours)
        assert set(got) == set(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    expected = _weights(base.embeddings)
    assert all(torch.equal(v, expected[k]) for k, v in _weights(model.bert.embeddings).items())


def test_an_index_past_the_base_is_refused(four_layer_base):
    from components.config import ConfigError
    from components.model.modeling import load_classifier

    with pytest.raises(ConfigError, match=r"model.keep_layers is \[0, 9\] but the base model has 4 layers"):
        load_classifier(str(four_layer_base), LABELS, keep_layers=[0, 9])


def test_a_model_without_an_encoder_layer_stack_is_refused():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from components.config import ConfigError
    from components.model.modeling import keep_encoder_layers

    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, hidden_dim=32, n_layers=2,
                                                                 n_heads=2, max_position_embeddings=32))
    with pytest.raises(ConfigError, match="model.keep_layers: a distilbert model has no encoder.layer"):
        keep_encoder_layers(model, [0])


def test_cut_down_student_distils_exports_passes_parity_and_serves_what_pytorch_predicts(
        four_layer_base, tiny_classifier, tmp_path):  # noqa: F811 - the imported fixture
    from components.export.parity import check_parity
    from components.export.predictor import MODEL_CARD, OnnxTextClassifier
    from components.export.to_onnx import export_onnx
    from components.lifecycle.model_card import render_model_card
    from components.lifecycle.tracking import layers_tag
    from components.model.distill import sequence_logits
    from components.model.modeling import KEPT_LAYERS_ATTRIBUTE, load_classifier, load_tokenizer, load_torch_model
    from components.model.train import Distillation, DistilledSplit, save_model, seed_everything, train_classifier
    from tests.tiny import sentiment_frame
    from tests.train_job import sentiment_splits, train_params

    # The teacher: the trained tiny classifier, labelling the training texts softly.
    teacher, teacher_tokenizer = load_torch_model(tiny_classifier)
    teacher_logits = sequence_logits(teacher, teacher_tokenizer, sentiment_frame(800, seed=3)["review"].tolist()[:640],
                                     32, 128)  # the texts sentiment_splits tokenizes, in its order
    tokenizer = load_tokenizer(str(four_layer_base))
    train, validation = sentiment_splits(tokenizer)
    distilled = DistilledSplit(train.input_ids, train.labels, train.batch_ids, teacher_logits=list(teacher_logits))
    seed_everything(11)
    model = load_classifier(str(four_layer_base), LABELS, keep_layers=KEEP)
    result, model = train_classifier(model, distilled, validation, LABELS, train_params(epochs=4),
                                     tokenizer.pad_token_id, distillation=Distillation(temperature=2.0, alpha=0.5))
    assert result.best_score >= 0.8, result.history
    model_dir = tmp_path / "model"
    save_model(model, tokenizer, model_dir)
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and saved[KEPT_LAYERS_ATTRIBUTE] == KEEP

    # Loaded again (evaluation, export, a start from the champion): 2 layers, never cut down again.
    reloaded, _ = load_torch_model(model_dir)
    assert len(reloaded.bert.encoder.layer) == 2
    again = load_classifier(str(model_dir), LABELS)
    assert len(again.bert.encoder.layer) == 2 and getattr(again.config, KEPT_LAYERS_ATTRIBUTE) == KEEP
    # A cut-down model cut down further records the layers of the original base.
    assert getattr(load_classifier(str(model_dir), LABELS, keep_layers=[1]).config, KEPT_LAYERS_ATTRIBUTE) == [2]

    export = export_onnx(model_dir, tmp_path / "onnx")
    card = json.loads((export.out_dir / MODEL_CARD).read_text())
    assert card["precision"] == "int8" and card["layers"] == 2 and card["base_layers"] == KEEP
    texts, labels = held_out(80)
    report = check_parity(model_dir, export.out_dir, texts, labels, batch_size=16)
    assert report.failures(min_agreement=0.95, max_accuracy_drop=0.02) == []
    fixed = texts[:16]
    with torch.no_grad():
        batch = tokenizer(fixed, padding=True, truncation=True, max_length=export.max_length, return_tensors="pt")
        torch_labels = [LABELS[i] for i in reloaded(**batch).logits.argmax(-1).tolist()]
    predictor = OnnxTextClassifier(export.out_dir)
    onnx_labels = [answer["label"] for answer in predictor.predict(fixed)]
    assert onnx_labels == torch_labels

    # The service answers what PyTorch predicts, and its /metadata names the layers.
    import httpx

    from components.config import ServiceSettings
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import BackgroundServer

    with BackgroundServer(create_app(ServedModel(predictor, {"model_version": "1"}), ServiceSettings())) as running, \
            httpx.Client(base_url=running.url, timeout=60) as http:
        metadata = http.get("/metadata").json()
        served = http.post("/predict", json={"texts": fixed}).json()["predictions"]
    assert metadata["layers"] == 2 and metadata["base_layers"] == KEEP
    assert [answer["label"] for answer in served] == torch_labels

    # The registered version's tags and card (layers_tag reads the train stage's saved config).
    class Layout:
        pass

    layout = Layout()
    layout.model_dir = model_dir
    tags = layers_tag(layout)  # type: ignore[arg-type]
    assert tags == {"layers": "2", "base_layers": "[0, 2]"}
    assert "- encoder layers: 2, the base model's layers `0`, `2` (model.keep_layers)" in render_model_card(
        "tiny", tags, {}, "gate passed")


def test_an_uncut_model_has_no_layers_tag(tiny_base_model, tmp_path):
    from components.lifecycle.model_card import render_model_card
    from components.lifecycle.tracking import layers_tag
    from components.model.modeling import load_classifier

    load_classifier(str(tiny_base_model), LABELS).save_pretrained(tmp_path)

    class Layout:
        model_dir = tmp_path

    assert layers_tag(Layout()) == {}  # type: ignore[arg-type]
    assert "encoder layers" not in render_model_card("tiny", {}, {}, "gate passed")


def test_train_stage_cuts_the_base_but_not_a_champion(four_layer_base, tmp_path):
    """The train stage's entry point: a base start keeps model.keep_layers of the base; a champion start goes
    on with the champion's layers, whatever model.keep_layers says."""
    import shutil

    from components.config import Params
    from components.data.preprocess import save_tokenized
    from components.layout import ProjectLayout
    from components.model.continual import START_MODEL, StartingPoint
    from components.model.modeling import KEPT_LAYERS_ATTRIBUTE, load_tokenizer
    from components.model.training_run import train_model, train_outputs
    from tests.project import tiny_params
    from tests.train_job import sentiment_splits

    layout = ProjectLayout(tmp_path)
    train, validation = sentiment_splits(load_tokenizer(str(four_layer_base)), n_train=160, n_validation=40)
    save_tokenized(train, layout.tokenized_file("train"))
    save_tokenized(validation, layout.tokenized_file("validation"))

    def run(keep: list[int]) -> dict:
        params = Params.model_validate(tiny_params(
            four_layer_base, model={"keep_layers": keep},
            train={"epochs": 1, "num_threads": 1, "checkpoint_every_steps": None}))
        train_model(layout, params, train_outputs(layout, params))
        return json.loads((layout.model_dir / "config.json").read_text())

    config = run(KEEP)
    assert config["num_hidden_layers"] == 2 and config[KEPT_LAYERS_ATTRIBUTE] == KEEP

    shutil.copytree(layout.model_dir, layout.start_dir / START_MODEL)
    StartingPoint(source="champion", base_model=str(four_layer_base), champion_version="1",
                  champion_batches=["old"]).write(layout.start_dir)
    config = run([1])
    assert config["num_hidden_layers"] == 2 and config[KEPT_LAYERS_ATTRIBUTE] == KEEP
