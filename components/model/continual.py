"""Continual learning: fine-tune from the current champion instead of the base model, on the new
batches plus a replayed share of the batches the champion already learned.

The starting point is written to artifacts/start/ by its own stage: a card (start.json) and, for a
champion start, the champion's PyTorch weights (safetensors, logged with every registered version).
DVC hashes that directory, so training re-runs exactly when the starting point changes.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.data.preprocess import TokenizedSplit

START_CARD = "start.json"
START_MODEL = "model"
# Where a registered version's run keeps the PyTorch model it was exported from.
PYTORCH_ARTIFACT = "pytorch_model"


@dataclass(frozen=True)
class StartingPoint:
    source: str  # "base" or "champion"
    base_model: str
    champion_version: str | None = None
    champion_batches: list[str] = field(default_factory=list)
    note: str = ""

    def write(self, start_dir: Path) -> None:
        start_dir.mkdir(parents=True, exist_ok=True)
        (start_dir / START_CARD).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def read_starting_point(start_dir: Path) -> StartingPoint | None:
    path = Path(start_dir) / START_CARD
    return StartingPoint(**json.loads(path.read_text())) if path.is_file() else None


def prepare_starting_point(init_from: str, base_model: str, start_dir: Path, registry_factory,
                           check_weights=None) -> StartingPoint:
    """Write where fine-tuning starts. `registry_factory` opens the model registry (only called for a
    champion start, so a base start needs no MLflow store). `check_weights(tags, folder)` judges the
    champion's downloaded PyTorch weights against its version's tags before anything reads them."""
    from components.lifecycle.aliases import CHAMPION

    if start_dir.exists():
        shutil.rmtree(start_dir)
    if init_from == "base":
        point = StartingPoint("base", base_model)
    else:
        registry = registry_factory()
        champion = registry.by_alias(CHAMPION)
        if champion is None:
            point = StartingPoint("base", base_model, note="train.init_from is champion but there is no champion "
                                                           "yet: starting from the base model")
        else:
            registry.download_run_artifact(champion.run_id, PYTORCH_ARTIFACT, start_dir)
            if check_weights is not None:
                check_weights(champion.tags, start_dir / PYTORCH_ARTIFACT)
            (start_dir / PYTORCH_ARTIFACT).rename(start_dir / START_MODEL)
            batches = json.loads(champion.tags.get("data_batches", "[]"))
            point = StartingPoint("champion", base_model, champion.version, batches)
    point.write(start_dir)
    return point


def replay_mix(train: TokenizedSplit, learned_batches: list[str], fraction: float, seed: int) -> tuple[TokenizedSplit, dict]:
    """The rows of batches the champion has not seen, plus `fraction` of those it has (sampled with `seed`)."""
    if train.batch_ids is None:
        raise ValueError("the tokenized training split has no batch ids; run the preprocess stage again")
    learned = set(learned_batches)
    new = [i for i, b in enumerate(train.batch_ids) if b not in learned]
    old = [i for i, b in enumerate(train.batch_ids) if b in learned]
    replayed = sorted(random.Random(seed).sample(old, round(fraction * len(old)))) if old else []
    if not new and not replayed:
        raise ValueError("continual training has no rows: no new batches and train.replay_fraction leaves no old ones")
    chosen = sorted(new + replayed)
    return train.select(chosen), {"new_rows": len(new), "replayed_rows": len(replayed), "old_rows": len(old),
                                  "replay_fraction": fraction}
