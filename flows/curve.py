"""`tunegate curve`: learning curves as a Prefect flow over the sweep's machinery.

prepare the splits -> plan the points -> train the points (tasks, at most curve.max_concurrency at once,
each a nested MLflow run) -> table & plot -> log them to the parent MLflow run.

A point whose result is stored (components/model/curve.py: same splits, params, size and seed) is not
trained again: it still gets a nested run in this curve's parent, tagged curve_cached=true and naming
the run that trained it (curve_trained_in_run), so every curve run shows all its points.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from components.config import Params, load_params
from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry
from components.model.curve import CurvePoint, cached_result, curve_dir, plan_points, run_point
from components.model.curve_report import curve_metric, write_outputs
from components.model.sweep import threads_per_trial
from flows.retrain import ML_STAGES, RETRY, ingest_data, run_stage_group, transient_only
from flows.sweep import PARENT_TAG, failed_run_on_error, log_history, mlflow_writes

POINT_METRICS = ("val_accuracy", "val_macro_f1", "val_entity_f1", "test_accuracy", "test_macro_f1", "test_entity_f1",
                 "trainable_share", "seconds_per_epoch", "train_seconds", "best_epoch", "epochs_run")


def with_choices(params: Params, methods: list[str] | None, sizes: list[int | str] | None,
                 seeds: list[int] | None) -> Params:
    """params with the curve narrowed to the CLI's --methods / --sizes / --seeds (validated)."""
    return params.model_copy(update={"curve": params.curve.choose(methods, sizes, seeds)})


def prepare_splits(params: Params, layout: ProjectLayout) -> None:
    """What `tunegate run` does before training: data/ in line with data.source (versioned), then the
    DVC stages the train stage reads (each a no-op when nothing changed)."""
    ingest_data(params, layout)
    for stages in ML_STAGES[:ML_STAGES.index(("train",))]:
        run_stage_group(params, layout, stages)


@task(name="curve-plan", cache_policy=NO_CACHE)
def plan(params: Params, layout: ProjectLayout) -> list[CurvePoint]:
    points = plan_points(layout, params)
    done = sum(cached_result(layout, p) is not None for p in points)
    get_run_logger().info("%d points (%d methods x %d sizes x %d seeds), %d stored from earlier runs",
                          len(points), len(params.curve.methods), len({p.size for p in points}),
                          len(params.curve.seeds), done)
    return points


def _point_params(point: CurvePoint) -> dict[str, str]:
    return {"curve.method": point.method, "curve.size": str(point.size), "curve.labels": str(point.labels),
            "curve.seed": str(point.seed), "curve.epochs": str(point.epochs), "curve.key": point.key,
            **{key: str(value) for key, value in point.overrides.items()}}


def _point_metrics(result: dict) -> dict[str, float]:
    return {name: float(result[name]) for name in POINT_METRICS if result.get(name) is not None}


# A point is retried once on what may pass on a second try, never on a user error (ConfigError, missing
# splits): a training run that crashed will most likely crash again, and each try costs a whole training.
POINT_RETRY = {"retries": 1, "retry_delay_seconds": 5, "retry_condition_fn": transient_only}


@task(name="curve-point", task_run_name="{name}", cache_policy=NO_CACHE, persist_result=False, **POINT_RETRY)
def train_point(params: Params, layout: ProjectLayout, registry: ModelRegistry, parent_run_id: str,
                point: CurvePoint, name: str, threads: int) -> dict:
    """One point as a nested run: trained (or taken from its stored result), scored, recorded."""
    stored = cached_result(layout, point)
    tags = {PARENT_TAG: parent_run_id, "curve_method": point.method, "curve_size": str(point.size),
            "curve_seed": str(point.seed), "curve_cached": str(stored is not None).lower(),
            "mlflow.source.name": "tunegate curve"}
    if stored is not None and stored.get("run_id"):
        tags["curve_trained_in_run"] = stored["run_id"]
    with mlflow_writes(registry.tracking_uri):
        run_id = registry.start_run(params.registry.experiment, name, tags)
        registry.log_params(run_id, _point_params(point))
    if stored is not None:
        with mlflow_writes(registry.tracking_uri):
            registry.log_metrics(run_id, _point_metrics(stored))
            registry.end_run(run_id)
        return {**stored, "cached": True}
    get_run_logger().info("%s: %d rows, %d epochs, %d torch thread(s), MLflow run %s", name, point.labels,
                          point.epochs, threads, run_id)
    with failed_run_on_error(registry, run_id):
        result = run_point(layout, params, point, threads, run_id=run_id)
    with mlflow_writes(registry.tracking_uri):
        history = layout.artifacts / "curve" / "points" / point.key / "train_history.json"
        if history.is_file():
            log_history(registry, run_id, history)
        registry.log_metrics(run_id, _point_metrics(result))
        registry.end_run(run_id)
    metric = curve_metric(params.is_token_task)
    get_run_logger().info("%s: test %s %.4f, %.1f s per epoch", name, metric, result[f"test_{metric}"],
                          result["seconds_per_epoch"])
    return {**result, "cached": False}


