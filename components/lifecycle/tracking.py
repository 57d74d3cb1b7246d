"""What every retraining run records in MLflow: data version, git commit, params, metrics, plots,
and the tags that travel with a registered version. Stages write files; this reads them back, so a
stage that DVC served from its cache is recorded the same as one that just ran."""

from __future__ import annotations

import json
import time
import warnings
from enum import StrEnum
from pathlib import Path

from components.config import Params
from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry, resolve_tracking_uri
from components.lifecycle.versioning import stage_output_hash
from components.reports import read_json_if_present

# Settings that shape the model; runtime settings (registry, approval, serve) are not model lineage.
MODEL_SECTIONS = {"task", "data", "split", "model", "adapt", "train", "sweep", "gate", "export", "drift", "distill"}
ENTITY_METRICS = ("entity_f1", "entity_precision", "entity_recall")


class RunOutcome(StrEnum):
    """How a retraining run ended: the `status` of the flow's result and the run's `outcome` tag in MLflow.
    A StrEnum, so the tag, the printed line and a result read back as JSON hold the same plain string."""

    PROMOTED = "promoted"
    UNCHANGED = "unchanged"  # the champion was built from the same data, code and params
    REJECTED_BY_GATE = "rejected-by-gate"
    REJECTED_BY_APPROVER = "rejected-by-approver"
    AWAITING_SHADOW = "awaiting-shadow"  # approved, but the shadow figures do not hold yet
    SKIPPED = "skipped"  # another run held the project or the model


def open_registry(params: Params, layout: ProjectLayout) -> ModelRegistry:
    from components.lifecycle.signing import trust_policy

    uri = resolve_tracking_uri(params.registry.tracking_uri, layout.mlflow_dir)
    trust = trust_policy(params.registry, layout.root)
    if not uri.startswith("sqlite:///"):
        # A tracking server keeps artifacts where it was told to (its proxy to S3, say): a folder on this
        # machine would be unreachable from every other client.
        return ModelRegistry(uri, params.registry.model_name, trust=trust)
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(uri, params.registry.model_name, artifact_root=layout.mlflow_dir / "artifacts", trust=trust)


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


def pii_metrics(pii: dict | None) -> dict[str, int]:
    """data.pii's totals as metrics: rows holding personal data, and findings of each type."""
    if not pii or pii["policy"] == "off":
        return {}
    return {"data_pii_rows": pii["rows_with_pii"], **{f"data_pii_{kind}": n for kind, n in pii["found"].items()}}


