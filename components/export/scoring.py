"""Score an exported model on labelled rows, as it will be served: the gate judges the challenger and
re-scores the champion with it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from components.config import TOKEN_CLASSIFICATION
from components.model.evaluate import (
    evaluate_frame,
    evaluate_token_probabilities,
    sentences_and_tags,
)


def score_onnx_dir(onnx_dir: Path, test_csv: Path, labels: list[str]) -> dict:
    """Metrics of a servable ONNX model on a labelled split: the figures the gate compares.

    labels: params.data.labels, i.e. the class names of a classifier or the entity types of a token
    classifier (the export's card says which it is)."""
    from components.export.predictor import (
        OnnxTextClassifier,
        OnnxTokenTagger,
        default_providers,
        read_model_card,
    )

    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    card = read_model_card(Path(onnx_dir))
    # Where parity ran: an fp16 export on CUDA when there is one; the parity report already says so otherwise.
    session = {"providers": default_providers(card.precision), "warn_on_plan": False}
    if card.task == TOKEN_CLASSIFICATION:
        tagger = OnnxTokenTagger(onnx_dir, **session)
        if list(tagger.entity_types) != list(labels):
            raise ValueError(f"{onnx_dir} tags entity types {tagger.entity_types}, the data has {labels}")
        sentences, _ = sentences_and_tags(test)
        probabilities = tagger.predict_word_proba(sentences)
        metrics, _ = evaluate_token_probabilities(test, probabilities, tagger.labels, list(labels))
        return metrics
    classifier = OnnxTextClassifier(onnx_dir, **session)
    if list(classifier.labels) != list(labels):
        raise ValueError(f"{onnx_dir} predicts labels {list(classifier.labels)}, the data has {labels}")
    probabilities = classifier.predict_proba(test["text"].tolist())
    metrics, _ = evaluate_frame(test, probabilities, labels)
    return metrics
