"""The hyperparameter sweep as a Prefect subflow: one task per trial, at most sweep.max_concurrency at
a time, each trial a nested MLflow run under the retraining run; the best trial by its validation
metric becomes the train stage's result, so the chain goes on with it without training again.

Call `run_sweep` after every stage the train stage reads (preprocess, adapt, start, teacher, distill)
and before `dvc repro train`. With sweep.runner: dask the trials
are Dask tasks (prefect-dask's DaskTaskRunner), on the scheduler at sweep.address or on a LocalCluster
started for the sweep; each still records its own nested MLflow run, from its worker process.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from components.config import STUDENT_LOSS_KEYS, ConfigError, Params
from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry
from components.lifecycle.tracking import flatten
from components.model.sweep import (
    SUMMARY_FILE,
    SweepSummary,
    TrialFailure,
    TrialResult,
    all_failed,
    apply_trial,
    best_trial,
    check_trials,
    previous_summary,
    sweep_dir,
    threads_per_trial,
    train_trial,
    trial_name,
)

PARENT_TAG = "mlflow.parentRunId"
# MLflow's SQLite store takes one writer at a time; trials finishing together queue here instead.
_mlflow_lock = threading.Lock()
SQLITE_PREFIX = "sqlite:///"


@contextmanager
def mlflow_writes(tracking_uri: str) -> Iterator[None]:
    """One MLflow writer at a time on a SQLite store: threads of this process queue on _mlflow_lock, and
    processes (trials on Dask workers) on an OS file lock beside the database, which the kernel releases
    if a worker dies holding it. A tracking server needs neither and gets only the thread lock."""
    with _mlflow_lock:
        if not tracking_uri.startswith(SQLITE_PREFIX):
            yield
            return
        database = Path(tracking_uri[len(SQLITE_PREFIX):].split("?", 1)[0])
        with database.with_name(database.name + ".tunegate-lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def failed_run_on_error(registry: ModelRegistry, run_id: str) -> Iterator[None]:
    """A nested run whose training raised ends failed, with the error's tail as a tag; the error goes on."""
    try:
        yield
    except BaseException as error:
        with mlflow_writes(registry.tracking_uri):
            registry.set_run_tags(run_id, {"error": str(error)[-4000:]})
            registry.end_run(run_id, failed=True)
        raise


def log_history(registry: ModelRegistry, run_id: str, history_file: Path) -> None:
    history = json.loads(history_file.read_text())
    for record in history.get("history", []):
        metrics = {k: v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}
        registry.log_metrics(run_id, metrics, step=record["epoch"])


def swept_sections(params: Params) -> dict[str, Any]:
    """What a trial's MLflow run records of its settings: train, and the student's distillation knobs."""
    sections: dict[str, Any] = {"train": params.train.model_dump(mode="json")}
    if params.distill.enabled:
        sections["distill"] = params.distill.model_dump(mode="json", include=set(STUDENT_LOSS_KEYS))
    return sections


@task(name="sweep-trial", task_run_name="trial-{index}", cache_policy=NO_CACHE, persist_result=False)
def sweep_trial(params: Params, layout: ProjectLayout, registry: ModelRegistry, parent_run_id: str, index: int,
                overrides: dict[str, Any], threads: int) -> TrialResult:
    from components.model.sweep import params_with

    trial_params = params_with(params, overrides)
    with mlflow_writes(registry.tracking_uri):
        run_id = registry.start_run(params.registry.experiment, trial_name(index), {
            PARENT_TAG: parent_run_id, "sweep_trial": str(index), "sweep_overrides": overrides,
            "mlflow.source.name": "tunegate sweep"})
        registry.log_params(run_id, {**flatten(swept_sections(trial_params)),
                                     "sweep.trial": str(index), "sweep.threads": str(threads)})
    get_run_logger().info("%s %s: training with %d torch thread(s), MLflow run %s",
                          trial_name(index), overrides, threads, run_id)
    with failed_run_on_error(registry, run_id):
        result = train_trial(layout, params, index, overrides, threads, run_id=run_id)
    with mlflow_writes(registry.tracking_uri):
        log_history(registry, run_id, result.history_file)
        registry.log_metrics(run_id, {"best_score": result.best_score, "best_epoch": result.best_epoch,
                                      "trial_seconds": result.seconds})
        registry.set_run_tags(run_id, {"metric": result.metric})
        registry.end_run(run_id)
    get_run_logger().info("%s: best %s %.4f (epoch %d) in %.0f s", trial_name(index), result.metric,
                          result.best_score, result.best_epoch, result.seconds)
    return result


