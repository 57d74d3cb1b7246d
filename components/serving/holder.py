"""The model being served, swappable while requests flow: a ModelHolder hands each batch the current
ServedModel; a watcher (components.serving.deployment) swaps in a new version."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from components.redact import redact_secrets

logger = logging.getLogger("tunegate.serve")


class TextPredictor(Protocol):
    @property
    def labels(self) -> list[str]: ...

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]: ...


class StagedPredictor(TextPredictor, Protocol):
    """A predictor whose `predict` is `answers(probabilities(encode(texts)))`: the service encodes and
    answers on its event loop, so that the model's thread runs only `probabilities` (OnnxTextClassifier)."""

    def encode(self, texts: list[str]) -> list[Any]: ...

    def probabilities(self, encoded: list[Any]) -> Any: ...

    def answers(self, probabilities: Any) -> list[dict[str, Any]]: ...


STAGES = ("encode", "probabilities", "answers")


@dataclass
class ServedModel:
    """A predictor plus what callers may know about it (name, version, data hash, metrics...).

    The version reported to clients is metadata["model_version"], else metadata["version"].
    """

    predictor: TextPredictor
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        version = self.metadata.get("model_version", self.metadata.get("version"))
        return None if version is None else str(version)

    @cached_property
    def staged(self) -> StagedPredictor | None:
        """The predictor when it runs in stages (StagedPredictor), else None: looked up once per model."""
        return self.predictor if all(callable(getattr(self.predictor, stage, None)) for stage in STAGES) else None


@dataclass(frozen=True)
class ReloadStats:
    reloads: int  # successful swaps since start
    failed_loads: int  # versions that could not be loaded or warmed up; the old model kept serving
    integrity_refusals: int  # of those, versions refused because their files or signature were not the registered ones
    registry_errors: int  # polls that could not read the registry
    last_reload_unix: float | None
    last_reload_monotonic: float | None
    last_error: str | None


class ModelHolder:
    """The model answering requests now. Readers take `current()` once per batch; `swap` replaces it
    in one reference assignment, so a batch runs wholly on the old model or wholly on the new one."""

    def __init__(self, model: ServedModel) -> None:
        self._model = model
        self._lock = threading.Lock()  # for the counters; reading _model needs no lock
        self._reloads = 0
        self._failed_loads = 0
        self._integrity_refusals = 0
        self._registry_errors = 0
        self._last_reload_unix: float | None = None
        self._last_reload_monotonic: float | None = None
        self._last_error: str | None = None

    def current(self) -> ServedModel:
        return self._model

    def swap(self, model: ServedModel) -> ServedModel:
        """Serve `model` from the next batch on; returns the model it replaced."""
        with self._lock:
            previous, self._model = self._model, model
            self._reloads += 1
            self._last_reload_unix, self._last_reload_monotonic = time.time(), time.monotonic()
        logger.info("now serving version %s (was %s)", model.version, previous.version)
        return previous

    def record_failed_load(self, version: str | None, error: BaseException) -> None:
        from components.export.integrity import ModelIntegrityError

        with self._lock:
            self._failed_loads += 1
            self._integrity_refusals += isinstance(error, ModelIntegrityError)
            # Shown on /metadata: MLflow's errors repeat the URI they failed on, login included.
            self._last_error = redact_secrets(f"version {version}: {type(error).__name__}: {error}")

    def record_registry_error(self, error: BaseException) -> None:
        with self._lock:
            self._registry_errors += 1
            self._last_error = redact_secrets(f"registry: {type(error).__name__}: {error}")

    def stats(self) -> ReloadStats:
        with self._lock:
            return ReloadStats(self._reloads, self._failed_loads, self._integrity_refusals, self._registry_errors,
                               self._last_reload_unix,
                               self._last_reload_monotonic, self._last_error)
