"""Prompt learning (train.peft prefix and p-tuning) on tiny models, classification and NER: it learns with
the base frozen, saves the plain model plus its prompt, exports to int8 ONNX that passes the parity gate,
and the served predictions are PyTorch's. Also: what is refused, resuming a killed run, MPNet, and the
replaced train.lora.enabled key."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from components.config import ConfigError, ExportParams, iob2_tags
from tests.tiny import sentiment_frame
from tests.tiny_mpnet import build_tiny_mpnet_model
from tests.train_job import ENTITY_TYPES, LABELS, ner_splits, sentiment_splits, train_params

PROMPT = {"virtual_tokens": 4}


def _warm_base(base: Path, out: Path) -> Path:
    """The tiny classification base after a short full fine-tuning on the task, saved without its head.

    A soft prompt steers what a pretrained model computes; the tiny random base computes nearly nothing
    at [CLS]: its pooled output varies by 0.03% across texts (weights drawn at std 0.02), far below its
    dropout noise, so neither a prompt nor a head learns anything in front of it (measured: the loss
    stays at 0.69). After 6 epochs of full fine-tuning on 96 rows it does; the head is left out, so the
    prompted run starts at chance with a fresh head. The NER base needs no warming: each token's own
    features carry its word."""
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import seed_everything, train_classifier

    tokenizer = load_tokenizer(str(base))
    train, validation = sentiment_splits(tokenizer, 96, 16)
    seed_everything(11)
    _, model = train_classifier(load_classifier(str(base), LABELS), train, validation, LABELS,
                                train_params(epochs=6, batch_size=8, learning_rate=1e-2), tokenizer.pad_token_id)
    model.base_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bases(tiny_base_model, tiny_ner_base_model, tmp_path_factory) -> dict[bool, Path]:
    return {False: _warm_base(tiny_base_model, tmp_path_factory.mktemp("warm") / "cls"), True: tiny_ner_base_model}


def _train(base: Path, method: str, token_level: bool, **overrides):
    """(result, trained model, the model before training's base weights, tokenizer, validation split)."""
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import seed_everything, train_classifier

    tokenizer = load_tokenizer(str(base))
    if token_level:
        labels, (train, validation) = iob2_tags(ENTITY_TYPES), ner_splits(tokenizer, 96, 24)
    else:
        labels, (train, validation) = LABELS, sentiment_splits(tokenizer, 96, 24)
    seed_everything(11)
    model = load_classifier(str(base), labels, token_level=token_level)
    before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    values = {"peft": method, "prompt": PROMPT, "epochs": 6, "learning_rate": 1e-1 if token_level else 5e-2,
              "batch_size": 8, "warmup_ratio": 0.0, **overrides}
    result, trained = train_classifier(model, train, validation, labels, train_params(**values),
                                       tokenizer.pad_token_id, entity_types=ENTITY_TYPES if token_level else None)
    return result, trained, before, tokenizer


@pytest.mark.parametrize("method", ["prefix", "p-tuning"])
@pytest.mark.parametrize("token_level", [False, True], ids=["classification", "ner"])
def test_prompt_learns_with_the_base_frozen_exports_and_serves_what_pytorch_predicts(
        bases, tmp_path, method, token_level):
    from transformers import AutoModel

    from components.export.parity import check_parity
    from components.export.predictor import load_predictor
    from components.export.to_onnx import export_onnx
    from components.model.evaluate import predict_proba_torch, predict_tags_torch
    from components.model.modeling import load_classifier, load_torch_model
    from components.model.prompted import PROMPT_CARD, PROMPT_WEIGHTS, PromptedModel
    from components.model.train import save_model
    from tests.tiny import ner_records

    base = bases[token_level]
    result, model, before, tokenizer = _train(base, method, token_level)
    losses = [record.train_loss for record in result.history]
    # It learns: chance is 0.5 (accuracy) and about 0.1 (entity F1 of a tagger that guesses)
    assert losses[-1] < 0.6 * losses[0] and result.best_score >= (0.5 if token_level else 0.75), result.history
    assert isinstance(model, PromptedModel) and result.peft == method
    # Only the prompt encoder and the head trained: the base model's weights are those it started with.
    after = model.model.base_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    head = sum(p.numel() for n, p in model.model.named_parameters() if not n.startswith("bert."))
    assert head < result.trainable_parameters < 0.2 * result.total_parameters

    result.write(tmp_path / "history.json")  # what MLflow logs (components/lifecycle/tracking.py)
    logged = json.loads((tmp_path / "history.json").read_text())
    assert logged["peft"] == method and 0 < logged["trainable_share"] < 0.2 and logged["seconds_per_epoch"] > 0

    model_dir = tmp_path / "model"
    save_model(model, tokenizer, model_dir)
    assert (model_dir / PROMPT_WEIGHTS).is_file() and (model_dir / PROMPT_CARD).is_file()
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pt"))  # safetensors only
    AutoModel.from_pretrained(model_dir)  # still a plain transformers directory
    with pytest.raises(ConfigError, match="soft prompt"):  # continual learning cannot start from it
        load_classifier(str(model_dir), LABELS, token_level=token_level)

    if token_level:
        records = ner_records(24, seed=9)
        texts = [" ".join(r["tokens"]) for r in records]
        gold = [" ".join(r["tags"]) for r in records]
    else:
        frame = sentiment_frame(24, seed=9)
        texts, gold = frame["review"].tolist(), frame["sentiment"].tolist()
    export = export_onnx(model_dir, tmp_path / "onnx", precision="int8", max_length=48, calibration_texts=texts)
    report = check_parity(model_dir, tmp_path / "onnx", texts, gold, max_length=48)
    gate = ExportParams()
    assert report.failures(min_agreement=gate.min_agreement, max_accuracy_drop=gate.max_accuracy_drop) == [], report

    served = load_predictor(export.out_dir)  # what the service loads
    reloaded, _ = load_torch_model(model_dir)
    if token_level:
        sentences = [text.split() for text in texts]
        assert served.predict_words(sentences) == predict_tags_torch(model, tokenizer, sentences, 48)
        assert predict_tags_torch(reloaded, tokenizer, sentences, 48) == predict_tags_torch(model, tokenizer,
                                                                                            sentences, 48)
    else:
        expected = predict_proba_torch(model, tokenizer, texts, 48).argmax(1)
        assert (served.predict_proba(texts).argmax(1) == expected).all()
        assert (predict_proba_torch(reloaded, tokenizer, texts, 48).argmax(1) == expected).all()


def test_p_tuning_puts_its_prompt_where_peft_does(tiny_base_model):
    """Our p-tuning forward is peft's PeftModel forward for the same prompt encoder."""
    from peft import get_peft_model

    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.prompts import add_prompt

    torch.manual_seed(0)
    ours = add_prompt(load_classifier(str(tiny_base_model), LABELS), "p-tuning",
                      train_params(peft="p-tuning", prompt=PROMPT).prompt, longest=16).eval()
    from peft import PromptEncoderConfig, TaskType

    config = PromptEncoderConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=4, encoder_hidden_size=32)
    plain = load_classifier(str(tiny_base_model), LABELS)
    plain.load_state_dict(ours.model.state_dict())  # the same head
    theirs = get_peft_model(plain, config).eval()
    theirs.prompt_encoder["default"].load_state_dict(ours.encoder.state_dict())
    batch = load_tokenizer(str(tiny_base_model))(["the film was great", "boring"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits)


def test_a_killed_prompt_run_resumes_to_the_same_prompt(tiny_base_model, tmp_path):
    from components.model.checkpoints import Checkpointer
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import seed_everything, train_classifier

    tokenizer = load_tokenizer(str(tiny_base_model))
    train, validation = sentiment_splits(tokenizer, 48, 16)
    params = train_params(peft="prefix", prompt={**PROMPT, "projection": True}, epochs=2, batch_size=8,
                          checkpoint_every_steps=4)

    def fit(checkpoints=None, on_step=None):
        seed_everything(11)
        model = load_classifier(str(tiny_base_model), LABELS)
        return train_classifier(model, train, validation, LABELS, params, tokenizer.pad_token_id,
                                checkpoints=checkpoints, on_step=on_step)

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 9:
            raise Killed

    _, uninterrupted = fit()
    with pytest.raises(Killed):
        fit(Checkpointer(tmp_path / "checkpoints"), kill)
    result, resumed = fit(Checkpointer(tmp_path / "checkpoints"))
    assert result.resumed_from_step == 8  # the last checkpoint before the kill, mid-epoch 2 (6 steps per epoch)
    for name, tensor in uninterrupted.prompt_tensors().items():
        torch.testing.assert_close(resumed.prompt_tensors()[name], tensor)


def test_mpnet_takes_p_tuning_and_refuses_prefix(tmp_path):
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.prompts import add_prompt
    from components.model.train import train_classifier

    base = build_tiny_mpnet_model(tmp_path / "mpnet", sentiment_frame(200, seed=123)["review"].tolist())
    settings = train_params(peft="prefix", prompt=PROMPT).prompt
    with pytest.raises(ConfigError, match="mpnet attention does not use"):
        add_prompt(load_classifier(str(base), LABELS), "prefix", settings, longest=16)
    tokenizer = load_tokenizer(str(base))
    train, validation = sentiment_splits(tokenizer, 32, 16)
    result, model = train_classifier(load_classifier(str(base), LABELS), train, validation, LABELS,
                                     train_params(peft="p-tuning", prompt=PROMPT, epochs=1, batch_size=8),
                                     tokenizer.pad_token_id)
    batch = tokenizer(["the film was great"], return_tensors="pt")
    assert "token_type_ids" not in batch and model(**batch).logits.shape == (1, 2)
    assert result.trainable_parameters < result.total_parameters


def test_p_tuning_refuses_rows_that_leave_no_room_for_its_virtual_tokens(tiny_base_model):
    from components.model.modeling import load_classifier
    from components.model.prompts import add_prompt

    settings = train_params(peft="p-tuning", prompt={"virtual_tokens": 20}).prompt
    with pytest.raises(ConfigError, match="lower model.max_length to 108"):  # the tiny model has 128 positions
        add_prompt(load_classifier(str(tiny_base_model), LABELS), "p-tuning", settings, longest=120)


def test_the_replaced_lora_enabled_key_is_refused_naming_train_peft():
    from components.config import TrainParams

    with pytest.raises(ValueError, match=r"train.lora.enabled was replaced by train.peft: write `train: "
                                         r"\{peft: lora\}`"):
        TrainParams(lora={"enabled": True, "r": 4})
    with pytest.raises(ValueError, match=r"train.lora.enabled was replaced by train.peft: write `train: "
                                         r"\{peft: none\}`"):
        TrainParams(lora={"enabled": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current spelling reads without a warning
        assert TrainParams(peft="lora", lora={"r": 4}).lora.r == 4