def start_run(registry: ModelRegistry, params: Params, layout: ProjectLayout, data: dict) -> str:
    tags = {"git_commit": data["git_commit"], "data_hash": data["data_hash"], "data_batches": data["batches"],
            "data_source": data["source"], "task": params.task, "mlflow.source.name": "tunegate retrain"}
    if data.get("pii"):  # which policy ran and what it could not look for: counts only, never the data
        tags |= {"data_pii_policy": data["pii"]["policy"], "data_pii_not_detected": data["pii"]["not_detected"] or ""}
    run_id = registry.start_run(params.registry.experiment, time.strftime("retrain-%Y%m%d-%H%M%S"), tags)
    swept = swept_params(params)  # logged once the sweep has chosen them
    registry.log_params(run_id, {k: v for k, v in flatten(model_params(params)).items() if k not in swept})
    # Token data: counts are per entity type (a per-tag-sequence count would be one metric per sentence).
    counts = {f"data_rows_{label}": n for label, n in data["label_counts"].items() if label in params.data.labels}
    registry.log_metrics(run_id, {"data_rows": data["rows"], "data_rows_quarantined": data["quarantined"],
                                  "data_batches": len(data["batches"]), **counts, **pii_metrics(data.get("pii"))})
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
    # train_peft: what trained (none, lora, prefix, p-tuning); trainable_share and seconds_per_epoch are
    # among the numbers above.
    registry.set_run_tags(run_id, {f"train_{key}": history[key]
                                   for key in ("device", "device_name", "precision", "peft", "memory",
                                               "learning_rate_rule") if key in history})
    if "replay" in history:  # continual learning: rows new, replayed and held back
        registry.log_metrics(run_id, {f"replay_{k}": v for k, v in history["replay"].items()})

    metrics = _read_json(layout.metrics_file)
    scores = {"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]}
    scores.update({f"test_{k}": metrics[k] for k in ENTITY_METRICS if k in metrics})
    for label, per_class in metrics["per_class"].items():
        scores.update({f"test_{label}_{k}": per_class[k] for k in ("precision", "recall", "f1")})
    parity = _read_json(layout.parity_file)
    scores.update({f"export_{k}": v for k, v in parity.items() if isinstance(v, (int, float))})
    scores.update(slice_metrics_of(read_json_if_present(layout.eval_dir / "slices.json")))
    registry.log_metrics(run_id, scores)

    log_split_inputs(registry, run_id, layout, token_task)
    log_teacher(registry, run_id, layout)
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
    log_explanations(registry, run_id, layout)
    log_robustness(registry, run_id, layout)


def robustness_metrics(figures: dict | None) -> dict[str, float]:
    """The robustness stage's figures as MLflow metrics: invariance_<kind> (share of predictions
    unchanged), invariance_<kind>_n, invariance_<kind>_flipped, invariance_min."""
    metrics: dict[str, float] = {}
    for kind, values in (figures or {}).items():
        if not isinstance(values, dict):
            continue
        if values.get("invariance") is not None:  # None: no row could be perturbed that way
            metrics[f"invariance_{kind}"] = values["invariance"]
        metrics.update({f"invariance_{kind}_{key}": values[key] for key in ("n", "flipped") if key in values})
    if figures and figures.get("min_invariance") is not None:
        metrics["invariance_min"] = figures["min_invariance"]
    return metrics


def log_robustness(registry: ModelRegistry, run_id: str, layout: ProjectLayout) -> None:
    """The robustness stage's shares as metrics and its files (the changed predictions) as artifacts
    (robustness/); nothing when the stage has not run (a project from before it)."""
    figures = read_json_if_present(layout.robustness_metrics)
    if figures is None:
        return
    registry.log_metrics(run_id, robustness_metrics(figures))
    for path in (layout.robustness_metrics, layout.robustness_flipped):
        if path.is_file():
            registry.log_artifact(run_id, path, "robustness")


def log_explanations(registry: ModelRegistry, run_id: str, layout: ProjectLayout) -> None:
    """The explain stage's report and summary as artifacts (explain/), the deletion test as metrics
    (explain_*); nothing when the stage has not run (a project from before it)."""
    if not layout.explain_report.is_file():
        return
    for path in (layout.explain_report, layout.explain_summary):
        if path.is_file():
            registry.log_artifact(run_id, path, "explain")
    if layout.faithfulness_file.is_file():
        figures = _read_json(layout.faithfulness_file)
        registry.log_metrics(run_id, {f"explain_{k}": v for k, v in figures.items()  # rates, n, k (not the seed)
                                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"})
    link = explain_report_link(registry, run_id)
    if link:
        registry.set_run_tags(run_id, {"explain_report": link})


REPORT_ARTIFACT = "explain/report.html"  # where log_explanations puts the explain stage's report


def explain_report_link(registry: ModelRegistry, run_id: str) -> str | None:
    """Where a person opens the run's explanation report: the MLflow UI's page of the artifact when the
    tracking URI is an HTTP server (its login removed), else the artifact's own URI (a path on this
    machine for the SQLite store); None when the run has no report."""
    folder, _, name = REPORT_ARTIFACT.rpartition("/")
    if name not in {item.path.rpartition("/")[2] for item in registry.client.list_artifacts(run_id, folder)}:
        return None
    run = registry.client.get_run(run_id)
    return artifact_link(registry.tracking_uri, run.info.experiment_id, run_id, run.info.artifact_uri, REPORT_ARTIFACT)


def artifact_link(tracking_uri: str, experiment_id: str, run_id: str, artifact_uri: str, path: str) -> str:
    """A run artifact as a person opens it: the MLflow UI's artifact view when tracking_uri is an HTTP
    server (https://host/#/experiments/E/runs/R/artifacts/PATH, without any login in the URI), else the
    artifact's URI (the run's artifact URI and the path)."""
    from components.redact import redact_uri

    if tracking_uri.startswith(("http://", "https://")):
        base = (redact_uri(tracking_uri) or "").rstrip("/")
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
    return f"{artifact_uri.rstrip('/')}/{path}"


def log_teacher(registry: ModelRegistry, run_id: str, layout: ProjectLayout) -> None:
    """Distillation: the teacher's test figures (teacher_accuracy, teacher_macro_f1, teacher_entity_f1...),
    its training settings (teacher.*) and its metrics file; nothing when the teacher stage skipped."""
    card = read_json_if_present(layout.teacher_card)
    metrics = read_json_if_present(layout.teacher_metrics) if card and card.get("enabled") else None
    if metrics is None:
        return
    registry.log_metrics(run_id, {f"teacher_{k}": metrics[k] for k in ("accuracy", "macro_f1", *ENTITY_METRICS)
                                  if k in metrics})
    registry.log_params(run_id, {"teacher.model": card["teacher_model"],
                                 "teacher.md5": output_md5(layout, "teacher", "artifacts/teacher"),
                                 **flatten(card.get("train", {}), "teacher.train.")})
    registry.log_artifact(run_id, layout.teacher_metrics, "teacher")


def teacher_tag(params: Params, layout: ProjectLayout) -> dict[str, str]:
    """{"teacher": "<distill.teacher_model>@<md5 of artifacts/teacher>"} for a distilled model, else {}."""
    if not params.distill.enabled:
        return {}
    return {"teacher": f"{params.distill.teacher_model}@{output_md5(layout, 'teacher', 'artifacts/teacher')}"}


def layers_tag(layout: ProjectLayout) -> dict[str, str]:
    """{"layers": "2", "base_layers": "[0, 2]"} for a model that model.keep_layers cut down (its saved config's
    tunegate_kept_layers, which training records), else {}. Read as JSON: this family imports no model code."""
    config = read_json_if_present(layout.model_dir / "config.json") or {}
    kept = config.get("tunegate_kept_layers")
    if not isinstance(kept, list):
        return {}
    return {"layers": str(config.get("num_hidden_layers", len(kept))), "base_layers": json.dumps(kept)}


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
    from mlflow.entities import DatasetInput, InputTag

    from components.layout import SPLITS

    inputs, counts = [], {}
    digest = output_md5(layout, "preprocess", "artifacts/splits")[:12]
    for split in SPLITS:
        frame = layout.read_split(split)
        counts[f"split_{split}_rows"] = len(frame)
        counts.update({f"split_{split}_rows_{label}": n for label, n in label_counts(frame["label"], token_task).items()})
        with warnings.catch_warnings():  # MLflow cannot tell which of two local-file sources a path is
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=str(layout.split_file(split)), targets="label",
                                              name=f"{split}-split", digest=digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", split)]))
    registry.log_metrics(run_id, counts)
    registry.client.log_inputs(run_id, datasets=inputs)


def slice_metrics_of(report: dict | None, prefix: str = "") -> dict[str, float]:
    """evaluate.slices' figures (artifacts/eval/slices.json, or the gate's served metrics; entries as
    components/model/slices.py writes them) as MLflow metrics: slice_<name>_rows, _judged (1 or 0) and each
    figure (_accuracy, _macro_f1, _entity_f1), every name with `prefix` before it (int8_ for the served model)."""
    metrics: dict[str, float] = {}
    for name, entry in ((report or {}).get("slices") or {}).items():
        metrics[f"{prefix}slice_{name}_rows"] = entry["rows"]
        metrics[f"{prefix}slice_{name}_judged"] = 1.0 if entry["judged"] else 0.0
        metrics.update({f"{prefix}slice_{name}_{key}": value for key, value in entry.items()
                        if key in ("accuracy", "macro_f1", "entity_f1")})
    return metrics


def log_gate(registry: ModelRegistry, run_id: str, verdict: dict) -> None:
    served = verdict["challenger_metrics"]
    registry.log_metrics(run_id, {"int8_test_accuracy": served["accuracy"], "int8_test_macro_f1": served["macro_f1"],
                                  **{f"int8_test_{k}": served[k] for k in ENTITY_METRICS if k in served}})
    # The served model's slice figures, which the gate judged: int8_slice_<name>_<metric>.
    registry.log_metrics(run_id, slice_metrics_of(served, prefix="int8_"))
    # The paired comparisons with the champion (the difference and its interval): gate_vs_champion_diff, ...
    registry.log_metrics(run_id, gate_interval_metrics(verdict["decision"]))
    registry.set_run_tags(run_id, {"gate": "passed" if verdict["passed"] else "failed"})
    registry.log_json(run_id, verdict["decision"], "gate/decision.json")


# What each regression check's paired comparison (GateCheck.interval) is logged as: gate_<check>_<suffix>.
GATE_INTERVAL_METRICS = {"difference": "diff", "low": "low", "high": "high", "mcnemar_p": "mcnemar_p"}
VS_CHAMPION_FIGURES = ("metric", "champion", "challenger", "difference", "low", "high", "confidence", "resamples",
                       "n", "allowed", "mcnemar_p")


def gate_interval_metrics(decision: dict) -> dict[str, float]:
    """The regression checks judged on an interval (components/lifecycle/gate.py) as MLflow metrics:
    gate_<check>_diff (champion - challenger), gate_<check>_low and _high (its interval) and, for accuracy,
    gate_<check>_mcnemar_p; e.g. gate_vs_champion_diff. Nothing for checks judged by the point rule."""
    metrics: dict[str, float] = {}
    for check in decision.get("checks", []):
        interval = check.get("interval") or {}
        metrics.update({f"gate_{check['name']}_{suffix}": float(interval[key])
                        for key, suffix in GATE_INTERVAL_METRICS.items() if interval.get(key) is not None})
    return metrics


def vs_champion_tag(verdict: dict) -> dict:
    """{"vs_champion": {champion_version, metric, difference, low, high, ...}}: the gate's paired comparison with
    the champion, for the model card; {} when there was none (no champion, or the point rule)."""
    decision = verdict.get("decision") or {}
    interval = next((check.get("interval") for check in decision.get("checks", []) if check["name"] == "vs_champion"),
                    None)
    if not interval:
        return {}
    return {"vs_champion": {"champion_version": decision.get("champion_version"),
                            **{key: interval[key] for key in VS_CHAMPION_FIGURES if interval.get(key) is not None}}}


def version_tags(params: Params, layout: ProjectLayout, data: dict, verdict: dict, model_md5: str) -> dict:
    served = verdict["challenger_metrics"]
    return {
        "git_commit": data["git_commit"],
        "data_hash": data["data_hash"],
        "data_batches": data["batches"],
        "task": params.task,
        "labels": params.data.labels,
        "base_model": params.model.base_model,
        **teacher_tag(params, layout),
        **layers_tag(layout),
        **batch_size_tag(layout),
        "params": model_params(params),
        "model_md5": model_md5,
        "gate": "passed" if verdict["passed"] else "failed",
        "gate_reasons": verdict["summary"],
        "test_accuracy": f"{served['accuracy']:.4f}",
        "test_macro_f1": f"{served['macro_f1']:.4f}",
        "test_rows": str(served["n"]),
        **{f"test_{k}": f"{served[k]:.4f}" for k in ENTITY_METRICS if k in served},
        **robustness_tag(layout),
        # evaluate.slices, the served model's figures per slice (the model card's table).
        **({"slices": served["slices"]} if served.get("slices") else {}),
        **vs_champion_tag(verdict),  # the model card's line on the champion
    }


def batch_size_tag(layout: ProjectLayout) -> dict:
    """{"batch_size": {picked, budget, learning rate and its rule}} when train.batch_size: auto picked it (the
    model card says so); {} for a batch size params.yaml gave."""
    history = read_json_if_present(layout.train_history) or {}
    if "memory_budget_bytes" not in history:
        return {}
    return {"batch_size": {key: history[key] for key in ("batch_size", "eval_batch_size", "memory_budget_bytes",
                                                          "memory", "learning_rate", "learning_rate_rule")
                           if key in history}}


def robustness_tag(layout: ProjectLayout) -> dict:
    """{"robustness": {kind: {invariance, n, flipped}}} for the version (the model card's table), or {}."""
    figures = read_json_if_present(layout.robustness_metrics) or {}
    kinds = {kind: {key: values.get(key) for key in ("invariance", "n", "flipped")}
             for kind, values in figures.items() if isinstance(values, dict)}
    return {"robustness": kinds} if kinds else {}


def approval_description(model_name: str, version: str, verdict: dict, explain_report: str | None = None,
                         shadow: str | None = None) -> str:
    """What the approver reads (the Prefect pause form); explain_report: explain_report_link's answer;
    shadow: the shadow challenger's figures and requirement (components/serving/shadow_report.py)."""
    served = verdict["challenger_metrics"]
    entity = f"entity F1 {served['entity_f1']:.4f}, " if "entity_f1" in served else ""
    report = (f"\n\nWhat it gets wrong, and why (most confident test errors with word attributions, deletion "
              f"test): [explanation report]({explain_report})" if explain_report else "")
    return (f"## Approve {model_name} v{version} for production?\n\n"
            f"Test {entity}accuracy {served['accuracy']:.4f}, macro-F1 {served['macro_f1']:.4f} "
            f"on {served['n']} rows (the ONNX export, as served).{report}\n\n```\n{verdict['summary']}\n```"
            + (f"\n\nShadow (live traffic, figures when this form was written; now: `tunegate shadow-report "
               f"--version {version}`):\n\n```\n{shadow}\n```" if shadow else ""))


def finish(registry: ModelRegistry, run_id: str, status: RunOutcome, version: str | None, message: str) -> dict:
    registry.set_run_tags(run_id, {"outcome": status, "outcome_version": version or "", "outcome_message": message})
    registry.end_run(run_id)
    return {"status": status, "version": version, "message": message, "run_id": run_id,
            "model_name": registry.model_name, "tracking_uri": registry.tracking_uri}
