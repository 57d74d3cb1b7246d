"""The monitoring flow: live traffic (the service's prediction log) against the champion's training data.

read-traffic -> monitor-report (drift, low-confidence share, predicted-label shares) -> labelling-queue
(warn or fail only) -> log-to-mlflow -> write-report (.tunegate/monitor/: monitor-<stamp>.json,
latest.json, tunegate_monitor.prom) -> [retrain, on fail when asked].

Scheduled beside the retraining deployment by flows/schedule.py (`tunegate schedule`); `tunegate monitor`
runs it once. It reads and writes only its own files: it takes no project lock and never blocks a retraining.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import ConfigError, Params, load_params
from components.layout import ProjectLayout
from components.monitoring.traffic import (
    LABELLING_DIR,
    MONITOR_DIR,
    MonitorReport,
    QueueInfo,
    ServedModelInfo,
    monitor_report,
    run_stamp,
    write_report,
)

MONITOR_FLOW_NAME = "monitor"


def transient_only(task, task_run, state) -> bool:
    """Retry what may pass on a second try (a locked MLflow database, a network hiccup), never a user error:
    no prediction log, bad settings, a missing model. (flows.retrain has its own: importing it costs torch.)"""
    from pydantic import ValidationError

    try:
        state.result()
    except (ConfigError, FileNotFoundError, ValidationError, ValueError, LookupError):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


RETRY = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": transient_only}


def monitoring_experiment(params: Params) -> str:
    """Monitoring runs go to their own experiment: an hourly run would otherwise bury the few retraining
    runs that people compare in the registry's experiment, and mix drift metrics into their columns."""
    return f"{params.registry.experiment}-monitoring"


@task(name="read-traffic", cache_policy=NO_CACHE, **RETRY)
def read_traffic(params: Params, layout: ProjectLayout, last: int, window: str | None = None) -> tuple:
    """The newest `last` logged predictions within `window` (e.g. 24h; None: the whole log), the champion's
    training rows, and which version that is. Drift and the labelling queue judge exactly these rows."""
    from components.config.monitor import parse_window
    from components.data.ingest import DataStore
    from components.lifecycle.tracking import open_registry
    from components.monitoring.traffic import champion_reference
    from components.serving.prediction_log import log_location, read_prediction_log

    if not params.serve.prediction_log:
        raise ConfigError("serve.prediction_log is not set: the service keeps no sample of live traffic to check")
    traffic = read_prediction_log(log_location(layout.root, params.serve.prediction_log), last=last,
                                  window=parse_window(window) if window else None)
    reference, served = champion_reference(open_registry(params, layout), DataStore(layout.data_dir))
    get_run_logger().info("%d logged predictions (%s, %s file(s) read) vs %d training rows of %s v%s", len(traffic),
                          f"last {window}" if window else "whole log", traffic.attrs.get("files_read"),
                          len(reference), served.model_name, served.version)
    return traffic, reference, served


@task(name="monitor-report", cache_policy=NO_CACHE)
def make_report(params: Params, traffic, reference, served: ServedModelInfo) -> MonitorReport:
    from components.data.drift import drift_report
    from components.model.modeling import load_tokenizer, resolve_model_source

    tokenizer = load_tokenizer(resolve_model_source(params.model.base_model))
    drift = drift_report(reference, traffic, tokenizer, params.drift, task=params.task)
    return monitor_report(traffic, reference, drift, params.monitor, task=params.task, served=served)


@task(name="labelling-queue", cache_policy=NO_CACHE)
def write_queue(params: Params, layout: ProjectLayout, report: MonitorReport, traffic, reference) -> QueueInfo:
    """The texts a person should label next (components/monitoring/labelling.py), in a folder
    per monitoring run, so an export can always be traced back to the run that asked for it."""
    from components.monitoring.labelling import labelling_queue, write_labelling_queue

    queue = labelling_queue(traffic, reference, task=params.task, size=params.monitor.queue_size,
                            low_confidence=params.monitor.low_confidence)
    directory = layout.root / LABELLING_DIR / run_stamp(report)
    # The project's column names: a person may fill in the CSV's labels and `tunegate ingest` it as it is.
    files = write_labelling_queue(queue, directory, task=params.task, labels=params.data.labels,
                                  model_version=report.served.version, text_column=params.data.text_column,
                                  label_column=params.data.label_column)
    return QueueInfo(directory=directory, csv=files.csv, label_studio_json=files.label_studio_json, rows=files.rows)


