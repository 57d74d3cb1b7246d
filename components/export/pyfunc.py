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
    """Check the model MLflow is loading against its manifest (and signature) before anything reads it.

    Without params.yaml here, the public key and the rule come from the environment (TUNEGATE_SIGNING_PUBLIC_KEY,
    TUNEGATE_REQUIRE_SIGNATURE) or from `mlflow.pyfunc.load_model(..., model_config={"signing_public_key": ...,
    "require_signature": true})`."""
    from components.export.integrity import (
        PUBLIC_KEY_ENV,
        REQUIRE_SIGNATURE_ENV,
        TrustPolicy,
        bytecode_cache,
        verify_model_dir,
    )

    model_root = next((folder for folder in Path(onnx_dir).resolve().parents if (folder / "MLmodel").is_file()), None)
    if model_root is None:
        raise FileNotFoundError(f"{onnx_dir}: not inside an MLflow Model (no MLmodel file above it)")
    overrides = {PUBLIC_KEY_ENV: model_config.get("signing_public_key"),
                 REQUIRE_SIGNATURE_ENV: str(model_config.get("require_signature", ""))}
    env = {**os.environ, **{key: value for key, value in overrides.items() if value}}
    # The model's code has run already (MLflow imported it to get here): this protects the graph and the
    # tokenizer. `tunegate verify` or the registry's own loaders check a version before any of its code runs.
    verify_model_dir(model_root, TrustPolicy.from_env(env), tolerated=bytecode_cache)
