"""Training checkpoints: enough state to continue a killed run exactly where it stopped.

A checkpoint holds the model and optimizer tensors, the scheduler position, the loop position
(epoch, step within it), the RNG state and the history so far; the best epoch's weights are kept
beside it. Files are written to a temporary name and renamed, so a kill mid-write leaves the previous
checkpoint intact. Checkpoints live in a directory keyed by a fingerprint of everything that shapes
the run (params, data, base model): a run never resumes from another configuration's state.
Loading uses torch.load(weights_only=True): tensors and plain values only, no pickled code.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

STATE_FILE = "last.pt"
BEST_FILE = "best.pt"
# The batch sizes train.batch_size: auto picked: a resumed run goes on with them rather than trying again,
# since another pick would give another epoch plan than the one the checkpoint is part of.
BATCH_SIZES_FILE = "batch_sizes.json"


@dataclass
class TrainingState:
    epoch: int = 1  # the epoch in progress (or next to start)
    step_in_epoch: int = 0  # optimizer steps already taken in that epoch
    global_step: int = 0
    running_loss: float = 0.0
    seconds_in_epoch: float = 0.0
    best_score: float = -1.0
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)

    def observe(self, score: float, epoch: int, patience: int | None) -> bool:
        """Count a validation pass; True when its score is the best so far (its weights are the ones to keep).
        After `patience` passes in a row without a better score, `stopped` is set."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.epochs_without_improvement = score, epoch, 0
            return True
        self.epochs_without_improvement += 1
        self.stopped = bool(patience) and self.epochs_without_improvement >= patience
        return False


def _atomic_save(payload: dict, path: Path) -> None:
    scratch = path.with_suffix(".tmp")
    torch.save(payload, scratch)
    scratch.replace(path)


class Checkpointer:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def save(self, model, optimizer, scheduler, state: TrainingState,
             rng_by_rank: list[torch.Tensor] | None = None) -> None:
        """rng_by_rank: every rank's torch RNG state (data-parallel training); default: this process's."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_save({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": asdict(state),
            "torch_rng": rng_by_rank or [torch.get_rng_state()],
            # Python's RNG state is a tuple of ints: stored as a list so weights_only loading takes it.
            "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }, self.state_path)

    def restore(self, model, optimizer, scheduler, state: TrainingState, rank: int = 0) -> bool:
        """Load the last checkpoint into the given objects (and `rank`'s RNG state); False when there is none."""
        if not self.state_path.is_file():
            return False
        saved = torch.load(self.state_path, weights_only=True, map_location="cpu")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        for key, value in saved["state"].items():
            setattr(state, key, value)
        rng = saved["torch_rng"]
        torch.set_rng_state(rng[rank] if isinstance(rng, list) else rng)  # a list since data-parallel training
        version, internal, gauss = saved["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        return True

    def save_batch_sizes(self, picked: dict) -> None:
        import json

        self.directory.mkdir(parents=True, exist_ok=True)
        scratch = self.directory / (BATCH_SIZES_FILE + ".tmp")
        scratch.write_text(json.dumps(picked, indent=2) + "\n")
        scratch.replace(self.directory / BATCH_SIZES_FILE)

    def load_batch_sizes(self) -> dict | None:
        """What an earlier try of this run picked, when it left a checkpoint to resume from."""
        import json

        path = self.directory / BATCH_SIZES_FILE
        return json.loads(path.read_text()) if path.is_file() and self.state_path.is_file() else None

    def save_best(self, weights: dict[str, torch.Tensor]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_save(weights, self.directory / BEST_FILE)

    def load_best(self) -> dict[str, torch.Tensor] | None:
        path = self.directory / BEST_FILE
        return torch.load(path, weights_only=True, map_location="cpu") if path.is_file() else None

    def clear(self) -> None:
        """After a finished run: the saved model is the result, the checkpoints only take space."""
        shutil.rmtree(self.directory, ignore_errors=True)