@task(name="curve-table-and-plot", cache_policy=NO_CACHE)
def table_and_plot(params: Params, layout: ProjectLayout, rows: list[dict], failed: list[dict], command: str,
                   parent_run_id: str):
    methods = list(params.curve.methods)
    extra = {"parent_run_id": parent_run_id, "sizes": params.curve.sizes, "seeds": params.curve.seeds,
             "min_steps": params.curve.min_steps, "task": params.task}
    return write_outputs(curve_dir(layout), rows, failed, params.is_token_task, methods, command, extra)


@task(name="curve-log-to-mlflow", cache_policy=NO_CACHE, **RETRY)
def log_curve(registry: ModelRegistry, run_id: str, files, rows: list[dict], failed: list[dict], metric: str) -> None:
    means: dict[str, list[float]] = {}
    for row in rows:
        means.setdefault(f"{row['method']}_{row['labels']}_test_{metric}", []).append(row[f"test_{metric}"])
    with mlflow_writes(registry.tracking_uri):
        registry.log_metrics(run_id, {**{k: sum(v) / len(v) for k, v in means.items()},
                                      "curve_points": len(rows), "curve_points_failed": len(failed),
                                      "curve_points_cached": sum(bool(r.get("cached")) for r in rows)})
        for path in (files.csv, files.json, files.plot, files.readme):
            if path is not None:
                registry.log_artifact(run_id, path, "curve")
        registry.end_run(run_id, failed=bool(failed) and not rows)


@flow(name="tunegate-curve", log_prints=True, validate_parameters=False)
def curve_flow(params: Params, layout: ProjectLayout, prepare: bool = True, command: str = "tunegate curve") -> dict:
    from components.lifecycle.tracking import flatten, open_registry

    if prepare:
        prepare_splits(params, layout)
    points = plan(params, layout)
    registry = open_registry(params, layout)
    parent = registry.start_run(params.registry.experiment, time.strftime("curve-%Y%m%d-%H%M%S"),
                                {"mlflow.source.name": "tunegate curve", "task": params.task,
                                 "curve_methods": list(params.curve.methods)})
    try:
        registry.log_params(parent, flatten({"curve": params.curve.model_dump(mode="json"),
                                             "model": params.model.model_dump(mode="json"),
                                             "train": params.train.model_dump(mode="json")}))
        to_train = sum(cached_result(layout, p) is None for p in points)
        threads = threads_per_trial(params.curve.max_concurrency, max(to_train, 1))
        futures = [train_point.submit(params, layout, registry, parent, p, p.name, threads) for p in points]
        rows, failed = [], []
        for point, future in zip(points, futures):
            outcome = future.result(raise_on_failure=False)  # one failed point does not stop the others
            if isinstance(outcome, dict):
                rows.append(outcome)
            else:
                failed.append({**point.to_dict(), "name": point.name, "error": str(outcome)})
                get_run_logger().warning("%s failed: %s", point.name, outcome)
        files, table = table_and_plot(params, layout, rows, failed, command, parent)
        log_curve(registry, parent, files, rows, failed, curve_metric(params.is_token_task))
    except BaseException:
        registry.end_run(parent, failed=True)
        raise
    return {"run_id": parent, "table": table, "points": len(points), "trained": sum(not r["cached"] for r in rows),
            "failed": failed, "csv": str(files.csv), "plot": str(files.plot) if files.plot else None,
            "readme": str(files.readme), "tracking_uri": registry.tracking_uri}


def run_curve(project_dir: str | Path = ".", methods: list[str] | None = None, sizes: list[Any] | None = None,
              seeds: list[int] | None = None, prepare: bool = True, command: str = "tunegate curve") -> dict:
    """The curve on the project: its params.yaml's curve section, narrowed by the arguments; holds the
    project's run lock (it runs the DVC stages up to the tokenized splits, as a retraining run does)."""
    from components.lifecycle.locking import exclusive_run

    layout = ProjectLayout(Path(project_dir).resolve())
    params = with_choices(load_params(layout.params_file), methods, sizes, seeds)
    runner = ThreadPoolTaskRunner(max_workers=params.curve.max_concurrency)
    with exclusive_run(layout.run_lock, wait=True):
        return curve_flow.with_options(task_runner=runner)(params, layout, prepare, command)
