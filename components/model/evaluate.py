"""Evaluate: score the fine-tuned PyTorch model on the test split; metrics, plot data and a PNG.

Sequence classification: a label per text (predict_proba_torch, evaluate_frame). Token classification
(NER): the test split's `text` is a sentence's words joined by single spaces and `label` their IOB2
tags joined the same way (predict_tags_torch, evaluate_token_frame); the metrics are CoNLL's entity
scores (components.entities.entity_scores) plus a word-level tag confusion matrix for the PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from components.config import TOKEN_CLASSIFICATION
from components.entities import entity_scores, spans_from_tags
from components.model.metrics import classification_metrics


@torch.no_grad()
def predict_logits_torch(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
    """[texts, classes] logits of a sequence classifier, in input order."""
    model.eval()
    # Sorting by length keeps padding small; results are put back in input order.
    order = np.argsort([len(t) for t in texts], kind="stable")
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch", disable=len(texts) <= batch_size):
        indices = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(model.device)  # the model's device: CPU or GPU
        logits[indices] = model(**batch).logits.float().cpu().numpy()
    return logits


def predict_proba_torch(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
    return _softmax(predict_logits_torch(model, tokenizer, texts, max_length, batch_size))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


@torch.no_grad()
def predict_word_logits_torch(model, tokenizer, sentences: list[list[str]], max_length: int,
                              batch_size: int = 128) -> list[np.ndarray]:
    """Per sentence, [words, tags] logits at each word's first sub-token (the model's label order);
    NaN rows for a word with no sub-token inside max_length."""
    from components.data.word_shapes import token_shapes, uses_word_shapes
    from components.entities import first_subtoken_positions

    model.eval()
    results = [np.full((len(words), model.config.num_labels), np.nan, dtype=np.float32) for words in sentences]
    # Sorted by length: little padding; results stay in input order.
    order = sorted((i for i, words in enumerate(sentences) if words), key=lambda i: len(sentences[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="predict", unit="batch",
                      disable=len(order) <= batch_size):
        indices = order[start:start + batch_size]
        batch = tokenizer([list(sentences[i]) for i in indices], is_split_into_words=True, truncation=True,
                          max_length=max_length, padding=True, return_tensors="pt")
        if uses_word_shapes(model.config):
            batch["token_type_ids"] = torch.tensor(
                [token_shapes(sentences[i], batch.word_ids(row)) for row, i in enumerate(indices)])
        inputs = {name: tensor.to(model.device) for name, tensor in batch.items()}
        logits = model(**inputs).logits.float().cpu().numpy()
        for row, index in enumerate(indices):
            positions = first_subtoken_positions(batch.word_ids(row), len(sentences[index]))
            kept = positions >= 0
            results[index][kept] = logits[row, positions[kept]]
    return results


def predict_tag_proba_torch(model, tokenizer, sentences: list[list[str]], max_length: int,
                            batch_size: int = 128) -> list[np.ndarray]:
    """Per sentence, a [words, tags] array of tag probabilities from each word's first sub-token (the
    model's label order). A word with no sub-token inside max_length gets O with probability 1."""
    id2label = {int(i): str(label) for i, label in model.config.id2label.items()}
    outside = next((i for i, label in id2label.items() if label == "O"), 0)
    results = []
    for logits in predict_word_logits_torch(model, tokenizer, sentences, max_length, batch_size):
        missing = np.isnan(logits).any(axis=1)
        probabilities = _softmax(np.where(missing[:, None], 0.0, logits))
        probabilities[missing] = 0.0
        probabilities[missing, outside] = 1.0
        results.append(probabilities)
    return results


def predict_tags_torch(model, tokenizer, sentences: list[list[str]], max_length: int,
                       batch_size: int = 128) -> list[list[str]]:
    """An IOB2 tag per word of each sentence, from the word's first sub-token."""
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    return [[labels[i] for i in p.argmax(axis=1)]
            for p in predict_tag_proba_torch(model, tokenizer, sentences, max_length, batch_size)]


def split_joined(values) -> list[list[str]]:
    """Space-joined words (or tags) back to lists, split on single spaces as preprocessing splits them."""
    return [str(value).split(" ") if str(value) else [] for value in values]


def sentences_and_tags(frame: pd.DataFrame) -> tuple[list[list[str]], list[list[str]]]:
    """The words and gold tags of an NER split frame (space-joined `text` and `label`)."""
    sentences, tags = split_joined(frame["text"]), split_joined(frame["label"])
    for row, (words, gold) in enumerate(zip(sentences, tags)):
        if len(words) != len(gold):
            raise ValueError(f"row {row} (id {frame['id'].iloc[row]}): {len(words)} words but {len(gold)} tags")
    return sentences, tags


def _entities_text(words: list[str], tags: list[str]) -> str:
    return "; ".join(f"{span.kind}: {' '.join(words[span.start:span.end])}" for span in spans_from_tags(tags))


