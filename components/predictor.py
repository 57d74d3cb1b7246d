"""Text in, label probabilities out: an exported ONNX classifier plus its own tokenizer.

This module is what a serving process imports, so it needs neither torch nor the training code:
an export directory (see components.export) carries the graph, the tokenizer files and a small
JSON card with the labels and the maximum sequence length.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_FILE = "model.onnx"
MODEL_CARD = "tunegate-model.json"
CPU_PROVIDER = "CPUExecutionProvider"


class ModelCard(BaseModel):
    """What a served model needs to know beyond the graph itself, written next to it at export."""

    # A card written by a newer tunegate may carry more keys; they must not stop an older server.
    model_config = ConfigDict(extra="ignore", frozen=True)

    labels: list[str] = Field(min_length=1, description="class names in logit order")
    max_length: int = Field(ge=1, description="tokens per text after truncation")
    precision: Literal["int8", "fp32"]
    opset: int
    input_names: list[str] = Field(min_length=1)
    output_names: list[str] = ["logits"]
    graph_optimized: bool = False


def read_model_card(model_dir: Path) -> ModelCard:
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        raise ValueError(f"{model_dir}: no {MODEL_CARD}; is this a directory written by tunegate's ONNX export?")
    try:
        return ModelCard.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValidationError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a valid model card: {error}") from None


def write_model_card(model_dir: Path, card: ModelCard) -> Path:
    path = Path(model_dir) / MODEL_CARD
    path.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def check_texts(texts: Any) -> list[str]:
    """The texts as a list, or a ValueError that says which item is wrong and why."""
    if isinstance(texts, str):
        # A bare string is iterable too: without this it would be classified one character at a time.
        raise ValueError("expected a list of strings, got a single string; wrap it in a list")
    if hasattr(texts, "tolist") and not isinstance(texts, Sequence):  # a pandas column or numpy array
        texts = texts.tolist()
    if not isinstance(texts, Sequence):
        raise ValueError(f"expected a list of strings, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {index} is {type(text).__name__}, not a string")
    return list(texts)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)  # no overflow on big logits
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def choose_providers(requested: Sequence[str]) -> list[str]:
    """The requested providers this onnxruntime build has, with CPU last as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in requested if p not in available]
    if missing:
        warnings.warn(
            f"onnxruntime here has no {missing} (it has {available}); using the rest of {list(requested)} and CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    chosen = [p for p in requested if p in available]
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return chosen


def open_session(model_path: Path, providers: Sequence[str], intra_op_threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    chosen = choose_providers(providers)
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
    # onnxruntime-gpu lists CUDA even where no GPU or CUDA library exists; it then logs an error and
    # quietly runs on CPU. Only the session knows what it really got.
    not_started = [p for p in chosen if p not in session.get_providers()]
    if not_started:
        warnings.warn(
            f"onnxruntime could not start {not_started} (see its log above); running on {session.get_providers()}",
            RuntimeWarning,
            stacklevel=3,
        )
    return session


class OnnxTextClassifier:
    """An exported classifier directory, ready to label raw text.

    `max_length` overrides the card's value; only parity checks against a model evaluated at another
    length need it.
    """

    def __init__(
        self,
        model_dir: Path,
        providers: Sequence[str] = (CPU_PROVIDER,),
        intra_op_threads: int | None = None,
        *,
        max_length: int | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.card = read_model_card(self.model_dir)
        self._max_length = max_length if max_length is not None else self.card.max_length
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), trust_remote_code=False)
        self._session = open_session(self.model_dir / MODEL_FILE, providers, intra_op_threads)
        self._input_names = [node.name for node in self._session.get_inputs()]
        # A fast tokenizer rewrites its truncation/padding state when a call's settings differ from the
        # last call's; two threads doing that at once fail with "Already borrowed". Sessions are thread-safe.
        self._tokenizer_lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def _encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._tokenizer_lock:
            encoded = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="np"
            )
        feed: dict[str, np.ndarray] = {}
        for name in self._input_names:
            if name in encoded:
                feed[name] = np.asarray(encoded[name], dtype=np.int64)
            elif name == "token_type_ids":  # single-segment input: all zeros, as the model was trained
                feed[name] = np.zeros_like(np.asarray(encoded["input_ids"], dtype=np.int64))
            else:
                raise ValueError(f"the tokenizer in {self.model_dir} does not produce the graph input {name!r}")
        return feed

    def predict_logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        texts = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        batches = []
        for start in range(0, len(texts), batch_size):
            logits = self._session.run(None, self._encode(texts[start:start + batch_size]))[0]
            batches.append(np.asarray(logits, dtype=np.float32))
        return np.concatenate(batches)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return softmax(self.predict_logits(texts, batch_size))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        labels = self.labels
        predictions = []
        for row in self.predict_proba(texts, batch_size):
            best = int(row.argmax())
            predictions.append({
                "label": labels[best],
                "score": float(row[best]),
                "scores": {label: float(p) for label, p in zip(labels, row)},
            })
        return predictions
