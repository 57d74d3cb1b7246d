"""Slices: named groups of test rows (evaluate.slices) measured one by one, so that a model which does well
overall cannot fail one group of inputs quietly. Pure: test rows and predictions in, figures out.

Each slice's entry: kind, what it selects, rows, judged (rows >= evaluate.min_slice_rows: fewer rows make a
figure too noisy to gate on; it is still reported), and accuracy and macro_f1 (NER: entity_f1 too, over the
slice's sentences; accuracy is then word-level). Macro-F1 averages over the labels that occur in the slice,
gold or predicted: a slice of one label is not marked down for the labels it cannot contain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components.config.evaluate import EvaluateParams, SliceSpec


def slice_mask(test: pd.DataFrame, spec: SliceSpec) -> np.ndarray:
    """Which test rows belong to the slice (a boolean per row, in row order)."""
    if spec.kind == "regex":
        return test["text"].astype(str).map(lambda text: spec.pattern.search(text) is not None).to_numpy(dtype=bool)
    if spec.kind == "length":
        lengths = test["text"].astype(str).str.len().to_numpy()
        low = spec.min_chars if spec.min_chars is not None else 0
        high = spec.max_chars if spec.max_chars is not None else np.iinfo(np.int64).max
        return (lengths >= low) & (lengths <= high)
    if spec.column not in test.columns:
        raise ValueError(f"slice {spec.name!r}: the test rows have no column {spec.column!r} "
                         f"(they have {', '.join(map(str, test.columns))})")
    column = test[spec.column].astype(str)
    wanted = set(spec.values or [])
    selected = column.isin(wanted)
    if spec.column == "batch_id":  # a batch by its file name too: new-reviews.csv for new-reviews.csv@<sha256>
        selected |= column.str.split("@").str[0].isin(wanted)
    return selected.to_numpy(dtype=bool)


def _figures(gold: list, predicted: list, labels: list[str], token_task: bool) -> dict[str, float]:
    if token_task:
        from components.entities import entity_scores

        scores = entity_scores(gold, predicted, labels)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "entity_f1": scores["entity_f1"]}
    from sklearn.metrics import f1_score

    # Not classification_metrics: its confusion matrix warns on a slice that holds a single label.
    present = [label for label in labels if label in set(gold) | set(predicted)]
    return {"accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
            "macro_f1": float(f1_score(gold, predicted, labels=present, average="macro", zero_division=0))}


def slice_metrics(test: pd.DataFrame, predicted: list, labels: list[str], settings: EvaluateParams,
                  token_task: bool = False) -> dict[str, dict]:
    """Per slice of settings.slices, its figures on the test rows it selects.

    test: the split frame (id, text, label, batch_id); predicted: a label per row, or (token
    classification) a list of IOB2 tags per sentence, or their space-joined strings; labels: the class
    names, or the entity types."""
    if len(predicted) != len(test):
        raise ValueError(f"{len(test)} test rows but {len(predicted)} predictions")
    if token_task:
        from components.model.evaluate import split_joined

        gold = split_joined(test["label"])
        # The predictions frame holds space-joined tags, as the split's label column does.
        predicted = [(tags.split(" ") if tags else []) if isinstance(tags, str) else list(tags) for tags in predicted]
    else:
        gold = test["label"].astype(str).tolist()
        predicted = [str(label) for label in predicted]
    report: dict[str, dict] = {}
    positions = slice_rows(test, settings)
    for spec in settings.slices:
        rows = positions[spec.name]
        entry: dict = {"kind": spec.kind, "selects": spec.describe(), "rows": len(rows),
                       "min_rows": settings.min_slice_rows, "judged": bool(len(rows) >= settings.min_slice_rows)}
        if len(rows):  # figures of a small slice are reported too, only not gated
            entry.update(_figures([gold[i] for i in rows], [predicted[i] for i in rows], labels, token_task))
        report[spec.name] = entry
    return report


def slice_rows(test: pd.DataFrame, settings: EvaluateParams) -> dict[str, list[int]]:
    """Per slice of settings.slices, the positions of the test rows it selects (the rows slice_metrics scores):
    the gate compares two models' outcomes on exactly these rows (components/lifecycle/paired.py)."""
    return {spec.name: np.flatnonzero(slice_mask(test, spec)).tolist() for spec in settings.slices}


def write_slices(report: dict[str, dict], path: Path) -> None:
    """The dvc metrics file (artifacts/eval/slices.json): {"slices": {name: entry}}, written even when
    evaluate.slices is empty, since dvc.yaml declares it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"slices": report}, indent=2) + "\n")


def describe_slice(name: str, entry: dict, metric: str) -> str:
    """One line for a person: `short: macro_f1 0.9120 on 41 rows (<= 40 characters)`."""
    figure = f"{metric} {entry[metric]:.4f}" if metric in entry else f"no {metric}"
    return f"{name}: {figure} on {entry['rows']} rows ({entry.get('selects', entry.get('kind', ''))})"
