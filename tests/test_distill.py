"""Knowledge distillation on tiny models: the KD loss follows the teacher, the teacher and distill stages
feed the train stage, NER targets land on the student's first sub-tokens, and the gate's teacher gap."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from components.config import ConfigError, ExportParams, GateParams, parse_params
from components.data.preprocess import IGNORE_INDEX
from tests.fixtures_classifier import LABELS, tiny_classifier  # noqa: F401 (a fixture)
from tests.project import make_project, read_params, tiny_params, write_params
from tests.tiny import build_tiny_base_model, ner_records, sentiment_frame


@pytest.fixture(scope="module")
def teacher_base(tmp_path_factory):
    """Another tiny BERT whose vocabulary comes from few texts: its sub-tokens differ from the student's
    (the sentiment and entity words are split into characters), as a real teacher's tokenizer differs."""
    corpus = sentiment_frame(12, seed=77)["review"].tolist() + [" ".join(r["tokens"]) for r in ner_records(6, seed=77)]
    return build_tiny_base_model(tmp_path_factory.mktemp("teacher-bert"), corpus)


def _flipped_copy(model_dir, out_dir):
    """The trained tiny classifier with its two head rows swapped: it says positive where it means negative."""
    import torch

    from components.model.modeling import load_torch_model

    model, tokenizer = load_torch_model(model_dir)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def test_student_distilled_with_alpha_1_follows_a_teacher_that_flips_the_classes(
        tiny_base_model, tiny_classifier, tmp_path):  # noqa: F811 - the imported fixture
    from components.model.distill import sequence_logits
    from components.model.evaluate import predict_proba_torch
    from components.model.modeling import load_classifier, load_tokenizer, load_torch_model
    from components.model.train import Distillation, DistilledSplit, seed_everything, train_classifier
    from tests.train_job import sentiment_splits, train_params

    teacher, teacher_tokenizer = load_torch_model(_flipped_copy(tiny_classifier, tmp_path / "flipped"))
    frame = sentiment_frame(800, seed=3)  # the texts sentiment_splits tokenizes, in its order
    texts, truth = frame["review"].tolist()[:640], frame["sentiment"].tolist()[:640]
    logits = sequence_logits(teacher, teacher_tokenizer, texts, 32, 128)
    teacher_says = [LABELS[i] for i in logits.argmax(1)]
    assert np.mean([t != y for t, y in zip(teacher_says, truth)]) > 0.9  # the teacher really flips

    tokenizer = load_tokenizer(str(tiny_base_model))
    train, validation = sentiment_splits(tokenizer)
    distilled = DistilledSplit(train.input_ids, train.labels, train.batch_ids, teacher_logits=list(logits))
    # The best epoch is picked on validation labels: flipped as the teacher flips them, so that the pick
    # does not undo what the KD loss taught (true labels would pick the epoch that learned least).
    flipped_validation = replace(validation, labels=[1 - y for y in validation.labels])
    seed_everything(11)
    student = load_classifier(str(tiny_base_model), LABELS)
    _, student = train_classifier(student, distilled, flipped_validation, LABELS,
                                  train_params(epochs=2, checkpoint_every_steps=None), tokenizer.pad_token_id,
                                  distillation=Distillation(temperature=2.0, alpha=1.0))
    predicted = [LABELS[i] for i in predict_proba_torch(student, tokenizer, texts, 32).argmax(1)]
    follows_teacher = np.mean([p == t for p, t in zip(predicted, teacher_says)])
    assert follows_teacher > 0.9, f"the student agrees with the flipping teacher on only {follows_teacher:.2f}"


