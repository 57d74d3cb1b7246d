"""Evaluate: score the fine-tuned PyTorch model on the test split; metrics, plot data and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from components.metrics import classification_metrics


@torch.no_grad()
def predict_proba_torch(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
    model.eval()
    # Sorting by length keeps padding small; results are put back in input order.
    order = np.argsort([len(t) for t in texts], kind="stable")
    probabilities = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch", disable=len(texts) <= batch_size):
        indices = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt")
        probabilities[indices] = torch.softmax(model(**batch).logits, dim=-1).numpy()
    return probabilities


def evaluate_frame(frame: pd.DataFrame, probabilities: np.ndarray, labels: list[str]) -> tuple[dict, pd.DataFrame]:
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    metrics = classification_metrics(frame["label"].tolist(), predicted, labels)
    predictions = pd.DataFrame({"id": frame["id"], "actual": frame["label"], "predicted": predicted,
                                "confidence": probabilities.max(axis=1).round(6)})
    return metrics, predictions


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


def score_onnx_dir(onnx_dir: Path, test_csv: Path, labels: list[str]) -> dict:
    """Metrics of a servable ONNX model on a labelled split: the figures the gate compares."""
    from components.predictor import OnnxTextClassifier

    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    classifier = OnnxTextClassifier(onnx_dir)
    if list(classifier.labels) != list(labels):
        raise ValueError(f"{onnx_dir} predicts labels {list(classifier.labels)}, the data has {labels}")
    probabilities = classifier.predict_proba(test["text"].tolist())
    metrics, _ = evaluate_frame(test, probabilities, labels)
    return metrics
