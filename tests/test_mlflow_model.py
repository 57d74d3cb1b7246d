"""A registered version is an MLflow Model: pyfunc loads it from the registry and answers like the
service; `mlflow models serve` serves it; versions registered before still serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

import mlflow
from components.export.mlflow_model import (
    MODEL_CARD_FILE,
    onnx_dir_in,
    save_mlflow_model,
)
from components.lifecycle.registry import CHAMPION, ModelRegistry
from components.serving.deployment import build_service_app, load_served_model
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import held_out, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.servers import free_port, wait_until_answers

CPU = ["CPUExecutionProvider"]
NAME = "tiny-sentiment"


@pytest.fixture(scope="module")
def registry(tiny_onnx_export, tmp_path_factory) -> ModelRegistry:
    """A SQLite registry whose champion is the tiny classifier as an MLflow Model."""
    root = tmp_path_factory.mktemp("mlflow-model")
    registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", NAME, artifact_root=root / "artifacts")
    model = save_mlflow_model(tiny_onnx_export.out_dir, root / "staged" / "model", card="# tiny\n")
    run_id = registry.start_run("tunegate-tests", "pyfunc", tags={})
    version = registry.register(run_id, model, tags={"gate": "passed"}).version
    registry.end_run(run_id)
    registry.set_alias(CHAMPION, version)
    return registry


def service_predictions(registry: ModelRegistry, cache: Path, texts: list[str]) -> list[dict]:
    app = build_service_app(registry, cache, CPU)
    with BackgroundServer(app) as server:
        response = httpx.post(f"{server.url}/predict", json={"texts": texts}, timeout=30)
    response.raise_for_status()
    return response.json()["predictions"]


def assert_same_answers(frame: pd.DataFrame, predictions: list[dict]) -> None:
    assert frame["label"].tolist() == [p["label"] for p in predictions]
    for row, expected in zip(frame.to_dict("records"), predictions):
        assert row["score"] == pytest.approx(expected["score"], abs=1e-6)
        assert row["scores"] == pytest.approx(expected["scores"], abs=1e-6)


def test_pyfunc_from_the_registry_answers_like_the_service(registry, tmp_path, monkeypatch):
    texts, _ = held_out(40, seed=9)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    answers = model.predict(pd.DataFrame({"text": texts}))
    assert list(answers.columns) == ["label", "score", "scores"]
    assert_same_answers(answers, service_predictions(registry, tmp_path / "cache", texts))
    schema = model.metadata.get_input_schema()
    assert schema.input_names() == ["text"]
    assert [c.name for c in model.metadata.get_output_schema().inputs] == ["label", "score", "scores"]


def test_the_version_carries_its_card_code_and_no_torch(registry, tmp_path):
    local = registry.download(registry.by_alias(CHAMPION).version, tmp_path)
    assert (local / MODEL_CARD_FILE).read_text() == "# tiny\n"
    requirements = (local / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "tokenizers" in requirements and "torch" not in requirements
    assert (local / "code" / "components" / "export" / "predictor.py").is_file()
    assert not list(local.rglob("*.pkl"))  # models from code: nothing to unpickle
    assert (onnx_dir_in(local) / "model.onnx").is_file()


def test_mlflow_models_serve_answers_the_scoring_protocol(registry, tmp_path):
    texts, _ = held_out(12, seed=4)
    port = free_port()
    # MLflow starts `uvicorn` by name: the venv's bin must be on PATH, as in an activated venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@{CHAMPION}",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", server)
        split = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=30,
                           json={"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}})
        csv = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=30, headers={"content-type": "text/csv"},
                         content=pd.DataFrame({"text": texts}).to_csv(index=False))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert split.status_code == 200, split.text
    expected = service_predictions(registry, tmp_path / "cache", texts)
    assert_same_answers(pd.DataFrame(split.json()["predictions"]), expected)
    assert csv.status_code == 200, csv.text
    assert [p["label"] for p in csv.json()["predictions"]] == [p["label"] for p in expected]


def test_a_version_registered_as_a_plain_export_still_serves(registry, tiny_onnx_export, tmp_path):
    run_id = registry.start_run("tunegate-tests", "legacy", tags={})
    legacy = registry.register(run_id, tiny_onnx_export.out_dir, tags={"gate": "passed"}).version
    registry.end_run(run_id)
    served = load_served_model(registry, tmp_path / "cache", CPU, version=legacy)
    texts, _ = held_out(5, seed=2)
    assert [p["label"] for p in served.predictor.predict(texts)] == \
        [p["label"] for p in load_served_model(registry, tmp_path / "cache", CPU).predictor.predict(texts)]
    assert json.loads(json.dumps(served.metadata))["model_version"] == legacy
