"""What every retraining run records in MLflow: data version, git commit, params, metrics, plots,
and the tags that travel with a registered version. Stages write files; this reads them back, so a
stage that DVC served from its cache is recorded the same as one that just ran."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from components.config import Params
from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry, resolve_tracking_uri
from components.lifecycle.versioning import stage_output_hash

# Settings that shape the model; runtime settings (registry, approval, serve) are not model lineage.
MODEL_SECTIONS = {"task", "data", "split", "model", "adapt", "train", "sweep", "gate", "export", "drift"}
ENTITY_METRICS = ("entity_f1", "entity_precision", "entity_recall")


def open_registry(params: Params, layout: ProjectLayout) -> ModelRegistry:
    uri = resolve_tracking_uri(params.registry.tracking_uri, layout.mlflow_dir)
    if not uri.startswith("sqlite:///"):
        # A tracking server keeps artifacts where it was told to (its proxy to S3, say): a folder on this
        # machine would be unreachable from every other client.
        return ModelRegistry(uri, params.registry.model_name)
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(uri, params.registry.model_name, artifact_root=layout.mlflow_dir / "artifacts")


def model_params(params: Params) -> dict:
    return params.model_dump(include=MODEL_SECTIONS)


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return flat


def start_run(registry: ModelRegistry, params: Params, layout: ProjectLayout, data: dict) -> str:
    tags = {"git_commit": data["git_commit"], "data_hash": data["data_hash"], "data_batches": data["batches"],
            "data_source": data["source"], "task": params.task, "mlflow.source.name": "tunegate retrain"}
    run_id = registry.start_run(params.registry.experiment, time.strftime("retrain-%Y%m%d-%H%M%S"), tags)
    swept = swept_params(params)  # logged once the sweep has chosen them
    registry.log_params(run_id, {k: v for k, v in flatten(model_params(params)).items() if k not in swept})
    # Token data: counts are per entity type (a per-tag-sequence count would be one metric per sentence).
    counts = {f"data_rows_{label}": n for label, n in data["label_counts"].items() if label in params.data.labels}
    registry.log_metrics(run_id, {"data_rows": data["rows"], "data_rows_quarantined": data["quarantined"],
                                  "data_batches": len(data["batches"]), **counts})
    return run_id


def swept_params(params: Params) -> dict[str, str]:
    """The flattened params a sweep will set (empty without a sweep), with today's values."""
    if not params.sweep.enabled:
        return {}
    flat = flatten(model_params(params))
    return {key: flat[key] for key in params.sweep.space if key in flat}