@task(name="apply-best-trial", cache_policy=NO_CACHE, persist_result=False)
def apply_best(params: Params, layout: ProjectLayout, best: TrialResult) -> dict[str, Any]:
    return apply_trial(layout, params, best)


def _log_summary(registry: ModelRegistry, run_id: str, summary: dict) -> None:
    tags = {"sweep_best_trial": trial_name(summary["best_trial"]), "sweep_metric": summary["metric"],
            "sweep_method": summary["method"], "sweep_best_overrides": summary["best_overrides"],
            "sweep_cached": str(summary["cached"]).lower()}
    tags.update({f"sweep_best.{key}": value for key, value in summary["best_overrides"].items()})
    if summary.get("best_run_id"):
        tags["sweep_best_run_id"] = summary["best_run_id"]
    with mlflow_writes(registry.tracking_uri):
        registry.set_run_tags(run_id, tags)
        per_trial = {f"sweep_{trial_name(row['trial']).replace('-', '_')}_best_score": row["best_score"]
                     for row in summary["trials"] if row.get("best_score") is not None}
        registry.log_metrics(run_id, {"sweep_best_score": summary["best_score"], "sweep_trials": len(summary["trials"]),
                                      "sweep_trials_failed": summary["failed"], **per_trial})
        registry.log_json(run_id, summary, "sweep/summary.json")


@flow(name="tunegate-sweep", validate_parameters=False)
def sweep_flow(params: Params, layout: ProjectLayout, registry: ModelRegistry, parent_run_id: str,
               threads: int | None = None) -> dict:
    """Run the trials (the task runner, set by run_sweep, bounds how many at once), apply the best.

    threads: torch threads per trial (default: this machine's cores shared by the trials running at once).
    """
    logger = get_run_logger()
    earlier = previous_summary(layout, params)
    if earlier is not None:
        logger.info("the train stage still holds the sweep's winner %s %s (%s %.4f): not sweeping again",
                    trial_name(earlier["best_trial"]), earlier["best_overrides"], earlier["metric"],
                    earlier["best_score"])
        earlier = {**earlier, "cached": True}
        _log_summary(registry, parent_run_id, earlier)
        return earlier

    trials = check_trials(params)
    threads = threads or threads_per_trial(params.sweep.max_concurrency, len(trials))
    directory = sweep_dir(layout)
    if directory.exists():
        shutil.rmtree(directory)  # the previous sweep's trials: none of them is comparable any more
    logger.info("%s sweep on %s: %d trials, at most %d at once, %d torch thread(s) each", params.sweep.method,
                params.sweep.runner if not params.sweep.address else params.sweep.address, len(trials),
                params.sweep.max_concurrency, threads)
    futures = [sweep_trial.submit(params, layout, registry, parent_run_id, index, overrides, threads)
               for index, overrides in enumerate(trials)]

    results: list[TrialResult] = []
    failures: list[TrialFailure] = []
    for index, (overrides, future) in enumerate(zip(trials, futures)):
        outcome = future.result(raise_on_failure=False)  # one failed trial does not stop the others
        if isinstance(outcome, TrialResult):
            results.append(outcome)
        else:
            failures.append(TrialFailure(index, overrides, str(outcome)))
            logger.warning("%s %s failed: %s", trial_name(index), overrides, outcome)
    if not results:
        raise all_failed(failures)

    best = best_trial(results)
    logger.info("best: %s %s with %s %.4f", trial_name(best.index), best.overrides, best.metric, best.best_score)
    previous = apply_best(params, layout, best)
    for result in results:  # the losers' weights: their history, params and log stay for reading
        if result.index != best.index and result.model_dir.exists():
            shutil.rmtree(result.model_dir)
    summary = SweepSummary(params.sweep.method, best.metric, best, results, failures, previous)
    summary = summary.to_dict(params, layout.root)
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _log_summary(registry, parent_run_id, summary)
    return summary


