"""The evaluate stage's work, below the stage layer: the trained PyTorch model scored on the test split.
The evaluate stage and the learning curve's points score here."""

from __future__ import annotations

from pathlib import Path

from components.config import Params
from components.layout import ProjectLayout


def evaluate_on_test(layout: ProjectLayout, params: Params) -> None:
    """The PyTorch model of artifacts/model on the test split: artifacts/eval's metrics, predictions, confusion
    matrix and per-slice figures."""
    from components.model.compute import resolve_compute
    from components.model.evaluate import (
        evaluate_frame,
        evaluate_tokens_torch,
        predict_proba_torch,
        write_evaluation,
    )
    from components.model.modeling import load_torch_model

    model, tokenizer = load_torch_model(layout.model_dir)  # the same model the parity check compares
    # On the training device, in fp32: the test figures are the model's own, not autocast's.
    model.to(resolve_compute(params.train.device, "fp32").device)
    test = layout.read_split("test")
    batch_size = params.train.scoring_batch_size(_picked_eval_batch_size(layout.train_history))
    if params.is_token_task:
        metrics, predictions = evaluate_tokens_torch(model, tokenizer, test, params.data.labels,
                                                     params.model.max_length, batch_size)
    else:
        from components.data.template import apply_template

        probabilities = predict_proba_torch(model, tokenizer, apply_template(params.data.template, test["text"]),
                                            params.model.max_length, batch_size)
        metrics, predictions = evaluate_frame(test, probabilities, params.data.labels)
    write_evaluation(metrics, predictions, layout.eval_dir)
    entity = f"entity_f1={metrics['entity_f1']:.4f} " if "entity_f1" in metrics else ""
    print(f"test: {entity}accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} (n={metrics['n']})")
    # evaluate.slices on the same predictions: artifacts/eval/slices.json, a dvc metrics file (the gate
    # judges the served model's slice figures, computed the same way in components/export/scoring.py).
    from components.model.slices import describe_slice, slice_metrics, write_slices

    slices = slice_metrics(test, predictions["predicted"].tolist(), params.data.labels, params.evaluate,
                           token_task=params.is_token_task)
    write_slices(slices, layout.eval_dir / "slices.json")
    for name, entry in slices.items():
        print(f"slice {describe_slice(name, entry, params.gate.compare_metric)}"
              + ("" if entry["judged"] else f"; not judged (< {entry['min_rows']} rows)"))


def _picked_eval_batch_size(history: Path) -> int | None:
    """The scoring batch size training picked (train.eval_batch_size: auto), from its history."""
    import json

    return json.loads(history.read_text()).get("eval_batch_size") if history.is_file() else None
