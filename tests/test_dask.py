"""Fan-out on Dask: the sweep's trials as Dask tasks on a 2-worker LocalCluster (each a nested MLflow run,
the winner applied as without Dask), and `tunegate predict --dask` scoring the chunks on the workers with
the same output, the same rejected rows and the same crash/resume guarantee as without Dask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from components.config import ConfigError, load_params
from components.config.params_file import set_param
from components.dask_cluster import (
    ClusterShape,
    DaskUnavailable,
    cluster_shape,
    connect,
    local_cluster_kwargs,
    usable_cores,
)
from components.layout import ProjectLayout
from components.lifecycle.registry import CHAMPION, ModelRegistry
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import REPO_ROOT, read_params, tiny_params
from tests.servers import free_port
from tests.test_batch_scoring import reviews, write_csv_with_bad_rows
from tests.test_sweep import child_runs, prepared_project


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes, one task each; closed (workers and scheduler) whatever the tests did."""
    from distributed import Client, LocalCluster

    with LocalCluster(**local_cluster_kwargs(2)) as local, Client(local, set_as_default=False) as client:
        yield client


# --- the sweep ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_on_a_local_dask_cluster_runs_each_trial_as_a_nested_run(tmp_path, tiny_base_model, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from prefect.settings import PREFECT_API_URL

    layout, registry = prepared_project(tmp_path / "project", tiny_base_model)
    set_param(layout.params_file, "sweep.runner", "dask")  # no address: a LocalCluster of max_concurrency (2)
    params = load_params(layout.params_file)
    assert params.sweep.runner == "dask"
    parent = registry.start_run("tunegate", "retrain-parent", {})
    started = time.time()
    # In a process of its own (tests/sweep_dask_job.py): the cluster's spawned workers copy their parent's
    # sys.path and working directory, and this test process carries what earlier tests left in them.
    job = subprocess.run([sys.executable, "-m", "tests.sweep_dask_job", str(layout.root), parent], cwd=REPO_ROOT,
                         env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, capture_output=True,
                         text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-6000:]
    summary = json.loads(job.stdout.strip().splitlines()[-1])

    runs = sorted(child_runs(registry, parent), key=lambda r: int(r.data.tags["sweep_trial"]))
    assert [r.info.run_name for r in runs] == ["trial-00", "trial-01"]
    for run, learning_rate in zip(runs, [0.0, 0.005]):
        assert run.info.status == "FINISHED"
        assert float(run.data.params["train.learning_rate"]) == learning_rate
        assert {"best_score", "validation_macro_f1"} <= set(run.data.metrics)
    assert runs[1].info.start_time < runs[0].info.end_time and runs[0].info.start_time < runs[1].info.end_time
    assert summary["best_trial"] == 1 and summary["best_run_id"] == runs[1].info.run_id
    assert read_params(layout.root)["train"]["learning_rate"] == 0.005  # the winner, written and committed
    assert read_params(layout.root)["sweep"]["runner"] == "dask"
    from components.lifecycle.versioning import run_dvc

    assert json.loads(run_dvc(layout.root, "status", "--json", "train", capture=True).stdout) == {}
    assert registry.client.get_run(parent).data.tags["sweep_best_trial"] == "trial-01"
    # The workers reported to the flow's Prefect API, not to temporary servers of their own.
    with get_client(sync_client=True) as client:
        trials = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["trial-0",
                                                                                                   "trial-1"])))
    ours = [t for t in trials if t.start_time and t.start_time.timestamp() >= started]
    assert sorted((t.name, t.state_type.value) for t in ours) == [("trial-0", "COMPLETED"), ("trial-1", "COMPLETED")]


def test_sweep_dask_settings_are_checked(tmp_path):
    raw = tiny_params(tmp_path / "model", sweep={"space": {"train.epochs": [1, 2]}, "address": "tcp://127.0.0.1:8786"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="sweep.runner: dask"):
        load_params(tmp_path / "params.yaml", env={})
    raw["sweep"].update(runner="dask", address="127.0.0.1:8786")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="tcp://"):
        load_params(tmp_path / "params.yaml", env={})