def run_sweep(params: Params, layout: ProjectLayout, registry: ModelRegistry, parent_run_id: str) -> dict:
    """Sweep, apply the best trial to params.yaml and the train stage's outputs (committed to DVC).

    Returns the summary: method, metric, best_trial, best_score, best_overrides, best_run_id,
    previous_values (params.yaml's values before), trials (one row per trial), failed, cached
    (true when the train stage still held this sweep's winner and nothing ran). Raises
    SweepFailed when every trial failed, ConfigError when a trial's values are not valid settings.
    After it returns, reload params.yaml: its swept values are the winner's.
    """
    if params.sweep.runner == "dask":
        return _run_on_dask(params, layout, registry, parent_run_id)
    runner = ThreadPoolTaskRunner(max_workers=params.sweep.max_concurrency)
    return sweep_flow.with_options(task_runner=runner)(params, layout, registry, parent_run_id)


def prefect_api_url() -> tuple[str, bool]:
    """The Prefect API this process talks to, and whether it is the ephemeral one Prefect started here
    (no PREFECT_API_URL: a server subprocess on 127.0.0.1, started now if it was not yet)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        return configured.rstrip("/"), False
    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/"), True


def _run_on_dask(params: Params, layout: ProjectLayout, registry: ModelRegistry, parent_run_id: str) -> dict:
    """The sweep flow with a DaskTaskRunner. Every trial task reports to the flow's Prefect API: a worker
    without one would start a temporary Prefect server of its own, and its task runs would be lost to
    the flow. The flow runs with PREFECT_API_URL set to that API, and Prefect sends its settings along
    with each task; a LocalCluster's workers also get it in their environment."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    from components.dask_cluster import cluster_shape, connect, is_loopback, local_cluster_kwargs

    sweep = params.sweep
    n_trials = len(check_trials(params))
    if sweep.address and not PREFECT_API_URL.value():
        raise ConfigError(
            f"sweep.address {sweep.address}: the Dask workers need a Prefect server they can reach, and this "
            "process runs Prefect's temporary one (no PREFECT_API_URL). Start one with `prefect server start "
            "--host 0.0.0.0` and set PREFECT_API_URL=http://<its host>:4200/api here (and on the workers)")
    api_url, _ = prefect_api_url()
    if sweep.address:
        logger = get_run_logger_or_print()
        if is_loopback(api_url) and not is_loopback(sweep.address):
            logger(f"PREFECT_API_URL {api_url} is on this machine only: workers on other machines will not reach it")
        if registry.tracking_uri.startswith(SQLITE_PREFIX) and not is_loopback(sweep.address):
            logger(f"MLflow tracking on SQLite ({registry.tracking_uri}): workers on other machines need it at the "
                   "same path, and SQLite on a network file system is not safe; set MLFLOW_TRACKING_URI to a "
                   "tracking server")
        with connect(sweep.address) as client:  # reachable, with workers: or fail now, before any flow run
            shape = cluster_shape(client)
        threads = shape.threads_per_task
        runner = DaskTaskRunner(address=sweep.address)
    else:
        workers = min(sweep.max_concurrency, n_trials)  # a worker more than trials would stay idle
        threads = threads_per_trial(sweep.max_concurrency, n_trials)
        runner = DaskTaskRunner(cluster_class="distributed.LocalCluster",
                                cluster_kwargs=local_cluster_kwargs(workers, env={"PREFECT_API_URL": api_url}))
    with temporary_settings({PREFECT_API_URL: api_url}):
        return sweep_flow.with_options(task_runner=runner)(params, layout, registry, parent_run_id, threads=threads)


def get_run_logger_or_print():
    """Warnings go to the Prefect run's log inside a flow (the retrain flow calls run_sweep), else to stdout."""
    try:
        logger = get_run_logger()
    except Exception:  # noqa: BLE001 - MissingContextError: called outside a flow run
        return print
    return logger.warning
