"""The partitioned prediction log: replicas write their own hourly files under one root
(date=YYYY-MM-DD/hour=HH/<replica>.jsonl), monitoring reads a time window of it and opens only that
window's files; the one-file log of before still reads as it did."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

# Imported before any test captures stdout: Prefect's console handler keeps the stream it was created with.
import flows.monitor  # noqa: F401
from components.config import ServiceSettings, load_params
from components.serving.prediction_log import (
    PredictionLog,
    is_single_file,
    prediction_log_files,
    read_prediction_log,
)

START = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


class Clock:
    """A settable clock for PredictionLog(now=...): crosses hours without waiting for them."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def log_hours(root: Path | str, hours: int, rows_per_write: int = 2) -> list[dict]:
    """Two replicas logging at :15 and :45 of each hour from START; returns what was logged (text, time)."""
    clock = Clock(START)
    writers = [PredictionLog(root, 1.0, replica=name, now=clock) for name in ("replica-a", "replica-b")]
    logged = []
    for minute in range(15, hours * 60, 30):
        clock.moment = START + timedelta(minutes=minute)
        for writer in writers:
            texts = [f"{writer.replica} {minute} {i}" for i in range(rows_per_write)]
            writer.write("3", texts, [{"label": "positive", "score": 0.9}] * len(texts))
            logged += [{"text": text, "time": clock.moment} for text in texts]
    return logged


def test_two_replicas_write_their_own_file_per_hour(tmp_path):
    root = tmp_path / "predictions"
    clock = Clock(datetime(2026, 12, 1, 10, 59, 30, tzinfo=timezone.utc))
    first = PredictionLog(root, 1.0, replica="pod-1", now=clock)
    second = PredictionLog(root, 1.0, replica="pod-2", now=clock)
    first.write("3", ["a", "b"], [{"label": "positive", "score": 0.9}, {"label": "negative", "score": 0.4}])
    second.write("3", ["c"], [{"label": "positive", "score": 0.8}])
    clock.moment += timedelta(minutes=1)  # 11:00:30: a new hour opens a new file
    first.write("4", ["d"], [{"label": "negative", "score": 0.7}])
    first.write("4", ["e"], [{"label": "negative", "score": 0.6}])  # appended to the same hour's file

    files = sorted(str(path.relative_to(root)) for path in root.rglob("*.jsonl"))
    assert files == ["date=2026-12-01/hour=10/pod-1.jsonl", "date=2026-12-01/hour=10/pod-2.jsonl",
                     "date=2026-12-01/hour=11/pod-1.jsonl"]
    rows = [json.loads(line) for line in (root / "date=2026-12-01/hour=11/pod-1.jsonl").read_text().splitlines()]
    assert [(row["text"], row["replica"], row["version"]) for row in rows] == [("d", "pod-1", "4"), ("e", "pod-1", "4")]
    assert rows[0]["time"] == "2026-12-01T11:00:30.000+00:00"
    assert {"label", "score"} <= rows[0].keys()


def test_default_replica_is_host_and_process_and_ids_are_file_safe(tmp_path):
    import os

    assert PredictionLog(tmp_path / "log", 1.0).replica.endswith(f"-{os.getpid()}")
    assert PredictionLog(tmp_path / "log", 1.0, replica="ns/pod 1").replica == "ns_pod_1"


def test_window_read_returns_both_replicas_rows_and_opens_only_its_hours(tmp_path):
    root = tmp_path / "predictions"
    logged = log_hours(root, hours=4)  # 08:00-12:00, two replicas: 8 files
    now = START + timedelta(hours=3, minutes=50)  # 11:50
    since = START + timedelta(hours=2, minutes=30)  # 10:30: half of hour 10, all of hour 11

    frame = read_prediction_log(root, window=timedelta(minutes=80), now=lambda: now)

    expected = sorted(row["text"] for row in logged if row["time"] >= since)
    assert sorted(frame["text"]) == expected and len(expected) == 12  # 10:45, 11:15, 11:45 x 2 replicas x 2
    assert set(text.split()[0] for text in frame["text"]) == {"replica-a", "replica-b"}
    assert list(frame.columns) == ["time", "version", "text", "label", "score", "replica"]  # the frame of before + replica
    assert sorted(frame["replica"].unique()) == ["replica-a", "replica-b"]
    assert frame["time"].is_monotonic_increasing
    assert frame.attrs["files_read"] == 4
    assert [str(Path(path).relative_to(root)) for path in prediction_log_files(root, since)] == [
        "date=2026-12-01/hour=10/replica-a.jsonl", "date=2026-12-01/hour=10/replica-b.jsonl",
        "date=2026-12-01/hour=11/replica-a.jsonl", "date=2026-12-01/hour=11/replica-b.jsonl"]


def test_files_outside_the_window_are_never_opened(tmp_path):
    root = tmp_path / "predictions"
    log_hours(root, hours=3)
    # Not UTF-8, not JSON: opening this file fails any reader, so a read that succeeds did not open it.
    (root / "date=2026-12-01/hour=08/replica-a.jsonl").write_bytes(b"\xff\xfe\x00 not a log line\n")

    frame = read_prediction_log(root, since=START + timedelta(hours=1))
    assert len(frame) == 16 and frame.attrs["files_read"] == 4
    with pytest.raises(UnicodeDecodeError):
        read_prediction_log(root)  # the whole log does open it


