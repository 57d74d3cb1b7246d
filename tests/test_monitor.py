"""Drift of live traffic, from the service's prediction log, against the champion's training data."""

from __future__ import annotations

import json

import pytest

# Imported before any test captures stdout: Prefect's console handler keeps the stream it was created with,
# and a capsys stream is closed after its test (the next flow's log line would then raise).
import flows.monitor  # noqa: F401
from components.config import load_params
from components.data.ingest import DataStore, ingest_batch, read_configured_source
from tests.project import tiny_params, write_params
from tests.tiny import sentiment_frame
from tunegate.cli import main


@pytest.fixture
def project(tmp_path, tiny_base_model, prefect_api):  # `tunegate monitor` runs the monitoring flow
    (tmp_path / "incoming").mkdir()
    sentiment_frame(400, seed=1).to_csv(tmp_path / "incoming" / "reviews.csv", index=False)
    write_params(tmp_path, tiny_params(tiny_base_model, serve={"prediction_log": "logs/predictions.jsonl"}))
    params = load_params(tmp_path / "params.yaml")
    ingest_batch(read_configured_source(params.data, tmp_path), params.data, DataStore(tmp_path / "data"), base=True)
    return tmp_path


def write_log(project, rows) -> None:
    (project / "logs").mkdir(exist_ok=True)
    with (project / "logs" / "predictions.jsonl").open("w") as log:
        for text, label in rows:
            log.write(json.dumps({"time": "t", "version": "1", "text": text, "label": label, "score": 0.9}) + "\n")
        log.write('{"time": "t", "text": "cut off by a cra')  # a crash mid-write must not break monitoring


def report_of(project) -> dict:
    """The drift part of the run's monitoring report (flows/monitor.py)."""
    (path,) = (project / ".tunegate" / "monitor").glob("monitor-*.json")
    return json.loads(path.read_text())["drift"]


def test_traffic_like_the_training_data_is_ok(project, capsys):
    write_log(project, sentiment_frame(300, seed=2)[["review", "sentiment"]].itertuples(index=False))
    assert main(["--project", str(project), "monitor", "--no-retrain"]) == 0
    assert report_of(project)["status"] == "ok"
    assert "300 logged predictions" in capsys.readouterr().out


def test_drifted_traffic_fails_the_check_and_says_so(project, capsys):
    odd = [("зрелище " * 40 + f"{i}", "positive") for i in range(200)]
    write_log(project, odd)
    assert main(["--project", str(project), "monitor", "--no-retrain"]) == 0
    report = report_of(project)
    assert report["status"] == "fail"
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} >= {"label_shift", "length_shift"}
    assert "fail" in capsys.readouterr().out
