"""Registering a model as the retraining flow does, sealed (and signed when given a key): for the signing tests
on a local store and on the team stack."""

from __future__ import annotations

from pathlib import Path

from components.config import RegistryParams
from components.export.mlflow_model import save_mlflow_model
from components.lifecycle.registry import ModelRegistry
from components.lifecycle.signing import seal_model_dir

NAME = "signed-sentiment"
KEY_ENV = "TUNEGATE_TEST_SIGNING_KEY"  # registry.signing.private_key_env in these tests


def register(registry: ModelRegistry, export_dir: Path, staging: Path, private_key: Path | None) -> str:
    """The flow's registration path: the MLflow Model, sealed (signed when a key is given), registered."""
    model = save_mlflow_model(export_dir, staging / "model", card="# signed tiny\n")
    env = {KEY_ENV: private_key.read_text()} if private_key else {}
    tags = seal_model_dir(model, RegistryParams(model_name=NAME, signing={"private_key_env": KEY_ENV}), env)
    run_id = registry.start_run("tunegate-tests", "signed", tags={})
    version = registry.register(run_id, model, tags={"gate": "passed", **tags}).version
    registry.end_run(run_id)
    return version