def output_md5(layout: ProjectLayout, stage: str, path: str) -> str:
    md5 = stage_output_hash(layout.root, stage, path)
    if md5 is None:
        raise RuntimeError(f"dvc.lock has no hash for {path} of stage {stage!r}; did `dvc repro {stage}` run?")
    return md5


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def log_stage_outputs(registry: ModelRegistry, run_id: str, layout: ProjectLayout, token_task: bool = False) -> None:
    history = _read_json(layout.train_history)
    for record in history["history"]:
        registry.log_metrics(run_id, {k: v for k, v in record.items() if k != "epoch" and v is not None},
                             step=record["epoch"])
    # best_epoch, train_examples, best_score, parameter counts: every number of the summary.
    registry.log_metrics(run_id, {k: v for k, v in history.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
    registry.set_run_tags(run_id, {f"train_{key}": history[key] for key in ("device", "device_name", "precision")
                                   if key in history})
    if "replay" in history:  # continual learning: rows new, replayed and held back
        registry.log_metrics(run_id, {f"replay_{k}": v for k, v in history["replay"].items()})

    metrics = _read_json(layout.metrics_file)
    scores = {"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]}
    scores.update({f"test_{k}": metrics[k] for k in ENTITY_METRICS if k in metrics})
    for label, per_class in metrics["per_class"].items():
        scores.update({f"test_{label}_{k}": per_class[k] for k in ("precision", "recall", "f1")})
    parity = _read_json(layout.parity_file)
    scores.update({f"export_{k}": v for k, v in parity.items() if isinstance(v, (int, float))})
    registry.log_metrics(run_id, scores)

    log_split_inputs(registry, run_id, layout, token_task)
    registry.set_run_tags(run_id, {"model_md5": output_md5(layout, "export", "artifacts/onnx"),
                                   "torch_model_md5": output_md5(layout, "train", "artifacts/model")})
    registry.log_artifact(run_id, layout.validation_docs, "validation/data_docs")
    artifact_uri = registry.client.get_run(run_id).info.artifact_uri
    registry.set_run_tags(run_id, {"data_docs": f"{artifact_uri}/validation/data_docs/index.html"})
    for path, folder in [(layout.validation_report, "validation"), (layout.eval_dir, "evaluation"),
                         (layout.train_history, "training"), (layout.parity_file, "export"),
                         # the lineage `tunegate reproduce` restores (components/lifecycle/reproduce.py)
                         (layout.params_file, "config"), (layout.root / "dvc.lock", "config"),
                         (layout.data_dir.with_suffix(".dvc"), "config"),
                         (layout.data_dir / "manifest.json", "data"), (layout.data_dir / "reports", "data/reports")]:
        registry.log_artifact(run_id, path, folder)


def label_counts(labels, token_task: bool) -> dict[str, int]:
    """Examples per class, or (token data: space-joined IOB2 tags) entities per type."""
    if not token_task:
        return {str(k): int(v) for k, v in labels.value_counts().items()}
    begins = labels.str.split(" ").explode()
    begins = begins[begins.str.startswith("B-")].str[2:]
    return {f"entities_{k}": int(v) for k, v in begins.value_counts().items()}


def log_split_inputs(registry: ModelRegistry, run_id: str, layout: ProjectLayout, token_task: bool = False) -> None:
    """Rows per split and label as metrics, and each split as an MLflow dataset input of the run."""
    import mlflow.data
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    from components.layout import SPLITS

    inputs, counts = [], {}
    digest = output_md5(layout, "preprocess", "artifacts/splits")[:12]
    for split in SPLITS:
        frame = pd.read_csv(layout.split_file(split), dtype=str, keep_default_na=False)
        counts[f"split_{split}_rows"] = len(frame)
        counts.update({f"split_{split}_rows_{label}": n for label, n in label_counts(frame["label"], token_task).items()})
        with warnings.catch_warnings():  # MLflow cannot tell which of two local-file sources a path is
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=str(layout.split_file(split)), targets="label",
                                              name=f"{split}-split", digest=digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", split)]))
    registry.log_metrics(run_id, counts)
    registry.client.log_inputs(run_id, datasets=inputs)


def log_gate(registry: ModelRegistry, run_id: str, verdict: dict) -> None:
    served = verdict["challenger_metrics"]
    registry.log_metrics(run_id, {"int8_test_accuracy": served["accuracy"], "int8_test_macro_f1": served["macro_f1"],
                                  **{f"int8_test_{k}": served[k] for k in ENTITY_METRICS if k in served}})
    registry.set_run_tags(run_id, {"gate": "passed" if verdict["passed"] else "failed"})
    registry.log_json(run_id, verdict["decision"], "gate/decision.json")


def version_tags(params: Params, layout: ProjectLayout, data: dict, verdict: dict, model_md5: str) -> dict:
    served = verdict["challenger_metrics"]
    return {
        "git_commit": data["git_commit"],
        "data_hash": data["data_hash"],
        "data_batches": data["batches"],
        "task": params.task,
        "labels": params.data.labels,
        "base_model": params.model.base_model,
        "params": model_params(params),
        "model_md5": model_md5,
        "gate": "passed" if verdict["passed"] else "failed",
        "gate_reasons": verdict["summary"],
        "test_accuracy": f"{served['accuracy']:.4f}",
        "test_macro_f1": f"{served['macro_f1']:.4f}",
        "test_rows": str(served["n"]),
        **{f"test_{k}": f"{served[k]:.4f}" for k in ENTITY_METRICS if k in served},
    }


def approval_description(model_name: str, version: str, verdict: dict) -> str:
    served = verdict["challenger_metrics"]
    entity = f"entity F1 {served['entity_f1']:.4f}, " if "entity_f1" in served else ""
    return (f"## Approve {model_name} v{version} for production?\n\n"
            f"Test {entity}accuracy {served['accuracy']:.4f}, macro-F1 {served['macro_f1']:.4f} "
            f"on {served['n']} rows (the ONNX export, as served).\n\n```\n{verdict['summary']}\n```")


def finish(registry: ModelRegistry, run_id: str, status: str, version: str | None, message: str) -> dict:
    registry.set_run_tags(run_id, {"outcome": status, "outcome_version": version or "", "outcome_message": message})
    registry.end_run(run_id)
    return {"status": status, "version": version, "message": message, "run_id": run_id,
            "model_name": registry.model_name, "tracking_uri": registry.tracking_uri}
