"""The training loop's options on the tiny model: freezing, LoRA, class weights, early stopping,
checkpoint and resume after a hard kill, token classification, and replay for continual learning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from components.model.checkpoints import TrainingState
from tests.project import REPO_ROOT
from tests.train_job import (
    ENTITY_TYPES,
    LABELS,
    ner_splits,
    run,
    sentiment_splits,
    train_params,
)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_learns_and_reports_the_best_epoch(tiny_base_model):
    result, model = run(tiny_base_model, None)
    assert result.metric == "macro_f1"
    assert result.best_score >= 0.9, result.history
    assert result.best_epoch in (1, 2, 3)
    assert result.trainable_parameters == result.total_parameters


def test_frozen_embeddings_and_lower_layer_do_not_change(tiny_base_model):
    from components.model.modeling import load_classifier

    before = _weights(load_classifier(str(tiny_base_model), LABELS))
    result, model = run(tiny_base_model, None, epochs=1, freeze_embeddings=True, freeze_layers=1)
    after = _weights(model)
    frozen = [k for k in after if ".embeddings." in k or ".encoder.layer.0." in k]
    trained = [k for k in after if ".encoder.layer.1." in k]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert result.trainable_parameters < result.total_parameters


def test_freezing_more_layers_than_the_model_has_is_refused(tiny_base_model):
    with pytest.raises(ValueError, match="freeze_layers is 5 but the model has only 2 layers"):
        run(tiny_base_model, None, freeze_layers=5)


def test_lora_trains_few_parameters_and_saves_a_plain_merged_model(tiny_base_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import save_model

    # Adapters steer features a model already has: on the random tiny base they barely learn. One
    # epoch of full fine-tuning gives them a host; its head is then drawn afresh, so that the adapted
    # model starts at chance and has something to learn. (Adapting a model that already knows the task
    # at a high learning rate measured only noise: in one CI run its loss fell by 11% in 5 epochs.)
    _, warm = run(tiny_base_model, None, epochs=1)
    torch.manual_seed(5)
    warm.classifier.reset_parameters()
    warm_dir = tmp_path / "warm"
    save_model(warm, load_tokenizer(str(tiny_base_model)), warm_dir)
    base = _weights(load_classifier(str(warm_dir), LABELS))
    result, model = run(warm_dir, None, epochs=3, learning_rate=5e-3,
                        peft="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    assert result.trainable_parameters < 0.15 * result.total_parameters
    assert result.best_score >= 0.85, result.history  # learned: chance is 0.5 on balanced labels
    save_model(model, load_tokenizer(str(tiny_base_model)), tmp_path / "merged")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert type(reloaded).__name__ == "BertForSequenceClassification"
    weights = _weights(reloaded)
    assert set(weights) == set(base)  # no lora_A / lora_B / base_layer keys left
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(weights[query], base[query])  # the adapter was merged into the weight


def test_merging_lora_keeps_the_model_s_answers(tiny_base_model):
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.trainable import add_lora
    from tests.train_job import train_params

    torch.manual_seed(0)
    model = add_lora(load_classifier(str(tiny_base_model), LABELS), train_params(peft="lora", lora={"r": 4}), False)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # fresh B is zero: make the adapter matter
    model.eval()
    batch = load_tokenizer(str(tiny_base_model))(["the film was great", "boring plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, before, rtol=1e-4, atol=1e-5)


def test_class_weights_favour_the_rare_class():
    from components.data.preprocess import TokenizedSplit
    from components.model.batches import class_weights

    split = TokenizedSplit([[1]] * 10, [0] * 8 + [1] * 2)
    weights = class_weights(split, 3)
    assert weights.tolist() == pytest.approx([10 / (2 * 8), 10 / (2 * 2), 1.0])


def test_balanced_class_weights_train(tiny_base_model):
    result, _ = run(tiny_base_model, None, class_weights="balanced")
    assert result.best_score >= 0.8, result.history


def test_early_stopping_stops_when_the_metric_stalls(tiny_base_model):
    # A zero learning rate never improves on epoch 1: patience 1 stops after epoch 2 of 5.
    result, _ = run(tiny_base_model, None, epochs=5, learning_rate=0.0, early_stopping_patience=1)
    assert result.stopped_early
    assert [r.epoch for r in result.history] == [1, 2]
    assert result.best_epoch == 1


def test_training_state_keeps_the_best_pass_and_stops_after_patience_passes_without_a_better_one():
    state = TrainingState()
    assert state.observe(0.5, 1, patience=2)
    assert not state.observe(0.5, 2, patience=2)  # equal is not better: the earlier weights stay
    assert not state.stopped
    assert state.observe(0.6, 3, patience=2)  # a better pass resets the count
    assert (state.best_epoch, state.best_score, state.epochs_without_improvement) == (3, 0.6, 0)
    assert not state.observe(0.4, 4, patience=2) and not state.stopped
    assert not state.observe(0.4, 5, patience=2) and state.stopped
    unbounded = TrainingState()
    for epoch in range(1, 6):
        unbounded.observe(0.1 if epoch == 1 else 0.0, epoch, patience=None)
    assert not unbounded.stopped and unbounded.best_epoch == 1


def test_validation_every_n_epochs_scores_and_picks_only_those_epochs_and_the_last(tiny_base_model):
    result, _ = run(tiny_base_model, None, epochs=5, validate_every=2)
    validated = [r.epoch for r in result.history if r.validation_accuracy is not None]
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5] and validated == [2, 4, 5]
    assert result.best_epoch in validated and result.best_score >= 0.9, result.history


def test_a_hard_killed_run_resumes_to_the_same_weights(tiny_base_model, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    # Killed at step 67 of 120: the last checkpoint is step 65, mid-epoch 2 (40 steps per epoch).
    killed = subprocess.run([sys.executable, "-m", "tests.train_job", str(tiny_base_model), str(checkpoints), "67"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (checkpoints / "last.pt").is_file()

    resumed_result, resumed = run(tiny_base_model, checkpoints)
    assert resumed_result.resumed_from_step == 65
    straight_result, straight = run(tiny_base_model, tmp_path / "uninterrupted")
    assert [r.validation_loss for r in resumed_result.history] == pytest.approx(
        [r.validation_loss for r in straight_result.history], abs=1e-6)
    for name, tensor in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_token_classification_learns_entities(tiny_ner_base_model):
    tiny_base_model = tiny_ner_base_model
    from components.config import iob2_tags
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import seed_everything, train_classifier

    tokenizer = load_tokenizer(str(tiny_base_model))
    train, validation = ner_splits(tokenizer)
    assert train.token_level
    tags = iob2_tags(ENTITY_TYPES)
    seed_everything(3)
    model = load_classifier(str(tiny_base_model), tags, token_level=True)
    result, _ = train_classifier(model, train, validation, tags, train_params(epochs=5, learning_rate=5e-3),
                                 tokenizer.pad_token_id, entity_types=ENTITY_TYPES)
    assert result.metric == "entity_f1"
    assert result.best_score >= 0.8, result.history


def test_replay_keeps_new_rows_and_a_share_of_old_ones(tiny_base_model):
    from components.model.continual import replay_mix
    from components.model.modeling import load_tokenizer

    train, _ = sentiment_splits(load_tokenizer(str(tiny_base_model)))
    mixed, counts = replay_mix(train, ["old"], 0.25, seed=1)
    assert counts == {"new_rows": 320, "replayed_rows": 80, "old_rows": 320, "replay_fraction": 0.25}
    assert mixed.batch_ids.count("new") == 320 and mixed.batch_ids.count("old") == 80
    again, _ = replay_mix(train, ["old"], 0.25, seed=1)
    assert again.input_ids == mixed.input_ids  # the same seed replays the same rows
    with pytest.raises(ValueError, match="no rows"):
        replay_mix(train.select([i for i, b in enumerate(train.batch_ids) if b == "old"]), ["old"], 0.0, seed=1)


def test_bf16_autocast_on_the_cpu_trains_and_says_where_it_ran(tiny_base_model):
    result, model = run(tiny_base_model, None, precision="bf16")
    assert result.best_score >= 0.9, result.history
    assert (result.compute["device"], result.compute["precision"]) == ("cpu", "bf16")
    assert result.compute["device_name"]
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())  # saved as fp32


def test_settings_the_hardware_cannot_run_are_refused_with_what_to_use():
    from components.config import ConfigError
    from components.model.compute import resolve_compute

    with pytest.raises(ConfigError, match="fp16' needs a CUDA GPU"):
        resolve_compute("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_compute("cuda", "fp32")
        assert resolve_compute("auto", "fp32").device.type == "cpu"


def test_auto_precision_picks_bf16_only_where_the_cpu_has_amx(tmp_path):
    from components.model.compute import cpu_has_amx_bf16, resolve_compute

    with_amx, without = tmp_path / "amx", tmp_path / "plain"
    with_amx.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    without.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_amx_bf16(with_amx) and not cpu_has_amx_bf16(without)
    if not torch.cuda.is_available():
        expected = "bf16" if cpu_has_amx_bf16() else "fp32"
        assert resolve_compute("auto", "auto").precision == expected