def test_a_sweep_on_a_scheduler_needs_a_prefect_server_and_a_reachable_scheduler(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sweep import run_sweep

    address = f"tcp://127.0.0.1:{free_port()}"
    raw = tiny_params(tmp_path / "model", sweep={"space": {"train.epochs": [1, 2]}, "runner": "dask",
                                                  "address": address})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml", env={})
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", "tiny-sentiment")
    # Prefect's temporary server only
    with temporary_settings(restore_defaults={PREFECT_API_URL}), \
            pytest.raises(ConfigError, match="PREFECT_API_URL") as caught:
        run_sweep(params, ProjectLayout(tmp_path), registry, "no-parent")
    assert "prefect server start" in str(caught.value)
    with pytest.raises(DaskUnavailable, match=f"cannot reach a Dask scheduler at {address}"):
        connect(address, timeout_s=2)


# --- batch scoring ------------------------------------------------------------------------------
def registered_project(root, onnx_dir) -> None:
    """A project whose champion is the tiny int8 export: enough for `tunegate predict`."""
    from components.lifecycle.tracking import open_registry

    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(root / "model")))
    layout = ProjectLayout(root)
    registry = open_registry(load_params(layout.params_file, env={}), layout)
    run_id = registry.start_run("tunegate", "tiny", {})
    version = registry.register(run_id, onnx_dir, {"gate": "passed"})
    registry.set_alias(CHAMPION, version.version)


@pytest.mark.slow
def test_predict_on_dask_gives_the_same_output_as_without(tiny_onnx_export, tmp_path, cluster):  # noqa: F811
    from components.serving.dask_scoring import worker_loads
    from tunegate.cli import main

    root = tmp_path / "project"
    registered_project(root, tiny_onnx_export.out_dir)
    frame = reviews(230)
    source = tmp_path / "reviews.csv"
    write_csv_with_bad_rows(source, frame, empty_at=7, bad_bytes_at=151)
    common = ["--project", str(root), "predict", str(source), "--text-column", "review", "--id-column", "review_id",
              "--chunk-rows", "20"]
    assert main([*common[:4], str(tmp_path / "plain.csv"), *common[4:]]) == 0
    assert main([*common[:4], str(tmp_path / "dask.csv"), *common[4:], "--dask", cluster.scheduler.address]) == 0

    plain, on_dask = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "dask.csv")
    assert len(plain) == 228
    pd.testing.assert_frame_equal(on_dask, plain)
    assert on_dask["id"].tolist() == frame.drop(index=[7, 151])["review_id"].tolist()
    assert (tmp_path / "dask.csv.rejected.csv").read_text() == (tmp_path / "plain.csv.rejected.csv").read_text()
    assert pd.read_csv(tmp_path / "dask.csv.rejected.csv")["record"].tolist() == [8, 152]
    # 2 workers of 1 slot each, sharing this machine's cores: a task's onnxruntime threads
    assert cluster_shape(cluster) == ClusterShape(workers=2, threads=2, threads_per_task=max(1, usable_cores() // 2))
    # 12 chunks, 2 workers: each worker opened the model at most once, and both took chunks.
    assert cluster.run(worker_loads) == {address: 1 for address in cluster.scheduler_info()["workers"]}

    assert main([*common[:4], str(tmp_path / "dask.csv"), *common[4:], "--dask", "tcp://127.0.0.1:1",
                 "--dask-workers", "2"]) == 2  # a worker count is for --dask local only: refused, named


@pytest.mark.slow
def test_predict_on_dask_resumes_after_a_crash_and_scores_each_row_once(tiny_onnx_export, tmp_path, cluster):  # noqa: F811
    from tests.dask_score_job import score_on_dask
    from tests.score_job import score

    frame = reviews(97)
    source = tmp_path / "reviews.csv"
    write_csv_with_bad_rows(source, frame, empty_at=5, bad_bytes_at=60)
    output = tmp_path / "scored.csv"
    address = cluster.scheduler.address
    killed = subprocess.run([sys.executable, "-m", "tests.dask_score_job", address, str(tiny_onnx_export.out_dir),
                             str(source), str(output), "40"], check=False, cwd=REPO_ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    progress = json.loads((tmp_path / "scored.csv.progress.json").read_text())
    assert progress["records_done"] == 40 and progress["scored"] == 39
    with output.open("a") as handle:  # a chunk the crash left half-written
        handle.write("r40,positive,0.5")

    summary = score_on_dask(address, tiny_onnx_export.out_dir, source, output)
    assert (summary.resumed_at, summary.records, summary.scored, summary.rejected) == (40, 97, 95, 2)
    scored = pd.read_csv(output)
    assert scored["id"].tolist() == frame.drop(index=[5, 60])["review_id"].tolist()  # each once, in order
    score(tiny_onnx_export.out_dir, source, tmp_path / "uninterrupted.csv")  # without Dask
    pd.testing.assert_frame_equal(scored, pd.read_csv(tmp_path / "uninterrupted.csv"))
    assert pd.read_csv(summary.rejected_file)["record"].tolist() == [6, 61]
