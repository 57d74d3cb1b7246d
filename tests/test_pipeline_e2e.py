"""The whole retraining flow on a tiny model: real DVC in a temp git repo, real GX, real MLflow
SQLite registry, real ONNX int8, the approval answered from another thread, real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from components.layout import ProjectLayout
from components.lifecycle.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    resolve_tracking_uri,
)
from components.lifecycle.tracking import RunOutcome
from components.serving.app import create_app
from components.serving.deployment import load_served_model
from components.serving.server import BackgroundServer
from flows.approval import answer_approval, paused_retrain_runs
from flows.retrain import retrain
from tests.project import SMALL_INSPECTIONS, make_project, read_params, write_params
from tests.tiny import sentiment_frame
from tunegate.cli import main

pytestmark = pytest.mark.slow


def open_registry(root: Path) -> ModelRegistry:
    layout = ProjectLayout(root)
    return ModelRegistry(resolve_tracking_uri(None, layout.mlflow_dir), "tiny-sentiment")


def run_with_approval(root: Path, decision: str, by: str, comment: str) -> dict:
    """Run the flow in a thread and answer its approval from this one, as a reviewer would."""
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=retrain(project_dir=str(root))), daemon=True)
    worker.start()
    deadline = time.monotonic() + 600
    while not paused_retrain_runs():
        assert worker.is_alive(), "the flow ended without asking for approval"
        assert time.monotonic() < deadline, "no approval request within 10 minutes"
        time.sleep(1)
    said = answer_approval(ProjectLayout(root), open_registry(root), decision, by=by, comment=comment)
    assert said.startswith({"approve": "approved v", "reject": "rejected v"}[decision]), said
    worker.join(timeout=300)
    assert not worker.is_alive()
    return outcome["result"]


# evaluate.slices (tests/test_slices.py has the figures and the gate's verdicts): here, that the flow writes,
# logs and cards them. ~120 test rows: short ~45, early_ids ~20, id_7 at most one (not judged).
SLICES = {"evaluate": {"min_slice_rows": 15, "slices": [
    {"name": "short", "max_chars": 35}, {"name": "early_ids", "regex": r"#\d\d?$"}, {"name": "id_7", "regex": "#7$"},
    {"name": "first_batch", "column": "batch_id", "values": ["reviews.csv"]}]},
    "gate": {"max_slice_regression": 0.5}}


@pytest.fixture(scope="module")
def promoted_project(tmp_path_factory, tiny_base_model, prefect_api) -> tuple[Path, dict]:
    root = make_project(tmp_path_factory.mktemp("e2e") / "project", tiny_base_model, **SMALL_INSPECTIONS, **SLICES)
    started = time.perf_counter()
    result = run_with_approval(root, "approve", by="reviewer-ada", comment="metrics look right")
    result["seconds"] = time.perf_counter() - started
    return root, result


def test_first_run_is_approved_registered_and_served(promoted_project):
    root, result = promoted_project
    assert result["status"] == RunOutcome.PROMOTED, result
    assert result["version"] == "1"

    registry = open_registry(root)
    assert registry.aliases() == {CHALLENGER: "1", CHAMPION: "1"}
    tags = registry.version("1").tags
    data_md5 = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    assert tags["data_hash"] == data_md5
    assert tags["gate"] == "passed" and "no champion yet" in tags["gate_reasons"]
    assert (tags["approval"], tags["approval_by"], tags["approval_how"]) == ("approved", "reviewer-ada", "person")
    assert len(tags["git_commit"]) >= 40
    assert float(tags["test_accuracy"]) >= 0.8

    run = registry.client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_hash"] == data_md5
    assert run.data.params["train.epochs"] == "3"
    assert {"test_accuracy", "test_macro_f1", "export_agreement", "int8_test_accuracy"} <= set(run.data.metrics)
    epochs = registry.client.get_metric_history(result["run_id"], "validation_accuracy")
    assert sorted(m.step for m in epochs) == [1, 2, 3]
    artifacts = {a.path for a in registry.client.list_artifacts(result["run_id"], "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/slices.json"} <= artifacts
    slices = json.loads((root / "artifacts" / "eval" / "slices.json").read_text())["slices"]
    assert slices["first_batch"]["rows"] == int(tags["test_rows"]) and slices["first_batch"]["judged"]
    assert 15 <= slices["short"]["rows"] < slices["first_batch"]["rows"] and slices["id_7"]["judged"] is False
    assert run.data.metrics["slice_short_rows"] == slices["short"]["rows"]  # the evaluate stage's (PyTorch)
    assert 0.0 <= run.data.metrics["int8_slice_short_macro_f1"] <= 1.0  # the served model's, which the gate judged
    assert "slice id_7 (text matches /#7$/): not judged" in tags["gate_reasons"]
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=root, check=True,
                           capture_output=True, text=True).stdout
    assert "artifacts/eval/slices.json" in shown  # declared under metrics: in dvc.yaml
    docs = {a.path for a in registry.client.list_artifacts(result["run_id"], "validation/data_docs")}
    assert "validation/data_docs/index.html" in docs
    assert run.data.tags["data_docs"].endswith("/validation/data_docs/index.html")

    served = load_served_model(registry, root / "artifacts" / "serving", ["CPUExecutionProvider"])
    with BackgroundServer(create_app(served), port=0) as server:
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok"
        metadata = httpx.get(f"{server.url}/metadata").json()
        assert (metadata["model_version"], metadata["data_hash"]) == ("1", data_md5)
        answer = httpx.post(f"{server.url}/predict", json={"texts": [
            "the film was wonderful and superb", "the film was awful and tedious"]}).json()
        assert [p["label"] for p in answer["predictions"]] == ["positive", "negative"]
        scored = httpx.post(f"{server.url}/invocations", json={
            "dataframe_split": {"columns": ["text"], "data": [["a brilliant cast"], ["a dreadful plot"]]}}).json()
        assert [p["label"] for p in scored["predictions"]] == ["positive", "negative"]


def test_the_champion_is_an_mlflow_model_with_its_card(promoted_project, tmp_path, monkeypatch):
    import mlflow.pyfunc

    root, _ = promoted_project
    registry = open_registry(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/tiny-sentiment@{CHAMPION}")
    answers = model.predict(pd.DataFrame({"text": ["the film was wonderful and superb", "awful and tedious"]}))
    assert answers["label"].tolist() == ["positive", "negative"]
    card = (registry.download("1", tmp_path) / "README.md").read_text()
    tags = registry.version("1").tags
    for expected in (tags["data_hash"], tags["git_commit"], "## Export parity", "Verdict: **passed**",
                     "## Intended use", "## Limits", "`negative`, `positive`", f"| accuracy | {tags['test_accuracy']} |",
                     "## Slices", "| short | <= 35 characters |", "| id_7 | text matches /#7$/ |"):
        assert expected in card, expected


def test_tunegate_predict_scores_a_file_with_the_champion(promoted_project, tmp_path, capsys):
    root, _ = promoted_project
    pd.DataFrame({"review": ["the film was wonderful and superb", "", "the film was awful and tedious"]}).to_csv(
        tmp_path / "new.csv", index=False)
    assert main(["--project", str(root), "predict", str(tmp_path / "new.csv"), str(tmp_path / "out.csv")]) == 0
    scored = pd.read_csv(tmp_path / "out.csv")
    assert scored["id"].tolist() == [1, 3] and scored["label"].tolist() == ["positive", "negative"]
    assert "3 records: 2 scored" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "out.csv.rejected.csv")["reason"].tolist() == ["no text"]


def test_rerun_with_unchanged_data_and_params_reuses_cached_work(promoted_project):
    root, first = promoted_project
    lock_before = (root / "dvc.lock").read_text()
    started = time.perf_counter()
    result = retrain(project_dir=str(root))
    seconds = time.perf_counter() - started
    assert result["status"] == RunOutcome.UNCHANGED, result
    assert (root / "dvc.lock").read_text() == lock_before
    assert open_registry(root).aliases()[CHAMPION] == "1"
    assert seconds < first["seconds"] / 2, (seconds, first["seconds"])


def test_a_new_batch_is_versioned_recorded_and_keeps_old_test_rows_in_test(promoted_project, tmp_path):
    root, first = promoted_project
    old_test_ids = set(pd.read_csv(root / "artifacts" / "splits" / "test.csv")["id"])
    batch = pd.concat([sentiment_frame(200, seed=21), pd.DataFrame({"review": ["  "], "sentiment": ["positive"]})])
    batch.to_csv(tmp_path / "new-reviews.csv", index=False)
    assert main(["--project", str(root), "ingest", str(tmp_path / "new-reviews.csv"), "--no-retrain"]) == 0

    result = retrain(project_dir=str(root), approval_profile="local")
    assert result["status"] in {RunOutcome.PROMOTED, RunOutcome.REJECTED_BY_GATE}, result
    run = open_registry(root).client.get_run(result["run_id"])
    first_run = open_registry(root).client.get_run(first["run_id"])
    assert run.data.tags["data_hash"] != first_run.data.tags["data_hash"]
    assert run.data.tags["data_hash"] == yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    batches = json.loads(run.data.tags["data_batches"])
    assert len(batches) == 2 and batches[1].startswith("new-reviews.csv@")
    assert run.data.metrics["data_rows_quarantined"] == 1
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train-split", "validation-split", "test-split"}
    assert old_test_ids <= set(pd.read_csv(root / "artifacts" / "splits" / "test.csv")["id"])


def test_worse_challenger_is_rejected_and_champion_keeps_serving(promoted_project):
    root, _ = promoted_project
    registry = open_registry(root)
    champion = registry.aliases()[CHAMPION]
    served = load_served_model(registry, root / "artifacts" / "serving", ["CPUExecutionProvider"])
    with BackgroundServer(create_app(served), port=0) as server:
        before = httpx.post(f"{server.url}/predict", json={"texts": ["a superb and charming story"]}).json()

        # A learning rate of zero leaves the new head random: a clearly worse model that still
        # clears thresholds of zero, so only the comparison with the champion can stop it.
        params = read_params(root)
        params["train"]["learning_rate"] = 0.0
        params["gate"].update(min_accuracy=0.0, min_macro_f1=0.0)
        write_params(root, params)
        result = retrain(project_dir=str(root), approval_profile="local")

        assert result["status"] == RunOutcome.REJECTED_BY_GATE, result
        assert "FAIL vs_champion" in result["message"]
        # Each slice is compared with the champion re-scored on the same slice rows.
        assert "slice_vs_champion_short: slice short (<= 35 characters): macro_f1" in result["message"]
        assert f"vs champion v{champion}" in result["message"].split("slice_vs_champion_short")[1]
        assert registry.aliases()[CHAMPION] == champion
        assert registry.version(result["version"]).tags["gate"] == "failed"
        # The paired comparison: its interval in the run's metrics and on the version (the model card's line).
        metrics = registry.client.get_run(result["run_id"]).data.metrics
        assert metrics["gate_vs_champion_high"] > metrics["gate_vs_champion_diff"] > 0.02
        assert json.loads(registry.version(result["version"]).tags["vs_champion"])["high"] > 0.02
        assert registry.aliases()[CHALLENGER] == champion
        metadata = httpx.get(f"{server.url}/metadata").json()
        assert metadata["model_version"] == champion
        after = httpx.post(f"{server.url}/predict", json={"texts": ["a superb and charming story"]}).json()
        assert after["predictions"] == before["predictions"]
    assert load_served_model(registry, root / "artifacts" / "serving", ["CPUExecutionProvider"]).metadata[
        "model_version"] == champion