def report_metrics(report: MonitorReport) -> dict[str, float]:
    """MLflow metric names: drift.<check>, low_confidence_share, label_share.<label>, status (0/1/2)."""
    from components.monitoring.gauges import STATUS_VALUE

    metrics = {f"drift.{c.name}": c.value for c in report.drift.checks if c.value is not None}
    if report.low_confidence.share is not None:
        metrics["low_confidence_share"] = report.low_confidence.share
    # MLflow keys allow letters, digits and _-. /: entity types and labels are nearly always within that.
    metrics |= {f"label_share.{''.join(ch if ch.isalnum() or ch in '_-. ' else '_' for ch in s.label)}": s.traffic
                for s in report.label_shares}
    return metrics | {"status": STATUS_VALUE[report.status], "traffic_rows": report.traffic_rows}


@task(name="log-to-mlflow", cache_policy=NO_CACHE, **RETRY)
def log_to_mlflow(params: Params, layout: ProjectLayout, report: MonitorReport) -> str:
    """One MLflow run per monitoring run, tagged with the version it judged and that version's training
    run; the report (with this run's id in it) is its artifact."""
    from components.lifecycle.tracking import open_registry

    registry = open_registry(params, layout)
    tags = {"tunegate.kind": "monitoring", "model_name": report.served.model_name,
            "champion_version": report.served.version or "none", "status": report.status}
    if report.served.training_run_id:
        tags["training_run_id"] = report.served.training_run_id
    run_id = registry.start_run(monitoring_experiment(params), f"monitor-{run_stamp(report)}", tags)
    try:
        registry.log_metrics(run_id, report_metrics(report))
        report.mlflow_run_id = run_id
        registry.log_json(run_id, report.model_dump(mode="json"), "monitor_report.json")
        registry.log_json(run_id, {"summary": report.summary()}, "summary.json")
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
    registry.end_run(run_id)
    return run_id


@task(name="write-report", cache_policy=NO_CACHE)
def save_report(layout: ProjectLayout, report: MonitorReport) -> dict:
    from components.monitoring.gauges import write_textfile

    stamped, latest = write_report(report, layout.root / MONITOR_DIR)
    return {"report": str(stamped), "latest": str(latest),
            "textfile": str(write_textfile(report, layout.root / MONITOR_DIR))}


def advice(report: MonitorReport, retrain: bool) -> list[str]:
    if report.status == "ok":
        return []
    notes = []
    if report.queue is not None:
        notes.append("label the queue above (import its JSON into Label Studio, or fill in the CSV), then "
                     "`tunegate ingest <the export>` retrains on the labelled batch")
    if report.drift.status == "fail":
        notes.append("retraining on the same labelled data changes nothing (the run ends `unchanged`): "
                     "new labels are what helps" + ("; retraining anyway as asked (monitor.retrain_on_fail)"
                                                    if retrain else ""))
    return notes


@flow(name=MONITOR_FLOW_NAME, log_prints=True)
def monitor(project_dir: str = ".", last: int | None = None, retrain_on_fail: bool | None = None,
            print_summary: bool = True, window: str | None = None) -> dict:
    """Judge the newest logged predictions; returns the report's status, paths and summary.

    `last`: None takes monitor.last, 0 reads the whole window. `window` (e.g. 24h): None takes monitor.window
    (itself None: the whole log), "all" reads the whole log. `retrain_on_fail`: None takes
    monitor.retrain_on_fail; True runs the retraining flow when the status is fail.
    """
    layout = ProjectLayout(Path(project_dir).resolve())
    params = load_params(layout.params_file)
    retrain = params.monitor.retrain_on_fail if retrain_on_fail is None else retrain_on_fail
    span = params.monitor.window if window is None else (None if window == "all" else window)
    traffic, reference, served = read_traffic(params, layout, params.monitor.last if last is None else last, span)
    report = make_report(params, traffic, reference, served)
    if report.status != "ok":
        report.queue = write_queue(params, layout, report, traffic, reference)
    report.notes = advice(report, retrain)
    report.mlflow_run_id = log_to_mlflow(params, layout, report)
    paths = save_report(layout, report)
    if print_summary:
        print(report.summary())
    result = {"status": report.status, "summary": report.summary(), "mlflow_run_id": report.mlflow_run_id,
              "queue": str(report.queue.directory) if report.queue else None, **paths, "retrain": None}
    if report.drift.status == "fail" and retrain:  # as `tunegate monitor` always did: drift failing retrains
        from flows.retrain import retrain as retrain_flow

        outcome = retrain_flow(project_dir=str(layout.root))
        result["retrain"] = {key: outcome.get(key) for key in ("status", "version", "message", "run_id")}
    return result