@pytest.mark.slow  # about 10 s alone, 30 s on a busy machine: the stages, DVC and MLflow for real
def test_teacher_and_distill_stages_feed_the_train_stage(tiny_base_model, teacher_base, tmp_path, capsys):
    from components import stages
    from components.config import load_params
    from components.data.ingest import DataStore, ingest_batch, read_configured_source
    from components.layout import ProjectLayout
    from components.model.distill import DistillPaths, read_targets, unlabelled_changed

    root = make_project(tmp_path / "project", tiny_base_model, rows=300)
    log = pd.DataFrame({"text": sentiment_frame(60, seed=99)["review"]})
    log.loc[len(log)] = pd.read_csv(root / "incoming" / "reviews.csv")["review"].iloc[0]  # already in the data
    (root / "incoming" / "predictions.jsonl").write_text(log.to_json(orient="records", lines=True))
    params = tiny_params(tiny_base_model, train={"epochs": 2, "num_threads": 1, "checkpoint_every_steps": None},
                         distill={"enabled": True, "teacher_model": str(teacher_base), "alpha": 0.7,
                                  "teacher_train": {"epochs": 1, "learning_rate": 0.003, "num_threads": 1},
                                  "unlabelled": "incoming/predictions.jsonl"},
                         gate={"max_teacher_gap": 0.05})
    write_params(root, params)
    # Every stage's params are in params.yaml (DVC refuses a stage whose params are missing).
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True,
                            check=False)
    assert status.returncode == 0 and "missing" not in status.stdout + status.stderr, status.stdout + status.stderr

    layout, settings = ProjectLayout(root), load_params(root / "params.yaml")
    ingest_batch(read_configured_source(settings.data, root), settings.data, DataStore(layout.data_dir), base=True)
    for stage in ("preprocess", "teacher", "distill", "train"):
        stages.STAGES[stage](layout, settings)

    paths = DistillPaths(layout.artifacts)
    assert (paths.teacher_model / "model.safetensors").is_file()
    metrics = json.loads(paths.teacher_metrics.read_text())
    assert {"accuracy", "macro_f1", "per_class", "n"} <= set(metrics)
    assert metrics["n"] == len(layout.read_split("test"))
    targets = read_targets(paths.targets)
    train_ids = layout.read_split("train")["id"]
    assert set(targets.loc[targets["source"] == "train", "id"]) == set(train_ids)
    unlabelled = targets[targets["source"] == "unlabelled"]
    # Only texts that hash to the training split, and none already in the data.
    assert 0 < len(unlabelled) < 60 and not set(unlabelled["id"]) & set(train_ids)
    assert all(row.shape == (2,) and np.isfinite(row).all() for row in targets["logits"])
    history = json.loads(layout.train_history.read_text())
    assert history["distill"]["labelled_rows"] == len(train_ids) and history["distill"]["alpha"] == 0.7
    assert history["train_examples"] == len(train_ids) + len(unlabelled)
    assert (layout.model_dir / "model.safetensors").is_file()
    assert not unlabelled_changed(layout.artifacts, settings, root)

    # A new temperature or weight re-runs the DVC stage (it tracks the distill section), but only the
    # student reads them: the teacher's logits come back from where the first run kept them.
    capsys.readouterr()
    made = paths.targets.read_bytes()
    for change in ({"alpha": 0.2}, {"temperature": 4.0}):
        stages.distill(layout, settings.model_copy(update={"distill": settings.distill.model_copy(update=change)}))
        assert "reused distill-" in capsys.readouterr().out
        assert paths.targets.read_bytes() == made and json.loads(paths.targets_card.read_text())["train_rows"]
    shorter = settings.model_copy(update={"model": settings.model.model_copy(update={"max_length": 16})})
    stages.distill(layout, shorter)  # an input of the logits changed: the teacher labels again
    assert "teacher logits for" in capsys.readouterr().out
    assert len(list(layout.checkpoints_dir.glob("distill-*"))) == 1  # only the latest is kept
    stages.distill(layout, settings)
    assert "teacher logits for" in capsys.readouterr().out and paths.targets.read_bytes() == made

    # Augmented copies of the training rows: the teacher labels them, the student learns them from its
    # distributions alone; none repeats a text of any split.
    augmented = settings.model_copy(update={"distill": settings.distill.model_copy(update={"augment_copies": 1})})
    stages.distill(layout, augmented)
    targets = read_targets(paths.targets)
    copies = targets[targets["source"] == "augmented"]
    split_texts = set().union(*(layout.read_split(name)["text"] for name in ("train", "validation", "test")))
    assert len(copies) > 0.5 * len(train_ids) and not set(copies["text"]) & split_texts
    assert json.loads(paths.targets_card.read_text())["augmented_rows"] == len(copies)
    stages.STAGES["train"](layout, augmented)
    history = json.loads(layout.train_history.read_text())
    assert history["train_examples"] == len(train_ids) + len(unlabelled) + len(copies)
    assert history["distill"]["teacher_only_rows"] == len(unlabelled) + len(copies)

    # MLflow: the teacher's figures and settings on the run, its name and model hash on the version.
    from components.lifecycle.model_card import render_model_card
    from components.lifecycle.tracking import log_teacher, open_registry, teacher_tag

    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", "teacher"], cwd=root, check=True)
    registry = open_registry(settings, layout)
    run_id = registry.start_run("distill", "teacher-figures", {})
    log_teacher(registry, run_id, layout)
    run = registry.client.get_run(run_id)
    assert run.data.metrics["teacher_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert run.data.params["teacher.model"] == str(teacher_base) and run.data.params["teacher.train.epochs"] == "1"
    tag = teacher_tag(settings, layout)["teacher"]
    assert tag.startswith(f"{teacher_base}@") and tag == f"{teacher_base}@{run.data.params['teacher.md5']}"
    assert f"distilled from the teacher `{tag}`" in render_model_card("tiny", {"teacher": tag}, {}, "gate passed")
    with (root / "incoming" / "predictions.jsonl").open("a") as handle:
        handle.write(json.dumps({"text": "a new review of a brilliant film"}) + "\n")
    assert unlabelled_changed(layout.artifacts, settings, root)  # the flow forces the distill stage then

    # Distillation off: both stages write a card saying so, and training reads no targets.
    params["distill"]["enabled"] = False
    write_params(root, params)
    settings = load_params(root / "params.yaml")
    stages.teacher(layout, settings)
    stages.distill(layout, settings)
    assert json.loads(paths.teacher_card.read_text()) == {"enabled": False}
    assert json.loads(paths.targets_card.read_text()) == {"enabled": False}
    assert not paths.teacher_model.exists() and not paths.targets.exists()
    assert read_params(root)["distill"]["enabled"] is False


def test_ner_word_targets_land_on_the_students_first_sub_tokens(tiny_ner_base_model, teacher_base):
    import torch

    from components.config import iob2_tags
    from components.data.preprocess import tokenize_tagged_split
    from components.entities import first_subtoken_positions
    from components.model.distill import student_rows, word_logits
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import Distillation, DistilledSplit, train_classifier
    from tests.train_job import ENTITY_TYPES, train_params

    tags = iob2_tags(ENTITY_TYPES)
    params = parse_params({"task": "token-classification", "data": {"source": "x.jsonl", "labels": ENTITY_TYPES},
                           "model": {"base_model": str(tiny_ner_base_model), "max_length": 48}})
    records = ner_records(40, seed=8)
    frame = pd.DataFrame({"text": [" ".join(r["tokens"]) for r in records],
                          "label": [" ".join(r["tags"]) for r in records]})
    sentences = [r["tokens"] for r in records]
    torch.manual_seed(0)
    teacher = load_classifier(str(teacher_base), tags, token_level=True)
    teacher_tokenizer = load_tokenizer(str(teacher_base))
    student_tokenizer = load_tokenizer(str(tiny_ner_base_model))
    per_word = word_logits(teacher, teacher_tokenizer, sentences, 48, batch_size=16)

    one = teacher_tokenizer(sentences[0], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        alone = teacher(**one).logits[0].numpy()
    np.testing.assert_allclose(per_word[0], alone[first_subtoken_positions(one.word_ids(0), len(sentences[0]))],
                               atol=1e-5)  # batched and padded, each word's logits from its own first sub-token
    assert any(len(teacher_tokenizer(s, is_split_into_words=True)["input_ids"])
               != len(student_tokenizer(s, is_split_into_words=True)["input_ids"]) for s in sentences)

    student_split = tokenize_tagged_split(frame, student_tokenizer, tags, 48)
    input_ids, targets, _ = student_rows(frame["text"].tolist(), per_word, student_tokenizer, params)
    assert input_ids == student_split.input_ids
    for row, (labels, target) in enumerate(zip(student_split.labels, targets)):
        labelled = [i for i, y in enumerate(labels) if y != IGNORE_INDEX]  # the student's first sub-tokens
        assert [i for i in range(len(target)) if np.isfinite(target[i]).all()] == labelled
        np.testing.assert_array_equal(target[labelled], per_word[row])

    distilled = DistilledSplit(student_split.input_ids, student_split.labels, teacher_logits=targets)
    result, _ = train_classifier(load_classifier(str(tiny_ner_base_model), tags, token_level=True), distilled,
                                 student_split, tags, train_params(epochs=1, checkpoint_every_steps=None),
                                 student_tokenizer.pad_token_id, entity_types=ENTITY_TYPES,
                                 distillation=Distillation(temperature=2.0, alpha=0.5))
    assert np.isfinite(result.history[0].train_loss) and result.history[0].train_loss > 0


def test_with_word_shapes_an_uncased_mpnet_teacher_reads_capitalization(tiny_ner_base_model, tmp_path):
    import torch

    from components.config import iob2_tags
    from components.data.preprocess import write_template_record
    from components.data.word_shapes import TITLE
    from components.model.distill import teacher_fingerprint, tokenize_frame, word_logits
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.shape_channel import add_word_shapes
    from tests.tiny import ner_corpus
    from tests.tiny_mpnet import build_tiny_mpnet_model
    from tests.train_job import ENTITY_TYPES

    mpnet = build_tiny_mpnet_model(tmp_path / "teacher", ner_corpus())
    settings = {"task": "token-classification", "data": {"source": "x.jsonl", "labels": ENTITY_TYPES},
                "model": {"base_model": str(tiny_ner_base_model), "max_length": 32, "word_shapes": True},
                "distill": {"enabled": True, "teacher_model": str(mpnet)}}
    params = parse_params(settings, env={})
    frame = pd.DataFrame({"text": ["they met Paris", "they met paris"], "label": ["O O B-LOC", "O O O"]})
    tokenizer = load_tokenizer(str(mpnet))
    split = tokenize_frame(frame, tokenizer, params)
    assert split.input_ids[0] == split.input_ids[1]  # the tokenizer lowercases: the ids alone cannot tell
    assert split.token_type_ids[0] != split.token_type_ids[1] and TITLE in split.token_type_ids[0]

    torch.manual_seed(0)
    teacher = add_word_shapes(load_classifier(str(mpnet), iob2_tags(ENTITY_TYPES), token_level=True))
    with torch.no_grad():
        teacher.shape_embeddings.weight[TITLE] += 1.0  # what training would learn, in caricature
    capital, lower = word_logits(teacher, tokenizer, [["they", "met", "Paris"], ["they", "met", "paris"]], 32, 8)
    assert not np.allclose(capital[2], lower[2])  # the distill targets carry what capitalization says

    # The teacher's checkpoints and DVC's view of the splits both change with the setting.
    for name in ("train", "validation"):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    plain = parse_params({**settings, "model": {**settings["model"], "word_shapes": False}}, env={})
    assert (teacher_fingerprint(params, tmp_path / "train.csv", tmp_path / "validation.csv")
            != teacher_fingerprint(plain, tmp_path / "train.csv", tmp_path / "validation.csv"))
    assert json.loads(write_template_record(tmp_path, None, True).read_text()) == {"template": None,
                                                                                    "word_shapes": True}
    assert json.loads(write_template_record(tmp_path, None, False).read_text()) == {"template": None}


def test_gate_refuses_a_student_that_trails_its_teacher_by_more_than_max_teacher_gap():
    from components.lifecycle.gate import decide

    parity = {"agreement": 1.0, "accuracy_drop": 0.0, "precision": "int8"}
    student = {"accuracy": 0.85, "macro_f1": 0.84, "n": 100}
    teacher = {"accuracy": 0.91, "macro_f1": 0.90, "n": 100}
    refused = decide(student, parity, None, None, GateParams(max_teacher_gap=0.03), ExportParams(), teacher=teacher)
    assert not refused.passed
    assert [c.name for c in refused.checks if not c.passed] == ["max_teacher_gap"]
    assert "macro_f1 0.8400 vs teacher 0.9000" in refused.summary() and "trails by +0.0600" in refused.summary()
    assert decide(student, parity, None, None, GateParams(max_teacher_gap=0.07), ExportParams(), teacher=teacher).passed
    unjudged = decide(student, parity, None, None, GateParams(), ExportParams(), teacher=teacher)
    assert unjudged.passed and "max_teacher_gap" not in [c.name for c in unjudged.checks]


def test_distill_settings_that_cannot_work_are_refused():
    base = {"data": {"source": "x.csv", "labels": LABELS}, "model": {"base_model": "builtin:all-minilm-l6-v2"}}
    with pytest.raises(ConfigError, match="distill.teacher_model is empty"):
        parse_params({**base, "distill": {"enabled": True, "teacher_model": None}})
    with pytest.raises(ConfigError, match=r"distill.teacher_train.epoch: Extra inputs"):
        parse_params({**base, "distill": {"teacher_train": {"epoch": 3}}})
    with pytest.raises(ConfigError, match="init_from"):
        parse_params({**base, "distill": {"teacher_train": {"init_from": "champion"}}})
    params = parse_params({**base, "train": {"epochs": 2, "learning_rate": 1e-3},
                           "distill": {"enabled": True, "teacher_model": "x", "teacher_train": {"epochs": 4}}})
    teacher = params.distill.teacher_train
    # its own settings, the rest train's code defaults: not the student's values
    assert (teacher.epochs, teacher.learning_rate) == (4, 1e-4)
