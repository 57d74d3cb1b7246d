"""Monitoring that runs by itself: the monitoring deployment (monitor.cron) served by `tunegate schedule`'s
code in a real process runs against a prediction log and writes its report, MLflow run, gauges and
labelling queue; a real service's /metrics shows the latest report's gauges. (Alert rules: promtool, in
tests/test_prometheus_rules.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

# Imported before any test captures stdout: Prefect's console handler keeps the stream it was created with.
import flows.monitor  # noqa: F401
from components.config import load_params
from components.data.ingest import DataStore, ingest_batch, read_configured_source
from components.lifecycle.registry import resolve_tracking_uri
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import REPO_ROOT, tiny_params, write_params
from tests.servers import stop_process
from tests.tiny import sentiment_frame

CRON = "17 */2 * * 1-5"


def monitored_project(root, tiny_base_model, **monitor):
    (root / "incoming").mkdir(parents=True)
    sentiment_frame(300, seed=1).to_csv(root / "incoming" / "reviews.csv", index=False)
    write_params(root, tiny_params(tiny_base_model, serve={"prediction_log": "logs/predictions.jsonl"},
                                   monitor={"cron": CRON, "queue_size": 20, "min_scored": 10, **monitor}))
    params = load_params(root / "params.yaml")
    ingest_batch(read_configured_source(params.data, root), params.data, DataStore(root / "data"), base=True)
    return root


def write_drifted_log(root) -> None:
    """Traffic unlike the training data (other words, long texts, all 'positive'), half of it unsure."""
    (root / "logs").mkdir(exist_ok=True)
    with (root / "logs" / "predictions.jsonl").open("w", encoding="utf-8") as log:
        for i in range(80):
            log.write(json.dumps({"time": "2026-12-01T10:00:00+00:00", "version": "3", "text": "зрелище " * 30 + str(i),
                                  "label": "positive", "score": 0.51 if i % 2 else 0.97}) + "\n")


def _serve_monitoring(root, api_url: str) -> subprocess.Popen:
    """`tunegate schedule --only monitor`'s code (flows.schedule.serve_schedule) in its own process."""
    code = ("import sys; from pathlib import Path; from components.config import load_params; "
            "from flows.schedule import serve_schedule; p = load_params(Path(sys.argv[1]) / 'params.yaml'); "
            "serve_schedule(Path(sys.argv[1]), p.schedule, p.monitor, only='monitor')")
    # Polls for due runs every second (default 10 s), so that a run due now starts at once.
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_the_served_monitoring_deployment_runs_and_writes_report_mlflow_run_gauges_and_queue(
        tmp_path, tiny_base_model, prefect_api):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL
    from prometheus_client.parser import text_string_to_metric_families

    from mlflow import MlflowClient

    root = monitored_project(tmp_path / "project", tiny_base_model)
    write_drifted_log(root)
    server = _serve_monitoring(root, PREFECT_API_URL.value())
    try:
        # The deployment appears with the cron from params.yaml ...
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while True:
                assert server.poll() is None, server.stdout.read()
                try:
                    deployment = client.read_deployment_by_name("monitor/scheduled-monitor")
                    break
                except Exception:  # noqa: BLE001 - not registered yet
                    assert time.monotonic() < deadline, "the monitoring deployment was not registered in 60 s"
                    time.sleep(0.5)
        assert [s.schedule.cron for s in deployment.schedules] == [CRON]
        assert deployment.parameters == {"project_dir": str(root.resolve())}
        # ... and the serving process executes a run of it. A cron run would come at 17 past an even hour:
        # run_deployment schedules one for now, which the same process picks up like a cron run.
        run = run_deployment("monitor/scheduled-monitor", timeout=120, poll_interval=1)
        assert run.state.is_completed(), run.state
    finally:
        stop_process(server)

    monitor_dir = root / ".tunegate" / "monitor"
    latest = json.loads((monitor_dir / "latest.json").read_text())
    (stamped,) = monitor_dir.glob("monitor-*.json")
    assert json.loads(stamped.read_text()) == latest
    assert latest["status"] == "fail"
    assert {c["name"]: c["status"] for c in latest["drift"]["checks"]}["label_shift"] == "fail"
    assert latest["low_confidence"]["share"] == pytest.approx(0.5)
    assert latest["low_confidence"]["status"] == "fail"  # 50% > fail 40%
    shares = {s["label"]: s for s in latest["label_shares"]}
    assert shares["positive"]["traffic"] == 1.0 and 0.2 < shares["positive"]["reference"] < 0.8
    assert any("changes nothing" in note for note in latest["notes"])

    # The labelling queue, in the run's own folder, which the report names.
    queue = latest["queue"]
    assert queue["directory"].startswith(str(root / ".tunegate" / "labelling"))
    assert 0 < queue["rows"] <= 20
    assert os.path.isfile(queue["csv"]) and os.path.isfile(queue["label_studio_json"])

    # The MLflow run, in the monitoring experiment, tagged with the model, metrics and the report.
    client = MlflowClient(resolve_tracking_uri(None, root / "mlflow"))
    mlflow_run = client.get_run(latest["mlflow_run_id"])
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "tunegate-monitoring"
    assert mlflow_run.data.tags["tunegate.kind"] == "monitoring"
    assert mlflow_run.data.tags["champion_version"] == "none"  # nothing trained in this project
    assert mlflow_run.data.metrics["low_confidence_share"] == pytest.approx(0.5)
    assert mlflow_run.data.metrics["label_share.positive"] == 1.0
    assert mlflow_run.data.metrics["status"] == 2
    assert {"drift.label_shift", "drift.length_shift"} <= set(mlflow_run.data.metrics)
    assert "monitor_report.json" in {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}

    # node_exporter's textfile: the same gauges.
    families = {f.name: f for f in text_string_to_metric_families((monitor_dir / "tunegate_monitor.prom").read_text())}
    assert families["tunegate_monitor_status"].samples[0].value == 2
    assert families["tunegate_monitor_low_confidence_share"].samples[0].value == pytest.approx(0.5)


