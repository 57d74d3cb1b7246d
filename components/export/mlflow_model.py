"""A registered version as an MLflow Model: the pyfunc flavor over the exported ONNX directory (graph,
tokenizer, card), with a signature, an input example, the pip requirements of the predictor (no
torch) and a model card (README.md, the Hugging Face convention). Everything an MLflow user relies on
then works on it: `mlflow.pyfunc.load_model`, `mlflow models serve`, `mlflow models build-docker`,
`mlflow.models.predict`, `spark_udf`.

The model loads with the code it was registered with: the few modules the predictor needs travel in
the model's code/ folder (no pickle; MLflow's "models from code")."""

from __future__ import annotations

import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd

from components.config import TOKEN_CLASSIFICATION
from components.export.predictor import MODEL_FILE, read_model_card
from components.export.pyfunc import ONNX_ARTIFACT, TEXT_COLUMN

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # components/
MODEL_CODE = Path(__file__).with_name("mlflow_entry.py")
# What loading and predicting import, relative to components/: the runtime, not the pipeline.
CONFIG_MODULES = tuple(f"config/{name}.py" for name in (
    "__init__", "base", "curve", "data", "distill", "evaluate", "export", "gate", "loading", "model", "monitor",
    "params", "peft", "privacy", "registry", "serve", "sweep"))
RUNTIME_MODULES = ("__init__.py", "errors.py", *CONFIG_MODULES, "privacy/__init__.py", "privacy/types.py",
                   "entities.py", "export/__init__.py", "export/predictor.py", "export/pyfunc.py",
                   "export/integrity.py")
# The predictor's dependencies, pinned to what exported the model. onnxruntime-gpu runs on CPUs too;
# where only onnxruntime is installed, that is what the model asks for.
RUNTIME_DISTRIBUTIONS = ("mlflow", "onnxruntime-gpu|onnxruntime", "transformers", "tokenizers", "numpy", "pandas",
                         "pydantic", "pyyaml",
                         # the signature check before loading (components/export/integrity.py)
                         "model-signing", "pyopenssl")
MODEL_CARD_FILE = "README.md"
EXAMPLE_TEXTS = {"sequence-classification": ["a moving, beautifully acted film", "ninety minutes of tedium"],
                 TOKEN_CLASSIFICATION: ["EU rejects German call to boycott British lamb ."]}


def pip_requirements() -> list[str]:
    pinned = []
    for alternatives in RUNTIME_DISTRIBUTIONS:
        for name in alternatives.split("|"):
            try:
                pinned.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pinned


def signature_for(task: str):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        Array,
        ColSpec,
        DataType,
        Map,
        Object,
        Property,
        Schema,
    )

    inputs = Schema([ColSpec(DataType.string, TEXT_COLUMN)])
    if task == TOKEN_CLASSIFICATION:
        entity = Object([Property("text", DataType.string), Property("type", DataType.string),
                         Property("start", DataType.long), Property("end", DataType.long),
                         Property("score", DataType.double)])
        outputs = Schema([ColSpec(Array(entity), "entities")])
    else:
        outputs = Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "score"),
                          ColSpec(Map(DataType.double), "scores")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def save_mlflow_model(onnx_dir: Path, out_dir: Path, *, card: str) -> Path:
    """Write the MLflow Model for `onnx_dir` (an export directory) to `out_dir`, which must not exist."""
    import mlflow.pyfunc

    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    onnx_card = read_model_card(onnx_dir)
    task = onnx_card.task
    with tempfile.TemporaryDirectory(prefix="tunegate-mlflow-code-") as scratch:
        runtime = Path(scratch) / "components"
        for module in RUNTIME_MODULES:
            (runtime / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE_ROOT / module, runtime / module)
        mlflow.pyfunc.save_model(
            path=str(out_dir),
            python_model=str(MODEL_CODE),
            artifacts={ONNX_ARTIFACT: str(onnx_dir)},
            code_paths=[str(runtime)],
            signature=signature_for(task),
            input_example=pd.DataFrame({TEXT_COLUMN: EXAMPLE_TEXTS[task]}),
            pip_requirements=pip_requirements(),
            # In the MLmodel file: what the graph in the artifacts is, without opening it.
            metadata={"tunegate_precision": onnx_card.precision, "tunegate_quantization": onnx_card.quantization},
        )
    (out_dir / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    return out_dir


def onnx_dir_in(model_dir: Path) -> Path:
    """The ONNX export inside a downloaded registered version: the pyfunc flavor's artifact of an MLflow
    Model (where its MLmodel file says), or the folder itself for versions registered before they
    were MLflow Models."""
    import yaml

    model_dir = Path(model_dir)
    if (model_dir / MODEL_FILE).is_file():
        return model_dir
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")).get("flavors") or {}).get("python_function", {})
        relative = ((flavor.get("artifacts") or {}).get(ONNX_ARTIFACT) or {}).get("path")
        if relative and (model_dir / relative / MODEL_FILE).is_file():
            return model_dir / relative
    raise FileNotFoundError(f"{model_dir}: neither an MLflow Model with an {ONNX_ARTIFACT!r} artifact nor a "
                            "tunegate ONNX export")