def test_last_reads_the_newest_hours_first_and_stops(tmp_path):
    root = tmp_path / "predictions"
    log_hours(root, hours=3)
    frame = read_prediction_log(root, last=5)
    assert len(frame) == 5 and frame.attrs["files_read"] == 2  # hour 10 holds 8 rows: enough
    assert list(frame["time"]) == sorted(frame["time"]) and frame["time"].iloc[-1].startswith("2026-12-01T10:45")


def test_a_line_cut_by_a_crash_costs_only_that_line(tmp_path):
    root = tmp_path / "predictions"
    log_hours(root, hours=1)
    with (root / "date=2026-12-01/hour=08/replica-b.jsonl").open("a") as handle:
        handle.write('{"time": "2026-12-01T08:59:00.000+00:00", "text": "cut off by a cra')
    assert len(read_prediction_log(root)) == 8


def test_ner_rows_keep_their_entities(tmp_path):
    root = tmp_path / "predictions"
    writer = PredictionLog(root, 1.0, replica="a", now=lambda: START)
    writer.write("1", ["Ann went to Paris", "nothing here"],
                 [{"entities": [{"type": "PER", "start": 0, "end": 3, "score": 0.8}]}, {"entities": []}])
    frame = read_prediction_log(root)
    assert list(frame.columns) == ["time", "version", "text", "label", "score", "replica", "entities"]
    assert frame["entities"].tolist() == [[{"type": "PER", "start": 0, "end": 3, "score": 0.8}], []]
    assert frame["label"].tolist() == ["B-PER O O O", "O O"]


def test_the_one_file_log_reads_as_before(tmp_path):
    path = tmp_path / "logs" / "predictions.jsonl"
    assert is_single_file(path) and not is_single_file(tmp_path / "logs" / "predictions")
    writer = PredictionLog(path, 1.0, replica="ignored", now=lambda: START)
    writer.write("2", ["one", "two"], [{"label": "positive", "score": 0.9}, {"label": "negative", "score": 0.3}])
    with path.open("a") as handle:
        handle.write('{"time": "t", "text": "cut off by a cra')
    rows = [json.loads(line) for line in path.read_text().splitlines()[:2]]
    assert list(rows[0]) == ["time", "version", "text", "label", "score"]  # no replica: the file's rows as before

    frame = read_prediction_log(path)
    assert frame.to_dict("records") == [
        {"time": "2026-12-01T08:00:00.000+00:00", "version": "2", "text": "one", "label": "positive", "score": 0.9},
        {"time": "2026-12-01T08:00:00.000+00:00", "version": "2", "text": "two", "label": "negative", "score": 0.3}]
    assert read_prediction_log(path, last=1)["text"].tolist() == ["two"]
    assert len(read_prediction_log(path, since=START + timedelta(minutes=1))) == 0


def test_a_url_setting_stays_a_url_and_file_urls_work(tmp_path):
    assert ServiceSettings(prediction_log="s3://bucket/tunegate/predictions").prediction_log == \
        "s3://bucket/tunegate/predictions"
    assert ServiceSettings(prediction_log="logs/predictions.jsonl").prediction_log == Path("logs/predictions.jsonl")
    url = (tmp_path / "predictions").as_uri()  # file:///...
    log_hours(url, hours=1)
    assert len(read_prediction_log(url)) == 8
    assert (tmp_path / "predictions" / "date=2026-12-01" / "hour=08" / "replica-a.jsonl").is_file()


def test_a_missing_log_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prediction log"):
        read_prediction_log(tmp_path / "predictions")


@pytest.fixture
def project(tmp_path, tiny_base_model, prefect_api):  # `tunegate monitor` runs the monitoring flow
    from components.data.ingest import DataStore, ingest_batch, read_configured_source
    from tests.project import tiny_params, write_params
    from tests.tiny import sentiment_frame

    (tmp_path / "incoming").mkdir()
    sentiment_frame(400, seed=1).to_csv(tmp_path / "incoming" / "reviews.csv", index=False)
    write_params(tmp_path, tiny_params(tiny_base_model, serve={"prediction_log": "logs/predictions"},
                                       monitor={"window": "2h"}))
    params = load_params(tmp_path / "params.yaml")
    ingest_batch(read_configured_source(params.data, tmp_path), params.data, DataStore(tmp_path / "data"), base=True)
    return tmp_path


def test_monitor_reads_both_replicas_of_a_partitioned_log_within_its_window(project, capsys):
    from tests.tiny import sentiment_frame
    from tunegate.cli import main

    now = datetime.now(timezone.utc)
    clock = Clock(now - timedelta(hours=5))  # outside monitor.window (2h): not judged
    writers = [PredictionLog(project / "logs" / "predictions", 1.0, replica=name, now=clock) for name in ("a", "b")]
    rows = list(sentiment_frame(300, seed=2)[["review", "sentiment"]].itertuples(index=False))
    for writer in writers:
        writer.write("1", ["an old text"] * 7, [{"label": "negative", "score": 0.9}] * 7)
    clock.moment = now - timedelta(minutes=30)
    for index, writer in enumerate(writers):  # 150 rows each, as two replicas behind one balancer would log
        mine = rows[index::2]
        writer.write("1", [text for text, _ in mine], [{"label": label, "score": 0.9} for _, label in mine])

    assert main(["--project", str(project), "monitor", "--no-retrain"]) == 0
    assert "300 logged predictions" in capsys.readouterr().out
    assert main(["--project", str(project), "monitor", "--last", "40", "--no-retrain"]) == 0
    assert "(40 logged predictions)" in capsys.readouterr().out
