"""Score an exported model on labelled rows, as it will be served: the gate judges the challenger and
re-scores the champion with it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from components.config import TOKEN_CLASSIFICATION
from components.config.evaluate import EvaluateParams
from components.layout import read_split_csv
from components.model.evaluate import (
    evaluate_frame,
    evaluate_token_probabilities,
    row_outcomes,
    sentence_outcomes,
    sentences_and_tags,
    split_joined,
)


def score_onnx_dir(onnx_dir: Path, test_csv: Path, labels: list[str], slices: EvaluateParams | None = None) -> dict:
    """Metrics of a servable ONNX model on a labelled split: the figures the gate compares.

    labels: params.data.labels, i.e. the class names of a classifier or the entity types of a token
    classifier (the export's card says which it is). slices: params.evaluate; with slices configured the
    metrics hold "slices", each slice's figures from the same predictions (components/model/slices.py).

    The metrics also hold "outcomes": per test row (per sentence for NER) what the gate's paired comparison
    with another model on the same rows needs, and with slices configured the positions of each slice's rows
    (components/lifecycle/paired.py). Per-row data: strip it (paired.without_outcomes) before logging or tagging."""
    from components.export.predictor import (
        OnnxTextClassifier,
        OnnxTokenTagger,
        default_providers,
        read_model_card,
    )

    test = read_split_csv(test_csv)
    card = read_model_card(Path(onnx_dir))
    # Where parity ran: an fp16 export on CUDA when there is one; the parity report already says so otherwise.
    session = {"providers": default_providers(card.precision), "warn_on_plan": False}
    if card.task == TOKEN_CLASSIFICATION:
        tagger = OnnxTokenTagger(onnx_dir, **session)
        if list(tagger.entity_types) != list(labels):
            raise ValueError(f"{onnx_dir} tags entity types {tagger.entity_types}, the data has {labels}")
        sentences, _ = sentences_and_tags(test)
        probabilities = tagger.predict_word_proba(sentences)
        metrics, predictions = evaluate_token_probabilities(test, probabilities, tagger.labels, list(labels))
        outcomes = sentence_outcomes(test, split_joined(predictions["predicted"]), list(labels))
        return _with_slices({**metrics, "outcomes": outcomes}, test, predictions, labels, slices, token_task=True)
    classifier = OnnxTextClassifier(onnx_dir, **session)
    if list(classifier.labels) != list(labels):
        raise ValueError(f"{onnx_dir} predicts labels {list(classifier.labels)}, the data has {labels}")
    probabilities = classifier.predict_proba(test["text"].tolist())
    metrics, predictions = evaluate_frame(test, probabilities, labels)
    outcomes = row_outcomes(test, predictions["predicted"].tolist(), list(labels))
    return _with_slices({**metrics, "outcomes": outcomes}, test, predictions, labels, slices, token_task=False)


def _with_slices(metrics: dict, test: pd.DataFrame, predictions: pd.DataFrame, labels: list[str],
                 slices: EvaluateParams | None, token_task: bool) -> dict:
    if slices is None or not slices.slices:
        return metrics
    from components.model.slices import slice_metrics, slice_rows

    return {**metrics, "slices": slice_metrics(test, predictions["predicted"].tolist(), list(labels), slices,
                                               token_task=token_task),
            # Which rows each slice holds, so that the champion's and the challenger's can be paired per slice.
            "outcomes": {**metrics["outcomes"], "slices": slice_rows(test, slices)}}
