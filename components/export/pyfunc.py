"""The pyfunc face of an exported model: what `mlflow.pyfunc.load_model("models:/<name>@champion")`
and `mlflow models serve` run. It wraps the same predictor the service runs, so both give the same
labels and scores for the same texts.

Input: a frame with a `text` column (string). Output: a frame with, per text, `label`, `score` and
`scores` (class -> probability) for a classifier, or `entities` (text, type, start, end, score, with
character offsets into the text) for a token classifier (NER)."""

from __future__ import annotations

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
