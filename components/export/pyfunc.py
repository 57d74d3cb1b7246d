"""The pyfunc face of an exported model: what `mlflow.pyfunc.load_model("models:/<name>@champion")`
and `mlflow models serve` run. It wraps the same predictor the service runs, so both give the same
labels and scores for the same texts.

Input: a frame with a `text` column (string). Output: a frame with, per text, `label`, `score` and
`scores` (class -> probability) for a classifier, or `entities` (text, type, start, end, score, with
character offsets into the text) for a token classifier (NER)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

ONNX_ARTIFACT = "onnx"  # the key (and folder under artifacts/) of the exported ONNX directory
TEXT_COLUMN = "text"


class TunegatePyfunc(PythonModel):
    # MLflow would wrap predict for validation by its type hints, and warn without them; the model's
    # contract is the signature it is saved with (input: a text column), which pyfunc enforces.
    _skip_type_hint_validation = True

    def load_context(self, context):
        from components.export.predictor import default_providers, load_predictor, read_model_card

        # MLflow's loader takes no providers: the export's precision picks them. An fp16 export (the GPU
        # plan) runs on CUDA where there is a CUDA device; int8, fp32 and fp16 without a GPU on the CPU.
        onnx_dir = Path(context.artifacts[ONNX_ARTIFACT])
        verify_loaded_model(onnx_dir, getattr(context, "model_config", None) or {})
        self.predictor = load_predictor(onnx_dir, providers=default_providers(read_model_card(onnx_dir).precision))

    def predict(self, context, model_input, params=None):
        texts = texts_of(model_input)
        return pd.DataFrame(self.predictor.predict(texts), index=range(len(texts)))


def texts_of(model_input: Any) -> list[str]:
    """The texts of what pyfunc was given: a frame with a text column, or a list of strings."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"the input needs a {TEXT_COLUMN!r} column; it has {list(model_input.columns)}")
        model_input = model_input[TEXT_COLUMN]
    if isinstance(model_input, pd.Series):
        model_input = model_input.tolist()
    if isinstance(model_input, str):
        model_input = [model_input]
    from components.export.predictor import check_texts

    return check_texts(model_input)


def verify_loaded_model(onnx_dir: Path, model_config: dict) -> None:
    """Check the model MLflow is loading against its manifest (and signature) before its graph is read.

    Without params.yaml here, the public key and the rule come from the environment (TUNEGATE_SIGNING_PUBLIC_KEY,
    TUNEGATE_REQUIRE_SIGNATURE) or from `mlflow.pyfunc.load_model(..., model_config={"signing_public_key": ...,
    "require_signature": True})`; a signature is required when either asks. Loaded from models:/, the version's
    registry tags are compared too, so another signed version swapped in, or a removed signature, is refused."""
    from components.export.integrity import PUBLIC_KEY_ENV, REQUIRE_SIGNATURE_ENV, TrustPolicy, verify_model_dir

    model_root = next((folder for folder in Path(onnx_dir).resolve().parents if (folder / "MLmodel").is_file()), None)
    if model_root is None:
        raise FileNotFoundError(f"{onnx_dir}: not inside an MLflow Model (no MLmodel file above it)")
    env = dict(os.environ)
    if model_config.get("signing_public_key"):
        env[PUBLIC_KEY_ENV] = str(model_config["signing_public_key"])
    if model_config.get("require_signature") in (True, "true", "True", "1"):
        env[REQUIRE_SIGNATURE_ENV] = "true"  # the stricter of the two: a config cannot lift the environment's rule
    # The model's code has run already (MLflow imported it to get here): this protects the graph and the
    # tokenizer. `tunegate verify` and tunegate's own loaders check a version before any of its code runs.
    verify_model_dir(model_root, TrustPolicy.from_env(env), *_registered(model_root))


def _registered(model_root: Path) -> tuple:
    """(what the registry recorded, the model's name) for a model loaded from models:/NAME/VERSION, whose
    registered_model_meta file MLflow wrote; () for one loaded from a path, or when the registry cannot be read."""
    import logging

    import yaml

    from components.export.integrity import MLFLOW_LOADER_FILES, Registered

    meta = model_root / MLFLOW_LOADER_FILES[0]
    if not meta.is_file():
        return ()
    found = yaml.safe_load(meta.read_text(encoding="utf-8")) or {}
    name, version = found.get("model_name"), found.get("model_version")
    try:
        from mlflow import MlflowClient

        tags = MlflowClient().get_model_version(name, str(version)).tags
    except Exception as error:  # noqa: BLE001 - no registry to ask: the manifest and signature still hold
        logging.getLogger("tunegate.integrity").warning(
            "could not read the registry's record of %s v%s (%s): checking its files and signature only",
            name, version, error)
        return ()
    return Registered.from_tags(tags), f"{name} v{version}"
