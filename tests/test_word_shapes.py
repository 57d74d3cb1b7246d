"""Word shapes (model.word_shapes): capitalization reaches a model whose tokenizer lowercases.

The data here is built so that capitalization is the only cue: the same lowercase words are a
person when capitalized and nothing otherwise. The tiny tokenizer lowercases (as the default base
model's does), so without word shapes the model cannot tell them apart; with them it must, in
PyTorch, in the int8 ONNX export and in the served tagger's entities and offsets.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest

from components.config import iob2_tags
from components.data.word_shapes import (
    LOWER,
    MIXED,
    SHAPES,
    TITLE,
    UPPER,
    token_shapes,
    word_shape,
)
from tests.tiny import FILLER, ner_corpus
from tests.tiny_mpnet import build_tiny_mpnet_model
from tests.train_job import train_params

ENTITY_TYPES = ["PER"]
TAGS = iob2_tags(ENTITY_TYPES)
MAX_LENGTH = 32


@pytest.mark.parametrize(("word", "shape"), [
    ("paris", LOWER), ("1990s", LOWER), (",", LOWER), ("Paris", TITLE), ("I", TITLE), ("Ö", TITLE),
    ("PARIS", UPPER), ("U.S.", UPPER), ("McDonald", MIXED), ("iPhone", MIXED),
])
def test_word_shape(word, shape):
    assert SHAPES[word_shape(word)] == SHAPES[shape]


def test_every_sub_token_carries_its_words_shape_and_specials_are_lower():
    assert token_shapes(["Paris", "is", "NICE"], [None, 0, 0, 1, 2, None, None]) == [
        LOWER, TITLE, TITLE, LOWER, UPPER, LOWER, LOWER]


def capitalization_only_frame(n: int, seed: int) -> pd.DataFrame:
    """Filler words; a capitalized one is a one-word PER entity, the same word in lowercase is O."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 8)):
            word = rng.choice(FILLER)
            person = rng.random() < 0.3
            words.append(word.capitalize() if person else word)
            tags.append("B-PER" if person else "O")
        texts.append(" ".join(words))
        labels.append(" ".join(tags))
    return pd.DataFrame({"id": [f"s{seed}-{i}" for i in range(n)], "text": texts, "label": labels})


def _train(base_dir, out_dir, word_shapes: bool):
    from components.data.preprocess import tokenize_tagged_split
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.shape_channel import add_word_shapes
    from components.model.train import save_model, seed_everything, train_classifier

    tokenizer = load_tokenizer(str(base_dir))
    train, validation = (tokenize_tagged_split(capitalization_only_frame(n, seed), tokenizer, TAGS, MAX_LENGTH,
                                               word_shapes=word_shapes) for n, seed in ((400, 1), (100, 2)))
    assert (train.token_type_ids is not None) == word_shapes
    seed_everything(5)
    model = load_classifier(str(base_dir), TAGS, token_level=True)
    if word_shapes:
        model = add_word_shapes(model)
    result, model = train_classifier(model, train, validation, TAGS, train_params(epochs=4, learning_rate=5e-3),
                                     tokenizer.pad_token_id, entity_types=ENTITY_TYPES)
    save_model(model, tokenizer, out_dir)
    return result


@pytest.fixture(scope="module")
def tiny_ner_mpnet_model(tmp_path_factory):
    """A tiny MPNet (no token type ids: its shapes get a table of their own) on the same vocabulary."""
    return build_tiny_mpnet_model(tmp_path_factory.mktemp("tiny-ner-mpnet"), ner_corpus())


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def shaped_tagger(request, tmp_path_factory):
    base = request.getfixturevalue("tiny_ner_base_model" if request.param == "bert" else "tiny_ner_mpnet_model")
    out = tmp_path_factory.mktemp(f"shaped-tagger-{request.param}")
    return out, _train(base, out, word_shapes=True)


def test_without_word_shapes_capitalization_is_invisible(tiny_ner_base_model, tmp_path):
    result = _train(tiny_ner_base_model, tmp_path / "model", word_shapes=False)
    assert result.best_score < 0.7, result.history  # the control: the cue is out of the model's reach


def test_with_word_shapes_the_model_reads_capitalization(shaped_tagger):
    _, result = shaped_tagger
    assert result.best_score >= 0.95, result.history


def test_word_shapes_survive_export_and_serving(shaped_tagger, tmp_path):
    from components.export.parity import check_parity
    from components.export.predictor import OnnxTokenTagger
    from components.export.to_onnx import export_onnx
    from components.model.evaluate import predict_tags_torch
    from components.model.modeling import load_torch_model
    from components.model.shape_channel import ShapeChannel

    model_dir, _ = shaped_tagger
    torch_model, tokenizer = load_torch_model(model_dir)
    if torch_model.config.model_type == "bert":
        assert torch_model.config.type_vocab_size == len(SHAPES)  # one token type per shape
    else:
        assert isinstance(torch_model, ShapeChannel)  # its table, loaded back from word_shapes.safetensors
    export = export_onnx(model_dir, tmp_path / "onnx", max_length=MAX_LENGTH)
    tagger = OnnxTokenTagger(export.out_dir)
    assert tagger.card.word_shapes and "token_type_ids" in tagger.card.input_names

    sentences = [["met", "Monday", "in", "monday"], ["People", "said", "people"]]
    expected = [["O", "B-PER", "O", "O"], ["B-PER", "O", "O"]]
    assert predict_tags_torch(torch_model, tokenizer, sentences, MAX_LENGTH) == expected
    assert tagger.predict_words(sentences) == expected
    [served] = tagger.predict(["they met  Monday in monday"])
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in served["entities"]] == [("Monday", "PER", 10, 16)]

    test = capitalization_only_frame(120, seed=3)
    parity = check_parity(model_dir, export.out_dir, test["text"].tolist(), test["label"].tolist(),
                          max_length=MAX_LENGTH)
    assert parity.agreement >= 0.98 and parity.onnx_accuracy >= 0.95, parity