def test_a_real_service_exposes_the_latest_monitoring_report_on_metrics(tmp_path, tiny_base_model,
                                                                       tiny_onnx_export):  # noqa: F811 - fixture
    """Traffic the service logged itself, a report made from it, and /metrics read before and after."""
    from prometheus_client.parser import text_string_to_metric_families

    from components.config import ServiceSettings
    from components.config.monitor import MonitorParams
    from components.data.drift import drift_report
    from components.export.predictor import OnnxTextClassifier
    from components.model.modeling import load_tokenizer
    from components.monitoring.traffic import MONITOR_DIR, ServedModelInfo, monitor_report, write_report
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.prediction_log import read_prediction_log
    from components.serving.server import BackgroundServer

    log = tmp_path / "predictions.jsonl"
    app = create_app(ServedModel(OnnxTextClassifier(tiny_onnx_export.out_dir),
                                 {"model_name": "tunegate-tiny", "model_version": "4"}),
                     ServiceSettings(prediction_log=log, prediction_log_sample_rate=1.0))
    app.state.metrics.watch_monitoring(tmp_path / MONITOR_DIR)  # as `tunegate serve` does
    texts = sentiment_frame(60, seed=5)["review"].tolist()
    with BackgroundServer(app) as running, httpx.Client(base_url=running.url, timeout=60) as http:
        assert http.post("/predict", json={"texts": texts}).status_code == 200
        deadline = time.monotonic() + 10  # the log is written beside the answer, not before it
        while (not log.is_file() or len(log.read_text().splitlines()) < 60) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "tunegate_monitor_" not in http.get("/metrics").text  # no report yet: no made-up figures

        traffic = read_prediction_log(log)
        reference = sentiment_frame(200, seed=1).rename(columns={"review": "text", "sentiment": "label"})
        drift = drift_report(reference, traffic, load_tokenizer(str(tiny_base_model)), load_params_drift())
        report = monitor_report(traffic, reference, drift, MonitorParams(min_scored=10), task="sequence-classification",
                                served=ServedModelInfo(model_name="tunegate-tiny", version="4"))
        write_report(report, tmp_path / MONITOR_DIR)
        scraped = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}

    assert len(traffic) == 60
    status = scraped["tunegate_monitor_status"].samples[0]
    assert status.labels == {"model_name": "tunegate-tiny"}
    assert status.value == {"ok": 0, "warn": 1, "fail": 2}[report.status]
    drift_values = {s.labels["check"]: s.value for s in scraped["tunegate_monitor_drift"].samples}
    assert drift_values == pytest.approx({c.name: c.value for c in report.drift.checks if c.value is not None})
    label_shares = {s.labels["label"]: s.value for s in scraped["tunegate_monitor_label_share"].samples}
    assert label_shares == pytest.approx(traffic["label"].value_counts(normalize=True).to_dict())
    assert scraped["tunegate_monitor_low_confidence_share"].samples[0].value == pytest.approx(report.low_confidence.share)
    assert scraped["tunegate_monitor_last_run_timestamp_seconds"].samples[0].value == pytest.approx(report.timestamp)
    assert scraped["tunegate_monitor_traffic_rows"].samples[0].value == 60


def load_params_drift():
    from components.config import DriftParams

    return DriftParams(oov_sample_texts=100)


def test_ner_confidence_counts_only_texts_with_entities_and_shares_are_entity_types():
    import pandas as pd

    from components.config.monitor import MonitorParams
    from components.monitoring.traffic import confidence_check, predicted_label_shares

    params = MonitorParams(min_scored=2, low_confidence=0.6)
    traffic = pd.DataFrame({"text": ["Mary met Wei", "nothing here", "Paris"],
                            "label": ["B-PER O B-PER", "O O", "B-LOC"], "score": [0.9, None, 0.3]})
    check = confidence_check(traffic["score"], params.low_confidence, params.low_confidence_share, params.min_scored)
    assert (check.share, check.scored, check.unscored, check.status) == (0.5, 2, 1, "fail")
    assert "1 without a score not counted" in check.detail
    too_few = confidence_check(traffic["score"], 0.6, params.low_confidence_share, min_scored=3)
    assert too_few.share is None and too_few.status == "skipped"
    shares = predicted_label_shares(traffic, pd.DataFrame({"text": ["a b"], "label": ["B-LOC I-LOC"]}),
                                    "token-classification")
    assert [(s.label, round(s.traffic, 3), s.reference) for s in shares] == [("LOC", 0.333, 1.0), ("PER", 0.667, 0.0)]