def evaluate_token_frame(frame: pd.DataFrame, predicted: list[list[str]], entity_types: list[str],
                         confidences: list[float] | None = None) -> tuple[dict, pd.DataFrame]:
    """NER metrics of predicted tags on a split frame, and a predictions frame (one row per sentence).

    metrics: entity_scores' keys (entity_f1, entity_precision, entity_recall, macro_f1, per_class,
    word-level accuracy, n, words) plus `task` and a word-level tag confusion matrix."""
    from components.config import iob2_tags

    sentences, gold = sentences_and_tags(frame)
    if len(predicted) != len(gold):
        raise ValueError(f"{len(gold)} sentences but {len(predicted)} predicted")
    metrics = entity_scores(gold, predicted, entity_types)
    tags = iob2_tags(entity_types)
    tags += sorted({t for sentence in gold + list(predicted) for t in sentence} - set(tags))
    flat_gold = [t for sentence in gold for t in sentence]
    flat_predicted = [t for sentence in predicted for t in sentence]
    tag_metrics = classification_metrics(flat_gold, flat_predicted, tags)
    metrics = {**metrics, "task": TOKEN_CLASSIFICATION, "confusion_matrix": tag_metrics["confusion_matrix"]}
    frame_out = pd.DataFrame({
        "id": frame["id"],
        "actual": frame["label"],
        "predicted": [" ".join(tags_) for tags_ in predicted],
        "actual_entities": [_entities_text(w, t) for w, t in zip(sentences, gold)],
        "predicted_entities": [_entities_text(w, t) for w, t in zip(sentences, predicted)],
        "correct": [set(spans_from_tags(g)) == set(spans_from_tags(p)) for g, p in zip(gold, predicted)],
    })
    if confidences is not None:
        frame_out["confidence"] = np.round(np.asarray(confidences, dtype=np.float64), 6)
    return metrics, frame_out


def evaluate_token_probabilities(frame: pd.DataFrame, probabilities: list[np.ndarray], tags: list[str],
                                 entity_types: list[str]) -> tuple[dict, pd.DataFrame]:
    """evaluate_token_frame from per-word tag probabilities (tags in the model's order); a sentence's
    confidence is the mean probability of its predicted tags."""
    predicted = [[tags[i] for i in p.argmax(axis=1)] for p in probabilities]
    confidences = [float(p.max(axis=1).mean()) if len(p) else 1.0 for p in probabilities]
    return evaluate_token_frame(frame, predicted, entity_types, confidences)


def evaluate_tokens_torch(model, tokenizer, frame: pd.DataFrame, entity_types: list[str], max_length: int,
                          batch_size: int = 128) -> tuple[dict, pd.DataFrame]:
    """The NER evaluate stage in one call: tag the split frame's sentences with the PyTorch token
    classifier and score them (see evaluate_token_frame)."""
    sentences, _ = sentences_and_tags(frame)
    probabilities = predict_tag_proba_torch(model, tokenizer, sentences, max_length, batch_size)
    tags = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    return evaluate_token_probabilities(frame, probabilities, tags, entity_types)


def evaluate_frame(frame: pd.DataFrame, probabilities: np.ndarray, labels: list[str]) -> tuple[dict, pd.DataFrame]:
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    metrics = classification_metrics(frame["label"].tolist(), predicted, labels)
    predictions = pd.DataFrame({"id": frame["id"], "actual": frame["label"], "predicted": predicted,
                                "confidence": probabilities.max(axis=1).round(6)})
    return metrics, predictions


def row_outcomes(frame: pd.DataFrame, predicted: list[str], labels: list[str]) -> dict:
    """Per test row its actual and predicted label (indices into `labels`; -1: an actual label outside them),
    with the rows' ids: what a paired comparison with another model on the same rows needs
    (components/lifecycle/paired.py). Compact and JSON-serialisable: the champion's scores are cached as JSON."""
    index = {label: i for i, label in enumerate(labels)}
    return {"unit": "row", "ids": frame["id"].astype(str).tolist(), "labels": list(labels),
            "actual": [index.get(str(label), -1) for label in frame["label"]],
            "predicted": [index.get(str(label), -1) for label in predicted]}


def sentence_outcomes(frame: pd.DataFrame, predicted: list[list[str]], entity_types: list[str]) -> dict:
    """Per test sentence, with the rows' ids, the counts entity_scores sums over the sentences: entities
    found, wrongly found and missed (exact span and type; in all, and per entity type) and correct and total
    words, so that entity F1, macro-F1 and word accuracy can be recomputed on a resample of the sentences."""
    _, gold = sentences_and_tags(frame)
    if len(predicted) != len(gold):
        raise ValueError(f"{len(gold)} sentences but {len(predicted)} predicted")
    columns: dict[str, list] = {name: [] for name in ("true_positive", "false_positive", "false_negative",
                                                      "true_positive_by_kind", "false_positive_by_kind",
                                                      "false_negative_by_kind", "correct_tokens", "tokens")}
    for row, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {row}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        # The spans and the exact-match rule of entity_scores, one sentence at a time.
        actual, guessed = set(spans_from_tags(gold_tags)), set(spans_from_tags(predicted_tags))
        found = actual & guessed
        for name, spans in (("true_positive", found), ("false_positive", guessed - found),
                            ("false_negative", actual - found)):
            columns[name].append(len(spans))
            columns[f"{name}_by_kind"].append([sum(span.kind == kind for span in spans) for kind in entity_types])
        columns["correct_tokens"].append(sum(g == p for g, p in zip(gold_tags, predicted_tags)))
        columns["tokens"].append(len(gold_tags))
    return {"unit": "sentence", "ids": frame["id"].astype(str).tolist(), "kinds": list(entity_types), **columns}


def plot_confusion_matrix(metrics: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here or on servers
    import matplotlib.pyplot as plt

    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.array(metrics["confusion_matrix"]["rows_actual_columns_predicted"])
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.1 * len(labels) + 2.5))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    if metrics.get("task") == TOKEN_CLASSIFICATION:
        axes.set_xlabel("predicted tag (per word)")
        axes.set_ylabel("actual tag (per word)")
        axes.set_title(f"{title}\nentity F1 {metrics['entity_f1']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
                       f"word accuracy {metrics['accuracy']:.3f}")
    else:
        axes.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    figure.colorbar(image)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_evaluation(metrics: dict, predictions: pd.DataFrame, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    predictions.to_csv(out_dir / "predictions.csv", index=False, lineterminator="\n")
    plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png", "test split (PyTorch fp32)")
